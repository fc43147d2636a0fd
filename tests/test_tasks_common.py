"""The run steps the task stories share (`layerwise.tasks.common`), each checked on its own."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from layerwise.errors import CheckpointError
from layerwise.recipe import parse_recipe
from layerwise.runs import Run
from layerwise.tasks.common import (
    checkpoint_to_load,
    close_run,
    log_and_checkpoint,
    restore_last,
    schedule_settings,
    trainer_settings,
)
from layerwise.train import MetricsLogger, ModelCheckpoint, ProgressBar, StopReason

RECIPE = "name: digits_mlp\nmodel: {name: mlp}\ndata: {name: digits}\ntrain: {epochs: 3}\n"


def _recipe(**train: object) -> object:
    text = RECIPE.replace("train: {epochs: 3}", "train: " + repr({"epochs": 3, **train}))
    return parse_recipe(text.replace("'", '"'))


def test_best_falls_back_to_last_and_no_checkpoint_is_an_error(tmp_path: Path) -> None:
    run = Run.create(tmp_path, "r", RECIPE)
    with pytest.raises(CheckpointError, match="has no checkpoint yet"):
        checkpoint_to_load(run, "best")
    run.save_checkpoint({"w": torch.zeros(1)}, {})
    assert checkpoint_to_load(run, "best") == "last"
    assert checkpoint_to_load(run, "last") == "last"
    run.save_checkpoint({"w": torch.ones(1)}, {}, best=True)
    assert checkpoint_to_load(run, "best") == "best"


def test_schedule_settings_leave_the_default_constant_out() -> None:
    assert schedule_settings(_recipe()) is None
    assert schedule_settings(_recipe(schedule={"name": "constant"})) is None
    stray = _recipe(schedule={"name": "constant", "args": {"factor": 2}})
    assert schedule_settings(stray) == {"name": "constant", "factor": 2}
    cosine = _recipe(schedule={"name": "cosine", "args": {"warmup_epochs": 1}})
    assert schedule_settings(cosine) == {"name": "cosine", "warmup_epochs": 1}


def test_trainer_settings_read_recipe_train() -> None:
    recipe = _recipe(optimizer={"name": "sgd", "lr": 0.5, "args": {"dampening": 0.1}}, threads=1)
    settings = trainer_settings(recipe, callbacks=("cb",))
    assert settings["optimizer"] == "sgd" and settings["lr"] == 0.5
    assert settings["optimizer_args"] == {"dampening": 0.1}
    assert settings["callbacks"] == ["cb"] and settings["threads"] == 1
    assert settings["seed"] == recipe.seed and settings["progress"] is False
    settings["optimizer_args"]["x"] = 1  # a copy: the recipe keeps its own args
    assert recipe.train.optimizer.args == {"dampening": 0.1}


def test_log_and_checkpoint_watch_the_given_monitor(tmp_path: Path) -> None:
    run = Run.create(tmp_path, "r", RECIPE)
    logger, checkpoints = log_and_checkpoint(run, _recipe(checkpoint_every_steps=7), "loss", False)
    assert isinstance(logger, MetricsLogger) and isinstance(checkpoints, ModelCheckpoint)
    assert checkpoints.monitor == "loss" and checkpoints.every_steps == 7
    shown = log_and_checkpoint(run, _recipe(), "val_loss", True)
    assert isinstance(shown[-1], ProgressBar) and shown[1].every_steps is None


def _trainer(epoch: int = 2, stop_reason: StopReason | None = None) -> SimpleNamespace:
    """What the helpers read of a Trainer (a real fit would only add seconds of warm-up)."""
    loaded: list[dict] = []
    return SimpleNamespace(
        callbacks=[],
        history=[],
        stop_reason=stop_reason,
        state=SimpleNamespace(epoch=epoch),
        loaded=loaded,
        load_state_dict=loaded.append,
    )


def test_restore_last_resumes_from_the_checkpoint_or_starts_over(tmp_path: Path) -> None:
    run = Run.create(tmp_path, "r", RECIPE)
    trained = torch.nn.Linear(2, 1)
    run.append_metrics({"epoch": 1, "step": 2, "split": "train", "loss": 1.0})
    run.save_checkpoint(trained.state_dict(), {"train_state": {"step": 2}})
    run.append_metrics({"epoch": 2, "step": 5, "split": "train", "loss": 0.5})  # after it
    fresh, trainer = torch.nn.Linear(2, 1), _trainer()
    restore_last(run, fresh, trainer, resume=True)
    assert torch.equal(fresh.weight, trained.weight)
    assert trainer.loaded == [{"train_state": {"step": 2}}]
    assert [m["step"] for m in run.read_metrics()] == [2]
    restore_last(run, fresh, _trainer(), resume=False)  # a new run: the log starts over
    assert run.read_metrics() == []


def test_close_run_marks_a_fatal_stop_halted(tmp_path: Path) -> None:
    run = Run.create(tmp_path, "r", RECIPE)
    assert close_run(run, _trainer(), {"loss": 0.25}) is None  # no doctor watched
    info = run.info()
    assert info["status"] == "finished" and info["test_metrics"] == {"loss": 0.25}
    assert info["epochs_done"] == 2 and info["findings"] == []
    assert not run.diagnosis_path.exists()
    close_run(run, _trainer(stop_reason=StopReason("doctor", "loss is NaN", fatal=True)), {})
    assert run.info()["status"] == "halted"
    close_run(run, _trainer(stop_reason=StopReason("EarlyStopping", "no gain")), {})
    assert run.info()["status"] == "finished"
