"""Training on a busy CPU: the quick start idle, with one core kept busy and with two.

Another process spinning on one of the two cores made `layerwise quickstart` 2.3 times slower
(and about three of them 17 times slower): two intra-op threads wait at every parallel region
for the one the OS preempted. `Trainer(threads="auto")` (`layerwise.train.device.CpuThreads`)
now uses one thread for small models and, for larger ones, only the cores other processes leave
free, following the load epoch by epoch.

Each scenario (idle, 1 busy core, 2 busy cores; a busy core is a spinning Python process started
for the scenario) runs the quick start as a fresh process the way a user types it, once per
variant and round, the variants interleaved so they see the same machine:

- before: `OMP_NUM_THREADS=2`, what torch used on this 2-core machine before (the explicit
  setting is respected, so this is the old behaviour exactly);
- after: no setting, the automatic choice.

Reported: the median wall time per scenario and variant, its ratio to the same variant's idle
time (target for `after`: <= 1.3 with one busy core, no collapse with two) and the outside load
(cores used by other processes, from /proc/stat, spinners included) during the runs. A run that
exceeds `--timeout` is killed and shown as `> timeout`.

`--recipes` also times the bundled recipes that need no download (and MNIST ones cut to one epoch
of 12,000 images when MNIST is present) with one and two threads, idle: the evidence for
`MACS_PER_THREAD`.

Run: .venv/bin/python benchmarks/busy_cpu.py [--rounds 1] [--timeout 300] [--recipes] [--out PATH]
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, RESULTS_DIR, OutsideLoad, machine, table, write_json

TARGET_ONE_BUSY = 1.3
SCENARIOS = {"idle": 0, "1 busy core": 1, "2 busy cores": 2}
VARIANTS = {"before (threads=2)": {"OMP_NUM_THREADS": "2"}, "after (auto)": {}}
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "LAYERWISE_THREADS")


def layerwise_command() -> list[str]:
    script = Path(sys.executable).parent / "layerwise"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "layerwise.cli"]


def timed_run(argv: list[str], env_extra: dict[str, str], timeout: float) -> dict[str, Any]:
    """Wall time of one process, and the cores other processes used meanwhile."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS} | env_extra
    load = OutsideLoad()
    children = _children_cpu()
    start = time.perf_counter()
    try:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
        seconds, ok = time.perf_counter() - start, done.returncode == 0
        error = "" if ok else (done.stderr.strip().splitlines() or ["?"])[-1]
    except subprocess.TimeoutExpired:
        seconds, ok, error = time.perf_counter() - start, False, "timeout"
    # OutsideLoad leaves out this process's CPU time but not the child's: take that out too.
    child_cores = (_children_cpu() - children) / seconds
    outside = max(load.sample() - child_cores, 0.0)
    return {
        "seconds": seconds,
        "ok": ok,
        "error": error,
        "child_cores": round(child_cores, 2),
        "outside_cores": round(outside, 2),
    }


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Spinners:
    """`count` processes that each keep one core busy, until the block ends."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.processes: list[subprocess.Popen] = []

    def __enter__(self) -> Spinners:
        for _ in range(self.count):
            self.processes.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))
        time.sleep(0.5 if self.count else 0.0)
        return self

    def __exit__(self, *exc: object) -> None:
        for process in self.processes:
            process.kill()
            process.wait()


def quickstart_scenarios(rounds: int, timeout: float) -> list[dict[str, Any]]:
    results = []
    for scenario, busy in SCENARIOS.items():
        with Spinners(busy), tempfile.TemporaryDirectory() as tmp:
            for round_ in range(rounds):
                order = list(VARIANTS.items())
                if round_ % 2:
                    order.reverse()
                for variant, env in order:
                    argv = [*layerwise_command(), "quickstart", "--runs-dir", f"{tmp}/runs"]
                    record = timed_run(argv, env, timeout)
                    record |= {
                        "scenario": scenario,
                        "busy_cores": busy,
                        "variant": variant,
                        "round": round_,
                        "loadavg": list(os.getloadavg()),
                    }
                    results.append(record)
                    print(
                        f"{scenario:>13} {variant:>20}: {_secs(record, timeout)}"
                        f"  (loadavg {record['loadavg'][0]:.2f}, other processes "
                        f"{record['outside_cores']:.2f} cores)",
                        flush=True,
                    )
    return results


def recipe_threads(timeout: float) -> list[dict[str, Any]]:
    """Each bundled recipe with one and with two threads, interleaved (idle machine)."""
    from layerwise.data import data_root

    recipes = ["digits_cnn", "digits_mlp", "wine_mlp", "breast_cancer_mlp"]
    cut = ["--set", "train.epochs=1", "--set", "data.args.subset=12000"]
    runs = [(name, []) for name in recipes]
    if (data_root() / "MNIST" / "raw").is_dir():
        runs += [("mnist_mlp", cut), ("mnist_cnn", cut)]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in runs:
            recipe = REPO / "recipes" / f"{name}.yaml"
            for threads in ("1", "2"):
                argv = [*layerwise_command(), "train", str(recipe), "--quiet"]
                argv += ["--runs-dir", f"{tmp}/runs", *extra]
                record = timed_run(argv, {"OMP_NUM_THREADS": threads}, timeout)
                record |= {
                    "recipe": name,
                    "cut": " ".join(extra[1::2]),
                    "threads": int(threads),
                    "loadavg": list(os.getloadavg()),
                }
                results.append(record)
                print(f"{name:>18} threads={threads}: {_secs(record, timeout)}", flush=True)
    return results


def summarise(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    idle: dict[str, float] = {}
    for scenario in SCENARIOS:
        for variant in VARIANTS:
            runs = [r for r in results if r["scenario"] == scenario and r["variant"] == variant]
            seconds = statistics.median(r["seconds"] for r in runs)
            timed_out = any(r["error"] == "timeout" for r in runs)
            if scenario == "idle":
                idle[variant] = math.nan if timed_out else seconds
            # A killed run has no time, so no ratio (nor has anything against a killed idle run).
            ratio = None if timed_out or math.isnan(idle[variant]) else seconds / idle[variant]
            rows.append(
                {
                    "scenario": scenario,
                    "variant": variant,
                    "median_s": round(seconds, 2),
                    "timed_out": timed_out,
                    "ratio_to_idle": None if ratio is None else round(ratio, 2),
                    "loadavg_1min": round(statistics.median(r["loadavg"][0] for r in runs), 2),
                    "outside_cores": round(statistics.median(r["outside_cores"] for r in runs), 2),
                }
            )
    return rows


def _secs(record: dict[str, Any], timeout: float) -> str:
    if record["error"] == "timeout":
        return f"> {timeout:.0f} s (killed)"
    return f"{record['seconds']:.1f} s" + ("" if record["ok"] else f" FAILED: {record['error']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--recipes", action="store_true", help="also time the bundled recipes")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "busy_cpu.json")
    args = parser.parse_args()
    info = machine()
    print(f"load average at start: {info['load_average_at_start']}")
    recipes = recipe_threads(args.timeout) if args.recipes else []
    results = quickstart_scenarios(args.rounds, args.timeout)
    rows = summarise(results)
    print()
    print(
        table(
            ["scenario", "variant", "median s", "x idle", "loadavg", "others' cores"],
            [
                [
                    r["scenario"],
                    r["variant"],
                    (">" if r["timed_out"] else "") + f"{r['median_s']:.1f}",
                    "-" if r["ratio_to_idle"] is None else f"{r['ratio_to_idle']:.2f}",
                    f"{r['loadavg_1min']:.2f}",
                    f"{r['outside_cores']:.2f}",
                ]
                for r in rows
            ],
        )
    )
    after_one = next(r for r in rows if r["scenario"] == "1 busy core" and "after" in r["variant"])
    shown = after_one["ratio_to_idle"]
    print(
        f"\nafter, 1 busy core: {'-' if shown is None else f'{shown:.2f}'} x idle "
        f"(target <= {TARGET_ONE_BUSY}); the machine was shared: see loadavg"
    )
    if recipes:
        print()
        print(
            table(
                ["recipe", "cut", "threads", "s", "loadavg", "others' cores"],
                [
                    [
                        r["recipe"],
                        r["cut"] or "-",
                        r["threads"],
                        _secs(r, args.timeout),
                        f"{r['loadavg'][0]:.2f}",
                        f"{r['outside_cores']:.2f}",
                    ]
                    for r in recipes
                ],
            )
        )
    write_json(
        args.out,
        {
            "machine": info,
            "load_average_at_end": list(os.getloadavg()),
            "target_ratio_one_busy_core": TARGET_ONE_BUSY,
            "summary": rows,
            "runs": results,
            "recipes": recipes,
        },
    )


if __name__ == "__main__":
    main()
