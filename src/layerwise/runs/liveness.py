"""Is a `running` run still running? And room to say that it failed when its disk fills up.

A run marks itself `failed` when training raises, but on a disk that filled to the last byte even
the small `run.json` cannot be written. Two defences, neither needing torch (`runs ls` imports
this): while a run is `running` its folder holds a small preallocated reserve file that is
deleted to make room for the final status write; and `run.json` records the process id and host
of the training, so that a run still marked `running` whose process is gone (killed, or its
status write refused even so) is shown as `interrupted` by `runs ls` and `runs show`.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path
from typing import Any

RESERVE_NAME = ".status-reserve"
RESERVE_BYTES = 256 * 1024  # a run.json rewrite plus the index's few WAL pages, many times over


def owner() -> dict[str, Any]:
    """The `run.json` fields naming the process that trains the run."""
    return {"pid": os.getpid(), "host": socket.gethostname()}


def reserve_room(folder: Path) -> None:
    """Preallocate the reserve in `folder` (best effort: no room or a file-size limit too small
    for it simply means there is no reserve)."""
    if _file_size_limit() < RESERVE_BYTES:
        return  # writing past RLIMIT_FSIZE could kill the process with SIGXFSZ
    path = folder / RESERVE_NAME
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(fd, 0, RESERVE_BYTES)
            else:
                os.write(fd, b"\0" * RESERVE_BYTES)
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            return
        os.close(fd)


def release_room(folder: Path) -> bool:
    """Delete the reserve; True when there was one to free."""
    try:
        (folder / RESERVE_NAME).unlink()
    except OSError:
        return False
    return True


def shown_status(info: dict[str, Any]) -> str:
    """The status to show for a `run.json` or index row: its own, except `interrupted` for a run
    marked `running` whose training process on this host no longer exists. An index row (which
    has no process id) is checked against its run folder's `run.json`, which may also say the
    run failed when the index could not be updated."""
    status = str(info.get("status"))
    if status != "running":
        return status
    if "pid" not in info and info.get("path"):
        with contextlib.suppress(OSError, ValueError, TypeError):
            info = json.loads((Path(info["path"]) / "run.json").read_text(encoding="utf-8"))
            if not isinstance(info, dict):
                return status
            status = str(info.get("status"))
    pid = info.get("pid")
    if status != "running" or type(pid) is not int or pid <= 0:
        return status
    if info.get("host") != socket.gethostname():
        return status  # another machine's process cannot be checked from here
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "interrupted"
    except OSError:  # it exists but belongs to someone else
        return status
    return status


def _file_size_limit() -> float:
    try:
        import resource
    except ImportError:  # not on Unix
        return float("inf")
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return float("inf") if soft == resource.RLIM_INFINITY else soft
