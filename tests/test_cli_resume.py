"""A run killed with SIGKILL mid-epoch resumes to exactly the weights of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from layerwise.runs import Run

pytestmark = pytest.mark.slow  # real processes killed and resumed: make test, not make test-fast

RECIPE = """
name: {name}
seed: 5
data: {{name: digits, batch_size: 16, val_fraction: 0.1}}
model: {{name: mlp, args: {{hidden: [256, 256], dropout: 0.2}}}}
train:
  epochs: {epochs}
  optimizer: {{name: adam, lr: 0.001}}
  schedule: {{name: onecycle}}
  checkpoint_every_steps: 20
"""


def layerwise(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "layerwise.cli", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")},
    )


def finish(process: subprocess.Popen) -> str:
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    return stdout


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tmp_path):
    epochs = 12
    (tmp_path / "a.yaml").write_text(RECIPE.format(name="a", epochs=epochs))
    (tmp_path / "b.yaml").write_text(RECIPE.format(name="b", epochs=epochs))

    victim = layerwise("train", "b.yaml", "--quiet", cwd=tmp_path)
    run_b = tmp_path / "runs" / "b"
    deadline = time.monotonic() + 120
    # Kill once an epoch has been logged and a mid-epoch checkpoint written after it.
    while time.monotonic() < deadline:
        metrics = run_b / "metrics.jsonl"
        if metrics.exists() and metrics.read_text().count("\n") >= 2:
            break
        time.sleep(0.01)
    time.sleep(0.05)  # land somewhere inside a later epoch
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    info = json.loads((run_b / "run.json").read_text())
    assert info["status"] == "running", "the run finished before it could be killed"

    reference = layerwise("train", "a.yaml", "--quiet", cwd=tmp_path)
    finish(reference)
    resumed = finish(layerwise("train", "--resume", "b", "--quiet", cwd=tmp_path))
    assert "test accuracy" in resumed

    final_a, _ = Run(tmp_path / "runs" / "a").load_checkpoint("last")
    final_b, _ = Run(run_b).load_checkpoint("last")
    assert final_a.keys() == final_b.keys()
    for key in final_a:
        assert final_a[key].equal(final_b[key]), key

    lines = [json.loads(line) for line in (run_b / "metrics.jsonl").read_text().splitlines()]
    train_epochs = [r["epoch"] for r in lines if r["split"] == "train"]
    assert train_epochs == list(range(1, epochs + 1)), "replayed epochs were logged twice"


def test_resume_refuses_a_changed_recipe(tmp_path):
    (tmp_path / "c.yaml").write_text(RECIPE.format(name="c", epochs=1))
    finish(layerwise("train", "c.yaml", "--quiet", cwd=tmp_path))
    changed = layerwise("train", "c.yaml", "--resume", "c", "--set", "train.epochs=3", cwd=tmp_path)
    _stdout, stderr = changed.communicate(timeout=120)
    assert changed.returncode == 2
    assert "train.epochs: 1 -> 3" in stderr
    assert "Traceback" not in stderr
    assert Run(tmp_path / "runs" / "c").has_checkpoint("last")
