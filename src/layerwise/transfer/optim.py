"""Discriminative learning rates: one optimizer parameter group per layer group.

The Trainer accepts a function `params -> optimizer`; `discriminative_optimizer` returns one
that ignores the flat parameter list and builds the groups from the model, so the rest of the
Trainer (schedules scale each group's rate by the same factor, clipping, checkpoints) is unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from layerwise.train import create_optimizer
from layerwise.transfer.groups import discriminative_groups


def discriminative_optimizer(
    model: nn.Module,
    name: str = "adam",
    lr: float = 1e-3,
    factor: float = 0.3,
    lrs: list[float] | None = None,
    weight_decay: float | None = None,
    **kwargs: Any,
) -> Callable[[Any], torch.optim.Optimizer]:
    """A `Trainer(optimizer=...)` factory: the head at `lr`, each group below `factor` times the
    one above (or the explicit `lrs`, bottom to top).

    Example:
        >>> trainer = Trainer(model, optimizer=discriminative_optimizer(model, "adam", 1e-3, 0.3))
    """

    def make(_params: Any) -> torch.optim.Optimizer:
        groups = discriminative_groups(model, lr, factor, lrs)
        return create_optimizer(name, groups, lr=lr, weight_decay=weight_decay, **kwargs)

    return make
