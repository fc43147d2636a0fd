"""Pictures of explanations: maps over the input, a panel of all methods, first-layer filters,
feature maps, and tokens coloured by their attribution (PNG and an HTML snippet).

Figures are built on `matplotlib.figure.Figure` (never pyplot) and written atomically, as the
report's plots are. Inputs are shown contrast-stretched to [0, 1] (a standardised image looks as
its pixels did); unsigned maps (saliency, Grad-CAM) in `inferno` over the input, signed ones
(integrated gradients) in red for evidence for the class and blue for evidence against it.
"""

from __future__ import annotations

import html
import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from layerwise.runs.atomic import atomic_write_bytes, atomic_write_text

DPI = 110
MAX_FILTERS = 64
MAX_MAPS_PER_LAYER = 16
MAX_TOKENS_SHOWN = 400
LINE_CHARS = 120  # of 10 pt monospace on an 11-inch figure


def display_image(x: Tensor) -> np.ndarray:
    """(C, H, W) -> (H, W) or (H, W, 3) in [0, 1] for imshow (min-max stretched)."""
    x = x.detach().float().cpu()
    x = (x - x.min()) / (x.max() - x.min()).clamp(min=1e-12)
    return x[0].numpy() if x.shape[0] != 3 else x.permute(1, 2, 0).numpy()


def heat_of(attribution: Tensor, signed: bool) -> np.ndarray:
    """A (C, H, W) attribution -> (H, W): summed over channels when signed (integrated
    gradients add up), else the largest magnitude over channels."""
    a = attribution.detach().float().cpu()
    return (a.sum(0) if signed else a.abs().amax(0)).numpy()


def _draw_map(ax: Axes, image: np.ndarray, heat: np.ndarray, signed: bool) -> None:
    ax.imshow(image, cmap="gray", interpolation="nearest")
    if signed:
        limit = float(np.abs(heat).max()) or 1.0
        ax.imshow(heat, cmap="bwr", vmin=-limit, vmax=limit, alpha=0.6, interpolation="nearest")
    else:
        top = float(heat.max()) or 1.0
        ax.imshow(heat, cmap="inferno", vmin=0, vmax=top, alpha=0.55, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_map(image: np.ndarray, heat: np.ndarray, signed: bool, title: str, path: Path) -> Path:
    """One method's map over the input."""
    fig = Figure(figsize=(4.2, 4.6))
    ax = fig.add_subplot()
    _draw_map(ax, image, heat, signed)
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def plot_panel(
    image: np.ndarray, maps: dict[str, tuple[np.ndarray, bool]], title: str, path: Path
) -> Path:
    """The input, then each method's map beside it (`maps`: label -> (heat, signed))."""
    columns = 1 + len(maps)
    fig = Figure(figsize=(3.2 * columns, 3.8))
    axes = fig.subplots(1, columns, squeeze=False)[0]
    axes[0].imshow(image, cmap="gray", interpolation="nearest")
    axes[0].set_title("input (as the model saw it)", fontsize=10)
    axes[0].set_xticks([])
    axes[0].set_yticks([])
    for ax, (label, (heat, signed)) in zip(axes[1:], maps.items(), strict=True):
        _draw_map(ax, image, heat, signed)
        ax.set_title(label, fontsize=10)
    fig.suptitle(title, fontsize=12)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.03, top=0.8, wspace=0.08)
    return _save(fig, path)


def plot_filters(filters: Tensor, title: str, path: Path) -> Path:
    """A grid of first-layer filters, each (C, h, w) stretched on its own; diverging colours
    for one channel (positive red, negative blue), RGB for three."""
    count = min(len(filters), MAX_FILTERS)
    columns = min(8, count)
    rows = math.ceil(count / columns)
    fig = Figure(figsize=(1.3 * columns, 1.3 * rows + 0.6))
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for i, ax in enumerate(axes):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= count:
            ax.set_visible(False)
            continue
        f = filters[i].detach().float().cpu()
        if f.shape[0] == 3:
            ax.imshow(display_image(f), interpolation="nearest")
        else:
            w = f.mean(0).numpy()
            limit = float(np.abs(w).max()) or 1.0
            ax.imshow(w, cmap="bwr", vmin=-limit, vmax=limit, interpolation="nearest")
    fig.suptitle(title, fontsize=11)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.5 / (1.3 * rows + 0.6))
    return _save(fig, path)


def plot_feature_maps(layers: Sequence[tuple[str, Tensor]], title: str, path: Path) -> Path:
    """One row per conv layer: its first `MAX_MAPS_PER_LAYER` channels for this input."""
    columns = min(MAX_MAPS_PER_LAYER, max(len(maps) for _, maps in layers))
    fig = Figure(figsize=(1.1 * columns + 1.6, 1.25 * len(layers) + 0.6))
    axes = fig.subplots(len(layers), columns, squeeze=False)
    for row, (name, maps) in enumerate(layers):
        for col in range(columns):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            if col >= len(maps):
                ax.set_visible(False)
                continue
            ax.imshow(maps[col].detach().float().cpu().numpy(), cmap="viridis")
        axes[row, 0].set_ylabel(f"{name}\n{len(maps)} ch", fontsize=8, rotation=0, ha="right")
    fig.suptitle(title, fontsize=11)
    fig.subplots_adjust(left=0.14, right=0.99, bottom=0.01, top=1 - 0.5 / fig.get_figheight())
    return _save(fig, path)


def plot_tokens(tokens: Sequence[str], scores: Sequence[float], title: str, path: Path) -> Path:
    """The tokens in reading order, wrapped at `LINE_CHARS` characters of a monospace font,
    each on a box coloured by its attribution."""
    tokens, scores = list(tokens)[:MAX_TOKENS_SHOWN], list(scores)[:MAX_TOKENS_SHOWN]
    limit = max((abs(s) for s in scores), default=1.0) or 1.0
    places, x, row = [], 0, 0
    for token in tokens:
        width = len(token) + 1  # a space after each token
        if x and x + width > LINE_CHARS:
            x, row = 0, row + 1
        places.append((x, row))
        x += width
    lines = row + 1
    height = 0.36 * lines + 0.9
    fig = Figure(figsize=(11, height))
    ax = fig.add_axes((0.01, 0.01, 0.98, 1 - 0.7 / height))
    ax.set_axis_off()
    ax.set_xlim(0, LINE_CHARS + 2)
    ax.set_ylim(lines, 0)
    cmap = _diverging()
    for token, score, (x, row) in zip(tokens, scores, places, strict=True):
        ax.text(
            x + 0.3,
            row + 0.5,
            token,
            fontsize=10,
            va="center",
            family="monospace",
            bbox={
                "boxstyle": "round,pad=0.15",
                "facecolor": cmap(0.5 + 0.5 * score / limit),
                "edgecolor": "none",
            },
        )
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def tokens_html(tokens: Sequence[str], scores: Sequence[float], title: str) -> str:
    """A self-contained HTML snippet: the tokens on backgrounds coloured by attribution (red
    for the class, blue against), the value in each token's tooltip. Everything is escaped."""
    limit = max((abs(s) for s in scores), default=1.0) or 1.0
    cmap = _diverging()
    spans = []
    for token, score in zip(tokens, scores, strict=True):
        r, g, b, _ = (round(255 * c) for c in cmap(0.5 + 0.5 * score / limit))
        spans.append(
            f'<span style="background: rgb({r}, {g}, {b}); padding: 1px 3px; border-radius: 3px"'
            f' title="{score:+.4f}">{html.escape(token)}</span>'
        )
    return (
        '<div class="layerwise-explanation" style="font: 15px/1.9 sans-serif">\n'
        f"<p><strong>{html.escape(title)}</strong></p>\n<p>{' '.join(spans)}</p>\n</div>\n"
    )


def write_html(text: str, path: Path) -> Path:
    return atomic_write_text(path, text)


def _diverging():
    from matplotlib import colormaps

    return colormaps["bwr"]


def _save(fig: Figure, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, facecolor="white")
    return atomic_write_bytes(path, buffer.getvalue())
