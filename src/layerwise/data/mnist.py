"""MNIST read straight from torchvision's on-disk layout `<root>/MNIST/raw/`.

The idx files are parsed with NumPy (a 16-byte header, then raw bytes), which loads all 70,000
images in well under a second; nothing is downloaded or cached.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from layerwise.data.bundle import DatasetBundle
from layerwise.data.registry import DATASETS, data_root
from layerwise.data.split import split
from layerwise.errors import DataError

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049
# Mean and std of the 60,000 training images scaled to [0, 1].
MEAN, STD = 0.1307, 0.3081


@DATASETS.register("mnist")
def mnist(
    val_fraction: float = 0.0,
    seed: int = 0,
    subset: int | None = None,
    normalize: bool = True,
    flatten: bool = False,
    root: str | Path | None = None,
) -> DatasetBundle:
    """The 60,000/10,000 MNIST digits as float32 (N, 1, 28, 28), or (N, 784) with `flatten`.

    Pixels are scaled to [0, 1] and, with `normalize`, standardised with the training set's mean
    and std (0.1307, 0.3081). `val_fraction` holds out a stratified part of the training rows.
    `subset` keeps the first N training rows and the first N // 6 test rows, for quick tests.
    `root` defaults to `data_root()`.
    """
    folder = Path(root if root is not None else data_root()).expanduser() / "MNIST" / "raw"
    splits = {}
    for part, (images_name, labels_name) in FILES.items():
        rows = None if subset is None else (subset if part == "train" else max(subset // 6, 1))
        images = read_idx(_locate(folder, images_name), IMAGES_MAGIC, rows)
        labels = read_idx(_locate(folder, labels_name), LABELS_MAGIC, rows)
        if len(images) != len(labels) or images.shape[1:] != (28, 28):
            raise DataError(
                f"{folder / images_name} holds {len(images)} images of shape "
                f"{images.shape[1:]} but {labels_name} holds {len(labels)} labels",
                hint="the MNIST files are mismatched or corrupt; copy them again",
            )
        splits[part] = (
            _images(images, normalize, flatten),
            torch.from_numpy(labels.astype(np.int64)),
        )
    train, test = splits["train"], splits["test"]
    val = None
    if val_fraction:
        train, val = split(*train, val_fraction, seed=seed)
    return DatasetBundle(
        name="mnist",
        train=train,
        val=val,
        test=test,
        num_classes=10,
        input_shape=(784,) if flatten else (1, 28, 28),
        class_names=[str(d) for d in range(10)],
        pixel_stats=(MEAN, STD) if normalize else None,
    )


def _images(raw: np.ndarray, normalize: bool, flatten: bool) -> torch.Tensor:
    x = torch.from_numpy(raw.astype(np.float32))
    if normalize:  # (p / 255 - mean) / std in two in-place passes
        x.mul_(1.0 / (255.0 * STD)).sub_(MEAN / STD)
    else:
        x.div_(255.0)
    return x.reshape(len(x), -1) if flatten else x.unsqueeze(1)


def _locate(folder: Path, name: str) -> Path:
    for path in (folder / name, folder / f"{name}.gz"):
        if path.is_file():
            return path
    raise DataError(
        f"MNIST file not found: {folder / name} (nor {name}.gz)",
        hint=f"put {', '.join(n for pair in FILES.values() for n in pair)} (plain or .gz) in "
        f"{folder}/, or set LAYERWISE_DATA to a folder that contains MNIST/raw/",
    )


def read_idx(path: Path, magic: int, rows: int | None = None) -> np.ndarray:
    """Read an idx file of unsigned bytes (plain or gzipped), checking its header and size.

    `rows` keeps only the first rows; the whole file is still checked against its header.
    """
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read {path}: {exc}", hint="copy the file again") from exc
    header = np.frombuffer(data[:4], dtype=">u4")
    if len(header) != 1 or int(header[0]) != magic:
        found = f"0x{int(header[0]):08x}" if len(header) else "an empty file"
        raise DataError(
            f"{path} is not an idx file of the expected kind: magic number {found}, "
            f"expected 0x{magic:08x}",
            hint="the file is garbled or misnamed; copy the original MNIST file again",
        )
    ndim = magic & 0xFF
    dims = tuple(int(d) for d in np.frombuffer(data[4 : 4 + 4 * ndim], dtype=">u4"))
    offset = 4 + 4 * ndim
    expected = offset + int(np.prod(dims, dtype=np.int64)) if len(dims) == ndim else -1
    if len(data) != expected:
        raise DataError(
            f"{path} is truncated or corrupt: it has {len(data)} bytes, its header "
            f"{'promises ' + str(expected) if expected >= 0 else 'is incomplete'}",
            hint="copy the original file again (its size must match the header)",
        )
    take = dims[0] if rows is None else min(rows, dims[0])
    row_bytes = int(np.prod(dims[1:], dtype=np.int64))
    flat = np.frombuffer(data, dtype=np.uint8, count=take * row_bytes, offset=offset)
    return flat.reshape(take, *dims[1:])
