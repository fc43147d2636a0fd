"""Data checks: the numbers the doctor's data rules read, computed once before training.

`profile_data` looks only at the data (never the model) and returns plain JSON-able numbers, so the
rules that turn them into findings can be tested on hand-written profiles. Inputs may hold NaN or
inf: counting them is one of the checks, so nothing here raises on them.

A *feature* is a column for tables ((N, F) inputs) and a channel for images ((N, C, H, W), or
(N, H, W) as one channel: any input with 3 or more dimensions); pixels count as features only
for `constant_features` and `nonfinite`, which are per flattened input position.

Exact and near copies (`duplicates`, `overlap`) are defined and found by `layerwise.data.overlap`,
the same functions the data fixes `data.drop_duplicates` and `data.drop_leaked` use, so a row
counted here is a row those fixes drop. The label-noise estimate is
`layerwise.data.label_noise`, which `data.drop_noisy` uses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from layerwise.data.bundle import DatasetBundle
from layerwise.data.label_noise import estimate_label_noise, one_thread
from layerwise.data.overlap import find_copies, repeated_rows, row_hashes, split_rows
from layerwise.errors import DataError

__all__ = ["profile_data"]

SPLITS = ("train", "val", "test")
CHUNK_ROWS = 4_096
MAX_OVERLAP_INDICES = 1_000
MAX_DUPLICATE_INDICES = 1_000
MAX_NONFINITE_COLUMNS = 20
MAX_CONSTANT_INDICES = 50


def profile_data(
    bundle: DatasetBundle,
    num_params: int | None = None,
    *,
    seed: int = 0,
    label_noise: bool = True,
    max_rows: int = 20_000,
) -> dict[str, Any]:
    """Profile a dataset for the doctor's data rules: every number is defined below.

    Args:
        bundle: the dataset; splits may be absent (None), inputs may hold NaN/inf.
        num_params: trainable parameters of the model to be trained, copied through for the
            "too little data" rule.
        seed: fixes every sample drawn here (PCA fits, the label-noise subsample and folds).
        label_noise: run the label-noise estimate (classification only; the slowest check).
        max_rows: rows of train the label-noise estimate examines at most.

    Returns a dict; an absent split gives None wherever a per-split entry is expected.
    - `task`, `num_classes`, `input_shape` (list), `image` (inputs have >= 3 dims), `dtype`
      (of the train inputs, e.g. "float32"; int64/int32 inputs are token ids, not measurements),
      `sizes` {train, val, test: rows}, `num_params`, `per_position_targets` (classification
      targets of shape (N, T, ...): one class per position, as for a language model, whose
      counts below are of the first position only) and `target_variance` (regression: the mean
      per-target variance of the training targets, the squared error of predicting the mean)
      and `linear_fit_mse` (regression: the squared error, on the training rows, of the
      least-squares line through them; None for inputs wider than 1,000 positions).
    - `class_counts` {split: [rows labelled 0, 1, ..., num_classes-1]} and `invalid_labels`
      {split: rows whose label is outside 0..num_classes-1}; both None for regression.
    - `duplicates` within train, exact copies as `layerwise.data.overlap` defines them (-0.0
      equals 0.0, NaN equals NaN): `rows` (rows that repeat an earlier row: what
      `data.drop_duplicates` drops besides leaked rows), `fraction` (rows / train rows),
      `groups` (distinct rows that occur more than once), `conflicting_labels` (groups whose
      labels disagree), `indices` (the first 1000 repeating rows, sorted).
    - `overlap` of val/test with train: {split: {exact (rows with an exact copy in train), near
      (rows with an exact or near copy in train, see `layerwise.data.overlap`), fraction
      (max(exact, near) / rows)}}, `train_rows` (train rows that are exact or near copies of a
      val/test row: what `data.drop_leaked` drops), `train_indices` (the first 1000 of them,
      sorted), `near_rms` (the near-copy radius used: `NEAR_RMS`, or less where ordinary
      neighbours are closer), `ordinary_rms` (the distance within which 1% of train rows have
      their nearest other train row; None when not measured).
    - `nonfinite` {split: {nan, inf (element counts), rows (rows with any), column_count
      (flattened input positions with any), columns (the first 20 of those)}}.
    - `scale` over the finite train values: `min`, `max`, `mean`, `std` (all values pooled),
      `max_abs_feature_mean` (largest |mean| of a feature), `feature_std_ratio` (largest over
      smallest std among features whose std > 0; None when there are none), `feature_std`
      {min, p10, median, p90, max} over those features (p90/p10 is a ratio that ignores a few
      near-empty columns), `features` (how many features there are), `feature_range_ratio`
      (largest over smallest range, max - min, among non-constant features: features in
      different units differ in range, while a mostly-empty column of a bounded table, a border
      pixel, has a tiny std but the table's full range; None when no feature varies).
    - `constant_features`: flattened input positions whose finite train values are all equal
      (or that have none): `count`, `fraction` (of all positions), `indices` (first 50).
      Images have naturally constant border pixels.
    - `label_noise`: see `label_noise.estimate_label_noise` (`estimated_fraction`, `flagged`,
      `indices` into train, `cv_accuracy`, `chance_accuracy`, `rows_examined`, `method`,
      `reference`: the quick models' out-of-fold accuracy and log-loss, which `underfitting`
      and `loss_plateau` measure a classifier against; None for images and wide inputs); None
      for regression, with `label_noise=False`, for token ids (int64/int32 inputs), or with fewer
      than 50 labelled train rows.
    - `tokens`: for token ids made by a text pipeline (IMDB and `text` classifiers, Multi30k's
      source and target, a language model's text), the bundle's `token_figures` as measured
      while encoding: {stream: {tokenizer, vocab_size, min_freq, max_size, max_length,
      splits: {split: unknown-token rate, vocabulary coverage of tokens and of types, length
      quantiles, truncation share, ...}}} (see `layerwise.text.figures.token_figures`); None
      for other data.
    """
    if bundle.train is None or len(bundle.train[0]) == 0:
        raise DataError(
            f"dataset '{bundle.name}' has no training rows to check",
            hint="give the dataset a non-empty train split",
        )
    with one_thread():
        return _profile(_one_width(bundle), num_params, seed, label_noise, max_rows)


def _one_width(bundle: DatasetBundle) -> DatasetBundle:
    """Token-id splits padded to one width, so their rows can be compared (a translation's
    sentences are padded split by split). Right-padding with 0 is what the ids already carry,
    so a padded row is the same sentence; other inputs are returned as they are."""
    parts = {s: getattr(bundle, s) for s in SPLITS if getattr(bundle, s) is not None}
    xs = [x for x, _ in parts.values()]
    if getattr(bundle, "token_figures", None) is None or any(x.dim() != 2 for x in xs):
        return bundle
    width = max(x.shape[1] for x in xs)
    if all(x.shape[1] == width for x in xs):
        return bundle
    padded = {
        s: (torch.nn.functional.pad(x, (0, width - x.shape[1])), y) for s, (x, y) in parts.items()
    }
    return dataclasses.replace(bundle, **padded, input_shape=(width,))


def _profile(
    bundle: DatasetBundle, num_params: int | None, seed: int, label_noise: bool, max_rows: int
) -> dict[str, Any]:
    x = bundle.train[0]
    image = x.dim() >= 3
    classification = bundle.task == "classification"
    xs = split_rows(bundle)
    ys = {name: _labels(data[1], classification) for name, data in _present(bundle)}
    stats = _column_stats(xs["train"])
    hashes = {name: row_hashes(a) for name, a in xs.items()}
    k = bundle.num_classes
    # Token ids (the only integers `to_tensors` keeps) are codes, not measurements: distances and
    # weighted sums of them mean nothing, so a quick model's guesses would make clean labels
    # look noisy. Bytes (uint8 pixels) are measurements.
    token_ids = x.dtype in (torch.int32, torch.int64)
    noise = None
    if classification and label_noise and not token_ids:
        held = next(((xs[s], ys[s]) for s in ("val", "test") if s in xs), None)
        noise = estimate_label_noise(
            xs["train"], ys["train"], k, seed=seed, max_rows=max_rows, image=image, held_out=held
        )
    return {
        "task": bundle.task,
        "num_classes": k,
        "input_shape": list(bundle.input_shape),
        "image": image,
        "dtype": str(x.dtype).removeprefix("torch."),
        "sizes": bundle.sizes(),
        "num_params": None if num_params is None else int(num_params),
        # Class ids per position (N, T): a language model's next tokens, or a tagger's tags.
        "per_position_targets": classification and bundle.train[1].dim() > 1,
        "target_variance": None if classification else _target_variance(ys["train"]),
        "linear_fit_mse": None
        if classification
        else _linear_fit_mse(xs["train"], ys["train"], seed),
        "class_counts": _per_split(ys, lambda y: _class_counts(y, k)) if classification else None,
        "invalid_labels": (
            _per_split(ys, lambda y: int(np.sum((y < 0) | (y >= k)))) if classification else None
        ),
        "duplicates": _duplicates(hashes["train"], ys["train"]),
        "overlap": _overlap(xs, hashes, image, seed),
        "nonfinite": _per_split(xs, _nonfinite),
        "scale": _scale(stats, _feature_groups(x.shape)),
        "constant_features": _constant(stats),
        "label_noise": noise,
        "tokens": getattr(bundle, "token_figures", None),
    }


def _per_split(values: dict[str, np.ndarray], measure: Callable[[np.ndarray], Any]) -> dict:
    return {s: measure(values[s]) if s in values else None for s in SPLITS}


# ---------------------------------------------------------------------------- inputs
def _present(bundle: DatasetBundle) -> list[tuple[str, tuple[Tensor, Tensor]]]:
    return [(s, data) for s in SPLITS if (data := getattr(bundle, s)) is not None]


def _labels(y: Tensor, classification: bool) -> np.ndarray:
    """Class ids as int64 (N,), or regression targets as float64 (N, targets)."""
    y = y.detach().cpu()
    y = y.flatten(1) if y.dim() > 1 else y[:, None]
    return y[:, 0].long().numpy() if classification else y.double().numpy()


def _chunks(x: np.ndarray):
    for start in range(0, len(x), CHUNK_ROWS):
        yield x[start : start + CHUNK_ROWS]


# ---------------------------------------------------------------------------- copies
def _duplicates(hashes: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    n = len(hashes)
    repeated = repeated_rows(hashes)
    _, group, counts = np.unique(hashes, return_inverse=True, return_counts=True)
    _, label = np.unique(y.reshape(n, -1), axis=0, return_inverse=True)
    # One entry per distinct (row, label) pair: a repeated row with two labels conflicts.
    pairs = np.unique(np.stack([group.reshape(-1), label.reshape(-1)], axis=1), axis=0)
    labels_per_group = np.bincount(pairs[:, 0], minlength=len(counts))
    in_groups = counts > 1
    rows = int(repeated.sum())
    return {
        "rows": rows,
        "fraction": rows / n,
        "groups": int(in_groups.sum()),
        "conflicting_labels": int(np.sum(in_groups & (labels_per_group > 1))),
        "indices": np.flatnonzero(repeated)[:MAX_DUPLICATE_INDICES].tolist(),
    }


def _overlap(
    xs: dict[str, np.ndarray], hashes: dict[str, np.ndarray], image: bool, seed: int
) -> dict[str, Any]:
    """Exact and near copies of train rows in val/test (`layerwise.data.overlap.find_copies`)."""
    copies = find_copies(xs, image=image, seed=seed, hashes=hashes)
    out: dict[str, Any] = {"val": None, "test": None}
    for s in ("val", "test"):
        if s not in xs:
            continue
        exact, near = copies.exact[s], copies.near[s]
        out[s] = {
            "exact": int(exact.sum()),
            "near": int(near.sum()),
            # near includes exact, so this is max(exact, near) / rows
            "fraction": int(near.sum()) / len(exact) if len(exact) else 0.0,
        }
    train_rows = np.flatnonzero(copies.train_near)
    out["train_rows"] = len(train_rows)
    out["train_indices"] = train_rows[:MAX_OVERLAP_INDICES].tolist()
    out["near_rms"] = copies.near_rms
    out["ordinary_rms"] = copies.ordinary_rms
    return out


# ---------------------------------------------------------------------------- values
def _nonfinite(x: np.ndarray) -> dict[str, Any]:
    bad = ~np.isfinite(x)
    if not bad.any():
        return {"nan": 0, "inf": 0, "rows": 0, "column_count": 0, "columns": []}
    columns = np.flatnonzero(bad.any(axis=0))
    nan = int(np.isnan(x).sum())
    return {
        "nan": nan,
        "inf": int(bad.sum()) - nan,
        "rows": int(bad.any(axis=1).sum()),
        "column_count": len(columns),
        "columns": columns[:MAX_NONFINITE_COLUMNS].tolist(),
    }


def _column_stats(x: np.ndarray) -> dict[str, np.ndarray]:
    """Per position over finite values: count, mean, M2 (sum of squared deviations), min, max.

    One pass in float64 over row chunks, merged with Chan et al.'s pairwise update, so memory
    stays bounded and near-constant columns with a large mean keep their tiny variance.
    """
    width = x.shape[1]
    count = np.zeros(width)
    mean = np.zeros(width)
    m2 = np.zeros(width)
    lo = np.full(width, np.inf)
    hi = np.full(width, -np.inf)
    for chunk in _chunks(x):
        c = chunk.astype(np.float64)
        finite = np.isfinite(c)
        clean = finite.all()
        n_c = np.full(width, float(len(c))) if clean else finite.sum(axis=0).astype(np.float64)
        if not clean:
            c = np.where(finite, c, np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_c = (c.sum(axis=0) if clean else np.nansum(c, axis=0)) / n_c
            dev = c - mean_c
            m2_c = (dev * dev).sum(axis=0) if clean else np.nansum(dev * dev, axis=0)
        mean_c = np.where(n_c > 0, mean_c, 0.0)
        total = count + n_c
        delta = mean_c - mean
        share = np.divide(n_c, total, out=np.zeros(width), where=total > 0)
        m2 += m2_c + delta * delta * count * share
        mean += delta * share
        count = total
        lo = np.fmin(lo, np.fmin.reduce(c, axis=0))
        hi = np.fmax(hi, np.fmax.reduce(c, axis=0))
    return {"count": count, "mean": mean, "m2": m2, "min": lo, "max": hi}


def _feature_groups(shape: torch.Size) -> np.ndarray:
    """Feature id of each flattened input position: its column, or its channel for images."""
    width = int(np.prod(shape[1:], dtype=np.int64))
    if len(shape) < 3:
        return np.arange(width)
    if len(shape) == 3:  # (N, H, W): one channel
        return np.zeros(width, dtype=np.int64)
    return np.arange(width) // int(np.prod(shape[2:], dtype=np.int64))


def _pool(stats: dict[str, np.ndarray], groups: np.ndarray) -> tuple[np.ndarray, ...]:
    """Pool per-position stats into per-group count, mean and population std."""
    count = np.bincount(groups, stats["count"])
    mean = np.bincount(groups, stats["count"] * stats["mean"]) / np.maximum(count, 1)
    spread = stats["m2"] + stats["count"] * (stats["mean"] - mean[groups]) ** 2
    std = np.sqrt(np.bincount(groups, spread) / np.maximum(count, 1))
    return count, mean, std


def _scale(stats: dict[str, np.ndarray], groups: np.ndarray) -> dict[str, Any]:
    has = stats["count"] > 0
    count, mean, std = _pool(stats, groups)
    _, all_mean, all_std = _pool(stats, np.zeros_like(groups))
    seen = count > 0
    varying = std[seen & (std > 0)]
    spans = _feature_spans(stats, groups)
    return {
        "min": float(stats["min"][has].min()) if has.any() else None,
        "max": float(stats["max"][has].max()) if has.any() else None,
        "mean": float(all_mean[0]) if has.any() else None,
        "std": float(all_std[0]) if has.any() else None,
        "max_abs_feature_mean": float(np.abs(mean[seen]).max()) if seen.any() else None,
        "feature_std_ratio": float(varying.max() / varying.min()) if len(varying) else None,
        "feature_std": {
            key: float(np.quantile(varying, q)) if len(varying) else None
            for key, q in (("min", 0), ("p10", 0.1), ("median", 0.5), ("p90", 0.9), ("max", 1))
        },
        "features": len(count),
        "feature_range_ratio": float(spans.max() / spans.min()) if len(spans) else None,
    }


def _feature_spans(stats: dict[str, np.ndarray], groups: np.ndarray) -> np.ndarray:
    """Each non-constant feature's range (max - min over its finite values and positions)."""
    has = stats["count"] > 0
    width = int(groups.max()) + 1 if len(groups) else 0
    lo, hi = np.full(width, np.inf), np.full(width, -np.inf)
    np.minimum.at(lo, groups[has], stats["min"][has])
    np.maximum.at(hi, groups[has], stats["max"][has])
    span = hi - lo
    return span[np.isfinite(span) & (span > 0)]


def _constant(stats: dict[str, np.ndarray]) -> dict[str, Any]:
    constant = np.flatnonzero((stats["count"] == 0) | (stats["max"] == stats["min"]))
    return {
        "count": len(constant),
        "fraction": len(constant) / len(stats["count"]),
        "indices": constant[:MAX_CONSTANT_INDICES].tolist(),
    }


def _target_variance(y: np.ndarray) -> float | None:
    """Mean per-target variance of regression targets: the squared error of always predicting
    the training mean, the regression counterpart of a classifier's chance level."""
    finite = y[np.isfinite(y).all(axis=1)] if y.ndim == 2 else y[np.isfinite(y)]
    return float(np.mean(np.var(finite, axis=0))) if len(finite) > 1 else None


LINEAR_FIT_MAX_ROWS = 5000  # rows the least-squares reference is fitted on (a random subset)
LINEAR_FIT_MAX_FEATURES = 1000  # wider inputs (images) get no linear reference


def _linear_fit_mse(x: np.ndarray, y: np.ndarray, seed: int = 0) -> float | None:
    """Mean per-target squared error of the least-squares line (with intercept) through the
    training rows, on those rows: what the inputs explain linearly. A network whose train
    loss sits there has learnt at least that much; what is left may be noise in the targets."""
    rows = np.isfinite(x).all(axis=1) & np.isfinite(y).all(axis=1)
    x, y = x[rows], y[rows]
    if x.shape[1] > LINEAR_FIT_MAX_FEATURES or len(x) <= x.shape[1] + 1:
        return None
    if len(x) > LINEAR_FIT_MAX_ROWS:
        keep = np.random.default_rng(seed).choice(len(x), LINEAR_FIT_MAX_ROWS, replace=False)
        x, y = x[keep], y[keep]
    design = np.hstack([x.astype(np.float64), np.ones((len(x), 1))])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    return float(np.mean((design @ coef - y) ** 2))


def _class_counts(y: np.ndarray, num_classes: int) -> list[int]:
    valid = y[(y >= 0) & (y < num_classes)]
    return np.bincount(valid, minlength=num_classes).tolist()
