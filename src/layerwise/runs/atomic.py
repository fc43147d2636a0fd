"""Atomic file writes: a reader sees the old file or the new one, never half of either.

Every writer goes to a hidden temp file in the target's own folder (so the final `os.replace` is a
rename within one filesystem, which POSIX and Windows make atomic), is flushed and fsynced, and only
then replaces the target. A SIGKILL or power cut at any point leaves the previous content intact
and, at worst, a stray `.<name>.*.tmp` file beside it. An `OSError` (permissions, full disk, a path
under a regular file) becomes a `RunError` that names the path; any other exception raised by the
serializer propagates unchanged after the temp file is removed.

torch and safetensors are imported by the two writers that need them, so the text and JSON
writers stay cheap to import (the CLI's `runs ls` must not pay for torch).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from layerwise.errors import RunError

if TYPE_CHECKING:
    import torch

__all__ = [
    "atomic_save_safetensors",
    "atomic_torch_save",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
]


def atomic_write_bytes(path: str | Path, data: bytes | memoryview) -> Path:
    """Write `data` to `path` atomically and return the path."""
    with _atomic_target(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically and return the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write `obj` as indented JSON atomically; 0-d tensors and NumPy scalars become numbers."""
    return atomic_write_text(path, json.dumps(obj, indent=2, default=json_default) + "\n")


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """`torch.save(obj, path)`, atomically (argument order follows `torch.save`).

    The archive is built in memory and written by `atomic_write_bytes`: torch's own file writer
    reports a full disk or a file-size limit as a bare `RuntimeError` ("unexpected pos …"), while
    a plain write raises the `OSError` that becomes a `RunError` naming the path.
    """
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getbuffer())


def atomic_save_safetensors(
    tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None
) -> Path:
    """`safetensors.torch.save_file`, atomically (tensors contiguous, not sharing memory)."""
    with _atomic_target(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)


def save_file(
    tensors: dict[str, torch.Tensor], filename: str, metadata: dict[str, str] | None = None
) -> None:
    """`safetensors.torch.save_file`, imported on first use (it imports torch)."""
    from safetensors.torch import save_file as save_safetensors

    save_safetensors(tensors, filename, metadata=metadata)


def json_default(value: Any) -> Any:
    """`json.dumps` fallback: tensors and NumPy values become plain numbers or lists."""
    torch = sys.modules.get("torch")  # a tensor exists only once torch is imported
    if torch is not None and isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if hasattr(value, "tolist"):  # NumPy arrays and scalars, without importing NumPy here
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


@contextlib.contextmanager
def _atomic_target(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; on a clean exit, fsync it and move it over `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
    except OSError as exc:
        raise _write_error(path, exc) from exc
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, _default_file_mode())
        _fsync(tmp, os.O_RDONLY)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _write_error(path, exc) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    with contextlib.suppress(
        OSError
    ):  # the rename itself is durable only once the folder is synced
        _fsync(path.parent, os.O_RDONLY)


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@functools.cache
def _default_file_mode() -> int:
    """The mode `open()` would give a new file (mkstemp makes 0600, too strict for reports)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def _write_error(path: Path, exc: OSError) -> RunError:
    return RunError(
        f"cannot write '{path}': {exc.strerror or exc}",
        hint=f"check that '{path.parent}' is a writable folder with free space "
        "(or point --runs-dir somewhere else)",
    )
