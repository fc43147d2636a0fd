"""SIGINT and SIGTERM during `layerwise train`.

The first signal checkpoints at the next step boundary, marks the run `stopped`, prints how to
resume and exits 128+signal; a second one exits at once; resuming ends bit for bit where an
uninterrupted run ends. The signals are real (`os.kill`): sent at a chosen step by a callback of
the training (deterministic; the console entry point runs in this process), or from outside to a
`layerwise train` subprocess while it trains.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from layerwise import cli, experiment
from layerwise.recipe import parse_recipe
from layerwise.runs import Run
from layerwise.train import Callback

pytestmark = pytest.mark.slow

SRC = str(Path(__file__).parents[1] / "src")
RECIPE = """\
name: sig
seed: 3
data: {name: digits, batch_size: 32, val_fraction: 0.2, args: {subset: 240}}
model: {name: mlp, args: {hidden: [16], dropout: 0.2}}
train: {epochs: 3}
doctor: {label_noise: false, data_checks: false}
"""
STEPS_PER_EPOCH = 6  # 192 training rows in batches of 32
MID_SECOND_EPOCH = STEPS_PER_EPOCH + 2


class SignalAt(Callback):
    """Send `name` to this process `times` times at the end of step `step`."""

    def __init__(self, step: int, name: str, times: int = 1) -> None:
        self.step, self.number, self.times = step, getattr(signal, name), times

    def on_batch_end(self, trainer) -> None:
        if trainer.state.step == self.step:
            for _ in range(self.times):
                os.kill(os.getpid(), self.number)


def train_with_signal(folder: Path, monkeypatch, signal_at: SignalAt) -> tuple[int, str]:
    """`layerwise train sig.yaml` through the console entry point; returns (exit code, stderr)."""
    (folder / "sig.yaml").write_text(RECIPE)
    monkeypatch.setattr(
        experiment, "train", functools.partial(experiment.train, callbacks=[signal_at])
    )
    monkeypatch.setattr(sys, "argv", ["layerwise", "train", "sig.yaml", "--quiet"])
    monkeypatch.chdir(folder)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exited:
        cli.main()
    return exited.value.code, err.getvalue()


# A `layerwise train` subprocess that, from a given step on, writes a marker and slows down, so a
# signal sent from outside lands mid-training.
SLOW_DRIVER = """
import functools, sys, time
from layerwise import cli, experiment
from layerwise.train import Callback

slow_from = int(sys.argv[1])

class Slow(Callback):
    def on_batch_end(self, trainer):
        if trainer.state.step >= slow_from:
            open("marker", "a").close()
            time.sleep(0.3)

experiment.train = functools.partial(experiment.train, callbacks=[Slow()])
sys.argv = ["layerwise", "train", "sig.yaml", "--quiet"]
cli.main()
"""


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, torch.Tensor]:
    """The final weights of the same recipe trained without interruption."""
    root = tmp_path_factory.mktemp("reference")
    run, _ = experiment.train(parse_recipe(RECIPE), root, progress=False, echo=None)
    return run.load_checkpoint("last")[0]


def resume_and_compare(folder: Path, reference: dict[str, torch.Tensor]) -> None:
    run, _ = experiment.resume("sig", folder / "runs", progress=False, echo=None)
    assert run.info()["status"] == "finished"
    weights = run.load_checkpoint("last")[0]
    assert weights.keys() == reference.keys()
    for key, value in reference.items():
        assert torch.equal(weights[key], value), key
    epochs = [r for r in run.read_metrics() if r.get("split") == "train"]
    assert [r["epoch"] for r in epochs] == [1, 2, 3]


def status(folder: Path) -> str:
    return json.loads((folder / "runs" / "sig" / "run.json").read_text())["status"]


@pytest.mark.parametrize(("name", "code"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_signal_checkpoints_at_the_step_and_resumes_bitwise(
    tmp_path, monkeypatch, reference, name, code
):
    handler_before = signal.getsignal(signal.SIGINT)  # pytest-xdist workers ignore SIGINT
    exit_code, stderr = train_with_signal(tmp_path, monkeypatch, SignalAt(MID_SECOND_EPOCH, name))
    assert exit_code == code, stderr
    assert stderr.splitlines() == [
        f"stopped by {name} at step {MID_SECOND_EPOCH} (1 epoch(s) complete); checkpoint saved; "
        "continue with: layerwise train --resume sig"
    ]
    assert status(tmp_path) == "stopped"
    assert signal.getsignal(signal.SIGINT) is handler_before  # handlers given back
    _, state = Run.open(tmp_path / "runs" / "sig").load_checkpoint("last")
    assert state["train_state"] == {"epoch": 1, "step": MID_SECOND_EPOCH, "batch_in_epoch": 2}
    resume_and_compare(tmp_path, reference)


def test_second_sigint_exits_at_once_and_loses_nothing(tmp_path, monkeypatch, reference):
    signal_at = SignalAt(MID_SECOND_EPOCH, "SIGINT", times=2)
    exit_code, stderr = train_with_signal(tmp_path, monkeypatch, signal_at)
    assert exit_code == 130, stderr
    assert stderr.splitlines() == [
        "second SIGINT: stopped at once; continue with: layerwise train --resume sig"
    ]
    assert status(tmp_path) == "stopped"
    # No checkpoint at the signal's step: the one of the first epoch's end is intact.
    _, state = Run.open(tmp_path / "runs" / "sig").load_checkpoint("last")
    assert state["train_state"]["step"] == STEPS_PER_EPOCH
    resume_and_compare(tmp_path, reference)


@pytest.mark.parametrize("name", ["SIGTERM"])
def test_signal_from_outside_to_a_training_process(tmp_path, reference, name):
    (tmp_path / "sig.yaml").write_text(RECIPE)
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_DRIVER, str(STEPS_PER_EPOCH + 1)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": SRC},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not (tmp_path / "marker").exists() and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(getattr(signal, name))
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 128 + getattr(signal, name), stderr
    assert f"stopped by {name}" in stderr and "checkpoint saved" in stderr
    assert "Traceback" not in stderr
    assert status(tmp_path) == "stopped"
    _, state = Run.open(tmp_path / "runs" / "sig").load_checkpoint("last")
    assert STEPS_PER_EPOCH < state["train_state"]["step"] < 3 * STEPS_PER_EPOCH
    resume_and_compare(tmp_path, reference)
