"""The CLI verbs on a tiny digits run: train, evaluate, predict, summary, runs ls/show/compare."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits
from typer.testing import CliRunner

from layerwise.cli import app

RECIPE = """
name: tiny
seed: 1
data: {name: digits, batch_size: 32, val_fraction: 0.1}
model: {name: cnn, args: {variant: lenet}}
train:
  epochs: 3
  optimizer: {name: adam, lr: 0.003}
  metrics: [accuracy, f1]
"""

runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """One trained run shared by the tests of this module."""
    root = tmp_path_factory.mktemp("cli")
    (root / "tiny.yaml").write_text(RECIPE)
    output = invoke("train", str(root / "tiny.yaml"), "--runs-dir", str(root / "runs"), "--quiet")
    return root, output


def test_train_prints_accuracy_and_writes_the_run_folder(workspace):
    root, output = workspace
    accuracy = float(re.search(r"test accuracy: ([0-9.]+)", output).group(1))
    assert accuracy > 0.8
    run = root / "runs" / "tiny"
    for name in ("recipe.yaml", "metrics.jsonl", "run.json", "report.html"):
        assert (run / name).is_file(), name
    for name in ("last-*/weights.safetensors", "last-*/state.pt", "best-*/weights.safetensors"):
        assert list((run / "checkpoints").glob(name)), name
    for name in ("curves.png", "confusion_matrix.png", "samples.png"):
        assert (run / "plots" / name).stat().st_size > 1000, name
    report = (run / "report.html").read_text()
    assert report.count("data:image/png;base64,") >= 3
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["split"] == "train"] == [1, 2, 3]
    assert {"loss", "accuracy", "f1", "lr"} <= set(records[0])
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "finished"
    assert info["best_metric"]["val_loss"] > 0


def test_evaluate_last_weights_reproduces_the_training_figure(workspace):
    root, output = workspace
    trained = float(re.search(r"test accuracy: ([0-9.]+)", output).group(1))
    result = invoke("evaluate", "tiny", "--weights", "last", "--runs-dir", str(root / "runs"))
    evaluated = float(re.search(r"accuracy ([0-9.]+)", result).group(1))
    assert evaluated == pytest.approx(trained, abs=1e-4)


def test_predict_npy_and_images(workspace, tmp_path):
    root, _ = workspace
    digits = load_digits()
    np.save(tmp_path / "x.npy", (digits.images[:20] / 16).astype("float32"))
    out_csv = tmp_path / "pred.csv"
    invoke("predict", "tiny", str(tmp_path / "x.npy"), "-o", str(out_csv), "--runs-dir",
           str(root / "runs"))  # fmt: skip
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 20
    predicted = np.array([int(r["prediction"]) for r in rows])
    assert (predicted == digits.target[:20]).mean() >= 0.7
    assert all(0.0 <= float(r["probability"]) <= 1.0 for r in rows)

    image = (digits.images[0] / 16 * 255).astype("uint8")
    Image.fromarray(image).resize((32, 32)).save(tmp_path / "zero.png")
    output = invoke("predict", "tiny", str(tmp_path / "zero.png"), "--runs-dir", str(root / "runs"))
    note, answer = output.splitlines()  # the image is not the training size: said, then mapped
    assert note.startswith("note: zero.png (32x32) resized to 8x8")
    assert answer.startswith("zero.png: 0 ")


def test_summary_of_recipe_and_run(workspace):
    root, _ = workspace
    from_recipe = invoke("summary", str(root / "tiny.yaml"))
    from_run = invoke("summary", "tiny", "--runs-dir", str(root / "runs"))
    assert "Total params: 21,386" in from_recipe
    assert "Total params: 21,386" in from_run


def test_runs_ls_show_compare(workspace):
    root, _ = workspace
    runs = str(root / "runs")
    listing = invoke("runs", "ls", "--runs-dir", runs)
    assert "tiny" in listing and "finished" in listing
    shown = invoke("runs", "show", "tiny", "--runs-dir", runs)
    assert "report:" in shown
    compared = invoke("runs", "compare", "tiny", "tiny", "--runs-dir", runs)
    assert "test_accuracy" in compared


def test_every_verb_has_help_with_an_example():
    for verb in (["train"], ["evaluate"], ["predict"], ["summary"], ["quickstart"],
                 ["runs", "ls"], ["runs", "show"], ["runs", "compare"]):  # fmt: skip
        assert "Example:" in invoke(*verb, "--help"), verb
