"""Does the LR finder's suggestion match the best rate of a grid search? (target: within 3x)

For each recipe (mnist_mlp, mnist_cnn, digits_cnn):

1. Range tests: `lr_find` on the freshly built experiment, once per seed 0..9 (`--find-seeds`),
   since the test itself is a random draw. Seed 0 is each recipe's own seed, so its suggestion is
   what `layerwise lr-find` prints: that one is held to the target. The rule's constants were
   chosen on seeds 0-4; seeds 5-9 are held out and show how well the rule carries over.
2. Grid search: train the recipe as it is (its schedule, epochs, seed) at peak rates spaced by
   x sqrt(10) around the recipe's rate, 7 of them spanning 3 decades; while the best sits on an
   edge of the grid, the grid grows by one rate there (twice at most). Each rate is scored by
   validation accuracy at the end of training, mean over seeds (digits: 3 seeds, its validation
   split has only 144 images; MNIST: 1), exact ties going to the lower validation loss.
3. Report the best grid rate, the suggestion, their ratio and whether it is within 3x; "near
   best" lists the rates whose validation accuracy is within one standard error (of a
   difference of two accuracies) of the best, i.e. how flat the optimum is. The JSON keeps
   every grid run (val/test accuracy and loss), every range-test curve, and the ratios the
   other rules we compared would have given.

Torch runs on one thread (`--threads`): the machine has two cores shared with other work, and two
threads contending for one free core run several times slower than one.

Run: .venv/bin/python benchmarks/lr_finder.py [--recipes digits_cnn,mnist_mlp]
     [--epochs mnist_mlp=5] [--find-seeds 3] [--reuse-grid OLD.json] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, RESULTS_DIR, machine, table, write_json
from layerwise.experiment import build
from layerwise.recipe import load_recipe
from layerwise.tune import lr_finder

RECIPES = ("mnist_mlp", "mnist_cnn", "digits_cnn")
# Epochs per recipe when --epochs does not say otherwise: the recipes' own, except the MLP, cut
# from 15 to 8 epochs to keep the benchmark near 25 minutes (its one-cycle schedule is fitted to
# the shorter run, so the rate it favours is still the one measured).
DEFAULT_EPOCHS = {"mnist_mlp": 8}
# Seeds averaged per grid rate: digits validates on 144 images, where one image is 0.7% accuracy,
# so its runs (seconds each) are repeated over three seeds; MNIST's 3,000 are scored once.
DEFAULT_SEEDS = {"digits_cnn": 3}
FACTOR = math.sqrt(10)
TARGET_RATIO = 3.0
TUNING_SEEDS = range(5)  # range-test seeds the rule's constants were chosen on


def train_once(name: str, lr: float, epochs: int | None, seed: int) -> dict[str, Any]:
    """Train recipe `name` at peak rate `lr`; validation and test loss/accuracy at the end."""
    overrides = [f"train.optimizer.lr={lr!r}", f"seed={seed}"]
    if epochs is not None:
        overrides.append(f"train.epochs={epochs}")
    recipe = load_recipe(REPO / "recipes" / f"{name}.yaml", overrides)
    experiment = build(recipe)
    data, trainer = experiment.data, experiment.trainer
    start = time.perf_counter()
    trainer.fit(
        data.train,
        data.val,
        epochs=recipe.train.epochs,
        batch_size=recipe.data.batch_size,
        transform=experiment.transform,
        eval_batch_size=recipe.data.eval_batch_size,
    )
    seconds = time.perf_counter() - start
    val = trainer.evaluate(data.val)
    test = trainer.evaluate(data.test)
    return {
        "seed": seed,
        "val_accuracy": val["accuracy"],
        "val_loss": val["loss"],
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "fit_seconds": seconds,
    }


def train_seeds(name: str, lr: float, epochs: int | None, seeds: int) -> dict[str, Any]:
    """The mean over seeds 0..seeds-1 of `train_once`, with every seed's numbers kept."""
    runs = [train_once(name, lr, epochs, seed) for seed in range(seeds)]
    keys = ("val_accuracy", "val_loss", "test_accuracy", "test_loss")
    row: dict[str, Any] = {"lr": lr, **{k: statistics.fmean(r[k] for r in runs) for k in keys}}
    row["fit_seconds"] = sum(r["fit_seconds"] for r in runs)
    row["seeds"] = runs
    return row


def best_of(grid: list[dict[str, Any]]) -> dict[str, Any]:
    """Highest validation accuracy; a NaN loss never wins; ties go to the lower val loss."""

    def key(row: dict[str, Any]) -> tuple[float, float]:
        loss = row["val_loss"] if math.isfinite(row["val_loss"]) else math.inf
        return (row["val_accuracy"] if math.isfinite(loss) else -1.0, -loss)

    return max(grid, key=key)


def near_best(grid: list[dict[str, Any]], val_size: int) -> list[float]:
    """Rates whose val accuracy is within one standard error of a difference from the best.

    The standard error of the difference between two accuracies p measured on n images is
    sqrt(2 p (1 - p) / n): rates inside it cannot be told apart from the best on this split.
    """
    best = best_of(grid)["val_accuracy"]
    se = math.sqrt(2 * max(best * (1 - best), 1e-12) / val_size)
    return sorted(row["lr"] for row in grid if row["val_accuracy"] >= best - se)


def grid_search(
    name: str,
    base_lr: float,
    epochs: int | None,
    seeds: int,
    points: int,
    cached: dict[float, dict],
) -> list[dict[str, Any]]:
    """Train at base_lr * FACTOR^k around k = 0, extending an edge while the best sits on it."""
    low = -(points // 2)
    ks = list(range(low, low + points))
    runs: dict[int, dict[str, Any]] = {}

    def run(k: int) -> None:
        lr = float(f"{base_lr * FACTOR**k:.3g}")
        row = (
            {**cached[lr], "reused": True} if lr in cached else train_seeds(name, lr, epochs, seeds)
        )
        runs[k] = row
        print(
            f"  {name} lr={lr:.3g}: val acc {row['val_accuracy']:.4f}, val loss "
            f"{row['val_loss']:.4f}, test acc {row['test_accuracy']:.4f} "
            f"({row['fit_seconds']:.0f} s{', cached' if lr in cached else ''})",
            flush=True,
        )

    for k in ks:
        run(k)
    for _ in range(2):
        best_k = next(k for k, row in runs.items() if row is best_of(list(runs.values())))
        if best_k == min(runs):
            run(best_k - 1)
        elif best_k == max(runs):
            run(best_k + 1)
        else:
            break
    return [runs[k] for k in sorted(runs)]


def other_rules(result: lr_finder.LRFindResult) -> dict[str, float]:
    """What the other rules we measured would have suggested on the same range test."""
    lrs = np.asarray(result.lrs)
    ema = np.asarray(result.losses, dtype=float)
    ema_low = int(np.nanargmin(ema))
    ema_slope = np.gradient(ema[: ema_low + 1], np.log10(lrs[: ema_low + 1]))
    return {
        # fastai's classic advice, on the moving average it plots
        "moving-average minimum / 10": float(lrs[ema_low] / 10),
        # Lightning-style: the steepest fall of the moving average
        "moving-average steepest fall": float(lrs[int(np.argmin(ema_slope))]),
        # the same window as the chosen rule, other read-outs
        "lowest point / 10": result.min_loss_lr / 10,
        "steepest fall": result.steepest_lr,
        "valley edge / 10 without the spike cap": _edge_uncapped(result) / 10,
    }


def _edge_uncapped(result: lr_finder.LRFindResult) -> float:
    """The chosen rule's valley edge on a plain windowed mean (no cap at the starting loss)."""
    x = np.log10(result.lrs)
    y = np.asarray(result.raw_losses, dtype=float)
    ok = np.isfinite(y)
    half = lr_finder.WINDOW / 2 + 1e-9
    curve = np.array([y[ok & (np.abs(x - xi) <= half)].mean() for xi in x])
    low = int(np.nanargmin(curve))
    ceiling = curve[low] + lr_finder.CLIMB * (np.nanmax(curve[: low + 1]) - curve[low])
    outside = np.flatnonzero(~(curve[low:] <= ceiling))
    edge = low + int(outside[0]) - 1 if len(outside) else len(curve) - 1
    return float(result.lrs[edge])


def range_test(name: str, seed: int) -> dict[str, Any]:
    """`lr_find` on recipe `name` built with `seed` (the range test is itself a random draw)."""
    experiment = build(load_recipe(REPO / "recipes" / f"{name}.yaml", [f"seed={seed}"]))
    start = time.perf_counter()
    result = lr_finder.lr_find(experiment)
    seconds = time.perf_counter() - start
    print(
        f"{name}: lr_find (seed {seed}) {seconds:.0f} s, {len(result.lrs)} steps, suggestion "
        f"{result.suggestion:.3g} (min loss at {result.min_loss_lr:.3g}, steepest at "
        f"{result.steepest_lr:.3g})",
        flush=True,
    )
    return {"seed": seed, "seconds": seconds, "result": result}


def bench_recipe(
    name: str,
    epochs: int | None,
    seeds: int,
    find_seeds: int,
    points: int,
    cached: dict[float, dict],
) -> dict[str, Any]:
    recipe = load_recipe(REPO / "recipes" / f"{name}.yaml")
    tests = [range_test(name, recipe.seed + i) for i in range(find_seeds)]
    grid = grid_search(name, recipe.train.optimizer.lr, epochs, seeds, points, cached)
    best = best_of(grid)
    val_size = len(build_val_labels(name))

    def ratios(lrs: list[float]) -> dict[str, Any]:
        values = [lr / best["lr"] for lr in lrs]
        inside = [1 / TARGET_RATIO <= v <= TARGET_RATIO for v in values]
        return {"ratios_by_seed": values, "within_3x_by_seed": inside}

    headline = tests[0]["result"]  # the recipe's own seed: what `layerwise lr-find` prints
    others = [other_rules(t["result"]) for t in tests]
    return {
        "recipe": name,
        "recipe_lr": recipe.train.optimizer.lr,
        "epochs": epochs or recipe.train.epochs,
        "seeds": seeds,
        "score": f"val_accuracy, mean over {seeds} seed(s) (exact ties: lower val_loss)",
        "best_grid_lr": best["lr"],
        "best_val_accuracy": best["val_accuracy"],
        "near_best_lrs": near_best(grid, val_size),
        "val_size": val_size,
        "suggestion": headline.suggestion,
        "rule": headline.rule,
        "ratio": headline.suggestion / best["lr"],
        "within_3x": 1 / TARGET_RATIO <= headline.suggestion / best["lr"] <= TARGET_RATIO,
        "range_test_seeds": [t["seed"] for t in tests],
        "tuning_seeds": [t["seed"] for t in tests if t["seed"] in TUNING_SEEDS],
        "suggestions_by_seed": [t["result"].suggestion for t in tests],
        **ratios([t["result"].suggestion for t in tests]),
        "other_rules": {rule: ratios([o[rule] for o in others]) for rule in others[0]},
        "range_tests": [
            {"seed": t["seed"], "seconds": t["seconds"], **rounded(t["result"].to_dict())}
            for t in tests
        ],
        "grid": grid,
    }


def rounded(curve: dict[str, Any]) -> dict[str, Any]:
    """Losses to 5 significant digits: the JSON stays readable and the rule reads the same."""
    for key in ("losses", "raw_losses"):
        curve[key] = [None if v is None else float(f"{v:.5g}") for v in curve[key]]
    return curve


def build_val_labels(name: str) -> torch.Tensor:
    from layerwise.experiment import build_data

    return build_data(load_recipe(REPO / "recipes" / f"{name}.yaml")).val[1]


def load_cache(path: Path, name: str, epochs: int | None, seeds: int) -> dict[float, dict]:
    """Grid runs of an earlier result file for the same recipe, epochs and seeds."""
    if not path.is_file():
        return {}
    recipe = load_recipe(REPO / "recipes" / f"{name}.yaml")
    for entry in json.loads(path.read_text()).get("results", []):
        same = (entry["recipe"], entry["epochs"], entry.get("seeds", 1)) == (
            name,
            epochs or recipe.train.epochs,
            seeds,
        )
        if same:
            return {row["lr"]: row for row in entry["grid"]}
    return {}


def per_recipe(specs: list[str], defaults: dict[str, int]) -> dict[str, int]:
    """`N` (every recipe) or `recipe=N` options, over the defaults."""
    values = dict(defaults)
    for spec in specs:
        name, sep, value = spec.partition("=")
        if sep:
            values[name] = int(value)
        else:
            values = dict.fromkeys(RECIPES, int(name))
    return values


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument(
        "--epochs", action="append", default=[], help="N for all, or recipe=N (repeatable)"
    )
    parser.add_argument(
        "--seeds", action="append", default=[], help="grid seeds: N for all, or recipe=N"
    )
    parser.add_argument("--find-seeds", type=int, default=10, help="range tests per recipe")
    parser.add_argument("--points", type=int, default=7, help="grid size before edge extension")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument(
        "--reuse-grid",
        type=Path,
        default=None,
        help="take grid runs (same recipe, epochs, seeds) from this earlier result file",
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "lr_finder.json")
    parser.add_argument(
        "--quick", action="store_true", help="digits_cnn only, 3 epochs, a small grid; no JSON"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.recipes, args.epochs, args.find_seeds, args.points = "digits_cnn", ["3"], 2, 4
        args.out = Path(tempfile.mkdtemp()) / "lr_finder.json"
    torch.set_num_threads(args.threads)
    epochs = per_recipe(args.epochs, DEFAULT_EPOCHS)
    seeds = per_recipe(args.seeds, DEFAULT_SEEDS)
    payload: dict[str, Any] = {"benchmark": "lr_finder", "machine": machine(), "results": []}
    if args.reuse_grid is not None:
        payload["grid_reused_from"] = json.loads(args.reuse_grid.read_text())["machine"]
    start = time.perf_counter()
    for name in args.recipes.split(","):
        runs = epochs.get(name), seeds.get(name, 1)
        cached = load_cache(args.reuse_grid, name, *runs) if args.reuse_grid else {}
        payload["results"].append(bench_recipe(name, *runs, args.find_seeds, args.points, cached))
        payload["total_seconds"] = time.perf_counter() - start
        write_json(args.out.with_suffix(".partial.json"), payload)
    results = payload["results"]
    payload["target_met"] = all(r["within_3x"] for r in results)
    payload["grid_fit_seconds"] = sum(row["fit_seconds"] for r in results for row in r["grid"])
    print(table(*summary(results)))
    print()
    print(table(*rule_comparison(results)))
    print(
        f"target met: {payload['target_met']}; {payload['total_seconds'] / 60:.1f} min "
        f"(grid training {payload['grid_fit_seconds'] / 60:.1f} min"
        + (", reused" if args.reuse_grid else "")
        + ")"
    )
    write_json(args.out, payload)
    args.out.with_suffix(".partial.json").unlink(missing_ok=True)
    return payload


def summary(results: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    headers = ["recipe", "epochs", "recipe lr", "best grid lr", "its val acc", "near best"]
    headers += ["suggestion", "ratio", "within 3x", "range tests within 3x", "ratios"]
    rows = [
        [
            r["recipe"],
            r["epochs"],
            f"{r['recipe_lr']:.3g}",
            f"{r['best_grid_lr']:.3g}",
            f"{r['best_val_accuracy']:.4f}",
            ", ".join(f"{lr:.3g}" for lr in r["near_best_lrs"]),
            f"{r['suggestion']:.3g}",
            f"{r['ratio']:.2f}",
            "yes" if r["within_3x"] else "NO",
            f"{sum(r['within_3x_by_seed'])}/{len(r['within_3x_by_seed'])}",
            f"{min(r['ratios_by_seed']):.2f}-{max(r['ratios_by_seed']):.2f}",
        ]
        for r in results
    ]
    return headers, rows


def rule_comparison(results: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Per rule: recipes whose seed-0 suggestion is within 3x, and all range tests within 3x."""
    rules = {"chosen: valley edge / 10": [(r, r) for r in results]}
    for name in results[0]["other_rules"]:
        rules[name] = [(r, r["other_rules"][name]) for r in results]
    headers = ["rule", "seed 0 within 3x", "held-out seeds within 3x", "all within 3x"]
    headers += [f"{r['recipe']} ratios" for r in results]
    rows = []
    for name, pairs in rules.items():
        inside = [(r, o["within_3x_by_seed"]) for r, o in pairs]
        held = [
            ok
            for r, oks in inside
            for s, ok in zip(r["range_test_seeds"], oks, strict=True)
            if s not in TUNING_SEEDS
        ]
        every = [ok for _, oks in inside for ok in oks]
        rows.append(
            [
                name,
                f"{sum(oks[0] for _, oks in inside)}/{len(inside)}",
                f"{sum(held)}/{len(held)}",
                f"{sum(every)}/{len(every)}",
                *(
                    f"{min(o['ratios_by_seed']):.2g}-{max(o['ratios_by_seed']):.2g}"
                    for _, o in pairs
                ),
            ]
        )
    return headers, rows


if __name__ == "__main__":
    main()
