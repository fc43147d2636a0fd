"""Predict = training preprocessing, end to end: trained runs answer raw rows and drawn digits
as they answer the preprocessed test split, through the CLI and the Python API."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.datasets import load_wine

from layerwise import experiment
from layerwise.data import data_root, load_dataset
from layerwise.data.mnist import read_idx
from layerwise.predict import evaluate_file, predict_run
from layerwise.recipe import load_recipe
from layerwise.recipes_bundled import bundled_recipe

pytestmark = pytest.mark.slow


def train(name: str, root, overrides: list[str]):
    recipe = load_recipe(bundled_recipe(name), overrides)
    run, _ = experiment.train(recipe, root / "runs", progress=False, echo=None)
    return run, experiment.load_experiment(run)


def top_classes(rows) -> list[str]:
    return [ranked[0][0] for ranked in rows]


@pytest.fixture(scope="module")
def wine_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("wine")
    run, loaded = train("wine_mlp", root, ["train.epochs=15", "doctor.label_noise=false"])
    expected = [
        loaded.data.class_names[i] for i in loaded.trainer.predict(loaded.data.test[0]).argmax(1)
    ]
    return root, run, expected


def test_standardised_wine_model_answers_raw_npy_and_csv_rows_as_on_its_test_split(wine_run):
    root, run, expected = wine_run
    raw_test = load_dataset("wine").test[0].numpy()  # the same split, before standardising
    assert len(set(expected)) == 3  # the model tells the cultivars apart
    np.save(root / "raw.npy", raw_test)
    names = load_wine().feature_names
    frame = pd.DataFrame(raw_test, columns=names)
    frame.to_csv(root / "raw.csv", index=False)
    for file in ("raw.npy", "raw.csv"):
        labels, rows, notes = predict_run(run.path, [root / file])
        assert top_classes(rows) == expected, file
        assert notes == []
        assert labels[0] == f"{file}[0]"


def test_already_standardised_rows_are_warned_about(wine_run):
    root, run, _ = wine_run
    loaded = experiment.load_experiment(run)
    np.save(root / "std.npy", loaded.data.test[0].numpy())
    _, _, notes = predict_run(run.path, [root / "std.npy"])
    assert len(notes) == 1 and "far outside the training range" in notes[0]


def test_evaluate_on_a_new_labelled_csv_matches_the_test_split(wine_run):
    root, run, _ = wine_run
    raw = load_dataset("wine")
    frame = pd.DataFrame(raw.test[0].numpy(), columns=load_wine().feature_names)
    frame["label"] = raw.test[1].numpy()
    frame.to_csv(root / "labelled.csv", index=False)
    _, on_file, notes = evaluate_file(run.path, root / "labelled.csv")
    _, on_split = experiment.evaluate_run(run.path, "test")
    assert on_file["accuracy"] == pytest.approx(on_split["accuracy"])
    assert on_file["loss"] == pytest.approx(on_split["loss"], rel=1e-5)
    assert notes == []


# ------------------------------------------------------------------------------------ MNIST
def drawn(
    digit: np.ndarray, size: tuple[int, int], height: int, at: tuple[int, int]
) -> Image.Image:
    """An MNIST digit as people draw it: black on white paper, big, not centred."""
    rows, cols = np.nonzero(digit > 30)
    crop = Image.fromarray(digit[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1])
    width = max(1, round(crop.width * height / crop.height))
    paper = Image.new("L", size, 255)
    paper.paste(Image.fromarray(255 - np.asarray(crop.resize((width, height)))), at)
    return paper


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory):
    if not (data_root() / "MNIST" / "raw").is_dir():
        pytest.skip("MNIST is not in the data root")
    root = tmp_path_factory.mktemp("mnist")
    overrides = [
        "data.args.subset=8000",
        "train.epochs=3",
        "model.args.hidden=[128]",
        "doctor.label_noise=false",
        "doctor.probes=false",
    ]
    run, _ = train("mnist_mlp", root, overrides)
    folder = data_root() / "MNIST" / "raw"
    images = read_idx(folder / "t10k-images-idx3-ubyte", 2051, 40)
    labels = read_idx(folder / "t10k-labels-idx1-ubyte", 2049, 40)
    return root, run, images, [str(int(c)) for c in labels]


def accuracy(rows, labels) -> float:
    return float(np.mean([p == t for p, t in zip(top_classes(rows), labels, strict=True)]))


def test_mnist_model_reads_drawn_digits_28x28_and_larger(mnist_run):
    root, run, images, labels = mnist_run
    small, large = root / "small", root / "large"
    small.mkdir()
    large.mkdir()
    for i, digit in enumerate(images):
        drawn(digit, (28, 28), 25, (1 + i % 3, 0)).save(small / f"{i:02d}.png")
        drawn(digit, (150, 210), 160, (10 + 7 * (i % 5), 30)).convert("RGB").save(
            large / f"{i:02d}.png"
        )
    for folder in (small, large):
        names, rows, notes = predict_run(run.path, [folder])
        assert names[0] == "00.png"
        assert accuracy(rows, labels) >= 0.9, folder.name
        assert sum("inverted" in n for n in notes) == len(images)
    _, _, notes = predict_run(run.path, [large / "00.png"])
    assert any("scaled to" in n and "centred in 28x28" in n for n in notes)
    # The same files read the old way (stretched, not inverted) are mostly wrong.
    from layerwise.predict import read_inputs

    loaded = experiment.load_experiment(run)
    plain = read_inputs([small], (1, 28, 28), loaded.data.pixel_stats)
    old = loaded.trainer.predict(plain.x).argmax(1).tolist()
    assert np.mean([str(p) == t for p, t in zip(old, labels, strict=True)]) < 0.5


def test_mnist_model_reads_pixel_rows_0_255_and_0_1(mnist_run):
    root, run, images, labels = mnist_run
    np.save(root / "bytes.npy", images)
    np.save(root / "unit.npy", images.astype(np.float32) / 255)
    noted = {}
    for file in ("bytes.npy", "unit.npy"):
        _, rows, noted[file] = predict_run(run.path, [root / file])
        assert accuracy(rows, labels) >= 0.9, file
    assert noted["bytes.npy"] == ["note: bytes.npy read as pixels 0-255 (largest value 255)"]
    assert noted["unit.npy"] == []


def test_cli_predict_prints_the_notes(mnist_run):
    from typer.testing import CliRunner

    from layerwise.cli import app

    root, run, images, _ = mnist_run
    drawn(images[0], (28, 28), 25, (2, 0)).save(root / "seven.png")
    result = CliRunner().invoke(app, ["predict", str(run.path), str(root / "seven.png")])
    assert result.exit_code == 0, result.output
    assert "inverted" in result.output
    assert "seven.png: 7 " in result.output
