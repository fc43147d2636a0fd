"""Pictures of a generator: sample grids, a latent interpolation strip, the Fréchet curve.

Grids are written pixel for pixel with Pillow (each 28x28 digit enlarged 2x, a 2-pixel grey
gutter), so a grid of 64 samples is a small PNG that shows exactly what the generator made.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

GUTTER, SCALE = 2, 2


def image_grid(images: torch.Tensor, columns: int | None = None) -> np.ndarray:
    """Images `(N, 1, H, W)` in [-1, 1] tiled into one uint8 array, `columns` wide (default:
    a square)."""
    n, _, h, w = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    pixels = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    canvas = np.full(
        (rows * (h + GUTTER) + GUTTER, columns * (w + GUTTER) + GUTTER), 96, dtype=np.uint8
    )
    for i in range(n):
        top = GUTTER + (i // columns) * (h + GUTTER)
        left = GUTTER + (i % columns) * (w + GUTTER)
        canvas[top : top + h, left : left + w] = pixels[i, 0].numpy()
    return canvas.repeat(SCALE, axis=0).repeat(SCALE, axis=1)


def save_grid(images: torch.Tensor, path: str | Path, columns: int | None = None) -> Path:
    """Write `images` as one grid PNG at `path` (folders are made)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image_grid(images, columns), mode="L").save(path)
    return path


def plot_frechet(
    epochs: list[int], values: list[float], floor: float | None, path: str | Path
) -> Path:
    """The Fréchet distance per epoch, with the real-vs-real floor as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ax.plot(epochs, values, marker="o", label="generated vs real")
    if floor is not None:
        ax.axhline(floor, color="grey", linestyle="--", label=f"real vs real ({floor:.2f})")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("Fréchet distance (judge features)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
