"""The callback protocol: subscribe to named events of the training loop."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from layerwise.train.trainer import Trainer

EVENTS = (
    "on_fit_start",
    "on_epoch_start",
    "after_backward",
    "on_batch_end",
    "on_epoch_end",
    "on_fit_end",
)


class Callback:
    """Override any event; each receives the trainer, whose `state` and `logs` say where we are.

    `after_backward` runs between `backward()` and the optimizer step (gradients are present);
    `on_epoch_end` runs after validation, with the epoch's numbers in `trainer.logs`.
    A callback that must survive `--resume` returns its state from `state_dict`.
    """

    def on_fit_start(self, trainer: Trainer) -> None: ...
    def on_epoch_start(self, trainer: Trainer) -> None: ...
    def after_backward(self, trainer: Trainer) -> None: ...
    def on_batch_end(self, trainer: Trainer) -> None: ...
    def on_epoch_end(self, trainer: Trainer) -> None: ...
    def on_fit_end(self, trainer: Trainer) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
