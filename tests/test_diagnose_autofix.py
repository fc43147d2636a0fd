"""Auto-fix: rounds of train → diagnose → patch, kept only when held-out rows say so, a fixed
copy, and the user's file untouched."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from layerwise.data import DatasetBundle, load_dataset
from layerwise.diagnose.doctor import check_data
from layerwise.diagnose.findings import Diagnosis, Finding
from layerwise.diagnose.rules.fixes import data_fix_refusal
from layerwise.train import Trainer
from layerwise.tune import autofix
from layerwise.tune.autofix import FixRound, _next_patch, auto_fix, choose_round
from layerwise.tune.holdout import HoldoutScore, HoldoutScorer, beats

UNSCALED = """
name: unscaled
data: {name: faulty, batch_size: 32, args: {dataset: breast_cancer, scale: 1000.0}}
model: {name: mlp, args: {hidden: [32]}}
train:
  epochs: 8
  optimizer: {name: adam, lr: 0.001}
  monitor: val_loss
doctor: {label_noise: false}
"""

MISSING = """
name: missing
data: {name: faulty, batch_size: 32, standardize: true,
       args: {dataset: breast_cancer, missing: 0.05}}
model: {name: mlp, args: {hidden: [32]}}
train:
  epochs: 5
  optimizer: {name: adam, lr: 0.003}
doctor: {label_noise: false}
"""


@pytest.mark.slow
def test_auto_fix_standardises_unscaled_inputs_and_leaves_the_recipe_alone(tmp_path: Path):
    path = tmp_path / "unscaled.yaml"
    path.write_text(UNSCALED)
    result = auto_fix(path, rounds=1, runs_root=tmp_path / "runs", echo=None)
    assert path.read_text() == UNSCALED
    first = result.rounds[0]
    assert "unscaled_inputs" in first.codes and first.applied == {}
    assert result.rounds[1].applied["data.standardize"] is True
    assert "unscaled_inputs" not in result.rounds[1].codes
    assert result.best_round == 1 and result.rounds[1].kept
    assert result.rounds[1].holdout["value"] > result.rounds[0].holdout["value"]
    fixed = yaml.safe_load(result.fixed_recipe.read_text())
    assert result.fixed_recipe == tmp_path / "unscaled.fixed.yaml"
    assert fixed["data"]["standardize"] is True and fixed["name"] == "unscaled-fixed"
    log = json.loads(result.log_path.read_text())
    assert [r["round"] for r in log["rounds"]] == list(range(len(result.rounds)))
    assert result.rounds[result.best_round].test_metrics["accuracy"] > 0.9


@pytest.mark.slow
def test_auto_fix_imputes_data_that_training_refused(tmp_path: Path):
    path = tmp_path / "missing.yaml"
    path.write_text(MISSING)
    result = auto_fix(path, rounds=1, runs_root=tmp_path / "runs", echo=None)
    first, second = result.rounds
    assert first.status == "refused" and "missing_values" in first.codes and first.run is None
    assert second.applied["data.impute"] == "median"
    assert second.status == "finished" and "missing_values" not in second.codes
    assert result.best_round == 1


def _scored(i: int, rows: list[float], codes: list[str], test: float) -> FixRound:
    """A fake round whose model got `rows` right (1) or wrong (0) on the validation rows."""
    score = HoldoutScore(sum(rows) / len(rows), rows)
    return FixRound(
        i,
        f"r{i}",
        {},
        codes,
        ["warning"] * len(codes),
        "finished",
        test_metrics={"accuracy": test},
        score=score,
    )


def test_the_round_kept_is_chosen_by_validation_score_not_by_findings_or_test():
    # Round 0 is right on all 100 validation rows but has an overfitting finding; round 1 (more
    # regularisation) has no finding left but is right on only 89. Its test score is made up to
    # look better: auto-fix must not read it.
    history = [
        _scored(0, [1.0] * 100, ["overfitting", "data_too_small"], test=0.80),
        _scored(1, [1.0] * 89 + [0.0] * 11, [], test=0.99),
    ]
    assert choose_round(history) == 0
    # A later round that really is better on validation is kept, whatever its findings.
    history.append(_scored(2, [1.0] * 100, ["overfitting", "underfitting", "lr_too_low"], 0.5))
    assert choose_round(history) == 0  # equal to round 0: no gain, nothing kept
    worse_start = [_scored(0, [1.0] * 60 + [0.0] * 40, [], 0.9), history[2]]
    assert choose_round(worse_start) == 1


def test_a_gain_within_noise_is_not_kept_and_a_clear_gain_is():
    base = HoldoutScore(0.9, [1.0] * 90 + [0.0] * 10)
    one_more = HoldoutScore(0.91, [1.0] * 91 + [0.0] * 9)  # one row better
    mixed = HoldoutScore(0.92, [0.0] * 2 + [1.0] * 88 + [1.0] * 4 + [0.0] * 6)  # +4 -2
    swapped = HoldoutScore(0.9, [0.0] + [1.0] * 90 + [0.0] * 9)  # one better, one worse
    clear = HoldoutScore(0.97, [1.0] * 97 + [0.0] * 3)
    assert not beats(one_more, base)[0] and not beats(mixed, base)[0]
    assert not beats(swapped, base)[0]
    assert beats(clear, base)[0]
    assert beats(base, None)[0] and not beats(None, base)[0]
    # Rows left out as copies of train (NaN) are compared only where both rounds scored them.
    # A leaky round answers its 10 copied rows from memory; left out, it is no better.
    honest = HoldoutScore(0.85, [0.0] * 10 + [1.0] * 85 + [0.0] * 5)
    leaky = HoldoutScore(85 / 90, [float("nan")] * 10 + [1.0] * 85 + [0.0] * 5)
    assert leaky.value > honest.value and not beats(leaky, honest)[0]


def test_validation_rows_that_copy_training_rows_are_not_scored():
    torch.manual_seed(0)
    x = torch.randn(120, 6)
    y = (x[:, 0] > 0).long()
    val_x = torch.cat([x[:15], torch.randn(25, 6)])  # 15 exact copies of train rows
    val_y = (val_x[:, 0] > 0).long()
    scorer = HoldoutScorer()
    trainer = Trainer(nn.Linear(6, 2), doctor=False, progress=False, callbacks=[scorer])
    trainer.fit((x, y), (val_x, val_y), epochs=2, batch_size=32)
    score = scorer.score(None, True)
    assert score.copies_left_out == 15 and score.scored == 25
    assert all(math.isnan(v) for v in score.rows[:15])
    assert score.value == pytest.approx(sum(score.rows[15:]) / 25)


def _profile(bundle: DatasetBundle) -> dict:
    return check_data(bundle, label_noise=False).data_profile


def test_data_fixes_are_refused_on_bounded_pixel_data_and_allowed_on_raw_tables():
    digits = load_dataset("digits")
    flat = DatasetBundle(
        name="flat_digits",
        train=(digits.train[0].reshape(-1, 64), digits.train[1]),
        val=(digits.val[0].reshape(-1, 64), digits.val[1]),
        test=None,
        num_classes=10,
        input_shape=(64,),
    )
    profile = _profile(flat)
    assert profile["constant_features"]["count"] >= 1  # the border pixels
    assert "already lie within" in data_fix_refusal("data.standardize", profile)
    assert "pixels" in data_fix_refusal("data.drop_constant", profile)
    normalised = dict(profile, scale={**profile["scale"], "min": -0.42, "max": 2.82})
    assert "pixels already on a unit scale" in data_fix_refusal("data.standardize", normalised)
    raw = _profile(load_dataset("breast_cancer"))
    assert data_fix_refusal("data.standardize", raw) is None
    assert data_fix_refusal("data.drop_constant", raw) is None
    # The refused fixes are left out of the next patch, which moves on to the training fixes.
    diagnosis = Diagnosis(
        [
            Finding("unscaled_inputs", "warning", "m", patch={"data.standardize": True}),
            Finding("constant_feature", "info", "m", patch={"data.drop_constant": True}),
            Finding("lr_too_high", "error", "m", patch={"train.optimizer.lr": 1e-4}),
        ]
    )
    patch, refused = _next_patch(diagnosis, {}, set(), profile)
    assert patch == {"train.optimizer.lr": 1e-4}
    assert set(refused) == {"data.standardize", "data.drop_constant"}


def test_data_fixes_go_first_and_set_aside_keys_are_not_tried_again():
    diagnosis = Diagnosis(
        [
            Finding("lr_too_high", "error", "m", patch={"train.optimizer.lr": 1e-4}),
            Finding("unscaled_inputs", "warning", "m", patch={"data.standardize": True}),
        ]
    )
    assert _next_patch(diagnosis, {})[0] == {"data.standardize": True}
    already = {"data": {"standardize": True}}
    assert _next_patch(diagnosis, already)[0] == {"train.optimizer.lr": 1e-4}
    assert _next_patch(diagnosis, {}, {"data.standardize"})[0] == {"train.optimizer.lr": 1e-4}
    assert _next_patch(Diagnosis([]), {}) == ({}, {})


def test_auto_fix_returns_the_recipe_as_given_when_no_change_helps(tmp_path: Path, monkeypatch):
    diagnosis = Diagnosis(
        [
            Finding("overfitting", "warning", "m", patch={"model.args.dropout": 0.2}),
            Finding("unscaled_inputs", "warning", "m", patch={"data.standardize": True}),
        ]
    )
    trained: list[dict] = []

    def fake_round(k, current, applied, *args, **kwargs):
        trained.append(dict(applied))
        rows = [1.0] * 95 + [0.0] * 5 if k == 0 else [1.0] * 80 + [0.0] * 20
        fake = FixRound(k, f"r{k}", dict(applied), diagnosis.codes, ["warning"] * 2, "finished")
        fake.score = HoldoutScore(sum(rows) / 100, rows)
        return fake, diagnosis

    monkeypatch.setattr(autofix, "_train_round", fake_round)
    path = tmp_path / "r.yaml"
    path.write_text(UNSCALED)
    result = auto_fix(path, rounds=3, runs_root=tmp_path / "runs", echo=None)
    # Each change is tried on the recipe as given (not on top of a rejected one), then set aside.
    assert trained == [{}, {"data.standardize": True}, {"model.args.dropout": 0.2}]
    assert result.best_round == 0 and result.fixed_recipe is None
    assert [r.kept for r in result.rounds] == [True, False, False]
    log = json.loads(result.log_path.read_text())
    assert log["best_round"] == 0
    assert log["rounds"][1]["decision"].startswith("set aside")
    assert path.read_text() == UNSCALED


def test_a_cause_revealed_by_a_change_set_aside_is_tried_on_the_best_recipe(
    tmp_path: Path, monkeypatch
):
    plateau = Finding("loss_plateau", "warning", "m", patch={"train.schedule": {"name": "x"}})
    vanishing = Finding("vanishing_gradients", "error", "m", patch={"model.init": "he"})
    seen = {0: Diagnosis([plateau]), 1: Diagnosis([vanishing]), 2: Diagnosis([])}
    right = {0: 10, 1: 10, 2: 95}  # validation rows right out of 100
    trained: list[dict] = []

    def fake_round(k, current, applied, *args, **kwargs):
        trained.append(dict(applied))
        rows = [1.0] * right[k] + [0.0] * (100 - right[k])
        fake = FixRound(k, f"r{k}", dict(applied), seen[k].codes, [], "finished")
        fake.score = HoldoutScore(right[k] / 100, rows)
        return fake, seen[k]

    monkeypatch.setattr(autofix, "_train_round", fake_round)
    path = tmp_path / "r.yaml"
    path.write_text(UNSCALED)
    result = auto_fix(path, rounds=3, runs_root=tmp_path / "runs", echo=None)
    assert trained == [{}, {"train.schedule": {"name": "x"}}, {"model.init": "he"}]
    assert result.best_round == 2 and [r.kept for r in result.rounds] == [True, False, True]
    assert yaml.safe_load(result.fixed_recipe.read_text())["model"]["init"] == "he"
