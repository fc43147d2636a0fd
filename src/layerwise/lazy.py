"""Packages whose public names are imported on first use (PEP 562), so importing them is free.

`import layerwise` must not import torch (the CLI answers `--help` in a fraction of a second),
yet `layerwise.Trainer` must work. A package lists where each public name lives and gets its
module `__getattr__` and `__dir__` from here.

Example (in a package's `__init__.py`):
    __getattr__, __dir__ = lazy_exports(__name__, {"Probes": "probes", "Run": "layerwise.runs"})
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str, exports: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package`; `exports` maps a name to the module defining
    it, relative to the package (`"probes"`) or absolute (`"layerwise.train"`)."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module '{package}' has no attribute '{name}'")
        path = module if module.startswith("layerwise") else f"{package}.{module}"
        value = getattr(importlib.import_module(path), name)
        setattr(sys.modules[package], name, value)  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *exports})

    return __getattr__, __dir__
