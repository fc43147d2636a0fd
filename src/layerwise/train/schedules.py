"""Learning-rate schedules, created by name from a recipe.

A `Schedule` wraps one of PyTorch's `torch.optim.lr_scheduler` classes and adds what a training
loop needs to drive it without knowing which one it is: `per_step` says whether to call `step()`
after every optimizer step or once per epoch, `monitor` names the logged value a plateau schedule
needs, and finite schedules (cosine, one-cycle) hold their final rate instead of wrapping round
or raising when training runs longer than planned.

Example:
    >>> sched = create_schedule("onecycle", opt, epochs=10, steps_per_epoch=100)
    >>> for batch in batches:
    ...     train_step(batch)
    ...     if sched.per_step:
    ...         sched.step()
"""

from __future__ import annotations

from typing import Any

from torch.optim import Optimizer, lr_scheduler

from layerwise.errors import RecipeError
from layerwise.registry import Registry

SCHEDULES: Registry[Schedule] = Registry("schedule")


class Schedule:
    """A PyTorch LR scheduler plus the facts a training loop needs to drive it.

    Args:
        scheduler: the wrapped `torch.optim.lr_scheduler` object.
        name: the schedule's registry name.
        per_step: step after every optimizer step (True) or after every epoch (False).
        horizon: after this many steps the rate is final; later steps leave it unchanged.
        monitor: the logged value `step` must be given (plateau), e.g. "val_loss".
    """

    def __init__(
        self,
        scheduler: lr_scheduler.LRScheduler,
        *,
        name: str,
        per_step: bool,
        horizon: int | None = None,
        monitor: str | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.optimizer: Optimizer = scheduler.optimizer
        self.name = name
        self.per_step = per_step
        self.horizon = horizon
        self.monitor = monitor
        self.steps = 0

    def step(self, metric: float | None = None) -> None:
        """Advance one step (or epoch); a plateau schedule needs the monitored `metric`."""
        if self.monitor is not None:
            if metric is None:
                raise RecipeError(
                    f"the '{self.name}' schedule needs the value of '{self.monitor}' each epoch, "
                    "but none was given",
                    hint=f"log '{self.monitor}' (e.g. give validation data) or set the "
                    "schedule's monitor to a value that is logged, such as 'loss'",
                )
            self.scheduler.step(metric)
        elif self.horizon is None or self.steps < self.horizon:
            self.scheduler.step()
        self.steps += 1

    @property
    def last_lr(self) -> float:
        """The current learning rate of the first parameter group."""
        return self.last_lrs[0]

    @property
    def last_lrs(self) -> list[float]:
        """The current learning rate of every parameter group."""
        return [float(lr) for lr in self.scheduler.get_last_lr()]

    def state_dict(self) -> dict[str, Any]:
        return {"scheduler": self.scheduler.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the schedule and put its rate back into the optimizer.

        Chained schedulers compute each rate from the optimizer's current one, so the rate is
        restored here too; this makes resuming exact whether or not the optimizer's state is
        loaded before or after this.
        """
        self.scheduler.load_state_dict(state["scheduler"])
        self.steps = int(state["steps"])
        for group, lr in zip(
            self.optimizer.param_groups, self.scheduler.get_last_lr(), strict=True
        ):
            group["lr"] = lr

    def __repr__(self) -> str:
        timing = "per step" if self.per_step else "per epoch"
        return f"Schedule({self.name}, {timing}, lr={self.last_lr:.3g})"


def create_schedule(
    name: str, optimizer: Optimizer, *, epochs: int, steps_per_epoch: int, **kwargs: Any
) -> Schedule:
    """Create the schedule `name` for a run of `epochs` epochs of `steps_per_epoch` steps.

    Schedules: `constant`, `step(step_size, gamma)`, `cosine(warmup_epochs, min_lr)`,
    `onecycle(max_lr, pct_start, div_factor, final_div_factor)`,
    `warmup(warmup_steps | warmup_epochs)`, `plateau(monitor, factor, patience, min_lr, mode)`.
    """
    for label, value in (("epochs", epochs), ("steps_per_epoch", steps_per_epoch)):
        if not isinstance(value, int) or value < 1:
            raise RecipeError(
                f"schedule '{name}' needs {label} >= 1, got {value!r}",
                hint="the training loop passes the run's epochs and batches per epoch",
            )
    try:
        return SCHEDULES.create(
            name, optimizer=optimizer, epochs=epochs, steps_per_epoch=steps_per_epoch, **kwargs
        )
    except ValueError as exc:  # PyTorch's own range checks
        raise RecipeError(
            f"bad arguments for schedule '{name}': {exc}",
            hint=f"check the options of schedule '{name}'",
        ) from exc


def _linear_warmup(optimizer: Optimizer, steps: int) -> lr_scheduler.LinearLR:
    """Rate rising linearly from lr/(steps+1) to lr over `steps` steps, then held."""
    return lr_scheduler.LinearLR(
        optimizer, start_factor=1.0 / (steps + 1), end_factor=1.0, total_iters=steps
    )


@SCHEDULES.register("constant")
def constant(optimizer: Optimizer, epochs: int, steps_per_epoch: int) -> Schedule:
    """The optimizer's rate, unchanged."""
    scheduler = lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    return Schedule(scheduler, name="constant", per_step=False)


@SCHEDULES.register("step")
def step_decay(
    optimizer: Optimizer, epochs: int, steps_per_epoch: int, step_size: int, gamma: float = 0.1
) -> Schedule:
    """Multiply the rate by `gamma` every `step_size` epochs."""
    if step_size < 1:
        raise RecipeError(f"step_size must be >= 1 epoch, got {step_size}", hint="e.g. 30")
    scheduler = lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)
    return Schedule(scheduler, name="step", per_step=False)


@SCHEDULES.register("cosine")
def cosine(
    optimizer: Optimizer,
    epochs: int,
    steps_per_epoch: int,
    warmup_epochs: float = 0,
    min_lr: float = 0.0,
) -> Schedule:
    """Cosine decay to `min_lr` over the run, after an optional linear warm-up."""
    total = epochs * steps_per_epoch
    warm = round(warmup_epochs * steps_per_epoch)
    if not 0 <= warm < total:
        raise RecipeError(
            f"cosine warmup_epochs={warmup_epochs} does not fit a run of {epochs} epochs",
            hint="use fewer warm-up epochs than training epochs",
        )
    decay = lr_scheduler.CosineAnnealingLR(optimizer, T_max=total - warm, eta_min=min_lr)
    scheduler: lr_scheduler.LRScheduler = decay
    if warm > 0:
        scheduler = lr_scheduler.SequentialLR(
            optimizer, [_linear_warmup(optimizer, warm), decay], milestones=[warm]
        )
    return Schedule(scheduler, name="cosine", per_step=True, horizon=total)


@SCHEDULES.register("onecycle")
def onecycle(
    optimizer: Optimizer,
    epochs: int,
    steps_per_epoch: int,
    max_lr: float | None = None,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    cycle_momentum: bool | None = None,
) -> Schedule:
    """Smith's one-cycle: up from max_lr/div_factor to max_lr over `pct_start`, then down.

    `max_lr` defaults to the optimizer's rate. Momentum (or Adam's beta1) is cycled inversely
    when the optimizer uses momentum; `cycle_momentum=None` decides that from the optimizer, so
    plain SGD is not silently turned into momentum SGD.
    """
    total = epochs * steps_per_epoch
    if total < 2:
        raise RecipeError(
            f"onecycle needs at least 2 steps, got {epochs} epoch(s) x {steps_per_epoch} step(s)",
            hint="train longer or use the 'constant' schedule",
        )
    peak: float | list[float] = (
        max_lr if max_lr is not None else [g["lr"] for g in optimizer.param_groups]
    )
    if cycle_momentum is None:
        defaults = optimizer.defaults
        cycle_momentum = "betas" in defaults or defaults.get("momentum", 0) > 0
    scheduler = lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=peak,
        total_steps=total,
        pct_start=pct_start,
        div_factor=div_factor,
        final_div_factor=final_div_factor,
        cycle_momentum=cycle_momentum,
    )
    return Schedule(scheduler, name="onecycle", per_step=True, horizon=total - 1)


@SCHEDULES.register("warmup")
def warmup(
    optimizer: Optimizer,
    epochs: int,
    steps_per_epoch: int,
    warmup_steps: int | None = None,
    warmup_epochs: float | None = None,
) -> Schedule:
    """Linear warm-up over `warmup_steps` (or `warmup_epochs`), then the optimizer's rate."""
    if (warmup_steps is None) == (warmup_epochs is None):
        raise RecipeError(
            "the warmup schedule needs exactly one of warmup_steps and warmup_epochs",
            hint="e.g. warmup_epochs: 1",
        )
    steps = warmup_steps if warmup_steps is not None else round(warmup_epochs * steps_per_epoch)
    if steps < 1:
        raise RecipeError(f"warm-up must last at least 1 step, got {steps}", hint="e.g. 100")
    return Schedule(_linear_warmup(optimizer, steps), name="warmup", per_step=True)


_HIGHER_IS_BETTER = ("acc", "auc", "f1", "precision", "recall", "r2")


@SCHEDULES.register("plateau")
def plateau(
    optimizer: Optimizer,
    epochs: int,
    steps_per_epoch: int,
    monitor: str = "val_loss",
    factor: float = 0.1,
    patience: int = 5,
    min_lr: float = 0.0,
    mode: str = "auto",
    threshold: float = 1e-4,
    cooldown: int = 0,
) -> Schedule:
    """Multiply the rate by `factor` once `monitor` has not improved for `patience` epochs.

    `mode="auto"` maximises accuracy-like values (acc, auc, f1, precision, recall, r2) and
    minimises everything else.
    """
    if mode == "auto":
        mode = "max" if any(key in monitor for key in _HIGHER_IS_BETTER) else "min"
    if mode not in ("min", "max"):
        raise RecipeError(f"plateau mode must be min, max or auto, got '{mode}'", hint="e.g. min")
    scheduler = lr_scheduler.ReduceLROnPlateau(
        optimizer,
        mode=mode,
        factor=factor,
        patience=patience,
        threshold=threshold,
        cooldown=cooldown,
        min_lr=min_lr,
    )
    return Schedule(scheduler, name="plateau", per_step=False, monitor=monitor)
