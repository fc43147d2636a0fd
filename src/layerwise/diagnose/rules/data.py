"""Rules on the data profile, checked before training: they read `ctx.data` only.

`profile_data` measures the data (class counts, duplicates, overlaps between splits, NaN/inf,
value scales, constant features, a label-noise estimate, sizes); these rules decide what is a
problem. Healthy data sets have a little of everything (MNIST has constant border pixels, digits a
few near-duplicates, any real labelling a few percent of doubtful labels), so each threshold sits
well above what a healthy set shows.

The profile describes the data as the model will see it, after the recipe's data fixes
(`data.standardize`, `data.impute`, … applied by `layerwise.data.clean`), so a finding means the
problem is still there; its patch then leaves out what the recipe already sets, and an empty
patch tells auto-fix it has nothing more to try. The one fix that does not change the data,
`train.loss.class_weights`, silences `class_imbalance`.
"""

from __future__ import annotations

import math
from typing import Any

from layerwise.diagnose.findings import Finding
from layerwise.diagnose.rules import RuleContext, decided_by, number, rule
from layerwise.diagnose.rules import fixes as fx

IMBALANCE_RATIO = 5.0  # largest class / smallest class in the training split ...
IMBALANCE_RECALL_GAP = 0.1  # ... and the quick model misses the rare classes 10 points more often
LABEL_NOISE_FRACTION = 0.12  # estimated share of wrong labels (healthy sets: a few percent) ...
LABEL_NOISE_MIN_PER_CLASS = 20  # ... judged only with 20+ training rows per class
LEAK_EXACT_FRACTION = 0.01  # 1% of a val/test split copied exactly from train ...
LEAK_ANY_FRACTION = 0.05  # ... or 5% exact or near copies ...
LEAK_MIN_ROWS = 3  # ... and at least 3 rows either way
DUPLICATE_FRACTION = 0.05  # 5% of the training rows repeat an earlier row
UNSCALED_RMS = 10.0  # inputs whose root mean square is 10+ (an order above unit scale) ...
UNSCALED_FEATURE_MEAN = 10.0  # ... or a feature whose mean is above 10 in magnitude
TINY_INPUTS = 0.01  # every value within ±0.01
FEATURE_RANGE_RATIO = 100.0  # tabular features whose ranges differ 100-fold ...
UNIT_BOUND = 1.0  # ... unless every value lies within [-1, 1] (a bounded encoding)
TOO_SMALL_ROWS = 100  # fewer training rows than this ...
TOO_SMALL_PER_CLASS = 10  # ... or fewer than 10 rows per class on average ...
PARAMS_PER_ROW = 1000  # ... or over 1,000 parameters per training row (not pretrained)
PRETRAINED_ARGS = ("pretrained", "weights", "checkpoint")


def _count(n: Any) -> str:
    return f"{int(n):,}"


def _token_inputs(data: dict[str, Any]) -> bool:
    """Integer inputs are token ids feeding an embedding: their scale and constant padding
    positions mean nothing (`profile_data` reports the inputs' `dtype`)."""
    dtype = str(data.get("dtype", "")).lower()
    return dtype.startswith(("int", "uint", "long")) or str(data.get("modality", "")) == "text"


# ---------------------------------------------------------------------------- class_imbalance
@rule("class_imbalance", "data")
def class_imbalance(ctx: RuleContext) -> Finding | None:
    counts = [int(c) for c in ((ctx.data or {}).get("class_counts") or {}).get("train") or []]
    if not ctx.classification or len(counts) < 2:
        return None
    if ctx.get("train.loss.class_weights"):
        return None  # the loss already compensates; the data itself stays skewed
    if (ctx.data or {}).get("per_position_targets"):
        # Next-token (or per-position) targets follow the language's own skewed distribution:
        # rare tokens are the nature of text, not a collection defect to re-weight.
        return None
    rare = min(range(len(counts)), key=lambda i: counts[i])
    common = max(range(len(counts)), key=lambda i: counts[i])
    ratio = counts[common] / counts[rare] if counts[rare] else math.inf
    if ratio < IMBALANCE_RATIO:
        return None
    recall = _rare_class_recall(ctx, counts)
    if recall is not None and recall["rare"] >= recall["common"] - IMBALANCE_RECALL_GAP:
        return None  # a simple model finds the rare classes as well as the rest: no harm done
    if counts[rare]:
        message = (
            f"class {rare} has {_count(counts[rare])} training rows, class {common} has "
            f"{_count(counts[common])} ({ratio:.3g}x as many)"
        )
    else:
        message = f"class {rare} has no training rows (class {common} has {_count(counts[common])})"
    total = sum(counts)
    if fx.uses_cross_entropy(ctx):
        patch = {"train.loss.class_weights": "balanced"}
    else:
        patch = {} if ctx.get("data.balance") else {"data.balance": "oversample"}
    return Finding(
        code="class_imbalance",
        severity="warning",
        message=message,
        evidence={
            "class_counts": counts,
            "ratio": ratio if math.isfinite(ratio) else "inf",
            "rarest_class": rare,
            "largest_class": common,
            "rarest_share": counts[rare] / total if total else 0.0,
            "quick_model_recall": recall,
        },
        causes=[
            "the data set is skewed: the model can score well by predicting the common classes",
        ],
        remedies=[
            "weight the loss by inverse class frequency (train.loss.class_weights: balanced)",
            "or oversample the rare classes (data.balance: oversample)",
            "judge the model by balanced metrics (f1, per-class recall), not accuracy",
        ],
        patch=patch if fx.has_recipe(ctx) else {},
    )


# ---------------------------------------------------------------------------- label_noise
@rule("label_noise", "data")
def label_noise(ctx: RuleContext) -> Finding | None:
    info = (ctx.data or {}).get("label_noise")
    if not info or not ctx.classification:
        return None
    fraction = number(info.get("estimated_fraction"))
    size = ((ctx.data or {}).get("sizes") or {}).get("train")
    if fraction is None or fraction < LABEL_NOISE_FRACTION:
        return None
    if size and ctx.classes and size / ctx.classes < LABEL_NOISE_MIN_PER_CLASS:
        return None  # a quick model on a handful of rows per class misjudges most of them
    flagged = info.get("flagged")
    accuracy = number(info.get("cv_accuracy"))
    examined = info.get("rows_examined")
    invalid = ((ctx.data or {}).get("invalid_labels") or {}).get("train") or 0
    # Large training sets are judged on a seeded sample (`profile_data`'s `max_rows`).
    sampled = bool(examined and size and examined < size - invalid)
    detail = []
    if flagged is not None:
        of = examined if sampled else size
        detail.append(f"{_count(flagged)}{f' of {_count(of)}' if of else ''} rows flagged")
    if sampled:
        detail.append(f"judged on a sample of {_count(examined)} of the {_count(size)} rows")
    if accuracy is not None:
        detail.append(f"the quick model's cross-validated accuracy is {accuracy:.3f}")
    return Finding(
        code="label_noise",
        severity="warning",
        message=(
            f"about {fraction:.0%} of the training labels look wrong"
            + (f" ({'; '.join(detail)})" if detail else "")
        ),
        evidence={
            "estimated_fraction": fraction,
            "flagged": flagged,
            "cv_accuracy": accuracy,
            "method": info.get("method"),
            "rows_examined": examined,
            "example_indices": list(info.get("indices") or [])[:20],
        },
        causes=[
            "labelling mistakes in the data set",
            "ambiguous samples that belong to more than one class",
            "labels shifted against their samples (a join or sort on the wrong key)",
        ],
        remedies=[
            "inspect the flagged rows (evidence.example_indices) and fix or drop them",
            "drop the flagged rows (data.drop_noisy: true)",
            "soften the targets (train.loss.label_smoothing: 0.1)",
        ],
        patch=fx.merge(fx.recipe_flag(ctx, "data.drop_noisy"), fx.label_smoothing(ctx, 0.1)),
    )


# ---------------------------------------------------------------------------- train_test_leakage
@rule("train_test_leakage", "data")
def train_test_leakage(ctx: RuleContext) -> Finding | None:
    data = ctx.data or {}
    leaks = {}
    for split in ("val", "test"):
        info = (data.get("overlap") or {}).get(split)
        size = number((data.get("sizes") or {}).get(split))
        if not isinstance(info, dict) or not size:
            continue
        # `near` counts rows with an exact or near copy in train (exact ones included).
        exact, near = int(info.get("exact") or 0), int(info.get("near") or 0)
        rows = max(exact, near)
        fraction = number(info.get("fraction"))
        if fraction is None:
            fraction = rows / size
        if (exact / size >= LEAK_EXACT_FRACTION and exact >= LEAK_MIN_ROWS) or (
            fraction >= LEAK_ANY_FRACTION and rows >= LEAK_MIN_ROWS
        ):
            leaks[split] = {
                "exact": exact,
                "near": near,
                "fraction": fraction,
                "rows": rows,
                "size": int(size),
            }
    if not leaks:
        return None
    split = max(leaks, key=lambda s: leaks[s]["fraction"])
    worst = leaks[split]
    others = [f"{s} {v['fraction']:.1%}" for s, v in leaks.items() if s != split]
    return Finding(
        code="train_test_leakage",
        severity="error",
        message=(
            f"{_count(worst['rows'])} of {_count(worst['size'])} {split} rows "
            f"({worst['fraction']:.1%}) also appear in the training data ({_count(worst['exact'])} "
            f"as exact copies)" + (f"; also {', '.join(others)}" if others else "")
        ),
        evidence={"split": split, "splits": leaks},
        causes=[
            "the splits were made after duplicating or augmenting the data",
            "the same sample (or the same source, e.g. one patient) appears in several splits",
            "val/test were carved from data that train also contains",
        ],
        remedies=[
            "remove from train every row that is an exact or near copy of a val/test row "
            "(data.drop_leaked: true)",
            "split by source (group) before any augmentation or oversampling",
            "until then, validation and test scores are optimistic",
        ],
        # drop_leaked drops exactly the train rows counted here (`layerwise.data.overlap`),
        # near copies included, so the finding is gone once the patch is applied.
        patch=fx.recipe_flag(ctx, "data.drop_leaked"),
    )


# ---------------------------------------------------------------------------- duplicate_samples
@rule("duplicate_samples", "data")
def duplicate_samples(ctx: RuleContext) -> Finding | None:
    data = ctx.data or {}
    info = data.get("duplicates") or {}
    rows = int(info.get("rows") or 0)
    size = number((data.get("sizes") or {}).get("train"))
    fraction = number(info.get("fraction"))
    if fraction is None:
        fraction = rows / size if size else 0.0
    if fraction < DUPLICATE_FRACTION:
        return None
    conflicting = int(info.get("conflicting_labels") or 0)
    return Finding(
        code="duplicate_samples",
        severity="warning",
        message=(
            f"{_count(rows)}{f' of {_count(size)}' if size else ''} training rows "
            f"({fraction:.1%}) repeat an earlier row"
            + (f"; {_count(conflicting)} of them with a different label" if conflicting else "")
        ),
        evidence={"rows": rows, "fraction": fraction, "conflicting_labels": conflicting},
        causes=[
            "the data was concatenated or oversampled twice",
            "a collection or export step repeated records",
        ],
        remedies=[
            "drop the repeats (data.drop_duplicates: true)",
            "repeats weigh some samples more than others and inflate validation scores when "
            "they cross splits",
        ],
        patch=fx.recipe_flag(ctx, "data.drop_duplicates"),
    )


# ---------------------------------------------------------------------------- missing_values
@rule("missing_values", "data")
def missing_values(ctx: RuleContext) -> Finding | None:
    bad = {}
    for split, info in ((ctx.data or {}).get("nonfinite") or {}).items():
        info = info or {}
        nan, inf = int(info.get("nan") or 0), int(info.get("inf") or 0)
        if nan or inf or info.get("rows"):
            columns = info.get("columns")
            count = info.get("column_count")
            if count is None:
                count = len(columns) if isinstance(columns, list | tuple) else columns
            bad[split] = {
                "nan": nan,
                "inf": inf,
                "rows": int(info.get("rows") or 0),
                "columns": int(count or 0),
                "column_indices": list(columns) if isinstance(columns, list | tuple) else [],
            }
    if not bad:
        return None
    parts = []
    for split, info in bad.items():
        where = f"{_count(info['rows'])} rows" + (
            f", {_count(info['columns'])} columns" if info["columns"] else ""
        )
        parts.append(f"{split}: {_count(info['nan'])} NaN and {_count(info['inf'])} inf in {where}")
    return Finding(
        code="missing_values",
        severity="fatal",
        message="inputs contain NaN or infinite values (" + "; ".join(parts) + ")",
        evidence={"splits": bad},
        causes=[
            "missing entries in the source data (empty cells read as NaN)",
            "a division by zero or log of 0 in feature engineering",
        ],
        remedies=[
            "impute the missing values (data.impute: median) or drop the rows",
            "fix the feature computation that produced inf",
        ],
        patch={"data.impute": "median"}
        if fx.has_recipe(ctx) and not ctx.get("data.impute")
        else {},
    )


# ---------------------------------------------------------------------------- unscaled_inputs
def _rms(data: dict[str, Any]) -> float | None:
    """The inputs' root mean square, sqrt(mean² + std²), from the profile's scale (or None)."""
    scale = data.get("scale") or {}
    mean, std = number(scale.get("mean")), number(scale.get("std"))
    return math.hypot(mean, std) if mean is not None and std is not None else None


def unscaled_reason(data: dict[str, Any], image: bool) -> str | None:
    """Why the inputs' scale is off (one phrase with the numbers), or None when it is fine."""
    scale = data.get("scale") or {}
    lo, hi = number(scale.get("min")), number(scale.get("max"))
    mean, std = number(scale.get("mean")), number(scale.get("std"))
    feature_mean = number(scale.get("max_abs_feature_mean"))
    ratio = number(scale.get("feature_range_ratio"))
    bounded = lo is not None and hi is not None and lo >= -UNIT_BOUND and hi <= UNIT_BOUND
    span = f"values span [{lo:.3g}, {hi:.3g}]" if lo is not None and hi is not None else "values"
    # The first layer sees the mean and the spread together: its pre-activations and, under
    # SGD, the size of its updates scale with the inputs' root mean square, sqrt(mean² + std²),
    # which is 1 for standardised data. Judging mean and std apart at 5 flagged 2-D blobs drawn
    # with centres in ±10 (std 6, RMS 6) that train as well raw as standardised.
    rms = _rms(data)
    if rms is not None and rms >= UNSCALED_RMS:
        return f"{span} with mean {mean:.3g} and std {std:.3g} (root mean square {rms:.3g})"
    if feature_mean is not None and feature_mean > UNSCALED_FEATURE_MEAN:
        return f"{span}; one feature averages {feature_mean:.3g}"
    if lo is not None and hi is not None and hi > lo and max(abs(lo), abs(hi)) < TINY_INPUTS:
        return f"all values lie within ±{max(abs(lo), abs(hi)):.2g}"
    # Features in different units differ in range. Spreads (stds) would also compare a mostly
    # empty column of a bounded table (a border pixel) with busy ones, which is no unit problem,
    # and a table already within [-1, 1] (pixels, min-max scaling, one-hot, tf-idf) has no
    # feature that can swamp the others.
    if not image and not bounded and ratio is not None and ratio >= FEATURE_RANGE_RATIO:
        return f"feature ranges differ {ratio:.3g}-fold"
    return None


@rule("unscaled_inputs", "data")
def unscaled_inputs(ctx: RuleContext) -> Finding | None:
    data = ctx.data or {}
    if _token_inputs(data):
        return None
    reason = unscaled_reason(data, fx.is_image(ctx))
    if reason is None:
        return None
    # Tiny inputs give the first layer a tiny weight gradient (it is the input times the
    # gradient at the layer's output): that finding is theirs. Huge ones (a root mean square of
    # UNSCALED_RMS or more) scale the first layer's pre-activations with it and, under SGD, its
    # steps with its square: the rate is in effect far too high, and what a rate too high does
    # to the run is theirs: the loss overshooting, rising or swinging, the gradient norm
    # growing, ReLU units pushed silent (and through them a first layer's gradient gone).
    tiny = reason.startswith("all values lie within")
    rms = _rms(data)
    huge = rms is not None and rms >= UNSCALED_RMS
    accounts_for = (
        ["small_first_layer_gradient"]
        if tiny
        else ["overshoot", "rising_loss", "swinging_loss", "growing_gradient", "silent_units"]
        if huge
        else []
    )
    return Finding(
        code="unscaled_inputs",
        severity="warning",
        message=f"{reason}; networks train best on inputs with mean ~0 and std ~1",
        evidence={
            "scale": data.get("scale"),
            "reason": reason,
            **({"accounts_for": accounts_for} if accounts_for else {}),
        },
        causes=[
            "raw values were fed to the network (pixels in 0-255, amounts in thousands)",
            "features measured in different units were left side by side",
        ],
        remedies=[
            "standardise each feature with the training split's mean and std "
            "(data.standardize: true)",
            "for images: divide by 255 and normalise with the data set's mean and std",
        ],
        patch=fx.standardize(ctx),
    )


# ---------------------------------------------------------------------------- constant_feature
@rule("constant_feature", "data")
def constant_feature(ctx: RuleContext) -> Finding | None:
    data = ctx.data or {}
    info = data.get("constant_features") or {}
    count = int(info.get("count") or 0)
    # Image borders are constant in many data sets (MNIST) and do no harm to a CNN.
    if count < 1 or fx.is_image(ctx) or _token_inputs(data):
        return None
    fraction = number(info.get("fraction"))
    indices = list(info.get("indices") or [])
    shown = ", ".join(str(i) for i in indices[:10]) + (", …" if len(indices) > 10 else "")
    total = round(count / fraction) if fraction else None
    return Finding(
        code="constant_feature",
        severity="info",
        message=(
            f"{_count(count)}{f' of {_count(total)}' if total else ''} input features "
            f"{f'({fraction:.0%}) ' if fraction else ''}never change in the training data"
            + (f" (columns {shown})" if shown else "")
        ),
        evidence={"count": count, "fraction": fraction, "indices": indices},
        causes=["a column that is constant in this data set (an id prefix, a unit, a flag)"],
        remedies=[
            "drop the constant columns (data.drop_constant: true): they carry no information "
            "and break per-feature standardisation",
        ],
        patch=fx.recipe_flag(ctx, "data.drop_constant"),
    )


def _rare_class_recall(ctx: RuleContext, counts: list[int]) -> dict[str, float] | None:
    """The label-noise quick model's out-of-fold recall on the rare classes (the worst of the
    classes at least `IMBALANCE_RATIO` times rarer than the largest) and on the rest, or None
    when there is no quick model that learnt the data.

    A skew is a problem when it makes a model ignore the rare classes, which a count ratio does
    not show: a rare class that stands apart (one digit among ten) is found as reliably as the
    common ones, while a rare class that overlaps the others is the one a model gives up first."""
    noise = (ctx.data or {}).get("label_noise") or {}
    recall = noise.get("class_recall")
    if not recall or noise.get("abstained") or len(recall) != len(counts):
        return None
    largest = max(counts)
    rare = [r for r, c in zip(recall, counts, strict=True) if c and c * IMBALANCE_RATIO <= largest]
    common = [r for r, c in zip(recall, counts, strict=True) if c * IMBALANCE_RATIO > largest]
    if not rare or not common or None in rare or None in common:
        return None
    return {"rare": min(rare), "common": float(sum(common) / len(common))}


# ---------------------------------------------------------------------------- data_too_small
@rule("data_too_small", "data")
def data_too_small(ctx: RuleContext) -> Finding | None:
    data = ctx.data or {}
    rows = number((data.get("sizes") or {}).get("train"))
    if not rows:
        return None
    params = number(data.get("num_params"))
    # One class per position (next tokens): a row holds many targets, and a vocabulary of
    # 8,000 subwords is not 8,000 classes each needing 10 rows of its own.
    per_row = ctx.classification and not data.get("per_position_targets")
    classes = ctx.classes if per_row else None
    pretrained = any(ctx.get(f"model.args.{key}") for key in PRETRAINED_ARGS)
    reasons = []
    if rows < TOO_SMALL_ROWS:
        reasons.append(f"only {_count(rows)} training rows")
    if classes and rows / classes < TOO_SMALL_PER_CLASS:
        reasons.append(f"{rows / classes:.3g} rows per class")
    if params and not pretrained and params / rows > PARAMS_PER_ROW:
        reasons.append(
            f"{_count(rows)} rows for a model with {params:,.0f} trainable parameters "
            f"({params / rows:,.0f} per row)"
        )
    if not reasons:
        return None
    if fx.is_image(ctx):
        patch = fx.augment(ctx)
    else:
        patch = fx.merge(fx.more_weight_decay(ctx), fx.more_dropout(ctx), fx.early_stopping(ctx))
    return Finding(
        code="data_too_small",
        severity="warning",
        message="; ".join(reasons),
        evidence={
            "train_rows": int(rows),
            "num_params": params,
            "params_per_row": params / rows if params else None,
            "rows_per_class": rows / classes if classes else None,
        },
        causes=["too few examples for a model of this size: it can memorise them all"],
        remedies=[
            "augment image data (data.augment) or collect more data",
            "regularise: weight decay, dropout, early stopping; or use a smaller model",
            "start from a pretrained model (transfer learning)",
        ],
        patch=patch,
    )


# ---------------------------------------------------------------------------- how sure
def _share(f: Finding, key: str, what: str, threshold: float) -> tuple[str, float, float, bool]:
    return what, float(f.evidence[key]), threshold, True


decided_by("label_noise")(
    lambda f: _share(
        f, "estimated_fraction", "estimated share of wrong labels", LABEL_NOISE_FRACTION
    )
)
decided_by("duplicate_samples")(
    lambda f: _share(f, "fraction", "share of repeated training rows", DUPLICATE_FRACTION)
)
decided_by("train_test_leakage")(
    lambda f: (
        "share of a held-out split copied from train",
        float(f.evidence["splits"][f.evidence["split"]]["fraction"]),
        LEAK_ANY_FRACTION,
        True,
    )
)
decided_by("class_imbalance")(
    lambda f: (
        ("largest/smallest class", float(f.evidence["ratio"]), IMBALANCE_RATIO, True)
        if f.evidence["ratio"] != "inf"
        else None
    )
)


@decided_by("unscaled_inputs")
def _unscaled_margin(f: Finding) -> tuple[str, float, float, bool] | None:
    """The test `unscaled_reason` passed first, with its number."""
    scale = f.evidence.get("scale") or {}
    lo, hi = number(scale.get("min")), number(scale.get("max"))
    mean, std = number(scale.get("mean")), number(scale.get("std"))
    if mean is not None and std is not None and math.hypot(mean, std) >= UNSCALED_RMS:
        return "inputs' root mean square", math.hypot(mean, std), UNSCALED_RMS, True
    feature_mean = number(scale.get("max_abs_feature_mean"))
    if feature_mean is not None and feature_mean > UNSCALED_FEATURE_MEAN:
        return "largest |feature mean|", feature_mean, UNSCALED_FEATURE_MEAN, True
    if lo is not None and hi is not None and max(abs(lo), abs(hi)) < TINY_INPUTS:
        return "largest |input|", max(abs(lo), abs(hi)), TINY_INPUTS, False
    ratio = number(scale.get("feature_range_ratio"))
    return ("feature range ratio", ratio, FEATURE_RANGE_RATIO, True) if ratio else None


@decided_by("data_too_small")
def _too_small_margin(f: Finding) -> tuple[str, float, float, bool] | None:
    """The most decisive of the size tests that fired."""
    e = f.evidence
    tests = []
    if e.get("train_rows") is not None and e["train_rows"] < TOO_SMALL_ROWS:
        tests.append(("training rows", float(e["train_rows"]), TOO_SMALL_ROWS, False))
    per_class = e.get("rows_per_class")
    if per_class is not None and per_class < TOO_SMALL_PER_CLASS:
        tests.append(("rows per class", float(per_class), TOO_SMALL_PER_CLASS, False))
    per_row = e.get("params_per_row")
    if per_row is not None and per_row > PARAMS_PER_ROW:
        tests.append(("parameters per row", float(per_row), PARAMS_PER_ROW, True))

    def margin(t: tuple[str, float, float, bool]) -> float:
        return t[1] / t[2] if t[3] else t[2] / max(t[1], 1e-12)

    return max(tests, key=margin) if tests else None
