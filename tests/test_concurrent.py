"""Concurrent use: several processes on one runs folder.

Two `layerwise train` of the same recipe started together get distinct folders, `runs ls` works
while a training writes, and the SQLite run index (WAL mode, busy timeout) loses no row when
several processes write it at once.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from layerwise import cli
from layerwise.runs import RunIndex

SRC = str(Path(__file__).parents[1] / "src")
ENV = {**os.environ, "PYTHONPATH": SRC}
TINY = """\
name: twin
seed: 0
data: {name: digits, batch_size: 64, args: {subset: 200}}
model: {name: mlp, args: {hidden: [16]}}
train: {epochs: 2}
doctor: {label_noise: false}
"""

WRITER = """
import sys
from layerwise.runs.index import RunIndex
root, who, rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
index = RunIndex(root)
for i in range(rows):
    index.upsert({"name": f"{who}-{i}", "path": root, "status": "running", "created": str(i)})
    index.upsert({"name": "shared", "path": root, "status": who, "created": "0"})
    if i % 10 == 0:
        index.list()
"""


def test_index_is_in_wal_mode_with_a_busy_timeout(tmp_path):
    index = RunIndex(tmp_path)
    index.upsert({"name": "a", "path": str(tmp_path), "status": "running"})
    with sqlite3.connect(index.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with index._connect() as conn:
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 30_000


def test_index_waits_for_a_writer_instead_of_failing(tmp_path):
    index = RunIndex(tmp_path, timeout=5.0)
    index.upsert({"name": "a", "path": str(tmp_path), "status": "running"})
    holder = sqlite3.connect(index.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process in the middle of a write
    holder.execute("UPDATE runs SET status = 'held' WHERE name = 'a'")
    assert [row["status"] for row in index.list()] == ["running"]  # readers do not wait
    impatient = RunIndex(tmp_path, timeout=0.2)
    with pytest.raises(Exception, match="another process holds the index"):
        impatient.upsert({"name": "b", "path": str(tmp_path), "status": "running"})
    holder.execute("COMMIT")
    holder.close()
    index.upsert({"name": "b", "path": str(tmp_path), "status": "running"})
    assert {row["name"]: row["status"] for row in index.list()} == {"a": "held", "b": "running"}


@pytest.mark.slow
def test_index_survives_several_writing_processes(tmp_path):
    writers, rows = 4, 150
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path), f"w{n}", str(rows)],
            env=ENV,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(writers)
    ]
    for proc in procs:
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
    listed = RunIndex(tmp_path).list()
    names = {row["name"] for row in listed}
    assert names == {f"w{n}-{i}" for n in range(writers) for i in range(rows)} | {"shared"}
    assert len(listed) == writers * rows + 1
    with sqlite3.connect(RunIndex(tmp_path).path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def train_process(cwd: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "layerwise.cli", "train", "twin.yaml", "--quiet", *extra]
    return subprocess.Popen(
        command, cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.mark.slow
def test_two_trainings_of_one_recipe_get_distinct_folders(tmp_path):
    (tmp_path / "twin.yaml").write_text(TINY)
    first, second = train_process(tmp_path), train_process(tmp_path)
    for proc in (first, second):
        _, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr
    runs = tmp_path / "runs"
    assert sorted(p.name for p in runs.iterdir() if p.is_dir()) == ["twin", "twin-2"]
    for name in ("twin", "twin-2"):
        info = json.loads((runs / name / "run.json").read_text())
        assert info["name"] == name and info["status"] == "finished"
        assert (runs / name / "metrics.jsonl").read_text().count('"split": "test"') == 1
    indexed = {row["name"]: row["status"] for row in RunIndex(runs).list()}
    assert indexed == {"twin": "finished", "twin-2": "finished"}


@pytest.mark.slow
def test_runs_ls_while_a_run_trains(tmp_path):
    (tmp_path / "twin.yaml").write_text(TINY)
    proc = train_process(tmp_path, "--set", "train.epochs=60")
    runner, seen = CliRunner(), set()
    try:
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            if (tmp_path / "runs" / "index.sqlite").exists():
                result = runner.invoke(
                    cli.app, ["runs", "ls", "--runs-dir", str(tmp_path / "runs")]
                )
                assert result.exit_code == 0, result.output
                seen |= {s for s in ("running", "finished") if s in result.output}
            time.sleep(0.2)
        _, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "running" in seen
