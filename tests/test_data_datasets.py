"""The dataset registry, data_root, digits, MNIST (real and synthetic idx files), npz and csv."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from layerwise.data import DATASETS, DatasetBundle, data_root, load_dataset
from layerwise.data.mnist import FILES, MEAN, STD
from layerwise.errors import DataError, RecipeError


def test_registry_has_the_builtin_datasets_and_suggests_names() -> None:
    assert {"digits", "mnist", "npz", "csv"} <= set(DATASETS.names())
    with pytest.raises(RecipeError) as info:
        load_dataset("mnits")
    assert "did you mean 'mnist'" in info.value.hint
    with pytest.raises(RecipeError, match="bad arguments for dataset 'digits'"):
        load_dataset("digits", colour=True)


def test_data_root_prefers_env_then_shared_folder(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LAYERWISE_DATA", str(tmp_path / "mine"))
    assert data_root() == tmp_path / "mine"
    monkeypatch.delenv("LAYERWISE_DATA")
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    assert data_root() == tmp_path / "shared" / "data"


def test_bundle_rejects_unknown_task_and_reports_sizes() -> None:
    x, y = torch.zeros(3, 2), torch.zeros(3, dtype=torch.long)
    bundle = DatasetBundle("t", (x, y), None, (x[:1], y[:1]), 2, (2,), ["a", "b"])
    assert bundle.sizes() == {"train": 3, "val": 0, "test": 1}
    assert "train=3" in repr(bundle)
    with pytest.raises(DataError, match="unknown task 'clasification'"):
        DatasetBundle("t", (x, y), None, None, 2, (2,), [], task="clasification")


# --- digits ---------------------------------------------------------------------------------


def test_digits_shapes_sizes_and_range() -> None:
    bundle = load_dataset("digits")
    assert bundle.sizes() == {"train": 1293, "val": 144, "test": 360}
    assert bundle.input_shape == (1, 8, 8) and bundle.num_classes == 10
    assert bundle.class_names == [str(d) for d in range(10)]
    x, y = bundle.train
    assert x.shape == (1293, 1, 8, 8) and x.dtype == torch.float32
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert y.dtype == torch.int64 and set(y.tolist()) == set(range(10))


def test_digits_splits_are_stratified_and_fixed_by_seed() -> None:
    bundle = load_dataset("digits", val_fraction=0.0)
    assert bundle.val is None
    test_counts = torch.bincount(bundle.test[1], minlength=10)
    all_counts = test_counts + torch.bincount(bundle.train[1], minlength=10)
    expected = all_counts.double() * 0.2
    assert torch.all((test_counts - expected).abs() <= 1)
    same = load_dataset("digits", val_fraction=0.0)
    assert torch.equal(same.test[0], bundle.test[0])
    other = load_dataset("digits", val_fraction=0.0, seed=1)
    assert not torch.equal(other.test[0], bundle.test[0])


def test_digits_subset() -> None:
    bundle = load_dataset("digits", subset=200, val_fraction=0.0)
    assert bundle.sizes() == {"train": 160, "val": 0, "test": 40}


# --- MNIST ----------------------------------------------------------------------------------


def test_mnist_from_shared_data(shared_data: Path) -> None:
    bundle = load_dataset("mnist", root=shared_data, subset=600, normalize=False)
    assert bundle.sizes() == {"train": 600, "val": 0, "test": 100}
    x, y = bundle.train
    assert x.shape == (600, 1, 28, 28) and x.dtype == torch.float32
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert y.dtype == torch.int64 and int(y.min()) == 0 and int(y.max()) == 9
    assert y[:5].tolist() == [5, 0, 4, 1, 9]  # the well-known first training labels
    assert bundle.test[1][:3].tolist() == [7, 2, 1]

    flat = load_dataset("mnist", root=shared_data, subset=600, flatten=True, val_fraction=0.1)
    assert flat.input_shape == (784,) and flat.sizes() == {"train": 540, "val": 60, "test": 100}
    both = torch.cat([flat.train[0], flat.val[0]])
    assert torch.allclose(both.sum(), ((x.reshape(600, -1) - MEAN) / STD).sum(), rtol=1e-4)


def test_mnist_normalisation_uses_the_training_statistics(shared_data: Path) -> None:
    x, _ = load_dataset("mnist", root=shared_data, subset=6000).train
    assert abs(float(x.mean())) < 0.02
    assert abs(float(x.std()) - 1.0) < 0.02


def _write_idx(path: Path, array: np.ndarray, magic: int, compress: bool = False) -> None:
    header = np.array([magic, *array.shape], dtype=">u4").tobytes()
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)


def _fake_mnist(root: Path, compress: bool = False) -> Path:
    folder = root / "MNIST" / "raw"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for part, n in (("train", 12), ("test", 6)):
        images, labels = FILES[part]
        _write_idx(folder / images, rng.integers(0, 256, (n, 28, 28)), 2051, compress)
        _write_idx(folder / labels, np.arange(n) % 10, 2049, compress)
    return folder


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_reads_plain_or_gzipped_idx_files(tmp_path: Path, compress: bool) -> None:
    _fake_mnist(tmp_path, compress)
    bundle = load_dataset("mnist", root=tmp_path, normalize=False)
    assert bundle.sizes() == {"train": 12, "val": 0, "test": 6}
    assert bundle.train[1].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    expected = np.random.default_rng(0).integers(0, 256, (12, 28, 28)) / 255.0
    assert np.allclose(bundle.train[0][:, 0].numpy(), expected, atol=1e-6)


def test_mnist_missing_file_names_it_and_where_to_put_it(tmp_path: Path) -> None:
    folder = _fake_mnist(tmp_path)
    (folder / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError) as info:
        load_dataset("mnist", root=tmp_path)
    assert info.value.message.startswith(
        f"MNIST file not found: {folder / 't10k-labels-idx1-ubyte'}"
    )
    assert str(folder) in info.value.hint and "LAYERWISE_DATA" in info.value.hint


def test_truncated_or_garbled_idx_files_raise_data_error(tmp_path: Path) -> None:
    folder = _fake_mnist(tmp_path)
    images = folder / "train-images-idx3-ubyte"
    full = images.read_bytes()
    images.write_bytes(full[:-100])
    with pytest.raises(DataError) as info:
        load_dataset("mnist", root=tmp_path, subset=2)
    assert str(images) in info.value.message and "truncated" in info.value.message

    images.write_bytes(b"\x00\x00\x08\x01" + full[4:])
    with pytest.raises(DataError, match="magic number 0x00000801, expected 0x00000803"):
        load_dataset("mnist", root=tmp_path)

    shutil.copy(folder / "train-labels-idx1-ubyte", images)
    with pytest.raises(DataError, match="train-images-idx3-ubyte is not an idx file"):
        load_dataset("mnist", root=tmp_path)


# --- npz and csv ----------------------------------------------------------------------------


def test_npz_classification_and_keras_layout(tmp_path: Path) -> None:
    x = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    y = np.arange(50) % 3
    np.savez(tmp_path / "d.npz", features=x, target=y)
    bundle = load_dataset(
        "npz", path=tmp_path / "d.npz", x="features", y="target", test_fraction=0.2
    )
    assert bundle.task == "classification" and bundle.num_classes == 3
    assert bundle.sizes() == {"train": 36, "val": 4, "test": 10}
    assert bundle.input_shape == (3,) and bundle.class_names == ["0", "1", "2"]

    np.savez(tmp_path / "k.npz", x_train=x[:40], y_train=y[:40], x_test=x[40:], y_test=y[40:])
    keras = load_dataset("npz", path=tmp_path / "k.npz", val_fraction=0.0)
    assert keras.sizes() == {"train": 40, "val": 0, "test": 10}
    assert torch.equal(keras.test[0], torch.from_numpy(x[40:]))


def test_npz_regression_and_errors(tmp_path: Path) -> None:
    x = np.zeros((20, 2))
    np.savez(tmp_path / "r.npz", x=x, y=np.linspace(0, 1, 20))
    bundle = load_dataset("npz", path=tmp_path / "r.npz", val_fraction=0.0)
    assert bundle.task == "regression" and bundle.num_classes == 1 and bundle.class_names == []
    assert bundle.train[1].dtype == torch.float32

    with pytest.raises(DataError) as info:
        load_dataset("npz", path=tmp_path / "r.npz", y="labels")
    assert "has no array 'labels'" in info.value.message
    with pytest.raises(DataError, match="fractional but the task is classification"):
        load_dataset("npz", path=tmp_path / "r.npz", task="classification")
    with pytest.raises(DataError) as info:
        load_dataset("npz", path=tmp_path / "missing.npz")
    assert str(tmp_path / "missing.npz") in info.value.message


def test_csv_with_text_labels_becomes_named_classes(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "a": np.arange(40, dtype=float),
            "b": np.arange(40) % 7,
            "species": ["setosa", "virginica"] * 20,
        }
    )
    frame.to_csv(tmp_path / "f.csv", index=False)
    bundle = load_dataset("csv", path=tmp_path / "f.csv", target="species", val_fraction=0.0)
    assert bundle.class_names == ["setosa", "virginica"] and bundle.num_classes == 2
    assert bundle.input_shape == (2,) and bundle.sizes() == {"train": 32, "val": 0, "test": 8}
    x, y = bundle.train
    assert torch.equal(y, (x[:, 0].long() % 2))  # row i has label i % 2

    only_a = load_dataset("csv", path=tmp_path / "f.csv", target="species", features=["a"])
    assert only_a.input_shape == (1,)


def test_csv_regression_target(tmp_path: Path) -> None:
    pd.DataFrame({"x": np.arange(10.0), "price": np.arange(10.0) * 1.5}).to_csv(
        tmp_path / "p.csv", index=False
    )
    bundle = load_dataset("csv", path=tmp_path / "p.csv", target="price", val_fraction=0.0)
    assert bundle.task == "regression" and bundle.num_classes == 1
    x, y = bundle.train
    assert torch.allclose(y, x[:, 0] * 1.5)


def test_csv_errors_name_the_column_or_file(tmp_path: Path) -> None:
    pd.DataFrame(
        {"size": [1.0, 2.0, 3.0, 4.0], "city": list("abab"), "label": [0, 1, 0, 1]}
    ).to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(DataError) as info:
        load_dataset("csv", path=tmp_path / "c.csv", target="lable")
    assert info.value.message == f"{tmp_path / 'c.csv'} has no column 'lable'"
    assert "did you mean 'label'" in info.value.hint
    with pytest.raises(DataError, match="non-numeric columns: city"):
        load_dataset("csv", path=tmp_path / "c.csv")
    with pytest.raises(DataError, match="not found"):
        load_dataset("csv", path=tmp_path / "nope.csv")

    pd.DataFrame({"size": [1.0, 2.0, 3.0], "label": [0, None, 1]}).to_csv(
        tmp_path / "n.csv", index=False
    )
    with pytest.raises(DataError, match="1 missing values \\(first in row 1\\)"):
        load_dataset("csv", path=tmp_path / "n.csv")


def test_relative_paths_are_found_under_the_data_root(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LAYERWISE_DATA", str(tmp_path))
    monkeypatch.chdir(tmp_path.parent)
    (tmp_path / "sub").mkdir()
    np.savez(tmp_path / "sub" / "d.npz", x=np.zeros((10, 2)), y=np.arange(10) % 2)
    bundle = load_dataset("npz", path="sub/d.npz", val_fraction=0.0)
    assert bundle.sizes()["train"] == 8


@pytest.mark.parametrize("dataset", ["csv", "csv_table"])
def test_a_file_pandas_cannot_parse_is_one_data_error(tmp_path: Path, dataset: str) -> None:
    (tmp_path / "bad.csv").write_text("a,label\n1,0\n1,2,3,4\n")  # a row longer than the rest
    with pytest.raises(DataError, match=r"cannot read .*bad\.csv as CSV: Error tokenizing") as info:
        load_dataset(dataset, path=tmp_path / "bad.csv", target="label")
    assert "sep" in info.value.hint
