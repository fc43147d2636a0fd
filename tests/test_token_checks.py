"""The doctor's token checks: figures measured while text is encoded, and the two rules on them.

The figures are counted before the cut to `max_length` (after it, a row that fills the width may
or may not have been cut, and every unknown word is the same `<unk>`), so they are checked here
against counts done by hand on tiny texts.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from layerwise.data import load_dataset
from layerwise.data.shakespeare import language_model_bundle
from layerwise.diagnose.data_checks import profile_data
from layerwise.diagnose.rules import RuleContext, run_rules
from layerwise.diagnose.rules import tokens as token_rules
from layerwise.recipe import parse_recipe
from layerwise.runs import Run
from layerwise.text import TextPipeline

DOCTOR_MD = Path(__file__).resolve().parents[1] / "docs" / "doctor.md"
TOKEN_CODES = {"high_unknown_rate", "heavy_truncation"}


def data_codes(profile: dict) -> set[str]:
    ctx = RuleContext(data=profile, num_classes=profile["num_classes"], task=profile["task"])
    return {f.code for f in run_rules(ctx, "data")} & TOKEN_CODES


def test_figures_count_unknown_tokens_types_and_the_cut_before_padding() -> None:
    pipeline = TextPipeline("word", min_freq=2, max_length=3).fit(["a a b c", "a b d"])
    encoded, f = pipeline.encode(["a b c d e", "a"], figures=True)
    assert torch.equal(encoded["tokens"], pipeline.encode(["a b c d e", "a"])["tokens"])
    assert encoded["tokens"].shape == (2, 3)
    # Known: a, b (seen twice). c, d, e are <unk>: 3 of the 6 tokens, 2 of the 5 types known.
    assert (f["rows"], f["tokens"], f["unknown_tokens"]) == (2, 6, 3)
    assert f["unknown_rate"] == 0.5 and (f["types"], f["known_types"]) == (5, 2)
    # The 5-token row is cut to 3: one row of two, 2 of the 6 tokens dropped.
    assert (f["truncated_rows"], f["truncation_share"]) == (1, 0.5)
    assert f["tokens_cut_share"] == pytest.approx(2 / 6)
    assert (f["length"]["min"], f["length"]["max"], f["length"]["median"]) == (1, 5, 3.0)
    # A row exactly at the cap is not cut.
    _, exact = pipeline.encode(["a b a"], figures=True)
    assert exact["truncated_rows"] == 0 and exact["tokens_cut_share"] == 0.0


def reviews(tmp_path: Path, rows: int = 200, words: int = 12) -> Path:
    """A CSV of short reviews over a small vocabulary (every word frequent), labels alternating."""
    generator = torch.Generator().manual_seed(0)
    lines = ["text,label"]
    for i in range(rows):
        ids = torch.randint(0, 40, (words,), generator=generator).tolist()
        lines.append(" ".join(f"w{j}" for j in ids) + ("  good" if i % 2 else " bad") + f",{i % 2}")
    path = tmp_path / "reviews.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_healthy_text_bundle_has_figures_per_split_and_raises_nothing(tmp_path: Path) -> None:
    bundle = load_dataset("text", path=str(reviews(tmp_path)), min_freq=1, max_length=32)
    profile = profile_data(bundle, label_noise=False)
    stream = profile["tokens"]["text"]
    assert stream["tokenizer"] == "word" and stream["max_length"] == 32
    test = stream["splits"]["test"]
    assert test["rows"] == 40 and test["tokens"] == 40 * 13
    assert test["unknown_rate"] == 0.0 and test["truncation_share"] == 0.0
    assert stream["splits"]["val"] is None
    assert data_codes(profile) == set()


def test_a_vocabulary_that_keeps_almost_nothing_is_named(tmp_path: Path) -> None:
    bundle = load_dataset("text", path=str(reviews(tmp_path)), min_freq=75, max_length=32)
    profile = profile_data(bundle, label_noise=False)
    rate = profile["tokens"]["text"]["splits"]["test"]["unknown_rate"]
    assert rate > token_rules.UNKNOWN_SEVERE  # only "good" and "bad" are seen 75+ times
    ctx = RuleContext(
        data=profile,
        num_classes=2,
        recipe=parse_recipe(RECIPE.format(args="{min_freq: 75}")).model_dump(mode="json"),
    )
    finding = token_rules.high_unknown_rate(ctx)
    assert finding is not None and finding.severity == "error"
    assert finding.evidence["vocabulary_drops_words"] is True  # train is mostly <unk> too
    assert finding.patch == {"data.args.min_freq": 2}
    assert data_codes(profile) == {"high_unknown_rate"}


def test_rows_cut_to_a_few_tokens_are_named_with_a_length_patch(tmp_path: Path) -> None:
    bundle = load_dataset("text", path=str(reviews(tmp_path)), min_freq=1, max_length=4)
    profile = profile_data(bundle, label_noise=False)
    train = profile["tokens"]["text"]["splits"]["train"]
    assert train["truncation_share"] == 1.0 and train["tokens_cut_share"] == pytest.approx(9 / 13)
    ctx = RuleContext(
        data=profile,
        num_classes=2,
        recipe=parse_recipe(RECIPE.format(args="{max_length: 4}")).model_dump(mode="json"),
    )
    finding = token_rules.heavy_truncation(ctx)
    assert finding is not None and finding.patch == {"data.args.max_length": 16}  # p90 13 -> 16
    assert data_codes(profile) == {"heavy_truncation"}


def test_held_out_text_from_elsewhere_is_named_without_a_vocabulary_patch() -> None:
    split = {"rows": 50, "tokens": 1_000, "unknown_rate": 0.004, "type_coverage": 0.6}
    far = {**split, "unknown_rate": 0.3, "type_coverage": 0.2}
    profile = {"tokens": {"text": {"vocab_size": 900, "splits": {"train": split, "test": far}}}}
    finding = token_rules.high_unknown_rate(RuleContext(data=profile, recipe=None))
    assert finding.evidence["split"] == "test"
    assert finding.evidence["vocabulary_drops_words"] is False and finding.patch == {}
    # Too few tokens to judge, or no token figures at all: nothing.
    small = {"tokens": {"text": {"splits": {"test": {**far, "tokens": 150}}}}}
    assert token_rules.high_unknown_rate(RuleContext(data=small)) is None
    assert token_rules.high_unknown_rate(RuleContext(data={"tokens": None})) is None


def test_a_language_model_text_counts_characters_never_seen_in_training() -> None:
    bundle = language_model_bundle("t", "abcab " * 40 + "xyz" * 3 + "ab " * 4, block_size=4)
    val = bundle.token_figures["text"]["splits"]["val"]
    # The last 10% (27 characters) holds 9 of x, y, z, never seen in training.
    assert val["rows"] == 1 and val["tokens"] == 27
    assert val["unknown_tokens"] == 9 and (val["types"], val["known_types"]) == (7, 4)
    assert val["max_length"] is None and val["truncation_share"] == 0.0
    assert bundle.token_figures["text"]["splits"]["test"] is None


def test_the_two_codes_and_their_thresholds_are_documented() -> None:
    text = DOCTOR_MD.read_text(encoding="utf-8")
    headings = set(re.findall(r"^## (\S+)\s*$", text, flags=re.MULTILINE))
    assert headings >= TOKEN_CODES
    for constant in (n for n in vars(token_rules) if n.isupper()):
        if isinstance(getattr(token_rules, constant), int | float):
            assert f"`{constant}`" in text, f"{constant} is not documented"


RECIPE = """
name: reviews
data: {{name: text, args: {args}}}
model: {{name: fasttext, args: {{dim: 8}}}}
train: {{epochs: 1}}
"""


@pytest.mark.parametrize("which", ["mt", "lm"])
def test_sequence_runs_check_their_tokens_before_training(
    shared_data, tmp_path: Path, which: str
) -> None:
    from layerwise.tasks import sequence_task
    from layerwise.tasks.sequence import build_model, data_doctor

    text = {
        "mt": "name: mt\ndata: {name: multi30k, args: {subset: 64, vocab_size: 150}}\n"
        "model: {name: seq2seq_gru, args: {embed: 8, hidden: 8}}\n",
        "lm": "name: lm\ndata: {name: tinyshakespeare, args: {block_size: 16, subset: 3000}}\n"
        "model: {name: gpt_lm, args: {dim: 8, heads: 2, layers: 1}}\n",
    }[which]
    recipe = parse_recipe(text)
    data = load_dataset(recipe.data.name, **recipe.data.args)
    model = build_model(recipe, sequence_task(recipe), data)
    run = Run.create(tmp_path, recipe.name, recipe.to_yaml())
    said: list[str] = []
    _probes, doctor = data_doctor(recipe, data, model, run, said.append)
    streams = doctor.data_profile["tokens"]
    assert set(streams) == ({"source", "target"} if which == "mt" else {"text"})
    for stream in streams.values():
        assert stream["splits"]["train"]["tokens"] > 0
    assert (run.path / "data_profile.json").is_file()
    assert not [s for s in said if any(code in s for code in TOKEN_CODES)]
    off = parse_recipe(text + "doctor: {probes: false}\n")
    assert data_doctor(off, data, model, run, said.append) == []


def test_token_splits_of_different_widths_are_compared_padded() -> None:
    from layerwise.data.text import TextBundle

    train = torch.tensor([[5, 6, 7, 0, 0], [5, 8, 0, 0, 0]] * 30)
    test = torch.tensor([[5, 6, 7], [9, 9, 9]])  # one sentence copied from train
    bundle = TextBundle(
        name="pairs",
        train=(train, torch.zeros(60, dtype=torch.long)),
        val=None,
        test=(test, torch.zeros(2, dtype=torch.long)),
        num_classes=2,
        input_shape=(5,),
        token_figures={},
    )
    profile = profile_data(bundle, label_noise=False)
    assert profile["overlap"]["test"]["exact"] == 1 and profile["sizes"]["test"] == 2


def test_next_token_targets_are_not_too_few_rows_per_class() -> None:
    from layerwise.diagnose.rules import data as data_rules

    # Multi30k: 29,000 sentence pairs, 8,000 target subwords, a 9 M-parameter GRU translator.
    profile = {"sizes": {"train": 29_000}, "num_params": 9_000_000, "per_position_targets": True}
    assert data_rules.data_too_small(RuleContext(data=profile, num_classes=8000)) is None
    profile["per_position_targets"] = False  # 3.6 rows per class of a plain classifier
    assert data_rules.data_too_small(RuleContext(data=profile, num_classes=8000)) is not None
