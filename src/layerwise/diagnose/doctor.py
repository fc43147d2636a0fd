"""The doctor at work: check the data before training, watch training live, diagnose after.

The pieces it joins only meet through plain data: `profile_data` numbers, the `Probes` log and
the epoch history. Rules turn them into findings; this module decides when to run them, prints
what is new, stops a run that cannot recover, and stores the diagnosis in the run folder.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from layerwise.diagnose.findings import Diagnosis, Finding
from layerwise.diagnose.probe_log import PROBES_FILE, ProbeLog
from layerwise.diagnose.probes import Probes
from layerwise.diagnose.rules import RuleContext, evaluate, fmt, run_rules
from layerwise.errors import RunError
from layerwise.train.callbacks.base import Callback

if TYPE_CHECKING:
    from layerwise.data import DatasetBundle
    from layerwise.runs import Run
    from layerwise.train.trainer import Trainer

DATA_PROFILE_FILE = "data_profile.json"
TASK_FIELD = "doctor_task"  # run.json: the task a task's doctor watched the run as
# What an RL agent's or a GAN's epochs log and a supervised run's never do: how a run folder
# without a data profile (only classification and regression recipe runs write one) tells
# `diagnose_run` its task (`run_task`).
RL_KEYS = ("eval_return", "episode_return")
GAN_KEYS = ("d_loss", "g_loss")
RL_TASKS = ("rl", "reinforcement")


class Doctor(Callback):
    """Run the training rules as the run goes; print each new finding once; stop on a fatal one.

    It runs after `Probes` (its `order` is higher: it reads the probe log the probes just wrote)
    and before `ModelCheckpoint`, which skips saving once the doctor has stopped training for a
    fatal reason (`trainer.stop_reason.fatal`), so the last good checkpoint survives a NaN loss.
    `doctor_callbacks()` makes the pair.

    Args:
        probes: the run's `Probes`, or None to watch the epoch history only.
        data_profile: the `profile_data` numbers, so training rules can use data facts.
        recipe: the raw recipe dict, from which findings compute their patches.
        task, num_classes: what the model predicts (chance-level loss depends on it).
        echo: where a new finding's headline goes (None: stay silent).
        stop_on_fatal: stop training on a fatal finding (a NaN loss).
        check_data: without a `data_profile`, run the data checks (`check_data`, what the CLI runs
            before training) on the tensors `fit` is given, once per training set, so the data
            gets the same findings from Python as from the CLI.

    Example:
        >>> probes = Probes()
        >>> trainer = Trainer(model, callbacks=[probes, Doctor(probes)])  # doctest: +SKIP
    """

    order = -5

    def __init__(
        self,
        probes: Probes | None = None,
        *,
        data_profile: dict[str, Any] | None = None,
        recipe: dict[str, Any] | None = None,
        task: str = "classification",
        num_classes: int | None = None,
        echo: Callable[[str], None] | None = print,
        stop_on_fatal: bool = True,
        check_data: bool = False,
    ) -> None:
        self.probes = probes
        self.data_profile = data_profile
        self.recipe = recipe
        self.task = task
        self.num_classes = num_classes
        self.echo = echo
        self.stop_on_fatal = stop_on_fatal
        self.check_data = check_data
        self.reported: dict[str, Finding] = {}
        self._records_seen = 0

    @property
    def findings(self) -> list[Finding]:
        return list(self.reported.values())

    def on_fit_start(self, trainer: Trainer) -> None:
        self._records_seen = len(self.probes.log.steps) if self.probes else 0
        if self.check_data and self.data_profile is None:
            self._check_fit_data(trainer)

    def _check_fit_data(self, trainer: Trainer) -> None:
        """The CLI's data checks on in-memory `(x, y)` tensors (other data is not profiled)."""
        from layerwise.data import DatasetBundle

        splits = [_tensor_pair(trainer.train_data), _tensor_pair(trainer.val_data)]
        if splits[0] is None:
            return
        x, y = splits[0]
        regression = y.is_floating_point()
        num_classes = (
            (y[0].numel() if y.dim() > 1 else 1)
            if regression
            else (trainer.num_classes or int(y.max()) + 1 if len(y) else 1)
        )
        bundle = DatasetBundle(
            name="fit data",
            train=splits[0],
            val=splits[1],
            test=None,
            num_classes=num_classes,
            input_shape=tuple(x.shape[1:]),
            task="regression" if regression else "classification",
        )
        # Trainable parameters only: a frozen backbone cannot memorise the data.
        params = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        diagnosis = check_data(bundle, num_params=params, recipe=self.recipe, seed=trainer.seed)
        self.data_profile, self.task = diagnosis.data_profile, bundle.task
        self.num_classes = self.num_classes or num_classes
        for finding in diagnosis.findings:
            if self.echo is not None:
                self.echo(f"doctor: {finding.headline()}")

    def on_batch_end(self, trainer: Trainer) -> None:
        # A NaN loss is checked at every sampled step, so a diverged run stops within k steps.
        if self.probes is None or len(self.probes.log.steps) == self._records_seen:
            return
        self._records_seen = len(self.probes.log.steps)
        loss = self.probes.log.steps[-1].get("loss")
        if loss is not None and not math.isfinite(loss):
            self._check(trainer, only=("loss_nan",))

    def on_epoch_end(self, trainer: Trainer) -> None:
        if trainer.stop_reason is None or not trainer.stop_reason.fatal:
            self._check(trainer)

    def context(self, history: list[dict[str, Any]], final: bool) -> RuleContext:
        return RuleContext(
            history=history,
            probes=self.probes.log if self.probes else None,
            data=self.data_profile,
            recipe=self.recipe,
            task=self.task,
            num_classes=self.num_classes,
            final=final,
        )

    def on_fit_end(self, trainer: Trainer) -> None:
        # A finding printed live that the whole run no longer shows is said to be withdrawn,
        # rather than silently missing from the diagnosis (rules run again only if one was shown).
        halted = trainer.stop_reason is not None and trainer.stop_reason.fatal
        if self.echo is None or not self.reported or halted:
            return
        for finding in self.diagnose(trainer.history).resolved:
            self.echo(f"doctor: {finding.resolved_headline()}")

    def diagnose(self, history: list[dict[str, Any]]) -> Diagnosis:
        """All rules on the whole history (training and, with a data profile, data findings);
        findings shown live that no longer hold at the end are listed as `resolved`."""
        findings, explained = evaluate(self.context(history, final=True))
        codes = {f.code for f in findings}
        # A fatal live finding (a NaN loss) stays in the diagnosis even if the logs end clean.
        findings += [f for f in self.findings if f.severity == "fatal" and f.code not in codes]
        codes = {f.code for f in findings}
        codes |= {f.code for f in explained}  # explained symptoms still hold: not withdrawn
        resolved = [f for f in self.findings if f.code not in codes]
        notes = scope_notes(self.task, history)
        return Diagnosis(
            findings, self.data_profile, resolved=resolved, explained=explained, notes=notes
        )

    def _check(self, trainer: Trainer, only: tuple[str, ...] | None = None) -> None:
        for finding in run_rules(self.context(trainer.history, final=False), stage="training"):
            if (only and finding.code not in only) or finding.code in self.reported:
                continue
            self.reported[finding.code] = finding
            if self.echo is not None:
                self.echo(f"doctor: {finding.headline()}")
            if finding.severity == "fatal" and self.stop_on_fatal:
                trainer.stop(
                    f"doctor: {finding.headline()}", source="doctor", fatal=True, detail=finding
                )
                return

    def state_dict(self) -> dict[str, Any]:
        return {"reported": [f.to_dict() for f in self.reported.values()]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.reported = {f["code"]: Finding.from_dict(f) for f in state.get("reported", [])}


def doctor_callbacks(
    *,
    probes: bool = True,
    every: int | str = "auto",
    path: str | Path | None = None,
    data_profile: dict[str, Any] | None = None,
    recipe: dict[str, Any] | None = None,
    task: str = "classification",
    num_classes: int | None = None,
    echo: Callable[[str], None] | None = print,
    stop_on_fatal: bool = True,
    check_data: bool = False,
) -> list[Callback]:
    """The doctor as callbacks: `[Probes, Doctor]`, for a Trainer's `callbacks=`.

    The one place the pair is made: `Trainer(doctor=True)` (through `default_doctor`) and the
    recipe runs of `layerwise.experiment` both call it. Arguments are those of `Probes` (`every`,
    `path`) and `Doctor` (the rest); with `probes=False` the Doctor alone watches the epoch logs.

    Example:
        >>> trainer = Trainer(model, doctor=False, callbacks=doctor_callbacks(every=10))
    """
    watcher = Probes(every=every, path=path) if probes else None
    doctor = Doctor(
        watcher,
        data_profile=data_profile,
        recipe=recipe,
        task=task,
        num_classes=num_classes,
        echo=echo,
        stop_on_fatal=stop_on_fatal,
        check_data=check_data,
    )
    return [doctor] if watcher is None else [watcher, doctor]


def default_doctor(trainer: Trainer) -> list[Callback]:
    """The doctor `Trainer(doctor=True)` attaches (an entry point in pyproject.toml), unless its
    callbacks already hold one."""
    if any(isinstance(c, Probes | Doctor) for c in trainer.callbacks):
        return []
    from layerwise.train.distributed import is_main_process

    echo = print if is_main_process() else None  # under torchrun, rank 0 speaks for all
    return doctor_callbacks(num_classes=trainer.num_classes, check_data=True, echo=echo)


def _tensor_pair(batcher: Any) -> tuple[Any, Any] | None:
    """The `(x, y)` tensors an in-memory batcher slices, or None for any other data."""
    import torch

    x, y = getattr(batcher, "x", None), getattr(batcher, "y", None)
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor) or not len(x):
        return None
    return x.cpu(), y.cpu()


def check_data(
    data: DatasetBundle,
    *,
    num_params: int | None = None,
    recipe: dict[str, Any] | None = None,
    seed: int = 0,
    label_noise: bool = True,
) -> Diagnosis:
    """Profile the data set and run the data rules: the checks done before any training."""
    from layerwise.diagnose.data_checks import profile_data

    profile = profile_data(data, num_params, seed=seed, label_noise=label_noise)
    context = RuleContext(
        history=[],
        probes=None,
        data=profile,
        recipe=recipe,
        task=data.task,
        num_classes=data.num_classes,
        final=True,
    )
    findings, explained = evaluate(context, stage="data")
    return Diagnosis(findings, profile, explained=explained)


def epoch_history(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-epoch flat logs (`loss`, `val_loss`, …) from `metrics.jsonl`'s per-split records."""
    by_epoch: dict[int, dict[str, Any]] = {}
    for record in records:
        split, epoch = record.get("split", "train"), record.get("epoch")
        if split not in ("train", "val") or epoch is None or "eval" in record:
            continue
        row = by_epoch.setdefault(int(epoch), {"epoch": int(epoch)})
        prefix = "" if split == "train" else "val_"
        for key, value in record.items():
            if key in ("split", "epoch"):
                continue
            row[key if split == "train" or key == "step" else prefix + key] = value
    return [by_epoch[e] for e in sorted(by_epoch)]


def diagnose_run(run: Run, *, save: bool = True) -> Diagnosis:
    """Diagnose a run from its folder alone (metrics, probe log, data profile, recipe)."""
    probes_path = run.path / PROBES_FILE
    probes = ProbeLog.load(probes_path) if probes_path.exists() else None
    profile = read_data_profile(run)
    recipe = _read_raw_recipe(run)
    history = epoch_history(run.read_metrics())
    context = RuleContext(
        history=history,
        probes=probes,
        data=profile,
        recipe=recipe,
        task=run_task(profile, history, run.info().get(TASK_FIELD)),
        num_classes=(profile or {}).get("num_classes"),
        final=True,
    )
    findings, explained = evaluate(context)
    # What was shown live and withdrawn is history the folder's logs cannot replay: keep it.
    try:
        earlier = Diagnosis.from_dict(run.read_diagnosis() or {}).resolved
    except (RunError, TypeError):  # an unreadable diagnosis.json is what this rewrites
        earlier = []
    codes = {f.code for f in [*findings, *explained]}
    resolved = [f for f in earlier if f.code not in codes]
    notes = scope_notes(context.task, history)
    diagnosis = Diagnosis(findings, profile, resolved=resolved, explained=explained, notes=notes)
    if save:
        run.write_diagnosis(diagnosis.to_dict())
    return diagnosis


def run_task(
    profile: dict[str, Any] | None, history: list[dict[str, Any]], recorded: str | None = None
) -> str:
    """The task the rules judge a finished run as, from its folder alone.

    The data profile names it for recipe runs (classification, regression); the task a task's
    doctor was told (`recorded`, run.json's `doctor_task`: embedding, detection, a recommender's
    regression) for runs that keep no profile. Runs with neither are told by what they logged:
    returns (`RL_KEYS`) make an RL agent, whose loss is a policy objective that may rise while it
    learns; a discriminator's and a generator's loss (`GAN_KEYS`) make a GAN. Anything else is
    judged as a classifier, as before. The live doctor is told its task by the code that trains;
    this reads the same answer back afterwards, so `layerwise doctor RUN` no longer reads a PPO
    loss as a classifier's."""
    if profile and profile.get("task"):
        return str(profile["task"])
    if recorded:
        return recorded
    logged = {key for record in history for key in record}
    if logged.intersection(RL_KEYS):
        return "rl"
    if logged.issuperset(GAN_KEYS):
        return "gan"
    return "classification"


def scope_notes(task: str, history: list[dict[str, Any]]) -> list[str]:
    """What the doctor leaves unjudged on a `task` run and why, with the returns it logged
    (empty for a supervised run, which every rule reads)."""
    if str(task).lower() not in RL_TASKS:
        return []
    note = (
        "an RL run: its loss (the agent's policy and value objective) is not a supervised "
        "loss that must fall, so the loss-curve rules (lr_too_high, lr_too_low, loss_plateau, "
        "oscillating_loss, overfitting, underfitting) do not judge it; a NaN loss and the "
        "probes' gradients and units are judged as for any model"
    )
    returns = [
        (int(r.get("epoch", i)), float(r["eval_return"]))
        for i, r in enumerate(history, start=1)
        if isinstance(r.get("eval_return"), int | float) and math.isfinite(r["eval_return"])
    ]
    if returns:
        (first_epoch, first), (last_epoch, last) = returns[0], returns[-1]
        best_epoch, best = max(returns, key=lambda p: p[1])
        note += (
            f". Greedy return (eval_return): {fmt(first)} at epoch {first_epoch}, best "
            f"{fmt(best)} at epoch {best_epoch}, {fmt(last)} at epoch {last_epoch}"
        )
    return [note]


def write_data_profile(run: Run, profile: dict[str, Any]) -> Path:
    from layerwise.runs.atomic import atomic_write_json

    return atomic_write_json(run.path / DATA_PROFILE_FILE, profile)


def _read_raw_recipe(run: Run) -> dict[str, Any]:
    """The run's recipe.yaml as a dict; a damaged one is a `RunError` naming it."""
    try:
        recipe = yaml.safe_load(run.read_recipe())
    except yaml.YAMLError as exc:
        recipe = exc
    if not isinstance(recipe, dict):
        raise RunError(
            f"'{run.recipe_path}' is damaged: not a YAML mapping of recipe keys",
            hint="restore it from the recipe file the run was started with",
        )
    return recipe


def read_data_profile(run: Run) -> dict[str, Any] | None:
    path = run.path / DATA_PROFILE_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunError(
            f"cannot read '{path}': {exc}",
            hint="delete it: the diagnosis then leaves out the data findings",
        ) from exc
