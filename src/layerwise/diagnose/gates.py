"""Gate saturation of LSTM and GRU layers, recomputed from a layer's input and its weights.

A recurrent layer's gates are inside its fused kernel, so no hook sees them. They are computed
again on probed steps: the first layer's forward direction is run once more (no gradient) to get
its hidden state h_t at every step, and then, for every time step at once,

    gates_t = sigmoid(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)

which are exactly the layer's input, forget and output gates (LSTM) or reset and update gates
(GRU). A gate within `GATE_MARGIN` = 0.02 of 0 or 1 is saturated: its derivative s(1 - s) is
below 0.02, so hardly any gradient passes through it, and an input or forget gate stuck there
makes the cell ignore its input or its memory whatever the data says.

Limits: only the first layer and its forward direction (the reverse direction and upper layers
would need their own inputs, which a hook on the whole module does not see); LSTMs with
`proj_size` are skipped; padded positions of a packed batch are left out, those of a padded
(unpacked) batch count, since the layer computes them. The cost is one extra forward of that
layer and two matrix products on sampled steps only.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

__all__ = ["GATE_MARGIN", "GATE_NAMES", "gate_saturation"]

GATE_MARGIN = 0.02  # a gate within 0.02 of 0 or 1 passes under 2% of the gradient
# The sigmoid gates in PyTorch's weight order (an LSTM's third block is the tanh cell input, a
# GRU's third the tanh new state: neither is a gate).
GATE_NAMES: dict[type[nn.Module], tuple[tuple[str, int], ...]] = {
    nn.LSTM: (("input", 0), ("forget", 1), ("output", 3)),
    nn.GRU: (("reset", 0), ("update", 1)),
}


def gate_saturation(module: nn.Module, args: tuple[Any, ...]) -> tuple[list[str], Tensor] | None:
    """(`gate_sat_frac`, `gate_sat_<gate>`...) for the first layer of an LSTM/GRU called with
    `args`: the share of all its gate activations, and of each gate's, within `GATE_MARGIN` of 0
    or 1, as one tensor on the layer's device (None for other layers and inputs)."""
    gates = GATE_NAMES.get(type(module))
    if gates is None or getattr(module, "proj_size", 0) or not args:
        return None
    x, mask = _batch_first(args[0], module)
    if x is None:
        return None
    weights = [module.weight_ih_l0, module.weight_hh_l0]
    if module.bias:
        weights += [module.bias_ih_l0, module.bias_hh_l0]
    weights = [w.detach().float() for w in weights]
    h0, c0 = _initial_state(args[1] if len(args) > 1 else None, module, x)
    with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
        x = x.detach().float()
        if isinstance(module, nn.LSTM):
            hx = (h0[None], (torch.zeros_like(h0) if c0 is None else c0)[None])
            h = torch.lstm(x, hx, weights, module.bias, 1, 0.0, False, False, True)[0]
        else:
            h = torch.gru(x, h0[None], weights, module.bias, 1, 0.0, False, False, True)[0]
        h_prev = torch.cat([h0[:, None], h[:, :-1]], dim=1)
        pre = x @ weights[0].T + h_prev @ weights[1].T
        if module.bias:
            pre = pre + weights[2] + weights[3]
        size = module.hidden_size
        shares = []
        for _, block in gates:
            gate = torch.sigmoid(pre[..., block * size : (block + 1) * size])
            # |gate - 1/2| beyond 1/2 - margin, counted by float sign (no bool tensors).
            near = (gate - 0.5).abs_().sub_(0.5 - GATE_MARGIN).relu_().sign_()
            if mask is not None:
                shares.append((near * mask[..., None]).sum() / (mask.sum() * size))
            else:
                shares.append(near.mean())
        values = torch.stack([torch.stack(shares).mean(), *shares])
    return ["gate_sat_frac", *(f"gate_sat_{name}" for name, _ in gates)], values


def _batch_first(x: Any, module: nn.Module) -> tuple[Tensor | None, Tensor | None]:
    """The input as (N, T, F) and, for a packed batch, a (N, T) float mask of real steps."""
    if isinstance(x, PackedSequence):
        padded, lengths = pad_packed_sequence(x, batch_first=True)
        steps = torch.arange(padded.shape[1], device=lengths.device)
        mask = (steps[None, :] < lengths[:, None]).to(padded.device, torch.float32)
        return padded, mask
    if not isinstance(x, Tensor) or x.dim() != 3 or not x.is_floating_point():
        return None, None
    return (x if module.batch_first else x.transpose(0, 1)), None


def _initial_state(hx: Any, module: nn.Module, x: Tensor) -> tuple[Tensor, Tensor | None]:
    """Layer 0's forward-direction (h0, c0) as (N, H) tensors; zeros when none was given."""
    zeros = torch.zeros(x.shape[0], module.hidden_size, device=x.device)
    if hx is None:
        return zeros, None
    if isinstance(hx, tuple):  # an LSTM's (h0, c0), each (layers * directions, N, H)
        return hx[0][0].detach().float(), hx[1][0].detach().float()
    return hx[0].detach().float(), None
