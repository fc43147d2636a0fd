"""Run every benchmark (`make bench`), each in its own process, one after the other.

Each script prints its table and writes `benchmarks/results/<name>.json`; `docs/benchmarks.md`
explains the figures. Benchmarks never run in parallel: they would time each other.

Run: .venv/bin/python benchmarks/run_all.py [--only overhead] [--quick]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
BENCHMARKS = {
    "overhead": "Trainer.fit against a hand-written loop and a DataLoader loop (~20 min)",
    "peers": "time per step against a hand loop: layerwise, Lightning, Keras 3, skorch, "
    "fastai on the same MLP/CNN/LSTM, weights and rows (~20 min)",
    "mnist_accuracy": "the MNIST recipes: test accuracy and wall time (~4 min)",
    "mnist_fast": "MNIST time to accuracy: 99% in one epoch against a hand loop, the 5-minute "
    "recipe, and channels_last / bf16 / torch.compile per step, 3 seeds (~20 min)",
    "probe_overhead": "probes on / off: time per training step on the MNIST MLP and CNN",
    "lr_finder": "lr-find suggestion against a grid search on three recipes (~25 min)",
    "doctor": "detection table, false alarms and auto-fix on the broken-setup library (~15 min)",
    "cli_latency": "layerwise --help and runs ls as whole processes against python -c pass (~10 s)",
    "explain": "explanations: Grad-CAM on the strokes, integrated gradients' completeness, "
    "model randomisation, time per method (~5 min)",
    "serving": "export parity per format; layerwise serve with and without micro-batching "
    "against a hand-written FastAPI endpoint, real processes under wrk (~10 min)",
    "tabular": "MLPs against LogisticRegression/Ridge and HistGradientBoosting on breast "
    "cancer, diabetes and fair, 5 seeds; the medical threshold and calibration (~3 min)",
    "distributed": "--nproc 2 against one process (weights, step time); hand all-reduce against "
    "DDP in a plain loop, real processes through torchrun (~5 min)",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", action="append", choices=sorted(BENCHMARKS), help="run just this (repeatable)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run of each (minutes); writes no JSON"
    )
    args = parser.parse_args(argv)
    failed = []
    for name in args.only or list(BENCHMARKS):
        print(f"== {name}: {BENCHMARKS[name]}", flush=True)
        command = [sys.executable, str(BENCH_DIR / f"{name}.py")] + (
            ["--quick"] if args.quick else []
        )
        start = time.perf_counter()
        code = subprocess.call(command)
        print(
            f"== {name}: {'ok' if code == 0 else f'FAILED ({code})'} in "
            f"{time.perf_counter() - start:.0f} s\n",
            flush=True,
        )
        if code:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
