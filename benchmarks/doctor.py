"""The doctor on the broken-setup library: what it detects, its false alarms, what auto-fix repairs.

1. Detection: train every recipe in `recipes/broken/` (named after the finding it must raise) and
   the healthy recipes; list the codes found. A healthy recipe with any finding is a false alarm.
2. Auto-fix: `auto_fix` on every broken recipe (up to 3 rounds); test accuracy before (round 0)
   and after (the round auto-fix keeps), against the healthy recipe of the same data and model
   family. The target: within 2 points of the healthy model on >= 90% of the setups.

Run: .venv/bin/python benchmarks/doctor.py [--quick] [--only detection|autofix] [--no-mnist]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import REPO, RESULTS_DIR, machine, table, write_json
from layerwise.errors import DataError
from layerwise.experiment import train
from layerwise.recipe import load_recipe
from layerwise.tune.autofix import auto_fix

RECIPES = REPO / "recipes"
HEALTHY = ["digits_cnn", "digits_mlp", "breast_cancer_mlp", "wine_mlp", "mnist_mlp", "mnist_cnn"]
TARGET_POINTS = 0.02


def detect(path: Path, runs: Path) -> dict[str, Any]:
    """Train one recipe with the doctor; the codes it raised and the test accuracy."""
    recipe = load_recipe(path)
    start = time.perf_counter()
    try:
        run, test = train(recipe, runs, progress=False, echo=None)
    except DataError as refused:
        return {"codes": refused.diagnosis.codes, "status": "refused", "test_accuracy": None}
    return {
        "codes": run.read_diagnosis()["codes"],
        "status": run.info()["status"],
        "test_accuracy": test.get("accuracy"),
        "seconds": round(time.perf_counter() - start, 1),
    }


def reference_for(path: Path) -> str:
    """The healthy recipe with the same data and model family as a broken one."""
    recipe = load_recipe(path)
    data = recipe.data.args.get("dataset", recipe.data.name)
    if data == "breast_cancer":
        return "breast_cancer_mlp"
    return "digits_cnn" if recipe.model.name == "cnn" else "digits_mlp"


def repair(path: Path, runs: Path, work: Path) -> dict[str, Any]:
    copy = work / path.name
    shutil.copy(path, copy)
    result = auto_fix(copy, rounds=3, runs_root=runs, echo=None)
    first, kept = result.rounds[0], result.rounds[result.best_round]
    return {
        "before": first.test_metrics.get("accuracy"),
        "after": kept.test_metrics.get("accuracy"),
        "rounds": len(result.rounds) - 1,
        "kept_round": result.best_round,
        "applied": kept.applied,
        "codes_left": kept.codes,
        "codes_first": first.codes,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["detection", "autofix"])
    parser.add_argument("--no-mnist", action="store_true", help="skip the MNIST healthy recipes")
    parser.add_argument("--quick", action="store_true", help="5 broken recipes; writes no JSON")
    args = parser.parse_args(argv)
    broken = sorted((RECIPES / "broken").glob("*.yaml"))
    healthy = [h for h in HEALTHY if not (args.no_mnist or args.quick) or "mnist" not in h]
    if args.quick:
        broken = broken[:5]
    work = Path(tempfile.mkdtemp(prefix="layerwise-doctor-bench-"))
    results: dict[str, Any] = {"machine": machine(), "detection": {}, "healthy": {}, "autofix": {}}

    for name in healthy:
        results["healthy"][name] = detect(RECIPES / f"{name}.yaml", work / "runs")
        print(f"healthy {name}: {results['healthy'][name]}", flush=True)
    if args.only != "autofix":
        for path in broken:
            results["detection"][path.stem] = detect(path, work / "runs")
            print(f"broken {path.stem}: {results['detection'][path.stem]['codes']}", flush=True)
    if args.only != "detection":
        for path in broken:
            outcome = repair(path, work / "fix-runs", work)
            reference = reference_for(path)
            healthy_acc = results["healthy"].get(reference, {}).get("test_accuracy")
            outcome["reference"], outcome["reference_accuracy"] = reference, healthy_acc
            after = outcome["after"]
            outcome["within_target"] = (
                after is not None and healthy_acc is not None and after >= healthy_acc - 0.02
            )
            results["autofix"][path.stem] = outcome
            print(f"autofix {path.stem}: {outcome}", flush=True)

    print(report(results))
    if not args.quick:
        write_json(RESULTS_DIR / "doctor.json", results)
    shutil.rmtree(work, ignore_errors=True)
    return 0


def report(results: dict[str, Any]) -> str:
    lines = []
    if results["detection"]:
        rows = [
            [code, "yes" if code in r["codes"] else "NO", ", ".join(r["codes"]) or "-"]
            for code, r in results["detection"].items()
        ]
        found = sum(row[1] == "yes" for row in rows)
        lines += [table(["broken setup", "detected", "codes found"], rows)]
        lines += [f"detected: {found}/{len(rows)}"]
    rows = [
        [name, ", ".join(r["codes"]) or "none", _pct(r["test_accuracy"])]
        for name, r in results["healthy"].items()
    ]
    alarms = sum(bool(r["codes"]) for r in results["healthy"].values())
    lines += ["", table(["healthy recipe", "findings", "test acc"], rows)]
    lines += [f"false alarms: {alarms} on {len(rows)} healthy recipes"]
    if results["autofix"]:
        rows = [
            [
                code,
                _pct(r["before"]),
                _pct(r["after"]),
                f"{r['reference']} {_pct(r['reference_accuracy'])}",
                "yes" if r["within_target"] else "no",
                ", ".join(f"{k}={v}" for k, v in r["applied"].items()) or "-",
            ]
            for code, r in results["autofix"].items()
        ]
        hits = sum(r["within_target"] for r in results["autofix"].values())
        lines += ["", table(["setup", "before", "after", "healthy", "within 2 pts", "fix"], rows)]
        lines += [f"within 2 points of healthy: {hits}/{len(rows)}"]
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


if __name__ == "__main__":
    sys.exit(main())
