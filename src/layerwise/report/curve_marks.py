"""Where a run's curves get marks: the epoch whose weights the model keeps, and where early
stopping ended training.

Read from the run folder alone (recipe.yaml, run.json, metrics.jsonl), so a report can be drawn
again from any finished run. The recipe is read as plain YAML, never validated: a report of a
run whose recipe no longer parses still gets its curves.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from layerwise.errors import LayerwiseError
from layerwise.train.metrics import create_metric
from layerwise.train.monitor import improved, monitor_mode

if TYPE_CHECKING:
    from layerwise.runs import Run

__all__ = ["CurveMarks", "curve_marks", "plot_run_curves"]


@dataclass(frozen=True)
class CurveMarks:
    """What `plot_curves` marks.

    Attributes:
        best_epoch: the epoch of the best `monitor` value, or None.
        monitor: the log that defines "best", e.g. `val_loss`.
        best_value: its value at `best_epoch`.
        stopped_epoch: the last epoch when early stopping ended training, else None.
        planned_epochs: the epochs the recipe asked for.
        kept: the model ends with `best_epoch`'s weights (early stopping restored them); when
            False, `best_epoch` is the one saved as best.safetensors.
    """

    best_epoch: int | None = None
    monitor: str | None = None
    best_value: float | None = None
    stopped_epoch: int | None = None
    planned_epochs: int | None = None
    kept: bool = False

    def stop_sentence(self) -> str | None:
        """`Early stopping ended training at epoch 13 of 40; the model keeps epoch 8's weights
        (best val_loss 2.49).`, or None when training was not stopped early."""
        if self.stopped_epoch is None:
            return None
        from layerwise.report.findings import format_number

        planned = f" of {self.planned_epochs}" if self.planned_epochs else ""
        text = f"Early stopping ended training at epoch {self.stopped_epoch}{planned}"
        if self.best_epoch is not None and self.kept:
            best = format_number(self.best_value) if self.best_value is not None else "?"
            text += (
                f"; the model keeps epoch {self.best_epoch}'s weights (best {self.monitor} {best})"
            )
        return text + "."


def curve_marks(run: Run) -> CurveMarks:
    """The marks for `run`'s curves, from its folder."""
    recipe = _raw_recipe(run)
    info = run.info()
    train = recipe.get("train") if isinstance(recipe.get("train"), dict) else {}
    planned = train.get("epochs") if isinstance(train.get("epochs"), int) else None
    records = run.read_metrics()
    last_epoch = max((r["epoch"] for r in records if _is_int(r.get("epoch"))), default=None)
    stopper = train.get("early_stopping")
    stopped = (
        isinstance(stopper, dict)
        and info.get("status") == "finished"
        and planned is not None
        and last_epoch is not None
        and last_epoch < planned
    )
    if stopped:
        monitor = str(stopper.get("monitor", "val_loss"))
        mode = stopper.get("mode", "auto")
        best = _best(records, monitor, mode, float(stopper.get("min_delta") or 0.0))
        return CurveMarks(
            best_epoch=best[0] if best else None,
            monitor=monitor,
            best_value=best[1] if best else None,
            stopped_epoch=last_epoch,
            planned_epochs=planned,
            kept=bool(best) and bool(stopper.get("restore_best_weights", True)),
        )
    saved = info.get("best_metric")
    if isinstance(saved, dict) and _is_int(saved.get("epoch")):
        monitor = next((k for k in saved if k != "epoch"), None)
        value = saved.get(monitor) if monitor else None
        return CurveMarks(
            best_epoch=saved["epoch"],
            monitor=monitor,
            best_value=float(value) if isinstance(value, int | float) else None,
            planned_epochs=planned,
        )
    return CurveMarks(planned_epochs=planned)


def plot_run_curves(run: Run) -> Path:
    """`plots/curves.png` of `run`, with its best epoch and early stop marked."""
    from layerwise.report.plots import plot_curves

    return plot_curves(run.read_metrics(), run.plots_dir / "curves.png", marks=curve_marks(run))


def split_monitor(monitor: str) -> tuple[str, str]:
    """`val_loss -> ("val", "loss")`, `test_f1 -> ("test", "f1")`, `loss -> ("train", "loss")`."""
    prefix, _, rest = monitor.partition("_")
    return (prefix, rest) if prefix in ("val", "test") and rest else ("train", monitor)


# ---------------------------------------------------------------------------- helpers
def _best(
    records: list[dict[str, Any]], monitor: str, mode: str, min_delta: float
) -> tuple[int, float] | None:
    """The epoch and value early stopping called best: the first strict improvement by more
    than `min_delta` that nothing later beat, as `EarlyStopping` counts it."""
    split, name = split_monitor(monitor)
    values = [
        (r["epoch"], float(r[name]))
        for r in records
        if r.get("split", "train") == split and _is_int(r.get("epoch")) and _is_number(r.get(name))
    ]
    mode = _direction(monitor, mode)
    if mode is None:
        return None
    best: tuple[int, float] | None = None
    for epoch, value in values:
        if improved(value, best[1] if best else None, mode, min_delta):
            best = (epoch, value)
    return best


def _direction(monitor: str, mode: str) -> str | None:
    """`min` or `max` as early stopping decided it (the metric's own direction), or None when
    the metric is unknown here."""
    if mode in ("min", "max"):
        return mode
    name = split_monitor(monitor)[1]
    try:
        metrics = [] if name == "loss" or name.endswith("_loss") else [create_metric(name)]
        return monitor_mode(name, metrics, mode)
    except LayerwiseError:
        return None


def _raw_recipe(run: Run) -> dict[str, Any]:
    try:
        data = yaml.safe_load(run.read_recipe()) if run.recipe_path.exists() else None
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
