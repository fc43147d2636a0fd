"""to_tensors and split: every accepted input type, every DataError, stratification."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from layerwise.data import split, to_tensors
from layerwise.errors import DataError


def test_numpy_inputs_become_float32_and_int_labels_int64() -> None:
    x, y = to_tensors(np.arange(12, dtype=np.float64).reshape(4, 3), np.array([0, 1, 2, 1]))
    assert x.dtype == torch.float32 and x.shape == (4, 3)
    assert y.dtype == torch.int64 and y.tolist() == [0, 1, 2, 1]
    assert x[3, 2].item() == 11.0


def test_float_labels_are_regression_targets_and_bool_labels_classes() -> None:
    _, y = to_tensors(np.zeros((3, 2)), np.array([0.5, 1.5, 2.0]))
    assert y.dtype == torch.float32 and y.tolist() == [0.5, 1.5, 2.0]
    _, y = to_tensors(np.zeros((2, 2)), [True, False])
    assert y.dtype == torch.int64 and y.tolist() == [1, 0]


def test_float32_tensor_is_not_copied() -> None:
    x = torch.rand(5, 3)
    xt, y = to_tensors(x)
    assert y is None
    assert xt.data_ptr() == x.data_ptr()


def test_int64_tensor_inputs_stay_token_ids_but_uint8_becomes_float() -> None:
    ids = torch.tensor([[1, 2, 3], [4, 5, 6]])
    assert to_tensors(ids)[0].dtype == torch.int64
    pixels = torch.tensor([[0, 255]], dtype=torch.uint8)
    assert to_tensors(pixels)[0].tolist() == [[0.0, 255.0]]


def test_pandas_frame_and_series() -> None:
    frame = pd.DataFrame({"a": [1, 2, 3], "b": [0.5, 1.5, 2.5], "c": [True, False, True]})
    x, y = to_tensors(frame, pd.Series([2, 0, 1], name="target"))
    assert x.dtype == torch.float32
    assert x.tolist() == [[1, 0.5, 1], [2, 1.5, 0], [3, 2.5, 1]]
    assert y.dtype == torch.int64 and y.tolist() == [2, 0, 1]


def test_python_lists() -> None:
    x, y = to_tensors([[1, 2], [3, 4], [5, 6]], [1, 0, 1])
    assert x.dtype == torch.float32 and x.shape == (3, 2)
    assert y.tolist() == [1, 0, 1]


def test_row_count_mismatch_names_both_counts() -> None:
    with pytest.raises(DataError) as info:
        to_tensors(np.zeros((100, 2)), np.zeros(90, dtype=np.int64))
    assert info.value.message == "inputs have 100 rows but labels have 90"
    assert "one label per input row" in info.value.hint


def test_nan_and_inf_in_inputs_are_counted_with_first_row() -> None:
    x = np.ones((6, 3), dtype=np.float32)
    x[4, 1] = np.nan
    x[2, 0] = np.inf
    x[5, 2] = np.nan
    with pytest.raises(DataError) as info:
        to_tensors(x)
    message = info.value.message
    assert "2 NaN and 1 infinite values" in message
    assert "first in row 2" in message
    assert info.value.hint


def test_nan_in_dataframe_names_the_columns() -> None:
    frame = pd.DataFrame({"age": [1.0, np.nan, 3.0], "height": [1.0, 2.0, 3.0], "w": [np.nan] * 3})
    with pytest.raises(DataError) as info:
        to_tensors(frame, name="features")
    message = info.value.message
    assert message.startswith("features contain 4 NaN values")
    assert "first in row 0" in message
    assert "columns: age, w" in message
    assert "height" not in message


def test_non_numeric_dataframe_columns_are_named_with_an_encoding_hint() -> None:
    frame = pd.DataFrame({"city": ["a", "b"], "size": [1.0, 2.0], "kind": ["x", "y"]})
    with pytest.raises(DataError) as info:
        to_tensors(frame)
    assert info.value.message == "inputs have non-numeric columns: city, kind"
    assert "encode" in info.value.hint


def test_nan_labels_are_rejected_with_row() -> None:
    with pytest.raises(DataError) as info:
        to_tensors(np.zeros((4, 2)), np.array([0.0, 1.0, np.nan, 1.0]))
    assert "labels contain 1 NaN/inf values (first in row 2)" in info.value.message


def test_text_labels_and_unsupported_types_are_rejected() -> None:
    with pytest.raises(DataError, match="not numeric"):
        to_tensors(np.zeros((2, 2)), pd.Series(["cat", "dog"]))
    with pytest.raises(DataError, match="must be a torch Tensor"):
        to_tensors({"a": 1})
    with pytest.raises(DataError, match="ragged"):
        to_tensors([[1, 2], [3]])
    with pytest.raises(DataError, match="empty"):
        to_tensors(np.zeros((0, 3)))


def test_split_sizes_cover_all_rows_once_and_are_deterministic() -> None:
    x = torch.arange(100, dtype=torch.float32).unsqueeze(1)
    y = torch.arange(100) % 4
    (xa, ya), (xb, yb) = split(x, y, 0.2, seed=3)
    assert len(xb) == 20 and len(xa) == 80
    rows = torch.cat([xa, xb]).flatten().long()
    assert sorted(rows.tolist()) == list(range(100))
    assert torch.equal(yb, y[xb.flatten().long()])
    assert torch.equal(ya, y[xa.flatten().long()])  # labels stay with their rows
    (_, _), (xb2, _) = split(x, y, 0.2, seed=3)
    assert torch.equal(xb, xb2)
    (_, _), (xb3, _) = split(x, y, 0.2, seed=4)
    assert not torch.equal(xb, xb3)


def test_split_is_stratified_for_class_labels() -> None:
    y = torch.tensor([0] * 90 + [1] * 10)
    x = torch.randn(100, 2)
    for seed in range(5):
        (_, ya), (_, yb) = split(x, y, 0.2, seed=seed)
        assert torch.bincount(yb).tolist() == [18, 2]
        assert torch.bincount(ya).tolist() == [72, 8]


def test_split_falls_back_when_a_class_has_one_row_and_rejects_bad_fractions() -> None:
    y = torch.tensor([0, 0, 0, 1, 1, 1, 2])
    x = torch.randn(7, 2)
    (xa, _), (xb, _) = split(x, y, 0.3, seed=0)
    assert len(xa) + len(xb) == 7 and len(xb) == 3
    with pytest.raises(DataError, match="between 0 and 1"):
        split(x, y, 1.5)
    with pytest.raises(DataError, match="would be empty"):
        split(x[:1], y[:1], 0.5)
