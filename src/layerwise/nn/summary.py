"""A Keras-style summary of any `nn.Module`: per-layer output shape, parameters and MACs.

    >>> print(summary(model, (1, 1, 28, 28)))   # the full input shape, batch dim first

One forward is run (eval mode, no grad, modes restored) with hooks on every leaf layer and on every
module that owns parameters directly. Rows follow the order layers ran in; layers that own
parameters but never ran are listed last, so the rows' parameters always add up to the total.

MACs (multiply-accumulates) are counted for the forward that ran, so give a batch of one for
per-sample numbers: Linear and Conv (incl. transposed) exactly; RNN/LSTM/GRU and their cells as the
gate matrix products (elementwise gate math is ignored); MultiheadAttention as its projections plus
the two attention products; BatchNorm as one per element (it folds into a scale and shift at
inference), LayerNorm/GroupNorm as two per element; everything else (activations, pooling,
embeddings) as zero. Buffers such as batch-norm running statistics are not parameters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from layerwise.nn.build import check_input

_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
_RNN_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}
_CELL_GATES = {nn.LSTMCell: 4, nn.GRUCell: 3, nn.RNNCell: 1}


@dataclass
class LayerRow:
    """One layer of a summary. `output_shape` is a tuple, or a list of them for several outputs."""

    name: str
    type: str
    output_shape: Any
    trainable_params: int
    non_trainable_params: int
    macs: int

    @property
    def params(self) -> int:
        return self.trainable_params + self.non_trainable_params


@dataclass(repr=False)
class ModelSummary:
    """What `summary()` measured; `str()` renders it as a table."""

    model_name: str
    input_shape: Any
    rows: list[LayerRow] = field(default_factory=list)
    total_params: int = 0
    trainable_params: int = 0
    non_trainable_params: int = 0
    param_bytes: int = 0
    total_macs: int = 0

    def __str__(self) -> str:
        header = ("Layer (type)", "Output shape", "Params", "MACs")
        body = [
            (
                f"{row.name or 'model'} ({row.type})",
                _format_shape(row.output_shape) if row.output_shape is not None else "(not run)",
                f"{row.params:,}",
                f"{row.macs:,}",
            )
            for row in self.rows
        ]
        widths = [max(len(r[i]) for r in [header, *body]) for i in range(4)]

        def line(cells: Sequence[str]) -> str:
            left = "  ".join(c.ljust(w) for c, w in zip(cells[:2], widths[:2], strict=True))
            right = "  ".join(c.rjust(w) for c, w in zip(cells[2:], widths[2:], strict=True))
            return f"{left}  {right}".rstrip()

        width = sum(widths) + 6
        lines = [f'Model: "{self.model_name}"', "-" * width, line(header), "=" * width]
        lines += [line(cells) for cells in body]
        lines += [
            "=" * width,
            f"Total params: {self.total_params:,} ({_human_bytes(self.param_bytes)})",
            f"Trainable params: {self.trainable_params:,}",
            f"Non-trainable params: {self.non_trainable_params:,}",
            f"Total MACs: {self.total_macs:,} ({_human_count(self.total_macs)}) "
            f"for input {_format_shape(self.input_shape)}",
        ]
        return "\n".join(lines)

    __repr__ = __str__


def _format_shape(shape: Any) -> str:
    if isinstance(shape, tuple):
        return "(" + ", ".join(str(d) for d in shape) + ")"
    if isinstance(shape, list):
        return ", ".join(
            _format_shape(s) if isinstance(s, tuple) else f"[{_format_shape(s)}]" for s in shape
        )
    if isinstance(shape, dict):
        return "{" + ", ".join(f"{k}: {_format_shape(v)}" for k, v in shape.items()) + "}"
    return "?"


def _human_count(n: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def _human_bytes(n: int) -> str:
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def _shape_of(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return tuple(obj.shape)
    if isinstance(obj, PackedSequence):
        return tuple(obj.data.shape)
    if isinstance(obj, tuple | list):
        return [_shape_of(o) for o in obj]
    if isinstance(obj, dict):
        return {k: _shape_of(v) for k, v in obj.items()}
    return None


def _first_tensor(obj: Any) -> Tensor | None:
    if isinstance(obj, Tensor):
        return obj
    if isinstance(obj, PackedSequence):
        return obj.data
    if isinstance(obj, tuple | list):
        for item in obj:
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


def _input(args: tuple, kwargs: dict, index: int, name: str) -> Tensor | PackedSequence | None:
    if len(args) > index:
        return args[index]
    return kwargs.get(name)


def _rnn_macs(module: nn.RNNBase, x: Any) -> int:
    if isinstance(x, PackedSequence):
        steps = x.data.shape[0]  # one step per real (unpadded) token
    elif x.dim() == 2:
        steps = x.shape[0]
    else:
        steps = x.shape[0] * x.shape[1]
    gates, hidden, proj = _RNN_GATES[module.mode], module.hidden_size, module.proj_size
    directions = 2 if module.bidirectional else 1
    recurrent = proj or hidden
    per_step = 0
    for layer in range(module.num_layers):
        layer_in = module.input_size if layer == 0 else recurrent * directions
        per_step += gates * hidden * (layer_in + recurrent) + hidden * proj
    return steps * directions * per_step


def _attention_macs(module: nn.MultiheadAttention, args: tuple, kwargs: dict) -> int:
    query, key = _input(args, kwargs, 0, "query"), _input(args, kwargs, 1, "key")
    e = module.embed_dim
    batch = 1
    if query.dim() == 3:
        batch = query.shape[0] if module.batch_first else query.shape[1]
    q_tokens, k_tokens = query.numel() // query.shape[-1], key.numel() // key.shape[-1]
    q_len, k_len = q_tokens // batch, k_tokens // batch
    projections = q_tokens * e * e + k_tokens * e * (module.kdim + module.vdim) + q_tokens * e * e
    return projections + 2 * batch * q_len * k_len * e


def _macs(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> int:
    out = _first_tensor(output)
    x = _input(args, kwargs, 0, "input")
    if isinstance(module, nn.Linear):
        return out.numel() * module.in_features
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        per_input = module.out_channels // module.groups * math.prod(module.kernel_size)
        return x.numel() * per_input
    if isinstance(module, nn.modules.conv._ConvNd):
        return out.numel() * (module.in_channels // module.groups) * math.prod(module.kernel_size)
    if isinstance(module, _BATCHNORMS):
        return out.numel()
    if isinstance(module, nn.LayerNorm | nn.GroupNorm):
        return 2 * out.numel()
    if isinstance(module, nn.RNNBase):
        return _rnn_macs(module, x)
    if isinstance(module, tuple(_CELL_GATES)):
        batch = x.shape[0] if x.dim() == 2 else 1
        gates = _CELL_GATES[type(module)]
        return batch * gates * module.hidden_size * (module.input_size + module.hidden_size)
    if isinstance(module, nn.MultiheadAttention):
        return _attention_macs(module, args, kwargs)
    return 0


def _example(
    model: nn.Module, inputs: Any, device: torch.device | str | None, dtype: torch.dtype | None
) -> Any:
    """Turn a shape into a tensor of zeros; move example tensors to `device`."""
    if device is None:
        first = next(iter((*model.parameters(), *model.buffers())), None)
        device = first.device if first is not None else "cpu"
    if isinstance(inputs, Sequence) and all(isinstance(d, int) for d in inputs):
        if dtype is None:
            leaves = [m for m in model.modules() if not list(m.children())]
            embeds = bool(leaves) and isinstance(leaves[0], nn.Embedding)
            dtype = torch.long if embeds else torch.get_default_dtype()
        return torch.zeros(tuple(inputs), dtype=dtype, device=device)
    if isinstance(inputs, Tensor):
        return inputs.to(device)
    if isinstance(inputs, tuple):
        return tuple(a.to(device) if isinstance(a, Tensor) else a for a in inputs)
    return inputs


def summary(
    model: nn.Module,
    inputs: Sequence[int] | Tensor | tuple[Tensor, ...],
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> ModelSummary:
    """Summarise `model` by running `inputs` through it once.

    Args:
        model: any `nn.Module`; lazy layers get built by this forward.
        inputs: the full input shape including the batch dim, e.g. `(1, 1, 28, 28)` (zeros of
            that shape are fed), or an example batch (a tensor, or a tuple of positional inputs).
            Output shapes and MACs are for that batch.
        device: where the example goes; default: the model's device.
        dtype: dtype of the zeros made from a shape; default float, or long when the first layer
            is an `nn.Embedding`.
    """
    example = _example(model, inputs, device, dtype)
    owners = {
        module: name
        for name, module in model.named_modules()
        if not list(module.children()) or list(module.parameters(recurse=False))
    }
    seen: dict[nn.Module, dict[str, Any]] = {}

    def record(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        entry = seen.setdefault(module, {"shape": _shape_of(output), "macs": 0})
        entry["macs"] += _macs(module, args, kwargs, output)

    handles = [m.register_forward_hook(record, with_kwargs=True) for m in owners]
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            check_input(model, example)
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes:
            module.training = training

    ran = list(seen) + [m for m in owners if m not in seen and list(m.parameters(recurse=False))]
    rows = []
    for module in ran:
        own = list(module.parameters(recurse=False))
        entry = seen.get(module, {"shape": None, "macs": 0})
        rows.append(
            LayerRow(
                name=owners[module],
                type=type(module).__name__,
                output_shape=entry["shape"],
                trainable_params=sum(p.numel() for p in own if p.requires_grad),
                non_trainable_params=sum(p.numel() for p in own if not p.requires_grad),
                macs=entry["macs"],
            )
        )
    params = list(model.parameters())
    trainable = sum(p.numel() for p in params if p.requires_grad)
    total = sum(p.numel() for p in params)
    return ModelSummary(
        model_name=type(model).__name__,
        input_shape=_shape_of(example),
        rows=rows,
        total_params=total,
        trainable_params=trainable,
        non_trainable_params=total - trainable,
        param_bytes=sum(p.numel() * p.element_size() for p in params),
        total_macs=sum(row.macs for row in rows),
    )
