"""Gradual unfreezing: start with only the head trainable, unfreeze one more group every N epochs.

Fine-tuning every layer at once with a fresh, random head sends large gradients into pretrained
layers and can wipe out what they learnt; unfreezing from the top down lets the head settle first
(Howard & Ruder 2018, ULMFiT). The frozen set is a pure function of the epoch, so a resumed run
unfreezes exactly as an uninterrupted one would.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from layerwise.errors import RecipeError
from layerwise.train import Callback
from layerwise.transfer.groups import freeze, layer_groups

if TYPE_CHECKING:
    from layerwise.train.trainer import Trainer


class GradualUnfreezing(Callback):
    """Unfreeze one more layer group (top down) every `every` epochs.

    Args:
        every: epochs between two unfreezings.
        frozen: groups frozen at the start, counted from the bottom (None: every group but
            the head).

    Example:
        >>> trainer = Trainer(model, optimizer=discriminative_optimizer(model, "adam", 1e-3),
        ...                   callbacks=[GradualUnfreezing(every=2)])
    """

    order = -30  # before the LR schedule and the doctor's probes look at the step

    def __init__(self, every: int = 1, frozen: int | None = None) -> None:
        if not isinstance(every, int) or every < 1:
            raise RecipeError(
                f"gradual unfreezing every must be a whole number of epochs >= 1, got {every!r}"
            )
        self.every = every
        self.frozen = frozen
        self.history: list[tuple[int, list[str]]] = []  # (epoch, groups frozen during it)

    def frozen_at(self, epoch: int, num_groups: int) -> int:
        """How many groups (from the bottom) are frozen during 0-based `epoch`."""
        start = num_groups - 1 if self.frozen is None else self.frozen
        return max(start - epoch // self.every, 0)

    def on_epoch_start(self, trainer: Trainer) -> None:
        groups = layer_groups(trainer.model)
        count = self.frozen_at(trainer.state.epoch, len(groups))
        names = freeze(trainer.model, count)
        self.history.append((trainer.state.epoch, names))
