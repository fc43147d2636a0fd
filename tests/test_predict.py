"""Reading prediction inputs: images get the training data's pixel preprocessing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from layerwise.predict import read_inputs, top_predictions


def test_images_are_scaled_and_standardised_like_the_training_data(tmp_path):
    pixels = np.full((28, 28), 255, dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "white.png")
    plain = read_inputs([tmp_path / "white.png"], (1, 28, 28))
    standardised = read_inputs([tmp_path / "white.png"], (1, 28, 28), pixel_stats=(0.1307, 0.3081))
    assert plain.x.shape == (1, 1, 28, 28)
    assert plain.x.max().item() == pytest.approx(1.0)
    assert standardised.x.max().item() == pytest.approx((1.0 - 0.1307) / 0.3081)


def test_pixel_arrays_for_an_image_model_are_read_as_pixels(tmp_path):
    """Without a run's preprocessing (an input shape only), rows for an image model are pixels:
    0-255 values are scaled to [0, 1] (with a note), then standardised like image files."""
    np.save(tmp_path / "rows.npy", np.arange(3 * 64, dtype=np.float32).reshape(3, 64))
    inputs = read_inputs([tmp_path / "rows.npy"], (1, 8, 8), pixel_stats=(0.5, 0.5))
    assert inputs.x.shape == (3, 1, 8, 8)
    assert inputs.x[2, 0, 7, 7].item() == pytest.approx((191 / 255 - 0.5) / 0.5)
    assert inputs.names == ["rows.npy[0]", "rows.npy[1]", "rows.npy[2]"]
    assert inputs.notes == ["note: rows.npy read as pixels 0-255 (largest value 191)"]


def test_arrays_for_a_table_model_go_through_unchanged_without_a_preprocessing(tmp_path):
    np.save(tmp_path / "rows.npy", np.arange(6, dtype=np.float32).reshape(2, 3) * 100)
    inputs = read_inputs([tmp_path / "rows.npy"], (3,))
    assert inputs.x.tolist() == [[0.0, 100.0, 200.0], [300.0, 400.0, 500.0]]
    assert inputs.notes == []


def test_top_predictions_for_multiclass_and_binary():
    ranked = top_predictions(torch.tensor([[0.0, 3.0, 1.0]]), ["a", "b", "c"], k=2)
    assert [label for label, _ in ranked[0]] == ["b", "c"]
    binary = top_predictions(torch.tensor([[2.0]]), ["neg", "pos"], k=1)
    assert binary[0][0][0] == "pos" and binary[0][0][1] == pytest.approx(
        torch.sigmoid(torch.tensor(2.0)).item()
    )
