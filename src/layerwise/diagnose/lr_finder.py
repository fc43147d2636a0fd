"""The learning-rate range test: raise the rate step by step and watch where the loss breaks.

Smith's test (Cyclical Learning Rates, 2015), as fastai and Lightning popularised it: train on
`num_steps` mini-batches while the learning rate grows geometrically from `start_lr` to `end_lr`,
record a smoothed loss, and stop once it blows up. The loss first barely moves (rate too low),
then falls fast, then turns up and explodes (rate too high). A good rate sits well below where
it turns: `suggest_lr` documents the rule and why it was chosen.

The test trains the experiment's own model with the Trainer's own step (so mixed precision,
gradient clipping and L1/L2 penalties apply), then puts everything back: weights, buffers, the
Trainer's attributes and every RNG, so the experiment trains afterwards exactly as if the test
had never run.

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
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch

from layerwise.errors import LayerwiseError
from layerwise.train.device import rng_state, set_rng_state

if TYPE_CHECKING:
    from layerwise.experiment import Experiment
    from layerwise.train import Trainer

__all__ = ["LRFindResult", "Suggestion", "lr_find", "plot_lr_find", "suggest_lr"]

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


def lr_find(
    experiment: Experiment,
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int = 100,
    smooth: float = 0.98,
    diverge: float = 4.0,
) -> LRFindResult:
    """Run the range test on `experiment`'s training data, model and optimizer.

    Args:
        experiment: what `layerwise.experiment.build(recipe)` returns; its model, Trainer, training
            split, batch size and augmentation are used. It is left as it was found.
        start_lr, end_lr: the first and last rate; the rate grows by a constant factor per step.
        num_steps: mini-batches to train on (the training data is cycled when it has fewer).
        smooth: the weight of the past in the moving average of the loss (0 = no smoothing).
        diverge: stop once the smoothed loss exceeds this multiple of the lowest one so far.

    Returns:
        An `LRFindResult`; `suggestion` is the rate to train with (see `suggest_lr`).
    """
    _check_args(start_lr, end_lr, num_steps, smooth, diverge)
    trainer = experiment.trainer
    recipe = experiment.recipe
    batcher = trainer._batcher(
        experiment.data.train,
        recipe.data.batch_size,
        shuffle=True,
        transform=experiment.transform,
    )
    lrs = np.geomspace(start_lr, end_lr, num_steps).tolist()
    with _borrowed(trainer):
        trainer._setup(batcher)  # the recipe's optimizer, scaler and regularizer, seeded
        raw, diverged = _range_test(trainer, batcher, lrs, smooth, diverge)
    lrs = lrs[: len(raw)]
    found = suggest_lr(lrs, raw)
    return LRFindResult(
        lrs=lrs,
        losses=_ema(raw, smooth),
        suggestion=found.lr,
        rule=found.rule,
        min_loss_lr=found.min_loss_lr,
        steepest_lr=found.steepest_lr,
        edge_lr=found.edge_lr,
        raw_losses=raw,
        diverged=diverged,
    )


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


def _range_test(
    trainer: Trainer, batcher: Any, lrs: list[float], smooth: float, diverge: float
) -> tuple[list[float], bool]:
    """Train one step per rate; return the raw losses up to the blow-up, and whether it came.

    Losses stay on the device and are read every few steps, so the loop does not wait for the
    device after each step; the few steps run past a blow-up are dropped.
    """
    losses = torch.empty(len(lrs), device=trainer.device)
    raw: list[float] = []
    average, best = 0.0, math.inf
    trainer.model.train()
    for step, (lr, batch) in enumerate(zip(lrs, _cycle(batcher), strict=False)):
        for group in trainer.optimizer.param_groups:
            group["lr"] = lr
        logs = trainer.train_step(trainer.to_device(batch))
        losses[step] = logs["loss"].detach().float()
        if (step + 1) % _CHECK_EVERY and step + 1 < len(lrs):
            continue
        for value in losses[len(raw) : step + 1].tolist():
            raw.append(value)
            average = smooth * average + (1 - smooth) * value
            smoothed = average / (1 - smooth ** len(raw))  # as in `_ema`
            if not math.isfinite(smoothed) or smoothed > diverge * best:
                return raw, True
            best = min(best, smoothed)
    return raw, False


def _cycle(batcher: Any) -> Iterator[Any]:
    """Batches forever: each pass over the data is a new epoch with its own shuffle order."""
    epoch = 0
    while True:
        batcher.set_epoch(epoch)
        yield from batcher.iter_from(0)
        epoch += 1


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


# ------------------------------------------------------------------------------ borrowing state
@contextlib.contextmanager
def _borrowed(trainer: Trainer) -> Iterator[None]:
    """Lend the Trainer to the range test and give it back untouched.

    Inside, the Trainer has no callbacks (no probe, doctor, checkpoint or progress bar sees the
    test), no schedule and fresh loss/metric accumulators; on exit its attributes, the model's
    weights, buffers and train/eval modes, a user-given optimizer's state and every RNG are
    restored.
    """
    model = trainer.model
    attributes = dict(vars(trainer))
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    modes = [(module, module.training) for module in model.modules()]
    rng = rng_state()
    given = (
        trainer.optimizer_spec
        if isinstance(trainer.optimizer_spec, torch.optim.Optimizer)
        else None
    )
    given_state = copy.deepcopy(given.state_dict()) if given is not None else None
    trainer.optimizers, trainer.schedules = {}, {}
    trainer.scaler = trainer.regularizer = None
    trainer.schedule_spec = None
    trainer._pending_state = None
    trainer.callbacks = []
    trainer.doctor = False  # `_setup` would add Probes and a Doctor
    trainer.metrics = []
    trainer.train_metrics = False
    try:
        yield
    finally:
        vars(trainer).clear()
        vars(trainer).update(attributes)
        with torch.no_grad():
            model.load_state_dict(weights)
        for param in model.parameters():
            param.grad = None
        for module, training in modes:
            module.training = training
        if given is not None:
            given.load_state_dict(given_state)
        set_rng_state(rng)


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
