"""SIGKILL inside a checkpoint save, at exact instants, then resume: bit for bit every time.

A hook in `layerwise.runs.store` is called at each stage of a save (weights written, state
written, manifest written, folder renamed into place, old folders pruned). The child process
counts those calls and kills itself with SIGKILL at the N-th, so each instant is hit exactly,
including the ones between two files of the same checkpoint that used to break resume.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from layerwise.runs import Run

pytestmark = pytest.mark.slow

RECIPE = """
name: k
data: {name: digits, args: {subset: 240}, batch_size: 32, val_fraction: 0.2}
model: {name: mlp, args: {hidden: [16]}}
train: {epochs: 3, checkpoint_every_steps: 2}
doctor: {probes: false, data_checks: false, label_noise: false, live: false}
"""

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from layerwise import experiment
    from layerwise.recipe import parse_recipe
    from layerwise.runs import store

    mode, root, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    stages = []

    def hook(stage):
        stages.append(stage)
        if len(stages) == kill_at:
            print("KILLED AT", stage, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    store.STAGE_HOOK = hook
    if mode == "train":
        recipe = parse_recipe(open(os.path.join(root, "k.yaml")).read())
        experiment.train(recipe, os.path.join(root, "runs"), progress=False, echo=None)
    else:
        experiment.resume("k", os.path.join(root, "runs"), progress=False, echo=None)
    print("STAGES", len(stages))
    """
)


def _child(tmp_path: Path, mode: str, root: Path, kill_at: int = 0) -> subprocess.CompletedProcess:
    script = tmp_path / "child.py"
    script.write_text(SCRIPT)
    return subprocess.run(
        [sys.executable, str(script), mode, str(root), str(kill_at)],
        capture_output=True,
        text=True,
        timeout=600,
    )


def _final_weights(root: Path) -> dict[str, torch.Tensor]:
    weights, _ = Run(root / "runs" / "k").load_checkpoint("last")
    return weights


def test_a_kill_at_each_stage_of_a_save_resumes_bit_for_bit(tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    reference.mkdir()
    (reference / "k.yaml").write_text(RECIPE)
    done = _child(tmp_path, "train", reference)
    assert done.returncode == 0, done.stderr
    total = int(done.stdout.split("STAGES")[-1])
    expected = _final_weights(reference)

    # The 2nd save's stages: 6 = weights, 7 = state, 8 = manifest, 9 = rename, 10 = prune
    # (saves every 2 steps; a best one, then a last one, at each epoch end); total - 3 lands in
    # the final save, after which there is nothing left to train.
    for kill_at in (6, 7, 8, 9, 10, total - 3):
        root = tmp_path / f"kill{kill_at}"
        root.mkdir()
        (root / "k.yaml").write_text(RECIPE)
        killed = _child(tmp_path, "train", root, kill_at)
        assert killed.returncode == -signal.SIGKILL, (kill_at, killed.stdout, killed.stderr)
        resumed = _child(tmp_path, "resume", root)
        assert resumed.returncode == 0, (kill_at, resumed.stderr)
        final = _final_weights(root)
        assert final.keys() == expected.keys()
        for key in final:
            assert torch.equal(final[key], expected[key]), (kill_at, key)
        leftovers = [p.name for p in (root / "runs/k/checkpoints").iterdir() if p.name[0] == "."]
        assert leftovers == [], leftovers


def test_evaluate_on_a_damaged_newest_checkpoint_warns_in_one_line_and_uses_the_older(
    tmp_path: Path,
) -> None:
    root = tmp_path / "r"
    root.mkdir()
    (root / "k.yaml").write_text(RECIPE)
    assert _child(tmp_path, "train", root).returncode == 0
    run = Run(root / "runs" / "k")
    newest, older = run.checkpoints.entries("last")
    weights = newest / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0x10  # one bit in the last tensor
    weights.write_bytes(bytes(data))
    before = {p: p.read_bytes() for p in run.checkpoints_dir.rglob("*") if p.is_file()}

    evaluated = subprocess.run(
        [sys.executable, "-m", "layerwise.cli", "evaluate", "k", "--runs-dir", str(root / "runs")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert evaluated.returncode == 0, evaluated.stderr
    warning = [line for line in evaluated.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1, evaluated.stderr
    assert newest.name in warning[0] and older.name in warning[0] and "checksum" in warning[0]
    assert "Warning" not in evaluated.stderr and ".py:" not in evaluated.stderr
    assert "accuracy" in evaluated.stdout
    after = {p: p.read_bytes() for p in run.checkpoints_dir.rglob("*") if p.is_file()}
    assert after == before  # evaluate reads; it never renames or rewrites a checkpoint
