"""A hand-written PyTorch training loop, to see each setup's defect without the doctor.

The field set's ground truth must not lean on the doctor: this loop is how the tests check that a
healthy setup really learns and that a broken one really shows its defect (NaN loss, no progress,
a validation gap, a loss that swings) in plain terms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from setups import Setup


@dataclass
class PlainRun:
    first_loss: float  # the first batch's loss, before any update
    train_loss: list[float] = field(default_factory=list)  # epoch means
    val_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)  # classification only
    val_acc: list[float] = field(default_factory=list)
    nan_step: int | None = None  # the first step whose loss was not finite

    @property
    def finite(self) -> bool:
        return self.nan_step is None


def _evaluate(setup: Setup, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    setup.model.eval()
    with torch.no_grad():
        out = setup.model(x)
        loss = float(setup.loss(out, y))
        acc = float((out.argmax(1) == y).float().mean()) if setup.task == "classification" else 0.0
    setup.model.train()
    return loss, acc


def train_plain(setup: Setup, seed: int = 0, max_epochs: int | None = None) -> PlainRun:
    """Train `setup` as a tutorial loop would; stops at the first non-finite loss."""
    gen = torch.Generator().manual_seed(seed)
    (x, y), (xv, yv) = setup.train, setup.val
    optimizer = setup.optimizer(setup.model.parameters())
    run = PlainRun(first_loss=math.nan)
    step = 0
    for _ in range(max_epochs or setup.epochs):
        order = torch.randperm(len(x), generator=gen)
        total, count = 0.0, 0
        for start in range(0, len(x), setup.batch_size):
            rows = order[start : start + setup.batch_size]
            loss = setup.loss(setup.model(x[rows]), y[rows])
            if step == 0:
                run.first_loss = float(loss.detach())
            if not torch.isfinite(loss):
                run.nan_step = step
                return run
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(rows)
            count += len(rows)
            step += 1
        run.train_loss.append(total / count)
        if setup.task == "classification":
            run.train_acc.append(_evaluate(setup, x, y)[1])
        val_loss, val_acc = _evaluate(setup, xv, yv)
        run.val_loss.append(val_loss)
        run.val_acc.append(val_acc)
    return run
