"""Deterministic, stratified train/holdout splits."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch import Tensor

from layerwise.errors import DataError

Pair = tuple[Tensor, Tensor | None]


def train_val_test(
    x: Tensor,
    y: Tensor,
    test_fraction: float,
    val_fraction: float,
    seed: int = 0,
    subset: int | None = None,
) -> tuple[Pair, Pair | None, Pair]:
    """The bundled data sets' splits: keep the first `subset` rows, carve a stratified test
    split, then a validation split (`val_fraction` of the rest; 0 for none), fixed by `seed`."""
    if subset is not None:
        x, y = x[:subset], y[:subset]
    train, test = split(x, y, test_fraction, seed=seed)
    val = None
    if val_fraction:
        train, val = split(*train, val_fraction, seed=seed)
    return train, val, test


def split(
    x: Tensor, y: Tensor | None, fraction: float, seed: int = 0, stratify: bool = True
) -> tuple[Pair, Pair]:
    """Split rows into `(x_a, y_a), (x_b, y_b)` where part b holds `fraction` of the rows.

    Classification labels (integer `y`) are stratified, so a small validation set still sees
    every class in its training proportion. When stratifying is impossible (a class with a single
    row, or fewer holdout rows than classes) the split falls back to a plain shuffled one rather
    than failing. The result depends only on `seed`; rows keep their original order in each part.

    Example:
        >>> (x_tr, y_tr), (x_te, y_te) = split(x, y, 0.2, seed=0)
    """
    n = len(x)
    if not 0.0 < fraction < 1.0:
        raise DataError(
            f"split fraction must be between 0 and 1 (exclusive), got {fraction}",
            hint="e.g. 0.2 holds out a fifth of the rows",
        )
    n_b = int(np.ceil(fraction * n))
    if n_b >= n or n_b == 0:
        raise DataError(
            f"cannot hold out {fraction:.0%} of {n} rows: one part would be empty",
            hint="use more data or a fraction that leaves at least one row on each side",
        )
    labels = _stratify_labels(y, n_b) if stratify else None
    index = np.arange(n)
    a, b = train_test_split(index, test_size=n_b, random_state=seed, stratify=labels)
    ia, ib = torch.from_numpy(np.sort(a)), torch.from_numpy(np.sort(b))
    return _take(x, y, ia), _take(x, y, ib)


def _stratify_labels(y: Tensor | None, n_b: int) -> np.ndarray | None:
    if y is None or y.is_floating_point() or y.dim() != 1:
        return None
    labels = y.cpu().numpy()
    counts = np.unique(labels, return_counts=True)[1]
    if counts.min() < 2 or n_b < len(counts) or len(labels) - n_b < len(counts):
        return None
    return labels


def _take(x: Tensor, y: Tensor | None, index: Tensor) -> Pair:
    index = index.to(x.device)
    return x.index_select(0, index), None if y is None else y.index_select(0, index.to(y.device))
