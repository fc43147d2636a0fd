"""The learning-rate range test: raise the rate step by step and watch where the loss breaks.

Smith's test (Cyclical Learning Rates, 2015), as fastai and Lightning popularised it: train on
`num_steps` mini-batches while the learning rate grows geometrically from `start_lr` to `end_lr`,
record a smoothed loss, and stop once it blows up. The loss first barely moves (rate too low),
then falls fast, then turns up and explodes (rate too high). A good rate sits well below where
it turns: `suggest_lr` documents the rule and why it was chosen.

The test is a callback, `LRRangeTest`, run through `Trainer.fit`: the step is the Trainer's own
(so mixed precision, gradient clipping and L1/L2 penalties apply). `lr_find` runs it on a recipe's
experiment with a fresh Trainer, then puts the model's weights, buffers and modes and every RNG
back, so the experiment trains afterwards exactly as if the test had never run.

Example:
    >>> from layerwise.experiment import build
    >>> from layerwise.recipe import load_recipe
    >>> result = lr_find(build(load_recipe("recipes/digits_cnn.yaml")))  # doctest: +SKIP
    >>> result.suggestion  # doctest: +SKIP
    0.0021
    >>> plot_lr_find(result, "lr_find.png")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
from torch import nn

from layerwise.data import make_batcher
from layerwise.errors import LayerwiseError
from layerwise.train.callbacks.base import Callback
from layerwise.train.device import rng_state, set_rng_state

if TYPE_CHECKING:
    from layerwise.experiment import Experiment
    from layerwise.train import Trainer

__all__ = [
    "LRFindResult",
    "LRRangeTest",
    "Suggestion",
    "lr_find",
    "plot_lr_find",
    "suggest_lr",
    "valley_curve",
]

_CHECK_EVERY = 8  # steps between reads of the loss: the divergence test is the only host sync


@dataclass
class LRFindResult:
    """What the range test measured and the rate it suggests.

    Attributes:
        lrs: the learning rate of each step that ran (geometric, increasing).
        losses: the smoothed (bias-corrected exponential moving average) loss after each step.
        suggestion: the suggested learning rate (see `suggest_lr` for the rule).
        rule: how `suggestion` was chosen, in words.
        min_loss_lr: the rate at the lowest loss (averaged as `suggest_lr` does).
        steepest_lr: the rate where the loss falls fastest (for information; see `suggest_lr`).
        edge_lr: the upper edge of the loss valley, which the suggestion is a tenth of.
        raw_losses: the unsmoothed loss of each step.
        diverged: whether the test stopped early because the loss blew up.
    """

    lrs: list[float]
    losses: list[float]
    suggestion: float
    rule: str
    min_loss_lr: float
    steepest_lr: float
    edge_lr: float = math.nan
    raw_losses: list[float] = field(default_factory=list)
    diverged: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (non-finite numbers become None)."""
        data = asdict(self)
        for key in ("losses", "raw_losses"):
            data[key] = [v if math.isfinite(v) else None for v in data[key]]
        if not math.isfinite(data["edge_lr"]):
            data["edge_lr"] = None
        return data


class LRRangeTest(Callback):
    """Raise the learning rate geometrically, one step at a time, and stop when the loss breaks.

    Before each step the rate of every param group of every optimizer is set to the next rate of
    the sweep (the first one at `on_fit_start`, each next one at `on_batch_end`), so the step
    itself is the Trainer's own: mixed precision, clipping and penalties apply. The loss of each
    step (its `loss` log) stays on the device and is read every `_CHECK_EVERY` steps, the only
    host sync; training stops (`trainer.stop(..., source="LRRangeTest")`) once the smoothed loss
    exceeds `diverge` times its lowest value, or after `num_steps` steps. Give the fit enough
    epochs to cover `num_steps` batches; `result()` then reads the curve and the suggestion.

    It runs after `LRScheduler` (order -20), so its rate wins over a schedule's.

    Args:
        start_lr, end_lr: the first and last rate; the rate grows by a constant factor per step.
        num_steps: optimizer steps in the sweep (at least 10).
        smooth: the weight of the past in the moving average of the loss (0 = no smoothing).
        diverge: stop once the smoothed loss exceeds this multiple of the lowest one so far.
        echo: where a progress line goes about every tenth of the sweep (None: silent); lines
            are written when the losses are read anyway, so they cost no extra sync.

    Attributes:
        lrs_: the rates of the sweep, set at `on_fit_start`.
        raw_losses_: the loss of each step read so far (steps run past a blow-up are dropped).
        diverged_: whether the loss blew up.

    Example:
        >>> test = LRRangeTest(1e-6, 1.0, num_steps=50)
        >>> trainer = Trainer(model, doctor=False, metrics=(), callbacks=[test])  # doctest: +SKIP
        >>> trainer.fit((x, y), epochs=50, batch_size=64)  # doctest: +SKIP
        >>> test.result().suggestion  # doctest: +SKIP
        0.0021
    """

    def __init__(
        self,
        start_lr: float = 1e-7,
        end_lr: float = 10.0,
        num_steps: int = 100,
        smooth: float = 0.98,
        diverge: float = 4.0,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        _check_args(start_lr, end_lr, num_steps, smooth, diverge)
        self.echo = echo
        self.start_lr = start_lr
        self.end_lr = end_lr
        self.num_steps = num_steps
        self.smooth = smooth
        self.diverge = diverge
        self.lrs_: list[float] = []
        self.raw_losses_: list[float] = []
        self.diverged_ = False

    def on_fit_start(self, trainer: Trainer) -> None:
        self.lrs_ = np.geomspace(self.start_lr, self.end_lr, self.num_steps).tolist()
        self.raw_losses_ = []
        self.diverged_ = False
        self._losses = torch.empty(self.num_steps, device=trainer.device)
        self._steps = 0  # steps run in the sweep
        self._average, self._best = 0.0, math.inf
        self._next_report = self._report_every = max(_CHECK_EVERY, self.num_steps // 10)
        _set_lr(trainer, self.lrs_[0])

    def on_batch_end(self, trainer: Trainer) -> None:
        self._losses[self._steps] = _step_loss(trainer.last_logs)
        self._steps += 1
        done = self._steps == self.num_steps
        if (done or self._steps % _CHECK_EVERY == 0) and self._read():
            lr = self.lrs_[len(self.raw_losses_) - 1]
            trainer.stop(f"LR range test: the loss diverged at lr={lr:.3g}", source="LRRangeTest")
        elif done:
            trainer.stop(f"LR range test: {self.num_steps} steps done", source="LRRangeTest")
        else:
            _set_lr(trainer, self.lrs_[self._steps])

    def on_fit_end(self, trainer: Trainer) -> None:
        if not self.diverged_:
            self._read()  # the fit ran out of batches between two reads

    def _read(self) -> bool:
        """Read the losses not read yet and track their moving average; True once it blows up."""
        for value in self._losses[len(self.raw_losses_) : self._steps].tolist():
            self.raw_losses_.append(value)
            self._average = self.smooth * self._average + (1 - self.smooth) * value
            smoothed = self._average / (1 - self.smooth ** len(self.raw_losses_))  # as `_ema`
            if not math.isfinite(smoothed) or smoothed > self.diverge * self._best:
                self.diverged_ = True
                return True
            self._best = min(self._best, smoothed)
        self._report()
        return False

    def _report(self) -> None:
        read = len(self.raw_losses_)
        if self.echo is None or read < self._next_report:
            return
        self._next_report = read + self._report_every
        smoothed = self._average / (1 - self.smooth**read)
        self.echo(
            f"lr-find: step {read}/{self.num_steps}  lr {self.lrs_[read - 1]:.3g}  "
            f"loss {smoothed:.4f}"
        )

    def result(self) -> LRFindResult:
        """The rates that ran, their losses and the suggested rate (see `suggest_lr`)."""
        raw = list(self.raw_losses_)
        lrs = self.lrs_[: len(raw)]
        found = suggest_lr(lrs, raw)
        return LRFindResult(
            lrs=lrs,
            losses=_ema(raw, self.smooth),
            suggestion=found.lr,
            rule=found.rule,
            min_loss_lr=found.min_loss_lr,
            steepest_lr=found.steepest_lr,
            edge_lr=found.edge_lr,
            raw_losses=raw,
            diverged=self.diverged_,
        )


def _set_lr(trainer: Trainer, lr: float) -> None:
    for optimizer in trainer.optimizers.values():
        for group in optimizer.param_groups:
            group["lr"] = lr


def _step_loss(logs: dict[str, Any]) -> torch.Tensor | float:
    """The step's `loss` log, still on the device."""
    loss = logs.get("loss")
    if loss is None:
        raise LayerwiseError(
            f"the LR range test reads the 'loss' log, but train_step returned "
            f"{sorted(logs) or 'no logs'}",
            hint="return {'loss': loss, ...} from train_step",
        )
    return loss.detach().float().mean() if isinstance(loss, torch.Tensor) else float(loss)


def lr_find(
    experiment: Experiment,
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int = 100,
    smooth: float = 0.98,
    diverge: float = 4.0,
    echo: Callable[[str], None] | None = None,
) -> LRFindResult:
    """Run the range test on `experiment`'s training data, model and optimizer.

    A fresh Trainer of the experiment Trainer's class is made for the experiment's model with
    the same loss, optimizer, precision, clipping, penalties, device and seed, but no callbacks,
    doctor, metrics or schedule; it fits with an `LRRangeTest` for as many epochs as `num_steps`
    batches need (each epoch reshuffles the data). Then the model's weights, buffers, gradients
    and train/eval modes, a given optimizer's state and every RNG are put back, so the
    experiment trains afterwards exactly as if the test had never run. The experiment's own
    Trainer is not touched.

    Args:
        experiment: what `layerwise.experiment.build(recipe)` returns; its model, Trainer, training
            split, batch size and augmentation are used. It is left as it was found.
        start_lr, end_lr: the first and last rate; the rate grows by a constant factor per step.
        num_steps: mini-batches to train on (the training data is cycled when it has fewer).
        smooth: the weight of the past in the moving average of the loss (0 = no smoothing).
        diverge: stop once the smoothed loss exceeds this multiple of the lowest one so far.
        echo: where progress lines go, about one per tenth of the sweep (None: silent).

    Returns:
        An `LRFindResult`; `suggestion` is the rate to train with (see `suggest_lr`).
    """
    range_test = LRRangeTest(start_lr, end_lr, num_steps, smooth, diverge, echo)  # checks args
    trainer = _fresh_trainer(experiment.trainer, range_test)
    batcher = make_batcher(
        experiment.data.train,
        batch_size=experiment.recipe.data.batch_size,
        shuffle=True,
        seed=trainer.seed,
        device=trainer.device,
        transform=experiment.transform,
    )
    with _restored(experiment.model, experiment.trainer):
        trainer.fit(batcher, epochs=math.ceil(num_steps / max(len(batcher), 1)))
    return range_test.result()


def _fresh_trainer(trainer: Trainer, range_test: LRRangeTest) -> Trainer:
    """A Trainer like `trainer` (same class and constructor arguments) that only trains: no
    doctor, metrics, schedule or callbacks besides the range test."""
    return trainer.with_params(
        metrics=(),
        schedule=None,
        callbacks=[range_test],
        train_metrics=False,
        doctor=False,
        progress=False,  # the range test reports its own progress
    )


@contextlib.contextmanager
def _restored(model: nn.Module, trainer: Trainer) -> Iterator[None]:
    """Put back, on exit, what training `model` changes: weights and buffers, gradients,
    train/eval modes, the state of optimizers given to `trainer` as objects, and every RNG."""
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    grads = [(p, None if p.grad is None else p.grad.detach().clone()) for p in model.parameters()]
    modes = [(module, module.training) for module in model.modules()]
    rng = rng_state()
    spec = trainer.optimizer_spec
    specs = spec.values() if isinstance(spec, Mapping) else [spec]
    given = [o for o in specs if isinstance(o, torch.optim.Optimizer)]
    given_states = [copy.deepcopy(o.state_dict()) for o in given]
    try:
        yield
    finally:
        with torch.no_grad():
            model.load_state_dict(weights)
        for param, grad in grads:
            param.grad = grad
        for module, training in modes:
            module.training = training
        for optimizer, state in zip(given, given_states, strict=True):
            optimizer.load_state_dict(state)
        set_rng_state(rng)


def _check_args(start: float, end: float, steps: int, smooth: float, diverge: float) -> None:
    if not (start > 0 and math.isfinite(start) and math.isfinite(end)) or start >= end:
        raise LayerwiseError(
            f"lr_find needs 0 < start_lr < end_lr, got start_lr={start}, end_lr={end}",
            hint="e.g. start_lr=1e-7, end_lr=10",
        )
    if not isinstance(steps, int) or steps < 10:
        raise LayerwiseError(
            f"lr_find needs num_steps >= 10, got {steps!r}",
            hint="100 steps (the default) resolve the loss curve to about 12 points per decade",
        )
    if not 0 <= smooth < 1:
        raise LayerwiseError(
            f"lr_find smooth must be in [0, 1), got {smooth}", hint="0.98 is the usual choice"
        )
    if not diverge > 1:
        raise LayerwiseError(
            f"lr_find diverge must be > 1, got {diverge}",
            hint="stop when the loss is e.g. 4x its best (diverge=4)",
        )


def _ema(values: Sequence[float], smooth: float) -> list[float]:
    """Moving average with Adam's bias correction, so early values are not pulled towards 0."""
    out, average = [], 0.0
    for i, value in enumerate(values):
        average = smooth * average + (1 - smooth) * value
        out.append(average / (1 - smooth ** (i + 1)))
    return out


# ------------------------------------------------------------------------------ suggestion rule
WINDOW = 1.0  # decades of rate in the centred window that averages the raw losses
CLIMB = 0.3  # the valley ends where the loss has climbed back this share of its fall
BELOW_EDGE = 10.0  # the suggestion lies this factor below the valley's upper edge


class Suggestion(NamedTuple):
    """What `suggest_lr` read off a range-test curve."""

    lr: float
    rule: str
    min_loss_lr: float
    steepest_lr: float
    edge_lr: float


def suggest_lr(lrs: Sequence[float], raw_losses: Sequence[float]) -> Suggestion:
    """The rate to train with, from a range test's rates and raw (unsmoothed) losses.

    The rule, chosen by measuring it against grid searches (`benchmarks/lr_finder.py`):

    1. Average the raw losses over a centred window one decade (`WINDOW`) wide on the log-rate
       axis, a loss above the starting level counting as the starting level (`valley_curve`).
       Unlike the moving average in `LRFindResult.losses`, this has no lag: with the defaults
       the moving average trails the loss by up to 50 steps, i.e. 4 decades of rate.
    2. The valley is the stretch of rates around the lowest average (`min_loss_lr`) where the
       average stays within 30% (`CLIMB`) of the loss's fall (from the highest average before
       the lowest, down to the lowest). Its upper edge (`edge_lr`) is the last rate before the
       loss climbs back out, as training turns unstable.
    3. Suggest a tenth (`BELOW_EDGE`) of the edge, never less than the first rate tried.

    The edge is used rather than the lowest point because many valleys have a flat floor (batch
    norm gives a CNN a floor two decades wide) on which the lowest point wanders with noise,
    while the climb out at the edge is steep, so its position barely moves. `steepest_lr`, where
    the averaged loss falls fastest, is reported for information only: real curves have several
    steep stretches and the steepest point jumps between them from one run to the next.
    """
    if len(lrs) != len(raw_losses):
        raise LayerwiseError(
            f"suggest_lr got {len(lrs)} rates but {len(raw_losses)} losses",
            hint="pass one raw loss per rate, as LRFindResult.lrs and .raw_losses hold them",
        )
    x = np.log10(np.asarray(lrs, dtype=float))
    count = int(np.isfinite(np.asarray(raw_losses, dtype=float)).sum())
    if count < 3:
        raise LayerwiseError(
            f"the range test recorded only {count} finite losses, too few to suggest a "
            "learning rate",
            hint="check the data and model for NaN first; then lower start_lr",
        )
    curve = valley_curve(lrs, raw_losses)
    low = int(np.nanargmin(curve))
    ceiling = curve[low] + CLIMB * (np.nanmax(curve[: low + 1]) - curve[low])
    outside = np.flatnonzero(~(curve[low:] <= ceiling))
    edge = low + int(outside[0]) - 1 if len(outside) else len(curve) - 1
    steepest = _steepest(x[: low + 1], curve[: low + 1])
    result = Suggestion(
        lr=max(float(10 ** x[edge]) / BELOW_EDGE, float(10 ** x[0])),
        rule="",
        min_loss_lr=float(10 ** x[low]),
        steepest_lr=float(10 ** x[steepest]) if steepest is not None else float(10 ** x[low]),
        edge_lr=float(10 ** x[edge]),
    )
    rule = (
        f"valley edge / {BELOW_EDGE:g}: the loss (averaged over {WINDOW:g} decade) bottoms out "
        f"at lr={result.min_loss_lr:.3g} and stays within {CLIMB:.0%} of its fall from there up "
        f"to lr={result.edge_lr:.3g}; suggest a {BELOW_EDGE:g}th of that"
    )
    if not len(outside):
        rule += f" (the loss never climbed back: raise end_lr past {lrs[-1]:.3g})"
    elif result.lr == float(10 ** x[0]):
        rule += f" (the valley starts at the first rate tried: lower start_lr below {lrs[0]:.3g})"
    return result._replace(rule=rule)


def valley_curve(lrs: Sequence[float], raw_losses: Sequence[float]) -> np.ndarray:
    """The raw losses averaged over a centred window `WINDOW` decades wide, spikes capped.

    A loss above the starting level (the mean of the finite losses over the first `WINDOW`
    decade), or one that is not finite, counts as the starting level: one wild batch then weighs
    no more than a batch that learnt nothing, instead of dragging a decade of the curve up.
    """
    x = np.log10(np.asarray(lrs, dtype=float))
    y = np.asarray(raw_losses, dtype=float)
    finite = np.isfinite(y)
    if not finite.any():
        return np.full(len(y), np.nan)
    cap = y[finite & (x <= x[finite][0] + WINDOW)].mean()
    y = np.where(finite, np.minimum(y, cap), cap)
    return np.array([y[np.abs(x - xi) <= WINDOW / 2 + 1e-9].mean() for xi in x])


def _steepest(x: np.ndarray, y: np.ndarray) -> int | None:
    """Index of the most negative slope dloss/dlog10(lr), the slope averaged over `WINDOW`."""
    keep = np.isfinite(y)
    if keep.sum() < 3:
        return None
    index = np.flatnonzero(keep)
    slope = np.gradient(y[keep], x[keep])
    smoothed = [slope[np.abs(x[keep] - xi) <= WINDOW / 2 + 1e-9].mean() for xi in x[keep]]
    return int(index[int(np.argmin(smoothed))])


# ------------------------------------------------------------------------------ plot
def plot_lr_find(result: LRFindResult, path: str | Path) -> Path:
    """Loss against learning rate (log axis) with the suggestion marked; written atomically.

    Drawn: the loss of each step (dots), the centred average the suggestion rule reads (bold),
    the moving average the divergence test watches (thin), and as vertical lines the valley's
    lowest point, its upper edge and the suggestion (a tenth of the edge).
    """
    from matplotlib.figure import Figure

    from layerwise.report.plots import _label, _save

    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.subplots()
    lrs = result.lrs
    curve = np.asarray(result.losses, dtype=float)
    if result.raw_losses:
        ax.plot(lrs, result.raw_losses, ".", color="#1f77b4", alpha=0.35, label="loss per step")
        curve = valley_curve(lrs, result.raw_losses)
        ax.plot(lrs, curve, color="#1f77b4", linewidth=2.2, label=f"mean over {WINDOW:g} decade")
    ax.plot(lrs, result.losses, color="#ff7f0e", linewidth=1, label="moving average")
    ax.set_xscale("log")
    if np.isfinite(curve).any():  # keep the valley in view, not the blow-up
        low = int(np.nanargmin(curve))
        bottom, top = float(curve[low]), float(np.nanmax(curve[: low + 1]))
        margin = 0.1 * (top - bottom) + 0.02 * abs(top)
        ax.set_ylim(bottom - margin, top + 2 * margin)
    ax.axvline(result.min_loss_lr, color="#7f7f7f", linestyle=":", label="lowest loss")
    if math.isfinite(result.edge_lr):
        ax.axvline(result.edge_lr, color="#7f7f7f", linestyle="-.", label="valley edge")
    ax.axvline(
        result.suggestion,
        color="#d62728",
        linestyle="--",
        linewidth=1.8,
        label=f"suggestion {result.suggestion:.2g}",
    )
    _label(ax, "Learning-rate range test", "learning rate", "loss")
    ax.legend(fontsize=8)
    return _save(fig, path)
