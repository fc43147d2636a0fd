"""The doctor on the broken-setup library: what it detects, its false alarms, what auto-fix repairs.

1. Detection: train every recipe in `recipes/broken/` (named after the finding it must raise) and
   the healthy recipes; list the codes found. A healthy recipe with any finding is a false alarm.
2. Auto-fix: `auto_fix` on every broken recipe (up to 3 rounds); test accuracy before (round 0)
   and after (the round auto-fix keeps), against the healthy recipe of the same data and model
   family. The target: within 2 points of the healthy model on >= 90% of the setups.
3. Field scores: from the independent field set's results (`benchmarks/doctor_field/run.py`,
   whose setups carry their own ground truth), per-code precision (findings of a code that are
   true or acceptable for their setup) and recall (setup-seeds whose root cause is that code
   and that named it), false findings per healthy setup-seed, and findings that are true but not
   the root cause. `--field-only` prints these from the stored results without training.

Run: .venv/bin/python benchmarks/doctor.py [--quick] [--only detection|autofix] [--no-mnist]
     .venv/bin/python benchmarks/doctor.py --field-only
"""

from __future__ import annotations

import argparse
import json
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
FIELD_RESULTS = ("doctor_field.json", "doctor_field_holdout.json")


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
    parser.add_argument("--field-only", action="store_true", help="field scores only, no training")
    args = parser.parse_args(argv)
    field = {
        name: field_scores(json.loads((RESULTS_DIR / name).read_text(encoding="utf-8")))
        for name in FIELD_RESULTS
        if (RESULTS_DIR / name).exists()
    }
    if args.field_only:
        print(field_report(field))
        return 0
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

    results["field"] = field
    print(report(results))
    print(field_report(field))
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


def field_scores(payload: dict[str, Any]) -> dict[str, Any]:
    """Per-code precision and recall, false alarms and true-but-not-root findings of a field run."""
    rows = payload["rows"]
    per_code: dict[str, dict[str, int]] = {}
    for row in rows:
        allowed = set(row["truth"]) | set(row["acceptable"])
        for code in row["findings"]:
            c = per_code.setdefault(code, {"raised": 0, "right": 0, "root": 0, "root_found": 0})
            c["raised"] += 1
            c["right"] += code in allowed
        if row["root_cause"]:
            c = per_code.setdefault(
                row["root_cause"], {"raised": 0, "right": 0, "root": 0, "root_found": 0}
            )
            c["root"] += 1
            c["root_found"] += bool(row["root_cause_found"])
    for c in per_code.values():
        c["precision"] = c["right"] / c["raised"] if c["raised"] else None
        c["recall"] = c["root_found"] / c["root"] if c["root"] else None
    healthy = [r for r in rows if r["healthy"]]
    broken = [r for r in rows if not r["healthy"]]
    not_root = [
        {"setup": r["setup"], "seed": r["seed"], "code": code}
        for r in broken
        for code in r["findings"]
        if code != r["root_cause"] and code in set(r["truth"]) | set(r["acceptable"])
    ]
    return {
        "commit": payload["machine"].get("layerwise_commit"),
        "seeds": payload["totals"]["seeds"],
        "per_code": dict(sorted(per_code.items())),
        "false_alarms_per_healthy_setup_seed": (
            sum(len(r["false_findings"]) for r in healthy) / len(healthy) if healthy else None
        ),
        "healthy_setup_seeds_with_false_alarm": sum(bool(r["false_findings"]) for r in healthy),
        "healthy_setup_seeds": len(healthy),
        "root_cause_found": sum(bool(r["root_cause_found"]) for r in broken),
        "broken_setup_seeds": len(broken),
        "true_not_root_cause": len(not_root),
        "true_not_root_cause_rows": not_root,
        "totals": payload["totals"],
    }


def field_report(field: dict[str, dict[str, Any]]) -> str:
    lines = []
    for name, f in field.items():
        rows = [
            [
                code,
                c["raised"],
                "-" if c["precision"] is None else f"{c['precision']:.2f}",
                c["root"],
                "-" if c["recall"] is None else f"{c['recall']:.2f}",
            ]
            for code, c in f["per_code"].items()
        ]
        lines += ["", f"field set {name} (seeds {f['seeds']}, layerwise {f['commit']})"]
        lines += [table(["code", "raised", "precision", "root-cause seeds", "recall"], rows)]
        t = f["totals"]
        lines += [
            f"root cause found: {f['root_cause_found']}/{f['broken_setup_seeds']} broken "
            f"setup-seeds; on every seed in {t['broken_root_cause_found_every_seed']}/"
            f"{t['broken_setups']} broken setups; {t['broken_setups_with_false_finding']} broken "
            f"setups with a false finding",
            f"false alarms: {f['healthy_setup_seeds_with_false_alarm']}/"
            f"{f['healthy_setup_seeds']} healthy setup-seeds "
            f"({f['false_alarms_per_healthy_setup_seed']:.2f} per setup-seed); "
            f"{t['healthy_setups_with_false_finding']}/{t['healthy_setups']} healthy setups",
            f"true but not the root cause: {f['true_not_root_cause']} findings",
        ]
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


if __name__ == "__main__":
    sys.exit(main())
