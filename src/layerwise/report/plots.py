"""Training plots as PNG files: curves, learning rate, confusion matrix, sample predictions.

Figures are built on `matplotlib.figure.Figure` directly, never through `pyplot`, so nothing is
kept in pyplot's global figure list, no GUI backend is touched and plotting is safe in a training
process or a server thread. Every function writes its PNG atomically and returns the path.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from layerwise.errors import DataError, ShapeError
from layerwise.report.curve_marks import CurveMarks, split_monitor
from layerwise.runs.atomic import atomic_write_bytes
from layerwise.runs.run import NOT_METRICS

__all__ = ["plot_confusion_matrix", "plot_curves", "plot_lr", "plot_samples"]

_SPLIT_STYLE = {
    "train": {"color": "#1f77b4", "marker": "o"},
    "val": {"color": "#d62728", "marker": "s"},
    "test": {"color": "#2ca02c", "marker": "*", "markersize": 12},
}
_BEST = "#1a7f37"
_TITLE, _LABEL, _TICK = 13, 11, 9
_DPI = 110


def plot_curves(
    records: Sequence[dict[str, Any]], path: str | Path, marks: CurveMarks | None = None
) -> Path:
    """Loss and every metric over epochs, one panel each, a line per split (train/val/test).

    `records` are metrics.jsonl lines such as
    `{"epoch": 1, "step": 100, "split": "val", "loss": 0.3, "accuracy": 0.9}`; flat Keras-style
    records (`val_loss`, no `split`) work too. Records without an epoch are left out.
    `marks` (see `curve_marks`) adds a line at the best epoch on every panel, a ring on the
    monitored value there, and a line where early stopping ended training.
    """
    series = _series(records)
    if not series:
        raise DataError(
            "no per-epoch metrics to plot (records need an 'epoch' and at least one number)",
            hint="plot after the first epoch has been logged to metrics.jsonl",
        )
    names = sorted(series, key=lambda name: (name != "loss", name))
    cols = min(len(names), 3)
    rows = math.ceil(len(names) / cols)
    fig = Figure(figsize=(4.8 * cols, 3.6 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, name in zip(axes, names, strict=False):
        for split, (epochs, values) in sorted(
            series[name].items(), key=lambda kv: _split_order(kv[0])
        ):
            style = _SPLIT_STYLE.get(split, {"marker": "^"})
            label = split
            if split == "test" and marks is not None and marks.kept and marks.stopped_epoch:
                # the test split was scored on the restored weights: draw it at their epoch
                epochs = [marks.best_epoch if e == marks.stopped_epoch else e for e in epochs]
                label = f"test (epoch {marks.best_epoch}'s weights)"
            ax.plot(epochs, values, label=label, linewidth=1.8, **_marker_style(style, len(epochs)))
        if name == "loss" and _spans_decades(series[name]):
            ax.set_yscale("log")
        if marks is not None:
            _mark(ax, name, series[name], marks)
        _label(ax, name.replace("_", " "), "epoch", name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    legend = _shared_legend(axes[: len(names)])  # one legend under the panels, over no line
    fig.legend(
        legend.values(),
        legend.keys(),
        loc="outside lower center",
        ncols=min(len(legend), 3 if cols == 1 else 5),
        fontsize=_TICK,
        frameon=False,
    )
    fig.suptitle("Training curves", fontsize=_TITLE + 1, fontweight="bold")
    return _save(fig, path)


def plot_lr(records: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """The learning rate over training steps (epochs when records carry no step)."""
    points = [(r.get("step", r.get("epoch")), r["lr"]) for r in records if _is_number(r.get("lr"))]
    points = [(x, lr) for x, lr in points if _is_number(x)]
    if not points:
        raise DataError("no 'lr' values to plot", hint="log the learning rate in the metrics")
    by_x = dict(points)  # one value per step even when train and val records both carry it
    fig = Figure(figsize=(6, 3.6), layout="constrained")
    ax = fig.subplots()
    ax.plot(list(by_x), list(by_x.values()), color="#9467bd", linewidth=1.8, marker=".")
    xlabel = "step" if any("step" in r for r in records if "lr" in r) else "epoch"
    _label(ax, "Learning rate", xlabel, "learning rate")
    return _save(fig, path)


def plot_confusion_matrix(
    cm: Any, class_names: Sequence[str] | None, path: str | Path, normalize: bool = True
) -> Path:
    """A confusion matrix (rows: true class, columns: predicted), row-normalized by default."""
    counts = np.asarray(cm.cpu() if isinstance(cm, torch.Tensor) else cm, dtype=float)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ShapeError(
            f"confusion matrix must be square (classes x classes), got shape {counts.shape}",
            hint="pass sklearn.metrics.confusion_matrix(y_true, y_pred)",
        )
    n = counts.shape[0]
    names = [str(c) for c in class_names] if class_names is not None else [str(i) for i in range(n)]
    if len(names) != n:
        raise ShapeError(
            f"{len(names)} class names for a {n}x{n} confusion matrix",
            hint="give one name per class, in label order",
        )
    shown = counts
    if normalize:
        totals = counts.sum(axis=1, keepdims=True)
        shown = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    side = min(max(4.5, 0.45 * n + 2.5), 14)
    fig = Figure(figsize=(side + 1, side), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of true class" if normalize else "count")
    ax.set_xticks(range(n), names, rotation=45 if n > 5 else 0, ha="right" if n > 5 else "center")
    ax.set_yticks(range(n), names)
    ax.tick_params(labelsize=_TICK)
    if n <= 20:
        threshold = shown.max() / 2 if shown.size else 0
        for i in range(n):
            for j in range(n):
                text = f"{shown[i, j]:.2f}" if normalize else f"{int(counts[i, j])}"
                color = "white" if shown[i, j] > threshold else "#222222"
                ax.text(j, i, text, ha="center", va="center", fontsize=_TICK - 1, color=color)
    title = "Confusion matrix" + (" (normalized by true class)" if normalize else "")
    ax.set_title(title, fontsize=_TITLE)
    ax.set_xlabel("predicted class", fontsize=_LABEL)
    ax.set_ylabel("true class", fontsize=_LABEL)
    return _save(fig, path)


def plot_samples(
    images: torch.Tensor,
    labels: Sequence[int] | torch.Tensor,
    preds: Sequence[int] | torch.Tensor | None = None,
    class_names: Sequence[str] | None = None,
    path: str | Path | None = None,
    max_images: int = 64,
) -> Path:
    """A grid of images titled with their label (and prediction); wrong predictions in red.

    `images` is (N, C, H, W) or (N, H, W) in any value range (each image is rescaled to [0, 1]
    for display, so standardized inputs look right). One or three channels are drawn as they are;
    for other channel counts the first channel is shown.
    """
    if path is None:
        raise TypeError("plot_samples() needs a path to write the PNG to")
    x = torch.as_tensor(images).detach().cpu().float()
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() != 4:
        raise ShapeError(
            f"images must be (N, C, H, W) or (N, H, W), got shape {tuple(x.shape)}",
            hint="plot_samples draws image batches; flatten nothing before passing them",
        )
    truth = torch.as_tensor(labels).detach().cpu().reshape(-1).tolist()
    guess = None if preds is None else torch.as_tensor(preds).detach().cpu().reshape(-1).tolist()
    count = min(len(x), len(truth), max_images, len(guess) if guess is not None else len(x))
    cols = min(8, max(count, 1))
    rows = max(math.ceil(count / cols), 1)
    height = 1.8 * rows + 0.6
    # A fixed grid, not layout="constrained": its solver costs seconds on 64 titled axes.
    fig = Figure(figsize=(1.6 * cols, height))
    grid = {"left": 0.01, "right": 0.99, "bottom": 0.01, "top": 1 - 0.7 / height}
    axes = fig.subplots(rows, cols, squeeze=False, gridspec_kw=grid | {"hspace": 0.22}).ravel()
    wrong = 0
    for i, ax in enumerate(axes):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= count:
            ax.set_visible(False)
            continue
        _show_image(ax, x[i])
        title = _class_name(truth[i], class_names)
        color = "#222222"
        if guess is not None:
            is_wrong = guess[i] != truth[i]
            wrong += is_wrong
            color = "#c62828" if is_wrong else "#2e7d32"
            title = f"{title} → {_class_name(guess[i], class_names)}" if is_wrong else title
            for spine in ax.spines.values():
                spine.set_edgecolor(color)
                spine.set_linewidth(3 if is_wrong else 1)
        ax.set_title(title, fontsize=_TICK, color=color)
    heading = f"{count} samples"
    if guess is not None:
        heading += f": {wrong} wrong (red, label → prediction)"
    fig.suptitle(heading, y=1 - 0.12 / height, fontsize=_LABEL + 1, fontweight="bold")
    return _save(fig, path)


# ---------------------------------------------------------------------------- helpers
def _series(records: Sequence[dict[str, Any]]) -> dict[str, dict[str, tuple[list, list]]]:
    """{metric: {split: (epochs, values)}} from metrics records."""
    series: dict[str, dict[str, tuple[list, list]]] = {}
    for record in records:
        epoch = record.get("epoch")
        if not _is_number(epoch):
            continue
        for split, key, value in _split_keys(record):
            epochs, values = series.setdefault(key, {}).setdefault(split, ([], []))
            epochs.append(epoch)
            values.append(value)
    return series


def _split_keys(record: dict[str, Any]) -> list[tuple[str, str, float]]:
    """(split, metric, value) triples; a record without `split` is read Keras-style."""
    found = []
    for key, value in record.items():
        if key in NOT_METRICS or not _is_number(value):
            continue
        split = record.get("split")
        if split is None:
            prefix, _, rest = key.partition("_")
            split, key = (prefix, rest) if prefix in ("val", "test") and rest else ("train", key)
        found.append((str(split), key, float(value)))
    return found


def _mark(ax: Axes, name: str, by_split: dict[str, tuple[list, list]], marks: CurveMarks) -> None:
    """The best epoch (dotted green line, a ring on the monitored value) and the early stop
    (dashed grey line) on one panel."""
    if marks.best_epoch is not None:
        label = f"best {marks.monitor} (epoch {marks.best_epoch})"
        if marks.kept:
            label += ", weights kept"
        ax.axvline(marks.best_epoch, color=_BEST, linestyle=":", linewidth=1.6, label=label)
        split, monitored = split_monitor(marks.monitor or "")
        epochs, values = by_split.get(split, ([], []))
        if monitored == name and marks.best_epoch in epochs:
            ax.plot(
                marks.best_epoch,
                values[epochs.index(marks.best_epoch)],
                marker="o",
                markersize=13,
                markerfacecolor="none",
                markeredgecolor=_BEST,
                markeredgewidth=2,
                linestyle="none",
            )
    if marks.stopped_epoch is not None:
        ax.axvline(
            marks.stopped_epoch,
            color="#57606a",
            linestyle="--",
            linewidth=1.4,
            label=f"early stop (epoch {marks.stopped_epoch})",
        )


def _shared_legend(axes: Sequence[Axes]) -> dict[str, Any]:
    """{label: handle} over all panels, first seen first."""
    legend: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    return legend


def _split_order(split: str) -> int:
    return list(_SPLIT_STYLE).index(split) if split in _SPLIT_STYLE else len(_SPLIT_STYLE)


def _marker_style(style: dict[str, Any], points: int) -> dict[str, Any]:
    if points == 1:  # a lone point (e.g. the test score) would be invisible as a line
        return {**style, "linestyle": "none", "markersize": style.get("markersize", 8)}
    if points > 40:
        return {"color": style.get("color")}
    return {"markersize": 4, **style}


def _spans_decades(by_split: dict[str, tuple[list, list]]) -> bool:
    values = [v for _, ys in by_split.values() for v in ys if math.isfinite(v)]
    return bool(values) and min(values) > 0 and max(values) / min(values) > 100


def _show_image(ax: Axes, image: torch.Tensor) -> None:
    low, high = image.min(), image.max()
    image = (image - low) / (high - low) if high > low else torch.zeros_like(image)
    if image.shape[0] == 3:
        ax.imshow(image.permute(1, 2, 0).numpy())
    else:
        ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1)


def _class_name(index: Any, class_names: Sequence[str] | None) -> str:
    if class_names is not None and isinstance(index, int) and 0 <= index < len(class_names):
        return str(class_names[index])
    return str(index)


def _label(ax: Axes, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=_TITLE)
    ax.set_xlabel(xlabel, fontsize=_LABEL)
    ax.set_ylabel(ylabel, fontsize=_LABEL)
    ax.tick_params(labelsize=_TICK)
    ax.grid(alpha=0.3)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _save(fig: Figure, path: str | Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, facecolor="white")
    return atomic_write_bytes(path, buffer.getvalue())
