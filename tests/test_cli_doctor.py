"""The doctor's CLI verbs: `doctor RUN`, `doctor RECIPE [--data-only | --auto-fix]`, `lr-find`,
and `train` ending with the doctor's summary (or exit 2 when the doctor had to stop the run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_runner import layerwise

pytestmark = pytest.mark.slow  # trains recipes through the CLI: make test, not make test-fast

RECIPES = Path(__file__).resolve().parents[1] / "recipes"

TINY = """
name: tiny
data: {name: digits, batch_size: 32}
model: {name: cnn, args: {variant: lenet}}
train:
  epochs: 6
  optimizer: {name: adam, lr: 0.003}
  schedule: {name: onecycle}
  monitor: val_accuracy
"""


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("doctor-cli")
    (folder / "tiny.yaml").write_text(TINY)
    result = layerwise("train", "tiny.yaml", "--quiet", cwd=folder)
    assert result.code == 0, result.stderr
    assert "doctor: no problems found" in result.stdout
    return folder


def test_doctor_on_a_run_prints_and_writes_the_diagnosis(work: Path):
    diagnosis_path = work / "runs" / "tiny" / "diagnosis.json"
    diagnosis_path.unlink()
    result = layerwise("doctor", "tiny", cwd=work)
    assert result.code == 0, result.stderr
    assert "No problems found." in result.stdout
    assert json.loads(diagnosis_path.read_text())["codes"] == []


def test_doctor_data_only_lists_data_findings_without_training(tmp_path: Path):
    recipe = RECIPES / "broken" / "train_test_leakage.yaml"
    result = layerwise("doctor", str(recipe), "--data-only", cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert "[error] train_test_leakage: 108 of 360 test rows (30.0%)" in result.stdout
    assert "patch: data.drop_leaked=True" in result.stdout
    assert not (tmp_path / "runs").exists()


TINY_LM = """
name: tiny_lm
data: {name: tinyshakespeare, args: {block_size: 16, subset: 2400}, batch_size: 16}
model: {name: gpt_lm, args: {dim: 16, heads: 2, layers: 1}}
"""


def test_doctor_data_only_checks_a_sequence_recipe_as_train_does(tmp_path: Path):
    """A language model's data goes through its task's pipelines and the token checks; the
    classifier path crashed on it (a model output of 65 classes against 69 'labels')."""
    (tmp_path / "lm.yaml").write_text(TINY_LM)
    result = layerwise("doctor", "lm.yaml", "--data-only", cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert "No problems found." in result.stdout and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


def test_doctor_data_only_refuses_a_task_the_data_checks_do_not_cover(tmp_path: Path):
    result = layerwise("doctor", str(RECIPES / "mnist_dcgan.yaml"), "--data-only", cwd=tmp_path)
    assert result.code == 2
    assert "'mnist_dcgan' trains a GAN task" in result.stderr and "hint:" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_auto_fix_needs_a_recipe_not_a_run(work: Path):
    result = layerwise("doctor", "tiny", "--auto-fix", cwd=work)
    assert result.code == 2
    assert "is a run" in result.stderr and "hint:" in result.stderr


UNSCALED_1000 = """
name: unscaled
data: {name: faulty, batch_size: 32, args: {dataset: breast_cancer, scale: 1000.0}}
model: {name: mlp, args: {hidden: [32]}}
train:
  epochs: 8
  optimizer: {name: adam, lr: 0.001}
  monitor: val_loss
doctor: {label_noise: false}
"""


def test_auto_fix_from_the_command_line_writes_a_fixed_copy(tmp_path: Path):
    # Raw breast cancer scaled up 1000-fold: standardising wins clearly on validation rows, so
    # auto-fix keeps it (a small gain on the 46 validation rows would be set aside as noise).
    source = UNSCALED_1000
    (tmp_path / "unscaled.yaml").write_text(source)
    result = layerwise("doctor", "unscaled.yaml", "--auto-fix", "--rounds", "1", cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert "fixed recipe (round 1): unscaled.fixed.yaml" in result.stdout
    assert (tmp_path / "unscaled.yaml").read_text() == source
    assert "standardize: true" in (tmp_path / "unscaled.fixed.yaml").read_text()


def test_train_stopped_by_the_doctor_exits_2_and_keeps_the_run(tmp_path: Path):
    result = layerwise("train", str(RECIPES / "broken" / "loss_nan.yaml"), "--quiet", cwd=tmp_path)
    assert result.code == 2
    message, hint = result.stderr.strip().splitlines()[-2:]
    assert message.startswith("error: the doctor stopped training: loss_nan")
    assert "train.optimizer.lr" in hint or "learning rate" in hint
    run = tmp_path / "runs" / "broken_loss_nan"
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "halted"
    assert (run / "report.html").is_file() and (run / "diagnosis.json").is_file()
    assert "Traceback" not in result.stderr


def test_lr_find_suggests_a_rate_and_draws_the_plot(tmp_path: Path):
    result = layerwise(
        "lr-find",
        str(RECIPES / "digits_mlp.yaml"),
        "--steps",
        "40",
        "--plot",
        "lr.png",
        cwd=tmp_path,
    )
    assert result.code == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("suggested learning rate"))
    suggestion = float(line.split()[3])
    assert 1e-5 < suggestion < 1.0
    assert (tmp_path / "lr.png").stat().st_size > 1000
