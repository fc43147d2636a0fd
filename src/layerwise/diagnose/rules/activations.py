"""Rules on the probed activations: dead ReLU units and saturated sigmoid/tanh units.

The probes record, per activation layer and sampled batch, the share of units that never fired
on the batch (`dead_frac`, ReLU-likes) and the share of outputs stuck at the limits (`sat_frac`,
sigmoid/tanh). A healthy ReLU layer always has some units that sit out a small batch (up to
~30% in LeNet's dense layers with batches of 32 on digits, 39% when its classes are skewed), so
the thresholds sit well above that, on the median of an epoch, and must hold for two probed
epochs in a row.
"""

from __future__ import annotations

from layerwise.diagnose.findings import Finding
from layerwise.diagnose.rules import RuleContext, decided_by, persistent, rule, trailing
from layerwise.diagnose.rules import fixes as fx
from layerwise.diagnose.rules.data import unscaled_reason

DEAD_FRACTION = 0.6  # 60% of a ReLU layer's units silent on whole batches (healthy: <= 0.4)
DEAD_SEVERE = 0.9  # nine in ten: the layer has all but stopped learning (an error)
SAT_FRACTION = 0.4  # 40% of sigmoid/tanh outputs beyond 0.02/0.98 (|tanh| > 0.98)


def _stuck_layers(
    ctx: RuleContext, key: str, threshold: float
) -> tuple[list[int], dict[str, float]] | None:
    """(epochs of the trailing streak, {layer: median share} of the latest epoch) or None."""
    by_epoch = ctx.layer_epoch_medians(key, role="activation")
    streak = trailing(by_epoch, lambda layers: max(layers.values(), default=0.0) >= threshold)
    if not persistent(streak, len(by_epoch), ctx.final):
        return None
    return streak, by_epoch[streak[-1]]


def _others(shares: dict[str, float], worst: str, threshold: float) -> str:
    others = [f"{n} {v:.0%}" for n, v in shares.items() if n != worst and v >= threshold]
    return f"; also {', '.join(others)}" if others else ""


@rule("dead_units", "training")
def dead_units(ctx: RuleContext) -> Finding | None:
    stuck = _stuck_layers(ctx, "dead_frac", DEAD_FRACTION)
    if stuck is None:
        return None
    streak, shares = stuck
    worst = max(shares, key=lambda name: shares[name])
    return Finding(
        code="dead_units",
        severity="error" if shares[worst] >= DEAD_SEVERE else "warning",
        message=(
            f"{shares[worst]:.0%} of {worst}'s units never activate on a batch (median over "
            f"epoch {streak[-1]}){_others(shares, worst, DEAD_FRACTION)}"
        ),
        evidence={
            "dead_frac": shares[worst],
            "layer_dead_frac": shares,
            "since_epoch": streak[0],
            # A ReLU silent on a batch passes back no gradient for it and feeds the next layer
            # zeros (its weight gradient is its input times the gradient at its output): with
            # nine in ten units silent, the layers around it get next to no gradient, which is
            # what `vanishing_gradients` reads at the input end; there it is not the depth.
            **(
                {"accounts_for": ["small_first_layer_gradient"]}
                if shares[worst] >= DEAD_SEVERE
                else {}
            ),
        },
        epoch=streak[0],
        layer=worst,
        causes=[
            "a learning rate too high: a large update pushed the units' inputs below zero for "
            "every sample, and a ReLU that never fires gets no gradient to recover",
            "a large negative bias or a poor initialisation",
        ],
        remedies=[
            "lower the learning rate about 3x",
            "use leaky ReLU (or GELU) so silent units still get a gradient",
            "use He initialisation; add batch norm before the activation",
        ],
        patch=fx.merge(fx.scale_lr(ctx, 0.3), fx.activation(ctx, "leaky_relu"), fx.he_init(ctx)),
    )


@rule("saturated_activations", "training")
def saturated_activations(ctx: RuleContext) -> Finding | None:
    stuck = _stuck_layers(ctx, "sat_frac", SAT_FRACTION)
    if stuck is None:
        return None
    streak, shares = stuck
    worst = max(shares, key=lambda name: shares[name])
    unscaled = unscaled_reason(ctx.data, fx.is_image(ctx)) if ctx.data else None
    causes = [
        "inputs on a large scale push pre-activations far from 0",
        "weights initialised too large, or grown by a high learning rate",
        "no normalisation before the sigmoid/tanh",
    ]
    if unscaled:
        causes[0] = f"the inputs are not scaled ({unscaled})"
    inputs_fix = fx.standardize(ctx) if unscaled or ctx.data is None else {}
    model_fix = fx.batchnorm(ctx) or fx.activation(ctx, "relu")
    return Finding(
        code="saturated_activations",
        severity="warning",
        message=(
            f"{shares[worst]:.0%} of {worst}'s outputs sit at the sigmoid/tanh limits (median "
            f"over epoch {streak[-1]}){_others(shares, worst, SAT_FRACTION)}"
        ),
        evidence={
            "sat_frac": shares[worst],
            "layer_sat_frac": shares,
            "since_epoch": streak[0],
            "inputs_unscaled": unscaled,
        },
        epoch=streak[0],
        layer=worst,
        causes=causes,
        remedies=[
            "standardise the inputs (data.standardize: true)",
            "add batch norm before the activation, or switch to ReLU with He initialisation",
            "lower the learning rate if the saturation grows during training",
        ],
        patch=fx.merge(inputs_fix, model_fix),
    )


decided_by("dead_units")(
    lambda f: ("share of dead units", f.evidence["dead_frac"], DEAD_FRACTION, True)
)
decided_by("saturated_activations")(
    lambda f: ("share of saturated outputs", f.evidence["sat_frac"], SAT_FRACTION, True)
)
