"""Read inputs for prediction from files (.npy, .csv, images) and turn outputs into answers."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from layerwise.data.convert import to_tensors
from layerwise.errors import DataError, ShapeError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".ppm", ".gif", ".tif", ".tiff"}


@dataclass
class PredictionInputs:
    """Rows ready for the model, and a name for each row (file name or row number)."""

    x: torch.Tensor
    names: list[str]


def read_inputs(
    paths: list[Path],
    input_shape: tuple[int, ...],
    pixel_stats: tuple[float, float] | None = None,
) -> PredictionInputs:
    """Read every path (a folder means the images in it) into one tensor shaped for the model.

    Image pixels are scaled to [0, 1] and, when the training data was standardised with
    `pixel_stats = (mean, std)`, standardised the same way. Arrays (.npy, .csv) are taken as
    they are: they must already be in the form the model was trained on.
    """
    mean, std = pixel_stats or (0.0, 1.0)
    tensors, names = [], []
    for path in _expand(paths):
        suffix = path.suffix.lower()
        if suffix == ".npy":
            x = _fit_rows(_load_npy(path), input_shape, path)
            tensors.append(x)
            names += [f"{path.name}[{i}]" for i in range(len(x))]
        elif suffix == ".csv":
            x = _fit_rows(_load_csv(path), input_shape, path)
            tensors.append(x)
            names += [f"{path.name}[{i}]" for i in range(len(x))]
        elif suffix in IMAGE_SUFFIXES:
            tensors.append((_load_image(path, input_shape).unsqueeze(0) - mean) / std)
            names.append(path.name)
        else:
            raise DataError(
                f"cannot read '{path}': unknown file type '{suffix or '(none)'}'",
                hint="give .npy, .csv or image files (.png, .jpg, .pgm …), or a folder of images",
            )
    return PredictionInputs(torch.cat(tensors), names)


def _expand(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise DataError(f"folder '{path}' holds no image files", hint="add .png/.jpg files")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"input '{path}' not found", hint="check the path")
    return files


def _load_npy(path: Path) -> torch.Tensor:
    """float32 rows; text, object or NaN-holding arrays are refused naming the file."""
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(
            f"cannot read '{path}' as a NumPy .npy file: {exc}",
            hint="save the inputs with numpy.save(path, array) (a numeric array)",
        ) from exc
    return to_tensors(array, name=f"inputs in '{path}'")[0]


def _load_csv(path: Path) -> torch.Tensor:
    """float32 rows, one per line of the table; text columns and NaN are refused by name."""
    try:
        frame = pd.read_csv(path)
    except (ValueError, OSError) as exc:
        raise DataError(
            f"cannot read '{path}' as CSV: {exc}",
            hint="give a table with a header line and one numeric column per input feature",
        ) from exc
    return to_tensors(frame, name=f"inputs in '{path}'")[0]


def _load_image(path: Path, input_shape: tuple[int, ...]) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    if len(input_shape) != 3:
        raise ShapeError(
            f"image '{path.name}' given, but the model takes inputs of shape {input_shape}",
            hint="images suit models trained on (channels, height, width) data",
        )
    channels, height, width = input_shape
    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB").resize((width, height))
            array = np.asarray(image, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"cannot read image '{path}': {exc}", hint="is the file complete?") from exc
    tensor = torch.from_numpy(array)
    return tensor.unsqueeze(0) if channels == 1 else tensor.permute(2, 0, 1)


def _fit_rows(x: torch.Tensor, input_shape: tuple[int, ...], source: Path) -> torch.Tensor:
    """Accept one sample or a batch, flattened or not, and reshape to (N, *input_shape)."""
    sample_size = math.prod(input_shape)
    if tuple(x.shape) == tuple(input_shape):
        return x.unsqueeze(0)
    if tuple(x.shape[1:]) == tuple(input_shape):
        return x
    per_row = x.shape[1:] if x.dim() > 1 else x.shape
    if math.prod(per_row) == sample_size:
        return x.reshape(-1, *input_shape)
    raise ShapeError(
        f"'{source.name}' holds an array of shape {tuple(x.shape)}, which does not fit the "
        f"model's input shape {tuple(input_shape)}",
        hint=f"give N rows of {sample_size} values or an array shaped "
        f"(N, {', '.join(map(str, input_shape))})",
    )


def top_predictions(
    logits: torch.Tensor, class_names: list[str] | None, k: int = 3
) -> list[list[tuple[str, float]]]:
    """For each row, the k most likely classes with their probabilities."""
    if logits.dim() == 1 or logits.shape[1] == 1:
        positive = torch.sigmoid(logits.reshape(-1))
        probabilities = torch.stack([1 - positive, positive], dim=1)
    else:
        probabilities = torch.softmax(logits, dim=1)
    k = min(k, probabilities.shape[1])
    values, indices = probabilities.topk(k, dim=1)
    names = class_names or [str(i) for i in range(probabilities.shape[1])]
    return [
        [(names[i], float(p)) for p, i in zip(row_p, row_i, strict=True)]
        for row_p, row_i in zip(values.tolist(), indices.tolist(), strict=True)
    ]
