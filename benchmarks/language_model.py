"""Tiny Shakespeare character models under a wall-clock budget: validation loss over time.

Trains each language-model recipe (the char LSTM and the small GPT) as it is, until it ends or
`--budget` seconds have passed (reading the text and building the vocabulary included). A run
the budget cuts is scored on the weights it has when the time runs out (not the last epoch's);
a run that ends first is scored at its end. The score is the validation loss (nats per
character on the last 10% of the text); wall and CPU seconds and the load average are recorded,
since a shared machine gives the run only part of its cores. The issue's target is val loss
<= 1.88 within 3 minutes on 2 cores (nanoGPT's README reports 1.88 for its CPU baby GPT in
about 3 minutes).

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

RECIPES = ["shakespeare_char.yaml", "shakespeare_char_gpt.yaml"]


def budget_callback():
    from layerwise.train import Callback

    class Budget(Callback):
        """Stops training after `seconds` and scores the weights it has then (on the whole
        validation split, after the clock stopped); also logs the validation loss at each epoch
        end (those evaluations run inside the budget, as the run's own)."""

        order = 1000

        def __init__(self, seconds: float, name: str, loads: list) -> None:
            self.seconds, self.name, self.loads = seconds, name, loads
            self.started = time.perf_counter()
            self.cpu_started = time.process_time()
            self.curve: list[dict[str, float]] = []
            self.at_stop: dict[str, float] | None = None

        def _point(self, trainer, val_loss: float) -> dict[str, float]:
            self.loads.append(os.getloadavg())
            return {
                "seconds": time.perf_counter() - self.started,
                "cpu_seconds": time.process_time() - self.cpu_started,
                "epoch": trainer.state.epoch,
                "step": trainer.state.step,
                "val_loss": val_loss,
                "load_1min": self.loads[-1][0],
            }

        def on_batch_end(self, trainer) -> None:
            if time.perf_counter() - self.started > self.seconds:
                point = self._point(trainer, float("nan"))
                point["val_loss"] = trainer.evaluate(trainer.val_data)["loss"]  # weights now
                self.at_stop = point
                print(f"  {self.name} at the budget: {point}", flush=True)
                trainer.stop(f"time budget of {self.seconds:.0f} s reached", source="Budget")

        def on_epoch_end(self, trainer) -> None:
            point = self._point(trainer, trainer.logs.get("val_loss"))
            self.curve.append(point)
            print(f"  {self.name}: {point}", flush=True)

    return Budget


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=180.0, help="seconds per model")
    parser.add_argument("--recipes", nargs="*", default=RECIPES)
    parser.add_argument("--set", nargs="*", default=[], help="recipe overrides for every recipe")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "language_model.json")
    args = parser.parse_args()

    from layerwise.recipe import load_recipe
    from layerwise.tasks import sequence_task
    from layerwise.tasks.sequence import train_task

    Budget = budget_callback()
    results, rows, loads = {}, [], [os.getloadavg()]
    for name in args.recipes:
        # The recipe as it is: its schedule spans its planned tokens; the budget may cut it.
        recipe = load_recipe(REPO / "recipes" / name, args.set)
        task = sequence_task(recipe)
        budget = Budget(args.budget, recipe.name, loads)
        with tempfile.TemporaryDirectory() as runs:
            _, metrics = train_task(
                recipe, task, runs, progress=False, echo=None, callbacks=[budget]
            )
        elapsed = time.perf_counter() - budget.started
        # Cut by the budget: the weights it had then; else the run's end (its best epoch).
        final = budget.at_stop or budget.curve[-1]
        results[recipe.name] = {
            "overrides": args.set,
            "cut_by_budget": budget.at_stop is not None,
            "at_budget": budget.at_stop,
            "final": final,
            "metrics_of_best_epoch_weights": metrics,
            "curve": budget.curve,
            "seconds_with_final_scoring": elapsed,
        }
        rows.append(
            [recipe.name, f"{final['seconds']:.0f}", f"{final['cpu_seconds']:.0f}",
             final["step"], "budget" if budget.at_stop else "run's end",
             f"{final['val_loss']:.3f}", "yes" if final["val_loss"] <= 1.88 else "no",
             f"{final['load_1min']:.1f}"]
        )  # fmt: skip
    print(table(["recipe", "seconds", "CPU s", "steps", "stopped by", "val loss", "<= 1.88",
                 "load 1 min"], rows))  # fmt: skip
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
