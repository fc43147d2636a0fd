"""The Trainer: fit, evaluate and predict any `nn.Module`, with no framework tax.

The loop is short on purpose. Everything a step does lives in `train_step`, the one method to
override for a GAN, an RL agent or anything unusual; logging, checkpoints, progress and the doctor
are callbacks on named events and keep working. Numbers are accumulated on the device and read
once per epoch, so the loop never waits for the device between steps.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from layerwise.data import make_batcher
from layerwise.errors import LayerwiseError, RecipeError
from layerwise.nn import materialize
from layerwise.train.callbacks.base import Callback
from layerwise.train.callbacks.lr_scheduler import LRScheduler
from layerwise.train.device import (
    autocast_context,
    resolve_device,
    rng_state,
    seed_everything,
    set_rng_state,
)
from layerwise.train.losses import create_loss
from layerwise.train.metrics import MeanMetric, Metric, create_metric
from layerwise.train.optimizers import create_optimizer
from layerwise.train.regularization import Regularizer
from layerwise.train.schedules import Schedule, create_schedule

STATE_FORMAT = 1


@dataclass
class TrainState:
    """Where the loop is: completed epochs, optimizer steps, and batches done in this epoch."""

    epoch: int = 0
    step: int = 0
    batch_in_epoch: int = 0


class Trainer:
    """Train, evaluate and predict with a PyTorch model.

    Args:
        model: any `nn.Module`; lazy layers are materialised on the first batch.
        loss: a registered loss name (`cross_entropy`, `bce`, `mse`, `mae`, `huber`), or a module
            or callable `(output, target) -> loss`.
        optimizer: a registered name (`sgd`, `adam`, `adamw`, `rmsprop`), or a function
            `params -> torch.optim.Optimizer`.
        lr, weight_decay, optimizer_args: passed to the optimizer when it is given by name
            (weight_decay None keeps the optimizer's own default, e.g. 0.01 for AdamW).
        metrics: metric names or `Metric` objects, tracked on train (if `train_metrics`) and val.
        schedule: a schedule name, a `{"name": ..., **args}` dict, or None for a constant rate.
        callbacks: `Callback` objects, called in order on each event.
        device: `auto` (CUDA, then MPS, then CPU), or any torch device.
        precision: `fp32`, `bf16` (autocast) or `fp16` (autocast with a gradient scaler).
        channels_last: move 4-D inputs and the model to channels-last memory format.
        grad_clip: clip the global gradient norm to this value.
        l1, l2: penalties on weights (not biases or norm layers) added to the loss.
        seed: seeds Python, NumPy and PyTorch at `fit`; also seeds the shuffle order.
        doctor: watch training with `Probes` and a `Doctor` (unless `callbacks` already has them):
            findings print as they appear, a NaN loss stops training (`trainer.halted`), and
            `trainer.diagnose()` gives the diagnosis after `fit`.

    Example:
        >>> from layerwise.models import create_model
        >>> trainer = Trainer(create_model("mlp", num_classes=10), optimizer="adam", lr=1e-3)
        >>> trainer.fit((x_train, y_train), val=(x_val, y_val), epochs=5)  # doctest: +SKIP
        >>> trainer.evaluate((x_test, y_test))  # doctest: +SKIP
        {'loss': 0.08, 'accuracy': 0.975}
    """

    def __init__(
        self,
        model: nn.Module,
        loss: str | Callable[..., torch.Tensor] = "cross_entropy",
        optimizer: str | Callable[..., torch.optim.Optimizer] = "adam",
        *,
        lr: float = 1e-3,
        weight_decay: float | None = None,
        optimizer_args: dict[str, Any] | None = None,
        loss_args: dict[str, Any] | None = None,
        metrics: Sequence[str | Metric] = ("accuracy",),
        schedule: str | dict[str, Any] | None = None,
        callbacks: Iterable[Callback] = (),
        device: str | torch.device = "auto",
        precision: str = "fp32",
        channels_last: bool = False,
        grad_clip: float | None = None,
        l1: float = 0.0,
        l2: float = 0.0,
        seed: int = 0,
        num_classes: int | None = None,
        train_metrics: bool = True,
        doctor: bool = True,
    ) -> None:
        self.device = resolve_device(device)
        self.model = model
        self.loss_fn = create_loss(loss, **(loss_args or {})) if isinstance(loss, str) else loss
        self.optimizer_spec = optimizer
        self.optimizer_args = {"lr": lr, "weight_decay": weight_decay, **(optimizer_args or {})}
        self.metrics = [
            m if isinstance(m, Metric) else create_metric(m, num_classes=num_classes)
            for m in metrics
        ]
        self.schedule_spec = schedule
        self.callbacks = list(callbacks)
        self.precision = precision
        self.channels_last = channels_last
        self.grad_clip = grad_clip
        self.l1, self.l2 = l1, l2
        self.seed = seed
        self.train_metrics = train_metrics
        self.autocast = autocast_context(self.device, precision)  # validates precision early
        self.optimizer: torch.optim.Optimizer | None = None
        self.schedule: Schedule | None = None
        self.scaler: torch.amp.GradScaler | None = None
        self.regularizer: Regularizer | None = None
        self.state = TrainState()
        self.logs: dict[str, float] = {}
        self.history: list[dict[str, float]] = []
        self.stop_training = False
        self.train_data = None
        self.running_loss = MeanMetric()
        self.last_loss: torch.Tensor | None = None  # what train_step returned (read by Probes)
        self.doctor = doctor
        self.halted = None  # the fatal Finding that made the doctor stop training, if any
        self.num_classes = num_classes
        self._pending_state: dict[str, Any] | None = None

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        train: Any,
        val: Any = None,
        *,
        epochs: int = 10,
        batch_size: int = 32,
        shuffle: bool = True,
        transform: Callable | None = None,
        eval_batch_size: int | None = None,
    ) -> list[dict[str, float]]:
        """Train for `epochs` (counting epochs already done when resumed); returns the history."""
        self.epochs = epochs
        self.eval_batch_size = eval_batch_size or max(batch_size, 256)
        self.train_data = self._batcher(train, batch_size, shuffle=shuffle, transform=transform)
        self.val_data = self._batcher(val, self.eval_batch_size) if val is not None else None
        self._setup(self.train_data)
        self.stop_training = False
        self._emit("on_fit_start")
        while self.state.epoch < epochs and not self.stop_training:
            self._run_epoch()
        self._emit("on_fit_end")
        return self.history

    def _run_epoch(self) -> None:
        self._emit("on_epoch_start")
        self.model.train()
        if self.state.batch_in_epoch == 0:
            self._reset_train_metrics()
        self.epoch_start_time = time.perf_counter()
        self.train_data.set_epoch(self.state.epoch)
        for batch in self.train_data.iter_from(self.state.batch_in_epoch):
            self.last_loss = self.train_step(self._to_device(batch))
            self.state.step += 1
            self.state.batch_in_epoch += 1
            self._emit("on_batch_end")
            if self.stop_training:
                return
        self._finish_epoch()

    def train_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """One optimisation step on one batch: forward, loss, backward, update, metrics.

        Override this for custom training (GANs, RL); call `self.backward(loss)` and
        `self.optimizer_step()` to keep mixed precision, clipping and the `after_backward` event.
        """
        x, y = batch
        with self.autocast:
            output = self.model(x)
            loss = self.compute_loss(output, y)
        self.backward(loss)
        self.optimizer_step()
        self.running_loss.update(loss.detach(), x.shape[0])
        if self.train_metrics:
            detached = output.detach()
            for metric in self.metrics:
                metric.update(detached, y)
        return loss

    def compute_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss plus the L1/L2 penalty when one is set."""
        loss = self.loss_fn(output, target)
        if self.regularizer is not None:
            loss = loss + self.regularizer()
        return loss

    def backward(self, loss: torch.Tensor) -> None:
        """Backpropagate (scaled under fp16), then fire `after_backward`."""
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()
        self._emit("after_backward")

    def optimizer_step(self) -> None:
        """Clip gradients if asked, step the optimizer and clear gradients."""
        if self.grad_clip is not None:
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip, foreach=True)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def _finish_epoch(self) -> None:
        logs: dict[str, float] = {"epoch": self.state.epoch + 1, "step": self.state.step}
        logs["loss"] = self.running_loss.compute()
        if self.train_metrics:
            for metric in self.metrics:
                logs.update(_scalar_logs(metric, prefix=""))
        logs["lr"] = self.optimizer.param_groups[0]["lr"]
        if self.val_data is not None:
            logs.update({f"val_{k}": v for k, v in self._evaluate_batches(self.val_data).items()})
        logs["time"] = time.perf_counter() - self.epoch_start_time
        self.state.epoch += 1
        self.state.batch_in_epoch = 0
        self.logs = logs
        self.history.append(logs)
        self._emit("on_epoch_end")

    # ------------------------------------------------------------ evaluate
    def evaluate(self, data: Any, batch_size: int = 256) -> dict[str, float]:
        """Loss and metrics on `data`, in eval mode without gradients."""
        batcher = self._batcher(data, batch_size)
        if self.optimizer is None:
            self._setup(batcher, for_training=False)
        return self._evaluate_batches(batcher)

    def _evaluate_batches(self, batcher: Any) -> dict[str, float]:
        metrics = [copy.deepcopy(m) for m in self.metrics]
        for metric in metrics:
            metric.reset()
        mean_loss = MeanMetric()
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad(), self.autocast:
            for x, y in map(self._to_device, batcher.iter_from(0)):
                output = self.model(x)
                mean_loss.update(self.loss_fn(output, y), x.shape[0])
                for metric in metrics:
                    metric.update(output, y)
        self.model.train(was_training)
        logs = {"loss": mean_loss.compute()}
        for metric in metrics:
            logs.update(_scalar_logs(metric, prefix=""))
        return logs

    def predict(self, data: Any, batch_size: int = 256) -> torch.Tensor:
        """Raw model outputs (e.g. logits) for every row of `data`, on the CPU, in order."""
        batcher = self._batcher(data, batch_size)
        if self.optimizer is None:
            self._setup(batcher, for_training=False)
        outputs = []
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad(), self.autocast:
            for x, _ in map(self._to_device, batcher.iter_from(0)):
                outputs.append(self.model(x).float())
        self.model.train(was_training)
        return torch.cat(outputs).cpu()

    # --------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Everything except the weights that a resumed run needs to continue bit for bit."""
        return {
            "format": STATE_FORMAT,
            "train_state": asdict(self.state),
            "optimizer": self.optimizer.state_dict() if self.optimizer else None,
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "rng": rng_state(),
            "running_loss": self.running_loss.state_dict(),
            "metrics": [m.state_dict() for m in self.metrics],
            "callbacks": {key: cb.state_dict() for key, cb in self._keyed_callbacks().items()},
            "history": self.history,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict`; it takes effect in the next `fit`, once the model is built."""
        if state.get("format") != STATE_FORMAT:
            raise LayerwiseError(
                f"training state has format {state.get('format')}, expected {STATE_FORMAT}",
                hint="it was written by another layerwise version; start a new run",
            )
        self._pending_state = state

    def _apply_pending_state(self) -> None:
        state, self._pending_state = self._pending_state, None
        self.state = TrainState(**state["train_state"])
        if state["optimizer"] is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.running_loss.load_state_dict(state["running_loss"])
        for metric, metric_state in zip(self.metrics, state["metrics"], strict=True):
            metric.load_state_dict(metric_state)
        for key, callback in self._keyed_callbacks().items():
            if key in state["callbacks"]:
                callback.load_state_dict(state["callbacks"][key])
        self.history = list(state["history"])
        self.logs = self.history[-1] if self.history else {}
        set_rng_state(state["rng"])

    # ---------------------------------------------------------------- setup
    def _batcher(self, data: Any, batch_size: int, shuffle: bool = False, transform=None) -> Any:
        if hasattr(data, "iter_from"):
            return data
        return make_batcher(
            data,
            batch_size=batch_size,
            shuffle=shuffle,
            seed=self.seed,
            device=self.device,
            transform=transform,
        )

    def _setup(self, batcher: Any, for_training: bool = True) -> None:
        """Build lazy layers on one batch, then the optimizer, schedule and scaler (once)."""
        if self.optimizer is None:
            if for_training:
                seed_everything(self.seed)
            self.model.to(self.device)
            if isinstance(self.loss_fn, nn.Module):
                self.loss_fn.to(self.device)
            example, _ = self._to_device(next(iter(batcher.iter_from(0))))
            materialize(self.model, example)
            if self.channels_last:
                self.model.to(memory_format=torch.channels_last)
            if not for_training:
                return
            self.optimizer = self._make_optimizer()
            self.schedule = self._make_schedule(len(batcher))
            if self.doctor:
                self._add_doctor()
            if self.schedule is not None:
                self.callbacks.insert(0, LRScheduler(self.schedule))
            if self.precision == "fp16" and self.device.type == "cuda":
                self.scaler = torch.amp.GradScaler("cuda")
            if self.l1 or self.l2:
                self.regularizer = Regularizer(self.model, l1=self.l1, l2=self.l2)
        if self._pending_state is not None and for_training:
            self._apply_pending_state()

    def _add_doctor(self) -> None:
        """Probes and a Doctor first in line (after the schedule), unless the caller has them."""
        from layerwise.diagnose.doctor import Doctor
        from layerwise.diagnose.probes import Probes

        if any(isinstance(c, Probes | Doctor) for c in self.callbacks):
            return
        probes = Probes()
        self.callbacks[:0] = [probes, Doctor(probes, num_classes=self.num_classes)]

    def diagnose(self) -> Any:
        """The doctor's `Diagnosis` of the training so far (needs `doctor=True` or a `Doctor`)."""
        from layerwise.diagnose.doctor import Doctor

        doctor = next((c for c in self.callbacks if isinstance(c, Doctor)), None)
        if doctor is None:
            raise LayerwiseError(
                "this Trainer has no doctor", hint="create it with Trainer(..., doctor=True)"
            )
        return doctor.diagnose(self.history)

    def _make_optimizer(self) -> torch.optim.Optimizer:
        if isinstance(self.optimizer_spec, str):
            return create_optimizer(self.optimizer_spec, self.model, **self.optimizer_args)
        if isinstance(self.optimizer_spec, torch.optim.Optimizer):
            return self.optimizer_spec
        return self.optimizer_spec(self.model.parameters())

    def _make_schedule(self, steps_per_epoch: int) -> Schedule | None:
        spec = self.schedule_spec
        if spec is None or isinstance(spec, Schedule):
            return spec
        if isinstance(spec, str):
            spec = {"name": spec}
        if not isinstance(spec, dict) or "name" not in spec:
            raise RecipeError(
                f"bad schedule {spec!r}", hint="give a name or a dict like {'name': 'cosine'}"
            )
        args = {k: v for k, v in spec.items() if k != "name"}
        return create_schedule(
            spec["name"],
            self.optimizer,
            epochs=self.epochs,
            steps_per_epoch=steps_per_epoch,
            **args,
        )

    def _to_device(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        x, y = batch
        x = x.to(self.device, non_blocking=True)
        if y is not None:
            y = y.to(self.device, non_blocking=True)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def _reset_train_metrics(self) -> None:
        self.running_loss.reset()
        for metric in self.metrics:
            metric.reset()

    def _keyed_callbacks(self) -> dict[str, Callback]:
        """Callbacks by class name (`EarlyStopping`, `EarlyStopping_2`…), to match on resume."""
        keyed: dict[str, Callback] = {}
        for callback in self.callbacks:
            name = type(callback).__name__
            key, n = name, 1
            while key in keyed:
                n += 1
                key = f"{name}_{n}"
            keyed[key] = callback
        return keyed

    def _emit(self, event: str) -> None:
        for callback in self.callbacks:
            getattr(callback, event)(self)


def _scalar_logs(metric: Metric, prefix: str) -> dict[str, float]:
    """A metric's value as log entries; matrix-valued metrics (confusion matrix) are skipped."""
    value = metric.compute()
    if isinstance(value, dict):
        return {f"{prefix}{k}": float(v) for k, v in value.items()}
    if isinstance(value, float | int):
        return {f"{prefix}{metric.name}": float(value)}
    return {}
