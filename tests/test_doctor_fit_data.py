"""The doctor checks the data from Python too: `Trainer.fit` with the doctor on runs the data
checks the CLI runs, once per training set, so the same data gets the same findings."""

from __future__ import annotations

import torch

from layerwise.data import load_dataset
from layerwise.diagnose.doctor import Doctor
from layerwise.diagnose.rules import RULES
from layerwise.experiment import build_data, build_model, check_recipe_data
from layerwise.models import create_model
from layerwise.recipe import load_recipe
from layerwise.recipes_bundled import bundled_recipe
from layerwise.train import Trainer

DATA_CODES = {code for code, rule in RULES.items() if rule.stage == "data"}


def test_raw_breast_cancer_through_trainer_fit_gets_the_clis_data_findings(capsys):
    recipe = load_recipe(bundled_recipe("breast_cancer_mlp"), ["data.standardize=false"])
    data = build_data(recipe)
    cli = check_recipe_data(recipe, data, build_model(recipe, data), echo=None)
    cli_codes = set(cli.codes)
    assert "unscaled_inputs" in cli_codes  # values up to ~4,000 next to values ~0.001

    raw = load_dataset("breast_cancer")
    trainer = Trainer(create_model("mlp", num_classes=2, hidden=[8]), seed=0)
    trainer.fit(raw.train, raw.val, epochs=1, batch_size=64)
    assert set(trainer.diagnose().codes) & DATA_CODES == cli_codes
    doctor = next(c for c in trainer.callbacks if isinstance(c, Doctor))
    assert doctor.data_profile["scale"]["max"] > 4000
    printed = capsys.readouterr().out
    unscaled = next(f for f in cli.findings if f.code == "unscaled_inputs")
    assert f"doctor: {unscaled.headline()}" in printed


def test_the_data_is_checked_once_and_only_when_the_doctor_is_on(monkeypatch):
    from layerwise.diagnose import doctor as doctor_module

    calls = []
    original = doctor_module.check_data
    monkeypatch.setattr(
        doctor_module, "check_data", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    trainer = Trainer(create_model("mlp", num_classes=2, hidden=[4]))
    trainer.fit((x, y), epochs=1, batch_size=32)
    trainer.fit((x, y), epochs=2, batch_size=32)  # continuing: the profile is kept
    assert len(calls) == 1
    Trainer(create_model("mlp", num_classes=2, hidden=[4]), doctor=False).fit(
        (x, y), epochs=1, batch_size=32
    )
    assert len(calls) == 1


def test_regression_targets_are_profiled_as_regression():
    x, y = torch.randn(48, 3), torch.randn(48)
    trainer = Trainer(create_model("mlp", num_classes=1, hidden=[4]), loss="mse", metrics=())
    trainer.fit((x, y), epochs=1, batch_size=16)
    doctor = next(c for c in trainer.callbacks if isinstance(c, Doctor))
    assert doctor.data_profile["task"] == "regression"
    assert doctor.task == "regression"
