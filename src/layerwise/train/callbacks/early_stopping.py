"""Stop training when a monitored number has stopped improving."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from layerwise.errors import RecipeError
from layerwise.train.callbacks.base import Callback
from layerwise.train.monitor import MODES, improved, monitor_mode

if TYPE_CHECKING:
    from layerwise.train.trainer import Trainer


class EarlyStopping(Callback):
    """Stop when `monitor` has not improved by `min_delta` for `patience` epochs.

    Args:
        monitor: an entry of the epoch logs, e.g. `val_loss` or `val_accuracy`.
        patience: epochs without improvement before stopping.
        min_delta: smallest change that counts as an improvement.
        mode: `min`, `max`, or `auto` (the metric's own direction; losses go down).
        restore_best_weights: at the end, put back the weights of the best epoch.

    Example:
        >>> stopper = EarlyStopping("val_loss", patience=3)
        >>> trainer = Trainer(model, callbacks=[stopper])  # doctest: +SKIP
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 5,
        min_delta: float = 0.0,
        mode: str = "auto",
        restore_best_weights: bool = True,
    ) -> None:
        if mode not in MODES:
            raise RecipeError(f"unknown mode '{mode}' for '{monitor}'", hint="use auto, min or max")
        self.monitor = monitor
        self.patience = patience
        self.min_delta = min_delta
        self.mode = mode
        self.restore_best_weights = restore_best_weights
        self.best: float | None = None
        self.best_epoch = 0
        self.wait = 0
        self.stopped_epoch: int | None = None
        self._direction = mode
        self._best_weights: dict[str, Any] | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        self._direction = monitor_mode(self.monitor, trainer.metrics, self.mode)

    def on_epoch_end(self, trainer: Trainer) -> None:
        if self.monitor not in trainer.logs:
            raise RecipeError(
                f"early stopping monitors '{self.monitor}', which is not in the epoch logs",
                hint=f"choose one of: {', '.join(sorted(trainer.logs))}",
            )
        value = trainer.logs[self.monitor]
        if improved(value, self.best, self._direction, self.min_delta):
            self.best, self.best_epoch, self.wait = value, trainer.state.epoch, 0
            if self.restore_best_weights:
                self._best_weights = copy.deepcopy(trainer.model.state_dict())
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = trainer.state.epoch
            trainer.stop(self._stop_message(trainer.epochs), source="EarlyStopping")

    def _stop_message(self, planned: int) -> str:
        """When, why, and whose weights the model ends with: the one line people read."""
        epochs = "1 epoch" if self.patience == 1 else f"{self.patience} epochs"
        if self._best_weights is not None:
            kept = f"keeping the weights of epoch {self.best_epoch}, the best"
        else:
            kept = f"keeping the last weights, epoch {self.stopped_epoch}'s"
            if not self.restore_best_weights:
                kept += " (restore_best_weights is off)"
        return (
            f"early stopping at epoch {self.stopped_epoch}/{planned}: {self.monitor} has not "
            f"improved for {epochs} (best {self.best:.4g} at epoch {self.best_epoch}); {kept}"
        )

    def on_fit_end(self, trainer: Trainer) -> None:
        if self.stopped_epoch is not None and self._best_weights is not None:
            trainer.model.load_state_dict(self._best_weights)

    def state_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "wait": self.wait,
            "best_weights": self._best_weights,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch, self.wait = state["best"], state["best_epoch"], state["wait"]
        self._best_weights = state.get("best_weights")
