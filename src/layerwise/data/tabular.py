"""Small tables that ship with scikit-learn (no download): breast cancer and wine.

Features are returned raw, as scikit-learn stores them, so their very different ranges are
there for the doctor to see and for `data.standardize` to fix.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from sklearn.datasets import load_breast_cancer, load_wine

from layerwise.data.bundle import DatasetBundle
from layerwise.data.registry import DATASETS
from layerwise.data.split import train_val_test


@DATASETS.register("breast_cancer")
def breast_cancer(
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    seed: int = 0,
    subset: int | None = None,
) -> DatasetBundle:
    """569 tumours, 30 unscaled features (N, 30), 2 classes: malignant, benign.

    Splits as for `digits`: a stratified test split, then a validation split out of the rest
    (0 for none), both fixed by `seed`; `subset` keeps the first N rows.
    """
    return _sklearn_table(
        "breast_cancer", load_breast_cancer, test_fraction, val_fraction, seed, subset
    )


@DATASETS.register("wine")
def wine(
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    seed: int = 0,
    subset: int | None = None,
) -> DatasetBundle:
    """178 wines, 13 unscaled features (N, 13), 3 cultivars: class_0, class_1, class_2.

    Splits as for `digits`: a stratified test split, then a validation split out of the rest
    (0 for none), both fixed by `seed`; `subset` keeps the first N rows.
    """
    return _sklearn_table("wine", load_wine, test_fraction, val_fraction, seed, subset)


def _sklearn_table(
    name: str,
    loader: Callable[[], Any],
    test_fraction: float,
    val_fraction: float,
    seed: int,
    subset: int | None,
) -> DatasetBundle:
    raw = loader()
    x = torch.from_numpy(raw.data).float()
    y = torch.from_numpy(raw.target).long()
    train, val, test = train_val_test(x, y, test_fraction, val_fraction, seed, subset)
    return DatasetBundle(
        name=name,
        train=train,
        val=val,
        test=test,
        num_classes=len(raw.target_names),
        input_shape=(x.shape[1],),
        class_names=[str(c) for c in raw.target_names],
    )
