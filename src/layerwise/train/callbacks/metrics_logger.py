"""Append each epoch's numbers to the run's `metrics.jsonl`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from layerwise.train.callbacks.base import Callback

if TYPE_CHECKING:
    from layerwise.runs import Run
    from layerwise.train.trainer import Trainer


class MetricsLogger(Callback):
    """One JSON line per epoch and split (`train`, `val`) in `run/metrics.jsonl`.

    Lines look like `{"epoch": 3, "step": 300, "split": "val", "loss": 0.21, "accuracy": 0.94}`,
    which is what the plots and `layerwise runs compare` read.
    """

    order = 10

    def __init__(self, run: Run) -> None:
        self.run = run

    def on_epoch_end(self, trainer: Trainer) -> None:
        for record in split_logs(trainer.logs):
            self.run.append_metrics(record)


def split_logs(logs: dict[str, float]) -> list[dict[str, float | str]]:
    """Turn flat Keras-style logs (`loss`, `val_loss`, …) into one record per split."""
    common = {k: logs[k] for k in ("epoch", "step") if k in logs}
    train: dict[str, float | str] = {**common, "split": "train"}
    val: dict[str, float | str] = {**common, "split": "val"}
    for key, value in logs.items():
        if key in common:
            continue
        if key.startswith("val_"):
            val[key[4:]] = value
        else:
            train[key] = value
    return [train, val] if len(val) > len(common) + 1 else [train]
