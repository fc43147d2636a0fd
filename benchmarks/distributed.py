"""Data-parallel training: does `--nproc 2` match one process, and what does a step cost?

Part 1, the recipe the way a user runs it: `layerwise train R` and `layerwise train R --nproc 2`
(real processes, torchrun, gloo, threads 1 each), interleaved for `--rounds`. Reported: the max
abs difference of the final weights and of every logged loss/accuracy, and the step time of each
(each epoch's `time` in metrics.jsonl over its steps: training only, no start-up).

Part 2, the gradient exchange alone: a plain PyTorch loop on the same MLP and data in 2
processes, once with `DistributedDataParallel` and once with the gradients averaged by hand in
one flat all-reduce (what layerwise does), interleaved epoch by epoch, and the same loop in one
process. So "hand vs DDP" is measured in the same processes on the same batches.

On 2 shared CPU cores a speed-up is not expected: the two processes take both cores that one
process with 2 threads would use, each step adds a collective (and, in layerwise, a second tiny
one to agree on stopping), and the rest of the machine's load falls on them too.

Run: .venv/bin/python benchmarks/distributed.py [--rounds 2] [--epochs 5] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from _common import RESULTS_DIR, machine, table, write_json

RECIPE = """\
name: ddp_bench
seed: 0
data: {{name: digits, batch_size: 64, val_fraction: 0.2}}
model: {{name: mlp, args: {{hidden: [256, 256]}}}}
train: {{epochs: {epochs}, threads: 1, optimizer: {{name: sgd, lr: 0.05, momentum: 0.9}}}}
doctor: {{data_checks: false}}
track: {{tensorboard: false}}
"""
LAYERWISE = [sys.executable, "-m", "layerwise.cli"]


# ------------------------------------------------------------------ part 1: layerwise train
def train_run(recipe: Path, root: Path, nproc: int | None) -> dict:
    args = [*LAYERWISE, "train", str(recipe), "--runs-dir", str(root), "--quiet"]
    args += ["--nproc", str(nproc)] if nproc else []
    started = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, env={**os.environ})
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    lines = [
        json.loads(x) for x in (root / "ddp_bench" / "metrics.jsonl").read_text().split("\n") if x
    ]
    train = [r for r in lines if r["split"] == "train"]
    steps = [b["step"] - a["step"] for a, b in zip([{"step": 0}, *train], train, strict=False)]
    step_ms = [1000 * r["time"] / n for r, n in zip(train, steps, strict=True)]
    return {"wall_s": wall, "step_ms": step_ms, "metrics": lines, "root": root}


def last_weights(root: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    from layerwise.runs import Run

    run = Run.open("ddp_bench", root=root)
    return load_file(run.checkpoints.latest("last") / "weights.safetensors")


def compare_runs(one: dict, two: dict) -> dict:
    a, b = last_weights(one["root"]), last_weights(two["root"])
    weight_diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    metric_diff = 0.0
    for r1, r2 in zip(one["metrics"], two["metrics"], strict=True):
        for key in ("loss", "accuracy"):
            metric_diff = max(metric_diff, abs(r1[key] - r2[key]))
    return {"max_abs_weight_difference": weight_diff, "max_abs_metric_difference": metric_diff}


# ----------------------------------------------------------------- part 2: the plain loops
def plain_worker(epochs: int, out: Path) -> None:
    """Run under torchrun (or alone): DDP and hand all-reduce, interleaved per epoch."""
    import torch.distributed as dist
    from sklearn.datasets import load_digits
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        dist.init_process_group("gloo")
    x, y = load_digits(return_X_y=True)
    x, y = torch.tensor(x / 16.0, dtype=torch.float32)[:1437], torch.tensor(y)[:1437]

    def make() -> torch.nn.Module:
        torch.manual_seed(0)
        return torch.nn.Sequential(
            torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
            torch.nn.ReLU(), torch.nn.Linear(256, 10),
        )  # fmt: skip

    def hand_average(model: torch.nn.Module) -> None:
        grads = [p.grad for p in model.parameters()]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= world
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    models = {"hand": make()}
    if world > 1:
        models["ddp"] = DistributedDataParallel(make())
    optimizers = {
        k: torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9) for k, m in models.items()
    }
    times: dict[str, list[float]] = {k: [] for k in models}
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))
        for kind, model in models.items():
            started, steps = time.perf_counter(), 0
            for lo in range(0, len(x), 64):
                index = order[lo : lo + 64].tensor_split(world)[rank]
                loss = torch.nn.functional.cross_entropy(model(x[index]), y[index])
                loss.backward()
                if kind == "hand" and world > 1:
                    hand_average(model)
                optimizers[kind].step()
                optimizers[kind].zero_grad()
                steps += 1
            if epoch:  # the first epoch warms up
                times[kind].append(1000 * (time.perf_counter() - started) / steps)
    if world > 1:
        same = max(
            float((p - q).abs().max())
            for p, q in zip(
                models["hand"].parameters(), models["ddp"].module.parameters(), strict=True
            )
        )
    else:
        same = None
    if rank == 0:
        out.write_text(json.dumps({"step_ms": times, "hand_vs_ddp_weight_difference": same}))
    if world > 1:
        dist.destroy_process_group()


def plain_loops(epochs: int, folder: Path) -> dict:
    results = {}
    for nproc in (1, 2):
        out = folder / f"plain_{nproc}.json"
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        command += [f"--nproc-per-node={nproc}", __file__, "--plain-worker", str(out)]
        command += ["--epochs", str(epochs)]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        subprocess.run(command, check=True, capture_output=True, env=env)
        results[nproc] = json.loads(out.read_text())
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="1 round of 2 epochs, no JSON")
    parser.add_argument("--plain-worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_worker is not None:
        return plain_worker(args.epochs, args.plain_worker)
    if args.quick:
        args.rounds, args.epochs = 1, 2

    info = machine()
    loads = [list(os.getloadavg())]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        recipe = folder / "ddp_bench.yaml"
        recipe.write_text(RECIPE.format(epochs=args.epochs))
        rounds = []
        for i in range(args.rounds):
            one = train_run(recipe, folder / f"one_{i}", None)
            two = train_run(recipe, folder / f"two_{i}", 2)
            loads.append(list(os.getloadavg()))
            rounds.append({"one": one, "two": two, **compare_runs(one, two)})
        plain = plain_loops(args.epochs, folder)
        loads.append(list(os.getloadavg()))

    def median_step(kind: str) -> float:
        return statistics.median(ms for r in rounds for ms in r[kind]["step_ms"][1:])

    one_ms, two_ms = median_step("one"), median_step("two")
    plain_one = statistics.median(plain[1]["step_ms"]["hand"])
    plain_hand = statistics.median(plain[2]["step_ms"]["hand"])
    plain_ddp = statistics.median(plain[2]["step_ms"]["ddp"])
    weight_diff = max(r["max_abs_weight_difference"] for r in rounds)
    metric_diff = max(r["max_abs_metric_difference"] for r in rounds)
    wall_one = statistics.median(r["one"]["wall_s"] for r in rounds)
    wall_two = statistics.median(r["two"]["wall_s"] for r in rounds)
    rows = [
        ["layerwise train, 1 process", f"{one_ms:.2f}", "1.00", f"{wall_one:.1f}"],
        ["layerwise train --nproc 2", f"{two_ms:.2f}", f"{two_ms / one_ms:.2f}", f"{wall_two:.1f}"],
        ["plain loop, 1 process", f"{plain_one:.2f}", "1.00", "-"],
        [
            "plain loop, 2 proc., hand all-reduce",
            f"{plain_hand:.2f}",
            f"{plain_hand / plain_one:.2f}",
            "-",
        ],
        ["plain loop, 2 proc., DDP", f"{plain_ddp:.2f}", f"{plain_ddp / plain_one:.2f}", "-"],
    ]
    print(table(["setup", "ms per step (median)", "vs 1 process", "wall s per run"], rows))
    hand_vs_ddp = plain[2]["hand_vs_ddp_weight_difference"]
    print(f"max abs weight difference, --nproc 2 vs 1 process: {weight_diff:.3g}")
    print(f"max abs difference of logged loss/accuracy: {metric_diff:.3g}")
    print(f"hand all-reduce vs DDP, max abs weight difference (plain loop): {hand_vs_ddp:.3g}")
    print(f"load average during the run: {loads}")
    write_json(
        None if args.quick else RESULTS_DIR / "distributed.json",
        {
            "machine": info,
            "load_average": loads,
            "recipe": RECIPE.format(epochs=args.epochs),
            "max_abs_weight_difference": weight_diff,
            "max_abs_metric_difference": metric_diff,
            "step_ms": {
                "layerwise_1": one_ms,
                "layerwise_nproc2": two_ms,
                "plain_1": plain_one,
                "plain_2_hand_allreduce": plain_hand,
                "plain_2_ddp": plain_ddp,
            },
            "hand_vs_ddp_weight_difference": plain[2]["hand_vs_ddp_weight_difference"],
            "rounds": [
                {
                    "step_ms_1": r["one"]["step_ms"],
                    "step_ms_2": r["two"]["step_ms"],
                    "wall_s_1": r["one"]["wall_s"],
                    "wall_s_2": r["two"]["wall_s"],
                    "max_abs_weight_difference": r["max_abs_weight_difference"],
                }
                for r in rounds
            ],
            "plain_step_ms": {str(k): v["step_ms"] for k, v in plain.items()},
        },
    )


if __name__ == "__main__":
    main()
