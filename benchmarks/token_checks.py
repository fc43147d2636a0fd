"""The doctor's token checks on the shipped text recipes and on two broken ones.

For each healthy recipe (IMDB fastText/BiLSTM/Transformer, Multi30k GRU/Transformer, Tiny
Shakespeare LSTM/GPT) the data is loaded as a run loads it, the data checks run as a run runs
them, and the token figures (unknown-token rate, vocabulary coverage of tokens and types, length
quantiles, truncation) are printed per stream and split with every data finding: the token rules
must stay silent there. With `--broken`, IMDB fastText is trained as shipped, with a vocabulary
of words seen 20,000 times or more (`min_freq: 20000`, most tokens `<unk>`) and with reviews cut
to their first 20 words (`max_length: 20`): the findings are printed with the test accuracy each
run reaches, so a finding can be checked against the failure it names.

    .venv/bin/python benchmarks/token_checks.py [--broken] [--output PATH]

Timings are CPU seconds of this process (`time.process_time`) as well as wall seconds: the
machine may be shared, and the load average is recorded with every row.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, RESULTS_DIR, machine, table, write_json

HEALTHY = [
    "imdb_fasttext",
    "imdb_bilstm",
    "imdb_transformer",
    "multi30k_gru_attention",
    "multi30k_transformer",
    "shakespeare_char",
    "shakespeare_char_gpt",
]
BROKEN = {
    "imdb_fasttext (shipped)": [],
    "imdb_fasttext min_freq 20000": ["data.args.min_freq=20000"],
    "imdb_fasttext max_length 20": ["data.args.max_length=20"],
}
KEYS = ("rows", "tokens", "unknown_rate", "type_coverage", "truncation_share", "tokens_cut_share")


def checked(name: str) -> dict[str, Any]:
    """Load the recipe's data and model as its run does, then run the data checks."""
    from layerwise.diagnose.doctor import check_data
    from layerwise.recipe import load_recipe
    from layerwise.tasks import sequence_task

    recipe = load_recipe(REPO / "recipes" / f"{name}.yaml")
    start, cpu = time.perf_counter(), time.process_time()
    task = sequence_task(recipe)
    if task is None:
        from layerwise.experiment import build_model, prepare_data

        data = prepare_data(recipe)[0]
        model = build_model(recipe, data)
    else:
        from layerwise.data import load_dataset
        from layerwise.tasks.sequence import build_model as build_sequence_model

        data = load_dataset(recipe.data.name, **recipe.data.args)
        model = build_sequence_model(recipe, task, data)
    load_wall, load_cpu = time.perf_counter() - start, time.process_time() - cpu
    start, cpu = time.perf_counter(), time.process_time()
    diagnosis = check_data(
        data,
        num_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        recipe=recipe.model_dump(mode="json"),
        seed=recipe.seed,
        label_noise=recipe.doctor.label_noise and task is None,
    )
    tokens = diagnosis.data_profile["tokens"]
    return {
        "recipe": name,
        "load_wall_s": load_wall,
        "load_cpu_s": load_cpu,
        "check_wall_s": time.perf_counter() - start,
        "check_cpu_s": time.process_time() - cpu,
        "findings": [f.headline() for f in diagnosis.findings],
        "codes": diagnosis.codes,
        "tokens": tokens,
        "load_average": list(os.getloadavg()),
    }


def trained(label: str, overrides: list[str], root: Path) -> dict[str, Any]:
    """Train imdb_fasttext with `overrides` into `root`; its data findings and test accuracy."""
    from layerwise.experiment import train
    from layerwise.recipe import load_recipe

    recipe = load_recipe(REPO / "recipes" / "imdb_fasttext.yaml", overrides)
    start, cpu = time.perf_counter(), time.process_time()
    run, metrics = train(recipe, root / str(len(list(root.iterdir()))), progress=False, echo=None)
    diagnosis = run.read_diagnosis() or {}
    profile = diagnosis.get("data_profile") or {}
    return {
        "case": label,
        "overrides": overrides,
        "test_accuracy": metrics.get("accuracy"),
        "codes": diagnosis.get("codes", []),
        "findings": [f["message"] for f in diagnosis.get("findings", [])],
        "tokens": (profile.get("tokens") or {}).get("text"),
        "wall_s": time.perf_counter() - start,
        "cpu_s": time.process_time() - cpu,
        "load_average": list(os.getloadavg()),
    }


def _rows(result: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for stream, figures in (result["tokens"] or {}).items():
        for split, f in (figures.get("splits") or {}).items():
            if not f:
                continue
            length = f["length"]
            rows.append(
                [
                    result["recipe"],
                    stream,
                    split,
                    f"{f['rows']:,}",
                    f"{f['tokens']:,}",
                    f"{f['unknown_rate']:.4f}",
                    f"{f['type_coverage']:.3f}",
                    f"{length['median']:g} / {length['p90']:g} / {length['max']}",
                    f["max_length"],
                    f"{f['truncation_share']:.3f}",
                    f"{f['tokens_cut_share']:.3f}",
                ]
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--broken", action="store_true", help="also train the broken cases")
    parser.add_argument("--only", nargs="*", help="healthy recipes to check (default: all)")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "token_checks.json")
    args = parser.parse_args()
    payload: dict[str, Any] = {"machine": machine(), "healthy": [], "broken": []}
    for name in args.only or HEALTHY:
        result = checked(name)
        payload["healthy"].append(result)
        print(
            f"{name}: load {result['load_cpu_s']:.1f} CPU s, data checks "
            f"{result['check_cpu_s']:.2f} CPU s, findings {result['codes'] or 'none'}",
            flush=True,
        )
        write_json(args.output, payload)
    headers = ["recipe", "stream", "split", "rows", "tokens", "unk rate", "type cov"]
    headers += ["len median/p90/max", "max_length", "rows cut", "tokens cut"]
    print(table(headers, [r for result in payload["healthy"] for r in _rows(result)]))
    if args.broken:
        with tempfile.TemporaryDirectory() as folder:
            for label, overrides in BROKEN.items():
                result = trained(label, overrides, Path(folder))
                payload["broken"].append(result)
                print(
                    f"{label}: test accuracy {result['test_accuracy']:.4f}, "
                    f"findings {result['codes'] or 'none'}",
                    flush=True,
                )
                for message in result["findings"]:
                    print(f"    {message}")
                write_json(args.output, payload)
    payload["machine"]["load_average_at_end"] = list(os.getloadavg())
    write_json(args.output, payload)


if __name__ == "__main__":
    main()
