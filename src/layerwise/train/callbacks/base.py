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
    `on_batch_end` runs after each step, whose logs (device tensors) are in `trainer.last_logs`;
    `on_epoch_end` runs after validation, with the epoch's numbers in `trainer.logs`.
    A callback that must survive `--resume` returns its state from `state_dict`.

    Callbacks run in the order of their `order` (lower first; equal orders keep the order they
    were given in). The built-in ones leave room around the default 0 for user callbacks:

    | order | callbacks |
    |---|---|
    | -20 | `LRScheduler` (the rate is stepped before anything reads it) |
    | -10, -5 | the doctor's `Probes`, then its `Doctor` (instruments see the step first) |
    | 0 | user callbacks, `EarlyStopping` |
    | 10, 20 | `MetricsLogger`, `ModelCheckpoint` (save what the others decided) |
    | 30 | `ProgressBar` (prints last) |
    """

    order: int = 0

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
