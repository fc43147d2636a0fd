"""CLI latency: `layerwise --help` and `layerwise runs ls` as whole processes, against the floor.

Four commands, each started as a fresh process the way a user types it:

- `python -c pass`: the interpreter's own start-up, the floor nothing can go under;
- `python -c "import typer"`: the CLI framework alone;
- `layerwise --help`: the console script, typer and rich rendering the help;
- `layerwise runs ls --runs-dir DIR`: listing a runs folder holding a few finished runs (a
  `run.json` each, indexed by `RunIndex.rebuild`, so the SQLite index is real).

After one warm-up round (not counted), each round runs the four once, the starting command
rotating from round to round, so all four see the same machine at about the same moment. The
wall time of a command is `time.perf_counter()` from starting it to reaping it (`os.wait4`,
which also gives its peak RSS). Reported: median, min and max over rounds, the ratio of the
median to the `python -c pass` median, and the median peak RSS. Target: both layerwise commands
under 0.5 s median.

This process stays light while it measures (torch is imported only afterwards, by `machine()`):
Linux counts the launcher's memory at the time of the spawn into a child's peak RSS, and a big
parent would also slow the spawn. A peak RSS at or under the launcher's own shows as `<= N`.

Run: .venv/bin/python benchmarks/cli_latency.py [--quick] [--rounds 10] [--out PATH]
"""

from __future__ import annotations

import argparse
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
from _common import RESULTS_DIR, OutsideLoad, machine, table, write_json
from layerwise.runs.atomic import atomic_write_json
from layerwise.runs.index import RunIndex

TARGET_S = 0.5
FLOOR = "python -c pass"


def commands(runs_dir: Path) -> dict[str, list[str]]:
    """Label -> argv. The console script next to this interpreter, else `python -m`."""
    script = Path(sys.executable).parent / "layerwise"
    cli = [str(script)] if script.is_file() else [sys.executable, "-m", "layerwise.cli"]
    return {
        FLOOR: [sys.executable, "-c", "pass"],
        "python -c 'import typer'": [sys.executable, "-c", "import typer"],
        "layerwise --help": [*cli, "--help"],
        "layerwise runs ls": [*cli, "runs", "ls", "--runs-dir", str(runs_dir)],
    }


def make_runs(root: Path, count: int = 6) -> Path:
    """A runs folder with `count` finished runs in its index, as training leaves them."""
    runs_dir = root / "runs"
    for i in range(count):
        model = ("mlp", "cnn", "resnet")[i % 3]
        stamp = f"2026-01-0{1 + i}T12:00:00+00:00"
        atomic_write_json(
            runs_dir / f"digits_{model}-{i}" / "run.json",
            {
                "name": f"digits_{model}-{i}",
                "status": "finished",
                "created": stamp,
                "updated": stamp,
                "recipe_name": f"digits_{model}",
                "model": model,
                "dataset": "digits",
                "epochs": 20,
                "best_metric": {"val_accuracy": 0.97},
                "final_metrics": {"test_loss": 0.1 + i / 100, "test_accuracy": 0.96 + i / 1000},
            },
        )
    RunIndex(runs_dir).rebuild()
    return runs_dir


def time_once(argv: list[str]) -> tuple[float, float]:
    """Wall seconds from start to reaped exit, and peak RSS in MB, of one whole process."""
    start = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = process.stderr.read() if process.stderr else b""
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)  # so Popen does not wait again
    if process.stderr:
        process.stderr.close()
    if process.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} exited with {process.returncode}: {stderr.decode(errors='replace')}"
        )
    return seconds, usage.ru_maxrss / 1024  # Linux reports kilobytes


def measure(argvs: dict[str, list[str]], rounds: int) -> dict[str, Any]:
    """Warm-up round, then `rounds` interleaved rounds with a rotating starter."""
    labels = list(argvs)
    for label in labels:
        time_once(argvs[label])
    seconds: dict[str, list[float]] = {label: [] for label in labels}
    rss: dict[str, list[float]] = {label: [] for label in labels}
    load = OutsideLoad()
    clock = _children_clock()
    outside: list[float] = []
    for r in range(rounds):
        for label in labels[r % len(labels) :] + labels[: r % len(labels)]:
            s, mb = time_once(argvs[label])
            seconds[label].append(s)
            rss[label].append(mb)
        # OutsideLoad counts our own children as outside: take their cores back out.
        previous, clock = clock, _children_clock()
        children = (clock[0] - previous[0]) / max(clock[1] - previous[1], 1e-9)
        outside.append(max(load.sample() - children, 0.0))
    launcher_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "seconds": seconds,
        "peak_rss_mb": rss,
        "launcher_rss_mb": launcher_mb,
        "outside_load_cores": outside,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="counted rounds (default 10)")
    parser.add_argument("--quick", action="store_true", help="3 rounds; no JSON")
    parser.add_argument("--out", type=Path, default=None, help="JSON path")
    args = parser.parse_args(argv)
    rounds = 3 if args.quick else args.rounds
    out = args.out or (None if args.quick else RESULTS_DIR / "cli_latency.json")
    load_at_start = list(os.getloadavg()) if hasattr(os, "getloadavg") else None

    with tempfile.TemporaryDirectory() as tmp:
        argvs = commands(make_runs(Path(tmp)))
        measured = measure(argvs, rounds)

    floor = statistics.median(measured["seconds"][FLOOR])
    results = []
    for label, times in measured["seconds"].items():
        median = statistics.median(times)
        results.append(
            {
                "command": label,
                "median_s": median,
                "min_s": min(times),
                "max_s": max(times),
                "ratio_to_floor": median / floor,
                "peak_rss_mb": statistics.median(measured["peak_rss_mb"][label]),
                "under_target": median < TARGET_S if label.startswith("layerwise") else None,
                "seconds": times,
            }
        )
    rows = [
        [
            r["command"],
            f"{r['median_s']:.3f}",
            f"{r['min_s']:.3f}",
            f"{r['max_s']:.3f}",
            f"{r['ratio_to_floor']:.1f}x",
            _rss(r["peak_rss_mb"], measured["launcher_rss_mb"]),
            {True: "yes", False: "NO", None: ""}[r["under_target"]],
        ]
        for r in results
    ]
    headers = ["command", "median s", "min s", "max s", "/ floor", "peak MB", f"< {TARGET_S} s"]
    print(f"{rounds} interleaved rounds, whole processes")
    print(table(headers, rows))
    loads = [x for x in measured["outside_load_cores"] if x == x]  # NaN where /proc is absent
    if loads:
        print(f"outside load during the rounds: median {statistics.median(loads):.2f} cores")
    payload = {
        "benchmark": "cli_latency",
        "machine": {**machine(), "load_average_at_start": load_at_start},  # not at the end
        "rounds": rounds,
        "target_s": TARGET_S,
        "launcher_rss_mb": measured["launcher_rss_mb"],
        "outside_load_cores": measured["outside_load_cores"],
        "results": results,
    }
    write_json(out, payload)
    return payload


def _children_clock() -> tuple[float, float]:
    """CPU seconds of our reaped children so far, and the wall clock."""
    times = os.times()
    return times.children_user + times.children_system, time.perf_counter()


def _rss(mb: float, launcher_mb: float) -> str:
    """A child's peak RSS; at or under the launcher's own, it is the launcher's figure."""
    return f"<= {launcher_mb:.0f}" if mb <= launcher_mb + 1 else f"{mb:.0f}"


if __name__ == "__main__":
    main()
