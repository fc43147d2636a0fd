"""Tables with numeric and categorical columns, from a CSV file or a pandas frame.

A `TableEncoder` is fitted on the training rows only and turns any frame with the same columns
into one float tensor per row, laid out as the `tabular_mlp` model reads it:

    [category codes (one column per categorical)] [scaled numbers] [missing-value indicators]

- Categories are numbered 1..K in sorted order of the training values; 0 is the slot for a
  category never seen in training (a new hospital, a typo), so new rows still get an answer.
  A missing category is a category of its own (`<missing>`) when training rows had it.
- Numbers are filled with the training median where missing, then standardised with the
  training mean and spread; a column that had missing values in training also gets a 0/1
  indicator column, so the model can learn that "not measured" means something.

The fitted numbers are saved with a run as `table.json`, so `layerwise predict RUN rows.csv`
applies exactly the training preprocessing to raw rows. Registered datasets: `csv_table` (a
user's CSV) and `fair` (statsmodels' affairs survey, a mixed table that needs no download).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from layerwise.data.bundle import DatasetBundle
from layerwise.data.files import read_csv_file
from layerwise.data.registry import DATASETS
from layerwise.data.split import split
from layerwise.errors import DataError, did_you_mean

TABLE_FILE = "table.json"
MISSING = "<missing>"
Task = Literal["classification", "regression"] | None


@dataclass
class TableEncoder:
    """The fitted preprocessing of a mixed table (see the module docstring for the layout)."""

    numeric: list[str]
    categorical: list[str]
    categories: dict[str, list[str]] = field(default_factory=dict)  # code k+1 = categories[k]
    fill: list[float] = field(default_factory=list)  # per numeric column: training median
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    indicators: list[str] = field(default_factory=list)  # numeric columns with a missing flag
    target: str | None = None
    task: str = "classification"
    class_names: list[str] = field(default_factory=list)

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(
        cls,
        frame: pd.DataFrame,
        numeric: list[str],
        categorical: list[str],
        source: str = "table",
    ) -> TableEncoder:
        """Fit on the training rows `frame` (only these numbers are used, never val or test);
        `source` names the table in errors."""
        encoder = cls(list(numeric), list(categorical))
        for column in categorical:
            encoder.categories[column] = sorted(set(_as_text(frame[column])))
        for column in numeric:
            values = _as_numbers(frame[column], column, source)
            missing = np.isnan(values)
            if missing.all():
                raise DataError(
                    f"{source}: numeric column '{column}' has no value in the training rows",
                    hint="drop the column, or give it as categorical",
                )
            median = float(np.median(values[~missing]))
            filled = np.where(missing, median, values)
            spread = float(filled.std())
            encoder.fill.append(median)
            encoder.mean.append(float(filled.mean()))
            encoder.std.append(spread if spread > 1e-12 else 1.0)
            if missing.any():
                encoder.indicators.append(column)
        return encoder

    @property
    def cardinalities(self) -> list[int]:
        """Embedding rows per categorical column: its training categories plus the unknown slot."""
        return [len(self.categories[c]) + 1 for c in self.categorical]

    @property
    def width(self) -> int:
        return len(self.categorical) + len(self.numeric) + len(self.indicators)

    @property
    def model_args(self) -> dict[str, Any]:
        """What `tabular_mlp` needs: the categorical cardinalities and how many columns follow."""
        return {
            "cardinalities": self.cardinalities,
            "num_numeric": len(self.numeric) + len(self.indicators),
        }

    # ------------------------------------------------------------------ applying
    def transform(self, frame: pd.DataFrame, source: str = "table") -> tuple[Tensor, list[str]]:
        """Rows of a frame with the training columns -> model inputs (N, width), and notes on
        what was unusual (unknown categories, missing numbers)."""
        absent = [c for c in (*self.categorical, *self.numeric) if c not in frame.columns]
        if absent:
            raise DataError(
                f"{source} lacks column(s) {', '.join(map(repr, absent[:5]))} that the model was "
                "trained on",
                hint=f"give every input column: {', '.join(self.categorical + self.numeric)}",
            )
        parts, notes = [], []
        for column in self.categorical:
            known = {value: code for code, value in enumerate(self.categories[column], start=1)}
            text = _as_text(frame[column])
            codes = np.array([known.get(value, 0) for value in text], dtype=np.float32)
            unknown = sorted({value for value in text if value not in known})
            if unknown:
                notes.append(
                    f"note: {source}: {int((codes == 0).sum())} row(s) have a '{column}' never "
                    f"seen in training ({', '.join(unknown[:3])}); they use the unknown slot"
                )
            parts.append(codes[:, None])
        numbers = (
            np.stack([_as_numbers(frame[c], c, source) for c in self.numeric], axis=1)
            if self.numeric
            else np.zeros((len(frame), 0))
        )
        missing = np.isnan(numbers)
        if missing.any():
            notes.append(
                f"note: {source}: {int(missing.sum())} missing number(s) filled with the "
                "training median"
            )
        numbers = np.where(missing, np.array(self.fill), numbers)
        parts.append(((numbers - np.array(self.mean)) / np.array(self.std)).astype(np.float32))
        flags = [missing[:, self.numeric.index(c)] for c in self.indicators]
        if flags:
            parts.append(np.stack(flags, axis=1).astype(np.float32))
        return torch.from_numpy(np.concatenate(parts, axis=1).astype(np.float32)), notes

    # ------------------------------------------------------------------ file
    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / TABLE_FILE
        path.write_text(json.dumps(asdict(self), indent=1), encoding="utf-8")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> TableEncoder | None:
        """The run folder's `table.json`, or None when the run was not trained on a table."""
        path = Path(folder) / TABLE_FILE
        if not path.exists():
            return None
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as exc:
            raise DataError(
                f"cannot read '{path}': {exc}", hint="train the run again to rewrite it"
            ) from exc

    def read_csv(self, path: str | Path) -> tuple[Tensor, list[str]]:
        """Raw rows from a CSV file with the training columns (a target column is ignored)."""
        path = Path(path)
        try:
            frame = pd.read_csv(path)
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read '{path}' as CSV: {exc}", hint="check the file") from exc
        return self.transform(frame, path.name)

    def read_labelled(self, path: str | Path) -> tuple[Tensor, Tensor, list[str]]:
        """Inputs, labels (as the run's class indices or float targets) and notes from a CSV
        file holding the training columns and the target column."""
        path = Path(path)
        x, notes = self.read_csv(path)
        frame = pd.read_csv(path)
        if self.target not in frame.columns:
            raise DataError(
                f"'{path.name}' has no label column '{self.target}'",
                hint=f"name the label column '{self.target}', as in the training file",
            )
        labels = frame[self.target]
        if self.task == "regression":
            values = pd.to_numeric(labels, errors="coerce")
            if values.isna().any():
                raise DataError(
                    f"'{path.name}': target '{self.target}' holds text or gaps",
                    hint="give a number in every row",
                )
            return x, torch.tensor(values.to_numpy(dtype=np.float32)), notes
        index = {name: i for i, name in enumerate(self.class_names)}
        text = _as_text(labels)
        unknown = sorted({value for value in text if value not in index})
        if unknown:
            raise DataError(
                f"'{path.name}' has labels the model does not know: {', '.join(unknown[:5])}",
                hint=f"the classes are: {', '.join(self.class_names)}",
            )
        return x, torch.tensor([index[value] for value in text]), notes


@dataclass(repr=False)
class TableBundle(DatasetBundle):
    """A `DatasetBundle` of encoded mixed-table rows plus the `table` encoder that made them."""

    table: TableEncoder | None = None

    @property
    def model_args(self) -> dict[str, Any]:
        return self.table.model_args if self.table is not None else {}


# ------------------------------------------------------------------------------ datasets
def table_bundle(
    frame: pd.DataFrame,
    target: str,
    *,
    numeric: list[str] | None = None,
    categorical: list[str] | None = None,
    drop: list[str] | None = None,
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    seed: int = 0,
    task: Task = None,
    name: str = "table",
) -> TableBundle:
    """Split a pandas frame into train/val/test (stratified for classes, fixed by `seed`), fit
    a `TableEncoder` on the training rows and encode every split with it.

    Column types are inferred unless given: text, category and boolean columns are categorical,
    the rest numeric. Columns in `drop` (identifiers, leaks) are not inputs. Text or boolean
    targets are classes (named after their sorted values); integer targets are classes unless
    `task: regression`; float targets are regression.
    """
    frame = frame.copy()
    frame.columns = [str(c) for c in frame.columns]
    columns = list(frame.columns)
    for column in [target, *(numeric or []), *(categorical or []), *(drop or [])]:
        if column not in columns:
            raise DataError(f"{name} has no column '{column}'", hint=did_you_mean(column, columns))
    labels = frame[target]
    if labels.isna().any():
        raise DataError(
            f"target column '{target}' of {name} has {int(labels.isna().sum())} missing values",
            hint="drop or fill the rows without a label",
        )
    inputs = [c for c in columns if c != target and c not in (drop or [])]
    categorical = (
        categorical
        if categorical is not None
        else [c for c in inputs if c not in (numeric or []) and not _is_numeric(frame[c])]
    )
    numeric = numeric if numeric is not None else [c for c in inputs if c not in categorical]
    if not categorical and not numeric:
        raise DataError(f"{name} has no input columns besides '{target}'", hint="add features")
    y, task, class_names = _targets(labels, task, name)
    index = torch.arange(len(frame))
    train_rows, test_rows = split(index, y, test_fraction, seed=seed, stratify=task != "regression")
    val_rows = None
    if val_fraction:
        train_rows, val_rows = split(
            *train_rows, val_fraction, seed=seed, stratify=task != "regression"
        )
    encoder = TableEncoder.fit(frame.iloc[train_rows[0].numpy()], numeric, categorical, name)
    encoder.target, encoder.task, encoder.class_names = target, task, class_names

    def encode(rows: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Tensor] | None:
        if rows is None:
            return None
        return encoder.transform(frame.iloc[rows[0].numpy()], name)[0], rows[1]

    return TableBundle(
        name=name,
        train=encode(train_rows),
        val=encode(val_rows),
        test=encode(test_rows),
        num_classes=len(class_names) if task == "classification" else 1,
        input_shape=(encoder.width,),
        class_names=class_names,
        task=task,
        table=encoder,
    )


@DATASETS.register("csv_table")
def csv_table(
    path: str | Path,
    target: str,
    numeric: list[str] | None = None,
    categorical: list[str] | None = None,
    drop: list[str] | None = None,
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    seed: int = 0,
    task: Task = None,
    sep: str = ",",
) -> TableBundle:
    """A CSV table with numeric and categorical columns and one `target` column (see
    `table_bundle` for the splits and the column types)."""
    file, frame = read_csv_file(path, sep)
    return table_bundle(
        frame,
        target,
        numeric=numeric,
        categorical=categorical,
        drop=drop,
        test_fraction=test_fraction,
        val_fraction=val_fraction,
        seed=seed,
        task=task,
        name=file.name,
    )


@DATASETS.register("fair")
def fair(test_fraction: float = 0.2, val_fraction: float = 0.1, seed: int = 0) -> TableBundle:
    """statsmodels' affairs survey (Fair, 1978; 6,366 women): did she have an affair (affairs >
    0)? Religiousness, occupation and the husband's occupation are categorical, the rest numeric.
    Needs statsmodels (`pip install statsmodels`, in the `timeseries` extra)."""
    return table_bundle(
        fair_frame(),
        "affair",
        categorical=["religious", "occupation", "occupation_husb"],
        test_fraction=test_fraction,
        val_fraction=val_fraction,
        seed=seed,
        name="fair",
    )


def fair_frame() -> pd.DataFrame:
    """The affairs table with the target `affair` (yes/no) in place of the count of affairs."""
    try:
        from statsmodels.datasets import fair as source
    except ImportError as exc:
        raise DataError(
            "dataset 'fair' needs statsmodels, which is not installed",
            hint="pip install statsmodels (or pip install 'layerwise[timeseries]')",
        ) from exc
    frame = source.load_pandas().data.copy()
    frame["affair"] = np.where(frame.pop("affairs") > 0, "yes", "no")
    for column in ("religious", "occupation", "occupation_husb"):
        frame[column] = frame[column].astype(int).astype(str)
    return frame


# ------------------------------------------------------------------------------ helpers
def _is_numeric(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)


def _as_text(column: pd.Series) -> list[str]:
    """Category values as text, a missing one as `<missing>` (so 1 and '1' are one category)."""
    return [_category(value) for value in column.tolist()]


def _category(value: Any) -> str:
    """A category value as text; 3.0 is '3' (a column with a gap is read as floats)."""
    if pd.isna(value):
        return MISSING
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _as_numbers(column: pd.Series, name: str, source: str = "table") -> np.ndarray:
    values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64, copy=True)
    text = column[np.isnan(values) & column.notna().to_numpy()]
    if len(text):
        raise DataError(
            f"{source}: numeric column '{name}' holds text ({text.iloc[0]!r})",
            hint=f"give '{name}' as categorical, or fix the value",
        )
    values[~np.isfinite(values)] = np.nan  # infinities are as unusable as a missing value
    return values


def _targets(labels: pd.Series, task: Task, name: str) -> tuple[Tensor, str, list[str]]:
    if task not in (None, "classification", "regression"):
        raise DataError(f"unknown task '{task}' for {name}", hint="classification or regression")
    floats = pd.api.types.is_float_dtype(labels)
    if task == "regression" or (task is None and floats):
        values = pd.to_numeric(labels, errors="coerce")
        if values.isna().any():
            raise DataError(
                f"target '{labels.name}' of {name} holds text but the task is regression",
                hint="use task: classification, or give numbers",
            )
        return torch.tensor(values.to_numpy(dtype=np.float32)), "regression", []
    codes, uniques = pd.factorize(labels, sort=True)
    return torch.from_numpy(codes.astype(np.int64)), "classification", [str(u) for u in uniques]
