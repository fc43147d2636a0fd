"""The fitted preprocessing saved with a run: applied to the raw rows of a split it gives exactly
what the model was trained and tested on; inputs unlike the training data get notes or errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from layerwise.data import clean_bundle, data_root, load_dataset
from layerwise.data.preprocess import Preprocess, fit_preprocess, load_preprocess
from layerwise.errors import DataError, ShapeError
from layerwise.recipe import DataSpec


def fitted(name: str, **spec):
    raw = load_dataset(name, **spec.pop("args", {}))
    cleaned, report = clean_bundle(raw, DataSpec(**spec))
    return raw, cleaned, fit_preprocess(raw, report, cleaned)


def test_raw_table_rows_become_exactly_the_cleaned_rows(tmp_path):
    raw, cleaned, preprocess = fitted(
        "faulty",
        args={"dataset": "wine", "missing": 0.05, "constant_features": 2},
        impute="median",
        drop_constant=True,
        standardize=True,
    )
    assert preprocess.keep is not None and len(preprocess.keep) == cleaned.input_shape[0]
    again = load_preprocess(preprocess.save(tmp_path).parent)  # through preprocess.json
    x, notes = again.rows(raw.test[0].numpy(), "test rows")
    torch.testing.assert_close(x, cleaned.test[0], rtol=0, atol=1e-5)
    assert notes == []


def test_image_rows_and_files_become_the_cleaned_images(tmp_path):
    raw, cleaned, preprocess = fitted("digits", standardize=True)
    assert preprocess.image is not None and preprocess.per_channel
    pixels = raw.test[0][:5]  # digits are pixels in [0, 1] already
    x, notes = preprocess.rows(pixels.numpy(), "rows")
    torch.testing.assert_close(x, cleaned.test[0][:5], rtol=0, atol=1e-5)
    x255, notes = preprocess.rows((pixels * 255).numpy(), "rows")
    torch.testing.assert_close(x255, cleaned.test[0][:5], rtol=0, atol=1e-4)
    assert notes == ["note: rows read as pixels 0-255 (largest value 255)"]


def test_standardised_rows_given_to_a_raw_pipeline_get_a_warning_with_numbers():
    _, cleaned, preprocess = fitted("wine", standardize=True)
    _, notes = preprocess.rows(cleaned.test[0].numpy(), "std.npy")
    assert len(notes) == 1
    assert notes[0].startswith("warning: 36 of 36 rows of std.npy have values far outside")
    low, high = min(preprocess.low), max(preprocess.high)  # the numbers are the training ones
    assert low < 1 and high > 1000


def test_rows_of_the_wrong_width_and_missing_values_are_refused():
    raw, _, preprocess = fitted("wine", standardize=True)
    with pytest.raises(ShapeError, match="rows of 12 values, but the model was trained on 13"):
        preprocess.rows(np.zeros((2, 12)), "short.npy")
    rows = raw.test[0][:2].numpy().copy()
    rows[0, 3] = np.nan
    with pytest.raises(DataError, match=r"1 missing .* without data.impute"):
        preprocess.rows(rows, "gaps.npy")


def mnist_spec() -> Preprocess:
    """The MNIST loader's preprocessing: white digits on black, standardised pixels."""
    if not (data_root() / "MNIST" / "raw").is_dir():
        pytest.skip("MNIST is not in the data root")
    raw = load_dataset("mnist", subset=600)
    cleaned, report = clean_bundle(raw, DataSpec())
    return fit_preprocess(raw, report, cleaned)


def test_mnist_training_images_are_light_on_dark_with_mnist_sized_digits():
    spec = mnist_spec().image
    assert spec.background == 0.0
    assert 0.6 <= spec.content <= 0.8  # digits fill a 20-pixel box of 28
    assert (spec.loader_mean, spec.loader_std) == (0.1307, 0.3081)


def test_a_black_on_white_drawing_is_inverted_with_a_note(tmp_path):
    preprocess = mnist_spec()
    digit = np.full((28, 28), 255, dtype=np.uint8)
    digit[4:24, 12:16] = 0  # a black "1" on white paper
    Image.fromarray(digit).save(tmp_path / "one.png")
    x, notes = preprocess.image_file(tmp_path / "one.png")
    assert any("dark-on-light" in n and "inverted" in n for n in notes)
    pixels = x * 0.3081 + 0.1307
    assert float(pixels[0, 0, 0, 0]) == pytest.approx(0.0, abs=1e-6)  # background now black
    assert float(pixels.max()) == pytest.approx(1.0, abs=1e-3)  # the stroke white


def test_a_tiny_or_colour_image_gets_its_notes(tmp_path):
    preprocess = mnist_spec()
    Image.new("RGB", (5, 5), (0, 0, 0)).save(tmp_path / "tiny.png")
    _, notes = preprocess.image_file(tmp_path / "tiny.png")
    assert any(n.startswith("warning: tiny.png is 5x5 pixels") and "5.6x" in n for n in notes)
    assert any("RGB image converted to grayscale" in n for n in notes)


def test_an_image_for_a_table_model_is_refused(tmp_path):
    _, _, preprocess = fitted("wine", standardize=True)
    Image.new("L", (8, 8)).save(tmp_path / "x.png")
    with pytest.raises(ShapeError, match="trained on rows of 13 features, not images"):
        preprocess.image_file(tmp_path / "x.png")
