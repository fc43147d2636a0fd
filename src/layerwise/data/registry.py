"""The dataset registry and where datasets live on disk."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from layerwise.data.bundle import DatasetBundle
from layerwise.errors import RecipeError
from layerwise.registry import Registry

DATASETS: Registry[DatasetBundle] = Registry("dataset", error=RecipeError)


def load_dataset(name: str, **kwargs: Any) -> DatasetBundle:
    """Load a registered dataset by name, e.g. `load_dataset("mnist", val_fraction=0.1)`."""
    return DATASETS.create(name, **kwargs)


def data_root() -> Path:
    """The folder datasets are read from.

    `LAYERWISE_DATA` when set; else a `shared/data` folder next to the current directory or next
    to this source tree (how the project's machines stage data); else `~/.layerwise/data`.
    """
    env = os.environ.get("LAYERWISE_DATA")
    if env:
        return Path(env).expanduser()
    repo = Path(__file__).resolve().parents[3]
    for candidate in (Path.cwd().parent / "shared" / "data", repo.parent / "shared" / "data"):
        if candidate.is_dir():
            return candidate
    return Path.home() / ".layerwise" / "data"
