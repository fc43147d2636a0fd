"""From a recipe to a finished run folder: build data, model, callbacks and Trainer; train; report.

The CLI verbs are thin calls into these functions, and so is anything a notebook wants to do
with a recipe. Every run is a folder (see `layerwise.runs.Run`). Read `train` and `resume` first:
they are the whole story, told by the functions below them in the order they are called.
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from layerwise.data import DatasetBundle, check_finite, clean_bundle, load_dataset, split
from layerwise.data.preprocess import Preprocess, fit_preprocess, load_preprocess
from layerwise.diagnose.doctor import (
    PROBES_FILE,
    Doctor,
    check_data,
    doctor_callbacks,
    read_data_profile,
    write_data_profile,
)
from layerwise.diagnose.findings import Diagnosis
from layerwise.errors import (
    CheckpointError,
    DataError,
    RecipeError,
    ShapeError,
    did_you_mean,
)
from layerwise.models import MODELS, create_model
from layerwise.nn import call_model, init_weights, materialize, summary
from layerwise.recipe import Recipe
from layerwise.report import (
    plot_confusion_matrix,
    plot_run_curves,
    plot_samples,
    write_report,
)
from layerwise.report.doctor_plots import write_doctor_plots
from layerwise.runs import CheckpointFallbackWarning, Run
from layerwise.tasks.common import schedule_settings
from layerwise.tasks.dispatch import task_kind, task_trainer
from layerwise.train import (
    OPTIMIZERS,
    SCHEDULES,
    Callback,
    EarlyStopping,
    MetricsLogger,
    ModelCheckpoint,
    ProgressBar,
    Trainer,
    create_metric,
    distributed,
    seed_everything,
)
from layerwise.train.callbacks.stop_on_signal import guarded_fit
from layerwise.train.losses import align_target
from layerwise.transfer.recipe import (
    backbone_callbacks,
    backbone_features,
    backbone_optimizer,
    build_backbone_model,
)

Echo = Callable[[str], None] | None


@dataclass
class Experiment:
    """Everything a recipe builds: the data, the model and the Trainer (with its callbacks)."""

    recipe: Recipe
    data: DatasetBundle
    model: nn.Module
    trainer: Trainer
    transform: Any = None  # per-sample training augmentation, or None
    run: Run | None = None  # the run folder it trains into, if any

    @property
    def doctor(self) -> Doctor | None:
        return next((c for c in self.trainer.callbacks if isinstance(c, Doctor)), None)


# ------------------------------------------------------------------------------ the story
def train(
    recipe: Recipe,
    runs_root: str | Path = "runs",
    *,
    progress: bool = True,
    echo: Echo = print,
    callbacks: Sequence[Callback] = (),
) -> tuple[Run, dict[str, float]]:
    """Train `recipe` into a new run folder; returns the run and its test metrics.

    Data and model are built, and the data checked by the doctor, before the folder is made, so a
    recipe that cannot be built or data that cannot be trained on (unknown name, missing file,
    NaN inputs) leaves no half-made run behind. A run the doctor had to stop (a NaN loss) ends
    with status `halted`, its last good checkpoint and its diagnosis. `callbacks` are added to
    the ones the recipe asks for. A recipe of a task with its own batches and step (translation,
    detection, GAN, RL…: `layerwise.tasks.dispatch`) is trained by that task, as by the CLI.
    """
    check_distributed(recipe)
    task_train = task_trainer(recipe)  # translation, LM, detection, recommender, faces, GAN, RL
    if task_train is not None:
        return task_train(recipe, runs_root, progress=progress, echo=echo, callbacks=callbacks)
    seed_everything(recipe.seed)
    data, preprocess = prepare_data(recipe)
    model = build_model(recipe, data)
    build_trainer(recipe, model, data)  # a misspelt optimizer, schedule or monitor stops here
    if not distributed.is_main_process():  # ranks > 0 train in step with rank 0, writing nothing
        return _fit_on_worker(_worker_experiment(recipe, callbacks, data, model))
    data_diagnosis = check_recipe_data(recipe, data, model, echo=echo)
    run = Run.create(runs_root, recipe.name, recipe.to_yaml())
    preprocess.save(run.path)  # what predict and evaluate apply to new files
    if getattr(data, "pipeline", None) is not None:
        data.pipeline.save(run.path)  # text_pipeline.json: predict reads raw text through it
    if getattr(data, "table", None) is not None:
        data.table.save(run.path)  # table.json: predict encodes raw mixed-table rows with it
    profile = data_diagnosis.data_profile if data_diagnosis is not None else None
    if profile is not None:
        write_data_profile(run, profile)
    experiment = build(
        recipe,
        run,
        data=data,
        model=model,
        data_profile=profile,
        progress=progress,
        echo=echo,
        callbacks=callbacks,
    )
    run.truncate_metrics_after(-1)
    return fit_and_finish(experiment)


def resume(
    run_ref: str | Path,
    runs_root: str | Path = "runs",
    *,
    recipe: Recipe | None = None,
    progress: bool = True,
    echo: Echo = print,
    callbacks: Sequence[Callback] = (),
) -> tuple[Run, dict[str, float]]:
    """Continue a run from its last checkpoint, bit for bit; refuse if the recipe changed."""
    run = Run.open(run_ref, root=runs_root)
    saved = run.recipe()
    check_distributed(saved)
    task_train = task_trainer(saved)
    if task_train is not None:
        return task_train(
            recipe, runs_root, resume=run.path, progress=progress, echo=echo, callbacks=callbacks
        )
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
    if not distributed.is_main_process():
        return _resume_on_worker(run, saved, callbacks)
    experiment = build(
        saved,
        run,
        data_profile=read_data_profile(run),
        progress=progress,
        echo=echo,
        callbacks=callbacks,
    )
    restore_last_checkpoint(experiment, echo)
    return fit_and_finish(experiment)


# ------------------------------------------------------------------------------ building
def build(
    recipe: Recipe,
    run: Run | None = None,
    *,
    data: DatasetBundle | None = None,
    model: nn.Module | None = None,
    data_profile: dict[str, Any] | None = None,
    progress: bool = False,
    echo: Echo = None,
    callbacks: Sequence[Callback] = (),
) -> Experiment:
    """Seed, then data, model, callbacks and Trainer, in that order (the order fixes the RNG
    stream). Data and model already built from this recipe can be passed in.

    Every callback of the experiment is made here: early stopping as the recipe asks, `callbacks`,
    and, with a `run` to train into, the doctor (fed `data_profile`, the doctor's data checks),
    the metrics log, the checkpoints and, with `progress`, the progress bar. Without a run the
    Trainer is bare (no doctor), as the LR finder and evaluation want it.
    """
    seed_everything(recipe.seed)
    data = data if data is not None else build_data(recipe)
    model = model if model is not None else build_model(recipe, data)
    if run is not None:  # `backbone.mode: features`: train the head on cached embeddings
        data = backbone_features(recipe, model, data, run.path)
    everything = [*build_callbacks(recipe, data, run, data_profile, echo), *callbacks]
    if progress:
        everything.append(ProgressBar())
    trainer = build_trainer(recipe, model, data, everything)
    return Experiment(recipe, data, model, trainer, _augmentations(recipe), run)


def build_data(recipe: Recipe) -> DatasetBundle:
    """Load the recipe's dataset, carve out a validation split when asked and none exists, then
    apply the recipe's data fixes (`data.impute`, `data.standardize`, …; see `data.clean`)."""
    return prepare_data(recipe)[0]


def prepare_data(recipe: Recipe) -> tuple[DatasetBundle, Preprocess]:
    """`build_data`, and the fitted preprocessing that turns new raw inputs into model inputs
    the same way (saved with a run as `preprocess.json`)."""
    bundle = load_dataset(recipe.data.name, **recipe.data.args)
    if recipe.data.val_fraction and bundle.val is None:
        x, y = bundle.train
        stratify = bundle.task == "classification"
        (x_train, y_train), val = split(
            x, y, recipe.data.val_fraction, seed=recipe.seed, stratify=stratify
        )
        bundle.train, bundle.val = (x_train, y_train), val
    cleaned, report = clean_bundle(bundle, recipe.data, seed=recipe.seed)
    return cleaned, fit_preprocess(bundle, report, cleaned)


def build_model(recipe: Recipe, data: DatasetBundle) -> nn.Module:
    """Create the model, filling `num_classes` from the data when the family takes it (or load
    the recipe's pretrained `backbone` and give it a head for the data's classes)."""
    if recipe.backbone is not None:
        with _refuse_oversized(recipe):
            model = build_backbone_model(recipe, data)
            materialize(model, data.train[0][:2])
        check_model_fits(recipe, data, model)
        return model
    args = dict(recipe.model.args)
    accepts = inspect.signature(MODELS.get(recipe.model.name)).parameters
    if "num_classes" in accepts and "num_classes" not in args and data.num_classes:
        args["num_classes"] = data.num_classes
    for key, value in getattr(data, "model_args", {}).items():  # e.g. a text vocabulary's size
        if key in accepts and key not in args:
            args[key] = value
    if recipe.model.init != "default" and "init" in accepts:
        args.setdefault("init", recipe.model.init)
    with _refuse_oversized(recipe):
        model = create_model(recipe.model.name, **args)
        if recipe.model.init != "default" and "init" not in accepts:
            init_weights(model, recipe.model.init)
        # Build lazy layers now, so that loading a checkpoint is never undone by a lazy init later.
        materialize(model, data.train[0][:2])
    check_model_fits(recipe, data, model)
    return model


@contextlib.contextmanager
def _refuse_oversized(recipe: Recipe):
    """A width of 10^12 in model.args fails in PyTorch's allocator ("can't allocate memory") or
    its integer conversion ("Overflow when unpacking long"): name the recipe field instead."""
    try:
        yield
    except (MemoryError, RuntimeError, TypeError, OverflowError) as exc:
        text = str(exc)
        if isinstance(exc, RuntimeError) and "allocate" not in text:
            raise
        if isinstance(exc, TypeError) and "Overflow" not in text:
            raise
        shown = ", ".join(f"{key}: {value!r}"[:60] for key, value in recipe.model.args.items())
        raise RecipeError(
            f"model '{recipe.model.name}' ({shown}) is too large to build: "
            + (
                "its weights do not fit in memory"
                if "allocate" in text or isinstance(exc, MemoryError)
                else "a size does not fit in 64 bits"
            ),
            hint="use smaller sizes in model.args (layer widths, channels, embedding sizes)",
        ) from exc


def check_model_fits(recipe: Recipe, data: DatasetBundle, model: nn.Module) -> None:
    """Refuse a model whose output cannot train on the data, before any run folder is made.

    Labels must lie in 0..num_classes-1; with `cross_entropy` the model must output one score per
    class (a narrower head fails deep in PyTorch on the first batch, a wider one at the metrics);
    the other built-in losses need the output shaped like the targets. Checked on a dry forward of
    two training rows in eval mode without gradients, which draws no random numbers and moves no
    batch-norm statistic, so a run stays bit-for-bit the same.
    """
    x, y = data.train
    if data.task == "classification":
        for name in ("train", "val", "test"):
            part = getattr(data, name)
            if part is not None and part[1] is not None:
                _check_labels(data, name, part[1])
    loss = recipe.train.loss.name
    if y is None or loss not in ("cross_entropy", "bce", "mse", "mae", "huber"):
        return
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            output = call_model(model, x[:2].to(_device_of(model)))
    finally:
        for module, training in modes:
            module.training = training
    if not isinstance(output, torch.Tensor):
        return
    if loss == "cross_entropy" and data.task == "classification":
        width = output.shape[1] if output.dim() == 2 else None
        if width != data.num_classes:
            field = (
                "model.args.num_classes"
                if "num_classes" in recipe.model.args
                else f"model '{recipe.model.name}'"
            )
            raise RecipeError(
                f"{field}: the model outputs {tuple(output.shape[1:])} per sample, but "
                f"dataset '{data.name}' has {data.num_classes} classes (labels 0.."
                f"{data.num_classes - 1}) and cross_entropy needs one score per class",
                hint="leave model.args.num_classes out to take it from the dataset",
            )
        return
    try:
        align_target(output, y[:2].to(output.device))
    except ShapeError as exc:
        raise ShapeError(
            f"train.loss.name is '{loss}', but the model's output of shape "
            f"{tuple(output.shape[1:])} per sample does not fit the targets of dataset "
            f"'{data.name}' (shape {tuple(y.shape[1:])} per sample)",
            hint="set model.args.num_classes to the target width (1 for bce), or use "
            "train.loss.name: cross_entropy for class labels",
        ) from exc


def _check_labels(data: DatasetBundle, split_name: str, labels: torch.Tensor) -> None:
    if labels.numel() == 0 or labels.is_floating_point():
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= data.num_classes:
        raise DataError(
            f"dataset '{data.name}': {split_name} labels run from {low} to {high}, outside its "
            f"{data.num_classes} classes 0..{data.num_classes - 1}",
            hint="class labels must be integers 0..C-1; renumber them or fix the dataset",
        )


def _device_of(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def check_recipe_data(
    recipe: Recipe,
    data: DatasetBundle,
    model: nn.Module,
    *,
    echo: Echo = print,
    refuse_fatal: bool = True,
) -> Diagnosis | None:
    """Run the doctor's data checks (if the recipe asks); refuse data no model can train on
    (unless `refuse_fatal` is False, as for `layerwise doctor --data-only`, which only reports)."""
    if not recipe.doctor.data_checks:
        check_finite(data)  # no model can learn from NaN inputs, doctor or not
        return None
    diagnosis = check_data(
        data,
        # Only trainable parameters can memorise the data; a frozen backbone cannot.
        num_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        recipe=recipe.model_dump(mode="json"),
        seed=recipe.seed,
        label_noise=recipe.doctor.label_noise,
    )
    fatal = [f for f in diagnosis.findings if f.severity == "fatal"]
    if fatal and refuse_fatal:
        raise DataError(
            f"dataset '{data.name}' cannot be trained on: {fatal[0].headline()}",
            hint=(fatal[0].remedies or ["fix the data"])[0]
            + " (or let `layerwise doctor RECIPE --auto-fix` do it)",
            diagnosis=diagnosis,
        )
    if echo is not None:
        for finding in diagnosis.findings:
            echo(f"doctor: {finding.headline()}")
    return diagnosis


def build_callbacks(
    recipe: Recipe,
    data: DatasetBundle,
    run: Run | None,
    data_profile: dict[str, Any] | None,
    echo: Echo,
) -> list[Callback]:
    """The recipe's callbacks; their `order` decides when each runs, not their place here."""
    callbacks: list[Callback] = []
    if recipe.train.early_stopping is not None:
        es = recipe.train.early_stopping
        callbacks.append(
            EarlyStopping(es.monitor, es.patience, es.min_delta, es.mode, es.restore_best_weights)
        )
    callbacks += backbone_callbacks(recipe)  # gradual unfreezing, when asked
    if run is None:
        return callbacks
    spec = recipe.doctor
    callbacks += doctor_callbacks(
        probes=spec.probes,
        every=spec.probe_every,
        path=run.path / PROBES_FILE,
        data_profile=data_profile,
        recipe=recipe.model_dump(mode="json"),
        task=data.task,
        num_classes=data.num_classes,
        echo=echo if spec.live else None,
        stop_on_fatal=spec.stop_on_fatal,
    )
    callbacks.append(MetricsLogger(run))
    callbacks.append(
        ModelCheckpoint(
            run, monitor=recipe.train.monitor, every_steps=recipe.train.checkpoint_every_steps
        )
    )
    return callbacks + tracking_callbacks(recipe, run)


def tracking_callbacks(recipe: Recipe, run: Run) -> list[Callback]:
    """TensorBoard event files in `run/tensorboard/` (when tensorboard is installed, unless
    `track.tensorboard: false`) and MLflow logging (`track.mlflow: true`)."""
    from layerwise.train.callbacks.tensorboard import TensorBoardLogger, tensorboard_available

    track, callbacks = recipe.track, []
    if track.tensorboard and tensorboard_available():
        callbacks.append(
            TensorBoardLogger(
                run.path / "tensorboard", histograms=track.histograms, recipe_text=recipe.to_yaml()
            )
        )
    if track.mlflow:
        from layerwise.train.callbacks.mlflow_logger import MLflowLogger

        uri = track.mlflow_uri or (run.path.parent / "mlruns").resolve().as_uri()
        params = _flatten(recipe.model_dump(mode="json"))
        callbacks.append(MLflowLogger(uri, run.name, params))
    return callbacks


def _check_tracking(recipe: Recipe) -> None:
    """`track.mlflow: true` without mlflow installed is refused before a run folder exists."""
    import importlib.util

    if recipe.track.mlflow and importlib.util.find_spec("mlflow") is None:
        raise RecipeError(
            "track.mlflow is true, but the mlflow package is not installed",
            hint="pip install mlflow, or set track.mlflow: false",
        )


def build_trainer(
    recipe: Recipe, model: nn.Module, data: DatasetBundle, callbacks: Sequence[Callback] = ()
) -> Trainer:
    """A Trainer configured by `recipe.train`, with `callbacks` (the doctor only if among them)."""
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
    schedule = schedule_settings(recipe)  # None for the Trainer's default, constant
    # The Trainer makes its optimizer and schedule only when fitting starts: look their names up
    # now, so that a typo is reported before a run folder exists.
    OPTIMIZERS.get(spec.optimizer.name)
    if schedule is not None:
        SCHEDULES.get(spec.schedule.name)
    trainer = Trainer(
        model,
        loss=spec.loss.name,
        loss_args=loss_args,
        optimizer=backbone_optimizer(recipe, model) or spec.optimizer.name,
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
        doctor=False,  # the recipe's doctor, if any, is among `callbacks`
        threads=spec.threads,
        progress=False,  # and so is the progress bar, when wanted
    )
    _check_monitors(recipe, trainer, has_val=data.val is not None)
    _check_tracking(recipe)
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


def _augmentations(recipe: Recipe) -> Any:
    if not recipe.data.augment:
        return None
    from layerwise.data import augmentations

    return augmentations(recipe.data.augment)


# ------------------------------------------------------------------------------ training
def restore_last_checkpoint(experiment: Experiment, echo: Echo = print) -> None:
    """Load the run's last checkpoint into the model and Trainer, or start over when the run was
    killed before its first one."""
    run = experiment.run
    if not run.has_checkpoint("last"):
        run.truncate_metrics_after(-1)
        return
    with warnings.catch_warnings(record=True, category=CheckpointFallbackWarning) as fallbacks:
        weights, state = run.load_checkpoint("last", quarantine=True)
    for fallback in fallbacks:
        if echo is not None:
            echo(f"warning: {fallback.message}")
    _load_weights(experiment.model, weights, run.checkpoints.latest("last") or run.checkpoints_dir)
    experiment.trainer.load_state_dict(state)
    run.truncate_metrics_after(state["train_state"]["step"])


def fit_and_finish(experiment: Experiment) -> tuple[Run, dict[str, float]]:
    """Fit into the experiment's run, then finish it (test, diagnosis, plots, report).

    The run's status follows the fit (`guarded_fit`: a signal checkpoints and stops, an error
    marks it failed). A run the doctor stopped for a fatal reason is finished on its last good
    weights.
    """
    run, trainer, data, recipe = (
        experiment.run,
        experiment.trainer,
        experiment.data,
        experiment.recipe,
    )
    with guarded_fit(run, trainer):
        trainer.fit(
            data.train,
            data.val,
            epochs=recipe.train.epochs,
            batch_size=recipe.data.batch_size,
            transform=experiment.transform,
            eval_batch_size=recipe.data.eval_batch_size,
        )
    if _halted(trainer) and run.has_checkpoint("last"):
        weights, _ = run.load_checkpoint("last")  # the last good weights, not the diverged ones
        _load_weights(experiment.model, weights, run.checkpoints_dir)
    return run, finish_run(experiment)


def finish_run(experiment: Experiment) -> dict[str, float]:
    """Evaluate on the test split (one pass), diagnose, draw the plots, write the report, close
    the run; returns the test metrics."""
    run, trainer, data = experiment.run, experiment.trainer, experiment.data
    test_metrics = _test(experiment) if data.test is not None else {}
    diagnosis = _diagnose(experiment)
    run.write_diagnosis(diagnosis.to_dict())
    run.set_status(
        "halted" if _halted(trainer) else "finished",
        test_metrics=test_metrics,
        epochs_done=trainer.state.epoch,
        findings=diagnosis.codes,
    )
    plot_run_curves(run)  # after set_status: it marks the best epoch and an early stop
    write_doctor_plots(run)
    model_summary = summary(experiment.model, (1, *data.input_shape))
    write_report(run, summary_text=str(model_summary), diagnosis=diagnosis)
    return test_metrics


def _test(experiment: Experiment) -> dict[str, float]:
    """The test metrics, logged; for classification, the confusion matrix and sample grid from
    the same pass."""
    run, trainer, data = experiment.run, experiment.trainer, experiment.data
    classification = data.task == "classification"
    matrix = create_metric("confusion_matrix", num_classes=data.num_classes)
    metrics = trainer.evaluate(data.test, extra_metrics=[matrix] if classification else [])
    run.append_metrics({"epoch": trainer.state.epoch, "split": "test", **metrics})
    if classification:
        matrix_path = run.plots_dir / "confusion_matrix.png"
        plot_confusion_matrix(matrix.compute().numpy(), data.class_names, matrix_path)
        x_test, y_test = data.test
        if x_test.dim() == 4:
            shown = x_test[:32]
            predictions = trainer.predict(shown).argmax(dim=1)
            plot_samples(
                shown,
                y_test[:32],
                preds=predictions,
                class_names=data.class_names,
                path=run.plots_dir / "samples.png",
            )
    return metrics


def _diagnose(experiment: Experiment) -> Diagnosis:
    """The doctor's diagnosis of the whole run, from what it holds in memory."""
    doctor = experiment.doctor
    if doctor is None:  # cannot happen for a run built by `build`, which always has one
        return Diagnosis([], None)
    return doctor.diagnose(experiment.trainer.history)


def _halted(trainer: Trainer) -> bool:
    return trainer.stop_reason is not None and trainer.stop_reason.fatal


def _load_weights(model: nn.Module, weights: dict[str, torch.Tensor], source: Path) -> None:
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise CheckpointError(
            f"checkpoint {source} does not fit the model: {' '.join(first[:2])}",
            hint="the model in the recipe changed since this checkpoint was written",
        ) from exc


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


# ------------------------------------------------------------------------------ using a run
def load_experiment(run: Run, which: str = "last", data: DatasetBundle | None = None) -> Experiment:
    """Rebuild a run's data (unless given: prediction passes a data-free `TextBundle`), model
    and Trainer and load its `best` (or `last`) weights."""
    experiment = build(run.recipe(), data=data)
    if which == "best" and not run.has_checkpoint("best"):
        which = "last"
    weights, _ = run.load_checkpoint(which)
    _load_weights(experiment.model, weights, run.checkpoints.latest(which) or run.checkpoints_dir)
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


def run_preprocess(run: Run) -> Preprocess:
    """The run's saved preprocessing; for a run made before it was saved, fit again from the
    recipe's data (the same numbers: the fixes are deterministic)."""
    return load_preprocess(run.path) or prepare_data(run.recipe())[1]


# ------------------------------------------------------------------------------ distributed
def launch_train(nproc: int, args: Sequence[str], recipe: Recipe, new_run: bool = True) -> int:
    """`layerwise train ARGS` again in `nproc` processes, started by torchrun as a user would;
    returns their exit code. A recipe that cannot be built (unknown name, missing file) is
    refused here, in one process, before any starts (a new run's data and model are built once).
    """
    distributed.check_nproc(nproc)
    _refuse_distributed(recipe)
    if new_run:
        data = build_data(recipe)
        build_trainer(recipe, build_model(recipe, data), data)
    return distributed.launch(["train", *args], nproc)


def check_distributed(recipe: Recipe) -> None:
    """Under torchrun, refuse a recipe that cannot train in several processes yet."""
    if distributed.launched_by_torchrun():
        _refuse_distributed(recipe)


def _refuse_distributed(recipe: Recipe) -> None:
    """Refuse a recipe whose task kind (`tasks.dispatch.TASKS`) does not train data-parallel.
    The generic experiment splits its batches across ranks and only rank 0 writes; a task's own
    train function (none states it can today) would run whole in every process, each writing a
    run folder."""
    kind = task_kind(recipe)
    if kind is not None and not kind.distributed:
        raise RecipeError(
            f"recipe '{recipe.name}' trains through the {kind.name} task, "
            "which cannot train in several processes yet",
            hint="train it in one process (without --nproc or torchrun)",
        )


def _worker_experiment(
    recipe: Recipe,
    callbacks: Sequence[Callback],
    data: DatasetBundle | None = None,
    model: nn.Module | None = None,
) -> Experiment:
    """The experiment of a rank other than 0: no run folder, progress or doctor output, only
    the callbacks that must run in step with rank 0 (early stopping, backbone unfreezing, and the
    doctor, whose probe statistics are averaged across ranks and whose stops all ranks obey)."""
    seed_everything(recipe.seed)
    data = data if data is not None else build_data(recipe)
    model = model if model is not None else build_model(recipe, data)
    data = backbone_features(recipe, model, data, None)  # rank 0 caches them in its run
    spec = recipe.doctor
    silent = doctor_callbacks(
        probes=spec.probes,
        every=spec.probe_every,
        task=data.task,
        num_classes=data.num_classes,
        echo=None,
        stop_on_fatal=spec.stop_on_fatal,
    )
    return build(recipe, data=data, model=model, callbacks=[*silent, *callbacks])


def _resume_on_worker(run: Run, recipe: Recipe, callbacks: Sequence[Callback]) -> tuple[None, dict]:
    """A rank other than 0 resumes from the checkpoint rank 0 resumes from (read only: rank 0
    moves a damaged one aside). The epoch's running sums stay rank 0's alone, so they are not
    counted twice when the run resumes with more processes than it was saved with."""
    experiment = _worker_experiment(recipe, callbacks)
    if run.has_checkpoint("last"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CheckpointFallbackWarning)
            weights, state = run.load_checkpoint("last")
        _load_weights(experiment.model, weights, run.checkpoints_dir)
        empty_sums = {"totals": {}, "weights": {}}
        metrics = [{} for _ in state["metrics"]]
        experiment.trainer.load_state_dict({**state, "step_logs": empty_sums, "metrics": metrics})
    return _fit_on_worker(experiment)


def _fit_on_worker(experiment: Experiment) -> tuple[None, dict]:
    """Fit as rank 0 does, then leave: testing, the diagnosis and the report are rank 0's."""
    recipe, data = experiment.recipe, experiment.data
    with distributed.stop_on_signal(experiment.trainer):
        experiment.trainer.fit(
            data.train,
            data.val,
            epochs=recipe.train.epochs,
            batch_size=recipe.data.batch_size,
            transform=experiment.transform,
            eval_batch_size=recipe.data.eval_batch_size,
        )
    return None, {}
