"""Auto-fix: rounds of train → diagnose → patch, a fixed copy, and the user's file untouched."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from layerwise.diagnose.findings import Diagnosis, Finding
from layerwise.tune.autofix import FixRound, _best_round, _next_patch, auto_fix

UNSCALED = """
name: unscaled
data: {name: breast_cancer, batch_size: 32}
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


def test_auto_fix_standardises_unscaled_inputs_and_leaves_the_recipe_alone(tmp_path: Path):
    path = tmp_path / "unscaled.yaml"
    path.write_text(UNSCALED)
    result = auto_fix(path, rounds=2, runs_root=tmp_path / "runs", echo=None)
    assert path.read_text() == UNSCALED
    first = result.rounds[0]
    assert "unscaled_inputs" in first.codes and first.applied == {}
    assert result.rounds[1].applied["data.standardize"] is True
    assert "unscaled_inputs" not in result.rounds[1].codes
    assert result.best_round >= 1
    fixed = yaml.safe_load(result.fixed_recipe.read_text())
    assert result.fixed_recipe == tmp_path / "unscaled.fixed.yaml"
    assert fixed["data"]["standardize"] is True and fixed["name"] == "unscaled-fixed"
    log = json.loads(result.log_path.read_text())
    assert [r["round"] for r in log["rounds"]] == list(range(len(result.rounds)))
    assert result.rounds[result.best_round].test_metrics["accuracy"] > 0.9


def test_auto_fix_imputes_data_that_training_refused(tmp_path: Path):
    path = tmp_path / "missing.yaml"
    path.write_text(MISSING)
    result = auto_fix(path, rounds=1, runs_root=tmp_path / "runs", echo=None)
    first, second = result.rounds
    assert first.status == "refused" and "missing_values" in first.codes and first.run is None
    assert second.applied["data.impute"] == "median"
    assert second.status == "finished" and "missing_values" not in second.codes
    assert result.best_round == 1


def _round(i: int, severities: list[str], val: float, status: str = "finished") -> FixRound:
    return FixRound(i, f"r{i}", {}, ["x"] * len(severities), severities, status, {"loss": val})


def test_best_round_prefers_fewer_findings_then_the_validation_score():
    history = [
        _round(0, ["error"], 0.1),
        _round(1, ["warning"], 0.9),
        _round(2, ["warning"], 0.5),
        _round(3, [], 2.0, status="halted"),
    ]
    assert _best_round(history, "val_loss", "min") == 2
    assert _best_round(history[:2], "val_loss", "min") == 1


def test_best_round_reads_the_monitors_direction_from_the_mode():
    history = [
        FixRound(i, f"r{i}", {}, [], [], "finished", {"f1": f1}) for i, f1 in [(0, 0.9), (1, 0.5)]
    ]
    assert _best_round(history, "val_f1", "max") == 0
    assert _best_round(history, "val_f1", "min") == 1


def test_data_fixes_go_first():
    diagnosis = Diagnosis(
        [
            Finding("lr_too_high", "error", "m", patch={"train.optimizer.lr": 1e-4}),
            Finding("unscaled_inputs", "warning", "m", patch={"data.standardize": True}),
        ]
    )
    assert _next_patch(diagnosis, {}) == {"data.standardize": True}
    already = {"data": {"standardize": True}}
    assert _next_patch(diagnosis, already) == {"train.optimizer.lr": 1e-4}
    assert _next_patch(Diagnosis([]), {}) == {}
