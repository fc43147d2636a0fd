"""Save `last` (to resume) and `best` (to use) checkpoints into a run folder."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from layerwise.errors import RecipeError
from layerwise.train.callbacks.base import Callback
from layerwise.train.monitor import MODES, improved, monitor_mode

if TYPE_CHECKING:
    from layerwise.runs import Run
    from layerwise.train.trainer import Trainer


class ModelCheckpoint(Callback):
    """Save a `last` checkpoint (weights + state, one atomic folder) after every epoch (and every
    `every_steps` optimizer steps, so a long epoch killed midway loses little), and a `best` one
    whenever `monitor` improves. Weights that are NaN or infinite (or a run
    stopped for a fatal reason, such as the doctor's NaN loss) are never saved, so the last good
    checkpoint survives a diverged run.

    Args:
        run: the `layerwise.runs.Run` to write into.
        monitor: the epoch-log entry that defines "best" (falls back to `loss` when absent).
        mode: `min`, `max` or `auto` (the metric's own direction; losses go down).
        every_steps: also save `last` every this many steps (None: only at epoch ends).
    """

    order = 20

    def __init__(
        self,
        run: Run,
        monitor: str = "val_loss",
        mode: str = "auto",
        every_steps: int | None = None,
    ) -> None:
        self.run = run
        self.monitor = monitor
        if mode not in MODES:
            raise RecipeError(f"unknown mode '{mode}' for '{monitor}'", hint="use auto, min or max")
        self.mode = mode
        self.every_steps = every_steps
        self.best: float | None = None
        self._direction = "min"

    def on_fit_start(self, trainer: Trainer) -> None:
        self._direction = monitor_mode(self.monitor, trainer.metrics, self.mode)

    def on_batch_end(self, trainer: Trainer) -> None:
        if self.every_steps and trainer.state.step % self.every_steps == 0:
            self._save(trainer, best=False)

    def on_epoch_end(self, trainer: Trainer) -> None:
        # Without validation data `val_*` never appears: "best" is then the lowest train loss,
        # and a step that logs no loss at all (a GAN) has no "best", only `last`.
        monitor = self.monitor if self.monitor in trainer.logs else "loss"
        direction = self._direction if monitor == self.monitor else "min"
        if monitor not in trainer.logs:
            self._save(trainer, best=False)
            return
        value = trainer.logs[monitor]
        is_best = improved(value, self.best, direction, 0.0)
        if is_best:
            self.best = value
        self._save(trainer, best=is_best)
        if is_best:
            self.run.set_status(
                "running", best_metric={monitor: value, "epoch": trainer.state.epoch}
            )

    def _save(self, trainer: Trainer, best: bool) -> None:
        weights = {k: v.detach() for k, v in trainer.model.state_dict().items()}
        stopped = trainer.stop_reason
        if (stopped is not None and stopped.fatal) or not _all_finite(weights):
            return  # keep the last good checkpoint rather than overwrite it with a diverged one
        self.run.save_checkpoint(weights, trainer.state_dict(), best=best)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = state["best"]


def _all_finite(weights: dict[str, torch.Tensor]) -> bool:
    floats = [w for w in weights.values() if w.is_floating_point()]
    if not floats:
        return True
    # One sum per tensor and a single host read: NaN or inf anywhere makes the total non-finite.
    return bool(torch.isfinite(torch.stack([w.float().sum() for w in floats]).sum()))
