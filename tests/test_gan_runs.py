"""GAN runs end to end on a 600-digit MNIST subset with tiny networks (slow: they train).

A conditional GAN recipe trains into a run folder with a sample grid per epoch, the Fréchet
curve against its floor, an interpolation strip and the report; `layerwise generate` draws a
class from it; and a run SIGKILLed mid-epoch resumes to exactly the weights and logs of an
uninterrupted one (both optimizers' states and the spectral-norm vectors included).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from layerwise.cli import app
from layerwise.recipe import parse_recipe
from layerwise.runs import Run

pytestmark = pytest.mark.slow

RECIPE = """
name: tiny_cgan
data: {name: mnist, args: {subset: 600}, batch_size: 64}
model: {name: cgan, args: {latent_dim: 8, width: 4}}
train:
  epochs: 2
  checkpoint_every_steps: 4
  optimizer: {name: adam, lr: 0.0002, args: {discriminator_lr: 0.0004, betas: [0.5, 0.999]}}
  loss: {label_smoothing: 0.1}
  metrics: []
doctor: {data_checks: false, label_noise: false, live: false}
"""


def test_a_cgan_run_has_grids_scores_report_and_generates(tmp_path: Path) -> None:
    from layerwise.experiment import train

    run, metrics = train(parse_recipe(RECIPE), tmp_path, progress=False, echo=None)
    plots = {p.name for p in run.plots_dir.glob("*.png")}
    assert {"samples_epoch_001.png", "samples_epoch_002.png", "frechet.png"} <= plots
    assert {"interpolation.png", "samples.png", "curves.png"} <= plots
    report = run.report_path.read_text(encoding="utf-8")
    assert "samples_epoch_002" in report and "interpolation" in report
    rows = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in rows if r.get("split") == "train"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    for row in epochs:
        assert row["fid"] > 0 and 0 <= row["class_accuracy"] <= 1
        per_class = [row[f"class_accuracy_{k}"] for k in range(10)]  # every class, every epoch
        assert row["class_accuracy_min"] == min(per_class)
        assert {"d_loss", "g_loss", "lr_discriminator", "lr_generator"} <= set(row)
    assert 0 < metrics["fid_floor"] < metrics["fid"]
    assert {f"class_accuracy_{k}" for k in range(10)} <= set(metrics)
    info = run.info()
    assert info["status"] == "finished" and info["best_metric"].keys() >= {"fid"}

    runner = CliRunner()
    out = tmp_path / "threes.png"
    args = ["generate", "tiny_cgan", "--n", "16", "--label", "3", "--output", str(out)]
    result = runner.invoke(app, [*args, "--runs-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (2 * (4 * 30 + 2), 2 * (4 * 30 + 2))


CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from layerwise import experiment
    from layerwise.recipe import parse_recipe
    from layerwise.train import Callback

    class KillAt(Callback):
        def __init__(self, step):
            self.step = step

        def on_batch_end(self, trainer):
            if trainer.state.step == self.step:
                os.kill(os.getpid(), signal.SIGKILL)

    mode, root = sys.argv[1], sys.argv[2]
    recipe = parse_recipe(open(os.path.join(root, "r.yaml")).read())
    if mode == "resume":
        experiment.resume("tiny_cgan", os.path.join(root, "runs"), progress=False, echo=None)
    else:
        kill = [KillAt(int(mode[5:]))] if mode.startswith("kill@") else []
        experiment.train(recipe, os.path.join(root, "runs"), progress=False, echo=None,
                         callbacks=kill)
    """
)


def _child(script: Path, mode: str, root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(script), mode, str(root)],
        capture_output=True,
        text=True,
        timeout=600,
        env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
    )


def test_a_sigkilled_gan_run_resumes_bit_for_bit(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    recipe = RECIPE.replace("epochs: 2", "epochs: 3")
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "r.yaml").write_text(recipe)
    # 10 steps per epoch: step 18 is inside epoch 2, two steps after the checkpoint at step 16.
    killed = _child(script, "kill@18", tmp_path / "a")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    _, saved = Run(tmp_path / "a" / "runs" / "tiny_cgan").load_checkpoint("last")
    assert saved["train_state"] == {"epoch": 1, "step": 16, "batch_in_epoch": 6}
    assert set(saved["optimizers"]) == {"discriminator", "generator"}
    resumed = _child(script, "resume", tmp_path / "a")
    assert resumed.returncode == 0, resumed.stderr
    fresh = _child(script, "fresh", tmp_path / "b")
    assert fresh.returncode == 0, fresh.stderr

    runs = [Run(tmp_path / name / "runs" / "tiny_cgan") for name in ("a", "b")]
    (wa, _), (wb, _) = (r.load_checkpoint("last") for r in runs)
    assert wa.keys() == wb.keys() and any("parametrizations" in k for k in wa)
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key

    def logs(run: Run) -> list[dict]:
        rows = [json.loads(x) for x in (run.path / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k != "time"} for r in rows]

    assert logs(runs[0]) == logs(runs[1])  # d_loss, g_loss, fid ... to the last bit
