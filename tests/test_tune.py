"""Hyperparameter search (`layerwise tune`): the search space, pruning, and a killed search that
resumes. The search space's bad-input cases are in tests/test_cli_errors.py's catalog."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
import torch
import yaml
from sklearn.datasets import load_digits
from typer.testing import CliRunner

from layerwise.cli import app
from layerwise.diagnose.doctor import doctor_callbacks
from layerwise.errors import RecipeError
from layerwise.recipe import HOPELESS_FINDINGS, parse_recipe
from layerwise.train import Trainer
from layerwise.tune.pruning import TrialPruning
from layerwise.tune.search import tune
from layerwise.tune.space import decode, suggest

SPACE = {
    "train.optimizer.lr": {"log_uniform": [1e-4, 1e-1]},
    "model.args.dropout": {"uniform": [0.0, 0.5]},
    "data.batch_size": {"int": [16, 64]},
    "model.args.hidden": {"choice": [[16], [32, 16]]},
}
RECIPE = """\
name: tiny_tune
data: {name: digits, batch_size: 32, val_fraction: 0.25, args: {subset: 240}}
model: {name: mlp, args: {hidden: [16]}}
train: {epochs: 1, monitor: val_accuracy, threads: 1}
doctor: {label_noise: false, data_checks: false}
track: {tensorboard: false}
tune:
  metric: val_accuracy
  space:
    train.optimizer.lr: {log_uniform: [0.001, 0.1]}
    model.args.hidden: {choice: [[16], [24]]}
"""


@pytest.fixture(autouse=True)
def _quiet_optuna():
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_suggested_points_lie_in_the_space_and_choices_come_back_as_lists():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        params = suggest(trial, SPACE)
        assert 1e-4 <= params["train.optimizer.lr"] <= 1e-1
        assert 0.0 <= params["model.args.dropout"] <= 0.5
        assert isinstance(params["data.batch_size"], int) and 16 <= params["data.batch_size"] <= 64
        assert params["model.args.hidden"] in ([16], [32, 16])
        assert decode(trial.params, SPACE) == params
        study.tell(trial, 0.0)


@pytest.mark.parametrize(
    ("dimension", "culprit"),
    [
        ({"int": [1.5, 4]}, "integer bounds"),
        ({"uniform": [1, 1]}, "low < high"),
        ({"choice": []}, "non-empty list"),
        ({"uniform": [0, 1], "choice": [1]}, "one mapping"),
    ],
)
def test_bad_dimensions_name_the_key(dimension, culprit):
    text = "name: t\nmodel: {name: mlp}\n" + yaml.safe_dump(
        {"tune": {"space": {"train.l2": dimension}}}
    )
    with pytest.raises(RecipeError) as raised:
        parse_recipe(text)
    assert "tune.space.train.l2" in raised.value.message and culprit in raised.value.message


def _digits(n: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = load_digits(return_X_y=True)
    return torch.tensor(x[:n] / 16.0, dtype=torch.float32), torch.tensor(y[:n])


def _fit(
    lr: float, prune_on: tuple[str, ...], optimizer: str = "sgd"
) -> tuple[TrialPruning, Trainer]:
    study = optuna.create_study(direction="maximize")
    pruning = TrialPruning(study.ask(), "val_accuracy", median=False, prune_on=prune_on)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    trainer = Trainer(
        model,
        optimizer=optimizer,
        lr=lr,
        doctor=False,
        callbacks=[*doctor_callbacks(echo=None, stop_on_fatal=False), pruning],
        progress=False,
        seed=0,
    )
    x, y = _digits()
    trainer.fit((x[:192], y[:192]), (x[192:], y[192:]), epochs=3, batch_size=16)
    return pruning, trainer


def test_the_doctor_prunes_a_diverging_trial_within_its_first_epoch():
    pruning, trainer = _fit(lr=1e4, prune_on=HOPELESS_FINDINGS)
    assert pruning.pruned_by in {f"doctor:{c}" for c in ("loss_nan", "exploding_gradients")}
    assert trainer.state.epoch == 0 and trainer.state.step < 12  # 12 steps make an epoch
    assert trainer.stop_reason.source == "tune"


def test_without_doctor_pruning_the_same_trial_trains_every_epoch():
    pruning, trainer = _fit(lr=1e4, prune_on=())
    assert pruning.pruned_by is None and trainer.state.epoch == 3 and len(pruning.values) == 3


def test_a_healthy_trial_is_not_pruned_by_the_doctor():
    pruning, trainer = _fit(lr=0.01, prune_on=HOPELESS_FINDINGS, optimizer="adam")
    assert pruning.pruned_by is None and trainer.state.epoch == 3
    assert pruning.values[-1] > 0.5


@pytest.mark.slow
def test_a_search_killed_mid_trial_resumes_and_finishes(tmp_path):
    """SIGKILL while trial 1 trains; the same command continues: trial 1's point is tried again,
    the study ends with the asked number of finished trials, and the best recipe validates.
    A finished study is not trained again, and a changed search is refused."""
    (tmp_path / "tiny.yaml").write_text(RECIPE)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "layerwise.cli", "tune", "tiny.yaml", "--trials", "2"]
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    trial_run = tmp_path / "runs" / "tiny_tune-trial1"
    deadline = time.monotonic() + 600
    while not (trial_run / "run.json").exists() and process.poll() is None:
        assert time.monotonic() < deadline, "trial 1 never started"
        time.sleep(0.05)
    assert process.poll() is None, process.stderr.read().decode()
    process.send_signal(signal.SIGKILL)
    process.wait()

    db = tmp_path / "runs" / "tune" / "tiny_tune" / "study.sqlite3"
    killed = optuna.load_study(study_name="tiny_tune", storage=f"sqlite:///{db}")
    assert [t.state.name for t in killed.trials][1] == "RUNNING"
    assert killed.trials[0].state.name in ("COMPLETE", "PRUNED")
    killed_params = killed.trials[1].params

    args = ["tune", str(tmp_path / "tiny.yaml"), "--trials", "2"]
    args += ["--runs-dir", str(tmp_path / "runs")]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "trial 1 was interrupted; it is tried again" in result.output
    assert "continuing study 'tiny_tune': 1 of 2 trials finished" in result.output
    study = optuna.load_study(study_name="tiny_tune", storage=f"sqlite:///{db}")
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 2 and study.trials[1].state.name == "FAIL"
    retry = study.trials[2]
    assert retry.params == killed_params and retry.user_attrs["retry_of"] == 1
    for t in finished:  # each finished trial is a run folder with its report, linked back
        run = tmp_path / "runs" / t.user_attrs["run"]
        assert (run / "report.html").exists()
        assert yaml.safe_load((run / "run.json").read_text())["tune"]["trial"] == t.number
    best = tmp_path / "runs" / "tune" / "tiny_tune" / "best.yaml"
    assert f"best recipe: {best}" in result.output.replace("\n", "")
    tuned = parse_recipe(best.read_text())
    assert tuned.tune is None and tuned.name == "tiny_tune-tuned"
    assert tuned.train.optimizer.lr == pytest.approx(study.best_params["train.optimizer.lr"])

    again = tune(tmp_path / "tiny.yaml", trials=2, runs_root=tmp_path / "runs", echo=None)
    assert [r.number for r in again.rows] == [0, 1, 2]  # nothing new trained
    changed = (tmp_path / "tiny.yaml").read_text().replace("[0.001, 0.1]", "[0.01, 0.1]")
    (tmp_path / "tiny.yaml").write_text(changed)
    with pytest.raises(RecipeError, match="another search"):
        tune(tmp_path / "tiny.yaml", trials=3, runs_root=tmp_path / "runs", echo=None)
