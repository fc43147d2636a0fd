"""Rules on token ids, checked before training: what the vocabulary and the length cap leave.

They read `ctx.data["tokens"]`, the figures a text pipeline measured while it encoded each split
(`layerwise.text.figures`): the share of tokens that became `<unk>`, and the share of rows and of
tokens cut at `max_length`. Both are settings of the data, not of the model, and both throw
information away before the first step, so no training rule can see them: a review whose words
are mostly `<unk>` or a review cut to its first 20 words trains a model that looks merely weak.

Streams are judged one by one (a classifier's `text`, a translation's `source` and `target`).
Healthy shipped data, measured on the full splits: IMDB with words seen twice (`min_freq: 2`)
has 0.5% unknown tokens in train and 1.2% in test, and 400 words cut 17% of the reviews (14% of
the tokens); see docs/doctor.md for Multi30k and Tiny Shakespeare.
"""

from __future__ import annotations

import math
from typing import Any

from layerwise.diagnose.findings import Finding
from layerwise.diagnose.rules import RuleContext, decided_by, fmt, number, rule
from layerwise.diagnose.rules import fixes as fx

UNKNOWN_RATE = 0.10  # one token in ten of a split is <unk> (healthy IMDB test: 0.012) ...
UNKNOWN_MIN_TOKENS = 200  # ... judged on splits with at least 200 tokens
UNKNOWN_SEVERE = 0.5  # half the tokens unknown: an error, the model reads mostly <unk>
TRUNCATED_ROWS = 0.5  # most rows longer than max_length (IMDB at 400: 0.17) ...
TRUNCATED_TOKENS = 0.5  # ... and the cut drops half of all tokens (IMDB at 400: 0.14)
SPLIT_ORDER = ("test", "val", "train")  # held-out splits first: new text meets the vocabulary


def _streams(ctx: RuleContext) -> dict[str, dict[str, Any]]:
    tokens = (ctx.data or {}).get("tokens")
    return {k: v for k, v in tokens.items() if isinstance(v, dict)} if tokens else {}


def _splits(stream: dict[str, Any]) -> dict[str, dict[str, Any]]:
    splits = stream.get("splits") or {}
    return {s: splits[s] for s in SPLIT_ORDER if isinstance(splits.get(s), dict)}


def _name(stream: str) -> str:
    return "" if stream == "text" else f"{stream} "


# ---------------------------------------------------------------------------- high_unknown_rate
@rule("high_unknown_rate", "data")
def high_unknown_rate(ctx: RuleContext) -> Finding | None:
    worst: tuple[float, str, str] | None = None
    rates: dict[str, dict[str, float]] = {}
    for stream, figures in _streams(ctx).items():
        for split, f in _splits(figures).items():
            rate = number(f.get("unknown_rate"))
            if rate is None or (number(f.get("tokens")) or 0) < UNKNOWN_MIN_TOKENS:
                continue
            rates.setdefault(stream, {})[split] = rate
            if worst is None or rate > worst[0]:
                worst = (rate, stream, split)
    if worst is None or worst[0] < UNKNOWN_RATE:
        return None
    rate, stream, split = worst
    figures = _streams(ctx)[stream]
    f = _splits(figures)[split]
    train_rate = rates.get(stream, {}).get("train")
    # The vocabulary itself drops words when even the text it was built from is often <unk>;
    # when only held-out text is, that text differs from the training text.
    settings = train_rate is not None and train_rate >= UNKNOWN_RATE / 2
    coverage = number(f.get("type_coverage"))
    message = (
        f"{rate:.1%} of the {split} {_name(stream)}tokens are <unk>: the vocabulary of "
        f"{int(figures.get('vocab_size') or 0):,} ids"
        + (f" (min_freq {figures.get('min_freq')})" if figures.get("min_freq") else "")
        + (f" knows {coverage:.1%} of their distinct tokens" if coverage is not None else "")
    )
    return Finding(
        code="high_unknown_rate",
        severity="error" if rate >= UNKNOWN_SEVERE else "warning",
        message=message,
        evidence={
            "stream": stream,
            "split": split,
            "unknown_rate": rate,
            "train_unknown_rate": train_rate,
            "type_coverage": coverage,
            "unknown_rates": rates,
            "vocab_size": figures.get("vocab_size"),
            "min_freq": figures.get("min_freq"),
            "max_size": figures.get("max_size"),
            "tokenizer": figures.get("tokenizer"),
            "vocabulary_drops_words": settings,
        },
        causes=[
            "the vocabulary keeps too few words: min_freq too high or max_size too small"
            if settings
            else "the held-out text differs from the training text (another language, domain "
            "or spelling) that the vocabulary was built from",
            "a word tokeniser on text full of rare forms (names, numbers, typos)",
        ],
        remedies=[
            "keep words seen twice or more (data.args.min_freq: 2) and no tight max_size",
            "use subword tokens (data.args.tokenizer: subword): rare words split into known "
            "pieces instead of becoming <unk>",
            "check that validation and test text come from the same source as training text",
        ],
        patch=_vocabulary_patch(ctx) if settings and fx.has_recipe(ctx) else {},
    )


def _vocabulary_patch(ctx: RuleContext) -> dict[str, Any]:
    """Undo what the recipe set to shrink the vocabulary: min_freq above 2, a max_size."""
    patch: dict[str, Any] = {}
    min_freq = number(ctx.get("data.args.min_freq"))
    if min_freq is not None and min_freq > 2:
        patch["data.args.min_freq"] = 2
    max_size = number(ctx.get("data.args.max_size"))
    if max_size is not None:
        patch["data.args.max_size"] = int(max_size) * 4
    return patch


# ---------------------------------------------------------------------------- heavy_truncation
@rule("heavy_truncation", "data")
def heavy_truncation(ctx: RuleContext) -> Finding | None:
    worst: tuple[float, str, str] | None = None
    for stream, figures in _streams(ctx).items():
        for split, f in _splits(figures).items():
            rows, cut = number(f.get("truncation_share")), number(f.get("tokens_cut_share"))
            if rows is None or cut is None or rows < TRUNCATED_ROWS or cut < TRUNCATED_TOKENS:
                continue
            if worst is None or cut > worst[0]:
                worst = (cut, stream, split)
    if worst is None:
        return None
    cut, stream, split = worst
    figures = _streams(ctx)[stream]
    f = _splits(figures)[split]
    length = f.get("length") or {}
    cap = f.get("max_length")
    message = (
        f"{number(f['truncation_share']):.0%} of the {split} {_name(stream)}rows are longer than "
        f"max_length {cap} and are cut, dropping {cut:.0%} of their tokens (median length "
        f"{fmt(number(length.get('median')) or 0)}, 90th percentile "
        f"{fmt(number(length.get('p90')) or 0)})"
    )
    return Finding(
        code="heavy_truncation",
        severity="warning",
        message=message,
        evidence={
            "stream": stream,
            "split": split,
            "max_length": cap,
            "truncation_share": f.get("truncation_share"),
            "tokens_cut_share": cut,
            "length": length,
        },
        causes=["max_length is far below the length of typical rows"],
        remedies=[
            "raise max_length to about the 90th percentile of the row lengths (data.args."
            "max_length), or batch by length so long rows cost little",
            "if long rows must be cut, keep the part that carries the label (e.g. the end of a "
            "review) or split long texts into several rows",
        ],
        patch=_length_patch(ctx, length) if fx.has_recipe(ctx) else {},
    )


def _length_patch(ctx: RuleContext, length: dict[str, Any]) -> dict[str, Any]:
    """max_length at the 90th percentile of the lengths, rounded up to a multiple of 8."""
    p90 = number(length.get("p90"))
    if ctx.get("data.args.max_length") is None or p90 is None or not math.isfinite(p90):
        return {}
    return {"data.args.max_length": int(math.ceil(p90 / 8) * 8)}


# ---------------------------------------------------------------------------- how sure
decided_by("high_unknown_rate")(
    lambda f: ("share of <unk> tokens", float(f.evidence["unknown_rate"]), UNKNOWN_RATE, True)
)
decided_by("heavy_truncation")(
    lambda f: (
        "share of tokens cut",
        float(f.evidence["tokens_cut_share"]),
        TRUNCATED_TOKENS,
        True,
    )
)
