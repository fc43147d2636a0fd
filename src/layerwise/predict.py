"""Read inputs for prediction from files (.npy, .csv, images), arrays or PIL images, preprocessed
as the run's training data was (`layerwise.data.preprocess`), and turn outputs into answers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from layerwise.data.audio import AudioBundle, AudioFeatures
from layerwise.data.convert import to_tensors
from layerwise.data.mixed_table import TableEncoder
from layerwise.data.preprocess import ImageSpec, Preprocess
from layerwise.errors import DataError, LayerwiseError
from layerwise.experiment import load_experiment, run_preprocess
from layerwise.nn import check_input
from layerwise.runs import Run
from layerwise.tasks.speech import read_clips

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".ppm", ".gif", ".tif", ".tiff"}


@dataclass
class PredictionInputs:
    """Rows ready for the model, a name for each row (file name or row number), and notes on how
    the inputs were read (warnings when they do not look like the training data)."""

    x: torch.Tensor
    names: list[str]
    notes: list[str] = field(default_factory=list)


def read_inputs(
    items: Sequence[Any],
    preprocess: Preprocess | tuple[int, ...],
    pixel_stats: tuple[float, float] | None = None,
) -> PredictionInputs:
    """Read every input into one tensor for the model, preprocessed as the training data was.

    `items` are paths (a folder means the images in it: .npy, .csv and image files), arrays or
    tensors of raw rows, or PIL images. `preprocess` is the run's `Preprocess`; given a model
    input shape instead (and the `pixel_stats` images were standardised with), only the image
    pixels are scaled, as before runs saved their preprocessing.
    """
    if not isinstance(preprocess, Preprocess):
        preprocess = plain_preprocess(tuple(preprocess), pixel_stats)
    tensors, names, notes = [], [], []
    for number, item in enumerate(_expand(items)):
        if isinstance(item, Path):
            x, more = _read_file(item, preprocess)
            label = item.name
        elif hasattr(item, "getbands"):  # a PIL image
            pixels, more = preprocess.image_pixels(item, f"image {number}")
            x = preprocess.pixels_to_model(pixels, f"image {number}")
            label = f"image {number}"
        else:
            label = f"input {number}"
            x, more = preprocess.rows(item, label)
        tensors.append(x)
        notes += more
        one_image = hasattr(item, "getbands") or (
            isinstance(item, Path) and item.suffix.lower() in IMAGE_SUFFIXES
        )
        names += [label] if one_image else [f"{label}[{i}]" for i in range(len(x))]
    return PredictionInputs(torch.cat(tensors), names, notes)


def read_table_rows(table: TableEncoder, items: Sequence[Any]) -> PredictionInputs:
    """Raw rows of a mixed table (CSV files or pandas frames with the training columns),
    encoded with the run's saved `TableEncoder` (categories, medians, scaling)."""
    tensors, names, notes = [], [], []
    for number, item in enumerate(items):
        if isinstance(item, pd.DataFrame):
            label = f"input {number}"
            x, more = table.transform(item, label)
        else:
            path = Path(item)
            if path.suffix.lower() != ".csv" or not path.is_file():
                raise DataError(
                    f"input '{path}' is not a CSV file; this run was trained on a table",
                    hint="give .csv files with the training columns: "
                    + ", ".join(table.categorical + table.numeric),
                )
            label = path.name
            x, more = table.read_csv(path)
        tensors.append(x)
        notes += more
        names += [f"{label}[{i}]" for i in range(len(x))]
    return PredictionInputs(torch.cat(tensors), names, notes)


def plain_preprocess(
    input_shape: tuple[int, ...], pixel_stats: tuple[float, float] | None = None
) -> Preprocess:
    """No fitted fixes: rows go to the model as they are; images are read as pixels in [0, 1],
    standardised with `pixel_stats` when given."""
    image = None
    if len(input_shape) == 3:
        image = ImageSpec(*input_shape)
        if pixel_stats is not None:
            image.loader_mean, image.loader_std = pixel_stats
    return Preprocess(input_shape=list(input_shape), raw_shape=list(input_shape), image=image)


def read_labelled(
    path: Path, target: str, class_names: list[str], task: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw inputs and labels of a labelled file: a .csv with the `target` column, or an .npz
    with arrays `x` and `y`. Text labels are matched to the run's class names."""
    suffix = path.suffix.lower()
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                x, y = archive["x"], archive["y"]
        except (OSError, ValueError, KeyError, EOFError) as exc:
            raise DataError(
                f"cannot read arrays x and y from '{path}': {exc}",
                hint="save them with numpy.savez(path, x=inputs, y=labels)",
            ) from exc
        if y.ndim != 1:
            raise DataError(
                f"'{path.name}' has labels y of shape {y.shape}: give one label per row",
                hint="save the labels as a 1-D array: numpy.savez(path, x=inputs, y=labels)",
            )
        labels = pd.Series(y)
        inputs = x
    elif suffix == ".csv":
        frame = _read_table(path)
        if target not in frame.columns:
            raise DataError(
                f"'{path.name}' has no label column '{target}' (columns: "
                f"{', '.join(map(str, frame.columns[:8]))})",
                hint=f"name the label column '{target}', as in the training file",
            )
        labels, inputs = frame[target], frame.drop(columns=[target])
    else:
        raise DataError(
            f"cannot evaluate on '{path.name}': give a .csv with a '{target}' column or an .npz "
            "with arrays x and y",
            hint="labelled files only: predict takes unlabelled ones",
        )
    if task == "classification" and not pd.api.types.is_numeric_dtype(labels):
        unknown = sorted(set(map(str, labels)) - set(class_names))
        if unknown:
            raise DataError(
                f"'{path.name}' has labels the model does not know: {', '.join(unknown[:5])}",
                hint=f"the classes are: {', '.join(class_names)}",
            )
        labels = labels.map({name: i for i, name in enumerate(class_names)})
    y = torch.as_tensor(np.array(labels.to_numpy()))
    y = y.float() if task == "regression" else y.long()
    x = to_tensors(inputs, name=f"inputs in '{path}'", allow_nonfinite=True)[0]
    return x, y


def _read_file(path: Path, preprocess: Preprocess) -> tuple[torch.Tensor, list[str]]:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return preprocess.rows(_load_npy(path), path.name)
    if suffix == ".csv":
        frame = _read_table(path)
        notes = []
        width = int(np.prod(preprocess.raw_shape))
        extra = [c for c in frame.columns if str(c).lower() in ("label", "target", "class", "y")]
        if frame.shape[1] == width + 1 and extra:
            frame = frame.drop(columns=extra[:1])
            notes.append(f"note: {path.name}: column '{extra[0]}' left out (a label, not an input)")
        x, more = preprocess.rows(
            to_tensors(frame, name=f"inputs in '{path}'", allow_nonfinite=True)[0], path.name
        )
        return x, notes + more
    if suffix in IMAGE_SUFFIXES:
        return preprocess.image_file(path)
    raise DataError(
        f"cannot read '{path}': unknown file type '{suffix or '(none)'}'",
        hint="give .npy, .csv or image files (.png, .jpg, .pgm …), or a folder of images",
    )


def _expand(items: Sequence[Any]) -> list[Any]:
    found: list[Any] = []
    for item in items:
        if not isinstance(item, str | Path):
            found.append(item)
            continue
        path = Path(item)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise DataError(f"folder '{path}' holds no image files", hint="add .png/.jpg files")
            found += files
        elif path.is_file():
            found.append(path)
        else:
            raise DataError(f"input '{path}' not found", hint="check the path")
    return found


def predict_boxes(
    run: Run, inputs: Sequence[Any], which: str = "last"
) -> list[tuple[str, list[tuple[str, float, list[float]]], Path]]:
    """For a detection run: per image file (folders expanded), its name, its boxes
    `(class, score, [x0, y0, x1, y1])` and the annotated copy written next to the run."""
    from layerwise.tasks.detection import predict_scenes

    paths = [Path(item) for item in _expand(list(inputs))]
    boxes, drawn = predict_scenes(run, paths, which)
    return [(p.name, b, d) for p, b, d in zip(paths, boxes, drawn, strict=True)]


def _load_npy(path: Path) -> torch.Tensor:
    """float32 rows; text or object arrays are refused naming the file (NaN is left for the
    run's imputation, or refused by it)."""
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(
            f"cannot read '{path}' as a NumPy .npy file: {exc}",
            hint="save the inputs with numpy.save(path, array) (a numeric array)",
        ) from exc
    return to_tensors(array, name=f"inputs in '{path}'", allow_nonfinite=True)[0]


def _read_table(path: Path) -> pd.DataFrame:
    """A CSV table; one whose first line is numbers has no header and is read as data."""
    try:
        frame = pd.read_csv(path)
        if len(frame.columns) and all(_is_number(c) for c in frame.columns):
            frame = pd.read_csv(path, header=None)
    except (ValueError, OSError) as exc:
        raise DataError(
            f"cannot read '{path}' as CSV: {exc}",
            hint="give a table with one numeric column per input feature",
        ) from exc
    return frame


def _is_number(text: Any) -> bool:
    try:
        float(str(text))
    except ValueError:
        return False
    return True


def top_predictions(
    logits: torch.Tensor, class_names: list[str] | None, k: int = 3
) -> list[list[tuple[str, float]]]:
    """For each row, the k most likely classes with their probabilities."""
    if k < 1:
        raise LayerwiseError(
            f"--top-k is {k}: it must be at least 1", hint="e.g. --top-k 3 (the default)"
        )
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


def evaluate_file(
    run_ref: str | Path,
    path: str | Path,
    which: str = "last",
    runs_root: str | Path = "runs",
) -> tuple[Run, dict[str, float], list[str]]:
    """Loss and metrics of a run's weights on a new labelled file (.csv with the training target
    column, or .npz with arrays x and y), raw as the training file was: the run's
    preprocessing is applied. Returns the run, the metrics and notes on the inputs."""
    run = Run.open(run_ref, root=runs_root)
    experiment = load_experiment(run, which)
    recipe, data = experiment.recipe, experiment.data
    table = TableEncoder.load(run.path)
    if table is not None:  # a mixed table: columns by name through its saved encoder
        inputs, y, notes = table.read_labelled(Path(path))
    else:
        target = recipe.data.args.get("target", "label")
        x, y = read_labelled(Path(path), target, data.class_names, data.task)
        inputs, notes = run_preprocess(run).rows(x, Path(path).name)
    metrics = experiment.trainer.evaluate((inputs, y))
    run.append_metrics({"split": Path(path).name, "eval": which, **metrics})
    return run, metrics, notes


def predict_run(
    run_ref: str | Path,
    inputs: Sequence[Any],
    which: str = "last",
    runs_root: str | Path = "runs",
    top_k: int = 3,
) -> tuple[list[str], list[list[tuple[str, float]]], list[str]]:
    """Predict with a run's weights from raw inputs: files (.npy, .csv, images or folders of
    images; audio files or folders of them for a speech run), arrays or PIL images,
    preprocessed as the training data was.

    Returns a name per input row, its `top_k` classes with probabilities, and notes on how the
    inputs were read (warnings when they do not look like the training data).

    Example:
        >>> names, ranked, notes = predict_run("wine_mlp", ["new_wines.csv"])  # doctest: +SKIP
    """
    run = Run.open(run_ref, root=runs_root)
    features = AudioFeatures.load(run.path)
    if features is not None:  # a speech run: clips through its saved log-mel settings
        experiment = load_experiment(run, which, data=AudioBundle.from_features(features))
        batch = PredictionInputs(*read_clips(features, list(inputs)))
    elif (table := TableEncoder.load(run.path)) is not None:  # a mixed table's raw rows
        experiment = load_experiment(run, which)
        batch = read_table_rows(table, list(inputs))
    else:
        experiment = load_experiment(run, which)
        batch = read_inputs(list(inputs), run_preprocess(run))
    check_input(experiment.model, batch.x[:1])  # a ShapeError naming the layer, not a traceback
    logits = experiment.trainer.predict(batch.x)
    if experiment.data.task == "regression" and logits.reshape(len(logits), -1).shape[1] == 1:
        # one number per row: the predicted value itself, not a class probability
        values = [[("value", float(v))] for v in logits.reshape(-1).tolist()]
        return batch.names, values, batch.notes
    return batch.names, top_predictions(logits, experiment.data.class_names, top_k), batch.notes
