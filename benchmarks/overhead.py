"""Framework overhead: `Trainer.fit` against a hand-written PyTorch loop, on real MNIST.

For each (model, batch size) cell, five contenders train their own copy of one initialisation
with the same fused Adam (built by `create_optimizer`, as the Trainer builds it) on the same
rows, one "epoch" of `steps` batches at a time:

- `hand`: forward, loss, backward, step, zero_grad, batches cut from in-memory tensors with a
  permutation index, the loss summed on the device (read once at the end of the epoch);
- `trainer`: `Trainer.fit` with `metrics=[]`, so it does the same work as `hand`;
- `trainer+acc`: `Trainer.fit` with `metrics=["accuracy"]` (the accuracy counted on the device);
- `dataloader`: the hand loop fed by `DataLoader(TensorDataset(x, y), shuffle=True)`;
- `hand-again`: a second, independent `hand` (an A/A test): `hand-again / hand` shows how far
  two identical loops drift apart on this machine, i.e. the noise floor of every ratio.

All run in one process, interleaved round by round (the starting contender rotates each round),
so drift and bursts of load from other processes hit them alike. This machine is shared: a round
counts only if other processes used at most `--max-load` cores (from /proc/stat) during each of
its runs, and rounds go on until `--rounds` have counted. The figure per contender is the median
over counted rounds of the time per step; the spread of `trainer / hand` is the interquartile
range of the rounds' paired ratios.

The Trainer is given the batcher `fit` would build (`make_batcher`), built once, as a user's
single `fit` call builds it once: the one-off conversion and NaN check of the inputs is reported
separately (`setup_ms`) instead of being charged to every round. Each round calls `fit` for one
more epoch, so the per-epoch work (shuffle, reading the epoch's loss) is included.

Run: .venv/bin/python benchmarks/overhead.py [--quick] [--cells mlp:32,cnn:128] [--rounds N]
     [--threads N] [--max-load CORES]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, OutsideLoad, machine, table, write_json
from layerwise.data import load_dataset, make_batcher, to_tensors
from layerwise.models import create_model
from layerwise.nn import materialize
from layerwise.train import Trainer, create_optimizer

# The models of recipes/mnist_mlp.yaml and recipes/mnist_cnn.yaml, and a linear classifier so
# cheap that the framework's own per-step cost stands out.
MODELS: dict[str, dict[str, Any]] = {
    "mlp": {"name": "mlp", "hidden": (512, 256), "dropout": 0.2},
    "cnn": {"name": "cnn", "variant": "vgg"},
    "linear": {"name": "mlp", "hidden": ()},
}
CONTENDERS = ("hand", "trainer", "trainer+acc", "dataloader", "hand-again")
OPTIMIZER = {"name": "adam", "lr": 1e-3}
# Steps per round: short runs (0.3-1.3 s each when the machine is quiet), so a burst of outside
# load spoils few rounds.
STEPS = {"mlp:32": 200, "mlp:128": 100, "cnn:32": 30, "cnn:128": 20, "linear:32": 1000}
# Rounds to count per cell: round-to-round noise here is 10-20%, so the cheap cells, where the
# framework's share is largest, get more rounds (each cell takes about 3-4 minutes).
ROUNDS = {"mlp:32": 100, "mlp:128": 80, "cnn:32": 60, "cnn:128": 40, "linear:32": 60}


def make_model(kind: str, example: torch.Tensor, state: dict | None = None) -> nn.Module:
    spec = dict(MODELS[kind])
    model = create_model(spec.pop("name"), num_classes=10, **spec)
    materialize(model, example)
    if state is not None:
        model.load_state_dict(state)
    return model


def hand_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    batches: Callable[[], Any],
) -> float:
    """The loop every PyTorch tutorial writes; returns the epoch's mean loss."""
    model.train()
    total = torch.zeros(())
    count = 0
    for x, y in batches():
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        total += loss.detach()
        count += 1
    return total.item() / count


def permutation_batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator
) -> Callable[[], Any]:
    def batches():
        perm = torch.randperm(len(x), generator=generator)
        for lo in range(0, len(x), batch_size):
            index = perm[lo : lo + batch_size]
            yield x.index_select(0, index), y.index_select(0, index)

    return batches


def build_contenders(
    kind: str, x: torch.Tensor, y: torch.Tensor, batch_size: int
) -> dict[str, Callable[[], float]]:
    """One epoch-runner per contender, each with its own model copy and optimizer."""
    torch.manual_seed(0)
    init = make_model(kind, x[:batch_size]).state_dict()

    def hand_runner(loader: Callable[[], Any]) -> Callable[[], float]:
        model = make_model(kind, x[:batch_size], init)
        optimizer = create_optimizer(OPTIMIZER["name"], model, lr=OPTIMIZER["lr"])
        loss_fn = nn.CrossEntropyLoss()
        return lambda: hand_epoch(model, optimizer, loss_fn, loader)

    def trainer_runner(metrics: list[str]) -> Callable[[], float]:
        model = make_model(kind, x[:batch_size], init)
        trainer = Trainer(
            model, optimizer=OPTIMIZER["name"], lr=OPTIMIZER["lr"], metrics=metrics, device="cpu"
        )
        batcher = make_batcher((x, y), batch_size=batch_size, shuffle=True, seed=0, device="cpu")

        def run() -> float:
            trainer.fit(batcher, epochs=trainer.state.epoch + 1, batch_size=batch_size)
            return trainer.history[-1]["loss"]

        return run

    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True)
    return {
        "hand": hand_runner(
            permutation_batches(x, y, batch_size, torch.Generator().manual_seed(0))
        ),
        "trainer": trainer_runner([]),
        "trainer+acc": trainer_runner(["accuracy"]),
        "dataloader": hand_runner(lambda: iter(loader)),
        "hand-again": hand_runner(
            permutation_batches(x, y, batch_size, torch.Generator().manual_seed(0))
        ),
    }


def measure_cell(
    kind: str,
    batch_size: int,
    x_all: torch.Tensor,
    y_all: torch.Tensor,
    steps: int,
    rounds: int,
    max_rounds: int,
    max_load: float,
) -> dict[str, Any]:
    """Interleaved rounds of every contender on the first `steps * batch_size` shuffled rows.

    A round counts only if other processes used at most `max_load` cores during each of its
    runs; rounds go on until `rounds` have counted or `max_rounds` were run. If too few count,
    all rounds are used and the cell is marked unfiltered.
    """
    rows = torch.randperm(len(x_all), generator=torch.Generator().manual_seed(1))
    rows = rows[: steps * batch_size]
    x, y = x_all[rows], y_all[rows]
    if kind != "cnn":
        x = x.reshape(len(x), -1)
    runners = build_contenders(kind, x, y, batch_size)
    for run in runners.values():  # warm-up: lazy setup, allocator and oneDNN caches
        run()
    all_rounds: list[dict[str, Any]] = []
    meter = OutsideLoad()
    while len(all_rounds) < max_rounds and sum(r["clean"] for r in all_rounds) < rounds:
        shift = len(all_rounds) % len(CONTENDERS)
        ms, load = {}, {}
        for name in CONTENDERS[shift:] + CONTENDERS[:shift]:
            gc.collect()
            meter.sample()
            start = time.perf_counter()
            runners[name]()
            ms[name] = (time.perf_counter() - start) / steps * 1e3
            load[name] = meter.sample()
        clean = all(not value > max_load for value in load.values())  # NaN: cannot tell, keep
        all_rounds.append({"ms_per_step": ms, "outside_load": load, "clean": clean})
    used = [r for r in all_rounds if r["clean"]]
    filtered = len(used) >= min(rounds, 5)
    if not filtered:
        used = all_rounds
    times = {name: [r["ms_per_step"][name] for r in used] for name in CONTENDERS}
    return {
        "model": kind,
        "batch_size": batch_size,
        "steps_per_round": steps,
        "rounds_run": len(all_rounds),
        "rounds_used": len(used),
        "filtered_by_outside_load": filtered,
        "median_ms_per_step": {name: statistics.median(ts) for name, ts in times.items()},
        "min_ms_per_step": {name: min(ts) for name, ts in times.items()},
        "ratios_over_hand": {
            name: _ratios(times[name], times["hand"]) for name in CONTENDERS if name != "hand"
        },
        "rounds": all_rounds,
    }


def _ratios(contender: list[float], hand: list[float]) -> dict[str, float]:
    """Ratio of the medians (the headline), of the minima, and the spread of per-round ratios."""
    paired = sorted(c / h for c, h in zip(contender, hand, strict=True))
    quartile = len(paired) // 4
    return {
        "of_medians": statistics.median(contender) / statistics.median(hand),
        "of_minima": min(contender) / min(hand),
        "per_round_median": statistics.median(paired),
        "per_round_q1": paired[quartile],
        "per_round_q3": paired[-1 - quartile],
        "per_round_min": paired[0],
        "per_round_max": paired[-1],
    }


def setup_cost(x: torch.Tensor, y: torch.Tensor) -> float:
    """Milliseconds `fit` spends once per call converting and checking the full training set."""
    start = time.perf_counter()
    to_tensors(x, y)
    return (time.perf_counter() - start) * 1e3


def summary_table(cells: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    headers = [
        "model",
        "batch",
        "hand ms",
        "trainer ms",
        "+accuracy ms",
        "DataLoader ms",
        "trainer/hand",
        "trainer-hand µs",
        "per-round IQR",
        "+accuracy/hand",
        "DataLoader/hand",
        "A/A",
    ]
    rows = []
    for c in cells:
        m, r = c["median_ms_per_step"], c["ratios_over_hand"]
        rows.append(
            [
                c["model"],
                str(c["batch_size"]),
                f"{m['hand']:.2f}",
                f"{m['trainer']:.2f}",
                f"{m['trainer+acc']:.2f}",
                f"{m['dataloader']:.2f}",
                f"{r['trainer']['of_medians']:.3f}",
                f"{1e3 * (m['trainer'] - m['hand']):+.0f}",
                f"{r['trainer']['per_round_q1']:.3f}-{r['trainer']['per_round_q3']:.3f}",
                f"{r['trainer+acc']['of_medians']:.3f}",
                f"{r['dataloader']['of_medians']:.2f}",
                f"{r['hand-again']['of_medians']:.3f}",
            ]
        )
    return headers, rows


def _describe_optimizer() -> str:
    optimizer = create_optimizer(OPTIMIZER["name"], nn.Linear(1, 1), lr=OPTIMIZER["lr"])
    return f"{type(optimizer).__name__}(lr={OPTIMIZER['lr']}, fused={optimizer.defaults['fused']})"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 short rounds per cell; no JSON")
    parser.add_argument("--rounds", type=int, default=None, help="rounds to count per cell")
    parser.add_argument(
        "--max-rounds",
        type=float,
        default=3.0,
        help="give up filtering after this many times --rounds",
    )
    parser.add_argument(
        "--max-load", type=float, default=0.1, help="discard rounds where others used more cores"
    )
    parser.add_argument("--cells", default="mlp:32,mlp:128,cnn:32,cnn:128,linear:32")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--out", type=Path, default=None, help="JSON path")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out or (None if args.quick else RESULTS_DIR / "overhead.json")

    data = load_dataset("mnist")
    x_all, y_all = data.train
    cells = []
    for item in args.cells.split(","):
        kind, batch = item.split(":")
        steps = STEPS.get(f"{kind}:{batch}", 50) // (5 if args.quick else 1)
        rounds = 2 if args.quick else args.rounds or ROUNDS.get(f"{kind}:{batch}", 40)
        max_rounds = int(rounds * max(args.max_rounds, 1.0))
        cell = measure_cell(
            kind, int(batch), x_all, y_all, steps, rounds, max_rounds, args.max_load
        )
        cells.append(cell)
        ratio = cell["ratios_over_hand"]["trainer"]["of_medians"]
        print(
            f"{kind} batch {batch}: trainer/hand {ratio:.3f} "
            f"({cell['rounds_used']} of {cell['rounds_run']} rounds used)",
            flush=True,
        )
    print(table(*summary_table(cells)))
    setup_ms = setup_cost(x_all, y_all)
    print(f"one-off input conversion and check in fit (60,000 MNIST rows): {setup_ms:.0f} ms")
    payload = {
        "benchmark": "overhead",
        "machine": machine(),
        "optimizer": _describe_optimizer(),
        "models": MODELS,
        "cells": cells,
        "setup_ms": setup_ms,
        "threads": torch.get_num_threads(),
        "max_outside_load": args.max_load,
        "quick": args.quick,
    }
    write_json(out, payload)
    return payload


if __name__ == "__main__":
    main()
