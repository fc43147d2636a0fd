"""Rules on the probed gradients: exploding and vanishing gradients.

Both compare gradients with themselves rather than with absolute numbers, which depend on the
model's size and the loss's scale: an exploding gradient is one that grew by orders of magnitude
from where training started, a vanishing one is orders of magnitude smaller at the input end of
the model than at the output layers its gradient comes back from (each measured relative to the
layer's weight norm, so big and small layers compare fairly). Depth is counted from the loss
along the layer graph the probes record from autograd (`graph_layout`), not in module order,
which in a residual net, a feature pyramid or a multi-head model is not depth order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from layerwise.diagnose.findings import Finding
from layerwise.diagnose.rules import (
    RuleContext,
    decided_by,
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
EXPLODE_UPDATE = 1.0  # before a NaN loss: one step moved a layer's weights by their own norm
VANISH_RATIO = 1e-3  # first weight layer's relative gradient below 1e-3x the last layer's
VANISH_TIME_RATIO = 1e-3  # ‖∂L/∂x_0‖ below 1e-3x ‖∂L/∂x_T‖ along a recurrent layer's input ...
VANISH_TIME_LEVEL = 0.5  # ... while the loss is still half the chance level (first epoch's) or more
VANISH_TIME_PROGRESS = 0.1  # ... and has removed under 10% of its first epoch's reducible loss
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
        return _exploded_into_nan(ctx, baseline)
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


def lead_up(ctx: RuleContext) -> dict[str, Any] | None:
    """What the sampled steps just before the first non-finite loss show, or None (no such
    loss, or no sampled step before it): the last finite step's gradient norm and its growth
    from the first sample, the largest update-to-weight ratio of a layer (how far one step moved
    its weights, relative to their norm) and how much the weights grew since the first sample."""
    bad = next((s for s in ctx.steps if _nonfinite_loss(s)), None)
    if bad is None:
        return None
    before = [s for s in ctx.steps if s["step"] < bad["step"] and not _nonfinite_loss(s)]
    if not before:
        return None
    first, last = before[0], before[-1]
    out: dict[str, Any] = {"nan_step": bad["step"], "step": last["step"]}
    grad, start = number(last.get("grad_norm")), number(first.get("grad_norm"))
    if grad is not None:
        out["grad_norm"] = grad if math.isfinite(grad) else str(grad)
        if start and math.isfinite(start) and last is not first:
            out["grad_growth"] = grad / start if math.isfinite(grad) else "inf"
            out["first_step"], out["first_grad_norm"] = first["step"], start
    updates = {
        name: u
        for name, stats in (last.get("layers") or {}).items()
        if (u := number(stats.get("update_ratio"))) is not None
    }
    if updates:
        layer = max(updates, key=lambda n: updates[n] if math.isfinite(updates[n]) else math.inf)
        out["update_layer"], out["update_ratio"] = layer, updates[layer]
    growth = [
        w / w0
        for name, stats in (last.get("layers") or {}).items()
        if (w := number(stats.get("weight_norm"))) is not None
        and (w0 := number(((first.get("layers") or {}).get(name) or {}).get("weight_norm")))
    ]
    if growth and last is not first:
        out["weight_growth"] = max(growth)
    return out


def exploded(lead: dict[str, Any] | None) -> bool:
    """True when the steps before a NaN loss show an explosion: a gradient norm grown
    `EXPLODE_RATIO`x or overflowed, or one step that moved a layer by its own norm."""
    if not lead:
        return False
    growth = lead.get("grad_growth")
    grown = growth == "inf" or (isinstance(growth, float) and growth >= EXPLODE_RATIO)
    update = number(lead.get("update_ratio"))
    moved = update is not None and (not math.isfinite(update) or update >= EXPLODE_UPDATE)
    return grown or moved or isinstance(lead.get("grad_norm"), str)


def describe_lead_up(lead: dict[str, Any]) -> str:
    """`gradient norm inf at step 1 (1.92e+07 at step 0); update/weight ratio 435 in fc1`: the
    numbers of `lead_up`, for a message (a ratio of 1 means one step moved the weights by their
    own norm; healthy steps move them by about 1e-3)."""
    parts = []
    if "grad_norm" in lead:
        grad = lead["grad_norm"]
        shown = grad if isinstance(grad, str) else fmt(grad)
        text = f"gradient norm {shown} at step {lead['step']}"
        if "first_grad_norm" in lead:
            text += f" ({fmt(lead['first_grad_norm'])} at step {lead['first_step']})"
        parts.append(text)
    update = number(lead.get("update_ratio"))
    if update is not None:
        size = "inf" if not math.isfinite(update) else fmt(update)
        parts.append(f"update/weight ratio {size} in {lead['update_layer']}")
    if "weight_growth" in lead:
        parts.append(f"weights up to {fmt(lead['weight_growth'])}x their first norm")
    return "; ".join(parts)


def _nonfinite_loss(record: dict[str, Any]) -> bool:
    loss = number(record.get("loss"))
    return loss is not None and not math.isfinite(loss)


def _exploded_into_nan(ctx: RuleContext, baseline: float) -> Finding | None:
    """The explosion that ended in a NaN loss before a second sample could show it grow."""
    lead = lead_up(ctx)
    if not exploded(lead):
        return None
    assert lead is not None
    layer = lead.get("update_layer")
    return Finding(
        code="exploding_gradients",
        severity="error",
        message=f"the loss turned non-finite at step {lead['nan_step']} right after "
        + describe_lead_up(lead),
        evidence={**lead, "baseline": baseline},
        epoch=next((int(s.get("epoch", 1)) for s in ctx.steps if s["step"] == lead["step"]), 1),
        layer=layer,
        causes=[
            "a weight initialisation far too large: activations and gradients grow layer by "
            "layer until one step throws the weights away",
            "the learning rate is too high",
            "no gradient clipping on a deep or recurrent network",
        ],
        remedies=[
            "use the layers' default (He/Glorot) initialisation",
            "clip the global gradient norm (train.grad_clip: 1.0)",
            "lower the learning rate about 3x",
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
@dataclass
class Layout:
    """How the weight layers are read for a vanishing gradient: which are judged (the input end),
    which output layers each is compared with, and the towers (parts that share no layer)."""

    layers: list[str]  # the weight layers read
    judged: set[str]
    outputs: dict[str, list[str]]  # layer -> the output layers its gradient comes back from
    towers: list[list[str]]
    n_outputs: int  # layers compared with none (each tower's last, or the graph's outputs)
    source: str  # "graph" (the recorded autograd graph) or "model order" (older logs)


@rule("vanishing_gradients", "training")
def vanishing_gradients(ctx: RuleContext) -> Finding | None:
    layers = [
        name
        for name in ctx.layer_names(role="param")
        if not any(word in ctx.layer_type(name).lower() for word in NOT_A_WEIGHT_LAYER)
    ]
    if len(layers) < 2:
        return _through_time(ctx)
    layout = graph_layout(ctx, layers) or order_layout(ctx, layers)
    by_epoch = _relative_grads(ctx, layers)
    refs: dict[int, dict[str, str]] = {}
    ratios: dict[int, dict[str, float]] = {}
    for epoch, grads in by_epoch.items():
        for name, g in grads.items():
            ref = _reference(layout.outputs.get(name, []), grads)
            if ref is not None:
                refs.setdefault(epoch, {})[name] = ref
                ratios.setdefault(epoch, {})[name] = g / grads[ref]
    judged = layout.judged

    def vanished(r: dict[str, float]) -> bool:
        return min((v for name, v in r.items() if name in judged), default=1.0) < VANISH_RATIO

    streak = trailing(ratios, vanished)
    if not persistent(streak, len(ratios), ctx.final):
        return _through_time(ctx)
    latest = ratios[streak[-1]]
    worst = min((name for name in latest if name in judged), key=lambda name: latest[name])
    last = refs[streak[-1]][worst]
    below = [name for name, r in latest.items() if r < VANISH_RATIO]
    towers = layout.towers
    if len(towers) > 1:
        where = f"its tower's last layer's ({last})"
    elif layout.n_outputs > 1:
        where = f"the output layer's ({last})"
    else:
        where = f"the last layer's ({last})"
    return Finding(
        code="vanishing_gradients",
        severity="error",
        message=(
            f"{worst}'s gradient is {latest[worst]:.1e}x {where}, relative "
            f"to weight size (median over epoch {streak[-1]}); {len(below)} of "
            f"{len(layout.layers) - layout.n_outputs} earlier layers are below "
            f"{VANISH_RATIO:g}x"
        ),
        evidence={
            "rests_on": ["small_first_layer_gradient"],
            "ratio": latest[worst],
            "reference_layer": last,
            "layer_ratios": latest,
            "layers_below": below,
            "since_epoch": streak[0],
            "layer_order": layout.source,
            **({"towers": [t[0].split(".", 1)[0] for t in towers]} if len(towers) > 1 else {}),
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


def _reference(outputs: list[str], grads: dict[str, float]) -> str | None:
    """The output layer a layer's gradient is compared with: of the output layers downstream of
    it that have a gradient this epoch, the one with the median relative gradient (the lower of
    the two middle ones), so neither a head that barely learns nor the busiest one decides."""
    known = sorted((o for o in outputs if grads.get(o)), key=lambda o: grads[o])
    return known[(len(known) - 1) // 2] if known else None


def graph_layout(ctx: RuleContext, layers: list[str]) -> Layout | None:
    """The layout read from the layer graph the probes recorded (`layer_graph`: which layers
    feed which in the autograd graph of a training step), or None for a log without one or
    with a layer that has gradients missing from it. Layers missing without gradients (a frozen
    backbone's, whose outputs need no gradient) are left out: the input end is then the first
    trained layers.

    Depth is counted from the loss: an output layer (one whose output reaches no other weight
    layer) is at depth 0, and a layer is one deeper than the deepest layer it feeds. Each layer
    is compared with the output layers its output reaches (the median of their relative
    gradients); the layers judged are the deepest quarter (at least one) of each tower's layers
    that are not outputs: the input end, where a gradient that shrinks on its way back arrives
    last. Towers are the parts of the graph that share no weight layer (PPO's actor and critic,
    each with its own loss term). Layers left out of the comparison (normalisation,
    embeddings) are crossed, so a conv feeding a batch norm feeds what the norm feeds. This
    reads what the model computed: an FPN's lateral and output convs, a residual block's 1x1
    shortcut and a detection head's parallel branches sit near the loss (few layers to it),
    whatever their place in the module tree, and are not taken for the input end."""
    raw = next((r["graph"] for r in ctx.steps if isinstance(r.get("graph"), dict)), None)
    if raw is None:
        return None
    missing = {name for name in layers if name not in raw}
    trained = {
        name
        for r in ctx.steps
        for name, stats in (r.get("layers") or {}).items()
        if name in missing and _grad(stats) is not None
    }
    if trained:
        return None
    layers = [name for name in layers if name not in missing]
    kept = set(layers)
    bridged: dict[str, set[str]] = {}

    def feeders(name: str, visiting: frozenset[str]) -> set[str]:
        """The kept layers that feed `name`, crossing left-out layers."""
        out: set[str] = set()
        for up in raw.get(name) or []:
            if up in kept:
                out.add(up)
            elif up not in visiting:
                if up not in bridged:
                    bridged[up] = feeders(up, visiting | {up})
                out |= bridged[up]
        return out

    feeds = {name: feeders(name, frozenset({name})) - {name} for name in layers}
    consumers: dict[str, set[str]] = {name: set() for name in layers}
    for name, ups in feeds.items():
        for up in ups:
            consumers[up].add(name)
    depth: dict[str, int] = {}
    reach: dict[str, set[str]] = {}

    def walk(name: str, path: frozenset[str]) -> None:
        """depth and the output layers reached, along the consumers (cycles are cut)."""
        if name in depth:
            return
        nxt = [c for c in consumers[name] if c not in path]
        for c in nxt:
            walk(c, path | {c})
        depth[name] = 1 + max((depth[c] for c in nxt), default=-1)
        reach[name] = set().union(*(reach[c] for c in nxt)) if nxt else {name}

    for name in layers:
        walk(name, frozenset({name}))
    rank = {name: i for i, name in enumerate(layers)}
    towers = _components(layers, feeds)
    judged: set[str] = set()
    for tower in towers:
        earlier = sorted((n for n in tower if consumers[n]), key=lambda n: (-depth[n], rank[n]))
        judged.update(earlier[: max(1, len(earlier) // 4)])
    outputs = {
        name: sorted(reach[name], key=rank.__getitem__) for name in layers if consumers[name]
    }
    n_outputs = sum(1 for name in layers if not consumers[name])
    return Layout(layers, judged, outputs, towers, n_outputs, "graph")


def _components(layers: list[str], feeds: dict[str, set[str]]) -> list[list[str]]:
    """The layers grouped into connected parts (edges either way), each in model order."""
    parent = {name: name for name in layers}

    def root(name: str) -> str:
        while parent[name] != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    for name, ups in feeds.items():
        for up in ups:
            parent[root(up)] = root(name)
    groups: dict[str, list[str]] = {}
    for name in layers:
        groups.setdefault(root(name), []).append(name)
    return list(groups.values())


def order_layout(ctx: RuleContext, layers: list[str]) -> Layout:
    """The layout read from model order, for a log without a recorded layer graph (written
    before probes recorded one, or built by hand): towers from the names (`parallel_towers`),
    each layer compared with its tower's last layer, and the first quarter of each tower judged
    (`input_end`). Module order is depth order in a chain; in a model whose modules are defined
    apart from the order they run in (a head or a lateral branch defined before the trunk) it is
    not, which the graph avoids."""
    towers = parallel_towers(ctx, layers)
    outputs = {name: [tower[-1]] for tower in towers for name in tower[:-1]}
    return Layout(layers, input_end(towers), outputs, towers, len(towers), "model order")


def input_end(towers: list[list[str]]) -> set[str]:
    """The layers a vanishing gradient is judged on: the first quarter (at least one) of each
    tower's layers before its last.

    A gradient that vanishes with depth is smallest where it arrives last, at the input end: the
    first layers' gradient has crossed every layer after it. A small gradient in the middle of a
    model whose first layers learn normally has not vanished on the way back; the loss hardly
    depends on that layer (an FPN output level that no target is assigned to, a branch the
    output barely uses), and He initialisation or batch norm would not change that."""
    judged: set[str] = set()
    for tower in towers:
        earlier = tower[:-1]
        judged.update(earlier[: max(1, len(earlier) // 4)])
    return judged


def parallel_towers(ctx: RuleContext, layers: list[str]) -> list[list[str]]:
    """The weight layers split into parallel towers, or `[layers]` for one chain.

    The layer-wise ratio reads how the gradient shrinks on its way back along one chain of
    layers. A model made of separate towers that each end in their own output (PPO's actor and
    critic, each with its own loss term) has no such chain: its actor's first layer compared
    with the critic's head compares two loss terms' scales, not depth (on CartPole the policy
    gradient is 1e-3 of the value gradient by design). Towers are read from the names: every
    weight layer sits under a top-level module (`actor.fc1`), there are two or more of them,
    each with two or more weight layers of the same types in the same order, and nothing
    outside them (a shared layer after the towers would join them into one chain). Sequential
    stages built differently (a CNN's `features` and `classifier`) stay one chain. Where it
    misreads: a model that is nothing but identical blocks in sequence, with no layer outside
    them, is read as towers and judged block by block."""
    if len(layers) < 4 or any("." not in name for name in layers):
        return [layers]
    groups: dict[str, list[str]] = {}
    for name in layers:
        groups.setdefault(name.split(".", 1)[0], []).append(name)
    kinds = {tuple(ctx.layer_type(n) for n in group) for group in groups.values()}
    if len(groups) < 2 or len(kinds) != 1 or any(len(g) < 2 for g in groups.values()):
        return [layers]
    return list(groups.values())


def _through_time(ctx: RuleContext) -> Finding | None:
    """Vanishing gradients along a recurrent layer's input sequence, while the model fails.

    The probes record ‖∂L/∂x_t‖ at the first and last time step of each RNN/LSTM/GRU input.
    A ratio far below 1 alone is no fault: a model whose answer depends on the latest steps
    rightly learns to forget the first ones. It is one when the model also fails to learn: the
    training loss is still `VANISH_TIME_LEVEL` of the way from the floor to the chance level
    (to the first epoch's loss for regression), so whatever the early steps carry never reaches
    the weights. It must also have stalled, having removed under `VANISH_TIME_PROGRESS` of its
    first epoch's loss above the floor, so a model that is still learning is not judged early."""
    by_epoch = ctx.layer_epoch_medians("time_grad_ratio", role="param")
    if not by_epoch:
        return None
    streak = trailing(by_epoch, lambda r: min(r.values(), default=1.0) < VANISH_TIME_RATIO)
    if not persistent(streak, len(by_epoch), ctx.final):
        return None
    losses = ctx.values("loss")
    if not losses or not ctx.supervised:
        return None
    floor = ctx.loss_floor
    top = ctx.chance_loss if ctx.chance_loss is not None else losses[0]
    level = (losses[-1] - floor) / (top - floor) if top > floor else 0.0
    progress = (losses[0] - losses[-1]) / (losses[0] - floor) if losses[0] > floor else 1.0
    if level < VANISH_TIME_LEVEL or progress >= VANISH_TIME_PROGRESS:
        return None
    latest = by_epoch[streak[-1]]
    worst = min(latest, key=lambda name: latest[name])
    ref = "the chance level" if ctx.chance_loss is not None else "its first epoch"
    return Finding(
        code="vanishing_gradients",
        severity="error",
        message=(
            f"through time: the gradient reaching the first time step of {worst}'s input is "
            f"{latest[worst]:.1e}x the one reaching the last (median over epoch {streak[-1]}), "
            f"and the loss is still {level:.0%} of {ref}"
        ),
        evidence={
            "rests_on": ["small_early_step_gradient"],
            "ratio": latest[worst],
            "through_time": True,
            "layer_time_ratios": latest,
            "loss_level": level,
            "loss_progress": progress,
            "since_epoch": streak[0],
        },
        epoch=streak[0],
        layer=worst,
        causes=[
            "a plain recurrent layer (tanh RNN) multiplies the gradient by a factor below 1 at "
            "every step back, so what the first steps carry never reaches the weights",
            "sequences too long for the recurrent layer to carry information along",
        ],
        remedies=[
            "use an LSTM or GRU (gated layers carry gradients across many steps)",
            "shorten the sequences, or let the model see every step (attention, pooling over "
            "time, or a convolution over the sequence)",
        ],
        patch={},
    )


def _relative_grads(ctx: RuleContext, layers: list[str]) -> dict[int, dict[str, float]]:
    """{epoch: {layer: median of grad_norm / weight_norm}} (raw norms when weights are absent)."""
    per_epoch: dict[int, dict[str, list[float]]] = {}
    for record in ctx.regular_steps:
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


@decided_by("exploding_gradients")
def _explosion_margin(f: Finding) -> tuple[str, float, float, bool] | None:
    ratio = number(f.evidence.get("ratio"))
    if ratio is None or not math.isfinite(ratio):
        return None  # an overflow or a NaN right after a huge step: no doubt
    return "gradient norm / its start", ratio, EXPLODE_RATIO, True


@decided_by("vanishing_gradients")
def _vanishing_margin(f: Finding) -> tuple[str, float, float, bool]:
    through_time = bool(f.evidence.get("through_time"))
    what = "first/last time step gradient" if through_time else "first/last layer gradient"
    threshold = VANISH_TIME_RATIO if through_time else VANISH_RATIO
    return what, float(f.evidence["ratio"]), threshold, False
