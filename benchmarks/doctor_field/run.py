"""The doctor on the independent field setups: root causes found, false findings, time.

Every setup (setups.py) is run as a user of the Python API would run it: the doctor's data check
first (`layerwise.diagnose.check_data`, refusing to train on a fatal finding as the CLI does),
then `Trainer(...).fit(...)` with the doctor's callbacks (`doctor_callbacks`, fed the data
profile), then the final diagnosis (`Doctor.diagnose`). For each setup and seed it records whether
the root cause was named and which findings were false (outside the setup's true and acceptable
sets).

Run: .venv/bin/python benchmarks/doctor_field/run.py [--seeds 0 1 2 | --holdout]
     [--only NAME ...] [--jobs 1]
     .venv/bin/python benchmarks/doctor_field/run.py --rescore RESULTS.json  (ground truth changed)
     .venv/bin/python benchmarks/doctor_field/run.py --collect ROWS.jsonl --output OUT.json
Writes benchmarks/results/doctor_field.json (tuning seeds) or doctor_field_holdout.json
(--holdout), unless --only narrows the set (then it only prints, or writes to --output). With
--output, each row is also appended to OUT.rows.jsonl as it finishes, so a run cut short keeps
what it measured; --collect summarises such a file (the machine's load is in every row).
"""

from __future__ import annotations

import argparse
import inspect
import json
import multiprocessing
import os
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from setups import HEALTHY, SETUPS, Setup, build  # noqa: E402

from _common import RESULTS_DIR, machine, table, write_json  # noqa: E402

TUNING_SEEDS = [0, 1, 2]
HOLDOUT_SEEDS = [100, 101, 102]


def diagnose(setup: Setup, seed: int) -> tuple[str, list[str]]:
    """Data check, then training with the doctor watching; the final finding codes."""
    from layerwise import Trainer
    from layerwise.data import DatasetBundle
    from layerwise.diagnose import check_data
    from layerwise.diagnose.doctor import Doctor, doctor_callbacks

    bundle = DatasetBundle(
        setup.name,
        train=setup.train,
        val=setup.val,
        test=None,
        num_classes=setup.num_classes,
        input_shape=setup.input_shape,
        task=setup.task,
    )
    data = check_data(bundle, num_params=setup.num_params(), seed=seed)
    if any(f.severity == "fatal" for f in data.findings):
        return "refused", data.codes  # the CLI refuses to train on such data, and so do we
    callbacks = doctor_callbacks(
        data_profile=data.data_profile,
        task=setup.task,
        num_classes=setup.num_classes,
        echo=None,
    )
    quiet = {"progress": False} if "progress" in inspect.signature(Trainer).parameters else {}
    trainer = Trainer(
        setup.model,
        loss=setup.loss,
        optimizer=setup.optimizer,
        # A language model's targets are one class per position: the user reads its loss.
        metrics=("accuracy",)
        if setup.task == "classification" and setup.train[1].dim() == 1
        else (),
        callbacks=callbacks,
        device="cpu",
        seed=seed,
        num_classes=setup.num_classes,
        doctor=False,  # ours is among `callbacks`, fed the data profile
        **quiet,
    )
    trainer.fit(setup.train, setup.val, epochs=setup.epochs, batch_size=setup.batch_size)
    doctor = next(c for c in callbacks if isinstance(c, Doctor))
    halted = trainer.stop_reason is not None and trainer.stop_reason.fatal
    return ("halted" if halted else "trained"), doctor.diagnose(trainer.history).codes


def run_one(name: str, seed: int, threads: int) -> dict[str, Any]:
    """One setup on one seed, scored against its ground truth."""
    import torch

    torch.set_num_threads(threads)
    start = time.perf_counter()
    setup = build(name, seed)
    try:
        status, codes = diagnose(setup, seed)
        error = None
    except Exception as exc:  # a crash is a result to report, not a reason to stop the table
        status, codes, error = "error", [], "".join(traceback.format_exception_only(exc)).strip()
    row = {"setup": name, "seed": seed, "status": status, "error": error, "findings": codes}
    row["seconds"] = round(time.perf_counter() - start, 2)
    row["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return score(row, setup)


def score(row: dict[str, Any], setup: Setup) -> dict[str, Any]:
    """The row's findings judged against the setup's ground truth."""
    codes = row["findings"]
    return {
        **row,
        "kind": setup.kind,
        "healthy": setup.healthy,
        "root_cause": setup.root_cause,
        "truth": sorted(setup.truth),
        "acceptable": sorted(setup.acceptable),
        "root_cause_found": None if setup.healthy else setup.root_cause in codes,
        "false_findings": sorted(set(codes) - setup.truth - setup.acceptable),
        "true_missed": sorted(setup.truth - set(codes)),
    }


def rescore(path: Path) -> int:
    """Judge a results file's findings again after a ground-truth correction (no retraining)."""
    payload = json.loads(path.read_text(encoding="utf-8"))
    rows = [score(row, build(row["setup"], row["seed"])) for row in payload["rows"]]
    names = list(dict.fromkeys(row["setup"] for row in rows))
    summary = summarize(rows, names, payload["totals"]["seeds"])
    print_report(summary, rows)
    payload["machine"]["rescored"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    write_json(path, {"machine": payload["machine"], **summary, "rows": rows})
    return 0


def collect(path: Path, output: Path | None) -> int:
    """Summarise the rows a run appended as they finished (a run cut short included)."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    rows = [score(row, build(row["setup"], row["seed"])) for row in rows]
    names = list(dict.fromkeys(row["setup"] for row in rows))
    seeds = sorted({row["seed"] for row in rows})
    summary = summarize(rows, names, seeds)
    print_report(summary, rows)
    loads = [r["load_average"][0] for r in rows if r.get("load_average")]
    info = machine()
    info["collected_from"] = str(path.name)
    info["rows_load_average_1min"] = [min(loads), max(loads)] if loads else None
    info["layerwise_commit"] = os.environ.get("FIELD_LAYERWISE_COMMIT", info["commit"])
    write_json(output, {"machine": info, **summary, "rows": rows})
    return 0


def _progress(row: dict[str, Any], sink: Path | None = None) -> dict[str, Any]:
    if sink is not None:
        with sink.open("a", encoding="utf-8") as out:
            out.write(json.dumps(row) + "\n")
    found = (
        "" if row["healthy"] else f" root cause {'found' if row['root_cause_found'] else 'MISSED'}"
    )
    false = f" false: {', '.join(row['false_findings'])}" if row["false_findings"] else ""
    print(
        f"{row['setup']} seed {row['seed']}: {row['status']}{found}{false} ({row['seconds']} s)",
        flush=True,
    )
    return row


def summarize(rows: list[dict[str, Any]], names: list[str], seeds: list[int]) -> dict[str, Any]:
    per_setup = []
    for name in names:
        mine = [r for r in rows if r["setup"] == name]
        broken = name not in HEALTHY
        per_setup.append(
            {
                "setup": name,
                "healthy": not broken,
                "root_cause": mine[0]["root_cause"],
                "found_every_seed": all(r["root_cause_found"] for r in mine) if broken else None,
                "found_seeds": sum(bool(r["root_cause_found"]) for r in mine) if broken else None,
                "false_findings": sorted({c for r in mine for c in r["false_findings"]}),
                "errors": sum(r["status"] == "error" for r in mine),
                "seconds": round(sum(r["seconds"] for r in mine), 1),
            }
        )
    broken = [s for s in per_setup if not s["healthy"]]
    healthy = [s for s in per_setup if s["healthy"]]
    broken_rows = [r for r in rows if not r["healthy"]]
    healthy_rows = [r for r in rows if r["healthy"]]
    totals = {
        "seeds": seeds,
        "broken_setups": len(broken),
        "healthy_setups": len(healthy),
        "broken_root_cause_found_every_seed": sum(s["found_every_seed"] for s in broken),
        "broken_setup_seeds_root_cause_found": sum(r["root_cause_found"] for r in broken_rows),
        "broken_setup_seeds": len(broken_rows),
        "broken_setups_with_false_finding": sum(bool(s["false_findings"]) for s in broken),
        "healthy_setups_with_false_finding": sum(bool(s["false_findings"]) for s in healthy),
        "healthy_setup_seeds_with_false_finding": sum(
            bool(r["false_findings"]) for r in healthy_rows
        ),
        "healthy_setup_seeds": len(healthy_rows),
        "errors": sum(r["status"] == "error" for r in rows),
        "seconds": round(sum(r["seconds"] for r in rows), 1),
    }
    healthy_false = sum(len(r["false_findings"]) for r in healthy_rows)
    totals["false_alarms_per_healthy_setup_seed"] = (
        round(healthy_false / len(healthy_rows), 3) if healthy_rows else None
    )
    return {"per_setup": per_setup, "per_code": per_code(rows), "totals": totals}


def per_code(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per finding code, over setup-seeds: how often it was raised, how often rightly.

    - `raised`: setup-seeds whose findings hold the code; `true`: of those, where the code is in
      the setup's `truth | acceptable` (a fact of the setup); `precision` = true / raised.
    - `root_cause_rows` / `root_cause_found`: setup-seeds whose root cause is this code, and how
      many of them the doctor named it on; `recall` = found / rows.
    - `true_not_root_cause`: raised rightly on a setup whose root cause is something else (a
      true fact or a defensible consequence, not the answer the user needed first).
    - `false_on_healthy`: raised on a healthy setup without being one of its facts.
    """
    codes = sorted(
        {c for r in rows for c in r["findings"]} | {r["root_cause"] for r in rows} - {None}
    )
    out = {}
    for code in codes:
        raised = [r for r in rows if code in r["findings"]]
        true = [r for r in raised if code not in r["false_findings"]]
        cause_rows = [r for r in rows if r["root_cause"] == code]
        found = sum(code in r["findings"] for r in cause_rows)
        out[code] = {
            "raised": len(raised),
            "true": len(true),
            "precision": round(len(true) / len(raised), 3) if raised else None,
            "root_cause_rows": len(cause_rows),
            "root_cause_found": found,
            "recall": round(found / len(cause_rows), 3) if cause_rows else None,
            "true_not_root_cause": sum(
                1 for r in true if r["root_cause"] is not None and r["root_cause"] != code
            ),
            "false_on_healthy": sum(1 for r in raised if r["healthy"] and r not in true),
        }
    return out


def print_report(summary: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    lines = []
    for s in summary["per_setup"]:
        mine = [r for r in rows if r["setup"] == s["setup"]]
        seeds = len(mine)
        found = "-" if s["healthy"] else f"{s['found_seeds']}/{seeds}"
        status = ",".join(sorted({r["status"] for r in mine}))
        lines.append(
            [
                s["setup"],
                "healthy" if s["healthy"] else s["root_cause"],
                found,
                ", ".join(s["false_findings"]) or "-",
                status,
                s["seconds"],
            ]
        )
    print(table(["setup", "root cause", "found", "false findings", "status", "s"], lines))
    codes = summary.get("per_code") or {}
    print(
        "\n"
        + table(
            [
                "code",
                "raised",
                "true",
                "precision",
                "root cause found",
                "recall",
                "true, not root",
                "false on healthy",
            ],
            [
                [
                    code,
                    c["raised"],
                    c["true"],
                    "-" if c["precision"] is None else f"{c['precision']:.2f}",
                    f"{c['root_cause_found']}/{c['root_cause_rows']}"
                    if c["root_cause_rows"]
                    else "-",
                    "-" if c["recall"] is None else f"{c['recall']:.2f}",
                    c["true_not_root_cause"],
                    c["false_on_healthy"],
                ]
                for code, c in codes.items()
            ],
        )
    )
    t = summary["totals"]
    print(
        f"\nbroken: root cause found on every seed in {t['broken_root_cause_found_every_seed']}"
        f"/{t['broken_setups']} setups ({t['broken_setup_seeds_root_cause_found']}/"
        f"{t['broken_setup_seeds']} setup-seeds); {t['broken_setups_with_false_finding']}/"
        f"{t['broken_setups']} with a false finding"
    )
    print(
        f"healthy: {t['healthy_setups_with_false_finding']}/{t['healthy_setups']} setups with a "
        f"false finding ({t['healthy_setup_seeds_with_false_finding']}/"
        f"{t['healthy_setup_seeds']} setup-seeds; {t['false_alarms_per_healthy_setup_seed']} false "
        f"findings per healthy setup-seed); errors: {t['errors']}; {t['seconds']} s"
    )
    for r in rows:
        if r["error"]:
            print(f"error in {r['setup']} seed {r['seed']}: {r['error']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=TUNING_SEEDS)
    parser.add_argument("--holdout", action="store_true", help="seeds 100 101 102")
    parser.add_argument("--only", nargs="+", choices=sorted(SETUPS), metavar="NAME")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per job")
    parser.add_argument("--output", type=Path, help="where to write the JSON")
    parser.add_argument("--rescore", type=Path, help="re-judge a results file; no training")
    parser.add_argument("--collect", type=Path, help="summarise a .rows.jsonl file; no training")
    args = parser.parse_args(argv)
    if args.rescore:
        return rescore(args.rescore)
    if args.collect:
        return collect(args.collect, args.output)
    seeds = HOLDOUT_SEEDS if args.holdout else args.seeds
    names = args.only or list(SETUPS)
    threads = args.threads
    import layerwise

    info = machine()
    # Seed by seed: a run stopped early (a deadline, a busy machine) holds whole seeds.
    jobs = [(name, seed) for seed in seeds for name in names]
    start = time.perf_counter()
    sink = args.output.with_suffix(".rows.jsonl") if args.output else None
    if args.jobs == 1:
        rows = [_progress(run_one(name, seed, threads), sink) for name, seed in jobs]
    else:
        # Fresh interpreters: a fork of a process that already ran torch can deadlock.
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(args.jobs, mp_context=spawn) as pool:
            futures = [pool.submit(run_one, name, seed, threads) for name, seed in jobs]
            rows = [_progress(f.result(), sink) for f in as_completed(futures)]
    summary = summarize(rows, names, seeds)
    print_report(summary, rows)
    output = args.output
    if output is None and args.only is None:
        output = RESULTS_DIR / (
            "doctor_field_holdout.json" if args.holdout else "doctor_field.json"
        )
    if output is not None:
        info["load_average_at_end"] = list(os.getloadavg())
        info["wall_seconds"] = round(time.perf_counter() - start, 1)
        info["jobs"], info["threads_per_job"] = args.jobs, threads
        info["layerwise_imported_from"] = str(Path(layerwise.__file__).parent)
        info["layerwise_commit"] = os.environ.get("FIELD_LAYERWISE_COMMIT", info["commit"])
        write_json(output, {"machine": info, **summary, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
