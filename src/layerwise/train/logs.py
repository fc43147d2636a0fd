"""Epoch averages of what the steps return, kept on the device until the epoch ends.

A step returns a dict of logs (`{"loss": loss}`, `{"d_loss": ..., "g_loss": ...}`). Reading
those numbers every step would make the host wait for the device every step, so `StepLogs` adds
each value into a running total on the device (one in-place add per value and step) and counts
the weights in Python; `compute()` reads all totals in one transfer, once per epoch.

Example:
    >>> logs = StepLogs()
    >>> logs.update({"loss": torch.tensor(0.5)}, weight=32)
    >>> logs.update({"loss": torch.tensor(0.25)}, weight=16)
    >>> logs.compute()
    {'loss': 0.41666666666666663}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from layerwise.errors import LayerwiseError


class StepLogs:
    """Weighted running means of the scalar logs of every step since the last `reset()`."""

    def __init__(self) -> None:
        self.totals: dict[str, Tensor | float] = {}
        self.weights: dict[str, float] = {}

    def update(self, logs: Mapping[str, Any], weight: float = 1.0) -> None:
        """Add one step's logs: scalar tensors (accumulated on their device) or numbers."""
        for key, value in logs.items():
            total = self.totals.get(key)
            if isinstance(value, Tensor):
                if value.dim():  # a (1,) or (1, 1) loss; a 0-d one (the usual) skips this
                    if value.numel() != 1:
                        raise _not_scalar(key, f"a tensor of shape {tuple(value.shape)}")
                    value = value.reshape(())
                if not isinstance(total, Tensor):
                    dtype = torch.float32 if value.device.type == "mps" else torch.float64
                    total = torch.zeros((), dtype=dtype, device=value.device)
                    self.totals[key] = total
                total.add_(value.detach(), alpha=weight)
            elif isinstance(value, int | float) and not isinstance(value, bool):
                self.totals[key] = (total or 0.0) + float(value) * weight
            else:
                raise _not_scalar(key, f"a {type(value).__name__}")
            self.weights[key] = self.weights.get(key, 0.0) + weight

    def compute(self) -> dict[str, float]:
        """The weighted mean of every log, in the order the logs first appeared."""
        on_device = [(k, v) for k, v in self.totals.items() if isinstance(v, Tensor)]
        read: dict[str, float] = {}
        if on_device:
            values = torch.stack([v.to(on_device[0][1].device) for _, v in on_device]).tolist()
            read = {k: value for (k, _), value in zip(on_device, values, strict=True)}
        means: dict[str, float] = {}
        for key, total in self.totals.items():
            value = read[key] if key in read else float(total)
            means[key] = value / self.weights[key] if self.weights[key] else math.nan
        return means

    def reset(self) -> None:
        self.totals, self.weights = {}, {}

    def state_dict(self) -> dict[str, Any]:
        """Totals and weights as plain tensors and floats (loadable with weights_only=True)."""
        return {
            "totals": {
                k: v.detach().clone() if isinstance(v, Tensor) else float(v)
                for k, v in self.totals.items()
            },
            "weights": dict(self.weights),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.totals = {
            k: v.clone() if isinstance(v, Tensor) else float(v) for k, v in state["totals"].items()
        }
        self.weights = dict(state["weights"])


def _not_scalar(key: str, what: str) -> LayerwiseError:
    return LayerwiseError(
        f"the step returned log '{key}' as {what}; logs must be single numbers",
        hint="return scalar tensors such as the loss (e.g. {'loss': loss}); keep other results "
        "on self or compute them in a callback",
    )
