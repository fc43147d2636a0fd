"""Checkpoint folders: atomic saves, the last two kept, and every kind of damage detected.

The damage tests flip bits at random offsets (in the safetensors header and in the tensor data),
truncate at random lengths, swap in a file from another run, and empty a file; every one must be
caught by the checksums before anything is loaded, and resume must fall back to the older intact
checkpoint.
"""

from __future__ import annotations

import random
import shutil
import struct
from pathlib import Path

import pytest
import torch

from layerwise.errors import CheckpointError
from layerwise.runs import CheckpointFallbackWarning, CheckpointStore, Run
from layerwise.runs import store as store_module


def _weights(seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "layer.weight": torch.randn(16, 8, generator=generator),
        "layer.bias": torch.randn(16, generator=generator),
    }


def _state(step: int) -> dict:
    return {"train_state": {"step": step, "epoch": step // 10}, "rng": torch.get_rng_state()}


@pytest.fixture
def run(tmp_path: Path) -> Run:
    return Run.create(tmp_path, "ckpt", "name: t\n")


def _save_two(run: Run) -> tuple[Path, Path]:
    run.save_checkpoint(_weights(1), _state(10))
    run.save_checkpoint(_weights(2), _state(20))
    newest, older = run.checkpoints.entries("last")
    return newest, older


def test_a_save_is_one_folder_with_a_manifest_and_only_the_last_two_are_kept(run: Run) -> None:
    for step in range(1, 6):
        run.save_checkpoint(_weights(step), _state(step), best=step % 2 == 1)
    names = sorted(p.name for p in run.checkpoints_dir.iterdir())
    # numbered in order across kinds, a best before its last: best 1, last 2, last 3, best 4, ...
    assert names == ["best-000004", "best-000007", "last-000006", "last-000008"]
    newest = run.checkpoints.latest("last")
    assert sorted(p.name for p in newest.iterdir()) == [
        "manifest.json",
        "state.pt",
        "weights.safetensors",
    ]
    weights, state = run.load_checkpoint("last")
    assert torch.equal(weights["layer.weight"], _weights(5)["layer.weight"])
    assert state["train_state"]["step"] == 5
    best, best_state = run.load_checkpoint("best")
    assert best_state == {} and torch.equal(best["layer.bias"], _weights(5)["layer.bias"])


def _flip_bit(path: Path, offset: int, bit: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 1 << bit
    path.write_bytes(bytes(data))


def _header_length(path: Path) -> int:
    return 8 + struct.unpack("<Q", path.read_bytes()[:8])[0]


def _damage_cases(seed: int = 0) -> list[tuple[str, str, object]]:
    """(kind of damage, file, how) — random offsets and lengths from a fixed seed."""
    rng = random.Random(seed)
    cases: list[tuple[str, str, object]] = []
    for _ in range(12):
        cases.append(("bit flip in header", "weights.safetensors", ("header", rng.random(), rng)))
        cases.append(("bit flip in data", "weights.safetensors", ("data", rng.random(), rng)))
        cases.append(("bit flip", "state.pt", ("any", rng.random(), rng)))
        cases.append(("truncated", rng.choice(["weights.safetensors", "state.pt"]), rng.random()))
    for name in ("weights.safetensors", "state.pt", "manifest.json"):
        cases.append(("zero length", name, None))
        cases.append(("swapped from another run", name, None))
    return cases


def _apply(case: tuple[str, str, object], folder: Path, other: Path) -> None:
    damage, name, how = case
    path = folder / name
    size = path.stat().st_size
    if damage.startswith("bit flip"):
        region, fraction, rng = how
        header = _header_length(path)
        if region == "header":
            offset = int(fraction * header)
        elif region == "data":
            offset = header + int(fraction * (size - header))
        else:
            offset = int(fraction * size)
        _flip_bit(path, min(offset, size - 1), rng.randrange(8))
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: int(how * size)])
    elif damage == "zero length":
        path.write_bytes(b"")
    else:
        shutil.copy(other / name, path)


def test_every_kind_of_damage_is_detected_and_resume_falls_back(run: Run, tmp_path: Path) -> None:
    other = Run.create(tmp_path, "other", "name: t\n")
    other.save_checkpoint(_weights(7), _state(20))
    other_folder = other.checkpoints.latest("last")
    detected: dict[str, list[bool]] = {}
    for case in _damage_cases():
        for folder in run.checkpoints_dir.iterdir():
            shutil.rmtree(folder)
        newest, _older = _save_two(run)
        _apply(case, newest, other_folder)
        with pytest.raises(CheckpointError):
            run.checkpoints.verify(newest)
        with pytest.warns(CheckpointFallbackWarning, match=newest.name):
            weights, state = run.load_checkpoint("last")
        detected.setdefault(case[0], []).append(
            state["train_state"]["step"] == 10
            and torch.equal(weights["layer.weight"], _weights(1)["layer.weight"])
        )
    assert {kind: all(found) for kind, found in detected.items()} == {
        kind: True for kind in detected
    }
    assert sum(len(found) for found in detected.values()) == 54


def test_a_mismatch_names_the_file_and_what_it_expected(run: Run) -> None:
    newest, _ = _save_two(run)
    _flip_bit(newest / "state.pt", 100, 3)
    with pytest.raises(CheckpointError) as info:
        run.checkpoints.verify(newest)
    assert "state.pt" in info.value.message
    assert "expected" in info.value.message and "SHA-256" in info.value.message


def test_when_every_checkpoint_is_damaged_nothing_loads(run: Run) -> None:
    newest, older = _save_two(run)
    (newest / "weights.safetensors").write_bytes(b"")
    (older / "manifest.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="every 'last' checkpoint") as info:
        run.load_checkpoint("last")
    assert newest.name in info.value.message and older.name in info.value.message


def test_quarantine_renames_the_damaged_folder_and_later_saves_keep_the_good_one(
    run: Run,
) -> None:
    newest, older = _save_two(run)
    _flip_bit(newest / "weights.safetensors", 200, 0)
    with pytest.warns(CheckpointFallbackWarning):
        run.load_checkpoint("last", quarantine=True)
    assert not newest.exists() and (newest.parent / f"damaged-{newest.name}").is_dir()
    run.save_checkpoint(_weights(3), _state(30))
    kept = [p.name for p in run.checkpoints.entries("last")]
    assert kept == ["last-000003", older.name]  # a fresh number, the good older one still kept


@pytest.mark.parametrize("stage", ["weights", "state", "manifest", "rename", "prune"])
def test_a_save_interrupted_at_any_stage_leaves_a_loadable_checkpoint(
    run: Run, stage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _save_two(run)

    class Killed(BaseException):
        pass

    def die(reached: str) -> None:
        if reached == stage:
            raise Killed

    monkeypatch.setattr(store_module, "STAGE_HOOK", die)
    with pytest.raises(Killed):
        run.save_checkpoint(_weights(3), _state(30))
    monkeypatch.setattr(store_module, "STAGE_HOOK", None)
    _, state = run.load_checkpoint("last")
    saved = stage in ("rename", "prune")  # the new folder is complete once it is renamed
    assert state["train_state"]["step"] == (30 if saved else 20)
    assert not list(run.checkpoints_dir.glob(".tmp-*"))
    run.save_checkpoint(_weights(4), _state(40))  # and the next save tidies up after it
    assert len(run.checkpoints.entries("last")) == 2
    assert not [p for p in run.checkpoints_dir.iterdir() if p.name.startswith(".")]


def test_an_unknown_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="unknown checkpoint"):
        CheckpointStore(tmp_path).save("latest", _weights(1))
