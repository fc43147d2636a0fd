"""MNIST accuracy and wall time of the shipped recipes, trained exactly as `layerwise train` does.

Each recipe goes through `layerwise.experiment.train` into a real run folder (a temporary
directory unless `--runs-root` is given). A benchmark-only callback, `TestProbe`, evaluates the
test split at the end of every epoch so we can say when the model first reached the target
accuracy; the time it spends is subtracted from every clock reported here. Evaluating in eval
mode under `no_grad` draws no random numbers and touches no training state, so the run trains
exactly as it would without the probe.

Reported per recipe: final test accuracy (the weights after the last epoch, as `train`
reports it), epochs, training time (`fit`, including the per-epoch validation and checkpoints),
median seconds per epoch, total wall time (data loading, fit, test evaluation, plots, report),
and the training time until test accuracy first reached the target.

Run: .venv/bin/python benchmarks/mnist_accuracy.py [--quick] [--recipes mnist_cnn]
     [--set train.epochs=5] [--runs-root DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, RESULTS_DIR, machine, table, write_json
from layerwise import experiment
from layerwise.recipe import load_recipe
from layerwise.train import Callback, Trainer

# Recipe, the test accuracy it must reach, and the accuracy whose first crossing is timed.
TARGETS: dict[str, tuple[float, float]] = {
    "mnist_cnn": (0.993, 0.99),
    "mnist_mlp": (0.980, 0.98),
}


class TestProbe(Callback):
    """Evaluate the test split after every epoch, keeping its own time off the clock."""

    def __init__(self, test: Any, threshold: float) -> None:
        self.test = test
        self.threshold = threshold
        self.start = 0.0
        self.excluded = 0.0
        self.epochs: list[dict[str, float]] = []

    def on_fit_start(self, trainer: Trainer) -> None:
        self.start = time.perf_counter()

    def on_epoch_end(self, trainer: Trainer) -> None:
        begin = time.perf_counter()
        metrics = trainer.evaluate(self.test)
        self.epochs.append(
            {
                "epoch": trainer.state.epoch,
                "train_seconds": begin - self.start - self.excluded,
                "test_accuracy": metrics["accuracy"],
                "test_loss": metrics["loss"],
                "val_accuracy": trainer.logs.get("val_accuracy", float("nan")),
                "lr": trainer.logs.get("lr", float("nan")),
            }
        )
        self.excluded += time.perf_counter() - begin

    def first_reaching(self) -> dict[str, float] | None:
        return next((e for e in self.epochs if e["test_accuracy"] >= self.threshold), None)


def run_recipe(name: str, overrides: list[str], runs_root: Path) -> dict[str, Any]:
    recipe = load_recipe(REPO / "recipes" / f"{name}.yaml", overrides)
    target, threshold = TARGETS.get(name, (float("nan"), float("nan")))
    data = experiment.build_data(recipe)
    probe = TestProbe(data.test, threshold)
    start = time.perf_counter()
    run, test_metrics = experiment.train(recipe, runs_root, progress=False, callbacks=[probe])
    wall = time.perf_counter() - start
    history = [line for line in run.read_metrics() if line.get("split") == "train"]
    epoch_times = [line["time"] for line in history if "time" in line]
    reached = probe.first_reaching()
    fit_seconds = probe.epochs[-1]["train_seconds"] if probe.epochs else float("nan")
    result = {
        "recipe": name,
        "overrides": overrides,
        "epochs": len(probe.epochs),
        "test_accuracy": test_metrics.get("accuracy"),
        "test_loss": test_metrics.get("loss"),
        "target": target,
        "met_target": bool(test_metrics.get("accuracy", 0.0) >= target),
        "fit_seconds": fit_seconds,
        "median_epoch_seconds": statistics.median(epoch_times) if epoch_times else None,
        "wall_seconds": wall - probe.excluded,
        "probe_seconds_excluded": probe.excluded,
        "threshold": threshold,
        "epoch_reaching_threshold": reached["epoch"] if reached else None,
        "seconds_to_threshold": reached["train_seconds"] if reached else None,
        "per_epoch": probe.epochs,
        "resolved_recipe": recipe.model_dump(mode="json"),
    }
    print(
        f"{name}: test accuracy {result['test_accuracy']:.4f} after {result['epochs']} epochs, "
        f"fit {fit_seconds:.0f} s",
        flush=True,
    )
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", default="mnist_cnn,mnist_mlp")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="key=value")
    parser.add_argument("--quick", action="store_true", help="1 epoch per recipe; no JSON")
    parser.add_argument("--runs-root", type=Path, default=None, help="keep the run folders here")
    parser.add_argument("--out", type=Path, default=None, help="JSON path")
    args = parser.parse_args(argv)
    overrides = list(args.overrides) + (["train.epochs=1"] if args.quick else [])
    out = args.out or (None if args.quick else RESULTS_DIR / "mnist_accuracy.json")

    with contextlib.ExitStack() as stack:
        root = args.runs_root or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        results = [run_recipe(name, overrides, root) for name in args.recipes.split(",")]

    rows = [
        [
            r["recipe"],
            f"{100 * r['test_accuracy']:.2f}%",
            f"{100 * r['target']:.1f}%",
            r["epochs"],
            f"{r['median_epoch_seconds']:.1f}",
            f"{r['fit_seconds']:.0f}",
            f"{r['wall_seconds']:.0f}",
            f"{100 * r['threshold']:.0f}% at epoch {r['epoch_reaching_threshold']}, "
            f"{r['seconds_to_threshold']:.0f} s"
            if r["seconds_to_threshold"] is not None
            else "not reached",
        ]
        for r in results
    ]
    headers = ["recipe", "test acc", "target", "epochs", "s/epoch", "fit s", "wall s", "reached"]
    print(table(headers, rows))
    payload = {"benchmark": "mnist_accuracy", "machine": machine(), "results": results}
    write_json(out, payload)
    return payload


if __name__ == "__main__":
    main()
