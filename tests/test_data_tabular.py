"""The bundled scikit-learn tables: raw features, stratified seeded splits, class names."""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_breast_cancer, load_wine

from layerwise.data import load_dataset

TABLES = {
    # name: (sklearn loader, rows, features, class names, train/val/test sizes)
    "breast_cancer": (load_breast_cancer, 569, 30, ["malignant", "benign"], (409, 46, 114)),
    "wine": (load_wine, 178, 13, ["class_0", "class_1", "class_2"], (127, 15, 36)),
}


@pytest.mark.parametrize("name", TABLES)
def test_shapes_sizes_and_class_names(name):
    _, rows, features, classes, sizes = TABLES[name]
    bundle = load_dataset(name)
    assert bundle.name == name and bundle.task == "classification"
    assert bundle.input_shape == (features,)
    assert bundle.num_classes == len(classes) and bundle.class_names == classes
    assert tuple(bundle.sizes().values()) == sizes and sum(sizes) == rows
    for x, y in (bundle.train, bundle.val, bundle.test):
        assert x.dtype == torch.float32 and x.shape[1:] == (features,)
        assert y.dtype == torch.int64 and set(y.tolist()) == set(range(len(classes)))


def rows(*parts) -> list[tuple]:
    """The (label, features...) rows of some splits, sorted, to compare as multisets."""
    return sorted((int(y), *x) for p in parts for x, y in zip(p[0].tolist(), p[1], strict=True))


@pytest.mark.parametrize("name", TABLES)
def test_features_are_the_raw_unscaled_rows_each_used_once(name):
    raw = TABLES[name][0]()
    bundle = load_dataset(name)
    expected = (torch.from_numpy(raw.data).float(), torch.from_numpy(raw.target))
    assert rows(bundle.train, bundle.val, bundle.test) == rows(expected)
    assert bundle.train[0].abs().max().item() > 1000  # tumour area, proline: far from unit scale


@pytest.mark.parametrize("name", TABLES)
def test_splits_are_stratified_and_fixed_by_seed(name):
    bundle = load_dataset(name)
    overall = torch.bincount(torch.cat([p[1] for p in (bundle.train, bundle.val, bundle.test)]))
    for _, y in (bundle.train, bundle.test):
        share = torch.bincount(y, minlength=len(overall)) / len(y)
        assert torch.allclose(share, overall / overall.sum(), atol=0.02)
    again, other = load_dataset(name, seed=0), load_dataset(name, seed=1)
    assert torch.equal(again.test[0], bundle.test[0])
    assert not torch.equal(other.test[0], bundle.test[0])


def test_fractions_and_subset():
    bundle = load_dataset("wine", test_fraction=0.5, val_fraction=0)
    assert bundle.val is None and bundle.sizes() == {"train": 89, "val": 0, "test": 89}
    small = load_dataset("breast_cancer", subset=100)
    assert sum(small.sizes().values()) == 100
    raw = load_breast_cancer()
    first = (torch.from_numpy(raw.data[:100]).float(), torch.from_numpy(raw.target[:100]))
    assert rows(small.train, small.val, small.test) == rows(first)
