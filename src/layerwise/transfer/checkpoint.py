"""Read pretrained weights safely and load them into a model all at once, or not at all.

A pretrained file may be anything a user points at: a layerwise checkpoint, a `torch.save`d
state dict (possibly wrapped in `{"state_dict": ...}` with DataParallel's `module.` prefix), a
safetensors file, or something that is not a checkpoint at all. Pickles are read with
`weights_only=True`, so a file that would run code when unpickled is refused, not executed.

`load_weights` compares the whole state dict with the model before touching it and raises one
`CheckpointMismatchError` that lists every missing, unexpected and wrongly shaped key; only when
nothing is wrong does it call `load_state_dict` once, on a complete copy, so a model is never left
half-loaded.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import Tensor, nn

from layerwise.errors import CheckpointError

SHOWN = 8  # keys listed per kind of difference before "… and N more"


class CheckpointMismatchError(CheckpointError):
    """The weights do not fit the model; `missing`, `unexpected` and `mismatched` say how.

    `mismatched` maps a key to `(shape in the file, shape in the model)`.
    """

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        *,
        missing: dict[str, tuple[int, ...]] | None = None,
        unexpected: dict[str, tuple[int, ...]] | None = None,
        mismatched: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] | None = None,
    ) -> None:
        super().__init__(message, hint)
        self.missing = missing or {}
        self.unexpected = unexpected or {}
        self.mismatched = mismatched or {}


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a weights file (`.safetensors`, or a `torch.save`d state dict).

    Raises `CheckpointError` for a missing file, a file that is not a checkpoint, a pickle that
    would run code, or a pickle holding no state dict of tensors.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(
            f"'{path}' is a folder, not a weights file",
            hint="for an earlier layerwise run use source: run; else give the weights file",
        )
    if not path.is_file():
        raise CheckpointError(f"weights file '{path}' not found", hint="check the path")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" in str(exc) or _pickle_runs_code(path):
            raise CheckpointError(
                f"'{path}' is a pickle that would import or run code when loaded; it was "
                "refused, nothing was executed",
                hint="save plain weights (model.state_dict()) with torch.save or safetensors; "
                "only load files you trust",
            ) from None
        raise _not_a_checkpoint(path, exc) from None
    except Exception as exc:  # torch's readers raise many kinds on bytes that are not theirs
        raise _not_a_checkpoint(path, exc) from None
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not state:
        raise CheckpointError(
            f"'{path}' holds a {type(obj).__name__}, not a state dict of tensors",
            hint="expected torch.save(model.state_dict()) or {'state_dict': ...}",
        )
    tensors = {key: value for key, value in state.items() if isinstance(value, Tensor)}
    if len(tensors) != len(state):
        odd = [key for key in state if key not in tensors][:SHOWN]
        raise CheckpointError(
            f"'{path}' is not a state dict of tensors: {', '.join(map(str, odd))} are not tensors",
            hint="expected torch.save(model.state_dict()) or {'state_dict': ...}",
        )
    return strip_prefix(tensors, "module.")


def strip_prefix(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """Drop `prefix` (e.g. DataParallel's `module.`) when every key carries it."""
    if state and all(key.startswith(prefix) for key in state):
        return {key.removeprefix(prefix): value for key, value in state.items()}
    return state


def load_weights(
    model: nn.Module,
    state: dict[str, Tensor],
    *,
    source: str,
    strict: bool = True,
    skip: Iterable[str] = (),
) -> nn.Module:
    """Load `state` into `model` in one call, after checking that every key fits.

    Args:
        source: what the weights came from, named in the error.
        strict: refuse missing and unexpected keys; with False they are allowed (missing ones
            keep the model's values, unexpected ones are dropped). Shape mismatches are never
            allowed.
        skip: key prefixes to leave out on both sides (e.g. the head that will be replaced).

    Raises `CheckpointMismatchError` listing every key that differs; the model is then unchanged.
    """
    prefixes = tuple(skip)
    expected = {k: v for k, v in model.state_dict().items() if not k.startswith(prefixes or "\0")}
    found = {k: v for k, v in state.items() if not k.startswith(prefixes or "\0")}
    # checkpoints older than PyTorch 0.4 lack BatchNorm's counter; the model's own value is kept
    missing = {
        k: _shape(v)
        for k, v in expected.items()
        if k not in found and not k.endswith("num_batches_tracked")
    }
    unexpected = {k: _shape(v) for k, v in found.items() if k not in expected}
    mismatched = {
        k: (_shape(found[k]), _shape(v))
        for k, v in expected.items()
        if k in found and not _is_lazy(v) and found[k].shape != v.shape
    }
    if mismatched or (strict and (missing or unexpected)):
        raise _mismatch_error(model, source, missing, unexpected, mismatched, strict)
    merged = dict(model.state_dict())
    merged.update({k: v for k, v in found.items() if k in expected})
    model.load_state_dict(merged, strict=True)
    return model


def _mismatch_error(
    model: nn.Module,
    source: str,
    missing: dict[str, tuple[int, ...]],
    unexpected: dict[str, tuple[int, ...]],
    mismatched: dict[str, tuple[tuple[int, ...], tuple[int, ...]]],
    strict: bool,
) -> CheckpointMismatchError:
    parts = []
    if missing and strict:
        parts.append(_listing(f"{len(missing)} missing key(s) the model needs", missing))
    if unexpected and strict:
        parts.append(_listing(f"{len(unexpected)} unexpected key(s) in the file", unexpected))
    if mismatched:
        shapes = {k: f"file {list(a)} vs model {list(b)}" for k, (a, b) in mismatched.items()}
        parts.append(_listing(f"{len(mismatched)} shape mismatch(es)", shapes))
    hint = (
        "load the weights into the architecture they were trained with (same family, depth "
        "and widths)"
    )
    if not mismatched:
        hint += ", or set strict: false to load only the keys both share"
    return CheckpointMismatchError(
        f"weights from {source} do not fit {type(model).__name__}; nothing was loaded:\n"
        + "\n".join(parts),
        hint=hint,
        missing=missing if strict else {},
        unexpected=unexpected if strict else {},
        mismatched=mismatched,
    )


def _listing(title: str, items: dict[str, object]) -> str:
    lines = [f"  {title}:"]
    for key, value in list(items.items())[:SHOWN]:
        lines.append(f"    {key} {list(value) if isinstance(value, tuple) else value}")
    if len(items) > SHOWN:
        lines.append(f"    … and {len(items) - SHOWN} more")
    return "\n".join(lines)


def _shape(tensor: Tensor) -> tuple[int, ...]:
    return () if _is_lazy(tensor) else tuple(tensor.shape)


def _is_lazy(tensor: Tensor) -> bool:
    return isinstance(tensor, nn.parameter.UninitializedTensorMixin)


CODE_OPCODES = {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX"}


def _pickle_runs_code(path: Path) -> bool:
    """Whether `path` is a plain pickle that imports or calls something (read with pickletools,
    which lists the opcodes without executing any). Text and other bytes are not pickles."""
    import pickletools

    try:
        data = path.read_bytes()[: 1 << 24]
        opcodes = {op.name for op, _, _ in pickletools.genops(data)}
    except Exception:  # not a well-formed pickle
        return False
    return bool(opcodes & CODE_OPCODES)


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as exc:
        raise _not_a_checkpoint(path, exc) from None


def _not_a_checkpoint(path: Path, exc: BaseException) -> CheckpointError:
    return CheckpointError(
        f"'{path}' is not a checkpoint PyTorch can read ({type(exc).__name__}: {_first_line(exc)})",
        hint="give a file written by torch.save(model.state_dict()) or a .safetensors file",
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
