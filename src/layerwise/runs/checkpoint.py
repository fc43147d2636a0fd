"""Checkpoint files: weights as safetensors, training state as `torch.save`, tied by one id.

Weights go to safetensors because it cannot run code when loaded and maps straight into memory.
Everything else a resumed run needs (optimizer, schedule, RNG states, epoch/step, metric sums,
callback states) goes to a `torch.save` file read back with `torch.load(weights_only=True)`, which
refuses arbitrary pickled objects. So `state` may only hold:

- containers: `dict`, `collections.OrderedDict`, `list`, `tuple`, `set` (exact types: a
  `defaultdict`, `namedtuple` or dataclass is refused);
- leaves: `str`, `bytes`, `bytearray`, `int` (any size), `float` (NaN/inf too), `complex`, `bool`,
  `None`, tensors of any dtype (incl. `nn.Parameter` and `torch.get_rng_state()`'s ByteTensor),
  `torch.Size`, `torch.dtype`, `torch.device`.

An optimizer's or LR scheduler's `state_dict()`, `torch.get_rng_state()`, and the python/NumPy RNG
states converted to lists or tensors all fit. NumPy arrays and scalars do not: convert them with
`torch.from_numpy(a)`, `a.tolist()` or `x.item()`. `check_state` enforces this when saving, so a
state that could not be loaded back fails at save time, naming the offending key.

Both files carry the same `checkpoint_id` (step number plus a random token), a cross-check on top
of the checksummed, atomic checkpoint folders that `layerwise.runs.store` writes them into.
"""

from __future__ import annotations

import json
import secrets
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from layerwise.errors import CheckpointError
from layerwise.runs.atomic import atomic_save_safetensors, atomic_torch_save

__all__ = [
    "check_state",
    "load_state",
    "load_weights",
    "new_checkpoint_id",
    "save_state",
    "save_weights",
]

ID_KEY = "layerwise.checkpoint_id"
ALIASES_KEY = "layerwise.aliases"
STATE_ID_KEY = "checkpoint_id"

_LEAVES = (
    str,
    bytes,
    bytearray,
    int,
    float,
    complex,
    bool,
    type(None),
    torch.Size,
    torch.dtype,
    torch.device,
)
_CONTAINERS = (list, tuple, set)
_CORRUPT_HINT = (
    "restore it from a backup, or delete the run's checkpoints folder to restart from scratch"
)


def new_checkpoint_id(state: dict[str, Any]) -> str:
    """An id naming the step (when the state has one) plus a token unique to this save."""
    step = state.get("step")
    if step is None and isinstance(state.get("train_state"), dict):
        step = state["train_state"].get("step")
    return f"{step if step is not None else 'na'}-{secrets.token_hex(4)}"


def save_weights(weights: dict[str, torch.Tensor], path: Path, checkpoint_id: str = "") -> Path:
    """Write `weights` as safetensors: detached, CPU, contiguous; tied tensors stored once."""
    tensors, aliases = _prepare_weights(weights)
    metadata = {ID_KEY: checkpoint_id, ALIASES_KEY: json.dumps(aliases)}
    return atomic_save_safetensors(tensors, path, metadata=metadata)


def load_weights(path: Path, device: str | torch.device = "cpu") -> tuple[dict[str, Any], str]:
    """Read a safetensors file written by `save_weights`; returns (weights, checkpoint_id)."""
    _require(path)
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            metadata = f.metadata() or {}
            weights = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (not a dict)
        aliases = json.loads(metadata.get(ALIASES_KEY, "{}"))
    except Exception as exc:  # safetensors raises its own error types for every kind of damage
        raise CheckpointError(
            f"checkpoint '{path}' is corrupt or truncated ({exc})", hint=_CORRUPT_HINT
        ) from exc
    for name, original in aliases.items():
        weights[name] = weights[original]  # restores the tie, e.g. embedding = output projection
    return weights, metadata.get(ID_KEY, "")


def save_state(state: dict[str, Any], path: Path, checkpoint_id: str = "") -> Path:
    """`torch.save` the training state (checked to be loadable with `weights_only=True`)."""
    check_state(state)
    return atomic_torch_save({**state, STATE_ID_KEY: checkpoint_id}, path)


def load_state(path: Path, device: str | torch.device = "cpu") -> tuple[dict[str, Any], str]:
    """Read a state file written by `save_state`; returns (state, checkpoint_id)."""
    _require(path)
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # truncation shows up as RuntimeError, EOFError or UnpicklingError
        raise CheckpointError(
            f"checkpoint '{path}' is corrupt, truncated or holds types that "
            f"weights_only loading refuses ({str(exc).splitlines()[0][:200]})",
            hint=_CORRUPT_HINT,
        ) from exc
    if not isinstance(state, dict):
        raise CheckpointError(
            f"checkpoint '{path}' holds a {type(state).__name__}, expected a dict of state",
            hint=_CORRUPT_HINT,
        )
    checkpoint_id = state.pop(STATE_ID_KEY, "")
    return state, checkpoint_id


def check_state(obj: Any, where: str = "state") -> None:
    """Raise `CheckpointError` naming the first value that `weights_only` loading would refuse."""
    kind = type(obj)
    if kind in _LEAVES or isinstance(obj, torch.Tensor):
        return
    if kind in (dict, OrderedDict):
        for key, value in obj.items():
            check_state(key, f"{where} (a key)")
            check_state(value, f"{where}[{key!r}]")
    elif kind in _CONTAINERS:
        for i, value in enumerate(obj):
            check_state(value, f"{where}[{i}]")
    else:
        raise CheckpointError(
            f"{where} is a {kind.__module__}.{kind.__qualname__}, which "
            "torch.load(weights_only=True) cannot load back",
            hint="store plain dicts, lists, numbers, strings or tensors "
            "(NumPy: torch.from_numpy(a), a.tolist() or x.item())",
        )


def _prepare_weights(
    weights: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Make tensors safetensors accepts: exact duplicates become aliases, overlaps copies."""
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    storages: set[tuple] = set()
    for name, tensor in weights.items():
        if not isinstance(tensor, torch.Tensor):
            raise CheckpointError(
                f"weight '{name}' is a {type(tensor).__name__}, not a tensor",
                hint="pass model.state_dict() (tensors only); put other values in the state",
            )
        tensor = tensor.detach()
        storage = (tensor.device, tensor.untyped_storage().data_ptr())
        view = (
            *storage,
            tensor.storage_offset(),
            tuple(tensor.shape),
            tensor.stride(),
            tensor.dtype,
        )
        if view in seen and tensor.numel() > 0:
            aliases[name] = seen[view]
            continue
        seen[view] = name
        shared = storage in storages
        storages.add(storage)
        moved = tensor.to("cpu").contiguous()
        if shared and moved.untyped_storage().data_ptr() == storage[1]:
            moved = moved.clone()  # still a view into memory another entry uses
        tensors[name] = moved
    return tensors, aliases


def _require(path: Path) -> None:
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint '{path}' does not exist",
            hint="the run has not saved a checkpoint yet; start it again without --resume",
        )
