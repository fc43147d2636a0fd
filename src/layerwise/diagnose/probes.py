"""Probes: per-layer statistics of a training run, sampled every k steps so they cost ~nothing.

What the doctor needs to see inside a model (gradient norms per layer, how far each step moves
the weights, dead or saturated units) is cheap to compute but not free, so it is computed only on
sampled steps: the first step of every fit and every `every`-th step after it, and, densely, the
first steps of training (`early_steps`): a bad initialisation can blow the loss up to NaN within
two or three steps, before the first regular sample, and the doctor must see what led there.
Forward hooks are registered just before a sampled step and removed just after it, so every
other step runs the bare model; all the numbers of a sampled step stay on the device until the
end of that step and are then read to the host in one go. The result is a `ProbeLog` of plain
records (`diagnose/probe_log.py`), which the rules read without the model (see "Probes" in
docs/architecture.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.nn.parameter import is_lazy

from layerwise.diagnose.gates import GATE_NAMES, gate_saturation
from layerwise.diagnose.probe_log import ProbeLog
from layerwise.errors import RecipeError
from layerwise.train.callbacks.base import Callback

if TYPE_CHECKING:
    from layerwise.train.trainer import Trainer

__all__ = [
    "ACTIVATION_TYPES",
    "RECURRENT_TYPES",
    "Probes",
    "WatchedLayer",
    "auto_every",
    "early_steps",
    "layer_graph",
    "watched_layers",
]

ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardtanh,
    nn.Hardsigmoid,
    nn.Hardswish,
    nn.Softplus,
    nn.Softsign,
    nn.LogSigmoid,
    nn.Tanhshrink,
    nn.Threshold,
)
RECURRENT_TYPES: tuple[type[nn.Module], ...] = (nn.RNN, nn.LSTM, nn.GRU)
GATED_TYPES = tuple(GATE_NAMES)  # LSTM, GRU: their gates' saturation is recorded too
MAX_AUTO_EVERY = 50  # sample at least this often, however long the epoch
DENSE_STEPS = 4  # the first 4 steps of training are all sampled, then steps 8, 16, 32, ...
AUTO_SAMPLES_PER_EPOCH = 9
SATURATION_MARGIN = 0.02  # Sigmoid: < 0.02 or > 0.98; Tanh/Hardtanh: within 1% of the range


def auto_every(batches_per_epoch: int | None) -> int:
    """The sampling interval `every="auto"` picks: about 9 samples per epoch, at least every 50.

    On MNIST (469 batches of 128) this is every 50 steps. A sampled step costs about 1.5 ms more
    than a plain one on the MLP (7 ms) and 13 ms more on the CNN (118 ms), so sampling every 50
    steps adds well under 1% (benchmarks/probe_overhead.py). A 45-batch epoch is sampled every
    5 steps: small data means small steps, where the extra few percent cost little time.
    """
    if not batches_per_epoch:
        return MAX_AUTO_EVERY
    return max(1, min(MAX_AUTO_EVERY, math.ceil(batches_per_epoch / AUTO_SAMPLES_PER_EPOCH)))


def early_steps(every: int) -> set[int]:
    """The steps sampled besides every `every`-th: 0-3, then powers of two below `every`.

    Nine extra samples in a run sampled every 50 steps: on MNIST's MLP about 14 ms once per run.
    Their records carry `"early": True`, and the rules that take medians over an epoch leave
    them out when the epoch has regular samples, so the first moments of training (the loss
    and gradients of untrained weights) weigh no more than before.
    """
    steps = set(range(min(DENSE_STEPS, every)))
    power = DENSE_STEPS * 2
    while power < every:
        steps.add(power)
        power *= 2
    return steps


# ---------------------------------------------------------------------------- watched layers
@dataclass
class WatchedLayer:
    """A layer the probes describe, with what to compute for it."""

    name: str
    module: nn.Module
    role: str  # "param" or "activation"
    weights: list[Tensor]
    dead: bool = False  # ReLU/ReLU6: record dead_frac
    saturation: tuple[float, float] | None = None  # outputs outside (low, high) are saturated
    recurrent: bool = False  # RNN/LSTM/GRU: record the gradient at each time step of its input


def watched_layers(model: nn.Module) -> list[WatchedLayer]:
    """The layers probes watch, in model order: activations, and modules that own a weight."""
    layers = []
    for name, module in model.named_modules():
        name = name or "model"
        if isinstance(module, ACTIVATION_TYPES):
            dead = isinstance(module, nn.ReLU | nn.ReLU6)
            layers.append(WatchedLayer(name, module, "activation", [], dead, _saturation(module)))
            continue
        weights = [
            p
            for key, p in module.named_parameters(recurse=False)
            if key.startswith("weight") and not is_lazy(p)
        ]
        if weights:  # Dense, Conv, BatchNorm, LayerNorm, Embedding, RNN (weight_ih_l0, ...)
            recurrent = isinstance(module, RECURRENT_TYPES)
            layers.append(WatchedLayer(name, module, "param", weights, recurrent=recurrent))
    return layers


def _saturation(module: nn.Module) -> tuple[float, float] | None:
    if isinstance(module, nn.Sigmoid):
        return SATURATION_MARGIN, 1 - SATURATION_MARGIN
    if isinstance(module, nn.Tanh):
        return -1 + SATURATION_MARGIN, 1 - SATURATION_MARGIN
    if isinstance(module, nn.Hardtanh) and not isinstance(module, nn.ReLU6):
        margin = SATURATION_MARGIN / 2 * (module.max_val - module.min_val)
        return module.min_val + margin, module.max_val - margin
    return None


# ---------------------------------------------------------------------------- the callback
class Probes(Callback):
    """Record per-layer statistics on sampled steps into `self.log` (and `path`, if given).

    Args:
        every: sample every `every`-th optimizer step (and the first step of each fit);
            `"auto"` picks about 9 samples per epoch, at least every 50 steps (`auto_every`).
        path: where to write the log as JSON lines (`probes.jsonl` in a run folder); it is
            rewritten atomically at each epoch end and at the end of the fit, and read back on
            resume (records at or after the resumed step are dropped, as they are redone).
        histogram_bins: bins of the per-epoch activation histograms.

    A `train_step` override keeps working: outputs come from forward hooks, gradients are read
    in `after_backward` (so the override must call `self.backward(loss)` for gradient norms),
    and the loss is the `loss` log `train_step` returned (or its first log when it has no
    `loss`, e.g. a GAN's `d_loss`). When a module runs several times in one step, its first call
    (with gradients enabled) counts.

    Example:
        >>> probes = Probes(every=10)
        >>> trainer = Trainer(model, callbacks=[probes])  # doctest: +SKIP
        >>> trainer.fit((x, y), epochs=3)  # doctest: +SKIP
        >>> probes.log.series("fc1", "grad_norm")  # doctest: +SKIP
        ([0, 10, 20], [0.52, 0.31, 0.29])
    """

    order = -10

    def __init__(
        self, every: int | str = "auto", path: str | Path | None = None, histogram_bins: int = 40
    ) -> None:
        if every != "auto" and (not isinstance(every, int) or isinstance(every, bool) or every < 1):
            raise RecipeError(
                f"probe interval 'every' must be a positive integer or 'auto', got {every!r}",
                hint="e.g. every: 50 (sample every 50th step) or every: auto",
            )
        if not isinstance(histogram_bins, int) or histogram_bins < 1:
            raise RecipeError(
                f"histogram_bins must be a positive integer, got {histogram_bins!r}",
                hint="e.g. histogram_bins: 40",
            )
        self.every = every
        self.path = Path(path) if path is not None else None
        self.histogram_bins = histogram_bins
        self.log = ProbeLog()
        self.every_ = MAX_AUTO_EVERY
        self._layers: list[WatchedLayer] = []
        self._handles: list[Any] = []
        self._first_step = 0
        self._early: set[int] = set()
        self._epoch_len: int | None = None
        self._step: int | None = None  # the step being sampled, None between samples
        self._epoch = 0  # 1-based epoch of that step
        self._ranks: Any = None
        self._want_hist = False  # its epoch has no histogram yet
        self._saved_size: tuple[int, int, int] | None = None  # what `_save` last wrote
        self._graph_done = False  # this fit's layer graph is recorded
        self._reset_sample()

    # ---------------------------------------------------------------- events
    def on_fit_start(self, trainer: Trainer) -> None:
        batches = _length(trainer.train_data)
        self.every_ = self.every if isinstance(self.every, int) else auto_every(batches)
        self._early = early_steps(self.every_)
        self._layers = watched_layers(trainer.model)
        self._ranks = getattr(trainer, "dist", None)  # a `Distributed` under torchrun, else None
        self._first_step = trainer.state.step
        self._saved_size = None
        self._graph_done = False
        if trainer.state.step == 0:
            self.log = ProbeLog()
        elif self.path is not None and self.path.exists():
            self.log = ProbeLog.load(self.path).truncate(trainer.state.step)
        else:
            self.log.truncate(trainer.state.step)

    def on_epoch_start(self, trainer: Trainer) -> None:
        self._epoch_len = _length(trainer.train_data)
        if self._step is None and self._sampled(trainer.state.step):
            self._arm(trainer)

    def after_backward(self, trainer: Trainer) -> None:
        if self._step is None or trainer.state.step != self._step:
            return
        with torch.no_grad():
            self._read_gradients(trainer)

    def on_batch_end(self, trainer: Trainer) -> None:
        if self._step is not None:
            with torch.no_grad():
                self._record(trainer)
            self._disarm()
        in_epoch = self._epoch_len is None or trainer.state.batch_in_epoch < self._epoch_len
        if in_epoch and self._sampled(trainer.state.step):
            self._arm(trainer)  # only within the epoch: validation and epoch-end run unhooked

    def on_epoch_end(self, trainer: Trainer) -> None:
        self._save()

    def on_fit_end(self, trainer: Trainer) -> None:
        self._disarm()
        self._save()

    def _save(self) -> None:
        """Write the log to `path`, unless the file already holds these very records (a fit that
        ends with an epoch was saved at that epoch's end, and each write is fsynced, which costs
        wall time). Within a fit records are only added, so their count tells."""
        if self.path is None:
            return
        size = (id(self.log), len(self.log.steps), len(self.log.hists))
        if size != self._saved_size:
            self.log.save(self.path)
            self._saved_size = size

    # --------------------------------------------------------------- sampling
    def _sampled(self, step: int) -> bool:
        return step % self.every_ == 0 or step == self._first_step or step in self._early

    def _arm(self, trainer: Trainer) -> None:
        """Snapshot the weights and hook every watched layer for the coming step."""
        self._reset_sample()
        self._step = trainer.state.step
        self._epoch = trainer.state.epoch + 1
        self._want_hist = self._epoch not in {h.get("epoch") for h in self.log.hists}
        with torch.no_grad():
            self._before = [w.detach().clone() for layer in self._layers for w in layer.weights]
        self._handles = [
            layer.module.register_forward_hook(self._hook(layer)) for layer in self._layers
        ]
        self._handles += [
            layer.module.register_forward_pre_hook(self._time_hook(layer))
            for layer in self._layers
            if layer.recurrent
        ]
        self._handles += [
            layer.module.register_forward_hook(self._gate_hook(layer))
            for layer in self._layers
            if isinstance(layer.module, GATED_TYPES)
        ]

    def _disarm(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._step = None
        self._reset_sample()

    def _reset_sample(self) -> None:
        self._outputs: dict[str, tuple[list[str], Tensor]] = {}
        self._hist: dict[str, Tensor] = {}
        self._grads: dict[str, Tensor] = {}
        self._grad_norm: Tensor | None = None
        self._before: list[Tensor] = []
        self._time_grads: dict[str, Tensor] = {}
        self._gates: dict[str, tuple[list[str], Tensor]] = {}
        self._nodes: dict[str, list[Any]] = {}  # layer -> its outputs' autograd nodes, every call

    def _hook(self, layer: WatchedLayer) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if not torch.is_grad_enabled():
                return  # an inference pass inside a custom train_step
            y = _first_tensor(output)
            node = y.grad_fn if y is not None and layer.role == "param" else None
            if node is not None and not self._graph_done:
                self._nodes.setdefault(layer.name, []).append(node)  # every call: `layer_graph`
            if layer.name in self._outputs:
                return  # a repeated call: the first one counts
            if y is None or not y.is_floating_point() or y.numel() == 0:
                return
            with torch.no_grad(), torch.autocast(y.device.type, enabled=False):
                y = y.detach().float()
                self._outputs[layer.name] = _output_stats(y, layer, self._ranks)
                if self._want_hist and layer.role == "activation":
                    self._hist[layer.name] = _histogram(y, self.histogram_bins)

        return hook

    def _time_hook(self, layer: WatchedLayer) -> Callable[..., Any]:
        """Watch the gradient reaching each time step of a recurrent layer's input.

        Vanishing gradients through time do not show layer by layer (the recurrent layer is one
        layer); they show as ‖∂L/∂x_0‖ far below ‖∂L/∂x_T‖ along the sequence. An input that
        needs no gradient (raw features) is swapped for a leaf copy that does, which changes
        nothing upstream (there is nothing upstream); the gradient is reduced per time step on
        the device in the backward pass and read with the rest of the sample."""

        def hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
            if layer.name in self._time_grads or not torch.is_grad_enabled() or not args:
                return None
            x = args[0]
            if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2:
                return None  # a PackedSequence or an unbatched/odd input: not watched
            time_dim = 1 if getattr(module, "batch_first", False) and x.dim() == 3 else 0
            self._time_grads[layer.name] = torch.zeros(())  # claimed: the first call counts
            if not x.requires_grad:
                x = x.detach().requires_grad_(True)
                args = (x, *args[1:])

            def on_grad(grad: Tensor) -> None:
                g = grad.detach().float()
                dims = [d for d in range(g.dim()) if d != time_dim]
                self._time_grads[layer.name] = torch.linalg.vector_norm(g, dim=dims)

            x.register_hook(on_grad)
            return args

        return hook

    def _gate_hook(self, layer: WatchedLayer) -> Callable[..., None]:
        """Gate saturation of an LSTM/GRU's first layer, recomputed from its input and weights
        (`layerwise.diagnose.gates`): its fused kernel shows no gate to a hook."""

        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            if layer.name in self._gates or not torch.is_grad_enabled():
                return
            found = gate_saturation(module, args)
            if found is not None:
                self._gates[layer.name] = found

        return hook

    def _read_gradients(self, trainer: Trainer) -> None:
        """Global and per-layer weight gradient norms; layers seen in an earlier backward keep
        their first value (a GAN step runs one backward per network)."""
        params = [p for p in trainer.model.parameters() if p.grad is not None]
        if not params:
            return
        norms = [n.float() for n in torch._foreach_norm([p.grad for p in params])]
        scaler = getattr(trainer, "scaler", None)
        unscale = 1.0 / scaler.get_scale() if scaler is not None and scaler.is_enabled() else 1.0
        index = {id(p): i for i, p in enumerate(params)}
        if self._grad_norm is None:
            self._grad_norm = torch.linalg.vector_norm(torch.stack(norms)) * unscale
        for layer in self._layers:
            found = [norms[index[id(w)]] for w in layer.weights if id(w) in index]
            if found and layer.name not in self._grads:
                norm = _combine(found)
                self._grads[layer.name] = norm if unscale == 1.0 else norm * unscale

    def _record(self, trainer: Trainer) -> None:
        """Build the step (and histogram) record, reading every number in one host transfer."""
        reader = _Reader()
        record: dict[str, Any] = {
            "kind": "step",
            "step": self._step,
            "epoch": self._epoch,
            "loss": None,
            "grad_norm": None,
            "layers": {},
        }
        if self._step in self._early and self._step % self.every_ != 0:
            record["early"] = True
        if self._nodes:
            record["graph"] = layer_graph(self._nodes, [layer.name for layer in self._layers])
            self._graph_done = True
        logs = trainer.last_logs
        loss = logs.get("loss", next(iter(logs.values()), None))
        if isinstance(loss, Tensor) and loss.numel() > 0:
            reader.add(loss.detach().float().mean(), record, ["loss"])
        elif isinstance(loss, int | float):
            record["loss"] = float(loss)
        if self._grad_norm is not None:
            reader.add(self._grad_norm, record, ["grad_norm"])
        weight_stats = self._weight_stats()
        for layer in self._layers:
            found = [
                pair
                for pair in (self._outputs.get(layer.name), weight_stats.get(layer.name))
                if pair is not None
            ]
            if layer.name in self._grads:
                found.append((["grad_norm"], self._grads[layer.name]))
            if layer.name in self._gates:
                found.append(self._gates[layer.name])
            time_grad = self._time_grads.get(layer.name)
            if time_grad is not None and time_grad.dim() == 1 and len(time_grad) >= 2:
                first, last = time_grad[0], time_grad[-1]
                found.append(
                    (
                        ["time_grad_first", "time_grad_last", "time_grad_ratio"],
                        torch.stack([first, last, first / last]),
                    )
                )
            if not found:
                continue  # an activation that did not run in this step
            stats = record["layers"][layer.name] = {
                "type": type(layer.module).__name__,
                "role": layer.role,
            }
            for keys, values in found:
                reader.add(values, stats, keys)
        hist: dict[str, Any] = {}
        for name, values in self._hist.items():
            hist[name] = {}
            reader.add(values, hist[name], ["lo", "hi"], counts=True)
        reader.read(across_ranks=getattr(trainer, "dist", None))
        self.log.steps.append(record)
        if self._want_hist and hist:
            self.log.hists.append(
                {"kind": "hist", "epoch": self._epoch, "step": self._step, "layers": hist}
            )

    def _weight_stats(self) -> dict[str, tuple[list[str], Tensor]]:
        """weight_norm (before the step) and update_ratio = ‖W_after - W_before‖ / ‖W_before‖."""
        if not self._before:
            return {}
        after = [w.detach() for layer in self._layers for w in layer.weights]
        before_norms = torch._foreach_norm(self._before)
        torch._foreach_sub_(self._before, after)  # now W_before - W_after, without a new copy
        delta_norms = torch._foreach_norm(self._before)
        stats, i = {}, 0
        for layer in self._layers:
            n = len(layer.weights)
            if n:
                norm = _combine(before_norms[i : i + n]).float()
                if any(w.requires_grad for w in layer.weights):
                    delta = _combine(delta_norms[i : i + n]).float()
                    stats[layer.name] = (
                        ["weight_norm", "update_ratio"],
                        torch.stack([norm, delta / norm]),
                    )
                else:  # frozen: it has neither gradients nor updates to report
                    stats[layer.name] = (["weight_norm"], norm.reshape(1))
            i += n
        return stats


def layer_graph(nodes: dict[str, list[Any]], order: list[str]) -> dict[str, list[str]]:
    """{layer: the layers whose outputs reach its input without crossing another of them}.

    `nodes` holds each weight layer's output nodes in the autograd graph (`y.grad_fn`, one per
    call). Walking back from a layer's outputs, the walk stops at the first node that is another
    layer's output: that layer feeds this one directly. Activations, additions, reshapes and
    the like in between are crossed; parameters and inputs end the walk. The graph is read from
    one step's autograd graph, so it holds what the model computed (a residual block's skip
    path, an FPN's lateral and top-down paths, heads shared across levels), not the order in
    which the modules were defined. Values list layers in `order` (model order); a layer fed by
    none of them (the input end) maps to `[]`. Costs one walk per layer over the nodes between
    it and the layers before it, once per fit."""
    owner: dict[Any, list[str]] = {}
    for name, outs in nodes.items():
        for node in outs:
            owner.setdefault(node, []).append(name)
    rank = {name: i for i, name in enumerate(order)}
    graph: dict[str, list[str]] = {}
    for name, outs in nodes.items():
        feeds: set[str] = set()
        seen: set[Any] = set()
        stack = [nxt for node in outs for nxt, _ in node.next_functions if nxt is not None]
        while stack:
            node = stack.pop()
            if node in seen:
                continue
            seen.add(node)
            if node in owner:
                feeds.update(n for n in owner[node] if n != name)
                continue
            stack.extend(nxt for nxt, _ in node.next_functions if nxt is not None)
        graph[name] = sorted(feeds, key=lambda n: rank.get(n, len(rank)))
    return dict(sorted(graph.items(), key=lambda kv: rank.get(kv[0], len(rank))))


class _Reader:
    """Collects device tensors and where their numbers go, then reads them all at once."""

    def __init__(self) -> None:
        self._items: list[tuple[Tensor, dict[str, Any], list[str], bool]] = []

    def add(self, values: Tensor, target: dict[str, Any], keys: list[str], counts=False) -> None:
        self._items.append((values.reshape(-1), target, keys, counts))

    def read(self, across_ranks: Any = None) -> None:
        """Read every number; in a distributed run (`across_ranks`, a `Distributed`), first
        average them over the ranks (`_average_across_ranks`)."""
        if not self._items:
            return
        device = self._items[0][0].device
        wide = torch.float32 if device.type == "mps" else torch.float64  # exact bin counts
        flat = torch.cat([v.to(device=device, dtype=wide) for v, *_ in self._items])
        if across_ranks is not None:
            flat = _average_across_ranks(flat, self._items, across_ranks)
        numbers, offset = flat.tolist(), 0
        for values, target, keys, counts in self._items:
            chunk = numbers[offset : offset + values.numel()]
            offset += values.numel()
            target.update(zip(keys, chunk, strict=False))
            if counts:
                target["counts"] = [int(c) for c in chunk[len(keys) :]]


def _average_across_ranks(flat: Tensor, items: list[Any], ranks: Any) -> Tensor:
    """A sampled step's numbers averaged over the ranks, each of which probed its own shard.

    Gradient norms and weight statistics are already equal on every rank (gradients are
    averaged before `after_backward`), so averaging keeps them; the loss and the activation
    fractions become those of the whole batch (shards are equal-sized); `act_std` goes through
    the second moment, so it is the spread over the whole batch, not the mean of the shards'
    spreads. `dead_frac` is already that of the whole batch (`_output_stats` takes the maximum
    of each unit's activity over the ranks). Histograms stay rank 0's: each rank bins over its
    own range."""
    mine = torch.zeros_like(flat, dtype=torch.bool)  # numbers kept from this rank
    moments, offset = flat.clone(), 0
    pairs = []  # (position of act_mean, position of act_std)
    for values, _, keys, counts in items:
        if counts:
            mine[offset : offset + values.numel()] = True
        elif "act_mean" in keys and "act_std" in keys:
            pairs.append((offset + keys.index("act_mean"), offset + keys.index("act_std")))
        offset += values.numel()
    for m, s in pairs:
        moments[s] = flat[s] ** 2 + flat[m] ** 2
    averaged = ranks.average(moments)
    for m, s in pairs:
        averaged[s] = (averaged[s] - averaged[m] ** 2).clamp(min=0).sqrt()
    return torch.where(mine, flat, averaged)


def _output_stats(y: Tensor, layer: WatchedLayer, ranks: Any = None) -> tuple[list[str], Tensor]:
    """act_mean, act_std and, for activations, zero/dead/saturated fractions, as one tensor.

    Everything is float arithmetic and plain reductions: on the CPU, `std_mean` (Welford) and
    comparisons that make bool tensors are 5-50x slower than a sum over the same elements.
    Counting by `sign()` makes a NaN output give NaN fractions, like its mean and std.
    """
    n = y.numel()
    mean = y.mean()
    std = torch.linalg.vector_norm(y - mean) / math.sqrt(n)
    keys, values = ["act_mean", "act_std"], [mean, std]
    if layer.role == "activation":
        keys.append("zero_frac")
        values.append(1.0 - y.sign().abs_().sum() / n)
    if layer.dead:
        # A unit (feature or channel: dim 1) is dead when it is positive nowhere in the batch.
        alive = _per_unit_max(y).clamp_(min=0).sign_()
        if ranks is not None:  # alive on any rank's part of the batch is alive in the batch
            alive = ranks.maximum(alive)
        keys.append("dead_frac")
        values.append(1.0 - alive.mean())
    if layer.saturation is not None:
        low, high = layer.saturation
        outside = (y - (low + high) / 2).abs_().sub_((high - low) / 2).relu_().sign_()
        keys.append("sat_frac")
        values.append(outside.sum() / n)
    return keys, torch.stack(values)


def _per_unit_max(x: Tensor) -> Tensor:
    """Each unit's (dim 1's) maximum over the batch and any positions.

    An image's channel is reduced over its contiguous pixels first, then over the batch: on the
    CPU this is 2-3 times faster than one reduction over dims (0, 2, 3) of an NCHW tensor.
    """
    if x.dim() > 2 and x.is_contiguous():
        return x.flatten(2).amax(dim=2).amax(dim=0)
    return torch.amax(x, dim=[d for d in range(x.dim()) if d != 1] if x.dim() > 1 else [0])


def _histogram(y: Tensor, bins: int) -> Tensor:
    """[lo, hi, counts...] over the finite values, with no host sync.

    `torch.histc` needs its range as Python numbers (a sync) and fails on inf/NaN, so the bins
    are counted with `bincount`; non-finite values are left out of the counts.
    """
    big = torch.full((), torch.finfo(y.dtype).max, device=y.device)
    finite = y + (y - y)  # NaN wherever y is inf or NaN, y elsewhere
    lo = torch.fmin(finite, big).amin()  # fmin/fmax skip NaN
    hi = torch.fmax(finite, -big).amax()
    width = hi - lo
    scale = torch.where(width > 0, bins / width, torch.zeros_like(width))
    index = finite.sub_(lo).mul_(scale).floor_().clamp_(0, bins - 1)  # in place: big tensors
    index = index.nan_to_num_(nan=bins).to(torch.int32)  # non-finite: an extra bin, dropped
    counts = torch.bincount(index.reshape(-1), minlength=bins + 1)[:bins]
    lo_hi = torch.stack([lo, hi]).masked_fill(lo > hi, float("nan"))  # no finite value at all
    return torch.cat([lo_hi, counts.to(lo_hi.dtype)])


def _combine(norms: list[Tensor]) -> Tensor:
    """The norm of several tensors taken together, from their own norms."""
    if len(norms) == 1:
        return norms[0]
    return torch.linalg.vector_norm(torch.stack([n.float() for n in norms]))


def _first_tensor(output: Any) -> Tensor | None:
    """The tensor to describe: the output itself, or the first tensor in a tuple/list/dict
    (an RNN's `(output, h_n)`, attention's `(output, weights)`, a PackedSequence's data)."""
    if isinstance(output, Tensor):
        return output
    items: Iterable[Any] = ()
    if isinstance(output, tuple | list):
        items = output
    elif isinstance(output, dict):
        items = output.values()
    for item in items:
        found = _first_tensor(item)
        if found is not None:
            return found
    return None


def _length(batcher: Any) -> int | None:
    try:
        return len(batcher)
    except TypeError:
        return None
