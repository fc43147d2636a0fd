"""TensorBoard event files for a run: scalars, weight and gradient histograms, sample images.

`tensorboard --logdir runs` then shows every run side by side. Nothing here reads the device
during a step: the step scalars (about 50 per epoch) are kept on the device and read together,
once per epoch, with the epoch's numbers that the Trainer has already read. Gradients are copied
once per epoch, at the epoch's last step, for their histograms.
"""

from __future__ import annotations

import contextlib
import importlib.util
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from layerwise.train.callbacks.base import Callback

if TYPE_CHECKING:
    from layerwise.train.trainer import Trainer

SAMPLE_IMAGES = 16  # training inputs shown under samples/train when the inputs are images
HISTOGRAM_BINS = 64  # a fixed count: TensorBoard's default ~1,500 buckets cost 5x more per epoch
FLUSH_SECONDS = 30  # the writer's thread writes to disk this often (and when training ends)
STEP_POINTS = 50  # step scalars per epoch with step_every="auto": each event costs ~0.2-0.5 ms


def tensorboard_available() -> bool:
    """Whether the `tensorboard` package (the `track` extra) is installed."""
    return importlib.util.find_spec("tensorboard") is not None


class TensorBoardLogger(Callback):
    """Write `log_dir/events.out.tfevents.*` as the run trains.

    Tags: `step/<log>` for every scalar a training step returns (the loss, ...), every
    `step_every` optimizer steps; `train/<log>` and `val/<log>` for the epoch numbers
    (`train/lr`, `train/time` too);
    `weights/<param>` and `grads/<param>` histograms once per epoch (with `histograms`);
    `samples/train`, a grid of training inputs when they are images; `recipe`, the recipe text.

    Args:
        log_dir: folder of the event files (a run's `tensorboard/`).
        histograms: write weight and gradient histograms each epoch.
        step_every: write the step scalars every N steps; "auto": about 50 per epoch (every
            step for epochs of 50 steps or fewer).
        recipe_text: shown as text under `recipe`.

    Example:
        >>> trainer = Trainer(model, callbacks=[TensorBoardLogger("runs/mlp/tensorboard")])
    """

    order = 12  # after MetricsLogger: the epoch's numbers are final

    def __init__(
        self,
        log_dir: str | Path,
        *,
        histograms: bool = True,
        step_every: int | str = "auto",
        recipe_text: str | None = None,
    ) -> None:
        self.log_dir = Path(log_dir)
        self.histograms = histograms
        self.step_every = step_every
        self._every = 1
        self.recipe_text = recipe_text
        self.writer: Any = None
        self._steps: list[int] = []
        self._values: dict[str, list[torch.Tensor]] = {}
        self._grads: dict[str, torch.Tensor] = {}

    def on_fit_start(self, trainer: Trainer) -> None:
        from torch.utils.tensorboard import SummaryWriter

        resumed = trainer.state.step > 0
        auto = -(-_batches(trainer) // STEP_POINTS) if self.step_every == "auto" else 0
        self._every = max(1, auto or int(self.step_every))
        # A resumed run drops what an earlier process wrote past the checkpoint it resumes from.
        self.writer = SummaryWriter(
            str(self.log_dir),
            purge_step=trainer.state.step if resumed else None,
            flush_secs=FLUSH_SECONDS,
        )
        if not resumed:
            if self.recipe_text:
                self.writer.add_text("recipe", f"```\n{self.recipe_text}\n```", 0)
            self._write_samples(trainer)

    def on_batch_end(self, trainer: Trainer) -> None:
        if trainer.state.step % self._every:
            return
        self._steps.append(trainer.state.step)
        for key, value in trainer.last_logs.items():
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                self._values.setdefault(key, []).append(value.detach().reshape(()))

    def after_backward(self, trainer: Trainer) -> None:
        if not self.histograms or trainer.state.batch_in_epoch != _batches(trainer) - 1:
            return
        self._grads = {
            name: p.grad.detach().float().cpu()
            for name, p in trainer.model.named_parameters()
            if p.grad is not None
        }

    def on_epoch_end(self, trainer: Trainer) -> None:
        if self.writer is None:  # gave up after a failed write
            self._steps, self._values, self._grads = [], {}, {}
            return
        try:
            self._write_epoch(trainer)
        except OSError as exc:
            self._give_up(exc)

    def _write_epoch(self, trainer: Trainer) -> None:
        epoch, writer = trainer.state.epoch, self.writer
        for key, values in self._values.items():  # one read for the whole epoch
            numbers = torch.stack(values).float().cpu().tolist()
            for step, number in zip(self._steps[-len(numbers) :], numbers, strict=True):
                writer.add_scalar(f"step/{key}", number, step)
        self._steps, self._values = [], {}
        for key, value in trainer.logs.items():
            if key in ("epoch", "step") or not isinstance(value, int | float):
                continue
            split, name = ("val", key[4:]) if key.startswith("val_") else ("train", key)
            writer.add_scalar(f"{split}/{name}", value, epoch)
        if self.histograms:
            for name, param in trainer.model.named_parameters():
                weights = param.detach().float().cpu()
                writer.add_histogram(f"weights/{name}", weights, epoch, bins=HISTOGRAM_BINS)
            for name, grad in self._grads.items():
                writer.add_histogram(f"grads/{name}", grad, epoch, bins=HISTOGRAM_BINS)
            self._grads = {}

    def on_fit_end(self, trainer: Trainer) -> None:
        if self.writer is not None:
            try:
                self.writer.close()
            except OSError as exc:
                self._give_up(exc)
            self.writer = None

    def _give_up(self, exc: OSError) -> None:
        """A full disk or a file-size limit must not end training for a side log: warn once,
        stop writing, and leave the checkpoints (which report their own errors) to decide."""
        warnings.warn(
            f"TensorBoard logging stopped: cannot write to {self.log_dir}: {exc}", stacklevel=2
        )
        writer, self.writer = self.writer, None
        with contextlib.suppress(Exception):
            writer.close()

    def _write_samples(self, trainer: Trainer) -> None:
        x = getattr(trainer.train_data, "x", None)
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] not in (1, 3):
            return
        images = x[:SAMPLE_IMAGES].detach().float().cpu()
        low = images.amin(dim=(1, 2, 3), keepdim=True)
        high = images.amax(dim=(1, 2, 3), keepdim=True)
        images = (images - low) / (high - low).clamp_min(1e-12)
        self.writer.add_images("samples/train", images, 0)


def _batches(trainer: Trainer) -> int:
    try:
        return len(trainer.train_data)
    except TypeError:
        return 0
