"""Rules on the probed gradients: exploding and vanishing gradients.

Both compare gradients with themselves rather than with absolute numbers, which depend on the
model's size and the loss's scale: an exploding gradient is one that grew by orders of magnitude
from where training started, a vanishing one is orders of magnitude smaller in the first weight
layer than in the last (each measured relative to the layer's weight norm, so big and small
layers compare fairly).
"""

from __future__ import annotations

import math
from typing import Any

from layerwise.diagnose.findings import Finding
from layerwise.diagnose.rules import (
    RuleContext,
    fmt,
    median,
    number,
    persistent,
    rule,
    trailing,
)
from layerwise.diagnose.rules import fixes as fx

EXPLODE_BASE_STEPS = 3  # baseline: the first sampled step's norm, or the median of the first 3
EXPLODE_RATIO = 100.0  # a sampled step whose norm is 100x that baseline ...
EXPLODE_MIN_STEPS = 2  # ... at 2 sampled steps or more (or an infinite norm with a finite loss)
VANISH_RATIO = 1e-3  # first weight layer's relative gradient below 1e-3x the last layer's
# Layers left out of the first/last comparison: their gradients scale differently by design.
NOT_A_WEIGHT_LAYER = ("norm", "embedding")


def _grad(stats: dict[str, Any]) -> float | None:
    return number(stats.get("grad_norm"))


# ---------------------------------------------------------------------------- exploding
@rule("exploding_gradients", "training")
def exploding_gradients(ctx: RuleContext) -> Finding | None:
    steps = [s for s in ctx.finite_steps if number(s.get("grad_norm")) is not None]
    norms = [number(s["grad_norm"]) for s in steps]
    start = [n for n in norms[:EXPLODE_BASE_STEPS] if n is not None and math.isfinite(n)]
    if not start:
        return None
    # The lower of the two, so an explosion within the first few samples does not hide itself.
    baseline = min(start[0], median(start) or start[0])
    if baseline <= 0:
        return None
    hot = [
        (s, n)
        for s, n in zip(steps, norms, strict=True)
        if n is not None and (not math.isfinite(n) or n >= EXPLODE_RATIO * baseline)
    ]
    infinite = any(not math.isfinite(n) for _, n in hot)
    if len(hot) < EXPLODE_MIN_STEPS and not infinite:
        return None
    worst, peak = max(hot, key=lambda p: p[1])
    layer, layer_ratios = _worst_layer(steps, worst)
    ratio = peak / baseline
    steps = f"{len(hot)} sampled step{'s' if len(hot) > 1 else ''} at {EXPLODE_RATIO:g}x or more"
    if math.isfinite(peak):
        message = (
            f"gradient norm {fmt(peak)} at step {worst.get('step')}, {fmt(ratio)}x its "
            f"{fmt(baseline)} at the start of training; {steps}"
        )
    else:
        message = (
            f"gradient norm overflowed to {peak} at step {worst.get('step')} (it was "
            f"{fmt(baseline)} at the start of training); {steps}"
        )
    return Finding(
        code="exploding_gradients",
        severity="error",
        message=message,
        evidence={
            "grad_norm": str(peak) if not math.isfinite(peak) else peak,
            "step": worst.get("step"),
            "baseline": baseline,
            "ratio": str(ratio) if not math.isfinite(ratio) else ratio,
            "steps_above": len(hot),
            "first_step_above": hot[0][0].get("step"),
            "layer_ratios": layer_ratios,
        },
        epoch=int(hot[0][0].get("epoch", 1)),
        layer=layer,
        causes=[
            "the learning rate is too high",
            "no gradient clipping on a deep or recurrent network",
            "a poor weight initialisation or unnormalised activations that grow layer by layer",
        ],
        remedies=[
            "clip the global gradient norm (train.grad_clip: 1.0)",
            "lower the learning rate about 3x",
            "add normalisation (batch norm) or residual connections to a deep plain network",
        ],
        patch=fx.merge(fx.grad_clip(ctx, 1.0), fx.scale_lr(ctx, 0.3)),
    )


def _worst_layer(
    steps: list[dict[str, Any]], worst: dict[str, Any]
) -> tuple[str | None, dict[str, float]]:
    """The layer whose gradient grew most from its own start (ratios of the top 5 layers)."""
    ratios: dict[str, float] = {}
    for name, stats in (worst.get("layers") or {}).items():
        now = _grad(stats)
        start = median(
            g
            for s in steps[:EXPLODE_BASE_STEPS]
            if (g := _grad((s.get("layers") or {}).get(name) or {})) is not None
            and math.isfinite(g)
        )
        if now is not None and math.isfinite(now) and start:
            ratios[name] = now / start
    top = dict(sorted(ratios.items(), key=lambda kv: -kv[1])[:5])
    return (next(iter(top)) if top else None), top


# ---------------------------------------------------------------------------- vanishing
@rule("vanishing_gradients", "training")
def vanishing_gradients(ctx: RuleContext) -> Finding | None:
    layers = [
        name
        for name in ctx.layer_names(role="param")
        if not any(word in ctx.layer_type(name).lower() for word in NOT_A_WEIGHT_LAYER)
    ]
    if len(layers) < 2:
        return None
    last = layers[-1]
    by_epoch = _relative_grads(ctx, layers)
    ratios = {
        epoch: {name: g / grads[last] for name, g in grads.items() if name != last}
        for epoch, grads in by_epoch.items()
        if grads.get(last)
    }
    streak = trailing(ratios, lambda r: min(r.values(), default=1.0) < VANISH_RATIO)
    if not persistent(streak, len(ratios), ctx.final):
        return None
    latest = ratios[streak[-1]]
    worst = min(latest, key=lambda name: latest[name])
    below = [name for name, r in latest.items() if r < VANISH_RATIO]
    return Finding(
        code="vanishing_gradients",
        severity="error",
        message=(
            f"{worst}'s gradient is {latest[worst]:.1e}x the last layer's ({last}), relative "
            f"to weight size (median over epoch {streak[-1]}); {len(below)} of "
            f"{len(layers) - 1} earlier layers are below {VANISH_RATIO:g}x"
        ),
        evidence={
            "ratio": latest[worst],
            "reference_layer": last,
            "layer_ratios": latest,
            "layers_below": below,
            "since_epoch": streak[0],
        },
        epoch=streak[0],
        layer=worst,
        causes=[
            "saturating activations (sigmoid/tanh) in a deep network shrink the gradient at "
            "every layer",
            "a weight initialisation too small for the depth",
            "a deep plain network without normalisation or residual connections",
        ],
        remedies=[
            "use ReLU-like activations with He initialisation",
            "add batch norm between layers (or residual connections)",
        ],
        patch=fx.merge(_relu_if_saturating(ctx), fx.he_init(ctx), fx.batchnorm(ctx)),
    )


def _relative_grads(ctx: RuleContext, layers: list[str]) -> dict[int, dict[str, float]]:
    """{epoch: {layer: median of grad_norm / weight_norm}} (raw norms when weights are absent)."""
    per_epoch: dict[int, dict[str, list[float]]] = {}
    for record in ctx.finite_steps:
        for name in layers:
            stats = (record.get("layers") or {}).get(name) or {}
            grad, weight = _grad(stats), number(stats.get("weight_norm"))
            if grad is None or not math.isfinite(grad):
                continue
            value = grad / weight if weight and math.isfinite(weight) else grad
            per_epoch.setdefault(int(record.get("epoch", 0)), {}).setdefault(name, []).append(value)
    return {
        epoch: {name: median(values) or 0.0 for name, values in grads.items()}
        for epoch, grads in sorted(per_epoch.items())
    }


def _relu_if_saturating(ctx: RuleContext) -> fx.Patch:
    current = str(ctx.get("model.args.activation", "relu")).lower()
    return fx.activation(ctx, "relu") if current in ("sigmoid", "tanh") else {}
