"""Pruning a trial while it trains: Optuna's pruner on the per-epoch metric, and the doctor.

The doctor already watches every run (`layerwise.diagnose.Doctor`): a trial whose training it
finds hopeless (a NaN loss, exploding or vanishing gradients, a rate far too high, a loss stuck
near chance) is stopped at once rather than when the median pruner would notice, which for a
diverged run is only after the startup trials and warm-up epochs, and never for a NaN loss whose
metric still looks ordinary. Step-level findings (`STEP_CODES`) are checked at each step the
probes sample, so a diverging trial ends within its first epoch; the others at each epoch end,
right after the doctor's own rules ran.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from layerwise.diagnose.doctor import Doctor
from layerwise.diagnose.rules import RULES
from layerwise.errors import RecipeError, did_you_mean
from layerwise.train.callbacks.base import Callback

if TYPE_CHECKING:
    from layerwise.train.trainer import Trainer

# Findings a sampled step can show: a NaN loss, a gradient norm 100x its start, a step loss 3x
# the loss before training (the spike sign of lr_too_high).
STEP_CODES = ("loss_nan", "exploding_gradients", "lr_too_high")


class TrialPruning(Callback):
    """Report each epoch's `metric` to an Optuna `trial` and stop training when it should end.

    Args:
        trial: the Optuna trial this run is.
        metric: the epoch log reported (`val_accuracy`, `val_loss`, ...).
        median: ask the study's pruner after each report.
        prune_on: doctor finding codes that end the trial at once (empty: no doctor pruning).

    After `fit`, `pruned_by` is None, `"median"` or `"doctor:<code>"`, `values` the reported
    values by epoch, `finding` the doctor's finding that pruned the trial, `steps` the optimizer
    steps trained and `fit_seconds` the time `fit` took (the run's set-up and report excluded).
    """

    order = -4  # after the doctor (-5), so its findings of this step or epoch are in

    def __init__(
        self, trial: Any, metric: str, *, median: bool = True, prune_on: tuple[str, ...] = ()
    ) -> None:
        self.trial = trial
        self.metric = metric
        self.median = median
        self.prune_on = tuple(prune_on)
        self.values: list[float] = []
        self.pruned_by: str | None = None
        self.finding: Any = None
        self._samples_seen = 0
        self.steps = 0
        self.fit_seconds = 0.0
        self._started = 0.0

    def on_fit_start(self, trainer: Trainer) -> None:
        self._started = time.perf_counter()

    def on_fit_end(self, trainer: Trainer) -> None:
        self.steps = trainer.state.step
        self.fit_seconds = time.perf_counter() - self._started

    def on_batch_end(self, trainer: Trainer) -> None:
        doctor = _doctor(trainer)
        if doctor is None or self.pruned_by or not self.prune_on:
            return
        if doctor.probes is None or len(doctor.probes.log.steps) == self._samples_seen:
            return  # nothing new was sampled at this step
        self._samples_seen = len(doctor.probes.log.steps)
        found = [f for f in doctor.findings if f.code in self.prune_on]
        if not found:
            context = doctor.context(trainer.history, final=False)
            codes = [c for c in STEP_CODES if c in self.prune_on and c in RULES]
            found = [f for c in codes if (f := RULES[c](context)) is not None]
        if found:
            self._prune(trainer, f"doctor:{found[0].code}", found[0])

    def on_epoch_end(self, trainer: Trainer) -> None:
        if self.metric not in trainer.logs:
            raise RecipeError(
                f"tune.metric is '{self.metric}', which this run does not log",
                hint=did_you_mean(self.metric, list(trainer.logs))
                + " (val_* needs data.val_fraction or a val split)",
            )
        value = float(trainer.logs[self.metric])
        self.values.append(value)
        if self.pruned_by:
            return
        doctor = _doctor(trainer)
        found = [f for f in doctor.findings if f.code in self.prune_on] if doctor else []
        if found:
            self._prune(trainer, f"doctor:{found[0].code}", found[0])
            return
        self.trial.report(value, trainer.state.epoch)
        if self.median and self.trial.should_prune():
            self._prune(trainer, "median")

    def _prune(self, trainer: Trainer, reason: str, finding: Any = None) -> None:
        self.pruned_by, self.finding = reason, finding
        if trainer.stop_reason is None:
            trainer.stop(f"tune: trial {self.trial.number} pruned ({reason})", source="tune")


def _doctor(trainer: Trainer) -> Doctor | None:
    return next((c for c in trainer.callbacks if isinstance(c, Doctor)), None)
