"""Probe overhead: time per step of `Trainer.fit` with `Probes()` against without, on real MNIST.

The doctor's probes must cost at most 5% of a training step. For each model (the MLP of
recipes/mnist_mlp.yaml and the CNN of recipes/mnist_cnn.yaml, at the recipes' batch of 128),
four Trainers train their own copy of one initialisation with the same fused Adam as
benchmarks/overhead.py, each on its own batcher over the full MNIST training set (so
`every="auto"` picks what a real run picks: every 50 steps on 469 batches per epoch), all with
`metrics=[]`:

- `plain`: `Trainer(doctor=False)`, no callbacks at all;
- `probes`: `Trainer(doctor=False, callbacks=[Probes()])` (in memory; writing probes.jsonl is an
  epoch-end cost);
- `doctor`: `Trainer()` as it comes, which adds `Probes()` and a `Doctor` (rules at epoch ends);
- `every-1`: `Probes(every=1)`, every step sampled, which measures the cost of one sample
  (the median over rounds of `every-1 - plain`, in ms per step) and so what any interval costs:
  `implied overhead` = that cost / (every x the plain step time).

Rounds. Each contender trains `steps` more steps per round: a callback stops `fit` after that
many, and the next round's `fit` carries on where it stopped, so the rounds are stretches of one
long run. `steps` is a multiple of the sampling interval and the first step of every fit is a
multiple too, so a round holds exactly as many samples as the same stretch of a long run. The
contenders take turns (the starter rotating), rounds with outside load above `--max-load` cores
are dropped, and the ratio of median times per step comes with a bootstrap 95% interval, all as
in benchmarks/overhead.py (whose helpers this reuses). A cell stops early when its rounds have
taken `BUDGET_S` seconds (after 5 rounds), which keeps the script near 6 minutes.

Run: .venv/bin/python benchmarks/probe_overhead.py [--quick] [--cells mlp:128,cnn:128]
     [--rounds N] [--threads N] [--max-load CORES]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, OutsideLoad, machine, table, write_json
from layerwise.data import load_dataset, make_batcher
from layerwise.diagnose.probes import Probes, auto_every
from layerwise.train import Callback, Trainer
from overhead import MODELS, OPTIMIZER, _describe_optimizer, _ratio_of_medians, make_model

CONTENDERS = ("plain", "probes", "doctor", "every-1")
SAMPLES_PER_ROUND = {"mlp": 2, "cnn": 1}  # mlp: 100 steps (~0.5 s), cnn: 50 steps (~3 s)
ROUNDS = {"mlp": 40, "cnn": 12}
# Seconds of rounds per cell before it stops early (after 5 rounds at least), so the whole script
# stays near 6 minutes on a busy machine; a quiet one finishes its rounds well within this.
BUDGET_S = {"mlp": 100.0, "cnn": 200.0}


class StopAfter(Callback):
    """Ends `fit` after `steps` optimizer steps; the next `fit` continues the same run."""

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.end = 0

    def on_fit_start(self, trainer: Trainer) -> None:
        self.end = trainer.state.step + self.steps

    def on_batch_end(self, trainer: Trainer) -> None:
        if trainer.state.step >= self.end:
            trainer.stop_training = True


def runner(
    name: str, kind: str, x: torch.Tensor, y: torch.Tensor, init: dict, batch: int, steps: int
) -> tuple[Callable[[], None], Trainer]:
    """A function that trains `steps` more steps of contender `name`'s Trainer, and the Trainer."""
    callbacks = {"probes": [Probes()], "every-1": [Probes(every=1)]}.get(name, [])
    trainer = Trainer(
        make_model(kind, x[:batch], init),
        optimizer=OPTIMIZER["name"],
        lr=OPTIMIZER["lr"],
        metrics=[],
        callbacks=[*callbacks, StopAfter(steps)],
        device="cpu",
        doctor=name == "doctor",
        progress=False,
    )
    batcher = make_batcher((x, y), batch_size=batch, shuffle=True, seed=0, device="cpu")

    def run() -> None:
        trainer.fit(batcher, epochs=10**9)

    return run, trainer


def probes_of(trainer: Trainer) -> Probes | None:
    return next((c for c in trainer.callbacks if isinstance(c, Probes)), None)


def measure_cell(kind: str, batch: int, x_all, y_all, args) -> dict[str, Any]:
    x = x_all.reshape(len(x_all), -1) if kind != "cnn" else x_all
    every = auto_every(-(-len(x) // batch))
    steps = every * SAMPLES_PER_ROUND.get(kind, 1)
    torch.manual_seed(0)
    init = make_model(kind, x[:batch]).state_dict()
    built = {name: runner(name, kind, x, y_all, init, batch, steps) for name in CONTENDERS}
    runners = {name: run for name, (run, _) in built.items()}
    for run in runners.values():  # warm-up: lazy setup, allocator and oneDNN caches
        run()
    probes = {name: probes_of(trainer) for name, (_, trainer) in built.items()}
    assert probes["plain"] is None, "the plain Trainer must not probe"
    for name in ("probes", "doctor"):
        assert probes[name].every_ == every, "auto interval differs from the one planned"

    rounds = 2 if args.quick else args.rounds or ROUNDS.get(kind, 12)
    max_rounds = int(rounds * max(args.max_rounds, 1.0))
    all_rounds: list[dict[str, Any]] = []
    meter = OutsideLoad()
    deadline = time.perf_counter() + BUDGET_S.get(kind, 200.0) * (0.1 if args.quick else 1.0)
    while len(all_rounds) < max_rounds and sum(r["clean"] for r in all_rounds) < rounds:
        if len(all_rounds) >= min(rounds, 5) and time.perf_counter() > deadline:
            break
        shift = len(all_rounds) % len(CONTENDERS)
        ms, load = {}, {}
        for name in CONTENDERS[shift:] + CONTENDERS[:shift]:
            gc.collect()
            meter.sample()
            start = time.perf_counter()
            runners[name]()
            ms[name] = (time.perf_counter() - start) / steps * 1e3
            load[name] = meter.sample()
        clean = all(not value > args.max_load for value in load.values())
        all_rounds.append({"ms_per_step": ms, "outside_load": load, "clean": clean})
    used = [r for r in all_rounds if r["clean"]]
    filtered = len(used) >= min(rounds, 5)
    if not filtered:
        used = all_rounds
    times = {name: [r["ms_per_step"][name] for r in used] for name in CONTENDERS}
    median = {name: statistics.median(ts) for name, ts in times.items()}
    # Each round's every-1 and plain runs are close in time, so their difference is steadier
    # than the difference of the two medians.
    sample_ms = statistics.median(
        a - b for a, b in zip(times["every-1"], times["plain"], strict=True)
    )
    return {
        "model": kind,
        "batch_size": batch,
        "batches_per_epoch": -(-len(x) // batch),
        "every": every,
        "steps_per_round": steps,
        "rounds_run": len(all_rounds),
        "rounds_used": len(used),
        "filtered_by_outside_load": filtered,
        "median_ms_per_step": median,
        "ratios_over_plain": {
            name: _ratio_of_medians(times[name], times["plain"]) for name in CONTENDERS[1:]
        },
        "paired_round_ratio_median": statistics.median(
            p / q for p, q in zip(times["probes"], times["plain"], strict=True)
        ),
        "ms_per_sampled_step": sample_ms,
        "implied_overhead_at_every": sample_ms / (every * median["plain"]),
        "samples_recorded": {
            name: len(probes[name].log.steps) for name in CONTENDERS if probes[name]
        },
        "rounds": all_rounds,
    }


def summary_table(cells: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    headers = [
        "model",
        "batch",
        "every",
        "plain ms",
        "probes ms",
        "probes / plain (95% CI)",
        "per-round median",
        "doctor / plain (95% CI)",
        "ms per sample",
        "implied overhead",
    ]
    rows = []
    for c in cells:
        m, r = c["median_ms_per_step"], c["ratios_over_plain"]
        rows.append(
            [
                c["model"],
                str(c["batch_size"]),
                str(c["every"]),
                f"{m['plain']:.2f}",
                f"{m['probes']:.2f}",
                f"{r['probes']['of_medians']:.3f} "
                f"({r['probes']['ci95_low']:.3f}-{r['probes']['ci95_high']:.3f})",
                f"{c['paired_round_ratio_median']:.3f}",
                f"{r['doctor']['of_medians']:.3f} "
                f"({r['doctor']['ci95_low']:.3f}-{r['doctor']['ci95_high']:.3f})",
                f"{c['ms_per_sampled_step']:.2f}",
                f"{c['implied_overhead_at_every']:.2%}",
            ]
        )
    return headers, rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds per cell; no JSON")
    parser.add_argument("--rounds", type=int, default=None, help="rounds to count per cell")
    parser.add_argument(
        "--max-rounds", type=float, default=1.5, help="stop filtering after this many x rounds"
    )
    parser.add_argument(
        "--max-load", type=float, default=0.1, help="discard rounds where others used more cores"
    )
    parser.add_argument("--cells", default="mlp:128,cnn:128")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--out", type=Path, default=None, help="JSON path")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out or (None if args.quick else RESULTS_DIR / "probe_overhead.json")

    x_all, y_all = load_dataset("mnist").train
    payload: dict[str, Any] = {
        "benchmark": "probe_overhead",
        "complete": False,
        "machine": machine(),
        "threads": torch.get_num_threads(),
        "optimizer": _describe_optimizer(),
        "models": {kind: MODELS[kind] for kind in ("mlp", "cnn")},
        "target": "probes / plain <= 1.05",
        "max_outside_load": args.max_load,
        "quick": args.quick,
        "cells": [],
    }
    started = time.perf_counter()
    for item in args.cells.split(","):
        kind, batch = item.split(":")
        cell = measure_cell(kind, int(batch), x_all, y_all, args)
        payload["cells"].append(cell)
        write_json(out, payload)  # a killed run keeps the cells it finished
        ratio = cell["ratios_over_plain"]["probes"]
        print(
            f"{item}: probes/plain {ratio['of_medians']:.3f} "
            f"({ratio['ci95_low']:.3f}-{ratio['ci95_high']:.3f}), "
            f"{cell['rounds_used']} of {cell['rounds_run']} rounds used",
            flush=True,
        )
    print(table(*summary_table(payload["cells"])))
    payload["seconds"] = time.perf_counter() - started
    payload["complete"] = True
    write_json(out, payload)
    return payload


if __name__ == "__main__":
    main()
