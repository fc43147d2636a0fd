"""The doctor wired into training: live findings, a clean stop on NaN, diagnosis after the run."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml

from layerwise.data import load_dataset
from layerwise.diagnose.doctor import Doctor, diagnose_run, epoch_history
from layerwise.diagnose.findings import Diagnosis
from layerwise.diagnose.probes import Probes
from layerwise.experiment import train
from layerwise.models import create_model
from layerwise.recipe import parse_recipe
from layerwise.train import Callback, Trainer

pytestmark = pytest.mark.slow  # trains runs with the doctor: make test, not make test-fast

DIVERGING = """
name: diverging
data: {name: digits, batch_size: 32}
model: {name: mlp, args: {hidden: [64]}}
train:
  epochs: 4
  optimizer: {name: adam, lr: 0.002}
  monitor: val_accuracy
doctor: {probe_every: 1}
"""


def test_epoch_history_joins_train_and_val_records():
    records = [
        {"epoch": 1, "step": 10, "split": "train", "loss": 1.0, "accuracy": 0.5, "lr": 0.1},
        {"epoch": 1, "step": 10, "split": "val", "loss": 1.2, "accuracy": 0.4},
        {"epoch": 2, "step": 20, "split": "train", "loss": 0.5, "accuracy": 0.8, "lr": 0.1},
        {"epoch": 2, "split": "test", "loss": 0.7, "accuracy": 0.7},
        {"split": "val", "eval": "last", "loss": 0.6},
    ]
    assert epoch_history(records) == [
        {
            "epoch": 1,
            "step": 10,
            "loss": 1.0,
            "accuracy": 0.5,
            "lr": 0.1,
            "val_loss": 1.2,
            "val_accuracy": 0.4,
        },
        {"epoch": 2, "step": 20, "loss": 0.5, "accuracy": 0.8, "lr": 0.1},
    ]


class PoisonWeights(Callback):
    """Turn the first weight into NaN after `step` optimizer steps: a deterministic divergence."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_batch_end(self, trainer):
        if trainer.state.step == self.step:
            with torch.no_grad():
                next(trainer.model.parameters()).fill_(float("nan"))


def test_doctor_stops_a_diverging_trainer_and_reports_once():
    data = load_dataset("digits", subset=400)
    model = create_model("mlp", num_classes=10, hidden=[64])
    probes = Probes(every=1)
    lines: list[str] = []
    doctor = Doctor(probes, echo=lines.append, num_classes=10)
    callbacks = [PoisonWeights(step=5), probes, doctor]
    trainer = Trainer(model, optimizer="adam", lr=1e-3, callbacks=callbacks)
    history = trainer.fit(data.train, data.val, epochs=5, batch_size=32)
    reason = trainer.stop_reason
    assert reason is not None and reason.fatal and reason.source == "doctor"
    finding = reason.detail
    assert finding.code == "loss_nan" and finding.severity == "fatal"
    assert trainer.state.step == 6  # the step after the poison, the first with a NaN loss
    assert history == []  # stopped inside the first epoch
    assert [line for line in lines if "loss_nan" in line] == [f"doctor: {finding.headline()}"]


def test_a_nan_run_is_halted_and_keeps_its_last_good_checkpoint(tmp_path):
    from layerwise.experiment import build_data

    recipe = parse_recipe(DIVERGING)
    steps_per_epoch = -(-len(build_data(recipe).train[0]) // recipe.data.batch_size)
    poison = PoisonWeights(step=2 * steps_per_epoch + 3)
    run, test = train(recipe, tmp_path, progress=False, echo=None, callbacks=[poison])
    info = run.info()
    assert info["status"] == "halted"
    assert "loss_nan" in info["findings"]
    weights, state = run.load_checkpoint("last")
    assert state["train_state"]["epoch"] == 2  # the checkpoint of the last good epoch
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert math.isfinite(test["loss"]) and test["accuracy"] > 0.5  # measured on the good weights
    diagnosis = run.read_diagnosis()
    fatal = [f for f in diagnosis["findings"] if f["severity"] == "fatal"]
    assert fatal and fatal[0]["code"] == "loss_nan"
    assert "train.optimizer.lr" in fatal[0]["patch"]


def test_a_healthy_run_has_probes_a_clean_diagnosis_and_doctor_plots(tmp_path):
    recipe = parse_recipe(HEALTHY)
    run, _ = train(recipe, tmp_path, progress=False, echo=None)
    assert (run.path / "probes.jsonl").is_file()
    assert (run.path / "data_profile.json").is_file()
    stored = Diagnosis.from_dict(json.loads(run.diagnosis_path.read_text()))
    assert stored.codes == [], stored.render()
    assert diagnose_run(run, save=False).codes == stored.codes
    for name in ("gradient_flow.png", "activation_histograms.png", "update_ratios.png"):
        assert (run.plots_dir / name).stat().st_size > 1000, name
    report = run.report_path.read_text()
    assert report.index('<section id="diagnosis">') < report.index('<section id="plots">')
    assert "found no problems" in report


HEALTHY = yaml.safe_dump(
    {
        "name": "healthy",
        "data": {"name": "digits", "batch_size": 32},
        "model": {"name": "cnn", "args": {"variant": "lenet"}},
        "train": {
            "epochs": 8,
            "optimizer": {"name": "adam", "lr": 0.002},
            "schedule": {"name": "onecycle"},
            "monitor": "val_accuracy",
        },
    }
)


def test_corrupt_doctor_files_in_a_run_are_run_errors_with_a_hint(tmp_path):
    from layerwise.diagnose.doctor import DATA_PROFILE_FILE, read_data_profile
    from layerwise.errors import RunError
    from layerwise.runs import Run

    run = Run.create(tmp_path, "damaged", HEALTHY)
    (run.path / DATA_PROFILE_FILE).write_text("{not json")
    run.diagnosis_path.write_text("[1, 2")
    with pytest.raises(RunError, match=DATA_PROFILE_FILE) as raised:
        read_data_profile(run)
    assert "delete it" in raised.value.hint
    with pytest.raises(RunError, match=r"diagnosis\.json") as raised:
        run.read_diagnosis()
    assert "layerwise doctor damaged" in raised.value.hint
