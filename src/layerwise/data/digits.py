"""scikit-learn's 8x8 handwritten digits: 1,797 images that ship with the package (no download)."""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits

from layerwise.data.bundle import DatasetBundle
from layerwise.data.registry import DATASETS
from layerwise.data.split import train_val_test


@DATASETS.register("digits")
def digits(
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    seed: int = 0,
    subset: int | None = None,
) -> DatasetBundle:
    """Images (N, 1, 8, 8) in [0, 1] and labels 0-9.

    The test split (`test_fraction` of all rows) and then the validation split (`val_fraction` of
    the remaining training rows; 0 for none) are stratified and fixed by `seed`. `subset` keeps
    only the first N rows, for quick tests.
    """
    raw = load_digits()
    x = torch.from_numpy(raw.images).float().div_(16.0).unsqueeze(1)
    y = torch.from_numpy(raw.target).long()
    train, val, test = train_val_test(x, y, test_fraction, val_fraction, seed, subset)
    return DatasetBundle(
        name="digits",
        train=train,
        val=val,
        test=test,
        num_classes=10,
        input_shape=(1, 8, 8),
        class_names=[str(d) for d in range(10)],
    )
