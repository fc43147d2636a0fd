"""Rules for GANs: mode collapse, a discriminator that wins outright, losses that swing for ever.

A GAN's losses are a game's scores, not a supervised loss, so the curve rules skip GAN runs
(`task: gan`) and these read what a GAN logs instead (see `layerwise.tasks.gan`): per epoch
`d_loss`, `g_loss` (means over the epoch's steps), and the judge's scores of the generator:
`fid`, `gen_spread_ratio` (feature spread of generated images / that of real ones),
`gen_class_entropy_ratio` (entropy of the judge's class histogram, generated / real) and, for a
conditional GAN, `gen_within_spread_ratio_min` (the spread of one requested class's samples /
that of the real class's images, for the weakest class; `gen_within_spread_class` names it). A rule
whose keys are not logged stays silent, so none of them fires on a classifier. Each waits for
its condition to hold in the last 2 epochs (or, after training, in the only one), so one bad
epoch of a game that usually recovers is not reported.
"""

from __future__ import annotations

import math
from itertools import pairwise

from layerwise.diagnose.findings import Finding
from layerwise.diagnose.rules import RuleContext, decided_by, fmt, persistent, rule
from layerwise.diagnose.rules import fixes as fx

# mode_collapse: the generated images spread over less than 30% of the real data's feature
# spread, or their class histogram keeps under 45% of the real one's entropy (ln 10 for even
# digits; 45% of it is about 3 equally likely classes out of 10).
COLLAPSE_SPREAD = 0.30
COLLAPSE_ENTROPY = 0.45
# ... or, in a conditional GAN, the samples of one requested class spread over less than 30% of
# the real class's feature spread: a generator that ignores its noise draws one image per class,
# which neither global measure sees (ten distinct images spread widely and fill the histogram).
# Measured on saved checkpoints (benchmarks/gan_collapse.py): the weakest class of the healthy
# mnist_cgan at 0.85-0.92 (epochs 4-10, two seeds); the old cGAN layout that ignored its noise
# at 0.08-0.12, no class of it above 0.20.
COLLAPSE_WITHIN = 0.30
# discriminator_overpowering: the discriminator's loss within 0.1 nats of the lowest it can
# reach (0, or the entropy of the smoothed real target) while the generator's loss is at least
# 3 nats (the discriminator gives its samples under 5%) and has grown 1.5x from its lowest.
OVERPOWER_EXCESS = 0.1
OVERPOWER_G_LOSS = 3.0
OVERPOWER_G_GROWTH = 1.5
# gan_divergence: over 4+ epochs the generator's loss or the Fréchet distance moves, epoch to
# epoch, by 40% of its mean on average and turns direction twice or more, while the Fréchet
# distance ends no lower than 80% of its first value (no progress).
DIVERGE_EPOCHS = 4
DIVERGE_SWING = 0.4
DIVERGE_TURNS = 2
DIVERGE_PROGRESS = 0.8


def _last_two(ctx: RuleContext, key: str, condition) -> list[int]:
    """The trailing epochs (up to 2) where `condition(value of key)` holds."""
    series = ctx.series(key)
    streak: list[int] = []
    for epoch, value in reversed(series[-2:]):
        if not condition(value):
            break
        streak.insert(0, epoch)
    return streak


def _d_loss_floor(ctx: RuleContext) -> float:
    """The lowest discriminator loss: the entropy of the smoothed real target (0 without)."""
    s = float(ctx.get("train.loss.label_smoothing", 0.0) or 0.0)
    p = 1.0 - s
    return 0.0 if s <= 0 else -(p * math.log(p) + s * math.log(s))


@rule("mode_collapse", "training")
def mode_collapse(ctx: RuleContext) -> Finding | None:
    spread, entropy = ctx.series("gen_spread_ratio"), ctx.series("gen_class_entropy_ratio")
    within = ctx.series("gen_within_spread_ratio_min")  # conditional GANs only
    if not spread and not entropy and not within:
        return None
    low_spread = _last_two(ctx, "gen_spread_ratio", lambda v: v < COLLAPSE_SPREAD)
    low_entropy = _last_two(ctx, "gen_class_entropy_ratio", lambda v: v < COLLAPSE_ENTROPY)
    low_within = _last_two(ctx, "gen_within_spread_ratio_min", lambda v: v < COLLAPSE_WITHIN)
    seen = max(len(spread), len(entropy), len(within))
    by_spread = persistent(low_spread, seen, ctx.final)
    by_entropy = persistent(low_entropy, seen, ctx.final)
    by_within = persistent(low_within, seen, ctx.final)
    if not (by_spread or by_entropy or by_within):
        return None
    last_spread = spread[-1][1] if spread else None
    last_entropy = entropy[-1][1] if entropy else None
    last_within = within[-1][1] if within else None
    klass = ctx.history[-1].get("gen_within_spread_class") if within else None
    shown = []
    if by_within:
        shown.append(
            f"its samples of class {klass} spread {fmt(last_within)} of the real class's"
            " (the weakest class)"
        )
    if last_spread is not None:
        shown.append(f"feature spread {fmt(last_spread)} of the real data's")
    if last_entropy is not None:
        shown.append(f"class-histogram entropy {fmt(last_entropy)} of the real data's")
    by = "spread" if by_spread else "class_entropy" if by_entropy else "within_class"
    epoch = (low_spread if by_spread else low_entropy if by_entropy else low_within)[-1]
    return Finding(
        code="mode_collapse",
        severity="error",
        message="the generator makes a few kinds of image whatever its noise: " + ", ".join(shown),
        evidence={
            "spread_ratio": last_spread,
            "class_entropy_ratio": last_entropy,
            "within_spread_ratio_min": last_within,
            "within_spread_class": klass,
            "by": by,
            "spread_threshold": COLLAPSE_SPREAD,
            "entropy_threshold": COLLAPSE_ENTROPY,
            "within_threshold": COLLAPSE_WITHIN,
        },
        epoch=epoch,
        causes=[
            "the generator found a few images the discriminator accepts and stays on them",
            "the discriminator is too weak or too slow to punish repeated samples",
            "the generator ignores its latent input (a bug in how the noise is fed, or a "
            "conditional generator that can meet its loss from the label alone)",
        ],
        remedies=[
            "spectral normalisation on the discriminator (model.args.spectral_norm: true)",
            "a faster discriminator than generator (two time-scales: discriminator_lr > lr)",
            "check that every sample of a batch gets its own noise vector, and that the noise "
            "is not scaled to nothing (model.args.latent_scale)",
        ],
        patch=fx.merge(_spectral_norm_patch(ctx), _ttur_patch(ctx), _latent_scale_patch(ctx)),
    )


@decided_by("mode_collapse")
def _collapse_measure(f: Finding):
    if f.evidence.get("by") == "spread" and f.evidence.get("spread_ratio") is not None:
        return "feature spread ratio", f.evidence["spread_ratio"], COLLAPSE_SPREAD, False
    if (
        f.evidence.get("by") == "within_class"
        and f.evidence.get("within_spread_ratio_min") is not None
    ):
        value = f.evidence["within_spread_ratio_min"]
        return "within-class spread ratio", value, COLLAPSE_WITHIN, False
    if f.evidence.get("class_entropy_ratio") is not None:
        value = f.evidence["class_entropy_ratio"]
        return "class entropy ratio", value, COLLAPSE_ENTROPY, False
    return None


@rule("discriminator_overpowering", "training")
def discriminator_overpowering(ctx: RuleContext) -> Finding | None:
    d_losses, g_losses = ctx.series("d_loss"), ctx.series("g_loss")
    if len(d_losses) < 2 or len(g_losses) < 2:
        return None
    floor = _d_loss_floor(ctx)
    lowest_g = min(v for _, v in g_losses)
    winning = _last_two(ctx, "d_loss", lambda v: v - floor < OVERPOWER_EXCESS)
    losing = _last_two(
        ctx, "g_loss", lambda v: v >= OVERPOWER_G_LOSS and v >= OVERPOWER_G_GROWTH * lowest_g
    )
    both = sorted(set(winning) & set(losing))
    if not persistent(both, len(d_losses), ctx.final):
        return None
    d_last, g_last = d_losses[-1][1], g_losses[-1][1]
    return Finding(
        code="discriminator_overpowering",
        severity="error",
        message=f"the discriminator's loss is {fmt(d_last)} (floor {fmt(floor)}) while the "
        f"generator's grew from {fmt(lowest_g)} to {fmt(g_last)}: the generator gets no "
        "useful gradient",
        evidence={
            "d_loss": d_last,
            "d_loss_floor": floor,
            "g_loss": g_last,
            "g_loss_lowest": lowest_g,
            "g_growth": g_last / lowest_g if lowest_g > 0 else None,
        },
        epoch=both[-1],
        causes=[
            "the discriminator learns much faster than the generator (its learning rate or "
            "its capacity is too high)",
            "no stabiliser bounds the discriminator (spectral normalisation, label smoothing)",
        ],
        remedies=[
            "lower the discriminator's learning rate (train.optimizer.args.discriminator_lr) "
            "to at most 4x the generator's",
            "spectral normalisation and one-sided label smoothing (train.loss.label_smoothing: "
            "0.1)",
        ],
        patch=fx.merge(
            _discriminator_lr_patch(ctx, 2.0),
            _spectral_norm_patch(ctx),
            {"train.loss.label_smoothing": 0.1}
            if fx.has_recipe(ctx) and not ctx.get("train.loss.label_smoothing")
            else {},
        ),
    )


@decided_by("discriminator_overpowering")
def _overpower_measure(f: Finding):
    growth = f.evidence.get("g_growth")
    return ("generator loss growth", growth, OVERPOWER_G_GROWTH, True) if growth else None


def _swing(values: list[float]) -> tuple[float, int]:
    """(mean epoch-to-epoch move as a share of the mean level, direction changes) of a series."""
    steps = [b - a for a, b in pairwise(values)]
    level = sum(abs(v) for v in values) / len(values)
    swing = sum(abs(s) for s in steps) / len(steps) / level if level > 0 else 0.0
    return swing, sum(1 for a, b in pairwise(steps) if a * b < 0)


@rule("gan_divergence", "training")
def gan_divergence(ctx: RuleContext) -> Finding | None:
    g_losses = [v for _, v in ctx.series("g_loss")]
    fids = [v for _, v in ctx.series("fid")]
    if len(g_losses) < DIVERGE_EPOCHS:
        return None
    progress = fids[-1] / fids[0] if len(fids) >= 2 and fids[0] > 0 else None
    if progress is not None and progress < DIVERGE_PROGRESS:
        return None  # whatever swings, the samples improve: a lively but working game
    # Epoch means smooth a swinging loss; the Fréchet distance of the samples shows the swings
    # an epoch's average hides, so the larger of the two swings decides.
    swings = {"generator loss": _swing(g_losses)}
    if len(fids) >= DIVERGE_EPOCHS:
        swings["Fréchet distance"] = _swing(fids)
    what, (swing, turns) = max(swings.items(), key=lambda item: item[1][0])
    if swing < DIVERGE_SWING or turns < DIVERGE_TURNS:
        return None
    where = (
        f"; the Fréchet distance went from {fmt(fids[0])} to {fmt(fids[-1])}"
        if progress is not None
        else ""
    )
    return Finding(
        code="gan_divergence",
        severity="error",
        message=f"the {what} swings by {fmt(100 * swing)}% of its mean from epoch to epoch and "
        f"turned {turns} times{where}",
        evidence={"swing": swing, "turns": turns, "series": what, "fid_ratio": progress},
        epoch=ctx.series("g_loss")[-1][0],
        causes=[
            "learning rates too high for an adversarial game: each side overshoots the other",
            "an unbounded discriminator (no spectral normalisation)",
        ],
        remedies=[
            "lower both learning rates (e.g. 2e-4 for the generator, 4e-4 for the discriminator)",
            "Adam with betas [0.5, 0.999]; spectral normalisation on the discriminator",
        ],
        patch=fx.merge(
            fx.scale_lr(ctx, 0.3),
            _discriminator_lr_patch(ctx, 4.0 * 0.3),
            _spectral_norm_patch(ctx),
        ),
    )


@decided_by("gan_divergence")
def _divergence_measure(f: Finding):
    return "generator loss swing", f.evidence["swing"], DIVERGE_SWING, True


# ------------------------------------------------------------------------------ patches
def _spectral_norm_patch(ctx: RuleContext) -> dict:
    if not fx.has_recipe(ctx) or ctx.get("model.args.spectral_norm", True):
        return {}
    return {"model.args.spectral_norm": True}


def _latent_scale_patch(ctx: RuleContext) -> dict:
    """Standard normal latent vectors when the recipe shrank them (a generator fed no noise)."""
    scale = ctx.get("model.args.latent_scale", 1.0)
    if not fx.has_recipe(ctx) or not isinstance(scale, int | float) or scale >= 1.0:
        return {}
    return {"model.args.latent_scale": 1.0}


def _ttur_patch(ctx: RuleContext) -> dict:
    """A discriminator rate 4x the generator's when it is not faster already."""
    lr = fx.lr(ctx)
    d_lr = ctx.get("train.optimizer.args.discriminator_lr", lr)
    if not fx.has_recipe(ctx) or lr is None or (d_lr is not None and d_lr > lr):
        return {}
    return {"train.optimizer.args.discriminator_lr": fx.sig(4 * lr)}


def _discriminator_lr_patch(ctx: RuleContext, times_generator: float) -> dict:
    """The discriminator's rate set to `times_generator` x the generator's (after its patch)."""
    lr = fx.lr(ctx)
    if not fx.has_recipe(ctx) or lr is None:
        return {}
    return {"train.optimizer.args.discriminator_lr": fx.sig(times_generator * lr)}
