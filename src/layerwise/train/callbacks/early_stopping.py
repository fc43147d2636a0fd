"""Stop training when a monitored number has stopped improving."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from layerwise.errors import RecipeError
from layerwise.train.callbacks.base import Callback

if TYPE_CHECKING:
    from layerwise.train.trainer import Trainer


def resolve_mode(monitor: str, mode: str) -> str:
    """`auto` means minimise losses and errors, maximise everything else."""
    if mode not in ("auto", "min", "max"):
        raise RecipeError(f"unknown mode '{mode}' for '{monitor}'", hint="use auto, min or max")
    if mode != "auto":
        return mode
    lowered = monitor.lower()
    return "min" if any(k in lowered for k in ("loss", "mae", "rmse", "error")) else "max"


def improved(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


class EarlyStopping(Callback):
    """Stop when `monitor` has not improved by `min_delta` for `patience` epochs.

    Args:
        monitor: an entry of the epoch logs, e.g. `val_loss` or `val_accuracy`.
        patience: epochs without improvement before stopping.
        min_delta: smallest change that counts as an improvement.
        mode: `min`, `max`, or `auto` (from the name).
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
        self.monitor = monitor
        self.patience = patience
        self.min_delta = min_delta
        self.mode = resolve_mode(monitor, mode)
        self.restore_best_weights = restore_best_weights
        self.best: float | None = None
        self.best_epoch = 0
        self.wait = 0
        self.stopped_epoch: int | None = None
        self._best_weights: dict[str, Any] | None = None

    def on_epoch_end(self, trainer: Trainer) -> None:
        if self.monitor not in trainer.logs:
            raise RecipeError(
                f"early stopping monitors '{self.monitor}', which is not in the epoch logs",
                hint=f"choose one of: {', '.join(sorted(trainer.logs))}",
            )
        value = trainer.logs[self.monitor]
        if improved(value, self.best, self.mode, self.min_delta):
            self.best, self.best_epoch, self.wait = value, trainer.state.epoch, 0
            if self.restore_best_weights:
                self._best_weights = copy.deepcopy(trainer.model.state_dict())
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = trainer.state.epoch
            trainer.stop_training = True

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
