"""Auto-fix on a library of broken recipes: broken -> auto-fixed -> hand-fixed, several seeds.

Each case in `benchmarks/autofix_cases/` is a recipe written as a user would write it
(`<case>.broken.yaml`, with its root cause in the header comment) and the fix a person would
make (`<case>.hand.yaml`). For every case and seed this runs `layerwise.tune.auto_fix` on the
broken recipe (its round 0 is the broken run) and trains the hand fix, then compares test
scores: accuracy for classifiers, MAE for the forecaster (lower is better). Auto-fix never sees
the test split; the test scores here are only read afterwards.

Targets (issue 9, item 6): among the case-seeds where auto-fix claims a fix (keeps a change),
within 2 points of the hand fix in >= 90%; and never below the broken run it started from.

    .venv/bin/python benchmarks/autofix.py                    # every case, seeds 0 1 2
    .venv/bin/python benchmarks/autofix.py --seeds 0 --cases bc_unscaled mnist_flat_healthy
    .venv/bin/python benchmarks/autofix.py --merge part0.json part1.json   # runs made in parallel

Writes benchmarks/results/autofix.json (with the machine load: the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, machine, write_json

CASES_DIR = Path(__file__).resolve().parent / "autofix_cases"
POINTS = 0.02  # "within 2 points" of the hand fix, for accuracy
RELATIVE = 0.10  # for an error metric (MAE): within 10% of the hand fix's error


def cases() -> list[str]:
    return sorted(p.name.removesuffix(".broken.yaml") for p in CASES_DIR.glob("*.broken.yaml"))


def root_cause(case: str) -> str:
    lines = (CASES_DIR / f"{case}.broken.yaml").read_text().splitlines()
    text = " ".join(line.lstrip("# ").strip() for line in lines if line.startswith("#"))
    return text.removeprefix("Root cause:").strip()


def score_of(metrics: dict[str, float]) -> tuple[str, float | None]:
    """The test score compared: accuracy when there is one, else MAE."""
    for key in ("accuracy", "mae"):
        if key in metrics:
            return key, float(metrics[key])
    return "none", None


def run_case(case: str, seed: int, rounds: int, work: Path) -> dict[str, Any]:
    from layerwise.experiment import train
    from layerwise.recipe import load_recipe
    from layerwise.tune.autofix import auto_fix

    started = time.perf_counter()
    result = auto_fix(
        CASES_DIR / f"{case}.broken.yaml",
        rounds=rounds,
        runs_root=work / "runs",
        overrides=[f"seed={seed}"],
        output=work / f"{case}-{seed}.fixed.yaml",
        echo=None,
    )
    auto_seconds = time.perf_counter() - started
    hand_recipe = load_recipe(CASES_DIR / f"{case}.hand.yaml", [f"seed={seed}"])
    _, hand_metrics = train(hand_recipe, work / "runs", progress=False, echo=None)
    first, best = result.rounds[0], result.rounds[result.best_round]
    metric, broken = score_of(first.test_metrics)
    _, fixed = score_of(best.test_metrics)
    _, hand = score_of(hand_metrics)
    if first.status == "refused":
        broken = None  # the broken recipe could not be trained at all
    return {
        "case": case,
        "seed": seed,
        "metric": metric,
        "broken": broken,
        "auto": fixed,
        "hand": hand,
        "claims_fix": result.best_round > 0,
        "kept": best.applied,
        "rounds": [
            {
                "tried": r.tried,
                "codes": r.codes,
                "status": r.status,
                "holdout": r.holdout,
                "decision": r.decision,
                "refused_fixes": r.refused_fixes,
                "test": score_of(r.test_metrics)[1],
            }
            for r in result.rounds
        ],
        "auto_fix_seconds": round(auto_seconds, 1),
    }


def judge(row: dict[str, Any]) -> dict[str, Any]:
    """Whether auto-fix came close to the hand fix and did not fall below the broken run."""
    auto, hand, broken = row["auto"], row["hand"], row["broken"]
    lower_better = row["metric"] == "mae"
    if auto is None or hand is None:
        return {"near_hand": False, "not_worse": broken is None}
    if lower_better:
        near = auto <= hand * (1 + RELATIVE)
        not_worse = broken is None or auto <= broken
    else:
        near = auto >= hand - POINTS
        not_worse = broken is None or auto >= broken
    return {"near_hand": bool(near), "not_worse": bool(not_worse)}


def fmt(value: float | None, metric: str) -> str:
    if value is None:
        return "refused"
    return f"{value:.4f}" if metric == "mae" else f"{100 * value:.1f}"


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    claimed = [r for r in rows if r["claims_fix"]]
    return {
        "case_seeds": len(rows),
        "claimed_fixes": len(claimed),
        "claimed_near_hand": sum(r["near_hand"] for r in claimed),
        "claimed_near_hand_share": (
            sum(r["near_hand"] for r in claimed) / len(claimed) if claimed else None
        ),
        "near_hand_all": sum(r["near_hand"] for r in rows),
        "below_broken": sum(not r["not_worse"] for r in rows),
        "worst_drop_below_broken": min(
            (_signed_gain(r) for r in rows if r["broken"] is not None), default=None
        ),
    }


def _signed_gain(row: dict[str, Any]) -> float:
    """auto - broken in points of the metric, sign flipped for an error so that > 0 is better."""
    gain = row["auto"] - row["broken"]
    return -gain if row["metric"] == "mae" else gain


def print_row(row: dict[str, Any]) -> None:
    m = row["metric"]
    kept = ", ".join(f"{k}={v}" for k, v in row["kept"].items()) or "-"
    flags = ("" if row["not_worse"] else "  BELOW BROKEN") + (
        "" if row["near_hand"] else "  far from hand"
    )
    print(
        f"{row['case']:24} {row['seed']:>4} {fmt(row['broken'], m):>8} "
        f"{fmt(row['auto'], m):>8} {fmt(row['hand'], m):>8}  {kept}{flags}",
        flush=True,
    )


def print_summary(summary: dict[str, Any]) -> None:
    print(
        f"\nclaimed fixes {summary['claimed_fixes']}/{summary['case_seeds']} case-seeds; within "
        f"2 points (MAE: 10%) of the hand fix in {summary['claimed_near_hand']}/"
        f"{summary['claimed_fixes']} of them; near the hand fix in {summary['near_hand_all']}/"
        f"{summary['case_seeds']} overall; below the broken run in "
        f"{summary['below_broken']}/{summary['case_seeds']}"
    )


HEADER = f"{'case':24} {'seed':>4} {'broken':>8} {'auto':>8} {'hand':>8}  kept changes"


def merge(paths: list[str], output: Path) -> None:
    """Join the results of runs made in parallel (e.g. one seed each) into one file."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    unique = {(r["case"], r["seed"]): r for p in reversed(parts) for r in p["rows"]}
    rows = sorted(unique.values(), key=lambda r: (r["case"], r["seed"]))  # first file wins
    print(HEADER)
    for row in rows:
        print_row(row)
    summary = summarise(rows)
    summary["seconds_per_part"] = [p["summary"].get("seconds") for p in parts]
    print_summary(summary)
    write_json(
        output,
        {
            "machines": [p["machine"] for p in parts],
            "load_average_at_end": [p["load_average_at_end"] for p in parts],
            "rounds": parts[0]["rounds"],
            "seeds": sorted({s for p in parts for s in p["seeds"]}),
            "root_causes": {k: v for p in parts for k, v in p["root_causes"].items()},
            "summary": summary,
            "rows": rows,
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", default=None)
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", default=str(RESULTS_DIR / "autofix.json"))
    parser.add_argument("--merge", nargs="*", default=None, help="join earlier result files")
    args = parser.parse_args()
    if args.merge:
        merge(args.merge, Path(args.output))
        return
    names = args.cases or cases()
    info = machine()
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    print(HEADER)
    with tempfile.TemporaryDirectory(prefix="autofix-bench-") as tmp:
        for case in names:
            for seed in args.seeds:
                row = run_case(case, seed, args.rounds, Path(tmp))
                row.update(judge(row), load_after=list(os.getloadavg()))
                rows.append(row)
                print_row(row)
                _save(Path(args.output).with_suffix(".partial.json"), rows, info, args, names)
    summary = summarise(rows)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    print_summary(summary)
    write_json(Path(args.output), _payload(rows, info, args, names, summary))
    Path(args.output).with_suffix(".partial.json").unlink(missing_ok=True)


def _payload(rows, info, args, names, summary) -> dict[str, Any]:
    return {
        "machine": info,
        "load_average_at_end": list(os.getloadavg()),
        "rounds": args.rounds,
        "seeds": args.seeds,
        "root_causes": {c: root_cause(c) for c in names},
        "summary": summary,
        "rows": rows,
    }


def _save(path: Path, rows, info, args, names) -> None:
    """The rows so far, so that a run cut short still leaves its measurements."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(_payload(rows, info, args, names, summarise(rows)), indent=2))
    tmp.replace(path)


if __name__ == "__main__":
    main()
