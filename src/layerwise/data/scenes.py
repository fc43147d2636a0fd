"""Detection scenes made of MNIST digits: 2-6 digits on a 128x128 canvas, a box and class each.

A scene is generated from its own random stream, `numpy.random.default_rng((seed, split, i))`,
so it depends only on the seed, its split and its index: asking for more scenes keeps the first
ones as they were, and two machines build the same data. Train and validation scenes take their
digits from MNIST's 60,000 training images, test scenes from the 10,000 test images, so no test
digit was ever seen in training.

Each digit is cut to its ink (pixels of at least `INK` out of 255), scaled to a random height
(`min_height` to `max_height` pixels, aspect kept), and faint pixels the resize spread out are set
to 0: a box is then exactly the bounding box of the digit's non-zero pixels, `[x0, y0, x1, y1)`
in pixel edges (x1 and y1 one past the last inked column and row). Digits are placed where their
box, grown by `gap` pixels, touches no earlier box; a digit that finds no room in 50 tries is left
out, so a crowded scene can hold fewer digits than drawn (rare with the defaults).

A split is `(images, targets)`: `images` uint8 `(N, 1, 128, 128)` (kept as bytes: 16 KB a scene),
`targets` float32 `(N, MAX_DIGITS, 5)` rows of `[class, x0, y0, x1, y1]`, padded with class -1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from layerwise.data.bundle import DatasetBundle
from layerwise.data.mnist import FILES, IMAGES_MAGIC, LABELS_MAGIC, _locate, read_idx
from layerwise.data.registry import DATASETS, data_root
from layerwise.errors import DataError

CANVAS = 128
MIN_DIGITS, MAX_DIGITS = 2, 6
INK = 64  # of 255: what counts as ink when a digit is cut and after it is scaled
PLACEMENT_TRIES = 50
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


@dataclass(repr=False)
class SceneBundle(DatasetBundle):
    """A `DatasetBundle` of detection scenes (see the module docstring for the split layout)."""

    canvas: int = CANVAS


def scene_targets(targets: Tensor) -> list[dict[str, Tensor]]:
    """`(N, MAX_DIGITS, 5)` padded rows -> one `{"boxes": (K, 4) float, "labels": (K,) int64}`
    per scene, as torchvision's detectors and torchmetrics take them."""
    out = []
    for rows in targets:
        real = rows[rows[:, 0] >= 0]
        out.append({"boxes": real[:, 1:].float(), "labels": real[:, 0].long()})
    return out


def generate_scenes(
    digits: np.ndarray,
    labels: np.ndarray,
    count: int,
    *,
    seed: int = 0,
    split: str = "train",
    min_height: int = 14,
    max_height: int = 40,
    gap: int = 2,
) -> tuple[Tensor, Tensor]:
    """`count` scenes drawn from `digits` (uint8 `(M, 28, 28)`) and their `labels`; see the
    module docstring. Scene `i` is the same for any `count > i`."""
    if not 4 <= min_height <= max_height <= CANVAS // 2:
        raise DataError(
            f"digit heights {min_height}..{max_height} are out of range",
            hint=f"use 4 <= min_height <= max_height <= {CANVAS // 2}",
        )
    images = np.zeros((count, 1, CANVAS, CANVAS), np.uint8)
    targets = np.full((count, MAX_DIGITS, 5), -1.0, np.float32)
    for index in range(count):
        rng = np.random.default_rng((seed, SPLIT_CODES[split], index))
        wanted = int(rng.integers(MIN_DIGITS, MAX_DIGITS + 1))
        placed: list[tuple[int, int, int, int]] = []
        for _ in range(wanted):
            pick = int(rng.integers(len(digits)))
            patch = _scaled_digit(digits[pick], int(rng.integers(min_height, max_height + 1)))
            spot = _free_spot(rng, patch.shape, placed, gap)
            if spot is None:
                continue
            y0, x0 = spot
            h, w = patch.shape
            region = images[index, 0, y0 : y0 + h, x0 : x0 + w]
            np.maximum(region, patch, out=region)
            targets[index, len(placed)] = (labels[pick], x0, y0, x0 + w, y0 + h)
            placed.append((x0, y0, x0 + w, y0 + h))
    return torch.from_numpy(images), torch.from_numpy(targets)


def _scaled_digit(digit: np.ndarray, height: int) -> np.ndarray:
    """The digit cut to its ink, scaled to `height` rows (aspect kept), faint pixels zeroed and
    cut again, so its array is exactly its ink's bounding box."""
    patch = _ink_crop(digit)
    width = max(2, round(patch.shape[1] * height / patch.shape[0]))
    scaled = np.asarray(Image.fromarray(patch).resize((width, height), Image.BILINEAR))
    scaled = np.where(scaled >= INK, scaled, 0).astype(np.uint8)
    return _ink_crop(scaled)


def _ink_crop(image: np.ndarray) -> np.ndarray:
    rows = np.flatnonzero((image >= INK).any(1))
    cols = np.flatnonzero((image >= INK).any(0))
    return image[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _free_spot(
    rng: np.random.Generator,
    shape: tuple[int, int],
    placed: list[tuple[int, int, int, int]],
    gap: int,
) -> tuple[int, int] | None:
    """A top-left `(y, x)` where a `shape` patch, grown by `gap`, overlaps no placed box."""
    h, w = shape
    for _ in range(PLACEMENT_TRIES):
        y, x = int(rng.integers(CANVAS - h + 1)), int(rng.integers(CANVAS - w + 1))
        if all(
            x + w + gap <= bx0 or bx1 + gap <= x or y + h + gap <= by0 or by1 + gap <= y
            for bx0, by0, bx1, by1 in placed
        ):
            return y, x
    return None


def read_mnist(part: str, root: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """MNIST's `train` or `test` digits (uint8 `(M, 28, 28)`) and labels."""
    folder = Path(root if root is not None else data_root()).expanduser() / "MNIST" / "raw"
    images_name, labels_name = FILES[part]
    images = read_idx(_locate(folder, images_name), IMAGES_MAGIC)
    labels = read_idx(_locate(folder, labels_name), LABELS_MAGIC)
    return images, labels


@DATASETS.register("mnist_scenes")
def mnist_scenes(
    train_size: int = 10000,
    val_size: int = 500,
    test_size: int = 1000,
    seed: int = 0,
    min_height: int = 14,
    max_height: int = 40,
    root: str | Path | None = None,
) -> SceneBundle:
    """Detection scenes of 2-6 MNIST digits on a 128x128 canvas (see the module docstring).

    Train and validation scenes use MNIST's training digits, test scenes its test digits.
    `min_height`/`max_height` bound a digit's height in pixels; `root` defaults to `data_root()`.
    """
    sizes = {"train_size": train_size, "val_size": val_size, "test_size": test_size}
    for name, size in sizes.items():
        if size < 0 or (name == "train_size" and size < 1):
            raise DataError(f"{name} is {size}", hint="give a number of scenes (train_size >= 1)")
    train_digits, test_digits = read_mnist("train", root), read_mnist("test", root)
    common = {"seed": seed, "min_height": min_height, "max_height": max_height}
    train = generate_scenes(*train_digits, train_size, split="train", **common)
    val = generate_scenes(*train_digits, val_size, split="val", **common) if val_size else None
    test = generate_scenes(*test_digits, test_size, split="test", **common) if test_size else None
    return SceneBundle(
        name="mnist_scenes",
        train=train,
        val=val,
        test=test,
        num_classes=10,
        input_shape=(1, CANVAS, CANVAS),
        class_names=[str(d) for d in range(10)],
    )
