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

The doctor's cost (`--probe-cost N`): the fast recipe with its probes on and off, four runs a
round (on and off, on one thread and on the recipe's threads), interleaved over N rounds, after
one run on one thread whose probe and doctor events are timed part by part
(`results/mnist_fast_probes.json`). A candidate (`--candidate 'key=value ...'`): the shipped recipe
against those overrides, seed by seed, interleaved; test accuracy, the fit-time ratio of each pair
and multiply-accumulates per sample (`results/mnist_fast_candidate.json`).

Run: .venv/bin/python benchmarks/mnist_fast.py [--seeds 0,1,2] [--recipes mnist_fast,mnist_5min]
     [--switches N] [--out FILE] [--quick] [--probe-cost N] [--candidate 'key=value ...']
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
from layerwise import experiment
from layerwise.data import load_dataset
from layerwise.models import create_model
from layerwise.recipe import load_recipe
from layerwise.train import Callback, Trainer
from layerwise.train.device import forward_macs, resolve_precision
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


# ------------------------------------------------------------------- the doctor's probe cost
class FitClock(Callback):
    """Wall seconds and this thread's CPU seconds from the start of `fit` to the end of its
    epochs' training callbacks (order -1: after the probes and the doctor, so their epoch-end
    work counts; before checkpoints and logs, which are no part of either lever)."""

    order = -1

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0
        self._wall0 = self._cpu0 = 0.0

    def on_fit_start(self, trainer: Trainer) -> None:
        self._wall0, self._cpu0 = time.perf_counter(), time.thread_time()

    def on_epoch_end(self, trainer: Trainer) -> None:
        self.wall = time.perf_counter() - self._wall0
        self.cpu = time.thread_time() - self._cpu0


def timed_run(overrides: list[str], root: Path) -> dict[str, Any]:
    """One `layerwise train` of the fast recipe (`experiment.train`), its fit timed by `FitClock`;
    the doctor's live findings are kept rather than printed."""
    recipe = load_recipe(REPO / "recipes" / "mnist_fast.yaml", overrides)
    clock, said = FitClock(), []
    run, test = experiment.train(recipe, root, progress=False, echo=said.append, callbacks=[clock])
    return {
        "overrides": overrides,
        "fit_wall_seconds": clock.wall,
        "fit_thread_cpu_seconds": clock.cpu,
        "test_accuracy": test.get("accuracy"),
        "probe_records": _probe_records(run.path),
        "doctor_said": said,
        "load_average": list(os.getloadavg()),
    }


def _probe_records(run_path: Path) -> int:
    path = run_path / "probes.jsonl"
    return sum(1 for _ in path.open()) if path.exists() else 0


# The data checks run before `fit` and are not timed: off in both, to spare the machine.
PROBE_VARIANTS = {
    "on, 1 thread": ["doctor.probes=true", "train.threads=1", "doctor.data_checks=false"],
    "off, 1 thread": ["doctor.probes=false", "train.threads=1", "doctor.data_checks=false"],
    "on": ["doctor.probes=true", "doctor.data_checks=false"],
    "off": ["doctor.probes=false", "doctor.data_checks=false"],
}


def probe_cost(rounds: int, root: Path, threads: str = "both") -> dict[str, Any]:
    """The doctor's probes on against off in the real recipe run, interleaved round by round
    (the order rotates; seed = round, the same for all runs of a round). On one thread the
    main thread's CPU time is all the training work, and its on/off ratio hardly moves with
    outside load; with the recipe's own threads the ratio is of wall time. `threads`: "1", "auto"
    (the recipe's) or "both"."""
    names = [
        n for n in PROBE_VARIANTS if threads == "both" or ("1 thread" in n) == (threads == "1")
    ]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            runs[name].append(timed_run([f"seed={r}", *PROBE_VARIANTS[name]], root))
            print(f"round {r} {name}: {runs[name][-1]['fit_wall_seconds']:.2f} s", flush=True)

    def ratios(on: str, off: str, key: str) -> list[float]:
        if on not in runs:
            return []
        return [a[key] / b[key] for a, b in zip(runs[on], runs[off], strict=True)]

    return {
        "runs": runs,
        "cpu_ratio_1_thread": ratios("on, 1 thread", "off, 1 thread", "fit_thread_cpu_seconds"),
        "wall_ratio_1_thread": ratios("on, 1 thread", "off, 1 thread", "fit_wall_seconds"),
        "wall_ratio": ratios("on", "off", "fit_wall_seconds"),
    }


PROBE_EVENTS = ("on_fit_start", "on_epoch_start", "after_backward", "on_batch_end", "on_epoch_end")
PROBE_EVENTS += ("on_fit_end", "_arm", "_record")


def probe_profile(seed: int, root: Path) -> dict[str, Any]:
    """Where the probes' time goes in one run on one thread: this thread's CPU milliseconds in
    each `Probes`/`Doctor` event and in the per-layer hook work (`_output_stats`,
    `_histogram`), by wrapping them for this run only."""
    from layerwise.diagnose import doctor as doctor_module
    from layerwise.diagnose import probes as probes_module

    spent: dict[str, list[float]] = {}
    targets = [(probes_module, name) for name in ("_output_stats", "_histogram")]
    targets += [(probes_module.Probes, name) for name in PROBE_EVENTS]
    targets += [
        (doctor_module.Doctor, name)
        for name in ("on_fit_start", "on_batch_end", "on_epoch_end", "on_fit_end")
    ]
    originals = [(owner, name, getattr(owner, name)) for owner, name in targets]
    for owner, name, original in originals:
        label = f"{getattr(owner, '__name__', 'probes').split('.')[-1]}.{name}"
        setattr(owner, name, _timed(original, spent.setdefault(label, [0.0, 0])))
    try:
        run = timed_run([f"seed={seed}", "doctor.probes=true", "train.threads=1"], root)
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)
    parts = {k: {"cpu_ms": 1000 * v[0], "calls": v[1]} for k, v in spent.items() if v[1]}
    return {"run": run, "parts": parts}


def _timed(function: Any, into: list[float]) -> Any:
    def timed(*args: Any, **kwargs: Any) -> Any:
        begin = time.thread_time()
        try:
            return function(*args, **kwargs)
        finally:
            into[0] += time.thread_time() - begin
            into[1] += 1

    return timed


# ------------------------------------------------------------ a candidate against the recipe
def macs_per_sample(overrides: list[str]) -> int:
    """Forward multiply-accumulates of one 28x28 digit through the recipe's model."""
    recipe = load_recipe(REPO / "recipes" / "mnist_fast.yaml", overrides)
    model = create_model(
        recipe.model.name, num_classes=10, input_shape=(1, 28, 28), **recipe.model.args
    ).eval()
    x = torch.zeros(1, 1, 28, 28)
    with torch.no_grad():
        return int(forward_macs(model, lambda: model(x)))


def compare(candidate: list[str], seeds: list[int], root: Path) -> dict[str, Any]:
    """The shipped recipe and a candidate (recipe overrides), each run as `layerwise train` runs
    it, interleaved seed by seed (the order alternates): test accuracy per seed, and the fit's
    wall time as a ratio candidate / shipped within each pair, so outside load cancels."""
    shipped, ours = [], []
    for i, seed in enumerate(seeds):
        pair = [("shipped", []), ("candidate", candidate)]
        for who, overrides in pair if i % 2 == 0 else pair[::-1]:
            result = timed_run([*overrides, f"seed={seed}"], root)
            (shipped if who == "shipped" else ours).append(result)
            print(f"seed {seed} {who}: {result['test_accuracy']:.4f}", flush=True)
    return {
        "candidate": candidate,
        "macs_per_sample": {
            "shipped": macs_per_sample([]),
            "candidate": macs_per_sample(candidate),
        },
        "shipped": shipped,
        "candidate_runs": ours,
        "time_ratio": [
            c["fit_wall_seconds"] / s["fit_wall_seconds"]
            for c, s in zip(ours, shipped, strict=True)
        ],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--recipes", default="mnist_fast,mnist_5min")
    parser.add_argument(
        "--switches", type=int, default=0, help="also measure each switch, over N rounds"
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default per mode)")
    parser.add_argument("--quick", action="store_true", help="the fast race on one seed; no JSON")
    parser.add_argument(
        "--probe-cost", type=int, default=0, help="only: probes on vs off over N rounds"
    )
    parser.add_argument(
        "--probe-threads",
        choices=["1", "auto", "both"],
        default="both",
        help="--probe-cost on one thread, on the recipe's threads, or both",
    )
    parser.add_argument(
        "--no-profile", action="store_true", help="--probe-cost without the timed-parts run"
    )
    parser.add_argument(
        "--candidate", default=None, help="only: the recipe vs these overrides ('k=v k=v')"
    )
    args = parser.parse_args(argv)
    if args.probe_cost or args.candidate is not None:
        return _doctor_or_candidate(args)
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
        write_json(args.out or RESULTS_DIR / "mnist_fast.json", payload)
    return payload


def _doctor_or_candidate(args: argparse.Namespace) -> dict[str, Any]:
    """`--probe-cost N` (with a profile of one run) or `--candidate`, each in its own JSON."""
    payload: dict[str, Any] = {"benchmark": "mnist_fast", "machine": machine()}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.probe_cost:
            if not args.no_profile:
                payload["probe_profile"] = probe_profile(0, root)
            payload["probe_cost"] = cost = probe_cost(args.probe_cost, root, args.probe_threads)
            out = args.out or RESULTS_DIR / "mnist_fast_probes.json"
            write_json(out, payload)  # before the tables: a long run's numbers are kept
            print(_probe_tables(payload.get("probe_profile"), cost))
        else:
            seeds = [int(s) for s in args.seeds.split(",")]
            payload["compare"] = result = compare(args.candidate.split(), seeds, root)
            print(_compare_table(result))
            out = args.out or RESULTS_DIR / "mnist_fast_candidate.json"
    payload["load_average_at_end"] = list(os.getloadavg())
    write_json(out, payload)
    return payload


def _probe_tables(profile: dict[str, Any] | None, cost: dict[str, Any]) -> str:
    if profile is None:
        profile = {"parts": {}, "run": {"fit_thread_cpu_seconds": 1.0}}
    parts = sorted(profile["parts"].items(), key=lambda item: -item[1]["cpu_ms"])
    fit_ms = 1000 * profile["run"]["fit_thread_cpu_seconds"]
    rows = [
        [name, f"{p['cpu_ms']:.1f}", p["calls"], f"{100 * p['cpu_ms'] / fit_ms:.2f}%"]
        for name, p in parts
    ]
    headers = ["part (nested parts count in their callers)", "CPU ms", "calls", "of fit"]
    lines = [table(headers, rows)] if rows else []
    for key in ("cpu_ratio_1_thread", "wall_ratio_1_thread", "wall_ratio"):
        values = cost[key]
        if not values:
            continue
        lines.append(
            f"probes on / off, {key}: median {statistics.median(values):.3f} "
            f"(per round: {', '.join(f'{v:.3f}' for v in values)})"
        )
    return "\n".join(lines)


def _compare_table(result: dict[str, Any]) -> str:
    rows = [
        [
            s["overrides"][-1],
            f"{100 * s['test_accuracy']:.2f}%",
            f"{100 * c['test_accuracy']:.2f}%",
            f"{ratio:.3f}",
        ]
        for s, c, ratio in zip(
            result["shipped"], result["candidate_runs"], result["time_ratio"], strict=True
        )
    ]
    macs = result["macs_per_sample"]
    return (
        table(["seed", "shipped acc", "candidate acc", "fit time candidate / shipped"], rows)
        + f"\nMACs per sample: shipped {macs['shipped']:,}, candidate {macs['candidate']:,}"
    )


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
