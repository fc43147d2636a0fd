"""Checkpoint folders: one atomic, checksummed unit per save, the last two of each kind kept.

    checkpoints/
      last-000012/  weights.safetensors  state.pt  manifest.json
      last-000011/  ...                                  the previous one, kept to fall back on
      best-000004/  weights.safetensors  manifest.json

A save writes every file into a hidden `.tmp-*` folder, fsyncs them, writes `manifest.json` (the
SHA-256 and size of each file, the step and the checkpoint id) and only then renames the folder to
its final name: one rename, so a kill at any instant leaves either the complete new checkpoint or
none of it, and the previous ones are untouched. Older folders beyond `keep` are removed only after
the new one is in place (renamed to `.trash-*` first, so a kill mid-delete never leaves a
half-deleted folder under a checkpoint name).

Every read checks sizes and digests against the manifest first, so a flipped bit, a truncated file,
a file swapped in from another run or an empty file is a `CheckpointError` naming the file, never
silently changed weights. `load` falls back to the next older checkpoint and reports what it
skipped; `quarantine=True` (resume) renames a damaged folder to `damaged-*` so later saves never
count it among the ones kept, and deletes nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from layerwise.errors import CheckpointError, RunError
from layerwise.runs.atomic import json_default

if TYPE_CHECKING:
    import torch

__all__ = ["KINDS", "CheckpointStore", "LoadedCheckpoint"]

KINDS = ("last", "best")
WEIGHTS_FILE = "weights.safetensors"
STATE_FILE = "state.pt"
MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = 1
_NAME = re.compile(r"(?P<kind>last|best)-(?P<seq>\d{6,})")
_ANY_SEQ = re.compile(r"(?:damaged-)?(?:last|best)-(?P<seq>\d{6,})")
_CHUNK = 1 << 20

STAGE_HOOK: Callable[[str], None] | None = None
"""Called with a stage name at each point of a save (`weights`, `state`, `manifest`, `rename`,
`prune`). Tests set it to kill the process at an exact instant; it is None in normal use."""


@dataclass
class LoadedCheckpoint:
    """What `CheckpointStore.load` found: the weights, the state (`{}` for `best`), the folder
    they came from, and the newer folders it had to skip with the reason for each."""

    weights: dict[str, torch.Tensor]
    state: dict[str, Any]
    path: Path
    skipped: list[tuple[Path, str]] = field(default_factory=list)


class CheckpointStore:
    """The `checkpoints/` folder of one run."""

    def __init__(self, folder: str | Path, keep: int = 2) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.folder = Path(folder)
        self.keep = keep

    # ------------------------------------------------------------------ save
    def save(
        self,
        kind: str,
        weights: dict[str, torch.Tensor],
        state: dict[str, Any] | None = None,
    ) -> Path:
        """Write one checkpoint of `kind` atomically; returns its folder.

        `state` (only for `last`) must hold what `torch.load(weights_only=True)` accepts; it is
        checked before anything is written.
        """
        from layerwise.runs.checkpoint import (
            check_state,
            new_checkpoint_id,
            save_state,
            save_weights,
        )

        _check_kind(kind)
        if state is not None:
            check_state(state)
        checkpoint_id = new_checkpoint_id(state or {})
        tmp = self._make_tmp()
        writing = WEIGHTS_FILE
        try:
            save_weights(weights, tmp / WEIGHTS_FILE, checkpoint_id)
            _stage("weights")
            files = [WEIGHTS_FILE]
            if state is not None:
                writing = STATE_FILE
                save_state(state, tmp / STATE_FILE, checkpoint_id)
                _stage("state")
                files.append(STATE_FILE)
            manifest = {
                "format": MANIFEST_FORMAT,
                "kind": kind,
                "checkpoint_id": checkpoint_id,
                "step": _step_of(state),
                "files": {name: _digest(tmp / name) for name in files},
            }
            writing = MANIFEST_FILE
            _write_synced(tmp / MANIFEST_FILE, json.dumps(manifest, indent=2, default=json_default))
            _stage("manifest")
            final = self._rename_into_place(tmp, kind)
        except RunError as exc:  # name the checkpoint, not the hidden folder it was written in
            shutil.rmtree(tmp, ignore_errors=True)
            cause = exc.__cause__
            reason = cause.strerror or str(cause) if isinstance(cause, OSError) else exc.message
            raise RunError(
                f"cannot save the '{kind}' checkpoint in '{self.folder}' (writing {writing}): "
                f"{reason}",
                hint=_SAVE_HINT,
            ) from exc
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _stage("rename")
        self._prune(kind)
        _stage("prune")
        return final

    def _make_tmp(self) -> Path:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._remove_leftovers()
            tmp = self.folder / f".tmp-{secrets.token_hex(4)}"
            tmp.mkdir()
        except OSError as exc:
            raise _write_error(self.folder, exc) from exc
        return tmp

    def _rename_into_place(self, tmp: Path, kind: str) -> Path:
        _fsync_dir(tmp)
        seq = 1 + max((_seq_of(p.name) for p in self.folder.iterdir()), default=0)
        final = self.folder / f"{kind}-{seq:06d}"
        try:
            os.rename(tmp, final)  # not os.replace: never lands on an existing checkpoint
        except OSError as exc:
            raise _write_error(final, exc) from exc
        _fsync_dir(self.folder)
        return final

    def _prune(self, kind: str) -> None:
        for old in self.entries(kind)[self.keep :]:
            trash = self.folder / f".trash-{old.name}-{secrets.token_hex(2)}"
            with contextlib.suppress(OSError):
                os.rename(old, trash)
                shutil.rmtree(trash, ignore_errors=True)
        self._remove_leftovers()

    def _remove_leftovers(self) -> None:
        """Delete the hidden folders of a save or prune that was killed (only this run writes
        here, so any that exist are stale)."""
        for pattern in (".tmp-*", ".trash-*"):
            for stale in self.folder.glob(pattern):
                shutil.rmtree(stale, ignore_errors=True)

    # ------------------------------------------------------------------ read
    def entries(self, kind: str) -> list[Path]:
        """Complete checkpoint folders of `kind`, newest first."""
        _check_kind(kind)
        if not self.folder.is_dir():
            return []
        found = []
        for path in self.folder.iterdir():
            match = _NAME.fullmatch(path.name)
            if match and match["kind"] == kind and path.is_dir():
                found.append((int(match["seq"]), path))
        return [path for _, path in sorted(found, reverse=True)]

    def latest(self, kind: str) -> Path | None:
        """The newest folder of `kind` (not yet verified), or None."""
        entries = self.entries(kind)
        return entries[0] if entries else None

    def load(
        self,
        kind: str,
        device: str | torch.device = "cpu",
        quarantine: bool = False,
    ) -> LoadedCheckpoint:
        """Verify and load the newest good checkpoint of `kind`, falling back to older ones.

        Raises `CheckpointError` when there is none, or when every one is damaged (listing why).
        """
        entries = self.entries(kind)
        if not entries:
            raise CheckpointError(
                f"no '{kind}' checkpoint in '{self.folder}'",
                hint="the run has not saved a checkpoint yet; start it again without --resume"
                if kind == "last"
                else "the run never improved its monitored metric; use the last checkpoint",
            )
        skipped: list[tuple[Path, str]] = []
        for path in entries:
            try:
                weights, state = self._load_one(path, kind, device)
            except CheckpointError as exc:
                skipped.append((path, exc.message))
                continue
            if quarantine:
                self._remove_leftovers()
                for damaged, _ in skipped:
                    with contextlib.suppress(OSError):
                        os.rename(damaged, damaged.with_name(f"damaged-{damaged.name}"))
            return LoadedCheckpoint(weights, state, path, skipped)
        reasons = "; ".join(reason for _, reason in skipped)
        raise CheckpointError(
            f"every '{kind}' checkpoint in '{self.folder}' is damaged: {reasons}",
            hint="restore the checkpoints folder from a backup, or delete it to restart from "
            "scratch",
        )

    def verify(self, path: Path) -> dict[str, Any]:
        """Check every file of one checkpoint folder against its manifest; returns the manifest."""
        manifest_path = path / MANIFEST_FILE
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            files = manifest["files"]
            if not isinstance(files, dict) or WEIGHTS_FILE not in files:
                raise ValueError("no weights listed")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(
                f"checkpoint manifest '{manifest_path}' is missing or damaged ({exc})",
                hint=_DAMAGE_HINT,
            ) from exc
        for name, expected in files.items():
            file = path / name
            try:
                actual = _digest(file)
            except OSError as exc:
                raise CheckpointError(
                    f"checkpoint file '{file}' cannot be read ({exc.strerror or exc})",
                    hint=_DAMAGE_HINT,
                ) from exc
            if actual != expected:
                wanted = expected if isinstance(expected, dict) else {}
                raise CheckpointError(
                    f"checkpoint file '{file}' does not match its checksum: expected "
                    f"{wanted.get('bytes')} bytes with SHA-256 {str(wanted.get('sha256'))[:16]}…, "
                    f"found {actual['bytes']} bytes with {actual['sha256'][:16]}…",
                    hint=_DAMAGE_HINT,
                )
        return manifest

    def _load_one(
        self, path: Path, kind: str, device: str | torch.device
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        from layerwise.runs.checkpoint import load_state, load_weights

        manifest = self.verify(path)
        weights, weights_id = load_weights(path / WEIGHTS_FILE, device)
        if kind == "best":
            return weights, {}
        if STATE_FILE not in manifest["files"]:
            raise CheckpointError(f"checkpoint '{path}' has no {STATE_FILE}", hint=_DAMAGE_HINT)
        state, state_id = load_state(path / STATE_FILE, device)
        if not weights_id == state_id == manifest.get("checkpoint_id"):
            raise CheckpointError(
                f"checkpoint files in '{path}' come from different saves "
                f"({weights_id!r}, {state_id!r})",
                hint=_DAMAGE_HINT,
            )
        return weights, state


_SAVE_HINT = (
    "make free space or fix the folder's permissions, then continue with --resume: the previous "
    "checkpoint is intact"
)
_DAMAGE_HINT = "an older checkpoint is used when one is intact; otherwise delete the checkpoints "
_DAMAGE_HINT += "folder to restart from scratch"


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise CheckpointError(f"unknown checkpoint '{kind}'", hint="choose 'last' or 'best'")


def _seq_of(name: str) -> int:
    match = _ANY_SEQ.fullmatch(name)
    return int(match["seq"]) if match else 0


def _step_of(state: dict[str, Any] | None) -> int | None:
    train_state = (state or {}).get("train_state")
    step = train_state.get("step") if isinstance(train_state, dict) else None
    return step if isinstance(step, int) else None


def _digest(path: Path) -> dict[str, Any]:
    sha = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return {"sha256": sha.hexdigest(), "bytes": size}


def _write_synced(path: Path, text: str) -> None:
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise _write_error(path, exc) from exc


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _stage(name: str) -> None:
    if STAGE_HOOK is not None:
        STAGE_HOOK(name)


def _write_error(path: Path, exc: OSError) -> RunError:
    return RunError(
        f"cannot write checkpoint '{path}': {exc.strerror or exc}",
        hint=f"check that '{path.parent}' is writable with free space; the previous checkpoint "
        "is intact",
    )
