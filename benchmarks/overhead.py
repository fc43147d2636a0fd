"""Framework overhead: `Trainer.fit` against a hand-written PyTorch loop, on real MNIST.

For each (model, batch size) cell, five contenders train their own copy of one initialisation
with the same fused Adam (built by `create_optimizer`, as the Trainer builds it) on the same
rows, one "epoch" of `steps` batches at a time:

- `hand`: forward, loss, backward, step, zero_grad, batches cut from in-memory tensors with a
  permutation index, the loss summed on the device (read once at the end of the epoch);
- `trainer`: `Trainer.fit` with `metrics=[]`, so it does the same work as `hand`;
  the doctor is off here (`doctor=False`): its probes sample about 9 steps per epoch, which in
  this benchmark's short "epochs" of 20-200 steps would be every 3-23 steps instead of every 50
  as on real MNIST epochs. `benchmarks/probe_overhead.py` measures its cost at realistic epoch
  lengths;
- `trainer+acc`: `Trainer.fit` with `metrics=["accuracy"]` (the accuracy counted on the device);
- `dataloader`: the hand loop fed by `DataLoader(TensorDataset(x, y), shuffle=True)`;
- `hand-again`: a second, independent `hand` (an A/A test): `hand-again / hand` shows how far
  two identical loops drift apart on this machine, i.e. the noise floor of every ratio.

Rounds. All run in one process, interleaved round by round (the starting contender rotates each
round), so drift and bursts of load from other processes hit them alike. This machine is shared:
a round counts only if other processes used at most `--max-load` cores (from /proc/stat) during
each of its runs. The figure per contender is the median over counted rounds of the time per
step; `trainer / hand` comes with a bootstrap 95% interval over rounds.

Paired steps. Even on a quiet machine, this VM's speed wanders 10-20% from run to run, which
leaves the round medians a few percent apart (see the A/A column). So each cell is also measured
with steps interleaved one by one: a callback runs one hand-loop step after every Trainer step
and the two are timed separately, so both see the same machine at the same moment. The
trainer's slot holds everything `fit` does between two steps, including calling a callback.

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
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
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
from layerwise.train import Callback, Trainer, create_optimizer

# The models of recipes/mnist_mlp.yaml and recipes/mnist_cnn.yaml, and a linear classifier so
# cheap that the framework's own per-step cost stands out.
MODELS: dict[str, dict[str, Any]] = {
    "mlp": {"name": "mlp", "hidden": (512, 256), "dropout": 0.2},
    "cnn": {"name": "cnn", "variant": "vgg"},
    "linear": {"name": "mlp", "hidden": ()},
}
CONTENDERS = ("hand", "trainer", "trainer+acc", "dataloader", "hand-again")
OPTIMIZER = {"name": "adam", "lr": 1e-3}
# Steps per run: short runs (0.3-1.3 s each on a quiet machine), so a burst of outside load
# spoils few rounds.
STEPS = {"mlp:32": 200, "mlp:128": 100, "cnn:32": 30, "cnn:128": 20, "linear:32": 1000}
PAIRED_EPOCHS = 10

Batches = Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]]


def make_model(kind: str, example: torch.Tensor, state: dict | None = None) -> nn.Module:
    spec = dict(MODELS[kind])
    model = create_model(spec.pop("name"), num_classes=10, **spec)
    materialize(model, example)
    if state is not None:
        model.load_state_dict(state)
    return model


class HandLoop:
    """The loop every PyTorch tutorial writes, on its own model copy and optimizer."""

    def __init__(self, model: nn.Module, batches: Batches) -> None:
        self.model = model.train()
        self.optimizer = create_optimizer(OPTIMIZER["name"], model, lr=OPTIMIZER["lr"])
        self.loss_fn = nn.CrossEntropyLoss()
        self.batches = batches
        self.total = torch.zeros(())

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        loss = self.loss_fn(self.model(x), y)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.total += loss.detach()

    def epoch(self) -> float:
        """One pass over the batches; returns the mean loss (the one host sync per epoch)."""
        self.model.train()
        self.total.zero_()
        count = 0
        for x, y in self.batches():
            self.step(x, y)
            count += 1
        return self.total.item() / count


def permutation_batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator
) -> Batches:
    def batches():
        perm = torch.randperm(len(x), generator=generator)
        for lo in range(0, len(x), batch_size):
            index = perm[lo : lo + batch_size]
            yield x.index_select(0, index), y.index_select(0, index)

    return batches


class Contenders:
    """Builds hand loops and Trainers that start from one initialisation on the same rows."""

    def __init__(self, kind: str, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> None:
        self.kind, self.x, self.y, self.batch_size = kind, x, y, batch_size
        torch.manual_seed(0)
        self.init = make_model(kind, x[:batch_size]).state_dict()

    def model(self) -> nn.Module:
        return make_model(self.kind, self.x[: self.batch_size], self.init)

    def hand(self, dataloader: bool = False) -> HandLoop:
        if dataloader:
            loader = DataLoader(
                TensorDataset(self.x, self.y), batch_size=self.batch_size, shuffle=True
            )
            return HandLoop(self.model(), lambda: iter(loader))
        generator = torch.Generator().manual_seed(0)
        return HandLoop(
            self.model(), permutation_batches(self.x, self.y, self.batch_size, generator)
        )

    def trainer(self, metrics: list[str], callbacks: list[Callback] = ()) -> Callable[[], float]:
        """A function that trains one more epoch with `Trainer.fit`."""
        trainer = Trainer(
            self.model(),
            optimizer=OPTIMIZER["name"],
            lr=OPTIMIZER["lr"],
            metrics=metrics,
            callbacks=callbacks,
            device="cpu",
            doctor=False,  # the loop alone; benchmarks/probe_overhead.py measures the doctor
            progress=False,  # no epoch lines: the hand loop prints nothing either
        )
        batcher = make_batcher(
            (self.x, self.y), batch_size=self.batch_size, shuffle=True, seed=0, device="cpu"
        )

        def epoch() -> float:
            trainer.fit(batcher, epochs=trainer.state.epoch + 1, batch_size=self.batch_size)
            return trainer.history[-1]["loss"]

        return epoch

    def runners(self) -> dict[str, Callable[[], float]]:
        return {
            "hand": self.hand().epoch,
            "trainer": self.trainer([]),
            "trainer+acc": self.trainer(["accuracy"]),
            "dataloader": self.hand(dataloader=True).epoch,
            "hand-again": self.hand().epoch,
        }


def measure_rounds(
    contenders: Contenders, steps: int, rounds: int, max_rounds: int, max_load: float
) -> dict[str, Any]:
    """Interleaved rounds of every contender; see the module docstring.

    Rounds go on until `rounds` have counted or `max_rounds` were run. If fewer than
    `min(rounds, 5)` count, all rounds are used and the cell is marked unfiltered.
    """
    runners = contenders.runners()
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
        "steps_per_round": steps,
        "rounds_run": len(all_rounds),
        "rounds_used": len(used),
        "filtered_by_outside_load": filtered,
        "median_ms_per_step": {name: statistics.median(ts) for name, ts in times.items()},
        "ratios_over_hand": {
            name: _ratio_of_medians(times[name], times["hand"])
            for name in CONTENDERS
            if name != "hand"
        },
        "rounds": all_rounds,
    }


def _ratio_of_medians(contender: list[float], hand: list[float]) -> dict[str, float]:
    """The ratio of medians with a bootstrap 95% interval (rounds resampled in pairs)."""
    rng = random.Random(0)
    pairs = list(zip(contender, hand, strict=True))
    boots = []
    for _ in range(2000):
        sample = [rng.choice(pairs) for _ in pairs]
        boots.append(
            statistics.median(c for c, _ in sample) / statistics.median(h for _, h in sample)
        )
    boots.sort()
    return {
        "of_medians": statistics.median(contender) / statistics.median(hand),
        "ci95_low": boots[int(0.025 * len(boots))],
        "ci95_high": boots[int(0.975 * len(boots)) - 1],
    }


class HandStepAfterEach(Callback):
    """After every Trainer step, one step of a hand loop; the two are timed separately."""

    def __init__(self, hand: HandLoop) -> None:
        self.hand = hand
        self.trainer_seconds = self.hand_seconds = self.mark = 0.0
        self.steps = 0
        self._batches: Iterator | None = None

    def on_epoch_start(self, trainer: Trainer) -> None:
        self._batches = self.hand.batches()
        self.trainer_seconds = self.hand_seconds = 0.0
        self.steps = 0
        self.mark = time.perf_counter()

    def on_batch_end(self, trainer: Trainer) -> None:
        start = time.perf_counter()
        self.trainer_seconds += start - self.mark
        self.hand.step(*next(self._batches))
        self.mark = time.perf_counter()
        self.hand_seconds += self.mark - start
        self.steps += 1


def measure_paired(contenders: Contenders, epochs: int) -> dict[str, Any]:
    """Trainer steps and hand steps interleaved one by one; per-epoch ratios of their times."""
    result: dict[str, Any] = {"epochs": epochs}
    for name, metrics in (("trainer", []), ("trainer+acc", ["accuracy"])):
        pair = HandStepAfterEach(contenders.hand())
        epoch = contenders.trainer(metrics, callbacks=[pair])
        epoch()  # warm-up
        ratios, extra_us = [], []
        for _ in range(epochs):
            gc.collect()
            epoch()
            ratios.append(pair.trainer_seconds / pair.hand_seconds)
            extra_us.append((pair.trainer_seconds - pair.hand_seconds) / pair.steps * 1e6)
        result[name] = {
            "ratio_median": statistics.median(ratios),
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
            "extra_us_per_step_median": statistics.median(extra_us),
            "ratios": ratios,
        }
    return result


def measure_cell(kind: str, batch_size: int, x_all, y_all, args) -> dict[str, Any]:
    """Both measurements of one cell, on the first `steps * batch_size` shuffled rows."""
    steps = STEPS.get(f"{kind}:{batch_size}", 50) // (5 if args.quick else 1)
    rows = torch.randperm(len(x_all), generator=torch.Generator().manual_seed(1))
    rows = rows[: steps * batch_size]
    x, y = x_all[rows], y_all[rows]
    if kind != "cnn":
        x = x.reshape(len(x), -1)
    contenders = Contenders(kind, x, y, batch_size)
    rounds = 2 if args.quick else args.rounds
    max_rounds = int(rounds * max(args.max_rounds, 1.0))
    cell = {"model": kind, "batch_size": batch_size}
    cell["paired"] = measure_paired(contenders, 2 if args.quick else PAIRED_EPOCHS)
    cell.update(measure_rounds(contenders, steps, rounds, max_rounds, args.max_load))
    return cell


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
        "trainer/hand (95% CI)",
        "+accuracy/hand",
        "DataLoader/hand",
        "A/A",
        "paired trainer/hand",
        "paired +accuracy/hand",
        "paired extra µs/step",
    ]
    rows = []
    for c in cells:
        m, r, p = c["median_ms_per_step"], c["ratios_over_hand"], c["paired"]
        rows.append(
            [
                c["model"],
                str(c["batch_size"]),
                f"{m['hand']:.2f}",
                f"{m['trainer']:.2f}",
                f"{m['trainer+acc']:.2f}",
                f"{m['dataloader']:.2f}",
                f"{r['trainer']['of_medians']:.3f} "
                f"({r['trainer']['ci95_low']:.2f}-{r['trainer']['ci95_high']:.2f})",
                f"{r['trainer+acc']['of_medians']:.3f}",
                f"{r['dataloader']['of_medians']:.2f}",
                f"{r['hand-again']['of_medians']:.3f}",
                f"{p['trainer']['ratio_median']:.3f} "
                f"({p['trainer']['ratio_min']:.2f}-{p['trainer']['ratio_max']:.2f})",
                f"{p['trainer+acc']['ratio_median']:.3f}",
                f"{p['trainer']['extra_us_per_step_median']:+.0f}",
            ]
        )
    return headers, rows


def _describe_optimizer() -> str:
    optimizer = create_optimizer(OPTIMIZER["name"], nn.Linear(1, 1), lr=OPTIMIZER["lr"])
    return f"{type(optimizer).__name__}(lr={OPTIMIZER['lr']}, fused={optimizer.defaults['fused']})"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 short rounds per cell; no JSON")
    parser.add_argument("--rounds", type=int, default=30, help="rounds to count per cell")
    parser.add_argument(
        "--max-rounds", type=float, default=3.0, help="stop filtering after this many x --rounds"
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

    x_all, y_all = load_dataset("mnist").train
    payload: dict[str, Any] = {
        "benchmark": "overhead",
        "complete": False,
        "machine": machine(),
        "threads": torch.get_num_threads(),
        "optimizer": _describe_optimizer(),
        "models": MODELS,
        "max_outside_load": args.max_load,
        "quick": args.quick,
        "cells": [],
    }
    for item in args.cells.split(","):
        kind, batch = item.split(":")
        cell = measure_cell(kind, int(batch), x_all, y_all, args)
        payload["cells"].append(cell)
        write_json(out, payload)  # a killed run keeps the cells it finished
        ratio = cell["ratios_over_hand"]["trainer"]["of_medians"]
        paired = cell["paired"]["trainer"]["ratio_median"]
        used = f"{cell['rounds_used']} of {cell['rounds_run']} rounds used"
        print(f"{item}: trainer/hand {ratio:.3f} ({used}), paired {paired:.3f}", flush=True)
    print(table(*summary_table(payload["cells"])))
    payload["setup_ms"] = setup_cost(x_all, y_all)
    print(f"one-off input conversion and check in fit, 60,000 rows: {payload['setup_ms']:.0f} ms")
    payload["complete"] = True
    write_json(out, payload)
    return payload


if __name__ == "__main__":
    main()
