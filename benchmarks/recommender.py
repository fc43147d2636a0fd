"""Recommenders: test RMSE against the noise floor of the synthetic rating set, leave-one-out
HR@10 / NDCG@10, and MovieLens-100k's u1 split when the user gives its path.

Synthetic (`synthetic_ratings`, 2,000 users, 1,000 items, rank-8 truth, noise sigma 0.5): for each
seed a new data set is drawn and trained on:
- `mf_dim{8,16,32}`: the `recsys_synthetic_mf` recipe with that factor size; `mf_selected` is the
  one with the best validation RMSE (chosen without looking at the test split or the true rank);
- `ncf`: the `recsys_synthetic_ncf` recipe (NeuMF).
The target is test RMSE within 10% of the noise floor (the RMSE of the true means on the same
test rows). Ranking: each user's last test rating among 99 unrated items; the popularity ranking
and the true means (`oracle`) are scored on the same samples.

MovieLens 100k (not redistributable, so not on this machine): with `--movielens PATH` (the
unpacked `ml-100k` folder) the MF and NeuMF recipes train on the u1 split (`u1.base` minus 5%
for validation, scored on `u1.test`) against Surprise's SVD 0.934 and SVD++ 0.919; target
RMSE <= 0.92.

Every run goes through `layerwise.tasks.recommend.train_recommender` (what `layerwise train`
does for rating data). The machine is shared: the load average at start and end, wall and CPU
time are recorded.

Usage: python benchmarks/recommender.py [--seeds 0 1 2] [--jobs 3] [--movielens ~/ml-100k] [--quick]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from _common import REPO, RESULTS_DIR, machine, table, write_json

sys.path.insert(0, str(REPO / "src"))

ANCHORS = {"surprise_svd": 0.934, "surprise_svdpp": 0.919, "target_rmse": 0.92}
RECIPES = REPO / "recipes"
HEADERS = ["config", "seeds", "RMSE", "floor", "RMSE/floor (worst)", "HR@10", "NDCG@10"]
HEADERS += ["HR@10 popularity", "HR@10 oracle", "train RMSE at best (epoch)", "wall s", "CPU s"]


def train_one(recipe_name: str, overrides: list[str], root: Path) -> dict[str, Any]:
    from layerwise.recipe import load_recipe
    from layerwise.tasks.recommend import train_recommender

    recipe = load_recipe(RECIPES / f"{recipe_name}.yaml", overrides)
    wall, cpu = time.perf_counter(), time.process_time()
    load_before = list(os.getloadavg())
    run, metrics = train_recommender(recipe, root, progress=False, echo=None)
    curve = epoch_curve(run.read_metrics())
    best = min(curve, key=lambda e: curve[e].get("val", float("inf"))) if curve else None
    return {
        "recipe": recipe_name,
        "overrides": overrides,
        **metrics,
        "best_val_rmse": curve[best].get("val") if best else None,
        "best_epoch": best,
        "train_rmse_at_best": curve[best].get("train") if best else None,
        "curve": curve,
        "epochs": recipe.train.epochs,
        "load_before": load_before,
        "wall_s": round(time.perf_counter() - wall, 1),
        "cpu_s": round(time.process_time() - cpu, 1),
        "load_after": list(os.getloadavg()),
    }


def epoch_curve(history: list[dict[str, Any]]) -> dict[int, dict[str, float]]:
    """`{epoch: {"train": rmse, "val": rmse}}` from a run's metrics log: the train RMSE is the
    epoch's running figure (weights changing under it), enough to see a fit below the floor."""
    curve: dict[int, dict[str, float]] = {}
    for row in history:
        if row.get("split") in ("train", "val") and "rmse" in row and "epoch" in row:
            curve.setdefault(int(row["epoch"]), {})[row["split"]] = row["rmse"]
    return curve


def synthetic(seeds: list[int], quick: bool, root: Path, jobs: int = 1) -> list[dict[str, Any]]:
    """Every seed's runs; with `jobs` > 1 the seeds run in that many processes at once (the
    figures are the same; wall times then include the processes' competition, CPU times not)."""
    if jobs <= 1:
        return [row for seed in seeds for row in synthetic_seed(seed, quick, root)]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=context) as pool:
        work = [pool.submit(synthetic_seed, seed, quick, root / str(seed)) for seed in seeds]
        return [row for done in work for row in done.result()]


def synthetic_seed(seed: int, quick: bool, root: Path) -> list[dict[str, Any]]:
    """One seed: biased MF with 8, 16 and 32 factors, the one validation picks, and NeuMF."""
    rows = []
    small = ["data.args.num_users=300", "data.args.num_items=200"] if quick else []
    epochs = ["train.epochs=3"] if quick else []
    data = [f"data.args.seed={seed}", f"seed={seed}", *small, *epochs]
    candidates = []
    for dim in (8, 16, 32):
        row = train_one("recsys_synthetic_mf", [*data, f"model.args.dim={dim}"], root)
        row.update(config=f"mf_dim{dim}", seed=seed)
        candidates.append(row)
        rows.append(row)
        print(f"seed {seed} mf dim {dim}: rmse/floor {row['rmse_over_floor']:.3f}", flush=True)
    best = min(candidates, key=lambda r: r["best_val_rmse"])
    rows.append({**best, "config": "mf_selected", "selected": best["config"]})
    row = train_one("recsys_synthetic_ncf", data, root)
    row.update(config="ncf", seed=seed)
    rows.append(row)
    print(f"seed {seed} ncf: rmse/floor {row['rmse_over_floor']:.3f}", flush=True)
    return rows


def movielens(path: str, root: Path) -> list[dict[str, Any]]:
    """The u1 split with both recipes (their synthetic-set settings, untuned for MovieLens)."""
    data = ["data.name=movielens", f"data.args={{path: '{path}', split: u1, val_fraction: 0.05}}"]
    rows = []
    for recipe, extra in (
        ("recsys_synthetic_mf", ["model.args.dim=32", "train.l2=0.05", "train.epochs=20"]),
        ("recsys_synthetic_ncf", ["train.epochs=20"]),
    ):
        row = train_one(recipe, [*data, *extra], root)
        row.update(config=f"movielens_u1_{recipe.rsplit('_', 1)[1]}")
        rows.append(row)
    return rows


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for config in dict.fromkeys(r["config"] for r in rows):
        runs = [r for r in rows if r["config"] == config]

        def stats(key: str, runs: list[dict[str, Any]] = runs) -> tuple[float, float]:
            values = [r[key] for r in runs if r.get(key) is not None]
            if not values:
                return float("nan"), float("nan")
            return statistics.mean(values), statistics.pstdev(values)

        out.append(
            {
                "config": config,
                "seeds": len(runs),
                **{
                    f"{key}_{part}": value
                    for key in (
                        "rmse",
                        "noise_floor",
                        "rmse_over_floor",
                        "hr@10",
                        "ndcg@10",
                        "popularity_hr@10",
                        "oracle_hr@10",
                        "wall_s",
                        "cpu_s",
                        "train_rmse_at_best",
                        "best_epoch",
                    )
                    for part, value in zip(("mean", "std"), stats(key), strict=True)
                },
                "worst_rmse_over_floor": max(r.get("rmse_over_floor", float("nan")) for r in runs),
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--movielens", metavar="PATH", help="the unpacked ml-100k folder")
    parser.add_argument("--quick", action="store_true", help="tiny sets, 3 epochs, no JSON")
    parser.add_argument("--jobs", type=int, default=1, help="seeds trained at once (processes)")
    args = parser.parse_args(argv)
    info = machine()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "runs"
        seeds = args.seeds[:1] if args.quick else args.seeds
        rows = synthetic(seeds, args.quick, root, args.jobs)
        if args.movielens:
            rows += movielens(args.movielens, root)
    per_config = summary(rows)
    print(
        table(
            HEADERS,
            [
                [
                    s["config"],
                    s["seeds"],
                    f"{s['rmse_mean']:.4f} ± {s['rmse_std']:.4f}",
                    f"{s['noise_floor_mean']:.4f}",
                    f"{s['rmse_over_floor_mean']:.3f} ({s['worst_rmse_over_floor']:.3f})",
                    f"{s['hr@10_mean']:.3f}",
                    f"{s['ndcg@10_mean']:.3f}",
                    f"{s['popularity_hr@10_mean']:.3f}",
                    f"{s['oracle_hr@10_mean']:.3f}",
                    f"{s['train_rmse_at_best_mean']:.4f} ({s['best_epoch_mean']:.1f})",
                    f"{s['wall_s_mean']:.0f}",
                    f"{s['cpu_s_mean']:.0f}",
                ]
                for s in per_config
            ],
        )
    )
    if args.movielens:
        print(f"anchors (ML-100k u1): {ANCHORS}")
    if not args.quick:
        write_json(
            RESULTS_DIR / "recommender.json",
            {
                "machine": info,
                "load_average_at_end": list(os.getloadavg()),
                "anchors": ANCHORS,
                "target": "synthetic: test RMSE <= 1.10 x noise floor; ML-100k u1: RMSE <= 0.92",
                "movielens_measured": bool(args.movielens),
                "summary": per_config,
                "runs": rows,
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
