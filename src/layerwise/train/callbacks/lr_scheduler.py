"""Step a learning-rate schedule at the right moments of the loop."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from layerwise.train.callbacks.base import Callback

if TYPE_CHECKING:
    from layerwise.train.schedules import Schedule
    from layerwise.train.trainer import Trainer


class LRScheduler(Callback):
    """Steps `schedule` after every optimizer step, or once per epoch after validation.

    The Trainer adds one automatically when it is given `schedule=`; it runs before the other
    callbacks so that checkpoints see the stepped schedule. A schedule with a `monitor` (reduce
    on plateau) is stepped with that entry of the epoch's logs, e.g. `val_loss`.

    Args:
        schedule: a `layerwise.train.schedules.Schedule`.
    """

    def __init__(self, schedule: Schedule) -> None:
        self.schedule = schedule

    def on_batch_end(self, trainer: Trainer) -> None:
        if self.schedule.per_step:
            self.schedule.step()

    def on_epoch_end(self, trainer: Trainer) -> None:
        if self.schedule.per_step:
            return
        monitor = getattr(self.schedule, "monitor", None)
        self.schedule.step(trainer.logs.get(monitor) if monitor else None)

    def state_dict(self) -> dict[str, Any]:
        return self.schedule.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.schedule.load_state_dict(state)
