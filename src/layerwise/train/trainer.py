"""The Trainer: fit, evaluate and predict any `nn.Module`, with no framework tax.

The loop is short on purpose. What one step does lives in three methods a subclass can override,
as in Keras: `train_step(batch) -> dict of logs`, `eval_step(batch) -> dict of logs` and
`predict_step(batch) -> outputs`. A batch may be any nested structure (tuple, dict, dataclass,
lists of tensors of different sizes); it is moved to the device by one tree map. The scalar logs a
step returns are averaged per epoch on the device and read once, so the loop never waits for the
device between steps. Logging, checkpoints, progress and the doctor are callbacks on named events
and keep working whatever the step does.

A GAN needs two optimizers and its own step:

    class GANTrainer(Trainer):
        def train_step(self, batch):
            real, _ = batch
            fake = self.model.generator(torch.randn(len(real), 16, device=real.device))
            d_loss = bce(self.model.critic(real), 1) + bce(self.model.critic(fake.detach()), 0)
            self.backward(d_loss, "critic")
            self.optimizer_step("critic")
            g_loss = bce(self.model.critic(fake), 1)
            self.backward(g_loss, "generator")
            self.optimizer_step("generator")
            return {"d_loss": d_loss, "g_loss": g_loss}

    trainer = GANTrainer(gan, loss=None, metrics=(), optimizer={
        "critic": lambda m: torch.optim.Adam(m.critic.parameters(), 2e-4),
        "generator": lambda m: torch.optim.Adam(m.generator.parameters(), 2e-4),
    })
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.parameter import is_lazy

from layerwise.data import make_batcher
from layerwise.data.batch import batch_size, split_batch, to_device, tree_map
from layerwise.errors import CheckpointError, DataError, LayerwiseError, RecipeError
from layerwise.nn import call_model, check_arguments, materialize
from layerwise.train import distributed
from layerwise.train.callbacks.base import Callback
from layerwise.train.callbacks.lr_scheduler import LRScheduler
from layerwise.train.callbacks.progress import ProgressBar
from layerwise.train.device import (
    CpuThreads,
    autocast_context,
    forward_macs,
    resolve_device,
    resolve_precision,
    rng_state,
    seed_everything,
    set_rng_state,
)
from layerwise.train.logs import StepLogs
from layerwise.train.losses import create_loss
from layerwise.train.metrics import Metric, create_metric
from layerwise.train.optimizers import create_optimizer
from layerwise.train.plugins import default_callbacks
from layerwise.train.regularization import Regularizer
from layerwise.train.schedules import Schedule, create_schedule

STATE_FORMAT = 2
MAIN = "main"  # the name of the optimizer (and schedule) when there is only one

OptimizerSpec = str | torch.optim.Optimizer | Callable[..., torch.optim.Optimizer]


@dataclass
class TrainState:
    """Where the loop is: completed epochs, optimizer steps, and batches done in this epoch."""

    epoch: int = 0
    step: int = 0
    batch_in_epoch: int = 0


@dataclass(frozen=True)
class StopReason:
    """Why training stopped before its last epoch.

    Attributes:
        source: who stopped it (`EarlyStopping`, `doctor`, …).
        message: one line for people.
        fatal: training broke (a NaN loss): the weights are not worth saving, so checkpoints keep
            the last good ones and the run ends `halted`.
        detail: what the source wants to keep with it (the doctor's `Finding`).
    """

    source: str
    message: str
    fatal: bool = False
    detail: Any = None


class Trainer:
    """Train, evaluate and predict with a PyTorch model.

    Args:
        model: any `nn.Module`; lazy layers are materialised on the first batch.
        loss: a registered loss name (`cross_entropy`, `bce`, `mse`, `mae`, `huber`), a module or
            callable `(output, target) -> loss`, or None when a custom step computes its own.
        optimizer: a registered name (`sgd`, `adam`, `adamw`, `rmsprop`), an optimizer, or a
            function `params -> optimizer`; or several, as a dict `{name: optimizer or function
            model -> optimizer}`, which steps then address by name (see `configure_optimizers`).
        lr, weight_decay, optimizer_args: passed to the optimizer when it is given by name
            (weight_decay None keeps the optimizer's own default, e.g. 0.01 for AdamW).
        metrics: metric names or `Metric` objects, updated by the steps (`update_metrics`).
        schedule: a schedule name, a `{"name": ..., **args}` dict, a `Schedule`, or None for a
            constant rate; with several optimizers, a dict `{optimizer name: schedule}`.
        callbacks: `Callback` objects, called on each event in the order of their `order`.
        device: `auto` (CUDA, then MPS, then CPU), or any torch device.
        precision: `fp32`, `bf16` (autocast), `fp16` (autocast with a gradient scaler) or
            `auto` (bf16 where the device computes in bf16 natively, else fp32).
        channels_last: move 4-D inputs and the model to channels-last memory format.
        grad_clip: clip the global gradient norm of each optimizer's parameters to this value.
        l1, l2: penalties on weights (not biases or norm layers) added by `compute_loss`.
        seed: seeds Python, NumPy and PyTorch at `fit`; also seeds the shuffle order.
        num_classes: for metrics that need it before they see an output.
        train_metrics: also update the metrics on training batches.
        doctor: attach the troubleshooting doctor (probes and live findings; installed as the
            `doctor` default callbacks, see `layerwise.train.plugins`) unless `callbacks` already
            hold it; `trainer.diagnose()` then gives its diagnosis.
        threads: CPU intra-op threads while fitting: `auto` chooses from the work per batch and
            the cores other processes leave free, following the load epoch by epoch (see
            `layerwise.train.device.CpuThreads`); a number forces it; None leaves torch's.
        progress: show progress while fitting (a bar on a terminal, one line per epoch
            elsewhere) unless `callbacks` already hold a `ProgressBar`; `fit(progress=False)`
            silences one fit.

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
        loss: str | Callable[..., torch.Tensor] | None = "cross_entropy",
        optimizer: OptimizerSpec | Mapping[str, OptimizerSpec] = "adam",
        *,
        lr: float = 1e-3,
        weight_decay: float | None = None,
        optimizer_args: dict[str, Any] | None = None,
        loss_args: dict[str, Any] | None = None,
        metrics: Sequence[str | Metric] = ("accuracy",),
        schedule: str | dict[str, Any] | Schedule | None = None,
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
        threads: int | str | None = "auto",
        progress: bool = True,
    ) -> None:
        # The arguments as given, for `with_params` (scikit-learn keeps them for `clone`).
        self.params = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
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
        self.precision = resolve_precision(self.device, precision)  # validates it early
        self.channels_last = channels_last
        self.grad_clip = grad_clip
        self.l1, self.l2 = l1, l2
        self.seed = seed
        self.num_classes = num_classes
        self.train_metrics = train_metrics
        self.doctor = doctor
        self.progress = progress
        self._own_progress: ProgressBar | None = None  # the bar `progress` added, if any
        self.autocast = autocast_context(self.device, self.precision)
        self.cpu_threads = CpuThreads(threads)
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedules: dict[str, Schedule] = {}
        self.scaler: torch.amp.GradScaler | None = None
        self.regularizer: Regularizer | None = None
        self.state = TrainState()
        self.logs: dict[str, float] = {}
        self.history: list[dict[str, float]] = []
        self.step_logs = StepLogs()
        self.last_logs: dict[str, Any] = {}  # what the last train_step returned (device tensors)
        self.stop_training = False
        self.stop_reason: StopReason | None = None
        self.train_data: Any = None
        self.val_data: Any = None
        self.epochs = 0
        self._metrics_updated = False  # did a step update the metrics this epoch?
        self._scaler_stepped = False
        self._built = False
        self._defaults_added = False
        self._pending_state: dict[str, Any] | None = None
        self.dist: distributed.Distributed | None = None  # set by `fit` when run by torchrun
        self._rows = 0  # rows of the current batch, the weight of its gradients across ranks

    def with_params(self, **changes: Any) -> Trainer:
        """A new Trainer of this class with the same constructor arguments, except `changes`.

        Example:
            >>> quiet = trainer.with_params(callbacks=[], doctor=False)
        """
        return type(self)(**{**self.params, **changes})

    @property
    def optimizer(self) -> torch.optim.Optimizer | None:
        """The optimizer, when there is exactly one (None before the first `fit`)."""
        if not self.optimizers:
            return None
        if len(self.optimizers) > 1:
            raise LayerwiseError(
                f"this Trainer has several optimizers ({', '.join(self.optimizers)})",
                hint="use trainer.optimizers[name]",
            )
        return next(iter(self.optimizers.values()))

    @property
    def schedule(self) -> Schedule | None:
        """The schedule, when there is exactly one."""
        return next(iter(self.schedules.values())) if len(self.schedules) == 1 else None

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
        progress: bool | None = None,
    ) -> list[dict[str, float]]:
        """Train for `epochs` (counting epochs already done when resumed); returns the history.

        `train` and `val` are anything `layerwise.data.make_batcher` accepts: `(x, y)` tensors or
        arrays, a dict of equally long tensors, a `Dataset`, a `DataLoader`, or a batcher.
        A line per epoch is printed (a bar on a terminal) unless `progress` is False (None: the
        Trainer's `progress` setting).
        """
        self.dist = distributed.setup()  # None in one process: no collective runs then
        wanted = self.progress if progress is None else progress
        self._attach_progress(wanted and (self.dist is None or self.dist.is_main))
        self.epochs = epochs
        self.eval_batch_size = eval_batch_size or max(batch_size, 256)
        self.train_data = self._batcher(train, batch_size, shuffle=shuffle, transform=transform)
        self.val_data = self._batcher(val, self.eval_batch_size) if val is not None else None
        if self.dist is not None:  # each rank trains and validates on its part of each batch
            self.train_data = self.dist.shard(self.train_data)
            self.val_data = self.dist.shard(self.val_data)
        self._setup(self.train_data)
        if self.dist is not None:
            self.dist.broadcast_model(self.model)
        self.stop_training = False
        self.stop_reason = None
        self.cpu_threads.start(self.device, self._forward_macs)
        try:
            self._emit("on_fit_start")
            while self.state.epoch < epochs and not self.stop_training:
                self._run_epoch()
            self._emit("on_fit_end")
        finally:
            self.cpu_threads.restore()
        return self.history

    def _attach_progress(self, wanted: bool) -> None:
        """Add (or take back) the progress bar this Trainer shows by itself; a `ProgressBar`
        given in `callbacks` is the caller's and stays as it is."""
        if self._own_progress is not None:
            self.callbacks.remove(self._own_progress)
            self._own_progress = None
        given = any(isinstance(c, ProgressBar) for c in self.callbacks)
        if wanted and not given:
            self._own_progress = ProgressBar()
            self.callbacks.append(self._own_progress)

    def stop(
        self, message: str, *, source: str = "user", fatal: bool = False, detail: Any = None
    ) -> None:
        """Stop after the current step, saying why (see `StopReason`); a fatal reason wins."""
        self.stop_training = True
        if self.stop_reason is None or (fatal and not self.stop_reason.fatal):
            self.stop_reason = StopReason(source, message, fatal, detail)

    def _run_epoch(self) -> None:
        self._emit("on_epoch_start")
        self.model.train()
        if self.state.batch_in_epoch == 0:
            self._reset_epoch()
        self.epoch_start_time = time.perf_counter()
        self.train_data.set_epoch(self.state.epoch)
        for batch in self.train_data.iter_from(self.state.batch_in_epoch):
            batch = self.to_device(batch)
            if self.dist is not None:
                self._rows = self.batch_size(batch)
            logs = _as_logs(self.train_step(batch))
            if self._scaler_stepped:  # once per iteration, after every optimizer stepped
                self.scaler.update()
                self._scaler_stepped = False
            self.step_logs.update(logs, self.batch_size(batch))
            self.last_logs = logs
            self.state.step += 1
            self.state.batch_in_epoch += 1
            self._emit("on_batch_end")
            if self.dist is not None:
                self.dist.agree_to_stop(self)
            if self.stop_training:
                return
        self._finish_epoch()
        self.cpu_threads.epoch_end()

    # -------------------------------------------------------------- the steps
    def train_step(self, batch: Any) -> dict[str, torch.Tensor]:
        """One optimisation step on one batch; returns its logs (scalar tensors, not read).

        Override it for GANs, RL or anything unusual. Use `self.forward`, `self.compute_loss`,
        `self.backward(loss)` and `self.optimizer_step()` to keep mixed precision, clipping,
        penalties and the `after_backward` event, and `self.update_metrics` to feed the metrics.
        """
        inputs, target = self.unpack(batch)
        with self.autocast:
            output = self.forward(inputs)
            loss = self.compute_loss(output, target)
        self.backward(loss)
        self.optimizer_step()
        if self.train_metrics:
            self.update_metrics(output, target)
        return {"loss": loss}

    def eval_step(self, batch: Any) -> dict[str, torch.Tensor]:
        """Logs of one batch in evaluation (run under `torch.no_grad()` in eval mode)."""
        inputs, target = self.unpack(batch)
        output = self.forward(inputs)
        if target is None or self.loss_fn is None:
            return {}
        self.update_metrics(output, target)
        return {"loss": self.loss_fn(output, target)}

    def predict_step(self, batch: Any) -> Any:
        """The model's output for one batch (run under `torch.no_grad()` in eval mode)."""
        inputs, _ = self.unpack(batch)
        return self.forward(inputs)

    # --------------------------------------------------- the steps' building blocks
    def unpack(self, batch: Any) -> tuple[Any, Any]:
        """`(inputs, target)` of a batch (see `layerwise.train.batch.split_batch`)."""
        return split_batch(batch)

    def batch_size(self, batch: Any) -> int:
        """Samples in a batch, the weight of its logs in the epoch average."""
        return batch_size(batch)

    def to_device(self, batch: Any) -> Any:
        """The batch with every tensor on the Trainer's device."""
        return to_device(batch, self.device, self.channels_last)

    def forward(self, inputs: Any) -> Any:
        """The model on `inputs`: a tuple is several arguments, a dict keyword arguments."""
        return call_model(self.model, inputs)

    def compute_loss(self, output: Any, target: Any) -> torch.Tensor:
        """The loss plus the L1/L2 penalty when one is set."""
        if self.loss_fn is None:
            raise RecipeError(
                "this Trainer has no loss (loss=None)",
                hint="give a loss name or function, or override train_step",
            )
        if target is None:
            raise DataError(
                "the batch has no target to compute the loss against",
                hint="give (inputs, target) pairs or dicts with a 'label' key, or override "
                "train_step for training without targets",
            )
        loss = self.loss_fn(output, target)
        if self.regularizer is not None:
            loss = loss + self.regularizer()
        return loss

    def backward(self, loss: torch.Tensor, optimizer: str | None = None) -> None:
        """Backpropagate (scaled under fp16), then fire `after_backward`.

        With an optimizer's name, gradients are accumulated only into that optimizer's
        parameters (`loss.backward(inputs=...)`): a GAN's generator loss then leaves no stale
        gradients on the discriminator.
        """
        inputs = None if optimizer is None else _trainable(self._optimizer_named(optimizer))
        scaled = self.scaler.scale(loss) if self.scaler is not None else loss
        scaled.backward(inputs=inputs)
        if self.dist is not None:  # average across ranks, before anything reads the gradients
            params = inputs if inputs is not None else self.model.parameters()
            self.dist.reduce_gradients(params, self._rows)
        self._emit("after_backward")

    def optimizer_step(self, name: str | None = None) -> None:
        """Clip gradients if asked, step the optimizer `name` (default: every one), clear them."""
        names = list(self.optimizers) if name is None else [name]
        for key in names:
            optimizer = self._optimizer_named(key)
            if self.grad_clip is not None:
                if self.scaler is not None:
                    self.scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(_trainable(optimizer), self.grad_clip, foreach=True)
            if self.scaler is not None:
                self.scaler.step(optimizer)
                self._scaler_stepped = True
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    def update_metrics(self, output: Any, target: Any) -> None:
        """Feed one batch's output and target to every metric (on the device, no sync)."""
        if isinstance(output, torch.Tensor):
            output = output.detach()
        for metric in self.metrics:
            metric.update(output, target)
        self._metrics_updated = True

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The optimizers by name, made once the model is built; override for full control."""
        spec = self.optimizer_spec
        if isinstance(spec, Mapping):
            return {name: self._make_optimizer(entry, name) for name, entry in spec.items()}
        return {MAIN: self._make_optimizer(spec, None)}

    # ------------------------------------------------------------ evaluate
    def evaluate(
        self, data: Any, batch_size: int = 256, *, extra_metrics: Sequence[Metric] = ()
    ) -> dict[str, float]:
        """Loss and metrics on `data`, in eval mode without gradients.

        `extra_metrics` are updated too, in place, so their full result (a confusion matrix)
        can be read afterwards without a second pass over the data.
        """
        batcher = self._batcher(data, batch_size)
        self._setup(batcher, for_training=False)
        return self._evaluate_batches(batcher, extra_metrics)

    def _evaluate_batches(
        self, batcher: Any, extra_metrics: Sequence[Metric] = (), merge: bool = False
    ) -> dict[str, float]:
        logs = StepLogs()
        with self._fresh_metrics(extra_metrics), self._inference():
            for batch in batcher.iter_from(0):
                batch = self.to_device(batch)
                logs.update(_as_logs(self.eval_step(batch)), self.batch_size(batch))
            if merge and self.dist is not None:  # each rank validated its shard
                self.dist.merge_epoch(logs, self.metrics if self._metrics_updated else [])
            result = logs.compute()
            if self._metrics_updated:
                result.update(self._metric_logs())
        return result

    def predict(self, data: Any, batch_size: int = 256) -> Any:
        """`predict_step` outputs for every row of `data`, on the CPU, in order.

        Tensors are concatenated (low-precision floats come back as float32); dicts and tuples
        of tensors are concatenated entry by entry; lists are joined.
        """
        batcher = self._batcher(data, batch_size)
        self._setup(batcher, for_training=False)
        with self._inference():
            outputs = [self.predict_step(self.to_device(b)) for b in batcher.iter_from(0)]
        return _concat(outputs)

    @contextlib.contextmanager
    def _inference(self) -> Iterator[None]:
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad(), self.autocast:
                yield
        finally:
            self.model.train(was_training)

    @contextlib.contextmanager
    def _fresh_metrics(self, extra: Sequence[Metric] = ()) -> Iterator[None]:
        """Evaluate with reset copies of the metrics (plus `extra`, reset but not copied),
        leaving the training ones untouched."""
        saved = self.metrics, self._metrics_updated
        self.metrics = [copy.deepcopy(m) for m in saved[0]] + list(extra)
        for metric in self.metrics:
            metric.reset()
        self._metrics_updated = False
        try:
            yield
        finally:
            self.metrics, self._metrics_updated = saved

    # ------------------------------------------------------------- epoch logs
    def _reset_epoch(self) -> None:
        self.step_logs.reset()
        for metric in self.metrics:
            metric.reset()
        self._metrics_updated = False

    def _finish_epoch(self) -> None:
        logs: dict[str, float] = {"epoch": self.state.epoch + 1, "step": self.state.step}
        if self.dist is not None:  # the epoch's sums over every rank's rows
            self.dist.merge_epoch(self.step_logs, self.metrics if self._metrics_updated else [])
            self.dist.average_buffers(self.model)
        logs.update(self.step_logs.compute())
        if self._metrics_updated:
            logs.update(self._metric_logs())
        for name, optimizer in self.optimizers.items():
            logs["lr" if len(self.optimizers) == 1 else f"lr_{name}"] = optimizer.param_groups[0][
                "lr"
            ]
        if self.val_data is not None:
            val_logs = self._evaluate_batches(self.val_data, merge=True)
            logs.update({f"val_{k}": v for k, v in val_logs.items()})
        logs["time"] = time.perf_counter() - self.epoch_start_time
        self.state.epoch += 1
        self.state.batch_in_epoch = 0
        self.logs = logs
        self.history.append(logs)
        self._emit("on_epoch_end")

    def _metric_logs(self) -> dict[str, float]:
        logs: dict[str, float] = {}
        for metric in self.metrics:
            logs.update(_scalar_logs(metric))
        return logs

    # --------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Everything except the weights that a resumed run needs to continue bit for bit."""
        return {
            "format": STATE_FORMAT,
            "train_state": asdict(self.state),
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "schedules": {name: s.state_dict() for name, s in self.schedules.items()},
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "rng": rng_state(),
            "step_logs": self.step_logs.state_dict(),
            "metrics": [m.state_dict() for m in self.metrics],
            "metrics_updated": self._metrics_updated,
            "callbacks": {key: cb.state_dict() for key, cb in self._keyed_callbacks().items()},
            "history": self.history,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict`; it takes effect in the next `fit`, once the model is built."""
        if state.get("format") != STATE_FORMAT:
            raise CheckpointError(
                f"training state has format {state.get('format')}, expected {STATE_FORMAT}",
                hint="it was written by another layerwise version; start a new run",
            )
        self._pending_state = state

    def _apply_pending_state(self) -> None:
        state, self._pending_state = self._pending_state, None
        for kind, mine in (("optimizers", self.optimizers), ("schedules", self.schedules)):
            if set(state[kind]) != set(mine):
                raise CheckpointError(
                    f"the saved state has {kind} {sorted(state[kind])} but this Trainer has "
                    f"{sorted(mine)}",
                    hint="resume with the same optimizers and schedules the run was started with",
                )
            for name, saved in state[kind].items():
                mine[name].load_state_dict(saved)
        self.state = TrainState(**state["train_state"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.step_logs.load_state_dict(state["step_logs"])
        for metric, metric_state in zip(self.metrics, state["metrics"], strict=True):
            metric.load_state_dict(metric_state)
        self._metrics_updated = state["metrics_updated"]
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
        """Build the model on one batch (once), then the optimizers, schedules, scaler and
        default callbacks (once), then a pending resumed state."""
        if not self._built:
            if for_training:
                seed_everything(self.seed)
            self._build_model(batcher)
        if not for_training:
            return
        if not self.optimizers:
            self.optimizers = self.configure_optimizers()
            self.schedules = self._make_schedules(len(batcher))
            if self.schedules:
                self.callbacks.append(LRScheduler(self.schedules))
            if self.precision == "fp16" and self.device.type == "cuda":
                self.scaler = torch.amp.GradScaler("cuda")
            if self.l1 or self.l2:
                self.regularizer = Regularizer(self.model, l1=self.l1, l2=self.l2)
        if self.doctor and not self._defaults_added:
            self.callbacks += default_callbacks("doctor", self)
        self._defaults_added = True
        self.callbacks.sort(key=lambda callback: getattr(callback, "order", 0))
        if self._pending_state is not None:
            self._apply_pending_state()

    def _forward_macs(self) -> float:
        """Forward multiply-adds of one training batch (0 when the model is not called on its
        inputs, e.g. a GAN pair), from which the CPU thread count is chosen."""
        if type(self).train_step is not Trainer.train_step:
            return 0.0
        return self._batch_forward_macs()

    def _batch_forward_macs(self) -> float:
        """Count one training batch's forward (`unpack` then `forward`); a custom step whose
        model does read its inputs that way overrides `_forward_macs` to call this. The RNG
        states are kept, so the estimate changes no result."""
        saved = rng_state()
        try:
            inputs, _ = self.unpack(self.to_device(next(iter(self.train_data.iter_from(0)))))
            return float(forward_macs(self.model, lambda: self.forward(inputs)))
        finally:
            set_rng_state(saved)

    def _build_model(self, batcher: Any) -> None:
        """Move the model to the device and build its lazy layers with one dry forward.

        The dry forward also checks, before any training, that the data fits the model (a
        `ShapeError` naming the layer otherwise). A model only a custom step can call (a GAN
        pair) skips it, unless it has lazy layers to build.
        """
        self.model.to(self.device)
        if isinstance(self.loss_fn, nn.Module):
            self.loss_fn.to(self.device)
        lazy = any(is_lazy(p) for p in self.model.parameters())
        if lazy or type(self).train_step is Trainer.train_step:
            inputs, _ = self.unpack(self.to_device(next(iter(batcher.iter_from(0)))))
            check_arguments(self.model, inputs)
            materialize(self.model, inputs)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self._built = True

    def _make_optimizer(self, spec: Any, name: str | None) -> torch.optim.Optimizer:
        if isinstance(spec, str):
            if name is not None:
                raise RecipeError(
                    f"optimizer '{name}' is given by name ('{spec}'), which says nothing of "
                    "which parameters it trains",
                    hint="give each of several optimizers as a function model -> optimizer",
                )
            return create_optimizer(spec, self.model, **self.optimizer_args)
        if isinstance(spec, torch.optim.Optimizer):
            return spec
        if callable(spec):
            return spec(self.model) if name is not None else spec(self.model.parameters())
        raise RecipeError(
            f"bad optimizer {spec!r}", hint="give a name, an optimizer or a function making one"
        )

    def _make_schedules(self, steps_per_epoch: int) -> dict[str, Schedule]:
        spec = self.schedule_spec
        if spec is None:
            return {}
        several = isinstance(spec, Mapping) and "name" not in spec
        specs = dict(spec) if several else {MAIN: spec}
        if not several and len(self.optimizers) > 1:
            raise RecipeError(
                f"one schedule was given for several optimizers ({', '.join(self.optimizers)})",
                hint="give a dict {optimizer name: schedule}",
            )
        schedules = {}
        for name, entry in specs.items():
            optimizer = self._optimizer_named(next(iter(self.optimizers)) if name == MAIN else name)
            schedules[name] = self._make_schedule(entry, optimizer, steps_per_epoch)
        return schedules

    def _make_schedule(
        self, spec: Any, optimizer: torch.optim.Optimizer, steps_per_epoch: int
    ) -> Schedule:
        if isinstance(spec, Schedule):
            return spec
        if isinstance(spec, str):
            spec = {"name": spec}
        if not isinstance(spec, Mapping) or "name" not in spec:
            raise RecipeError(
                f"bad schedule {spec!r}", hint="give a name or a dict like {'name': 'cosine'}"
            )
        args = {k: v for k, v in spec.items() if k != "name"}
        return create_schedule(
            spec["name"], optimizer, epochs=self.epochs, steps_per_epoch=steps_per_epoch, **args
        )

    def _optimizer_named(self, name: str) -> torch.optim.Optimizer:
        try:
            return self.optimizers[name]
        except KeyError:
            raise LayerwiseError(
                f"no optimizer named '{name}' (this Trainer has: {', '.join(self.optimizers)})",
                hint="name one of the optimizers given to the Trainer",
            ) from None

    # ------------------------------------------------------------ callbacks
    def diagnose(self) -> Any:
        """The diagnosis of the training so far, from the attached doctor (or any callback
        with a `diagnose(history)` method)."""
        doctor = next((c for c in self.callbacks if hasattr(c, "diagnose")), None)
        if doctor is None and self.doctor:  # attached when fit() starts training
            raise LayerwiseError(
                "nothing to diagnose yet: fit() has not started training",
                hint="call fit() first; if it raised an error, fix what the error names",
            )
        if doctor is None:
            raise LayerwiseError(
                "this Trainer has no doctor", hint="create it with Trainer(..., doctor=True)"
            )
        return doctor.diagnose(self.history)

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


def _as_logs(result: Any) -> Mapping[str, Any]:
    """A step's return value as logs: a dict as is, a bare loss tensor as `{"loss": …}`."""
    if result is None:
        return {}
    if isinstance(result, torch.Tensor):
        return {"loss": result}
    if isinstance(result, Mapping):
        return result
    raise LayerwiseError(
        f"a step returned a {type(result).__name__}; it must return a dict of logs",
        hint="return e.g. {'loss': loss} from train_step and eval_step",
    )


def _trainable(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]


def _scalar_logs(metric: Metric) -> dict[str, float]:
    """A metric's value as log entries; matrix-valued metrics (confusion matrix) are skipped."""
    value = metric.compute()
    if isinstance(value, dict):
        return {k: float(v) for k, v in value.items()}
    if isinstance(value, float | int):
        return {metric.name: float(value)}
    return {}


def _concat(outputs: list[Any]) -> Any:
    """Join per-batch outputs: tensors along dim 0 (on the CPU), containers entry by entry."""
    if not outputs:
        return torch.empty(0)
    first = outputs[0]
    if isinstance(first, torch.Tensor):
        joined = torch.cat(outputs).cpu()
        return joined.float() if joined.is_floating_point() else joined
    if isinstance(first, Mapping):
        return {key: _concat([o[key] for o in outputs]) for key in first}
    if isinstance(first, tuple):
        return tuple(_concat(list(parts)) for parts in zip(*outputs, strict=True))
    if isinstance(first, list):  # one entry per sample (boxes of different sizes)
        return [tree_map(torch.Tensor.cpu, item) for output in outputs for item in output]
    return outputs
