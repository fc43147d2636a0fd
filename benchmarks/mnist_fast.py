"""MNIST time to accuracy: 99.0% in <= 6 s of training, and the best accuracy within 5 minutes.

Two recipes, each over several seeds, trained exactly as `layerwise train` trains them
(`experiment.train`: data checks, the doctor's probes, checkpoints, report):

- `recipes/mnist_fast.yaml`, the one-epoch stride-2 CNN, raced against a **hand-written PyTorch
  loop** with the same architecture and hyper-parameters (torch's own layers, initialisation,
  AdamW and OneCycleLR, bf16 autocast where the recipe's `precision: auto` chooses it, and its
  channels-last layout; batches cut from in-memory tensors by a permutation index). The two are
  interleaved seed by seed, so a burst of outside load hits both alike; `layerwise / hand` is the
  framework's cost on this task.
- `recipes/mnist_5min.yaml`, the accurate recipe, whose training time includes every epoch.

"Training time" is `fit` (every step, the per-epoch validation and checkpoint), without data
loading, the final test evaluation or the report; a benchmark-only callback evaluates the test set
after each epoch and its time is taken off the clock (see `mnist_accuracy.TestProbe`).

Performance switches (`--switches N`): channels_last, bf16 autocast and torch.compile, each
measured as steady-state time per step of each recipe's model in a plain loop, interleaved with
fp32 over N rounds; the first step (where compilation happens) is reported apart. A switch is on
by default in a recipe only if it helps here.

Run: .venv/bin/python benchmarks/mnist_fast.py [--seeds 0,1,2] [--recipes mnist_fast,mnist_5min]
     [--switches N] [--out FILE] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, RESULTS_DIR, machine, table, write_json
from layerwise.data import load_dataset
from layerwise.models import create_model
from layerwise.recipe import load_recipe
from layerwise.train.device import resolve_precision
from mnist_accuracy import TARGETS, run_recipe

TARGETS.update({"mnist_fast": (0.990, 0.990), "mnist_5min": (0.996, 0.996)})
TIME_LIMITS = {"mnist_fast": 6.0, "mnist_5min": 300.0}


def hand_model(channels: list[int]) -> nn.Sequential:
    """The `strided` CNN in plain torch.nn: stride-2 conv-BN-ReLU units (5x5 first), linear head."""
    layers: list[nn.Module] = []
    in_channels, size = 1, 28
    for width in channels:
        kernel = 5 if in_channels == 1 else 3
        layers += [
            nn.Conv2d(in_channels, width, kernel, stride=2, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        ]
        in_channels, size = width, (size + 1) // 2
    layers += [nn.Flatten(), nn.Linear(in_channels * size * size, 10)]
    return nn.Sequential(*layers)


def hand_loop(seed: int) -> dict[str, Any]:
    """Train the fast recipe's model with a plain loop; time from the first step to the last."""
    recipe = load_recipe(REPO / "recipes" / "mnist_fast.yaml", [f"seed={seed}"])
    spec, opt = recipe.train, recipe.train.optimizer
    bundle = load_dataset("mnist")
    (x, y), (x_test, y_test) = bundle.train, bundle.test
    torch.manual_seed(seed)
    model = hand_model(list(recipe.model.args["channels"]))
    layout = torch.channels_last if spec.channels_last else torch.contiguous_format
    model = model.to(memory_format=layout)
    optimizer = torch.optim.AdamW(model.parameters(), lr=opt.lr, weight_decay=opt.weight_decay)
    batch = recipe.data.batch_size
    steps_per_epoch = -(-len(x) // batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=opt.lr, total_steps=spec.epochs * steps_per_epoch
    )
    smoothing = spec.loss.label_smoothing
    bf16 = resolve_precision(torch.device("cpu"), spec.precision) == "bf16"
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    start = time.perf_counter()
    for _ in range(spec.epochs):
        model.train()
        order = torch.randperm(len(x))
        for lo in range(0, len(x), batch):
            index = order[lo : lo + batch]
            with autocast:
                inputs = x[index].contiguous(memory_format=layout)
                loss = F.cross_entropy(model(inputs), y[index], label_smoothing=smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    return {"seconds": seconds, "test_accuracy": accuracy, "bf16": bf16}


def layerwise_run(name: str, seed: int, extra: list[str], root: Path) -> dict[str, Any]:
    result = run_recipe(name, [f"seed={seed}", *extra], root)
    return {
        "seconds": result["fit_seconds"],
        "wall_seconds": result["wall_seconds"],
        "test_accuracy": result["test_accuracy"],
        "seconds_to_threshold": result["seconds_to_threshold"],
        "per_epoch": result["per_epoch"],
    }


def summarise(runs: list[dict[str, Any]], target: float, limit: float) -> dict[str, Any]:
    accuracies = [r["test_accuracy"] for r in runs]
    seconds = [r["seconds"] for r in runs]
    return {
        "runs": runs,
        "accuracy_mean": statistics.mean(accuracies),
        "accuracy_min": min(accuracies),
        "seconds_median": statistics.median(seconds),
        "seconds_max": max(seconds),
        "met": all(a >= target for a in accuracies) and max(seconds) <= limit,
    }


def race_fast(seeds: list[int], root: Path) -> dict[str, Any]:
    """The fast recipe and the hand loop, interleaved seed by seed (the order alternates)."""
    hand, ours = [], []
    for i, seed in enumerate(seeds):
        first_hand = i % 2 == 0
        if first_hand:
            hand.append(hand_loop(seed))
        ours.append(layerwise_run("mnist_fast", seed, [], root))
        if not first_hand:
            hand.append(hand_loop(seed))
    target, limit = TARGETS["mnist_fast"][0], TIME_LIMITS["mnist_fast"]
    ratios = [o["seconds"] / h["seconds"] for o, h in zip(ours, hand, strict=True)]
    return {
        "hand": summarise(hand, target, limit),
        "layerwise": summarise(ours, target, limit),
        "layerwise_over_hand": ratios,
    }


def switch_step_time(
    model_name: str, steps: int, channels_last: bool, bf16: bool, compile_model: bool
) -> dict[str, Any]:
    """Seconds per training step of a recipe's model in a plain loop with one switch on.

    The model is built by layerwise from the recipe (the same module `layerwise train` trains);
    the loop is plain: AdamW, cross-entropy, batches cut by a permutation index. Compilation
    happens in the first step, timed apart; then 5 warm-up steps, then `steps` timed steps.
    """
    recipe = load_recipe(REPO / "recipes" / f"{model_name}.yaml")
    bundle = load_dataset("mnist")
    x, y = bundle.train
    torch.manual_seed(0)
    model = create_model(
        recipe.model.name, num_classes=10, input_shape=(1, 28, 28), **recipe.model.args
    )
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    forward = torch.compile(model) if compile_model else model
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    batch = recipe.data.batch_size
    order = torch.randperm(len(x))

    def step(i: int) -> None:
        index = order[(i * batch) % (len(x) - batch) :][:batch]
        inputs = x[index]
        if channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with autocast:
            loss = F.cross_entropy(forward(inputs), y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    begin = time.perf_counter()
    step(0)
    first = time.perf_counter() - begin
    for i in range(1, 6):
        step(i)
    begin = time.perf_counter()
    for i in range(6, 6 + steps):
        step(i)
    per_step = (time.perf_counter() - begin) / steps
    return {"seconds_per_step": per_step, "first_step_seconds": first}


SWITCHES = {
    "fp32": {"channels_last": False, "bf16": False, "compile_model": False},
    "channels_last+bf16": {"channels_last": True, "bf16": True, "compile_model": False},
    "channels_last": {"channels_last": True, "bf16": False, "compile_model": False},
    "bf16": {"channels_last": False, "bf16": True, "compile_model": False},
    "compile": {"channels_last": False, "bf16": False, "compile_model": True},
}
SWITCH_STEPS = {"mnist_fast": 200, "mnist_5min": 60}


def switches(rounds: int) -> dict[str, Any]:
    """Each switch on each recipe's model, interleaved round by round against fp32."""
    out: dict[str, Any] = {}
    for recipe in SWITCH_STEPS:
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in SWITCHES}
        for _ in range(rounds):
            for name, flags in SWITCHES.items():
                runs[name].append(switch_step_time(recipe, SWITCH_STEPS[recipe], **flags))
        out[recipe] = runs
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--recipes", default="mnist_fast,mnist_5min")
    parser.add_argument(
        "--switches", type=int, default=0, help="also measure each switch, over N rounds"
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "mnist_fast.json")
    parser.add_argument("--quick", action="store_true", help="the fast race on one seed; no JSON")
    args = parser.parse_args(argv)
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    recipes = ["mnist_fast"] if args.quick else args.recipes.split(",")
    payload: dict[str, Any] = {"benchmark": "mnist_fast", "machine": machine(), "seeds": seeds}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if "mnist_fast" in recipes:
            race = race_fast(seeds, root)
            payload["mnist_fast"] = race
            for who in ("hand", "layerwise"):
                rows.append(_row(f"mnist_fast ({who})", race[who], "mnist_fast"))
        if args.switches:
            payload["switches"] = switches(args.switches)
            print(_switch_table(payload["switches"]), flush=True)
        if "mnist_5min" in recipes:
            runs = [layerwise_run("mnist_5min", seed, [], root) for seed in seeds]
            target, limit = TARGETS["mnist_5min"][0], TIME_LIMITS["mnist_5min"]
            payload["mnist_5min"] = summarise(runs, target, limit)
            rows.append(_row("mnist_5min (layerwise)", payload["mnist_5min"], "mnist_5min"))
    payload["load_average_at_end"] = list(os.getloadavg())
    headers = ["run", "test acc (mean, min)", "train s (median, max)", "target", "met"]
    print(table(headers, rows))
    if "mnist_fast" in payload:
        ratios = payload["mnist_fast"]["layerwise_over_hand"]
        print("layerwise / hand, per seed: " + ", ".join(f"{r:.2f}" for r in ratios))
    if not args.quick:
        write_json(args.out, payload)
    return payload


def _row(label: str, summary: dict[str, Any], recipe: str) -> list[Any]:
    target, limit = TARGETS[recipe][0], TIME_LIMITS[recipe]
    return [
        label,
        f"{100 * summary['accuracy_mean']:.2f}%, {100 * summary['accuracy_min']:.2f}%",
        f"{summary['seconds_median']:.1f}, {summary['seconds_max']:.1f}",
        f">= {100 * target:.1f}% in <= {limit:.0f} s",
        "yes" if summary["met"] else "no",
    ]


def _switch_table(result: dict[str, Any]) -> str:
    rows = []
    for recipe, variants in result.items():
        base = statistics.median(r["seconds_per_step"] for r in variants["fp32"])
        for name, runs in variants.items():
            per_step = statistics.median(r["seconds_per_step"] for r in runs)
            first = statistics.median(r["first_step_seconds"] for r in runs)
            rows.append(
                [recipe, name, f"{1000 * per_step:.1f}", f"{per_step / base:.2f}", f"{first:.1f}"]
            )
    return table(["model", "switch", "ms/step", "vs fp32", "first step s"], rows)


if __name__ == "__main__":
    main()
