"""A run still marked `running` whose process is gone is shown as `interrupted`; the reserve file
that lets a run on a full disk still say it failed comes and goes with the `running` status.

The full-disk case itself (a tmpfs filled to the last byte mid-training) is in tests/test_disk.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from layerwise import cli
from layerwise.errors import RunError
from layerwise.runs import Run, RunIndex, shown_status
from layerwise.runs import run as run_module
from layerwise.runs.liveness import RESERVE_BYTES, RESERVE_NAME

RECIPE = "name: ghost\nmodel: {name: mlp}\ndata: {name: digits}\n"


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def layerwise(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    argv, sys.argv = sys.argv, ["layerwise", *args]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            try:
                cli.main()
            except SystemExit as exc:
                code = int(exc.code or 0)
    finally:
        sys.argv = argv
    return code, out.getvalue()


def test_a_running_run_whose_process_is_gone_shows_as_interrupted(tmp_path):
    run = Run.create(tmp_path / "runs", "ghost", RECIPE)
    info = run.info()
    assert info["pid"] > 0 and info["host"]
    assert shown_status(info) == "running"  # this very process
    run.info_path.write_text(json.dumps({**info, "pid": dead_pid()}))
    saved = run.info_path.read_bytes()

    assert shown_status(run.info()) == "interrupted"
    assert shown_status(RunIndex(tmp_path / "runs").get("ghost")) == "interrupted"  # via run.json
    code, listed = layerwise("runs", "ls", "--runs-dir", str(tmp_path / "runs"))
    assert code == 0 and "interrupted" in listed and "running" not in listed
    code, shown = layerwise("runs", "show", "ghost", "--runs-dir", str(tmp_path / "runs"))
    assert code == 0 and "ghost  interrupted" in shown
    assert run.info_path.read_bytes() == saved  # showing it changes nothing


def test_the_index_defers_to_run_json_and_other_hosts_are_not_judged(tmp_path):
    run = Run.create(tmp_path / "runs", "ghost", RECIPE)
    row = RunIndex(tmp_path / "runs").get("ghost")
    info = run.info()
    # run.json says failed while the index (not updated on a full disk) still says running
    run.info_path.write_text(json.dumps({**info, "status": "failed"}))
    assert row["status"] == "running" and shown_status(row) == "failed"
    other_host = {**info, "pid": dead_pid(), "host": info["host"] + "-elsewhere"}
    assert shown_status(other_host) == "running"
    assert shown_status({"status": "running"}) == "running"  # written before pids were recorded
    assert shown_status({**info, "status": "finished", "pid": dead_pid()}) == "finished"


def test_the_reserve_exists_only_while_running(tmp_path):
    run = Run.create(tmp_path / "runs", "ghost", RECIPE)
    reserve = run.path / RESERVE_NAME
    run.set_status("running")
    assert reserve.stat().st_size == RESERVE_BYTES
    run.set_status("finished")
    assert not reserve.exists()


def test_a_refused_status_write_is_retried_once_after_freeing_the_reserve(tmp_path, monkeypatch):
    """What the tmpfs test in test_disk.py shows for real, here without a mount: the first
    write of run.json fails as on a full disk, the second (after the reserve is gone) works."""
    run = Run.create(tmp_path / "runs", "ghost", RECIPE)
    run.set_status("running")
    real_write = run_module.atomic_write_json
    attempts: list[bool] = []

    def full_until_freed(path: Path, obj):
        attempts.append((run.path / RESERVE_NAME).exists())
        if attempts[-1]:
            raise RunError(f"cannot write '{path}': No space left on device", hint="free space")
        return real_write(path, obj)

    monkeypatch.setattr(run_module, "atomic_write_json", full_until_freed)
    run.set_status("failed")
    assert attempts == [True, False]
    assert json.loads(run.info_path.read_text())["status"] == "failed"

    with pytest.raises(RunError, match="No space left"):  # no reserve left: the error stands
        monkeypatch.setattr(
            run_module,
            "atomic_write_json",
            lambda path, obj: (_ for _ in ()).throw(RunError("No space left on device")),
        )
        run.set_status("stopped")
