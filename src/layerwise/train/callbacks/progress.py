"""Show progress: a live bar on a terminal, one plain line per epoch everywhere else."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from layerwise.train.callbacks.base import Callback

if TYPE_CHECKING:
    from layerwise.train.trainer import Trainer


def format_logs(logs: dict[str, float]) -> str:
    """`epoch 3/10  loss 0.1234  accuracy 0.9712  val_loss …  12.3s` — the numbers people scan."""
    parts = []
    for key, value in logs.items():
        if key in ("epoch", "step", "time"):
            continue
        parts.append(f"{key} {value:.3g}" if key == "lr" else f"{key} {value:.4f}")
    return "  ".join(parts)


class ProgressBar(Callback):
    """A rich progress bar per epoch on a TTY; otherwise one line per epoch.

    The bar only counts batches (no loss read per step, so no device sync); the epoch line is
    printed once the epoch's numbers are known.

    Args:
        stream: where to write (default stdout).
        force_tty: override terminal detection (None: detect).
    """

    order = 30

    def __init__(self, stream: TextIO | None = None, force_tty: bool | None = None) -> None:
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if force_tty is None else force_tty
        self.console = Console(file=self.stream, force_terminal=self.tty, highlight=False)
        self._progress: Progress | None = None
        self._task = None
        self._told_stop = False

    def on_epoch_start(self, trainer: Trainer) -> None:
        if not self.tty:
            return
        self._progress = Progress(
            TextColumn(f"epoch {trainer.state.epoch + 1}/{trainer.epochs}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self._progress.start()
        try:
            total = len(trainer.train_data)
        except TypeError:  # a stream of batches without a length
            total = None
        self._task = self._progress.add_task("train", total=total)
        self._progress.update(self._task, completed=trainer.state.batch_in_epoch)

    def on_batch_end(self, trainer: Trainer) -> None:
        if self._progress is not None:
            self._progress.advance(self._task)

    def on_fit_start(self, trainer: Trainer) -> None:
        self._told_stop = False

    def on_epoch_end(self, trainer: Trainer) -> None:
        self._stop_bar()
        logs = trainer.logs
        line = f"epoch {int(logs['epoch'])}/{trainer.epochs}  {format_logs(logs)}"
        self.console.print(f"{line}  {logs.get('time', 0.0):.1f}s", soft_wrap=True)
        self._tell_stop(trainer)  # early stopping decided on this epoch: say so right under it

    def on_fit_end(self, trainer: Trainer) -> None:
        self._stop_bar()
        self._tell_stop(trainer)

    def _tell_stop(self, trainer: Trainer) -> None:
        reason = trainer.stop_reason
        if self._told_stop or reason is None or reason.fatal:  # a fatal one: told by its source
            return
        self._told_stop = True
        self.console.print(reason.message, soft_wrap=True, markup=False)

    def _stop_bar(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
