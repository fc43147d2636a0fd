"""Tiny Shakespeare character models under a wall-clock budget: validation loss over time.

Trains each language-model recipe (the char LSTM and the small GPT) until `--budget` seconds
have passed (reading the text and building the vocabulary included), logging the validation
loss (nats per character, on the last 10% of the text) at every epoch, then reports the best
weights' validation loss and perplexity. The issue's target is val loss <= 1.88 within 3 minutes
on 2 cores (nanoGPT's README reports 1.88 for its CPU baby GPT in about 3 minutes). The load
average is recorded since a shared machine gives the run only part of its cores.

Usage: python benchmarks/language_model.py --budget 180
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, RESULTS_DIR, machine, table, write_json

sys.path.insert(0, str(REPO / "src"))

RECIPES = ["lm_shakespeare_char_lstm.yaml", "lm_shakespeare_char_gpt.yaml"]


def budget_callback():
    from layerwise.train import Callback

    class Budget(Callback):
        """Stops training after `seconds` and logs the validation loss at each epoch end."""

        order = 1000

        def __init__(self, seconds: float, name: str, loads: list) -> None:
            self.seconds, self.name, self.loads = seconds, name, loads
            self.started = time.perf_counter()
            self.curve: list[dict[str, float]] = []

        def on_batch_end(self, trainer) -> None:
            if time.perf_counter() - self.started > self.seconds:
                trainer.stop(f"time budget of {self.seconds:.0f} s reached", source="Budget")

        def on_epoch_end(self, trainer) -> None:
            self.loads.append(os.getloadavg())
            point = {
                "seconds": time.perf_counter() - self.started,
                "epoch": trainer.state.epoch,
                "val_loss": trainer.logs.get("val_loss"),
                "load_1min": self.loads[-1][0],
            }
            self.curve.append(point)
            print(f"  {self.name}: {point}", flush=True)

    return Budget


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=180.0, help="seconds per model")
    parser.add_argument("--recipes", nargs="*", default=RECIPES)
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "language_model.json")
    args = parser.parse_args()

    from layerwise.recipe import load_recipe
    from layerwise.tasks import sequence_task
    from layerwise.tasks.sequence import train_task

    Budget = budget_callback()
    results, rows, loads = {}, [], [os.getloadavg()]
    for name in args.recipes:
        # Non-overlapping windows make short epochs, so the curve has points; the budget ends it.
        block = load_recipe(REPO / "recipes" / name).data.args.get("block_size", 128)
        overrides = ["train.epochs=100", f"data.args.stride={block}"]
        recipe = load_recipe(REPO / "recipes" / name, overrides)
        budget = Budget(args.budget, recipe.name, loads)

        with tempfile.TemporaryDirectory() as runs:
            _, metrics = train_task(
                recipe, sequence_task(recipe), runs, progress=False, echo=None, callbacks=[budget]
            )
        elapsed = time.perf_counter() - budget.started
        results[recipe.name] = {"metrics": metrics, "curve": budget.curve, "seconds": elapsed}
        rows.append(
            [recipe.name, f"{elapsed:.0f}", len(budget.curve), f"{metrics['val_loss']:.3f}",
             f"{metrics['perplexity']:.2f}", "yes" if metrics["val_loss"] <= 1.88 else "no"]
        )  # fmt: skip
    print(table(["recipe", "seconds", "epochs", "val loss", "perplexity", "<= 1.88"], rows))
    write_json(
        args.output,
        {
            "machine": machine(),
            "budget_seconds": args.budget,
            "results": results,
            "target": "val loss <= 1.88 nats within 3 minutes on 2 cores",
            "load_average": {"samples_1min": [load[0] for load in loads], "end": list(loads[-1])},
        },
    )


if __name__ == "__main__":
    main()
