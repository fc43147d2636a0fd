"""Run folders: atomic writes, metrics, checksummed checkpoint folders, the index.

Names are imported on first use (PEP 562), so `layerwise runs ls`, which needs only the SQLite
index, imports neither torch nor safetensors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from layerwise.lazy import lazy_exports

# Public name -> the submodule of layerwise.runs that defines it.
_EXPORTS: dict[str, str] = {
    "CheckpointFallbackWarning": "run",
    "CheckpointStore": "store",
    "NOT_METRICS": "run",
    "STATUSES": "run",
    "Run": "run",
    "RunIndex": "index",
    "atomic_save_safetensors": "atomic",
    "atomic_torch_save": "atomic",
    "atomic_write_bytes": "atomic",
    "atomic_write_json": "atomic",
    "atomic_write_text": "atomic",
    "check_state": "checkpoint",
    "load_state": "checkpoint",
    "load_weights": "checkpoint",
    "save_state": "checkpoint",
    "save_weights": "checkpoint",
    "shown_status": "liveness",
}

__all__ = [  # a literal, so type checkers and IDEs see the re-exports
    "NOT_METRICS",
    "STATUSES",
    "CheckpointFallbackWarning",
    "CheckpointStore",
    "Run",
    "RunIndex",
    "atomic_save_safetensors",
    "atomic_torch_save",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "check_state",
    "load_state",
    "load_weights",
    "save_state",
    "save_weights",
    "shown_status",
]

if TYPE_CHECKING:
    from layerwise.runs.atomic import (
        atomic_save_safetensors,
        atomic_torch_save,
        atomic_write_bytes,
        atomic_write_json,
        atomic_write_text,
    )
    from layerwise.runs.checkpoint import (
        check_state,
        load_state,
        load_weights,
        save_state,
        save_weights,
    )
    from layerwise.runs.index import RunIndex
    from layerwise.runs.liveness import shown_status
    from layerwise.runs.run import NOT_METRICS, STATUSES, CheckpointFallbackWarning, Run
    from layerwise.runs.store import CheckpointStore


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
