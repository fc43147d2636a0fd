"""What the task stories (GAN, RL, recommender, sequence) do alike around their run folder.

Each task trains through its own Trainer and finishes with its own scores and plots, but some
steps around that are one procedure, kept here once so a fix to it reaches every task:

- the Trainer arguments read from `recipe.train` (`trainer_settings`);
- the metrics log and checkpoints (`log_and_checkpoint`);
- a resumed run picks up its last checkpoint, a new one starts its metrics log over
  (`restore_last`);
- a trained run is diagnosed and given its final status by one rule (`close_run`);
- a trained run's weights come from `best`, else `last` (`checkpoint_to_load`);
- the recipe's doctor as callbacks for the task's Trainer (`task_doctor`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from layerwise.diagnose.doctor import PROBES_FILE, TASK_FIELD, Doctor, doctor_callbacks
from layerwise.diagnose.findings import Diagnosis
from layerwise.errors import CheckpointError
from layerwise.recipe import Recipe
from layerwise.runs import Run
from layerwise.train import Callback, MetricsLogger, ModelCheckpoint, ProgressBar, Trainer


def schedule_settings(recipe: Recipe) -> dict[str, Any] | None:
    """The Trainer's `schedule` argument for `recipe.train.schedule`: None for the Trainer's
    default (`constant` without args); with args a `constant` is still built, so a stray
    argument errors instead of being ignored."""
    schedule = recipe.train.schedule
    if schedule is None or (schedule.name == "constant" and not schedule.args):
        return None
    return {"name": schedule.name, **schedule.args}


def trainer_settings(recipe: Recipe, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """The Trainer arguments every task reads from `recipe.train` alike: optimizer, learning
    rate, weight decay, optimizer args, schedule, device, clipping, seed, threads, and the
    `callbacks` (the task adds its progress bar there when wanted). Precision, the doctor, loss
    and metrics differ between tasks and are left to each."""
    train = recipe.train
    return dict(
        optimizer=train.optimizer.name,
        lr=train.optimizer.lr,
        weight_decay=train.optimizer.weight_decay,
        optimizer_args=dict(train.optimizer.args),
        schedule=schedule_settings(recipe),
        callbacks=list(callbacks),
        device=train.device,
        grad_clip=train.grad_clip,
        seed=recipe.seed,
        threads=train.threads,
        progress=False,
    )


def log_and_checkpoint(run: Run, recipe: Recipe, monitor: str, progress: bool) -> list[Callback]:
    """The metrics log and the checkpoints (`best` by `monitor`, `last` at each epoch end and
    every `train.checkpoint_every_steps`) of a task run, and a progress bar when wanted."""
    checkpoints = ModelCheckpoint(
        run, monitor=monitor, every_steps=recipe.train.checkpoint_every_steps
    )
    return [MetricsLogger(run), checkpoints] + ([ProgressBar()] if progress else [])


def task_doctor(
    recipe: Recipe,
    run: Run,
    task: str,
    echo: Callable[[str], None] | None,
    *,
    data_profile: dict[str, Any] | None = None,
    num_classes: int | None = None,
) -> list[Callback]:
    """The recipe's doctor for a task's Trainer (built with `doctor=False`): probes every
    `doctor.probe_every` steps into the run's probes.jsonl, so `layerwise doctor RUN` and a
    resumed run read the whole log, and the training rules told the task's own `task` and the
    recipe; nothing when `doctor.probes` is off.

    It never runs the data checks at fit start. `Trainer(doctor=True)` would (`default_doctor`),
    on whatever `(x, y)` tensors the batcher holds, as a classification or regression table; a
    task's batches are identities, user/item pairs or token sequences, so each task checks what
    fits it before building the Trainer and hands the profile here as `data_profile`."""
    spec = recipe.doctor
    if not spec.probes:
        return []
    run.set_status("running", **{TASK_FIELD: task})  # so `layerwise doctor RUN` judges it alike
    return doctor_callbacks(
        every=spec.probe_every,
        path=run.path / PROBES_FILE,
        data_profile=data_profile,
        recipe=recipe.model_dump(mode="json"),
        task=task,
        num_classes=num_classes,
        echo=echo if spec.live else None,
        stop_on_fatal=spec.stop_on_fatal,
        check_data=False,
    )


def restore_last(run: Run, model: nn.Module, trainer: Trainer, resume: bool) -> None:
    """When resuming, load the run's last checkpoint into `model` and `trainer` and drop the
    metrics logged after it; otherwise (a new run, or one killed before its first checkpoint)
    start the metrics log over."""
    if resume and run.has_checkpoint("last"):
        weights, state = run.load_checkpoint("last", quarantine=True)
        model.load_state_dict(weights)
        trainer.load_state_dict(state)
        run.truncate_metrics_after(state["train_state"]["step"])
    else:
        run.truncate_metrics_after(-1)


def close_run(run: Run, trainer: Trainer, metrics: dict[str, float]) -> Diagnosis | None:
    """Diagnose the run (when the doctor watched it), then set its final status: `halted` when
    the fit was stopped for a fatal reason, else `finished`, with the test metrics and the
    findings. Returns the diagnosis for the report (None without a doctor)."""
    doctor = next((c for c in trainer.callbacks if isinstance(c, Doctor)), None)
    diagnosis = doctor.diagnose(trainer.history) if doctor is not None else None
    if diagnosis is not None:
        run.write_diagnosis(diagnosis.to_dict())
    halted = trainer.stop_reason is not None and trainer.stop_reason.fatal
    run.set_status(
        "halted" if halted else "finished",
        test_metrics=metrics,
        epochs_done=trainer.state.epoch,
        findings=diagnosis.codes if diagnosis is not None else [],
    )
    return diagnosis


def checkpoint_to_load(run: Run, which: str = "best") -> str:
    """The checkpoint to read a trained run's weights from: `which`, except that `best` falls
    back to `last` (a run without a validation score keeps no `best`). A run with neither is a
    `CheckpointError`."""
    if which == "best" and not run.has_checkpoint("best"):
        which = "last"
    if not run.has_checkpoint(which):
        raise CheckpointError(
            f"run '{run.name}' has no checkpoint yet",
            hint="train it first (or let it run until its first epoch ends)",
        )
    return which
