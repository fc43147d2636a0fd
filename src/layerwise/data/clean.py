"""Data fixes a recipe can ask for: fill, drop, rescale and rebalance.

Each fix is a `data.*` recipe field, so the doctor's remedies are recipe patches that
`--auto-fix` can apply and a run folder records what was done to its data. Statistics are fit on
the training split only and applied to every split, and rows are only ever dropped from or added
to train, so validation and test numbers stay honest. `clean_bundle` runs the fixes in one order:

    impute -> drop_constant -> drop_duplicates -> drop_leaked -> drop_noisy -> standardize
    -> balance

Filling comes first because every later step compares values; rows are dropped before the
scaling statistics are fit, so those describe the rows that are kept; oversampling comes last so
its copies are neither dropped as duplicates nor counted twice in the statistics. Which rows are
copies (exact or near) is decided by `layerwise.data.overlap` and which labels look wrong by
`layerwise.data.label_noise`, the same functions the doctor's data profile uses, so a fix drops
exactly the rows the doctor's finding counted.

Example:
    >>> spec = DataSpec(impute="median", drop_duplicates=True)
    >>> bundle, report = clean_bundle(load_dataset("faulty", dataset="wine", missing=0.1), spec)
    >>> report
    {'impute': {'strategy': 'median', 'values': 232, 'features': 13,
                'per_split': {'train': 165, 'val': 20, 'test': 47}},
     'drop_duplicates': {'repeats': 0, 'leaked': 0}}
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from layerwise.data.bundle import DatasetBundle
from layerwise.data.overlap import NEAR_RMS, find_copies, repeated_rows, row_hashes, split_rows
from layerwise.errors import DataError, RecipeError
from layerwise.recipe import DataSpec

SPLITS = ("train", "val", "test")
Report = dict[str, Any]


def clean_bundle(
    bundle: DatasetBundle, spec: DataSpec, seed: int = 0
) -> tuple[DatasetBundle, dict[str, Report]]:
    """Apply the fixes `spec` asks for; return a new bundle and a JSON-able report per fix.

    The input bundle and its tensors are left untouched. With no fix asked for, the same bundle
    comes back with an empty report. `seed` fixes the label-noise check and oversampling.
    """
    report: dict[str, Report] = {}
    if spec.impute:
        bundle, report["impute"] = impute(bundle, spec.impute)
    if spec.drop_constant:
        bundle, report["drop_constant"] = drop_constant(bundle)
    if spec.drop_duplicates:
        bundle, report["drop_duplicates"] = drop_duplicates(bundle)
    if spec.drop_leaked:
        bundle, report["drop_leaked"] = drop_leaked(bundle, seed)
    if spec.drop_noisy:
        bundle, report["drop_noisy"] = drop_noisy(bundle, seed)
    if spec.standardize:
        bundle, report["standardize"] = standardize(bundle)
    if spec.balance:
        bundle, report["balance"] = oversample(bundle, seed)
    return bundle, report


def impute(bundle: DatasetBundle, strategy: str = "mean") -> tuple[DatasetBundle, Report]:
    """Replace NaN/inf in every split with the training mean or median of that feature.

    A feature is one input value position (a column of a table, a pixel of an image). A feature
    with no finite training value is filled with 0.
    """
    if strategy not in ("mean", "median"):
        raise RecipeError(
            f"data.impute must be 'mean' or 'median', got {strategy!r}",
            hint="mean suits roughly symmetric features, median resists outliers",
        )
    x, _ = _train(bundle)
    bad = {name: _nonfinite(part[0]) for name, part in _parts(bundle)}
    width = x[0].numel()
    columns = torch.zeros(width, dtype=torch.bool)
    for mask in bad.values():
        columns |= mask.reshape(-1, width).any(0)
    per_split = {name: int(torch.count_nonzero(mask)) for name, mask in bad.items()}
    report = {
        "strategy": strategy,
        "values": sum(per_split.values()),
        "features": int(torch.count_nonzero(columns)),
        "per_split": per_split,
    }
    if not report["values"]:
        return bundle, report
    values, missing = x.reshape(len(x), width), bad["train"].reshape(len(x), width)
    fill = _column_statistic(values, missing, strategy).reshape(x.shape[1:])

    def fix(name: str, t: Tensor) -> Tensor:
        return torch.where(bad[name], fill, t) if per_split[name] else t

    return _map_inputs(bundle, fix), report


def drop_constant(bundle: DatasetBundle) -> tuple[DatasetBundle, Report]:
    """Drop the features (columns) that take one value over all training rows, from every split."""
    x, _ = _train(bundle)
    if x.dim() != 2:
        kind = "images" if x.dim() >= 3 else "one value per row"
        raise RecipeError(
            f"data.drop_constant works on feature tables (rows, features), but the inputs of "
            f"'{bundle.name}' are {kind} shaped {tuple(x.shape[1:])}",
            hint="leave data.drop_constant off for images: constant pixels (e.g. borders) are "
            "harmless, and data.standardize scales images per channel",
        )
    constant = (x == x[:1]).all(dim=0)
    dropped = constant.nonzero().flatten().tolist()
    if len(dropped) == x.shape[1]:
        raise DataError(
            f"every one of the {x.shape[1]} features of '{bundle.name}' is constant over the "
            "training rows",
            hint="check the data: nothing is left to learn from; turn data.drop_constant off",
        )
    report = {"features": len(dropped), "indices": dropped}
    if not dropped:
        return bundle, report
    keep = (~constant).nonzero().flatten()
    narrowed = _map_inputs(bundle, lambda _, t: t.index_select(1, keep))
    return dataclasses.replace(narrowed, input_shape=(len(keep),)), report


def drop_duplicates(bundle: DatasetBundle) -> tuple[DatasetBundle, Report]:
    """Drop training rows whose inputs repeat an earlier training row or equal a val/test row.

    Rows are exact copies when their values are equal (`layerwise.data.overlap.row_hashes`:
    -0.0 equals 0.0, NaN equals NaN), inputs only: a repeat with another label is still a repeat
    and the first one is kept. Val and test rows are never touched. `leaked` counts the training
    rows found in val/test (all their copies); `repeats` the other dropped rows.
    """
    hashes = {name: row_hashes(rows) for name, rows in split_rows(bundle).items()}
    train = hashes.pop("train")
    held_out = list(hashes.values())
    leaked = np.isin(train, np.concatenate(held_out)) if held_out else np.zeros(len(train), bool)
    repeats = repeated_rows(train) & ~leaked
    keep = np.flatnonzero(~(leaked | repeats))
    report = {"repeats": int(repeats.sum()), "leaked": int(leaked.sum())}
    if not len(keep):
        raise DataError(
            f"every training row of '{bundle.name}' also appears in its val/test data",
            hint="the splits are copies of each other; rebuild them before training",
        )
    if len(keep) == len(train):
        return bundle, report
    return _keep_train(bundle, torch.from_numpy(keep)), report


def drop_leaked(bundle: DatasetBundle, seed: int = 0) -> tuple[DatasetBundle, Report]:
    """Drop training rows that are exact or near copies of a val/test row.

    A near copy is within `NEAR_RMS` (1.5%) of the row, as a root-mean-square difference relative
    to the train range (see `layerwise.data.overlap`): the rows the doctor's `train_test_leakage`
    finding counts. Every train row within that distance of any val/test row goes, not only the
    closest one, so the finding cannot come back from a second copy. Val and test rows are never
    touched. `rows` counts the dropped rows, `exact` those among them that are exact copies.
    """
    from layerwise.data.label_noise import one_thread

    x, _ = _train(bundle)
    rows = split_rows(bundle)
    report = {"rows": 0, "exact": 0, "near_rms": NEAR_RMS}
    if len(rows) == 1 or not len(x):
        return bundle, report
    with one_thread():
        copies = find_copies(rows, image=x.dim() >= 3, seed=seed)
    report["rows"] = int(copies.train_near.sum())
    report["exact"] = int(copies.train_exact.sum())
    if not report["rows"]:
        return bundle, report
    if report["rows"] == len(x):
        raise DataError(
            f"every training row of '{bundle.name}' is a copy or near copy of a val/test row",
            hint="the splits are copies of each other; rebuild them before training",
        )
    return _keep_train(bundle, torch.from_numpy(np.flatnonzero(~copies.train_near))), report


def drop_noisy(bundle: DatasetBundle, seed: int = 0) -> tuple[DatasetBundle, Report]:
    """Drop the training rows the label-noise check flags as probably mislabelled."""
    from layerwise.data.label_noise import noisy_label_indices

    _require_classification(bundle, "data.drop_noisy")
    x, y = _train(bundle)
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise DataError(
            f"data.drop_noisy needs finite inputs, but the training inputs of '{bundle.name}' "
            "hold NaN/inf values",
            hint="also set data.impute: mean (or median); it runs before drop_noisy",
        )
    flagged = sorted({int(i) for i in noisy_label_indices(x, y, bundle.num_classes, seed)})
    if flagged and not 0 <= flagged[0] <= flagged[-1] < len(x):
        raise ValueError(f"noisy_label_indices returned rows outside 0..{len(x) - 1}")
    report = {"rows": len(flagged)}
    if not flagged:
        return bundle, report
    if len(flagged) == len(x):
        raise DataError(
            f"the label-noise check flags every training row of '{bundle.name}'",
            hint="the labels do not match the inputs at all; check how they were loaded",
        )
    keep = torch.ones(len(x), dtype=torch.bool)
    keep[flagged] = False
    return _keep_train(bundle, keep.nonzero().flatten()), report


def standardize(bundle: DatasetBundle) -> tuple[DatasetBundle, Report]:
    """Shift and scale inputs to zero mean and unit std, with statistics fit on train only.

    Per feature for tables (and any input of 1 or 2 dims), per channel (dim 1) for images.
    A feature that is constant over train is only centred (it becomes 0). NaN/inf are ignored
    by the statistics and stay where they are.
    """
    x, _ = _train(bundle)
    if not x.is_floating_point():
        raise RecipeError(
            f"data.standardize needs float inputs, but '{bundle.name}' holds integer token ids",
            hint="leave data.standardize off for text and other token data",
        )
    dims = (0, *range(2, x.dim())) if x.dim() >= 3 else (0,)
    finite = torch.isfinite(x)
    if bool(finite.all()):
        var, mean = torch.var_mean(x, dims, correction=0, keepdim=True)
        low, high = x.amin(dims, keepdim=True), x.amax(dims, keepdim=True)
    else:  # statistics of the finite values only
        count = finite.sum(dims, keepdim=True).clamp(min=1)
        mean = torch.where(finite, x, 0.0).sum(dims, keepdim=True) / count
        var = torch.where(finite, x - mean, 0.0).square().sum(dims, keepdim=True) / count
        low = torch.where(finite, x, torch.inf).amin(dims, keepdim=True)
        high = torch.where(finite, x, -torch.inf).amax(dims, keepdim=True)
    constant = low == high
    # The exact value centres a constant feature to exactly 0; its rounded mean might not.
    mean = torch.where(constant, low, mean)
    std = torch.where(constant | (var == 0), 1.0, var.sqrt())
    result = _map_inputs(bundle, lambda _, t: (t - mean) / std)
    report = {
        "dims": "channel" if x.dim() >= 3 else "feature",
        "mean": mean.flatten().tolist(),
        "std": std.flatten().tolist(),
        "constant": int(constant.sum()),
    }
    if x.dim() >= 3 and x.shape[1] == 1:
        # New image files get the same preprocessing through pixel_stats.
        m0, s0 = bundle.pixel_stats or (0.0, 1.0)
        m1, s1 = report["mean"][0], report["std"][0]
        result = dataclasses.replace(result, pixel_stats=(m0 + m1 * s0, s0 * s1))
    return result, report


def oversample(bundle: DatasetBundle, seed: int = 0) -> tuple[DatasetBundle, Report]:
    """Add training rows drawn with replacement until every class has as many as the largest.

    Every original row is kept; the copies are appended after them (batchers shuffle anyway).
    Classes with no training row at all cannot be oversampled and are listed as `empty`.
    """
    _require_classification(bundle, "data.balance")
    _, y = _train(bundle)
    counts = torch.bincount(y, minlength=bundle.num_classes)
    target = int(counts.max())
    generator = torch.Generator().manual_seed(seed)
    extra = []
    for c, n in enumerate(counts.tolist()):
        if 0 < n < target:
            rows = (y == c).nonzero().flatten()
            extra.append(rows[torch.randint(n, (target - n,), generator=generator)])
    report = {
        "method": "oversample",
        "added": sum(len(e) for e in extra),
        "rows_per_class": target,
        "counts_before": counts.tolist(),
        "empty": [c for c, n in enumerate(counts.tolist()) if n == 0],
    }
    if not extra:
        return bundle, report
    return _keep_train(bundle, torch.cat([torch.arange(len(y)), *extra])), report


def check_finite(bundle: DatasetBundle) -> None:
    """Raise `DataError` when any split's inputs hold NaN/inf, which would make the loss NaN.

    Loaders keep such values so the doctor can count them; this is the gate before training.
    """
    for name, (x, _) in _parts(bundle):
        if not x.is_floating_point():
            continue
        bad = ~torch.isfinite(x)
        if not bool(bad.any()):
            continue
        n_nan = int(torch.count_nonzero(torch.isnan(x)))
        n_inf = int(torch.count_nonzero(bad)) - n_nan
        counts = " and ".join(f"{n} {k}" for n, k in ((n_nan, "NaN"), (n_inf, "infinite")) if n)
        rows = bad.reshape(len(x), -1).any(dim=1)
        first = int(rows.nonzero()[0])
        where = f"{int(torch.count_nonzero(rows))} rows, first row {first}"
        if x.dim() == 2:
            features = bad.any(dim=0).nonzero().flatten().tolist()
            shown = ", ".join(map(str, features[:10])) + (", …" if len(features) > 10 else "")
            where += f"; features {shown}"
        raise DataError(
            f"{name} inputs of '{bundle.name}' contain {counts} values ({where})",
            hint="set data.impute: mean (or median) to fill them from the training data, "
            "or clean the file",
        )


# ---------------------------------------------------------------------------------- helpers
def _parts(bundle: DatasetBundle) -> list[tuple[str, tuple[Tensor, Tensor]]]:
    return [(name, part) for name in SPLITS if (part := getattr(bundle, name)) is not None]


def _train(bundle: DatasetBundle) -> tuple[Tensor, Tensor]:
    if bundle.train is None:
        raise DataError(f"dataset '{bundle.name}' has no training split to clean")
    return bundle.train


def _map_inputs(bundle: DatasetBundle, fn: Callable[[str, Tensor], Tensor]) -> DatasetBundle:
    """A new bundle whose split inputs are `fn(split_name, x)`; labels are shared, not copied."""
    return dataclasses.replace(
        bundle, **{name: (fn(name, x), y) for name, (x, y) in _parts(bundle)}
    )


def _keep_train(bundle: DatasetBundle, index: Tensor) -> DatasetBundle:
    x, y = _train(bundle)
    return dataclasses.replace(bundle, train=(x.index_select(0, index), y.index_select(0, index)))


def _require_classification(bundle: DatasetBundle, field: str) -> None:
    if bundle.task != "classification":
        raise RecipeError(
            f"{field} needs class labels, but '{bundle.name}' is a {bundle.task} dataset",
            hint=f"turn {field} off for regression",
        )


def _nonfinite(x: Tensor) -> Tensor:
    if not x.is_floating_point():
        return torch.zeros_like(x, dtype=torch.bool)
    return ~torch.isfinite(x)


def _column_statistic(values: Tensor, missing: Tensor, strategy: str) -> Tensor:
    """Per-column mean or median of the values not `missing`; 0 for a column with none."""
    if strategy == "mean":
        count = len(values) - torch.count_nonzero(missing, dim=0)
        total = values.masked_fill(missing, 0.0).sum(0, dtype=torch.float64)
        return torch.where(count > 0, total / count.clamp(min=1), 0.0).to(values.dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "All-NaN slice encountered"
        median = np.nanmedian(values.masked_fill(missing, torch.nan).numpy(), axis=0)
    return torch.from_numpy(np.nan_to_num(median, nan=0.0)).to(values.dtype)
