"""Turn whatever the user holds (tensors, arrays, frames, lists) into training-ready tensors.

Everything downstream (splits, batchers, the trainer, the doctor) sees exactly two kinds of
tensor: float32 inputs and int64 (classification) or float32 (regression) labels. Problems that
would otherwise surface as a NaN loss ten minutes later (mismatched rows, NaN/inf, text columns)
are caught here and named.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from layerwise.errors import DataError

_ACCEPTED = "a torch Tensor, a NumPy array, a pandas DataFrame/Series or a list"


def to_tensors(
    x: Any, y: Any = None, *, name: str = "inputs", allow_nonfinite: bool = False
) -> tuple[Tensor, Tensor | None]:
    """Convert inputs `x` and optional labels `y` to tensors ready to batch (device unchanged).

    Inputs become float32, except int64 torch tensors, which are kept as they are because that is
    how token ids reach an embedding layer. Integer and bool labels become int64 (classes); float
    labels stay float32 (regression). Tensors already in the right dtype are not copied.

    Raises `DataError` when `x` and `y` have different row counts, when `x` holds NaN/inf, when
    a DataFrame has non-numeric columns, or when `y` holds NaN/inf. Dataset loaders pass
    `allow_nonfinite=True` to keep NaN/inf inputs, so that the doctor can count them and
    `data.impute` can fill them; labels must be finite either way.

    Example:
        >>> x, y = to_tensors(np.zeros((4, 3)), [0, 1, 1, 0])
        >>> x.dtype, y.dtype
        (torch.float32, torch.int64)
    """
    columns = list(map(str, x.columns)) if isinstance(x, pd.DataFrame) else None
    xt = _inputs(x, name)
    if not allow_nonfinite:
        _check_finite(xt, name, columns)
    if y is None:
        return xt, None
    yt = _labels(y, "labels")
    if len(yt) != len(xt):
        raise DataError(
            f"{name} have {len(xt)} rows but labels have {len(yt)}",
            hint="give one label per input row; check that x and y were filtered or split together",
        )
    return xt, yt


def _inputs(x: Any, name: str) -> Tensor:
    if isinstance(x, Tensor) and x.dtype == torch.int64:
        t = x.detach()
    else:
        t = _as_tensor(x, name).detach().to(torch.float32)
    if t.dim() == 0 or len(t) == 0:
        raise DataError(
            f"{name} are empty (shape {tuple(t.shape)})",
            hint="pass at least one row; the first dimension indexes samples",
        )
    return t


def _labels(y: Any, name: str) -> Tensor:
    if isinstance(y, pd.DataFrame) and y.shape[1] == 1:
        y = y.iloc[:, 0]
    t = _as_tensor(y, name).detach()
    if t.dim() == 0:
        raise DataError(f"{name} are a single scalar", hint="pass one label per input row")
    if t.dtype == torch.bool or not (t.is_floating_point() or t.is_complex()):
        return t.to(torch.int64)
    t = t.to(torch.float32)
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        rows = bad.reshape(len(t), -1).any(dim=1).nonzero()
        raise DataError(
            f"{name} contain {int(bad.sum())} NaN/inf values (first in row {int(rows[0])})",
            hint="drop the rows without a label, or fill them, before training",
        )
    return t


def _as_tensor(obj: Any, name: str) -> Tensor:
    """Convert without copying when the source memory can be shared."""
    if isinstance(obj, Tensor):
        return obj
    if isinstance(obj, pd.DataFrame):
        text = [str(c) for c, kind in obj.dtypes.items() if not _numeric(kind)]
        if text:
            raise DataError(
                f"{name} have non-numeric columns: {', '.join(text)}",
                hint="encode them as numbers first (e.g. pandas.get_dummies or "
                "sklearn.preprocessing.OrdinalEncoder), or drop them",
            )
        arr = obj.to_numpy(dtype=np.float32, na_value=np.nan)
    elif isinstance(obj, pd.Series):
        if not _numeric(obj.dtype):
            raise DataError(
                f"{name} (Series '{obj.name}') are not numeric (dtype {obj.dtype})",
                hint="encode categories as integers, e.g. with pandas.factorize",
            )
        arr = obj.to_numpy()
    elif isinstance(obj, np.ndarray):
        arr = obj
    elif isinstance(obj, list | tuple):
        try:
            arr = np.asarray(obj)
        except ValueError as exc:
            raise DataError(
                f"{name} are a ragged list: {exc}", hint="every row must have the same length"
            ) from exc
    else:
        raise DataError(
            f"{name} must be {_ACCEPTED}, got {type(obj).__name__}",
            hint="convert it with numpy.asarray(...) or torch.as_tensor(...)",
        )
    if arr.dtype.kind not in "biuf":
        raise DataError(
            f"{name} are not numeric (dtype {arr.dtype})",
            hint="encode text or categories as numbers before training",
        )
    return torch.as_tensor(arr if arr.flags.writeable else arr.copy())


def _numeric(dtype: Any) -> bool:
    return pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)


def _check_finite(x: Tensor, name: str, columns: list[str] | None) -> None:
    if not x.is_floating_point():
        return
    bad = ~torch.isfinite(x)
    if not bool(bad.any()):
        return
    n_nan = int(torch.isnan(x).sum())
    n_inf = int(bad.sum()) - n_nan
    rows = bad.reshape(len(x), -1).any(dim=1).nonzero()
    counts = " and ".join(f"{n} {kind}" for n, kind in ((n_nan, "NaN"), (n_inf, "infinite")) if n)
    where = f"first in row {int(rows[0])}"
    if columns is not None and x.dim() == 2:
        cols = [columns[i] for i in bad.any(dim=0).nonzero().flatten().tolist()]
        where += f"; columns: {', '.join(cols)}"
    raise DataError(
        f"{name} contain {counts} values ({where})",
        hint="fill or drop missing values (e.g. sklearn.impute.SimpleImputer) and clip "
        "infinities before training",
    )
