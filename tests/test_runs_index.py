"""The SQLite run index: ordering, missing folders, concurrent writers, damage."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from layerwise.errors import RunError
from layerwise.runs import Run, RunIndex


def test_list_is_newest_first_and_marks_deleted_runs(tmp_path: Path) -> None:
    names = [Run.create(tmp_path, f"exp{i}", f"epochs: {i}\n").name for i in range(3)]
    shutil.rmtree(tmp_path / "exp1")
    rows = RunIndex(tmp_path).list()
    assert [r["name"] for r in rows] == names[::-1]
    assert [r["missing"] for r in rows] == [False, True, False]
    assert [r["epochs"] for r in rows] == [2, 1, 0]


def test_get_and_upsert(tmp_path: Path) -> None:
    index = RunIndex(tmp_path)
    assert index.list() == [] and index.get("nope") is None
    index.upsert({"name": "a", "status": "running", "final_metrics": {"val_loss": 0.5}})
    index.upsert({"name": "a", "status": "finished", "final_metrics": {"val_loss": 0.25}})
    row = index.get("a")
    assert row["status"] == "finished"
    assert row["final_metrics"] == {"val_loss": 0.25}
    assert row["path"] == str((tmp_path / "a").resolve())
    assert len(index.list()) == 1
    index.remove("a")
    assert index.get("a") is None


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    def write(prefix: str) -> None:
        index = RunIndex(tmp_path)  # each writer its own object, like separate processes
        for i in range(15):
            index.upsert({"name": f"{prefix}{i}", "status": "running", "created": f"{i:03d}"})

    threads = [threading.Thread(target=write, args=(p,)) for p in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(RunIndex(tmp_path).list()) == 30


def test_damaged_index_is_a_run_error_and_rebuild_recovers(tmp_path: Path) -> None:
    Run.create(tmp_path, "first", "a: 1\n")
    (tmp_path / "index.sqlite").write_bytes(b"garbage " * 100)
    with pytest.raises(RunError, match="cannot use the run index"):
        RunIndex(tmp_path).list()
    with pytest.warns(RuntimeWarning, match="run index not updated"):
        second = Run.create(tmp_path, "second", "a: 2\n")  # training goes on regardless
    assert second.info()["status"] == "running"

    (tmp_path / "index.sqlite").unlink()
    assert RunIndex(tmp_path).rebuild() == 2
    assert {r["name"] for r in RunIndex(tmp_path).list()} == {"first", "second"}
