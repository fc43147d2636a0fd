"""What TensorBoard tracking (on by default) costs a training run.

The same fit (an MLP and a small CNN on the 8x8 digits, in memory) with and without the
`TensorBoardLogger` (scalars per step and epoch, weight and gradient histograms per epoch),
interleaved and repeated so the machine's load falls on both alike; reported as the median ratio
of fit times (with / without). Also a whole `experiment.train` run with and without
`track.tensorboard`, which adds the writer's start-up and the sample images.

Run: .venv/bin/python benchmarks/tracking_overhead.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from sklearn.datasets import load_digits

from _common import RESULTS_DIR, machine, table, write_json
from layerwise import experiment
from layerwise.models import create_model
from layerwise.nn import materialize
from layerwise.recipe import parse_recipe
from layerwise.train import Trainer
from layerwise.train.callbacks.tensorboard import TensorBoardLogger

RECIPE = """\
name: overhead
data: {name: digits, batch_size: 32}
model: {name: mlp, args: {hidden: [128, 64]}}
train: {epochs: 5, threads: 1}
doctor: {label_noise: false}
"""


def fit_seconds(family: str, tracked: bool, folder: Path) -> float:
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(y)
    args = {"hidden": [128, 64]} if family == "mlp" else {"variant": "lenet"}
    model = create_model(family, num_classes=10, **args)
    materialize(model, x[:2])
    callbacks = [TensorBoardLogger(folder)] if tracked else []
    trainer = Trainer(model, doctor=False, callbacks=callbacks, progress=False, seed=0, threads=1)
    started = time.perf_counter()
    trainer.fit((x[:1400], y[:1400]), (x[1400:], y[1400:]), epochs=5, batch_size=32)
    return time.perf_counter() - started


def run_seconds(tracked: bool, root: Path) -> float:
    text = RECIPE + ("" if tracked else "track: {tensorboard: false}\n")
    started = time.perf_counter()
    experiment.train(parse_recipe(text), root, progress=False, echo=None)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "tracking_overhead.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results, rows = {"machine": machine(), "repeats": args.repeats}, []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, measure in (
            ("fit mlp", lambda t, i: fit_seconds("mlp", t, root / f"mlp{i}")),
            ("fit cnn", lambda t, i: fit_seconds("cnn", t, root / f"cnn{i}")),
            ("experiment.train mlp", lambda t, i: run_seconds(t, root / "runs")),
        ):
            measure(False, -1)  # warm-up
            ratios, on, off = [], [], []
            for i in range(args.repeats):
                order = (True, False) if i % 2 == 0 else (False, True)
                seconds = {tracked: measure(tracked, i) for tracked in order}
                on.append(seconds[True])
                off.append(seconds[False])
                ratios.append(seconds[True] / seconds[False])
            results[name] = {
                "tensorboard_s": on,
                "without_s": off,
                "median_ratio": statistics.median(ratios),
            }
            rows.append(
                [
                    name,
                    f"{statistics.median(off):.2f}",
                    f"{statistics.median(on):.2f}",
                    f"{statistics.median(ratios):.3f}",
                ]
            )
    results["load_average_after"] = list(os.getloadavg())
    write_json(args.out, results)
    print(table(["what (5 epochs, digits)", "without s", "with TensorBoard s", "ratio"], rows))
    print(
        f"load average {results['machine']['load_average_at_start']} -> "
        f"{results['load_average_after']}"
    )


if __name__ == "__main__":
    main()
