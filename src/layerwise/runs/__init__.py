"""Run folders: atomic writes, metrics, checkpoints (safetensors + weights-only state), index."""

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
from layerwise.runs.run import NOT_METRICS, STATUSES, Run

__all__ = [
    "NOT_METRICS",
    "STATUSES",
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
]
