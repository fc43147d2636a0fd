"""The doctor's plots, drawn from a `ProbeLog`: gradient flow, update ratios, activation histograms.

They show what the rules reason about, so a reader can check a finding by eye: a gradient-flow
heatmap that fades towards the first layers is vanishing gradients; update ratios far above
1e-3 are a learning rate that is too high; a histogram collapsing onto 0 is dying ReLUs. Built
like `report/plots.py`: `Figure` without pyplot, PNGs written atomically, the path returned.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from layerwise.diagnose.probe_log import PROBES_FILE, ProbeLog
from layerwise.errors import DataError
from layerwise.report.plots import _LABEL, _TICK, _TITLE, _label, _save

if TYPE_CHECKING:
    from layerwise.runs import Run

__all__ = [
    "plot_activation_histograms",
    "plot_gradient_flow",
    "plot_update_ratios",
    "write_doctor_plots",
]

HEALTHY_UPDATE_RATIO = 1e-3  # the usual rule of thumb for ‖ΔW‖/‖W‖ per step
_MAX_LEGEND_LAYERS = 20
# tab10 without its grey, olive and cyan, which are faint on white: 7 colours x 4 dash patterns
# give 28 distinct lines, and two layers of one colour never share a dash pattern.
_LINE_COLORS = [colormaps["tab10"](i) for i in (0, 1, 2, 3, 4, 5, 6)]
_DASHES = ["-", "--", "-.", ":"]


def write_doctor_plots(run: Run) -> list[Path]:
    """Gradient flow, update ratios and activation histograms from the run's probe log, in
    `run.plots_dir`; none when the run has no probe log or it has no sampled step."""
    path = run.path / PROBES_FILE
    if not path.exists():
        return []
    log = ProbeLog.load(path)
    if not log.steps:
        return []
    return [
        plot_gradient_flow(log, run.plots_dir / "gradient_flow.png"),
        plot_update_ratios(log, run.plots_dir / "update_ratios.png"),
        plot_activation_histograms(log, run.plots_dir / "activation_histograms.png"),
    ]


def plot_gradient_flow(log: ProbeLog, path: str | Path) -> Path:
    """Weight-gradient norm of every layer at every sampled step: a heatmap, layers top to bottom
    in model order, colour on a log scale, non-finite norms in red; the global norm above it."""
    _require_steps(log)
    layers = _layers_with(log, "grad_norm")
    if not layers:
        return _note(path, "Gradient flow", "no weight gradients were recorded")
    steps = [r["step"] for r in log.steps]
    grid = np.full((len(layers), len(steps)), np.nan)
    for row, name in enumerate(layers):
        for col, record in enumerate(log.steps):
            value = record["layers"].get(name, {}).get("grad_norm")
            if isinstance(value, int | float):
                grid[row, col] = value
    bad = ~np.isfinite(grid) & ~np.isnan(grid)  # inf; NaN cells are either missing or NaN
    bad |= _nan_recorded(log, layers, "grad_norm")
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.where(np.isfinite(grid) & (grid > 0), np.log10(grid), np.nan)
    edges = _edges(steps)

    height = min(2.4 + 0.24 * len(layers) + 1.2, 20)
    fig = Figure(figsize=(10, height), layout="constrained")
    top, heat = fig.subplots(2, 1, sharex=True, height_ratios=[2.0, max(2.0, 0.24 * len(layers))])
    total_steps, total = log.series(None, "grad_norm")
    finite = [(s, v) for s, v in zip(total_steps, total, strict=True) if math.isfinite(v) and v > 0]
    if finite:
        top.plot(*zip(*finite, strict=True), color="#1f77b4", marker=".", linewidth=1.5)
        top.set_yscale("log")
    _label(top, "Gradient flow", "", "global grad norm")

    cmap = colormaps["viridis"].with_extremes(bad="#dddddd", under="black")
    finite_logs = logs[np.isfinite(logs)]
    low, high = (finite_logs.min(), finite_logs.max()) if finite_logs.size else (0.0, 1.0)
    logs[grid == 0] = low - 1  # a zero gradient is drawn black, below the scale
    mesh = heat.pcolormesh(
        edges,
        np.arange(len(layers) + 1),
        np.ma.masked_invalid(logs),
        cmap=cmap,
        vmin=low,
        vmax=max(high, low + 1e-6),
    )
    if bad.any():
        heat.pcolormesh(
            edges,
            np.arange(len(layers) + 1),
            np.ma.masked_where(~bad, bad.astype(float)),
            cmap=ListedColormap(["#d62728"]),
        )
    # A short colour-bar label fits beside even a three-layer heatmap; the special colours go in
    # a legend under the figure instead of a long label that the figure edge would clip.
    bar = fig.colorbar(mesh, ax=heat, shrink=0.95, aspect=12)
    bar.set_label("log10 ‖∇W‖", fontsize=_LABEL)
    bar.ax.tick_params(labelsize=_TICK)
    fig.legend(
        handles=[
            Patch(facecolor="black", label="zero gradient"),
            Patch(facecolor="#d62728", label="inf / NaN"),
            Patch(facecolor="#dddddd", edgecolor="#999999", label="not recorded"),
        ],
        loc="outside lower center",
        ncols=3,
        fontsize=_TICK,
        frameon=False,
    )
    heat.set_yticks(np.arange(len(layers)) + 0.5, _layer_labels(log, layers))
    heat.invert_yaxis()  # first layer on top
    heat.tick_params(axis="y", labelsize=_TICK if len(layers) <= 30 else 6)
    heat.tick_params(axis="x", labelsize=_TICK)
    heat.set_xlabel("step", fontsize=_LABEL)
    return _save(fig, path)


def plot_update_ratios(log: ProbeLog, path: str | Path) -> Path:
    """‖ΔW‖/‖W‖ of every layer over the sampled steps, on a log scale, with 1e-3 marked: far
    above it the learning rate is likely too high, far below it too low."""
    _require_steps(log)
    layers = _layers_with(log, "update_ratio")
    if not layers:
        return _note(path, "Update ratios", "no weight updates were recorded")
    fig = Figure(figsize=(9, 4.8), layout="constrained")
    ax = fig.subplots()
    by_depth = len(layers) > _MAX_LEGEND_LAYERS
    for index, name in enumerate(layers):
        points = [
            (s, v)
            for s, v in zip(*log.series(name, "update_ratio"), strict=True)
            if math.isfinite(v) and v > 0
        ]
        if points:
            ax.plot(
                *zip(*points, strict=True),
                linewidth=1.6,
                label=f"{name} ({_layer_type(log, name)})",
                **_line_style(index, len(layers), by_depth),
            )
    ax.set_yscale("log")
    ax.axhline(HEALTHY_UPDATE_RATIO, color="#444444", linestyle=(0, (6, 3)), linewidth=1.4)
    ax.text(
        0.01,
        HEALTHY_UPDATE_RATIO,
        " 1e-3: typical",
        color="#444444",
        fontsize=_TICK,
        va="bottom",
        transform=ax.get_yaxis_transform(),
    )
    _label(ax, "Update ratio per layer (‖ΔW‖ / ‖W‖ per step)", "step", "update ratio")
    if by_depth:
        mappable = ax.scatter([], [], c=[], cmap="viridis", vmin=1, vmax=len(layers))
        fig.colorbar(mappable, ax=ax, label="layer (1 = first)")
    else:
        fig.legend(  # beside the plot, so that no line hides behind it
            loc="outside right upper",
            ncols=2 if len(layers) > 10 else 1,
            fontsize=_TICK - 1,
            title="layer",
            title_fontsize=_TICK - 1,
        )
    return _save(fig, path)


def plot_activation_histograms(
    log: ProbeLog, path: str | Path, epochs: Sequence[int] | None = None
) -> Path:
    """One panel per activation layer: its output histogram at the first and the last epoch
    (or at the given `epochs`) overlaid, as a share of outputs on a log scale, with the dead or
    saturated fraction of that step in the legend."""
    _require_steps(log)
    by_epoch = {h["epoch"]: h for h in log.hists}
    if not by_epoch:
        return _note(path, "Activation histograms", "no activation layers were probed")
    available = sorted(by_epoch)
    if epochs is None:
        chosen = sorted({available[0], available[-1]})
    else:
        missing = [e for e in epochs if e not in by_epoch]
        if missing:
            raise DataError(
                f"no activation histograms for epoch(s) {missing}",
                hint=f"the log has histograms for epochs {available}",
            )
        chosen = list(epochs)
    names = [n for n in log.layers() if any(n in by_epoch[e]["layers"] for e in chosen)]
    cols = min(len(names), 4)
    rows = math.ceil(len(names) / cols)
    fig = Figure(figsize=(3.6 * cols, 2.8 * rows + 0.5), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    colors = _epoch_colors(len(chosen))
    steps = {r["step"]: r for r in log.steps}
    for ax, name in zip(axes, names, strict=False):
        for epoch, color in zip(chosen, colors, strict=True):
            record = by_epoch[epoch]
            hist = record["layers"].get(name)
            if hist is None or not (math.isfinite(hist["lo"]) and math.isfinite(hist["hi"])):
                continue
            counts = np.asarray(hist["counts"], dtype=float)
            share = counts / max(counts.sum(), 1)
            lo = hist["lo"]
            hi = max(hist["hi"], lo + 1e-6 * max(abs(lo), 1.0))  # all values equal: a spike
            label = f"epoch {epoch}" + _unit_note(steps.get(record.get("step")), name)
            ax.stairs(
                np.where(share > 0, share, np.nan),
                np.linspace(lo, hi, len(counts) + 1),
                color=color,
                linewidth=1.6,
                label=label,
            )
        ax.set_yscale("log")
        ax.set_title(f"{name} ({_layer_type(log, name)})", fontsize=_LABEL)
        ax.tick_params(labelsize=_TICK - 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=_TICK - 2)
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    fig.supxlabel("activation value", fontsize=_LABEL)
    fig.supylabel("share of outputs", fontsize=_LABEL)
    fig.suptitle("Activation histograms", fontsize=_TITLE + 1, fontweight="bold")
    return _save(fig, path)


# ---------------------------------------------------------------------------- helpers
def _require_steps(log: ProbeLog) -> None:
    if not log.steps:
        raise DataError(
            "the probe log has no sampled steps to plot",
            hint="train for at least one step with Probes() in the callbacks",
        )


def _layers_with(log: ProbeLog, key: str) -> list[str]:
    """Layers (in model order) that have `key` in at least one step record."""
    return [n for n in log.layers() if any(key in r["layers"].get(n, {}) for r in log.steps)]


def _nan_recorded(log: ProbeLog, layers: list[str], key: str) -> np.ndarray:
    """Cells where the value was recorded and is NaN (as opposed to not recorded)."""
    return np.array(
        [[_is_nan(r["layers"].get(name, {}).get(key)) for r in log.steps] for name in layers],
        dtype=bool,
    )


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _edges(steps: list[int]) -> np.ndarray:
    """Cell edges halfway between sampled steps, so cells sit at their true steps."""
    points = np.asarray(steps, dtype=float)
    if len(points) == 1:
        return np.array([points[0] - 0.5, points[0] + 0.5])
    middle = (points[1:] + points[:-1]) / 2
    return np.concatenate(
        [[points[0] - (middle[0] - points[0])], middle, [points[-1] + (points[-1] - middle[-1])]]
    )


def _line_style(index: int, count: int, by_depth: bool) -> dict[str, Any]:
    """Up to `_MAX_LEGEND_LAYERS` layers get a distinct colour and dash pattern each, so lines
    can be told apart in colour or in grey; more layers are coloured by depth and read against a
    colour bar."""
    if by_depth:
        return {"color": colormaps["viridis"](index / max(count - 1, 1))}
    color = _LINE_COLORS[index % len(_LINE_COLORS)]
    return {"color": color, "linestyle": _DASHES[index % len(_DASHES)]}


def _layer_type(log: ProbeLog, name: str) -> str:
    for record in log.steps:
        if name in record["layers"]:
            return str(record["layers"][name].get("type", "?"))
    return "?"


def _layer_labels(log: ProbeLog, layers: list[str]) -> list[str]:
    return [f"{name} ({_layer_type(log, name)})" for name in layers]


def _unit_note(record: dict[str, Any] | None, name: str) -> str:
    stats = (record or {}).get("layers", {}).get(name, {})
    for key, word in (("dead_frac", "dead"), ("sat_frac", "saturated")):
        value = stats.get(key)
        if isinstance(value, int | float) and math.isfinite(value):
            return f" ({value:.0%} {word})"
    return ""


def _epoch_colors(count: int) -> list[Any]:
    if count <= 2:
        return ["#1f77b4", "#ff7f0e"][:count]
    return list(colormaps["plasma"](np.linspace(0, 0.85, count)))


def _note(path: str | Path, title: str, message: str) -> Path:
    """A figure that says why there is nothing to draw (a report keeps its layout)."""
    fig = Figure(figsize=(6, 2.2), layout="constrained")
    ax = fig.subplots()
    ax.axis("off")
    ax.set_title(title, fontsize=_TITLE)
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=_LABEL, color="#555555")
    return _save(fig, path)
