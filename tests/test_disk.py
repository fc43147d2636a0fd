"""Full and read-only disks: a clear error, the last good checkpoint intact, the run marked failed
where run.json can still be written.

A full disk is a small tmpfs filled up mid-training; a file-size limit (RLIMIT_FSIZE, with SIGXFSZ
ignored so writes fail with EFBIG instead of killing the process) stops checkpoints but not the
small run.json; a read-only disk is the tmpfs remounted read-only. Mounting needs root with
CAP_SYS_ADMIN: those tests skip where `mount` is refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from layerwise import experiment
from layerwise.errors import RunError
from layerwise.recipe import parse_recipe
from layerwise.runs import Run, RunIndex
from layerwise.runs.atomic import atomic_torch_save
from layerwise.train import Callback

pytestmark = pytest.mark.slow

SRC = str(Path(__file__).parents[1] / "src")
RECIPE = """\
name: disk
seed: 1
data: {name: digits, batch_size: 32, args: {subset: 240}}
model: {name: mlp, args: {hidden: [16]}}
train: {epochs: 3}
doctor: {label_noise: false, data_checks: false}
"""
STEPS_PER_EPOCH = 6  # 192 training rows in batches of 32


@contextlib.contextmanager
def tmpfs(folder: Path, size: str) -> Iterator[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


class FillDisk(Callback):
    """At the end of step `step`, fill the filesystem of `folder` to the last byte."""

    def __init__(self, folder: Path, step: int) -> None:
        self.folder, self.step = folder, step

    def on_batch_end(self, trainer) -> None:
        if trainer.state.step != self.step:
            return
        fd = os.open(self.folder / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * 512)
        finally:
            os.close(fd)


def stray_temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".tmp")]


def test_full_disk_mid_training_keeps_the_last_checkpoint(tmp_path):
    with tmpfs(tmp_path / "disk", "4m") as disk:
        filled_at = STEPS_PER_EPOCH + 3
        with pytest.raises(RunError) as raised:
            experiment.train(
                parse_recipe(RECIPE),
                disk / "runs",
                progress=False,
                echo=None,
                callbacks=[FillDisk(disk, filled_at)],
            )
        assert "No space left on device" in raised.value.message
        assert str(disk / "runs" / "disk") in raised.value.message
        assert "free space" in raised.value.hint
        run = Run.open(disk / "runs" / "disk")
        _, state = run.load_checkpoint("last")  # checksums verified: intact
        assert state["train_state"]["step"] == STEPS_PER_EPOCH
        assert stray_temp_files(run.path) == []
        # The disk is still full, yet the run says it failed: the reserve made room for that.
        assert run.info()["status"] == "failed"
        assert RunIndex(disk / "runs").get("disk")["status"] == "failed"
        assert not (run.path / ".status-reserve").exists()
        # With room again the run resumes and finishes.
        (disk / "filler").unlink()
        resumed, _ = experiment.resume(run.path, progress=False, echo=None)
        assert resumed.info()["status"] == "finished"


def limited(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_file_size_limit_fails_the_run_cleanly(tmp_path):
    (tmp_path / "disk.yaml").write_text(RECIPE)
    proc = subprocess.run(
        [sys.executable, "-m", "layerwise.cli", "train", "disk.yaml", "--quiet"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": SRC},
        capture_output=True,
        text=True,
        preexec_fn=limited(20_000),  # run.json fits, the training state (~30 kB) does not
        timeout=600,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "File too large" in errors[0] and "state.pt" in errors[0]
    run_dir = tmp_path / "runs" / "disk"
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"
    assert not Run.open(run_dir).has_checkpoint("last")
    assert stray_temp_files(run_dir) == []


def test_torch_save_on_a_full_file_is_a_run_error(tmp_path):
    """torch's own writer says only 'unexpected pos'; the state is written as plain bytes."""
    code = (
        "import resource, signal, sys, torch\n"
        "from layerwise.runs.atomic import atomic_torch_save\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
        "try:\n"
        "    atomic_torch_save({'x': torch.zeros(10_000)}, sys.argv[1])\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    target = tmp_path / "state.pt"
    atomic_torch_save({"x": torch.ones(3)}, target)
    before = target.read_bytes()
    proc = subprocess.run(
        [sys.executable, "-c", code, str(target)],
        env={**os.environ, "PYTHONPATH": SRC},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.stdout.startswith("RunError cannot write"), proc.stdout + proc.stderr
    assert "File too large" in proc.stdout
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]


def test_read_only_disk(tmp_path):
    source = tmp_path / "source"
    experiment.train(parse_recipe(RECIPE), source / "runs", progress=False, echo=None)
    with tmpfs(tmp_path / "ro", "2m") as disk:
        shutil.copytree(source / "runs", disk / "runs")
        (disk / "disk.yaml").write_text(RECIPE)
        remount = subprocess.run(["mount", "-o", "remount,ro", str(disk)], capture_output=True)
        if remount.returncode != 0:
            pytest.skip(f"cannot remount read-only: {remount.stderr.decode().strip()}")
        snapshot = {p: p.read_bytes() for p in disk.rglob("*") if p.is_file()}

        def cli(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run(
                [sys.executable, "-m", "layerwise.cli", *args, "--runs-dir", str(disk / "runs")],
                cwd=disk,
                env={**os.environ, "PYTHONPATH": SRC},
                capture_output=True,
                text=True,
                timeout=600,
            )

        new = cli("train", "disk.yaml", "--quiet")
        assert new.returncode == 2, new.stderr
        assert "Traceback" not in new.stderr and "Read-only file system" in new.stderr
        listed = cli("runs", "ls")
        assert listed.returncode == 0, listed.stderr
        assert "disk" in listed.stdout and "finished" in listed.stdout
        shown = cli("runs", "show", "disk")
        assert shown.returncode == 0, shown.stderr
        evaluated = cli("evaluate", "disk")  # the figure is computed; appending it is refused
        assert evaluated.returncode == 2, evaluated.stderr
        assert "Traceback" not in evaluated.stderr and "Read-only" in evaluated.stderr
        assert {p: p.read_bytes() for p in disk.rglob("*") if p.is_file()} == snapshot
