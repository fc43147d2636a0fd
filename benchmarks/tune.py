"""Doctor pruning vs Optuna's median pruner alone, on the same search budget.

Two studies search the same space with the same TPE seed, the same number of trials and epochs
per trial: one prunes with the median pruner only (and, as plain Optuna would, trains through a
NaN loss), the other also prunes at once every trial the doctor finds hopeless (`tune.prune_on`).
The space has hopeless regions on purpose: learning rates up to 10 and deep sigmoid nets. The
two studies advance one trial at a time in turn (alternating which goes first), so the machine's
load falls on both alike. Reported per study: wall time, epochs trained, trials pruned (by whom),
the best score and the wall time at which it was first reached.

Run: .venv/bin/python benchmarks/tune.py --setup digits|mnist [--trials 24] [--epochs 8] [--seeds 0]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import yaml

from _common import RESULTS_DIR, machine, table, write_json
from layerwise.tune.pruning import STEP_CODES
from layerwise.tune.search import tune

MODES = {"median": False, "median+doctor": True}


# digits: 1,437 training images, an epoch is cheap next to a run's fixed cost (build, report);
# mnist: 12,000 of the MNIST training images, an epoch costs more than the fixed part.
DATA = {
    "digits": {"name": "digits", "batch_size": 64, "val_fraction": 0.2},
    "mnist": {"name": "mnist", "batch_size": 64, "val_fraction": 0.2, "args": {"subset": 12000}},
}


def recipe(setup: str, epochs: int, seed: int, doctor_prune: bool) -> dict:
    return {
        "name": "bench_tune",
        "seed": 0,
        "data": DATA[setup],
        "model": {"name": "mlp", "args": {"hidden": [64]}},
        "train": {"epochs": epochs, "monitor": "val_accuracy", "threads": 1},
        "doctor": {"label_noise": False, "data_checks": False, "live": False},
        "track": {"tensorboard": False},
        "tune": {
            "metric": "val_accuracy",
            "seed": seed,
            "startup_trials": 3,
            "warmup_epochs": 1,
            "doctor_prune": doctor_prune,
            "space": {
                "train.optimizer.lr": {"log_uniform": [1e-4, 10.0]},
                "train.optimizer.name": {"choice": ["sgd", "adam"]},
                "model.args.hidden": {"choice": [[64], [128, 64], [64, 64, 64, 64, 64, 64]]},
                "model.args.activation": {"choice": ["relu", "sigmoid"]},
            },
        },
    }


def run_seed(setup: str, seed: int, trials: int, epochs: int, work: Path) -> dict:
    paths = {}
    for mode, doctor in MODES.items():
        paths[mode] = work / f"{mode.replace('+', '_')}_s{seed}.yaml"
        paths[mode].write_text(yaml.safe_dump(recipe(setup, epochs, seed, doctor)))
    wall = dict.fromkeys(MODES, 0.0)
    best = {mode: (None, None) for mode in MODES}  # (score, wall time it was first reached)
    results = {}
    for i in range(trials):
        order = list(MODES) if i % 2 == 0 else list(reversed(MODES))
        for mode in order:
            started = time.perf_counter()
            result = tune(
                paths[mode],
                trials=i + 1,
                study_name=f"{setup}_{mode.replace('+', '_')}_s{seed}",
                runs_root=work / "runs",
                echo=None,
            )
            wall[mode] += time.perf_counter() - started
            results[mode] = result
            if result.best is not None and (
                best[mode][0] is None or result.best.value > best[mode][0]
            ):
                best[mode] = (result.best.value, wall[mode])
            row = result.rows[-1]
            print(
                f"{setup} seed {seed} trial {i:2d} {mode:14s} {row.state:8s} "
                f"{'' if row.value is None else f'{row.value:.4f}':7s} {row.epochs} ep "
                f"{row.pruned_by or '':28s} {row.seconds or 0:5.1f} s  {row.params}",
                flush=True,
            )
    out = {}
    for mode, result in results.items():
        rows = result.rows
        out[mode] = {
            "wall_s": round(wall[mode], 1),
            "trial_s": round(sum(r.seconds or 0 for r in rows), 1),
            "epochs_trained": sum(r.epochs for r in rows),
            "steps_trained": sum(r.steps for r in rows),
            "fit_s": round(sum(r.fit_seconds or 0 for r in rows), 1),
            "epochs_budget": trials * epochs,
            "pruned_median": sum(r.pruned_by == "median" for r in rows),
            "pruned_doctor": sum((r.pruned_by or "").startswith("doctor:") for r in rows),
            "pruned_other": sum(
                r.state == "pruned"
                and r.pruned_by not in (None, "median")
                and not (r.pruned_by or "").startswith("doctor:")
                for r in rows
            ),
            "completed": sum(r.state == "complete" for r in rows),
            "best_score": best[mode][0],
            "best_reached_at_s": None if best[mode][1] is None else round(best[mode][1], 1),
            "best_params": result.best.params if result.best else None,
            "trials": [
                {
                    "number": r.number,
                    "state": r.state,
                    "value": r.value,
                    "epochs": r.epochs,
                    "pruned_by": r.pruned_by,
                    "seconds": r.seconds,
                    "fit_seconds": r.fit_seconds,
                    "steps": r.steps,
                    "params": r.params,
                }
                for r in rows
            ],
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup", choices=sorted(DATA), default="digits")
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "tune.json")
    args = parser.parse_args()
    payload = json.loads(args.out.read_text()) if args.out.exists() else {"setups": {}}
    entry = payload["setups"][args.setup] = {
        "machine": machine(),
        "budget": {"trials": args.trials, "epochs_per_trial": args.epochs},
        "data": DATA[args.setup],
        "step_codes": list(STEP_CODES),
        "seeds": {},
    }
    work = Path(tempfile.mkdtemp(prefix="bench_tune_"))
    try:
        for seed in args.seeds:
            entry["seeds"][str(seed)] = run_seed(args.setup, seed, args.trials, args.epochs, work)
            entry["load_average_after"] = list(os.getloadavg())
            write_json(args.out, payload)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(summary(payload))


def summary(payload: dict) -> str:
    """The side-by-side table of every setup and seed in the results."""
    rows = []
    for setup, entry in payload["setups"].items():
        for seed, modes in entry["seeds"].items():
            base = modes["median"]
            for mode, m in modes.items():
                rows.append(
                    [
                        setup,
                        seed,
                        mode,
                        m["wall_s"],
                        f"{m['wall_s'] / base['wall_s']:.2f}",
                        f"{m['epochs_trained']}/{m['epochs_budget']}",
                        m["pruned_median"],
                        m["pruned_doctor"],
                        f"{m['best_score']:.4f}" if m["best_score"] is not None else "-",
                        m["best_reached_at_s"],
                    ]
                )
    headers = ["setup", "seed", "pruning", "wall s", "vs median", "epochs", "median-pruned"]
    headers += ["doctor-pruned", "best val_accuracy", "best reached at s"]
    loads = {
        setup: (entry["machine"]["load_average_at_start"], entry.get("load_average_after"))
        for setup, entry in payload["setups"].items()
    }
    return table(headers, rows) + f"\nload average (start, end): {loads}"


if __name__ == "__main__":
    main()
