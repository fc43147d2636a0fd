"""Which way is better for a logged number: asked of the metric that logs it, never guessed.

Early stopping, checkpoints and auto-fix all compare a monitored log (`val_accuracy`,
`val_loss`, `f1_macro`) between epochs. Its direction comes from one place: a metric's own
`higher_is_better`; a loss (`loss`, or any `*_loss` a step returns) is minimised, because
that is what training does to it. Anything else needs an explicit `mode`.
"""

from __future__ import annotations

from collections.abc import Sequence

from layerwise.errors import RecipeError
from layerwise.train.metrics import Metric

MODES = ("auto", "min", "max")


def monitor_mode(monitor: str, metrics: Sequence[Metric], mode: str = "auto") -> str:
    """`"min"` or `"max"` for the log `monitor` (with or without its `val_` prefix).

    Args:
        monitor: the log's name, e.g. `val_accuracy`.
        metrics: the metrics being logged; the one named like `monitor` decides.
        mode: `min` or `max` is returned as is; `auto` asks the metric (or the loss rule).
    """
    if mode not in MODES:
        raise RecipeError(f"unknown mode '{mode}' for '{monitor}'", hint="use auto, min or max")
    if mode != "auto":
        return mode
    name = monitor.removeprefix("val_")
    for metric in metrics:
        if metric.name == name and metric.higher_is_better is not None:
            return "max" if metric.higher_is_better else "min"
    if name == "loss" or name.endswith("_loss"):
        return "min"
    raise RecipeError(
        f"cannot tell whether '{monitor}' is better high or low: it is neither a loss nor a "
        "metric with a direction",
        hint="set mode: min or mode: max, or monitor a loss or one of the metrics "
        f"({', '.join(m.name for m in metrics) or 'none given'})",
    )


def improved(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    """Whether `value` beats `best` by more than `min_delta` in direction `mode`."""
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta
