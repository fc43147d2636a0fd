"""Tracking: TensorBoard event files for every run, and `runs compare` drawing runs together."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from typer.testing import CliRunner

from layerwise import experiment
from layerwise.cli import app
from layerwise.recipe import parse_recipe
from layerwise.train import Trainer
from layerwise.train.callbacks.tensorboard import TensorBoardLogger

RECIPE = """\
name: {name}
data: {{name: digits, batch_size: 64, args: {{subset: 240}}}}
model: {{name: mlp, args: {{hidden: [16]}}}}
train: {{epochs: 2, threads: 1}}
doctor: {{label_noise: false, data_checks: false}}
"""


def _events(folder) -> EventAccumulator:
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "histograms": 0})
    events.Reload()
    return events


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """One image run tracked to TensorBoard, one with `track.tensorboard: false`."""
    root = tmp_path_factory.mktemp("tracking")
    tracked, _ = experiment.train(
        parse_recipe(RECIPE.format(name="tracked")), root, progress=False, echo=None
    )
    quiet = parse_recipe(RECIPE.format(name="untracked") + "track: {tensorboard: false}\n")
    untracked, _ = experiment.train(quiet, root, progress=False, echo=None)
    return root, tracked, untracked


@pytest.mark.slow
def test_a_run_writes_scalars_histograms_and_images_to_tensorboard(two_runs):
    _, run, _ = two_runs
    events = _events(run.path / "tensorboard")
    tags = events.Tags()
    assert {"step/loss", "train/loss", "train/accuracy", "train/lr"} <= set(tags["scalars"])
    assert {"val/loss", "val/accuracy"} <= set(tags["scalars"])
    metrics = [r for r in run.read_metrics() if r.get("split") == "train"]
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx(
        [r["loss"] for r in metrics], rel=1e-6
    )
    step_losses = events.Scalars("step/loss")  # one per optimizer step, read once per epoch
    assert [e.step for e in step_losses] == list(range(1, metrics[-1]["step"] + 1))
    histograms = set(tags["histograms"])
    assert "weights/head.weight" in histograms and "grads/head.weight" in histograms
    assert len([t for t in histograms if t.startswith("grads/")]) == len(
        [t for t in histograms if t.startswith("weights/")]
    )
    assert tags["images"] == ["samples/train"]
    assert "recipe/text_summary" in tags["tensors"]


@pytest.mark.slow
def test_tensorboard_can_be_turned_off_in_the_recipe(two_runs):
    _, _, untracked = two_runs
    assert not (untracked.path / "tensorboard").exists()
    assert (untracked.path / "report.html").exists()


@pytest.mark.slow
def test_runs_compare_writes_a_report_with_both_runs(two_runs):
    root, tracked, untracked = two_runs
    args = ["runs", "compare", "tracked", "untracked", "--runs-dir", str(root)]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    folder = root / "compare" / "tracked_vs_untracked"
    page = folder / "compare.html"
    assert f"comparison report: {page}" in result.output.replace("\n", "")
    text = page.read_text()
    assert "tracked (" in text or "tracked<" in text
    for run in (tracked, untracked):
        assert run.report_path.resolve().as_uri() in text
    assert '<img src="compare.png"' in text
    with Image.open(folder / "compare.png") as image:
        assert image.size[0] > 800 and image.size[1] > 300
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    colours = set(map(tuple, np.unique(pixels, axis=0).tolist()))
    assert (31, 119, 180) in colours and (255, 127, 14) in colours  # C0 and C1: one per run


def test_the_logger_reads_the_device_once_per_epoch_not_per_step(tmp_path, monkeypatch):
    """Step losses are kept on the device and read together: one `.tolist()` per epoch."""
    reads = []
    original = torch.Tensor.tolist

    def counting(self):
        reads.append(self.shape)
        return original(self)

    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    logger = TensorBoardLogger(tmp_path, histograms=False)
    trainer = Trainer(model, doctor=False, callbacks=[logger], progress=False, seed=0)
    x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    monkeypatch.setattr(torch.Tensor, "tolist", counting)
    trainer.fit((x, y), epochs=2, batch_size=8)
    monkeypatch.undo()
    assert [tuple(shape) for shape in reads if shape == (8,)] == [(8,), (8,)]  # 8 steps, twice
    assert [e.step for e in _events(tmp_path).Scalars("step/loss")] == list(range(1, 17))


@pytest.mark.skipif(importlib.util.find_spec("mlflow") is None, reason="mlflow not installed")
@pytest.mark.slow
def test_mlflow_gets_the_params_and_metrics(tmp_path):
    import mlflow

    recipe = parse_recipe(RECIPE.format(name="logged") + "track: {mlflow: true}\n")
    run, _ = experiment.train(recipe, tmp_path, progress=False, echo=None)
    mlflow.set_tracking_uri((tmp_path / "mlruns").resolve().as_uri())
    found = mlflow.search_runs(experiment_names=["layerwise"])
    assert list(found["tags.mlflow.runName"]) == [run.name]
    assert "metrics.val_accuracy" in found.columns


def test_step_scalars_can_be_thinned(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    logger = TensorBoardLogger(tmp_path, histograms=False, step_every=3)
    trainer = Trainer(model, doctor=False, callbacks=[logger], progress=False, seed=0)
    trainer.fit((torch.randn(64, 4), torch.randint(0, 3, (64,))), epochs=2, batch_size=8)
    assert [e.step for e in _events(tmp_path).Scalars("step/loss")] == [3, 6, 9, 12, 15]


def test_a_failed_event_write_warns_once_and_training_goes_on(tmp_path, monkeypatch):
    """A full disk or a file-size limit ends the side log, not the training."""
    from torch.utils.tensorboard import SummaryWriter

    def full(self, *args, **kwargs):
        raise OSError(27, "File too large")

    monkeypatch.setattr(SummaryWriter, "add_scalar", full)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    logger = TensorBoardLogger(tmp_path, histograms=False)
    trainer = Trainer(model, doctor=False, callbacks=[logger], progress=False, seed=0)
    with pytest.warns(UserWarning, match="TensorBoard logging stopped.*File too large") as caught:
        trainer.fit((torch.randn(64, 4), torch.randint(0, 3, (64,))), epochs=3, batch_size=8)
    assert len(caught) == 1
    assert trainer.state.epoch == 3 and logger.writer is None
