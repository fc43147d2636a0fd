"""Datasets from the user's own files: NumPy `.npz` archives and CSV tables.

Relative paths are looked up in the current folder, then in `data_root()`. Rows are split into
train/val/test by fractions (stratified for classes, fixed by `seed`). Missing (NaN) and infinite
inputs are kept, so the doctor can report them and `data.impute` can fill them; training refuses
them until they are filled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from torch import Tensor

from layerwise.data.bundle import DatasetBundle
from layerwise.data.convert import to_tensors
from layerwise.data.registry import DATASETS, data_root
from layerwise.data.split import split
from layerwise.errors import DataError, did_you_mean

Task = Literal["classification", "regression"] | None


@DATASETS.register("npz")
def npz(
    path: str | Path,
    x: str = "x",
    y: str = "y",
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    seed: int = 0,
    task: Task = None,
    class_names: list[str] | None = None,
) -> DatasetBundle:
    """Arrays `x` and `y` from an `.npz` archive.

    A Keras-style archive (`x_train`, `y_train`, `x_test`, `y_test`) keeps its own test split.
    The task is inferred from the labels (integers: classification, floats: regression) unless
    given.
    """
    file = resolve_path(path)
    try:
        archive = np.load(file, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"cannot read {file}: {exc}", hint="save it with numpy.savez") from exc
    with archive:
        keys = list(archive.files)
        if x not in keys and f"{x}_train" in keys:
            train = (_array(archive, f"{x}_train", file), _array(archive, f"{y}_train", file))
            test = None
            if f"{x}_test" in keys:
                test = (_array(archive, f"{x}_test", file), _array(archive, f"{y}_test", file))
        else:
            train, test = (_array(archive, x, file), _array(archive, y, file)), None
    return _bundle(file.name, train, test, test_fraction, val_fraction, seed, task, class_names)


@DATASETS.register("csv")
def csv(
    path: str | Path,
    target: str = "label",
    features: list[str] | None = None,
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    seed: int = 0,
    task: Task = None,
    sep: str = ",",
) -> DatasetBundle:
    """A table with one `target` column; every other column (or `features`) is an input.

    Text labels become classes named after their values (sorted); numeric columns only as inputs.
    """
    file, frame = read_csv_file(path, sep)
    columns = [str(c) for c in frame.columns]
    frame.columns = columns
    for column in [target, *(features or [])]:
        if column not in columns:
            raise DataError(f"{file} has no column '{column}'", hint=did_you_mean(column, columns))
    labels = frame[target]
    missing = labels.isna().to_numpy()
    if missing.any():
        raise DataError(
            f"target column '{target}' of {file} has {int(missing.sum())} missing values "
            f"(first in row {int(missing.argmax())})",
            hint="drop or fill the rows without a label",
        )
    class_names = None
    if not pd.api.types.is_numeric_dtype(labels) or pd.api.types.is_bool_dtype(labels):
        codes, uniques = pd.factorize(labels, sort=True)
        labels, class_names = codes, [str(u) for u in uniques]
        task = task or "classification"
    inputs = frame[features] if features else frame.drop(columns=[target])
    xt, yt = to_tensors(inputs, labels, name=f"inputs from {file.name}", allow_nonfinite=True)
    return _bundle(file.name, (xt, yt), None, test_fraction, val_fraction, seed, task, class_names)


def resolve_path(path: str | Path) -> Path:
    """The file at `path`, or relative to `data_root()`; `DataError` naming both when absent."""
    given = Path(path).expanduser()
    if given.is_file():
        return given
    if not given.is_absolute() and (data_root() / given).is_file():
        return data_root() / given
    where = given if given.is_absolute() else f"{Path.cwd() / given} or {data_root() / given}"
    raise DataError(
        f"data file not found: {where}",
        hint="check the path; relative paths are looked up in the current folder, then in "
        "LAYERWISE_DATA",
    )


def read_csv_file(path: str | Path, sep: str = ",") -> tuple[Path, pd.DataFrame]:
    """The file `path` resolves to (see `resolve_path`) and its table; a file pandas cannot
    parse is a `DataError` naming it."""
    file = resolve_path(path)
    try:
        return file, pd.read_csv(file, sep=sep)
    except (OSError, ValueError) as exc:
        raise DataError(
            f"cannot read {file} as CSV: {exc}", hint="check the file and `sep`"
        ) from exc


def _array(archive: Any, key: str, file: Path) -> np.ndarray:
    if key not in archive.files:
        raise DataError(f"{file} has no array '{key}'", hint=did_you_mean(key, archive.files))
    try:
        return archive[key]
    except ValueError as exc:  # object arrays need pickle, which we refuse to load
        raise DataError(
            f"cannot read array '{key}' of {file}: {exc}",
            hint="store numeric arrays (object arrays are not loaded, for safety)",
        ) from exc


def _bundle(
    name: str,
    train: tuple[Any, Any],
    test: tuple[Any, Any] | None,
    test_fraction: float,
    val_fraction: float,
    seed: int,
    task: Task,
    class_names: list[str] | None,
) -> DatasetBundle:
    if task not in (None, "classification", "regression"):
        raise DataError(
            f"unknown task '{task}' for {name}", hint="use 'classification' or 'regression'"
        )
    x, y = to_tensors(*train, name=f"inputs from {name}", allow_nonfinite=True)
    task = task or ("regression" if y.is_floating_point() else "classification")
    train_part = (x, _labels(y, task, name))
    if test is None:
        train_part, test_part = split(*train_part, test_fraction, seed=seed)
    else:
        xt, yt = to_tensors(*test, name=f"test inputs from {name}", allow_nonfinite=True)
        test_part = (xt, _labels(yt, task, name))
    val = None
    if val_fraction:
        train_part, val = split(*train_part, val_fraction, seed=seed)
    if task == "regression":
        num_classes, class_names = (1 if y.dim() == 1 else int(np.prod(y.shape[1:]))), []
    else:
        num_classes = int(max(part[1].max() for part in (train_part, val, test_part) if part)) + 1
        class_names = class_names or [str(c) for c in range(num_classes)]
        if len(class_names) < num_classes:
            raise DataError(
                f"{name} has labels up to {num_classes - 1} but only {len(class_names)} "
                "class names",
                hint="give one name per class, in label order",
            )
    return DatasetBundle(
        name=name,
        train=train_part,
        val=val,
        test=test_part,
        num_classes=num_classes,
        input_shape=tuple(x.shape[1:]),
        class_names=list(class_names),
        task=task,
    )


def _labels(y: Tensor, task: str, name: str) -> Tensor:
    if task == "regression":
        return y.float()
    if y.is_floating_point():
        if not bool((y == y.round()).all()):
            raise DataError(
                f"labels of {name} are fractional but the task is classification",
                hint="use task: regression, or give integer class labels",
            )
        y = y.long()
    if bool((y < 0).any()):
        raise DataError(
            f"labels of {name} include negative classes (min {int(y.min())})",
            hint="number the classes 0, 1, 2, ...",
        )
    return y
