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


def test_frozen_parameters_do_not_count_towards_data_too_small():
    # 200 rows under a frozen 256x512 layer (131k parameters, 657 per row if they counted) and a
    # trainable head of 1,026: a frozen backbone cannot memorise the rows, so nothing is too big.
    backbone = torch.nn.Linear(256, 512)
    backbone.requires_grad_(False)
    model = torch.nn.Sequential(backbone, torch.nn.ReLU(), torch.nn.Linear(512, 2))
    x, y = torch.randn(200, 256), torch.randint(0, 2, (200,))
    trainer = Trainer(model, seed=0)
    trainer.fit((x, y), epochs=1, batch_size=50)
    doctor = next(c for c in trainer.callbacks if isinstance(c, Doctor))
    assert doctor.data_profile["num_params"] == 512 * 2 + 2
    unfrozen = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.Linear(512, 2))
    again = Trainer(unfrozen, seed=0)
    again.fit((x, y), epochs=1, batch_size=50)
    profile = next(c for c in again.callbacks if isinstance(c, Doctor)).data_profile
    assert profile["num_params"] == 256 * 512 + 512 + 512 * 2 + 2
