"""Step the learning-rate schedules at the right moments of the loop."""

from __future__ import annotations

from typing import TYPE_CHECKING

from layerwise.train.callbacks.base import Callback

if TYPE_CHECKING:
    from layerwise.train.schedules import Schedule
    from layerwise.train.trainer import Trainer


class LRScheduler(Callback):
    """Steps each schedule after every optimizer step, or once per epoch after validation.

    The Trainer adds one when it is given `schedule=` and keeps the schedules' state itself
    (`trainer.schedules`, saved by `trainer.state_dict()`). A schedule with a `monitor` (reduce on
    plateau) is stepped with that entry of the epoch's logs, e.g. `val_loss`.

    Args:
        schedules: `layerwise.train.schedules.Schedule` objects by optimizer name.
    """

    order = -20

    def __init__(self, schedules: dict[str, Schedule]) -> None:
        self.schedules = schedules

    def on_batch_end(self, trainer: Trainer) -> None:
        for schedule in self.schedules.values():
            if schedule.per_step:
                schedule.step()

    def on_epoch_end(self, trainer: Trainer) -> None:
        for schedule in self.schedules.values():
            if schedule.per_step:
                continue
            monitor = getattr(schedule, "monitor", None)
            schedule.step(trainer.logs.get(monitor) if monitor else None)
