"""Data-parallel training in 2 real processes (torchrun, gloo on CPU) against one process.

One torchrun launch (tests/distributed_worker.py) trains a tiny MLP on a digits subset for 2
epochs; the same recipe trains in this process for reference; a copy of the 2-process run cut
back to its first epoch's checkpoint (as a kill during epoch 2 would leave it) is resumed here
by one process. Plots and report are skipped (see the worker).
Averaging gradients weighted by rows makes two processes apply the update one process applies
to the whole batch, so curves and weights agree to float rounding: TOLERANCE is 1e-5 (measured
~6e-8 on the weights, benchmarks/distributed.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import TensorDataset
from typer.testing import CliRunner

from distributed_worker import REPORTING
from layerwise import cli, experiment
from layerwise.data import make_batcher
from layerwise.data.batcher import LoaderBatcher, shard_rows
from layerwise.recipe import load_recipe
from layerwise.runs import Run
from layerwise.train import distributed as dist_mod

TOLERANCE = 1e-5
RECIPE = """\
name: ddp
seed: 0
data: {name: digits, batch_size: 32, val_fraction: 0.2, args: {subset: 300}}
model: {name: mlp, args: {hidden: [32]}}
train: {epochs: 2, threads: 1, optimizer: {name: sgd, lr: 0.1, momentum: 0.9}}
doctor: {data_checks: false, probe_every: 2}
track: {tensorboard: false}
"""
PROBED = ("act_mean", "act_std", "zero_frac", "dead_frac", "grad_norm", "update_ratio")
WORKER = Path(__file__).with_name("distributed_worker.py")
QUIET = {"progress": False, "echo": None}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """The reference run in this process, the 2-process launch, then its cut run resumed here."""
    root = tmp_path_factory.mktemp("distributed")
    recipe_path = root / "ddp.yaml"
    recipe_path.write_text(RECIPE)
    recipe = load_recipe(recipe_path)
    command = dist_mod.torchrun_command([], 2)
    command[command.index("-m", 3) :] = [str(WORKER), str(recipe_path), str(root)]
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        for name in REPORTING:
            patch.setattr(experiment, name, lambda *args, **kwargs: None)
        torch.set_num_threads(1)
        try:
            experiment.train(recipe, root / "single", **QUIET)
            done = subprocess.run(command, capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, done.stderr[-3000:]
            cut_after_first_epoch(root / "full", root / "cut")
            experiment.resume("ddp", root / "cut", **QUIET)  # 2 processes -> 1
        finally:
            torch.set_num_threads(threads)
    return root


def cut_after_first_epoch(source: Path, target: Path) -> None:
    """A copy of a finished 2-epoch run as if killed in epoch 2: its newest `last` checkpoint
    (epoch 2's) and epoch 2's metrics gone, its status `stopped`."""
    shutil.copytree(source, target)
    run = Run.open("ddp", root=target)
    newest = run.checkpoints.latest("last")
    assert newest is not None
    shutil.rmtree(newest)
    metrics = target / "ddp" / "metrics.jsonl"
    lines = [line for line in metrics.read_text().splitlines() if json.loads(line)["epoch"] == 1]
    metrics.write_text("".join(line + "\n" for line in lines))
    run.set_status("stopped")


def weights(root: Path) -> dict[str, torch.Tensor]:
    run = Run.open("ddp", root=root)
    return load_file(run.checkpoints.latest("last") / "weights.safetensors")


def curve(root: Path) -> list[tuple[str, int, float, float]]:
    lines = [json.loads(line) for line in (root / "ddp" / "metrics.jsonl").read_text().splitlines()]
    return [(r["split"], r.get("epoch"), r["loss"], r["accuracy"]) for r in lines]


def assert_same_curve(a: list, b: list) -> None:
    assert [row[:2] for row in a] == [row[:2] for row in b]
    for row_a, row_b in zip(a, b, strict=True):
        assert row_a[2] == pytest.approx(row_b[2], abs=TOLERANCE), (row_a, row_b)
        assert row_a[3] == pytest.approx(row_b[3], abs=TOLERANCE), (row_a, row_b)


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.mark.slow
def test_two_processes_match_one(runs: Path) -> None:
    single, full = curve(runs / "single"), curve(runs / "full")
    assert [row[0] for row in single] == ["train", "val", "train", "val", "test"]
    assert single[0][2] != pytest.approx(single[2][2], abs=1e-3)  # it learned: a real curve
    assert_same_curve(full, single)
    assert max_difference(weights(runs / "full"), weights(runs / "single")) < TOLERANCE


@pytest.mark.slow
def test_only_rank_zero_writes(runs: Path) -> None:
    assert sorted(p.name for p in (runs / "full").iterdir()) == ["ddp", "index.sqlite"]
    files = {p.relative_to(runs / "single").as_posix() for p in (runs / "single").rglob("*")}
    full = {p.relative_to(runs / "full").as_posix() for p in (runs / "full").rglob("*")}
    assert full == files  # the same run folder as one process writes, nothing more


@pytest.mark.slow
def test_probes_are_averaged_across_ranks(runs: Path) -> None:
    def steps(root: str) -> list[dict]:
        text = (runs / root / "ddp" / "probes.jsonl").read_text()
        return [r for r in map(json.loads, text.splitlines()) if r["kind"] == "step"]

    one, two = steps("single"), steps("full")
    assert [r["step"] for r in one] == [r["step"] for r in two]
    for a, b in zip(one, two, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], abs=TOLERANCE)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], abs=TOLERANCE)
        for name, stats in a["layers"].items():
            for key in PROBED:
                if key in stats:
                    assert b["layers"][name][key] == pytest.approx(stats[key], abs=1e-4)


@pytest.mark.slow
def test_resume_two_process_checkpoint_in_one(runs: Path) -> None:
    assert Run.open("ddp", root=runs / "cut").info()["status"] == "finished"
    assert max_difference(weights(runs / "cut"), weights(runs / "single")) < TOLERANCE
    assert_same_curve(curve(runs / "cut"), curve(runs / "single"))


# ------------------------------------------------------------------- fast: no process group
def test_shards_are_disjoint_and_cover_each_global_batch() -> None:
    x, y = torch.arange(70.0).reshape(35, 2), torch.arange(35)
    whole = make_batcher((x, y), batch_size=8, shuffle=True, seed=3)
    parts = [make_batcher((x, y), batch_size=8, shuffle=True, seed=3).shard(r, 2) for r in (0, 1)]
    for batcher in (whole, *parts):
        batcher.set_epoch(4)
    assert len(parts[0]) == len(parts[1]) == len(whole) == 5
    for (_, y_all), (_, y0), (_, y1) in zip(whole, *parts, strict=True):
        assert torch.equal(torch.cat([y0, y1]), y_all)  # rank 0 the first half, rank 1 the rest
    assert [len(y) for _, y in parts[1]] == [4, 4, 4, 4, 1]  # 35 = 4 * 8 + 3: split 2 + 1


def test_a_batch_smaller_than_the_ranks_is_padded() -> None:
    shards = [shard_rows(torch.tensor([7]), rank, 3) for rank in range(3)]
    assert [s.tolist() for s in shards] == [[7], [7], [7]]


def test_nproc_starts_torchrun_with_the_same_command(tmp_path, monkeypatch) -> None:
    (tmp_path / "r.yaml").write_text(RECIPE)
    started = []

    class Torchrun:  # stands in for subprocess.Popen
        def __init__(self, command: list[str], env: dict) -> None:
            started.append(command)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            pass

        def wait(self) -> int:
            return 3

    monkeypatch.setattr(dist_mod.subprocess, "Popen", Torchrun)
    monkeypatch.chdir(tmp_path)
    args = ["train", "r.yaml", "--nproc", "2", "--set", "train.epochs=1", "--quiet"]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 3  # torchrun's exit code is the command's
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    again = ["train", "r.yaml", "--set=train.epochs=1", "--runs-dir", "runs", "--quiet"]
    assert started == [[*torchrun, "--nproc-per-node=2", "-m", "layerwise.cli", *again]]
    assert not (tmp_path / "runs").exists()  # the parent only checks the recipe


def test_any_other_batcher_is_cut_after_loading() -> None:
    x, y = torch.arange(60.0).reshape(30, 2), torch.arange(30)
    loader = LoaderBatcher(TensorDataset(x, y), batch_size=8, shuffle=True, seed=1)
    parts = [dist_mod.Distributed(r, 2, r).shard(loader) for r in (0, 1)]
    for batcher in (loader, *parts):
        batcher.set_epoch(2)
    assert len(parts[0]) == len(loader) == 4
    for (x_all, y_all), (x0, y0), (x1, y1) in zip(loader, *parts, strict=True):
        assert torch.equal(torch.cat([y0, y1]), y_all)
        assert torch.equal(torch.cat([x0, x1]), x_all)
