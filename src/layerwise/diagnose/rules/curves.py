"""Rules on the loss curves: overfitting, underfitting, a plateau, an oscillating or NaN loss, and a
learning rate that is too high or too low.

They read the per-epoch history (epoch means, so batch noise is already averaged out) and, where
it sharpens the picture, the probes' sampled step losses. Losses are judged against two levels
that hold for any classifier: the chance level ln(K) where an untrained model starts, and the
floor (0, or the entropy of label-smoothed targets) below which no loss can go. Each rule waits
for a trend over several epochs, so a one-cycle warm-up, dropout, label smoothing or a noisy small
validation set do not raise anything.
"""

from __future__ import annotations

import math
import statistics
from itertools import pairwise
from typing import Any

from layerwise.diagnose.findings import Finding
from layerwise.diagnose.rules import RuleContext, decided_by, finite, fmt, median, number, rule
from layerwise.diagnose.rules import fixes as fx
from layerwise.diagnose.rules.gradients import describe_lead_up, exploded, lead_up

# overfitting
OVERFIT_SMOOTH = 3  # val loss is read as running medians of 3 epochs (small val sets are noisy)
OVERFIT_EPOCHS_AFTER_MIN = 3  # the latest median must come 3+ epochs after the lowest one ...
OVERFIT_REL_RISE = 0.25  # ... and be 25% above it (measured above the loss floor) ...
OVERFIT_ABS_RISE = 0.01  # ... and higher by at least 1% of the chance level (first val loss)
OVERFIT_ACC_GAP = 0.15  # or train accuracy beats val accuracy by 15 points ...
OVERFIT_GAP_EPOCHS = 3  # ... in the median of the last 3 epochs
OVERFIT_NOISE_Z = 3.0  # a val-loss rise counts only when 3x the curve's epoch-to-epoch spread
OVERFIT_SAMPLING_Z = 2.0  # ... and 2x the val loss's standard error over its rows (classifier)
OVERFIT_MEMORISED = 10.0  # (sampling aside when the train loss fell 10x since the val low)
OVERFIT_CONFIRM_Z = 1.0  # the gap's held-out results worse by 1 unit of each noise measure
# underfitting (final diagnosis only)
UNDERFIT_LEVEL = 0.5  # final train loss still above half the chance level (above the floor),
# while train and val fare alike: val within OVERFIT_REL_RISE of train, and not stalled while ...
UNDERFIT_TRAIN_FALL = 0.1  # ... the train loss fell by 10% of its excess over the floor
# learning rate too high
LR_HIGH_FIRST_EPOCH = 1.15  # epoch 1 averaged 15% above the loss before training (probed) ...
LR_HIGH_FIRST_EPOCH_LOOSE = 1.5  # ... 50% above the chance level without probes, or above the
# first sampled batch's loss for regression (one batch's squared error varies a lot)
LR_HIGH_SPIKE = 3.0  # a sampled step loss 3x the loss before training (10x for regression)
LR_HIGH_SPIKE_REGRESSION = 10.0
LR_HIGH_DIVERGE = 1.5  # an epoch loss 1.5x the best before it ...
LR_HIGH_MIN_RISE = 0.1  # ... and higher by at least 10% of the first epoch's loss, not won
# back later (a rise the loss falls back from by half is a swing: oscillating_loss reads it)
LR_HIGH_WEIGHT_GROWTH = 3.0  # or a layer's weights grew 3x in norm while the loss never improved
# learning rate too low
LOW_LR_MIN_EPOCHS = 4
LOW_LR_PROGRESS = 0.3  # less than 30% of the reducible loss of epoch 1 removed ...
LOW_LR_LEVEL = 0.5  # ... the loss still above half the chance level ...
LOW_LR_STEADY = 0.3  # ... and still falling at >= 30% of its average pace (not converging) ...
LOW_LR_MAX_UPDATE = 3e-4  # ... with updates under 3e-4 of the weights' norm (when probed)
# plateau
PLATEAU_EPOCHS = 4  # no real gain for 4 epochs ...
PLATEAU_MIN_GAIN = 0.01  # ... (less than 1% of the loss above the floor) ...
PLATEAU_LEVEL = 0.5  # ... while the loss is above half the chance level ...
PLATEAU_LINEAR_MARGIN = 0.1  # ... and (squared error) above the least-squares line's error by
# more than 10% of the targets' variance
# a classifier's reference: the data check's quick models (logistic regression, 10-NN vote)
REFERENCE_LOSS_MARGIN = 0.02  # loss within 2% of the chance level above their out-of-fold
REFERENCE_ACC_MARGIN = 0.02  # log-loss, and accuracy within 2 points below theirs: as good
# oscillation
OSC_MIN_EPOCHS = 6
OSC_WINDOW = 8  # any 8 consecutive epochs
OSC_MOVE = 0.1  # an epoch-to-epoch change of >= 10% of the loss ...
OSC_MIN_SWING = 0.1  # ... and >= 10% of the range the loss has covered so far counts as a move
OSC_MIN_RISES = 2
OSC_MIN_REVERSALS = 3
OSC_CLIMBS = 3  # or the loss climbs again and again: 3 climbs, each from a low to a high ...
OSC_CLIMB_REL = 0.25  # ... 25% above that low ...
OSC_CLIMB_GIVE_BACK = 0.1  # ... giving back 10% or more of the progress made since the start
OSC_OVERSHOOT_EPOCHS = 2  # a single climb counts only with overshooting batches in 2+ epochs
OSC_CLIMB_Z = 2.0  # a probed climb carried by a few batches (within 2 standard errors) is noise


def _reference(ctx: RuleContext, first_loss: float) -> float:
    """The loss scale absolute guards are measured in: chance level, else the first epoch loss."""
    return ctx.chance_loss if ctx.chance_loss is not None else abs(first_loss)


def _level(ctx: RuleContext, loss: float, first_loss: float) -> float:
    """Share of the reducible loss still left: 1 at chance level, 0 at the floor.

    A regression's chance level is the squared error of predicting the training mean (the
    targets' variance, from the data profile) when the loss is the mean squared error; without
    it, the first epoch's loss. The first epoch alone misleads when the model converges within
    it (a linear model on a few hundred rows): its flat curve then looks like a stall."""
    floor = ctx.loss_floor
    top = _untrained_loss(ctx, first_loss)
    return (loss - floor) / (top - floor) if top > floor else 0.0


def _untrained_loss(ctx: RuleContext, first_loss: float) -> float:
    """The loss of a model that has learnt nothing: the chance level for a classifier, the
    targets' variance for a squared-error regressor (else its first epoch's loss)."""
    if ctx.chance_loss is not None:
        return ctx.chance_loss
    variance = number((ctx.data or {}).get("target_variance"))
    if variance and _squared_error_loss(ctx):
        return max(first_loss, variance)
    return first_loss


def _start_loss(ctx: RuleContext, losses: list[tuple[int, float]]) -> float:
    """Where training started: the higher of the untrained loss and epoch 1's mean.

    Progress is measured from here, not from epoch 1's mean: a model that learns most of its
    task within the first epoch (2,000 dense 2-D points, ~50 steps) already averages half the
    chance level over that epoch, so a rise measured against epoch 1 looks like giving back
    twice the progress it really gives back."""
    first = losses[0][1]
    return max(_untrained_loss(ctx, first), first)


def _squared_error_loss(ctx: RuleContext) -> bool:
    """The recipe's loss is the mean squared error (the default for regression; unknown = yes)."""
    name = ctx.get("train.loss.name")
    return name is None or (isinstance(name, str) and name.lower() in ("mse", "l2", "mse_loss"))


def _lr_rising(ctx: RuleContext, span: int) -> bool:
    """True while a warm-up still raises the rate (over the last epoch or `span` epochs): a curve
    cannot be judged as slow or flat before the rate has reached its working value."""
    lrs = ctx.values("lr")
    if len(lrs) < 2:
        return False
    return lrs[-1] > lrs[-2] * 1.01 or (len(lrs) > span and lrs[-1] > lrs[-1 - span] * 1.05)


def _lr_text(ctx: RuleContext) -> str:
    lr = fx.lr(ctx)
    return f"; lr {fmt(lr)}" if lr is not None else ""


# ---------------------------------------------------------------------------- loss_nan
@rule("loss_nan", "training")
def loss_nan(ctx: RuleContext) -> Finding | None:
    bad_step = next((s for s in ctx.steps if _nonfinite(s.get("loss"))), None)
    bad_epoch = next(
        (
            (int(r.get("epoch", i)), key, number(r.get(key)))
            for i, r in enumerate(ctx.history, start=1)
            for key in ("loss", "val_loss")
            if _nonfinite(r.get(key))
        ),
        None,
    )
    if bad_step is None and bad_epoch is None:
        return None
    evidence: dict[str, Any] = {}
    if bad_step is not None and (bad_epoch is None or int(bad_step["epoch"]) <= bad_epoch[0]):
        epoch, key, value = int(bad_step["epoch"]), "loss", number(bad_step["loss"])
        evidence["step"] = bad_step.get("step")
        before = [s for s in ctx.steps if finite(s.get("loss")) and s["step"] < bad_step["step"]]
        where = f"at step {bad_step.get('step')} (epoch {epoch})"
        if before:
            evidence.update(
                last_finite_loss=before[-1]["loss"], last_finite_step=before[-1]["step"]
            )
            if finite(before[-1].get("grad_norm")):
                evidence["last_finite_grad_norm"] = before[-1]["grad_norm"]
            where += f"; last finite loss {fmt(before[-1]['loss'])} at step {before[-1]['step']}"
    else:
        epoch, key, value = bad_epoch
        previous = [(e, v) for e, v in ctx.series(key) if e < epoch]
        where = f"at epoch {epoch}"
        if previous:
            evidence.update(last_finite_loss=previous[-1][1], last_finite_epoch=previous[-1][0])
            where += f"; last finite {fmt(previous[-1][1])} at epoch {previous[-1][0]}"
    evidence.update(key=key, value=str(value), lr=fx.lr(ctx))
    name = "validation loss" if key == "val_loss" else "training loss"
    bad_inputs = _nonfinite_inputs(ctx)
    causes = [
        "the learning rate is too high: the weights diverged to inf and then NaN",
        "exploding gradients with no gradient clipping",
        "a numerically unsafe loss or layer (log of 0, division by 0) or fp16 overflow",
    ]
    lead = lead_up(ctx) if key == "loss" else None
    if lead:
        evidence["lead_up"] = lead
        where += "; just before: " + describe_lead_up(lead)
    if exploded(lead) and not bad_inputs:
        causes.insert(0, "exploding gradients (see exploding_gradients): " + describe_lead_up(lead))
    if bad_inputs or key == "val_loss":
        causes.insert(0, f"the {bad_inputs or 'validation'} inputs contain NaN or infinite values")
    if bad_inputs and not ctx.get("data.impute"):
        patch = {"data.impute": "median"} if fx.has_recipe(ctx) else {}
    else:
        patch = fx.merge(fx.scale_lr(ctx, 0.1), fx.grad_clip(ctx, 1.0))
    return Finding(
        code="loss_nan",
        severity="fatal",
        message=f"the {name} became {fmt(value)} {where}{_lr_text(ctx)}",
        evidence=evidence,
        epoch=epoch,
        causes=causes,
        remedies=[
            "lower the learning rate 10x (or run `layerwise lr-find` to pick one)",
            "clip the gradient norm (train.grad_clip: 1.0)",
            "check the inputs for NaN/inf and impute them (data.impute: median)",
        ],
        patch=patch,
    )


def _nonfinite(value: Any) -> bool:
    """A logged number that is NaN or infinite (a missing value is not)."""
    return number(value) is not None and not finite(value)


def _nonfinite_inputs(ctx: RuleContext) -> str:
    """Which splits of the data profile hold NaN/inf values ('' when none or unknown)."""
    splits = ((ctx.data or {}).get("nonfinite") or {}).items()
    return ", ".join(name for name, info in splits if (info or {}).get("rows"))


# ---------------------------------------------------------------------------- lr_too_high
def _step_losses(ctx: RuleContext) -> list[tuple[dict[str, Any], float]]:
    """(record, loss) of the regularly sampled steps with a finite loss, oldest first (the dense
    early samples only add moments the regular ones never showed before)."""
    out = []
    for record in ctx.regular_steps:
        loss = number(record.get("loss"))
        if loss is not None and math.isfinite(loss):
            out.append((record, loss))
    return out


def lr_too_high_signal(ctx: RuleContext) -> tuple[int, str, dict[str, Any]] | None:
    """(epoch, message, evidence) of the earliest sign that updates overshoot, or None."""
    if not ctx.supervised:
        return None
    losses = ctx.series("loss")
    steps = _step_losses(ctx)
    chance = ctx.chance_loss
    signs: list[tuple[int, str, dict[str, Any]]] = []
    start = steps[0][1] if steps else None
    # Where training started, measured on one batch, is never below the untrained loss: ln K
    # for a classifier, the targets' variance for a squared-error regressor (a model that has
    # learnt nothing does no better than the mean). One batch of 16 standardised diabetes
    # targets scored 0.39, a lucky draw; the run's first epoch then averaged 0.74 while
    # already below the variance (1.0).
    base = max(start, _untrained_loss(ctx, start)) if start is not None else chance
    # 1. the first epoch, on average, was worse than the model before any update
    if losses and base and (losses[0][0] == 1 or (steps and steps[0][0].get("epoch") == 1)):
        epoch, first = losses[0]
        strict = start is not None and chance is not None
        factor = LR_HIGH_FIRST_EPOCH if strict else LR_HIGH_FIRST_EPOCH_LOOSE
        if first >= factor * base:
            what = "the loss before training" if start is not None else "the chance level"
            if start is not None and chance is None and base > start:
                what = "the targets' variance"
            message = (
                f"epoch {epoch} averaged a loss of {fmt(first)}, "
                f"{fmt(first / base)}x {what} ({fmt(base)})"
            )
            evidence = {
                "first_epoch_loss": first,
                "baseline": base,
                "strict": strict,
                "rests_on": ["overshoot"],
            }
            signs.append((epoch, message, evidence))
    # 2. a sampled step far above where training started
    if start is not None and len(steps) > 1 and base:
        spike, loss = max(steps[1:], key=lambda p: p[1])
        factor = LR_HIGH_SPIKE if chance is not None else LR_HIGH_SPIKE_REGRESSION
        if loss >= factor * base:
            message = (
                f"the loss jumped to {fmt(loss)} at step {spike.get('step')}, "
                f"{loss / base:.3g}x the loss before training ({fmt(base)})"
            )
            evidence = {
                "spike_loss": loss,
                "spike_step": spike.get("step"),
                "baseline": base,
                "rests_on": ["overshoot"],
            }
            signs.append((int(spike.get("epoch", 1)), message, evidence))
    # 3. the epoch loss climbs well above its best so far, and stays up
    for i in range(1, len(losses)):
        epoch, value = losses[i]
        best_epoch, best = min(losses[:i], key=lambda p: p[1])
        if _won_back(losses[i:], best):
            continue
        if value >= LR_HIGH_DIVERGE * best and value - best >= LR_HIGH_MIN_RISE * losses[0][1]:
            signs.append(
                (
                    epoch,
                    f"the training loss rose from {fmt(best)} (epoch {best_epoch}) "
                    f"to {fmt(value)} (epoch {epoch})",
                    {
                        "best_loss": best,
                        "best_epoch": best_epoch,
                        "risen_loss": value,
                        "rests_on": ["rising_loss"],
                    },
                )
            )
            break
    # 4. the weights blew up in norm while the loss made no progress
    if (blowup := _weight_blowup(ctx, start)) is not None:
        signs.append(blowup)
    return min(signs, key=lambda s: s[0]) if signs else None


def _won_back(after: list[tuple[int, float]], best: float) -> bool:
    """True when the loss, from its first epoch in `after` on, rose and then fell back by half
    of that rise (the end of a climb in `climbs`).

    A divergence does not undo itself: updates that overshoot keep the loss up (a LeNet under
    Adam at 0.02 ends at 5x its best loss). A single epoch's spike that the next epochs win back
    is a swing, `oscillating_loss`'s to judge with its own yardstick, and on a converged model
    it is the usual noise of Adam at tiny losses: a circles MLP at 99.9% accuracy went from
    0.004 to 0.044 for one epoch and back to 0.004 two epochs later."""
    peak = after[0][1]
    for _, value in after[1:]:
        if value <= peak - (peak - best) / 2:
            return True
        peak = max(peak, value)
    return False


def _weight_blowup(ctx: RuleContext, start: float | None) -> tuple[int, str, dict] | None:
    """The first sampled step where a layer's weight norm reached `LR_HIGH_WEIGHT_GROWTH` times
    its norm before training, if the loss of that epoch was no better than before training.

    Updates that overshoot need not show in the loss: SGD with momentum at a rate far too high
    can throw every ReLU of a CNN into silence within one epoch, and a network of dead units
    outputs its biases, whose loss sits at chance, not above it. What does show is the step
    size: each update a sizeable share of the weights (update/weight ratios of 0.1-0.4 where
    healthy training takes ~1e-3-1e-2), so the weights' norm multiplies while nothing is
    learnt. Weights grow in healthy training too, but only as the loss falls: growth counts
    only when the epoch's mean loss was still at or above the loss before any update."""
    if start is None:
        return None
    epoch_loss = dict(ctx.series("loss"))
    initial: dict[str, float] = {}
    for record in ctx.finite_steps:
        for name, stats in (record.get("layers") or {}).items():
            norm = number(stats.get("weight_norm"))
            if norm is None or not math.isfinite(norm) or norm <= 0:
                continue
            first = initial.setdefault(name, norm)
            if norm < LR_HIGH_WEIGHT_GROWTH * first:
                continue
            epoch = int(record.get("epoch", 1))
            loss = epoch_loss.get(epoch)
            if loss is None or loss < start:
                return None  # the growth came with learning
            message = (
                f"{name}'s weight norm grew from {fmt(first)} to {fmt(norm)} by step "
                f"{record.get('step')} while epoch {epoch}'s loss ({fmt(loss)}) stayed above the "
                f"loss before training ({fmt(start)})"
            )
            evidence = {
                "weight_layer": name,
                "weight_norm_before": first,
                "weight_norm": norm,
                "growth_step": record.get("step"),
                "epoch_loss": loss,
                "baseline": start,
                "rests_on": ["overshoot"],
            }
            return epoch, message, evidence
    return None


@rule("lr_too_high", "training")
def lr_too_high(ctx: RuleContext) -> Finding | None:
    signal = lr_too_high_signal(ctx)
    if signal is None:
        return None
    epoch, message, evidence = signal
    return Finding(
        code="lr_too_high",
        severity="error",
        message=message + _lr_text(ctx),
        evidence={**evidence, "lr": fx.lr(ctx)},
        epoch=epoch,
        causes=[
            "the learning rate is too high for this model and batch size: updates overshoot",
            "a warm-up is missing, so the first large updates wreck the initial weights",
        ],
        remedies=[
            "lower the learning rate 10x, or run `layerwise lr-find RECIPE` to pick one",
            "warm the rate up (train.schedule: onecycle) and clip gradients (train.grad_clip)",
        ],
        patch=fx.scale_lr(ctx, 0.1),
    )


# ---------------------------------------------------------------------------- lr_too_low
def lr_too_low_signal(ctx: RuleContext) -> tuple[int, str, dict[str, Any]] | None:
    """A loss that falls slowly but steadily while still far from fitted, or None."""
    losses = ctx.series("loss")
    n = len(losses)
    if not ctx.supervised or n < LOW_LR_MIN_EPOCHS or _lr_rising(ctx, 1):
        return None
    values = [v for _, v in losses]
    first, last = values[0], values[-1]
    floor = ctx.loss_floor
    progress = (first - last) / (first - floor) if first > floor else 1.0
    level = _level(ctx, last, first)
    recent_pace = (values[-3] - values[-1]) / 2
    average_pace = (first - last) / (n - 1)
    steady = values[-3] > values[-2] > values[-1] and recent_pace >= LOW_LR_STEADY * average_pace
    if not (progress < LOW_LR_PROGRESS and level >= LOW_LR_LEVEL and steady):
        return None
    ratio = _update_ratio(ctx)
    if ratio is not None and ratio >= LOW_LR_MAX_UPDATE:
        return None  # the weights do move: a slow loss has another cause (a tiny model, …)
    ref = f"the chance level {fmt(ctx.chance_loss)}" if ctx.chance_loss else "its first epoch"
    message = (
        f"the loss fell only {progress:.1%} of the way in {n} epochs ({fmt(first)} -> "
        f"{fmt(last)}), steadily, and is still {level:.0%} of {ref}"
    )
    evidence: dict[str, Any] = {
        "first_loss": first,
        "last_loss": last,
        "progress": progress,
        "level": level,
        "recent_pace": recent_pace,
    }
    if ratio is not None:
        evidence["median_update_ratio"] = ratio
        message += f"; median update/weight ratio {ratio:.1e}"
    return losses[-1][0], message, evidence


def _update_ratio(ctx: RuleContext) -> float | None:
    """Median update-to-weight ratio of the weight layers over the latest probed epoch."""
    per_epoch = ctx.layer_epoch_medians("update_ratio", role="param")
    if not per_epoch:
        return None
    return median(per_epoch[max(per_epoch)].values())


@rule("lr_too_low", "training")
def lr_too_low(ctx: RuleContext) -> Finding | None:
    signal = lr_too_low_signal(ctx)
    if signal is None:
        return None
    epoch, message, evidence = signal
    return Finding(
        code="lr_too_low",
        severity="warning",
        message=message + _lr_text(ctx),
        evidence={**evidence, "lr": fx.lr(ctx)},
        epoch=epoch,
        causes=["the learning rate is too low: each update moves the weights very little"],
        remedies=[
            "raise the learning rate 10x, or run `layerwise lr-find RECIPE` to pick one",
            "use a one-cycle schedule (train.schedule: onecycle) to reach a high rate safely",
        ],
        patch=fx.scale_lr(ctx, 10.0),
    )


# ---------------------------------------------------------------------------- loss_plateau
@rule("loss_plateau", "training")
def loss_plateau(ctx: RuleContext) -> Finding | None:
    losses = ctx.series("loss")
    if not ctx.supervised or len(losses) <= PLATEAU_EPOCHS or _lr_rising(ctx, PLATEAU_EPOCHS):
        return None
    before, recent = losses[:-PLATEAU_EPOCHS], losses[-PLATEAU_EPOCHS:]
    best = min(v for _, v in before)
    recent_best = min(v for _, v in recent)
    floor = ctx.loss_floor
    if best <= floor:
        return None
    gain = (best - recent_best) / (best - floor)
    level = _level(ctx, recent_best, losses[0][1])
    if gain >= PLATEAU_MIN_GAIN or level < PLATEAU_LEVEL:
        return None
    linear = _linear_shortfall(ctx, recent_best)
    if linear is not None and linear < PLATEAU_LINEAR_MARGIN:
        return None  # as good as a least-squares line: what is left may be the targets' noise
    reference = simple_model_reference(ctx)
    if reference is not None and reference["matched"]:
        return None  # as good as a simple classifier: converged at what the labels allow
    ref_text, ref_evidence = _reference_evidence(reference)
    # Where the flat stretch began: the first epoch already within the gain margin of the best.
    lowest = min(v for _, v in losses)
    since = next(e for e, v in losses if v - lowest <= PLATEAU_MIN_GAIN * (v - floor))
    ref = f"the chance level {fmt(ctx.chance_loss)}" if ctx.chance_loss else "its first epoch"
    return Finding(
        code="loss_plateau",
        severity="warning",
        message=(
            f"the loss has stayed within {PLATEAU_MIN_GAIN:.0%} of {fmt(lowest)} since epoch "
            f"{since} ({losses[-1][0] - since + 1} epochs) and is still {level:.0%} of {ref}"
            f"{ref_text}"
        ),
        evidence={
            "since_epoch": since,
            "lowest_loss": lowest,
            "best_before_window": best,
            "best_in_window": recent_best,
            "gain": gain,
            "level": level,
            "window": PLATEAU_EPOCHS,
            **({"linear_shortfall": linear} if linear is not None else {}),
            **ref_evidence,
        },
        epoch=since,
        causes=[
            "the learning rate is too high to settle into a minimum (or too low to leave one)",
            "the model is too small, or held back by strong weight decay",
            "the labels carry little signal (label noise) or the inputs are badly scaled",
        ],
        remedies=[
            "lower the rate when the loss stalls (train.schedule: plateau) or use onecycle",
            "run `layerwise lr-find RECIPE` to check the learning rate",
            "try a larger model; check the data with `layerwise doctor`",
        ],
        patch=fx.merge(
            fx.reduce_on_plateau(ctx)
            if ctx.get("train.schedule.name", "constant") in (None, "constant")
            else fx.schedule(ctx, "onecycle"),
            fx.less_weight_decay(ctx),
        ),
    )


def _linear_shortfall(ctx: RuleContext, loss: float) -> float | None:
    """How far a squared-error regressor's loss sits above the least-squares line through its
    training rows (`linear_fit_mse` of the data profile), as a share of the targets' variance;
    None when unknown or for other losses.

    A regressor's chance level (the variance) says where it started, not where it can get: on
    noisy targets even the best model keeps a large share of it (a linear model of the
    diabetes data keeps about half), so a flat loss at half the variance is convergence, not a
    stall. The least-squares line is the fit the inputs allow at least; a network whose loss is
    within a tenth of the variance of it has learnt what a line can, and a network stuck at the
    mean prediction while a line explains much of the variance is still named."""
    if ctx.chance_loss is not None or not _squared_error_loss(ctx):
        return None
    data = ctx.data or {}
    linear, variance = number(data.get("linear_fit_mse")), number(data.get("target_variance"))
    if linear is None or not variance:
        return None
    return (loss - linear) / variance


def simple_model_reference(ctx: RuleContext) -> dict[str, Any] | None:
    """How the classifier compares with the data check's quick models (`matched`: it does as
    well as they do), or None without a reference.

    A classifier's chance level says where it starts, not where it can get: when the labels are
    uncertain given the inputs (churn, credit or medical risk; labels drawn from a logistic
    model) even the best model keeps most of ln K. The data check fits two quick models out of
    fold (`label_noise.reference` in the data profile: a logistic regression and a
    10-nearest-neighbour vote on the standardised inputs, see
    `layerwise.data.label_noise.simple_reference`). A network whose latest loss is within
    `REFERENCE_LOSS_MARGIN` of the chance level of their lower out-of-fold log-loss, and whose
    accuracy is within `REFERENCE_ACC_MARGIN` of their higher accuracy (when it logs one), has
    learnt what they can: train or val, whichever is better, as both are honest evidence of a
    fit. A network short of that (a linear model on circles, which the vote separates) is still
    named, and its finding names the reference. No reference (images, inputs wider than 50
    features, token ids, label-noise check off, regression): None."""
    if ctx.chance_loss is None:
        return None
    reference = ((ctx.data or {}).get("label_noise") or {}).get("reference")
    if not isinstance(reference, dict):
        return None
    ref_loss, ref_acc = number(reference.get("log_loss")), number(reference.get("accuracy"))
    if ref_loss is None or ref_acc is None:
        return None
    losses = [s[-1][1] for s in (ctx.series("loss"), ctx.series("val_loss")) if s]
    accuracies = [s[-1][1] for s in (ctx.series("accuracy"), ctx.series("val_accuracy")) if s]
    if not losses:
        return None
    loss, accuracy = min(losses), max(accuracies) if accuracies else None
    matched = loss <= ref_loss + REFERENCE_LOSS_MARGIN * ctx.chance_loss and (
        accuracy is None or accuracy >= ref_acc - REFERENCE_ACC_MARGIN
    )
    return {
        "matched": matched,
        "loss": loss,
        "accuracy": accuracy,
        "reference_log_loss": ref_loss,
        "reference_accuracy": ref_acc,
        "reference_models": [reference.get("log_loss_model"), reference.get("accuracy_model")],
    }


def _reference_evidence(reference: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """Message suffix and evidence naming the simple models a finding was measured against."""
    if reference is None:
        return "", {}
    loss_model, acc_model = reference["reference_models"]
    text = f"; out of fold a {loss_model} reaches loss {fmt(reference['reference_log_loss'])}" + (
        f" and accuracy {reference['reference_accuracy']:.3f}"
        if acc_model == loss_model
        else f", a {acc_model} accuracy {reference['reference_accuracy']:.3f}"
    )
    keep = ("reference_log_loss", "reference_accuracy", "reference_models")
    return text, {key: reference[key] for key in keep}


# ---------------------------------------------------------------------------- oscillating_loss
@rule("oscillating_loss", "training")
def oscillating_loss(ctx: RuleContext) -> Finding | None:
    losses = ctx.series("loss")
    if not ctx.supervised or len(losses) < OSC_MIN_EPOCHS:
        return None
    # Every window ending at epoch OSC_MIN_EPOCHS or later: a run that swung for ten epochs
    # and calmed down at the end still oscillated.
    found = next(
        (
            sign
            for end in range(OSC_MIN_EPOCHS, len(losses) + 1)
            if (sign := _swings(losses[max(0, end - OSC_WINDOW) : end], losses[:end]))
        ),
        None,
    )
    if found is not None:
        window, rises, reversals = found
        shown = ", ".join(fmt(v) for _, v in window)
        message = (
            f"the training loss went up {len(rises)} times in {len(window)} epochs "
            f"(epochs {window[0][0]}-{window[-1][0]}: {shown}){_lr_text(ctx)}"
        )
        evidence: dict[str, Any] = {
            "losses": [v for _, v in window],
            "epochs": [e for e, _ in window],
            "rises": len(rises),
            "reversals": reversals,
        }
        epoch = rises[0]
    else:
        start = _start_loss(ctx, losses)
        found_climbs = [c for c in climbs(losses, start) if not _few_batches(ctx, c, start)]
        # A climb as large as the divergence `lr_too_high` reads, that came back down, is a
        # swing rather than a divergence: the loss fell, rose and fell again. Oscillation is a
        # repetition, though: two climbs are one, a single climb is one event and counts only
        # when batches overshoot again and again (see `_overshoots`).
        big = [c for c in found_climbs if c[3] >= LR_HIGH_DIVERGE * c[2] and c[4]]
        overshoots = _overshoots(ctx, start)
        repeated = len(found_climbs) >= 2 or len({e for e, _ in overshoots}) >= OSC_OVERSHOOT_EPOCHS
        if len(found_climbs) < OSC_CLIMBS and not (big and repeated):
            return None
        shown = ", ".join(
            f"{fmt(low)} -> {fmt(high)} (epochs {a}-{b})" for a, b, low, high, _ in found_climbs
        )
        message = (
            f"the training loss climbed back {len(found_climbs)} times: {shown}{_lr_text(ctx)}"
        )
        evidence = {
            "climbs": [
                {"from_epoch": a, "to_epoch": b, "low": low, "high": high, "recovered": back}
                for a, b, low, high, back in found_climbs
            ],
            "rises": len(found_climbs),
        }
        if overshoots:
            evidence["overshoots"] = [{"epoch": e, "loss": v} for e, v in overshoots]
            evidence["loss_before_training"] = start
            message += (
                f"; {len(overshoots)} sampled batches in "
                f"{len({e for e, _ in overshoots})} epochs scored worse than the untrained "
                f"model ({fmt(start)})"
            )
        epoch = found_climbs[0][1]
    return Finding(
        code="oscillating_loss",
        severity="warning",
        message=message,
        evidence=evidence,
        epoch=epoch,
        causes=[
            "the learning rate is a little too high: updates jump across the minimum",
            "batches too small or too uneven (a noisy gradient estimate)",
        ],
        remedies=[
            "lower the learning rate about 3x",
            "anneal the rate (train.schedule: cosine or onecycle); use larger batches",
        ],
        patch=fx.merge(
            fx.scale_lr(ctx, 0.3),
            fx.schedule(ctx, "cosine")
            if ctx.get("train.schedule.name", "constant") in (None, "constant")
            else {},
        ),
    )


def climbs(
    losses: list[tuple[int, float]], start: float | None = None
) -> list[tuple[int, int, float, float, bool]]:
    """(low epoch, high epoch, low, high, recovered) of each time the loss climbed back up.

    A climb starts at the lowest loss since the last climb and counts once the loss is
    `OSC_CLIMB_REL` above that low and the rise gives back `OSC_CLIMB_GIVE_BACK` of the progress
    made from the start (`start`: where training began, see `_start_loss`; epoch 1's loss when
    not given) down to the low; it ends at its peak, once the loss has fallen back by half
    the rise (or training ended). Adam at too high a rate climbs like this again and again late
    in training, a few epochs up and a few down, which epoch-to-epoch zig-zags do not show, and
    which a share of the progress tells from the blips of a small data set (+30% on a loss of
    0.1 after falling from 0.63 gives back 5%) or a converged run's tiny losses."""
    if not losses:
        return []
    first = losses[0][1] if start is None else start
    found: list[tuple[int, int, float, float, bool]] = []
    low_epoch, low = losses[0]
    peak: tuple[int, float] | None = None
    for epoch, value in losses[1:]:
        if peak is None:
            if value < low:
                low_epoch, low = epoch, value
            elif value >= (1 + OSC_CLIMB_REL) * low and value - low >= OSC_CLIMB_GIVE_BACK * (
                first - low
            ):
                peak = (epoch, value)
        elif value > peak[1]:
            peak = (epoch, value)
        elif value <= peak[1] - (peak[1] - low) / 2:
            found.append((low_epoch, peak[0], low, peak[1], True))
            low_epoch, low, peak = epoch, value, None
    if peak is not None:
        found.append((low_epoch, peak[0], low, peak[1], False))
    return found


def _few_batches(
    ctx: RuleContext, climb: tuple[int, int, float, float, bool], start: float
) -> bool:
    """True when the probes show a climb of the epoch mean carried by a few batches: the rise is
    within `OSC_CLIMB_Z` standard errors of the two epochs' means (their sampled batches' spread
    over the root of the batches per epoch) and no batch during it scored worse than the
    untrained model (`start`).

    On a small data set a few hard rows carry the epoch mean: iris in centimetres (105 rows,
    7 batches of 16, Adam at 1e-2) climbed 0.058 -> 0.205 because one batch scored 0.83 in an
    epoch whose other batches scored 0.01-0.32 (1.3 standard errors, all below ln 3 = 1.10).
    Updates that overshoot show either way: Adam at 0.05 on digits throws single batches to
    3-15 nats (above ln 10), or lifts every batch at once (0.025 -> 0.40, 22 standard errors).
    False without two sampled batches in each epoch."""
    low_epoch, high_epoch = climb[0], climb[1]
    per_epoch: dict[int, list[float]] = {}
    for record in ctx.regular_steps:
        loss, epoch = number(record.get("loss")), int(record.get("epoch", 1))
        if loss is not None and math.isfinite(loss) and low_epoch <= epoch <= high_epoch:
            per_epoch.setdefault(epoch, []).append(loss)
    if any(loss > start for e, v in per_epoch.items() if e > low_epoch for loss in v):
        return False
    low, high = per_epoch.get(low_epoch, []), per_epoch.get(high_epoch, [])
    if len(low) < 2 or len(high) < 2:
        return False
    steps = dict(ctx.series("step"))
    variance = 0.0
    for epoch, batches in ((low_epoch, low), (high_epoch, high)):
        per_epoch_steps = steps.get(epoch, 0) - steps.get(epoch - 1, 0)
        variance += statistics.variance(batches) / max(per_epoch_steps, len(batches))
    return variance > 0 and climb[3] - climb[2] < OSC_CLIMB_Z * math.sqrt(variance)


def _overshoots(ctx: RuleContext, start: float) -> list[tuple[int, float]]:
    """(epoch, loss) of the regularly sampled batches after the first epoch that scored worse
    than the untrained model (`start`: the chance level, or epoch 1's mean if higher).

    An update that overshoots throws the model past where it started: Adam at 0.05 on digits
    scores single batches at 2.5-5.2 nats, above ln 10 = 2.30, in 3-5 different epochs while
    its epoch means swing, because its logits grow so large that a few rows are confidently
    wrong. This is what tells an oscillating rate from a single excursion of a healthy run's
    epoch mean: an iris MLP under Adam at 1e-2 (raw centimetres, 7 batches of 16 per epoch)
    climbed once from 0.18 to 0.29 (1.6x) and recovered in three epochs, but none of its 553
    sampled batches after epoch 1 scored above 0.94 (ln 3 = 1.10), and none during the climb
    above 0.63. Empty without probes."""
    out = []
    for record in ctx.regular_steps:
        loss, epoch = number(record.get("loss")), int(record.get("epoch", 1))
        if epoch > 1 and loss is not None and math.isfinite(loss) and loss > start:
            out.append((epoch, loss))
    return out


def _swings(
    window: list[tuple[int, float]], so_far: list[tuple[int, float]]
) -> tuple[list[tuple[int, float]], list[int], int] | None:
    """(window, epochs that rose, direction changes) when the window swings, else None.

    A change counts as a move when it is OSC_MOVE of the loss and OSC_MIN_SWING of the range the
    loss has covered so far (first epoch to lowest), so the epoch-to-epoch noise of a small data
    set with dropout, or of a converged run's tiny losses, does not count."""
    values = [v for _, v in so_far]
    guard = OSC_MIN_SWING * (max(values) - min(values))
    moves: list[tuple[int, int]] = []  # (epoch, +1 up / -1 down)
    for (_, prev), (epoch, value) in pairwise(window):
        change = value - prev
        if abs(change) >= OSC_MOVE * abs(prev) and abs(change) >= guard:
            moves.append((epoch, 1 if change > 0 else -1))
    rises = [e for e, sign in moves if sign > 0]
    reversals = sum(1 for a, b in pairwise(moves) if a[1] != b[1])
    if len(rises) < OSC_MIN_RISES or reversals < OSC_MIN_REVERSALS:
        return None
    return window, rises, reversals


# ---------------------------------------------------------------------------- overfitting
@rule("overfitting", "training")
def overfitting(ctx: RuleContext) -> Finding | None:
    if not ctx.supervised:
        return None
    sign = _val_loss_rise(ctx) or _accuracy_gap(ctx)
    if sign is None:
        return None
    epoch, message, evidence = sign
    return Finding(
        code="overfitting",
        severity="warning",
        message=message,
        evidence=evidence,
        epoch=epoch,
        causes=[
            "the model memorises the training set: too much capacity for this much data",
            "too little regularisation (weight decay, dropout, augmentation)",
            "training runs long after the validation loss stopped improving",
        ],
        remedies=[
            "stop at the best validation loss (train.early_stopping)",
            "add weight decay and dropout; augment image data",
            "get more data, or use a smaller model",
        ],
        patch=fx.merge(
            fx.early_stopping(ctx), fx.more_weight_decay(ctx), fx.more_dropout(ctx), fx.augment(ctx)
        ),
    )


def _val_loss_rise(ctx: RuleContext) -> tuple[int, str, dict[str, Any]] | None:
    """Val loss clearly up from its lowest point for several epochs while the train loss fell.

    Both ends are running medians of 3 epochs, so one lucky or unlucky epoch of a small
    validation set moves neither."""
    val = ctx.series("val_loss")
    train = dict(ctx.series("loss"))
    half = OVERFIT_SMOOTH // 2
    smooth = [
        (val[i][0], median(v for _, v in val[i - half : i + half + 1]))
        for i in range(half, len(val) - half)
    ]
    if len(smooth) <= OVERFIT_EPOCHS_AFTER_MIN:
        return None
    min_epoch, low = min(smooth, key=lambda p: p[1])
    last_epoch, recent = smooth[-1]
    if last_epoch - min_epoch < OVERFIT_EPOCHS_AFTER_MIN:
        return None
    rise = recent - low
    guard = OVERFIT_ABS_RISE * _reference(ctx, val[0][1])
    if rise < OVERFIT_REL_RISE * max(low - ctx.loss_floor, 0.0) or rise < guard:
        return None
    train_then, train_now = train.get(min_epoch), train.get(val[-1][0])
    if train_then is None or train_now is None or train_now > train_then:
        return None  # both rising is divergence, not overfitting
    memorised = train_now - ctx.loss_floor <= (train_then - ctx.loss_floor) / OVERFIT_MEMORISED
    noise = _val_noise(ctx, val, min_epoch, recent, use_sampling=not memorised)
    if rise < noise["needed"]:
        return None  # within what the val curve's own noise moves it: not a trend
    message = (
        f"val loss rose from {fmt(low)} (epoch {min_epoch}) to {fmt(recent)} (epoch "
        f"{last_epoch}; medians of 3 epochs) while the train loss fell from {fmt(train_then)} "
        f"to {fmt(train_now)}"
    )
    evidence = {
        "rests_on": ["val_loss_rise"],
        "val_loss_min": low,
        "val_loss_min_epoch": min_epoch,
        "val_loss_recent": recent,
        "train_loss_at_min": train_then,
        "train_loss_last": train_now,
        **{k: v for k, v in noise.items() if v is not None},
    }
    gap = _gap_now(ctx)
    if gap is not None:
        evidence["accuracy_gap"] = gap
    return min_epoch + 1, message, evidence


def _val_noise(
    ctx: RuleContext,
    val: list[tuple[int, float]],
    min_epoch: int,
    recent: float,
    use_sampling: bool = True,
) -> dict[str, float | None]:
    """How far the val loss moves by noise alone, and the rise that therefore counts.

    Two noises, the larger decides (`needed` in the result):

    - *Epoch to epoch* (`epoch_spread`): the median absolute deviation of the val loss's
      successive changes from the epoch before its lowest median to the end, around their
      median (a steady climb moves every epoch by about the same amount and is not its own
      noise). The rise must be `OVERFIT_NOISE_Z` = 3 of them: a dense 2-D problem at 99.5%
      accuracy whose val loss jumps 0.005-0.076 between epochs rises 1.4 of its spread, the
      overfitting setups 50-200.
    - *Sampling* (`sampling_error`, classifiers with a val accuracy): the val loss is a mean
      over n rows, and at a low loss it is carried by the few rows the model gets wrong. With
      an error rate e (1 - val accuracy, median of the last epochs), a loss L carried by those
      rows has a per-row spread of about L * sqrt((1 - e) / e), so the val loss is known to
      within a standard error of that / sqrt(n). A rise under `OVERFIT_SAMPLING_Z` = 2 of them
      is a handful of rows growing more confident in their mistakes (iris, 45 val rows, 3 of
      them wrong throughout: val loss 0.12 -> 0.16 at 93.3% val accuracy on every epoch), not
      a model that does worse on data it has not seen. A model with no val errors has nothing
      to carry such a rise: it is not judged by the val loss then. Not applied (`use_sampling`
      false) when the train loss fell `OVERFIT_MEMORISED` = 10-fold since the val loss's low:
      the model is then memorising its training rows while the val loss rises, which is what
      the finding names, however few val rows show it (a 1024x1024 MLP on digits: train loss
      0.015 -> 2e-5 while 3 of 144 val rows carry a rise 0.089 -> 0.126; the healthy cases
      above cut theirs 1.4-3.5-fold).
    """
    values = [v for e, v in val if e >= min_epoch - 1]
    changes = [b - a for a, b in pairwise(values)]
    spread = None
    if len(changes) >= 2:
        typical = median(changes) or 0.0
        spread = median(abs(c - typical) for c in changes)
    needed = OVERFIT_NOISE_Z * spread if spread else 0.0
    error_rate, sampling = None, None
    accuracy = ctx.values("val_accuracy")
    rows = number(((ctx.data or {}).get("sizes") or {}).get("val"))
    if use_sampling and ctx.classification and accuracy and rows:
        error_rate = 1.0 - (median(accuracy[-OVERFIT_GAP_EPOCHS:]) or 0.0)
        if error_rate <= 0:
            needed = math.inf
        else:
            per_row = recent * math.sqrt((1 - error_rate) / error_rate)
            sampling = per_row / math.sqrt(rows)
            needed = max(needed, OVERFIT_SAMPLING_Z * sampling)
    return {
        "epoch_spread": spread,
        "val_error_rate": error_rate,
        "sampling_error": sampling,
        "needed": needed,
    }


def _gap_now(ctx: RuleContext) -> float | None:
    train, val = dict(ctx.series("accuracy")), dict(ctx.series("val_accuracy"))
    gaps = [train[e] - val[e] for e in sorted(set(train) & set(val))]
    return median(gaps[-OVERFIT_GAP_EPOCHS:]) if gaps else None


def _val_still_improving(ctx: RuleContext) -> bool:
    """True when the val loss or the val accuracy reached its best within the last
    `OVERFIT_EPOCHS_AFTER_MIN` epochs. A train/val accuracy gap alone then costs nothing: the
    model still gains on held-out data while it memorises the rest of its training set (a
    bag-of-embeddings text model reaches 99% train accuracy while val accuracy is still
    climbing), and stopping now would lose, not save, held-out performance. The same patience
    as the val-loss rise: overfitting is named once held-out progress has stopped for a while."""
    val_loss, val_acc = ctx.series("val_loss"), ctx.series("val_accuracy")
    if not val_loss and not val_acc:
        return False
    last = max(e for e, _ in val_loss + val_acc)
    best = []
    if val_loss:
        best.append(min(val_loss, key=lambda p: p[1])[0])
    if val_acc:
        best.append(max(val_acc, key=lambda p: p[1])[0])
    return last - max(best) < OVERFIT_EPOCHS_AFTER_MIN


def _accuracy_gap(ctx: RuleContext) -> tuple[int, str, dict[str, Any]] | None:
    """Train accuracy far above val accuracy over the last epochs."""
    train, val = dict(ctx.series("accuracy")), dict(ctx.series("val_accuracy"))
    epochs = sorted(set(train) & set(val))
    if len(epochs) < OVERFIT_GAP_EPOCHS or _lr_rising(ctx, OVERFIT_GAP_EPOCHS):
        return None
    gaps = [(e, train[e] - val[e]) for e in epochs]
    gap = median(g for _, g in gaps[-OVERFIT_GAP_EPOCHS:])
    if gap is None or gap < OVERFIT_ACC_GAP:
        return None
    if _val_still_improving(ctx):
        return None
    worse = _held_out_worse(ctx)
    if worse is None:
        return None  # held-out results are flat within their noise: a gap, not yet a cost
    start = epochs[-1]
    for e, g in reversed(gaps):
        if g < OVERFIT_ACC_GAP:
            break
        start = e
    last = epochs[-1]
    message = (
        f"train accuracy {train[last]:.3f} vs val accuracy {val[last]:.3f} at epoch {last} "
        f"(gap {gap:.3f}, median of the last {OVERFIT_GAP_EPOCHS} epochs)"
    )
    return (
        start,
        message,
        {
            "rests_on": ["accuracy_gap"],
            "accuracy_gap": gap,
            "train_accuracy": train[last],
            "val_accuracy": val[last],
            "since_epoch": start,
            **worse,
        },
    )


def _held_out_worse(ctx: RuleContext) -> dict[str, Any] | None:
    """How held-out results got worse since their best, beyond their noise; None when they
    did not (flat within noise is not worse).

    The accuracy gap names overfitting once it costs something on unseen data. A held-out
    best a few epochs back is not that cost when the later epochs sit within the noise of
    it: a 1-D CNN on 1,500 synthetic token documents (8 epochs) had train accuracy 0.96 and
    val accuracy 0.77, and the running median of its val loss rose 0.495 -> 0.512 from epoch
    4, 0.4 standard errors of a val loss over 500 rows (2.1 of its epoch-to-epoch spreads),
    with val accuracy at 0.772 against its best 0.778 (0.3 of theirs). Worse means either of,
    by `OVERFIT_CONFIRM_Z` = 1 unit of each noise measure (the gap and the stall are the
    evidence; this only asks which way held-out results moved, so one standard error, the
    "more likely than not beyond noise" that auto-fix's McNemar test also uses, not the two
    of a rise that must stand alone):

    - the val loss's running median (3 epochs) rose from its lowest by more than the val
      curve's noise: its epoch-to-epoch spread and its sampling error (`_val_noise`; the
      latter set aside while the model memorises), without the 25% size bar of the val-loss
      route, which the gap replaces. A 512x512 MLP on 200 MNIST images rises 0.52 -> 0.64 by
      epoch 50 in steps of a few thousandths (24%, too small for the val-loss route); an
      MLP on 1,500 IMDB word-presence rows trained 8 epochs (field seed 203) 0.421 -> 0.499
      (18.5%; 1.7 standard errors, 2.3 spreads);
    - the val accuracy (median of the last `OVERFIT_GAP_EPOCHS`) fell from its best by more
      than one binomial standard error over the val rows.

    Without a val loss the gap is judged as before (nothing to weigh); without the val rows'
    count only the epoch-to-epoch spread weighs the val loss.
    """
    val = ctx.series("val_loss")
    rows = number(((ctx.data or {}).get("sizes") or {}).get("val"))
    if not val:
        return {}
    out: dict[str, Any] = {}
    smooth = _running_medians(val)
    if smooth:
        low_epoch, low = min(smooth, key=lambda p: p[1])
        recent = smooth[-1][1]
        train = dict(ctx.series("loss"))
        then, now = train.get(low_epoch), train.get(val[-1][0])
        memorised = (
            then is not None
            and now is not None
            and now - ctx.loss_floor <= (then - ctx.loss_floor) / OVERFIT_MEMORISED
        )
        noise = _val_noise(ctx, val, low_epoch, recent, use_sampling=not memorised)
        noise["needed"] = OVERFIT_CONFIRM_Z * max(
            noise["epoch_spread"] or 0.0,
            noise["sampling_error"] or 0.0,
            0.0 if math.isfinite(noise["needed"]) else math.inf,  # no val errors: no rise
        )
        if recent - low > 0 and recent - low >= noise["needed"]:
            out.update(val_loss_min=low, val_loss_recent=recent, val_loss_min_epoch=low_epoch)
            out.update({k: v for k, v in noise.items() if v is not None})
    accuracy = ctx.values("val_accuracy")
    if accuracy and rows:
        best = max(accuracy)
        now_acc = median(accuracy[-OVERFIT_GAP_EPOCHS:]) or 0.0
        error = math.sqrt(max(best * (1 - best), 0.0) / rows)
        if best - now_acc > 0 and best - now_acc >= OVERFIT_CONFIRM_Z * error:
            out.update(val_accuracy_best=best, val_accuracy_recent=now_acc)
    return out or None


def _running_medians(val: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """(epoch, median of the `OVERFIT_SMOOTH` epochs centred on it) along the val loss."""
    half = OVERFIT_SMOOTH // 2
    return [
        (val[i][0], median(v for _, v in val[i - half : i + half + 1]) or 0.0)
        for i in range(half, len(val) - half)
    ]


# ---------------------------------------------------------------------------- underfitting
@rule("underfitting", "training")
def underfitting(ctx: RuleContext) -> Finding | None:
    losses = ctx.series("loss")
    if not ctx.final or not ctx.classification or not losses:
        return None
    if (ctx.data or {}).get("per_position_targets"):
        # A language model's floor is the entropy of the text itself (about 1-1.5 nats per
        # character, more per word), far above 0 and unknown here: a share of ln(vocabulary)
        # says nothing about how much the model has left to learn.
        return None
    epoch, last = losses[-1]
    level = _level(ctx, last, losses[0][1])
    if level < UNDERFIT_LEVEL:
        return None
    val = ctx.series("val_loss")
    if val and val[-1][0] == epoch and _level(ctx, val[-1][1], losses[0][1]) < UNDERFIT_LEVEL:
        # The epoch's train loss is a mean over a model that was still changing (and with
        # dropout on); held-out rows scored by the final model below the line say it fits.
        return None
    if _fits_train_better(ctx) is not None:
        return None  # capacity is not what limits it: it already fits train better than val
    reference = simple_model_reference(ctx)
    if reference is not None and reference["matched"]:
        return None  # as good as a simple model: what is left is the labels' own uncertainty
    ref_text, ref_evidence = _reference_evidence(reference)
    still_falling = len(losses) >= 3 and losses[-3][1] - last > 0.01 * abs(losses[-3][1])
    accuracy = ctx.values("accuracy")
    acc_text = f", train accuracy {accuracy[-1]:.3f}" if accuracy else ""
    return Finding(
        code="underfitting",
        severity="warning",
        message=(
            f"after {len(losses)} epochs the train loss is {fmt(last)}, {level:.0%} of the chance "
            f"level {fmt(ctx.chance_loss)}{acc_text}{ref_text}"
        ),
        evidence={
            "final_loss": last,
            "chance_loss": ctx.chance_loss,
            "level": level,
            "still_falling": still_falling,
            "final_accuracy": accuracy[-1] if accuracy else None,
            **ref_evidence,
        },
        epoch=epoch,
        causes=[
            "the model is too small or too regularised for the task",
            "training stopped too early" if still_falling else "the learning rate is off",
            "the inputs carry little signal about the labels (check the data)",
        ],
        remedies=[
            "use a wider or deeper model; reduce dropout and weight decay",
            "train for more epochs" if still_falling else "run `layerwise lr-find RECIPE`",
        ],
        patch=fx.merge(
            fx.wider(ctx),
            fx.more_epochs(ctx) if still_falling else {},
            fx.less_dropout(ctx),
            fx.less_weight_decay(ctx),
        ),
    )


def _fits_train_better(ctx: RuleContext) -> dict[str, Any] | None:
    """The model fits its training rows clearly better than held-out rows, or None.

    Underfitting is a model that cannot fit even its training rows, so training and held-out
    rows fare alike (the classic high-bias reading: a high train loss with a small gap). Two
    readings show the opposite, a model with the capacity to learn training-specific detail
    that is using it (the same two the overfitting rule reads, at their first sign):

    - the gap: the val loss (median of the last `OVERFIT_GAP_EPOCHS` epochs) lies
      `OVERFIT_REL_RISE` or more further above the floor than the train loss of those epochs
      (the 25% the overfitting rule asks of a val-loss rise before calling it real);
    - the gap growing: the val loss's running median (3 epochs) bottomed out
      `OVERFIT_EPOCHS_AFTER_MIN`+ epochs before the end, while the train loss has fallen by
      `UNDERFIT_TRAIN_FALL` of its excess over the floor since then.

    Its high train loss is then what this data lets it carry over, or training cut short, and
    a wider model or more epochs (the underfitting patch) would widen the gap. Seen on an LSTM
    over 1,600 synthetic token sequences: train loss 0.37-0.44 (53-63% of ln 2, train accuracy
    0.83-0.86) and still falling, val loss 0.61-0.67 (val accuracy 0.70) and no longer
    improving. The epoch's train loss is averaged while the model learns (and with dropout on),
    so it overstates the train loss, never the gap."""
    train_series, val_series = ctx.series("loss"), ctx.series("val_loss")
    if not train_series or not val_series:
        return None
    floor = ctx.loss_floor
    train_now = median(v for _, v in train_series[-OVERFIT_GAP_EPOCHS:])
    val_now = median(v for _, v in val_series[-OVERFIT_GAP_EPOCHS:])
    if train_now is None or val_now is None or train_now <= floor:
        return None
    excess = (val_now - floor) / (train_now - floor) - 1.0
    if excess >= OVERFIT_REL_RISE:
        return {"train_loss": train_now, "val_loss": val_now, "val_excess": excess}
    half = OVERFIT_SMOOTH // 2
    smooth = [
        (val_series[i][0], median(v for _, v in val_series[i - half : i + half + 1]))
        for i in range(half, len(val_series) - half)
    ]
    if not smooth:
        return None
    low_epoch, low = min(smooth, key=lambda p: p[1])
    last_epoch, recent = smooth[-1]
    then = dict(train_series).get(low_epoch)
    if last_epoch - low_epoch < OVERFIT_EPOCHS_AFTER_MIN or recent <= low or then is None:
        return None
    last = train_series[-1][1]
    fall = (then - last) / (then - floor) if then > floor else 0.0
    if fall < UNDERFIT_TRAIN_FALL:
        return None
    return {"val_loss_low_epoch": low_epoch, "train_loss_then": then, "train_fall": fall}


@decided_by("overfitting")
def _overfit_margin(f: Finding) -> tuple[str, float, float, bool] | None:
    low, recent = number(f.evidence.get("val_loss_min")), number(f.evidence.get("val_loss_recent"))
    if low and recent is not None:
        return "val loss rise over its lowest", (recent - low) / low, OVERFIT_REL_RISE, True
    gap = number(f.evidence.get("accuracy_gap"))
    return ("train - val accuracy", gap, OVERFIT_ACC_GAP, True) if gap is not None else None


@decided_by("underfitting")
def _underfit_margin(f: Finding) -> tuple[str, float, float, bool]:
    return "train loss as a share of chance", float(f.evidence["level"]), UNDERFIT_LEVEL, True


@decided_by("loss_plateau")
def _plateau_margin(f: Finding) -> tuple[str, float, float, bool]:
    return "loss as a share of chance", float(f.evidence["level"]), PLATEAU_LEVEL, True


@decided_by("lr_too_low")
def _low_lr_margin(f: Finding) -> tuple[str, float, float, bool]:
    return "share of the loss removed", float(f.evidence["progress"]), LOW_LR_PROGRESS, False


@decided_by("oscillating_loss")
def _oscillation_margin(f: Finding) -> tuple[str, float, float, bool] | None:
    """How large the swings are next to what counts as one (counts say little: the rule stops
    at the first window with enough of them)."""
    climbed = f.evidence.get("climbs")
    if climbed:
        peak = max((c["high"] / c["low"] for c in climbed if c["low"] > 0), default=None)
        least = 1 + OSC_CLIMB_REL if len(climbed) >= OSC_CLIMBS else LR_HIGH_DIVERGE
        return ("largest climb peak / its low", peak, least, True) if peak else None
    losses = f.evidence.get("losses") or []
    rises = [b / a - 1 for a, b in pairwise(losses) if 0 < a < b]
    return ("largest rise in the window", max(rises), OSC_MOVE, True) if rises else None


@decided_by("lr_too_high")
def _high_lr_margin(f: Finding) -> tuple[str, float, float, bool] | None:
    e = f.evidence
    if "first_epoch_loss" in e:
        strict = LR_HIGH_FIRST_EPOCH if e.get("strict", True) else LR_HIGH_FIRST_EPOCH_LOOSE
        return "epoch 1 loss / start", e["first_epoch_loss"] / e["baseline"], strict, True
    if "spike_loss" in e:
        return "step loss / start", e["spike_loss"] / e["baseline"], LR_HIGH_SPIKE, True
    if "risen_loss" in e and e.get("best_loss"):
        return "loss / its best", e["risen_loss"] / e["best_loss"], LR_HIGH_DIVERGE, True
    if "weight_norm" in e and e.get("weight_norm_before"):
        growth = e["weight_norm"] / e["weight_norm_before"]
        return "weight norm growth", growth, LR_HIGH_WEIGHT_GROWTH, True
    return None
