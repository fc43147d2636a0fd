"""Batches of any shape: one tree map moves them, one rule splits inputs from targets.

A batch is whatever the data yields: a tensor, an `(inputs, target)` pair, a dict of named
tensors (`{"tokens": ..., "lengths": ..., "label": ...}`), a dataclass or named tuple, or lists of
tensors of different sizes (detection boxes). The Trainer never looks inside a batch except
through these functions, each of which a `Trainer` subclass can replace by overriding the method
of the same name (`unpack`, `batch_size`).

Example:
    >>> batch = {"tokens": torch.zeros(4, 7, dtype=torch.long), "label": torch.zeros(4)}
    >>> inputs, target = split_batch(batch)
    >>> sorted(inputs), target.shape
    (['tokens'], torch.Size([4]))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from layerwise.errors import DataError

TARGET_KEYS = ("target", "targets", "label", "labels", "y")
"""Keys that hold the target in a dict batch, looked up in this order."""


def tree_map(fn: Callable[[Tensor], Any], tree: Any) -> Any:
    """Apply `fn` to every tensor in a nested structure, keeping the structure's own types.

    Dicts (and other mappings), lists, tuples, named tuples and dataclass instances are walked;
    anything else (numbers, strings, None) is returned unchanged.
    """
    if isinstance(tree, Tensor):
        return fn(tree)
    if type(tree) is tuple:  # the common `(inputs, target)`, before the slower checks below
        return tuple(tree_map(fn, value) for value in tree)
    if isinstance(tree, Mapping):
        return type(tree)({key: tree_map(fn, value) for key, value in tree.items()})
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):  # a named tuple
        return type(tree)(*(tree_map(fn, value) for value in tree))
    if isinstance(tree, list | tuple):
        return type(tree)(tree_map(fn, value) for value in tree)
    if dataclasses.is_dataclass(tree) and not isinstance(tree, type):
        changes = {f.name: tree_map(fn, getattr(tree, f.name)) for f in dataclasses.fields(tree)}
        return dataclasses.replace(tree, **changes)
    return tree


def tensors_of(tree: Any) -> list[Tensor]:
    """Every tensor of a nested structure, depth first, in order."""
    found: list[Tensor] = []
    tree_map(found.append, tree)
    return found


def to_device(tree: Any, device: torch.device, channels_last: bool = False) -> Any:
    """Move every tensor of `tree` to `device` (asynchronously where possible).

    With `channels_last`, 4-D floating tensors (image batches) also change memory format.
    """

    def move(t: Tensor) -> Tensor:
        t = t.to(device, non_blocking=True)
        if channels_last and t.dim() == 4 and t.is_floating_point():
            t = t.contiguous(memory_format=torch.channels_last)
        return t

    return tree_map(move, tree)


def split_batch(batch: Any) -> tuple[Any, Any]:
    """`(inputs, target)` of a batch; the target is None when the batch has none.

    - `(x, y)` or `[x, y]` → `x, y`; `(x,)` → `x, None`; a bare tensor → `x, None`;
    - a dict → the first of `TARGET_KEYS` present is the target, the other entries the inputs;
    - anything else (a dataclass, a longer tuple) has no rule: override `Trainer.unpack`.
    """
    if isinstance(batch, Mapping):
        key = next((k for k in TARGET_KEYS if k in batch), None)
        if key is None:
            return batch, None
        return {k: v for k, v in batch.items() if k != key}, batch[key]
    if isinstance(batch, Tensor):
        return batch, None
    if isinstance(batch, list | tuple) and not hasattr(batch, "_fields"):
        if len(batch) == 2:
            return batch[0], batch[1]
        if len(batch) == 1:
            return batch[0], None
    raise DataError(
        f"cannot tell inputs from target in a batch of type {type(batch).__name__}"
        + (f" with {len(batch)} items" if isinstance(batch, list | tuple) else ""),
        hint="yield (inputs, target) pairs or dicts with a 'label' key, or override "
        "Trainer.unpack / Trainer.train_step for this batch structure",
    )


def batch_size(batch: Any) -> int:
    """Samples in a batch: the first dimension of its first tensor (1 for a scalar or none).

    Used to weight each step's logs in the epoch average, so that a short last batch counts
    for what it holds. A list of per-sample tensors (detection) counts its length.
    """
    if isinstance(batch, list) and batch and all(isinstance(t, Tensor) for t in batch):
        shapes = {tuple(t.shape) for t in batch}
        if len(shapes) > 1:  # tensors of different sizes: one per sample
            return len(batch)
    tensor = first_tensor(batch)
    if tensor is None:
        return 1
    return int(tensor.shape[0]) if tensor.dim() > 0 else 1


def first_tensor(tree: Any) -> Tensor | None:
    """The first tensor of a nested structure, depth first, without rebuilding it."""
    if isinstance(tree, Tensor):
        return tree
    if isinstance(tree, Mapping):
        children: Any = tree.values()
    elif isinstance(tree, list | tuple):
        children = tree
    elif dataclasses.is_dataclass(tree) and not isinstance(tree, type):
        children = (getattr(tree, f.name) for f in dataclasses.fields(tree))
    else:
        return None
    for child in children:
        found = first_tensor(child)
        if found is not None:
            return found
    return None
