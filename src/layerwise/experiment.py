"""From a recipe to a finished run folder: build data, model and Trainer; train; report.

The CLI verbs are thin calls into these functions, and so is anything a notebook wants to do
with a recipe. Every run is a folder (see `layerwise.runs.Run`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from layerwise.data import DatasetBundle, check_finite, clean_bundle, load_dataset, split
from layerwise.diagnose.findings import Diagnosis
from layerwise.errors import CheckpointError, DataError, RecipeError, did_you_mean
from layerwise.models import create_model
from layerwise.nn import init_weights, materialize, summary
from layerwise.recipe import Recipe, parse_recipe
from layerwise.report import (
    findings_html,
    plot_confusion_matrix,
    plot_curves,
    plot_samples,
    write_report,
)
from layerwise.runs import Run, load_weights
from layerwise.train import (
    OPTIMIZERS,
    SCHEDULES,
    EarlyStopping,
    MetricsLogger,
    ModelCheckpoint,
    ProgressBar,
    Trainer,
    seed_everything,
)


@dataclass
class Experiment:
    """Everything a recipe builds: the data, the model and the Trainer that fits it."""

    recipe: Recipe
    data: DatasetBundle
    model: nn.Module
    trainer: Trainer
    transform: Any = None  # per-sample training augmentation, or None


def build_data(recipe: Recipe) -> DatasetBundle:
    """Load the recipe's dataset, carve out a validation split when asked and none exists, then
    apply the recipe's data fixes (`data.impute`, `data.standardize`, …; see `data.clean`)."""
    bundle = load_dataset(recipe.data.name, **recipe.data.args)
    if recipe.data.val_fraction and bundle.val is None:
        x, y = bundle.train
        stratify = bundle.task == "classification"
        (x_train, y_train), val = split(
            x, y, recipe.data.val_fraction, seed=recipe.seed, stratify=stratify
        )
        bundle.train, bundle.val = (x_train, y_train), val
    cleaned, _ = clean_bundle(bundle, recipe.data, seed=recipe.seed)
    return cleaned


def build_model(recipe: Recipe, data: DatasetBundle) -> nn.Module:
    """Create the model, filling `num_classes` from the data when the family takes it."""
    args = dict(recipe.model.args)
    from layerwise.models import MODELS

    factory = MODELS.get(recipe.model.name)
    accepts = inspect.signature(factory).parameters
    if "num_classes" in accepts and "num_classes" not in args and data.num_classes:
        args["num_classes"] = data.num_classes
    if recipe.model.init != "default" and "init" in accepts:
        args.setdefault("init", recipe.model.init)
    model = create_model(recipe.model.name, **args)
    if recipe.model.init != "default" and "init" not in accepts:
        init_weights(model, recipe.model.init)
    # Build lazy layers now, so that loading a checkpoint is never undone by a lazy init later.
    materialize(model, data.train[0][:2])
    return model


def build_trainer(
    recipe: Recipe, model: nn.Module, data: DatasetBundle, callbacks: list | None = None
) -> Trainer:
    """A Trainer configured by `recipe.train`."""
    spec = recipe.train
    loss_args = dict(spec.loss.args)
    if spec.loss.name == "cross_entropy":
        loss_args["label_smoothing"] = spec.loss.label_smoothing
        loss_args["num_classes"] = data.num_classes  # checks class_weights' length up front
    if spec.loss.class_weights is not None:
        loss_args["class_weights"] = spec.loss.class_weights
        if spec.loss.class_weights == "balanced":
            loss_args["targets"] = data.train[1]
    optimizer_args = dict(spec.optimizer.args)
    if spec.optimizer.momentum:  # only optimizers with momentum accept these
        optimizer_args["momentum"] = spec.optimizer.momentum
    if spec.optimizer.nesterov:
        optimizer_args["nesterov"] = True
    schedule = None
    # `constant` is the Trainer's default; with args it is still built, so a stray one errors.
    if spec.schedule is not None and (spec.schedule.name != "constant" or spec.schedule.args):
        schedule = {"name": spec.schedule.name, **spec.schedule.args}
    # The Trainer makes its optimizer and schedule only when fitting starts: look their names up
    # now, so that a typo is reported before a run folder exists.
    OPTIMIZERS.get(spec.optimizer.name)
    if schedule is not None:
        SCHEDULES.get(spec.schedule.name)
    callbacks = list(callbacks or [])
    if spec.early_stopping is not None:
        es = spec.early_stopping
        callbacks.insert(
            0,
            EarlyStopping(es.monitor, es.patience, es.min_delta, es.mode, es.restore_best_weights),
        )
    trainer = Trainer(
        model,
        loss=spec.loss.name,
        loss_args=loss_args,
        optimizer=spec.optimizer.name,
        lr=spec.optimizer.lr,
        weight_decay=spec.optimizer.weight_decay,
        optimizer_args=optimizer_args,
        metrics=spec.metrics,
        schedule=schedule,
        callbacks=callbacks,
        device=spec.device,
        precision=spec.precision,
        channels_last=spec.channels_last,
        grad_clip=spec.grad_clip,
        l1=spec.l1,
        l2=spec.l2,
        seed=recipe.seed,
        num_classes=data.num_classes,
    )
    _check_monitors(recipe, trainer, has_val=data.val is not None)
    return trainer


def _check_monitors(recipe: Recipe, trainer: Trainer, has_val: bool) -> None:
    """A misspelt monitor would silently fall back to the loss: refuse it before training."""
    names = ["loss", *(metric.name for metric in trainer.metrics)]
    valid = names + [f"val_{name}" for name in names] if has_val else names
    fields = {"train.monitor": recipe.train.monitor}
    if recipe.train.early_stopping is not None:
        fields["train.early_stopping.monitor"] = recipe.train.early_stopping.monitor
    for field, monitor in fields.items():
        if monitor == "val_loss" and not has_val and field == "train.monitor":
            continue  # the default; without a validation split "best" means lowest train loss
        if monitor not in valid:
            raise RecipeError(
                f"'{field}' is '{monitor}', which training does not log",
                hint=did_you_mean(monitor, valid)
                + ("" if has_val else " (val_* needs data.val_fraction or a val split)"),
            )


def build(recipe: Recipe, callbacks: list | None = None) -> Experiment:
    """Seed, then build data, model and Trainer, in that order (the order fixes the RNG stream)."""
    seed_everything(recipe.seed)
    data = build_data(recipe)
    model = build_model(recipe, data)
    trainer = build_trainer(recipe, model, data, callbacks)
    return Experiment(recipe, data, model, trainer, _augmentations(recipe))


def train(
    recipe: Recipe,
    runs_root: str | Path = "runs",
    *,
    progress: bool = True,
    echo: Callable[[str], None] | None = print,
) -> tuple[Run, dict[str, float]]:
    """Train `recipe` into a new run folder; returns the run and its test metrics.

    Data, model and Trainer are built, and the data checked by the doctor, before the folder is
    made, so a recipe that cannot be built or data that cannot be trained on (unknown name,
    missing file, NaN inputs) leaves no half-made run behind. A run the doctor had to stop (a NaN
    loss) ends with status `halted`, its last good checkpoint and its diagnosis.
    """
    from layerwise.diagnose.doctor import write_data_profile

    experiment = build(recipe)
    data_diagnosis = check_experiment_data(experiment, echo=echo)
    run = Run.create(runs_root, recipe.name, recipe.to_yaml())
    if data_diagnosis is not None:
        write_data_profile(run, data_diagnosis.data_profile)
    return _fit_and_report(run, experiment, resume=False, progress=progress, echo=echo)


def check_experiment_data(
    experiment: Experiment,
    echo: Callable[[str], None] | None = print,
    *,
    refuse_fatal: bool = True,
) -> Diagnosis | None:
    """Run the doctor's data checks (if the recipe asks); refuse data no model can train on
    (unless `refuse_fatal` is False, as for `layerwise doctor --data-only`, which only reports)."""
    from layerwise.diagnose.doctor import check_data

    recipe = experiment.recipe
    if not recipe.doctor.data_checks:
        check_finite(experiment.data)  # no model can learn from NaN inputs, doctor or not
        return None
    diagnosis = check_data(
        experiment.data,
        num_params=sum(p.numel() for p in experiment.model.parameters()),
        recipe=recipe.model_dump(mode="json"),
        seed=recipe.seed,
        label_noise=recipe.doctor.label_noise,
    )
    fatal = [f for f in diagnosis.findings if f.severity == "fatal"]
    if fatal and refuse_fatal:
        error = DataError(
            f"dataset '{experiment.data.name}' cannot be trained on: {fatal[0].headline()}",
            hint=(fatal[0].remedies or ["fix the data"])[0]
            + " (or let `layerwise doctor RECIPE --auto-fix` do it)",
        )
        error.diagnosis = diagnosis
        raise error
    if echo is not None:
        for finding in diagnosis.findings:
            echo(f"doctor: {finding.headline()}")
    return diagnosis


def resume(
    run_ref: str | Path,
    runs_root: str | Path = "runs",
    *,
    recipe: Recipe | None = None,
    progress: bool = True,
    echo: Callable[[str], None] | None = print,
) -> tuple[Run, dict[str, float]]:
    """Continue a run from its last checkpoint, bit for bit; refuse if the recipe changed."""
    run = Run.open(run_ref, root=runs_root)
    saved = parse_recipe(run.read_recipe(), source=str(run.path / "recipe.yaml"))
    if recipe is not None and recipe.model_dump() != saved.model_dump():
        raise CheckpointError(
            f"the recipe differs from the one run '{run.name}' was started with: "
            + _recipe_diff(saved, recipe),
            hint="resume without changing the recipe (omit it, or undo the change), "
            "or start a new run",
        )
    info = run.info()
    if info.get("status") == "finished":
        return run, info.get("test_metrics") or {}
    return _fit_and_report(run, build(saved), resume=True, progress=progress, echo=echo)


def _fit_and_report(
    run: Run,
    experiment: Experiment,
    *,
    resume: bool,
    progress: bool,
    echo: Callable[[str], None] | None = print,
) -> tuple[Run, dict[str, float]]:
    recipe = experiment.recipe
    # After any callbacks the recipe adds (early stopping), as `build(recipe, callbacks)` would;
    # the doctor comes before the checkpoint, which must not save once the doctor halted the run.
    experiment.trainer.callbacks += [
        *_doctor_callbacks(run, experiment, echo),
        MetricsLogger(run),
        ModelCheckpoint(
            run, monitor=recipe.train.monitor, every_steps=recipe.train.checkpoint_every_steps
        ),
    ]
    if progress:
        experiment.trainer.callbacks.append(ProgressBar())
    if resume:
        _restore(run, experiment)
    else:
        run.truncate_metrics_after(-1)
    run.set_status("running")
    trainer, data = experiment.trainer, experiment.data
    try:
        trainer.fit(
            data.train,
            data.val,
            epochs=recipe.train.epochs,
            batch_size=recipe.data.batch_size,
            transform=experiment.transform,
            eval_batch_size=recipe.data.eval_batch_size,
        )
    except KeyboardInterrupt as interrupt:
        run.set_status("stopped")
        interrupt.run = run  # lets the CLI say how to resume
        raise
    except BaseException:
        run.set_status("failed")
        raise
    halted = trainer.stop_reason is not None and trainer.stop_reason.fatal
    if halted and run.has_checkpoint("last"):
        weights, _ = run.load_checkpoint("last")  # the last good weights, not the diverged ones
        _load_weights(experiment.model, weights, run.last_path)
    test_metrics = finish_run(run, experiment)
    return run, test_metrics


def _doctor_callbacks(
    run: Run, experiment: Experiment, echo: Callable[[str], None] | None
) -> list[Any]:
    from layerwise.diagnose.doctor import PROBES_FILE, Doctor, read_data_profile
    from layerwise.diagnose.probes import Probes

    spec, data = experiment.recipe.doctor, experiment.data
    if not spec.probes:
        experiment.trainer.doctor = False  # keep the Trainer from adding its own
        return []
    probes = Probes(every=spec.probe_every, path=run.path / PROBES_FILE)
    doctor = Doctor(
        probes,
        data_profile=read_data_profile(run),
        recipe=experiment.recipe.model_dump(mode="json"),
        task=data.task,
        num_classes=data.num_classes,
        echo=echo if spec.live else None,
        stop_on_fatal=spec.stop_on_fatal,
    )
    return [probes, doctor]


def _restore(run: Run, experiment: Experiment) -> None:
    if not run.has_checkpoint("last"):
        if run.last_path.exists() or run.state_path.exists():
            present = run.last_path if run.last_path.exists() else run.state_path
            raise CheckpointError(
                f"run '{run.name}' has {present.name} but not its partner "
                f"({'state.pt' if present == run.last_path else 'last.safetensors'})",
                hint="restore the missing file, or delete the checkpoints folder to start over",
            )
        run.truncate_metrics_after(-1)  # killed before the first checkpoint: start over
        return
    weights, state = run.load_checkpoint("last")
    _load_weights(experiment.model, weights, run.checkpoints_dir / "last.safetensors")
    experiment.trainer.load_state_dict(state)
    run.truncate_metrics_after(state["train_state"]["step"])


def _load_weights(model: nn.Module, weights: dict[str, torch.Tensor], source: Path) -> None:
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise CheckpointError(
            f"checkpoint {source} does not fit the model: {' '.join(first[:2])}",
            hint="the model in the recipe changed since this checkpoint was written",
        ) from exc


def _augmentations(recipe: Recipe) -> Any:
    if not recipe.data.augment:
        return None
    from layerwise.data import augmentations

    return augmentations(recipe.data.augment)


def finish_run(run: Run, experiment: Experiment) -> dict[str, float]:
    """Evaluate on the test split, diagnose, draw the plots, write the report, close the run."""
    from layerwise.diagnose.doctor import diagnose_run
    from layerwise.report.doctor_plots import write_doctor_plots

    trainer, data = experiment.trainer, experiment.data
    test_metrics: dict[str, float] = {}
    if data.test is not None:
        test_metrics = trainer.evaluate(data.test)
        run.append_metrics({"epoch": trainer.state.epoch, "split": "test", **test_metrics})
        if data.task == "classification":
            _classification_plots(run, trainer, data)
    plot_curves(run.read_metrics(), run.plots_dir / "curves.png")
    model_summary = summary(experiment.model, (1, *data.input_shape))
    halted = trainer.stop_reason is not None and trainer.stop_reason.fatal
    status = "halted" if halted else "finished"
    diagnosis = diagnose_run(run)
    run.set_status(
        status,
        test_metrics=test_metrics,
        epochs_done=trainer.state.epoch,
        findings=diagnosis.codes,
    )
    write_doctor_plots(run)
    sections = [("Doctor", findings_html(diagnosis))]
    write_report(run, summary_text=str(model_summary), extra_sections=sections)
    return test_metrics


def _classification_plots(run: Run, trainer: Trainer, data: DatasetBundle) -> None:
    from sklearn.metrics import confusion_matrix

    x_test, y_test = data.test
    predictions = trainer.predict(data.test).argmax(dim=1).numpy()
    labels = np.arange(data.num_classes)
    matrix = confusion_matrix(y_test.numpy(), predictions, labels=labels)
    plot_confusion_matrix(matrix, data.class_names, run.plots_dir / "confusion_matrix.png")
    if x_test.dim() == 4:
        plot_samples(
            x_test[:32],
            y_test[:32],
            preds=torch.from_numpy(predictions[:32]),
            class_names=data.class_names,
            path=run.plots_dir / "samples.png",
        )


def _recipe_diff(old: Recipe, new: Recipe) -> str:
    before, after = _flatten(old.model_dump(mode="json")), _flatten(new.model_dump(mode="json"))
    changes = [
        f"{key}: {before.get(key)!r} -> {after.get(key)!r}"
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key)
    ]
    return "; ".join(changes[:5]) + (" …" if len(changes) > 5 else "")


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = yaml.safe_dump(value).strip() if value == {} else value
    return flat


def load_experiment(run: Run, which: str = "last") -> Experiment:
    """Rebuild a run's data, model and Trainer and load its `best` (or `last`) weights."""
    recipe = parse_recipe(run.read_recipe(), source=str(run.path / "recipe.yaml"))
    experiment = build(recipe)
    if which == "best" and not run.has_checkpoint("best"):
        which = "last"
    weights, _ = load_weights(run.best_path if which == "best" else run.last_path)
    _load_weights(experiment.model, weights, run.checkpoints_dir / f"{which}.safetensors")
    return experiment


def evaluate_run(
    run_ref: str | Path,
    split_name: str = "test",
    which: str = "last",
    runs_root: str | Path = "runs",
) -> tuple[Run, dict[str, float]]:
    """Loss and metrics of a finished (or interrupted) run's weights on one data split."""
    run = Run.open(run_ref, root=runs_root)
    experiment = load_experiment(run, which)
    data = getattr(experiment.data, split_name, None)
    if data is None:
        raise CheckpointError(
            f"dataset '{experiment.recipe.data.name}' has no '{split_name}' split",
            hint="use --split train, val or test (val exists when data.val_fraction is set)",
        )
    metrics = experiment.trainer.evaluate(data)
    run.append_metrics({"split": split_name, "eval": which, **metrics})
    return run, metrics
