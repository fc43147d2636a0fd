"""Fuzz every user input at scale and count outcomes: success, each LayerwiseError, or a crash.

The targets and strategies are those of tests/test_fuzz.py (a few hundred examples run in
`make test`); here they run in rounds of `--chunk` examples per target until `--total` examples
have run, with shrinking off, so a crash is counted (with its first input) instead of stopping the
run. Results go to benchmarks/results/fuzz.json after every round, so a run cut short still says
how many examples it ran.

    python benchmarks/fuzz.py --total 100000
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "tests"))
warnings.filterwarnings("ignore")

import test_fuzz as fuzz  # noqa: E402

# Shares of the total per target (the cheap ones get more examples).
TARGETS = {
    "recipe_parse": 0.25,
    "recipe_build": 0.05,
    "recipe_text": 0.15,
    "set_overrides": 0.20,
    "predict_inputs": 0.25,
    "damaged_run": 0.10,
}


def make_targets(trained: fuzz.Trained) -> dict:
    """Each target: (strategy, function of one drawn example -> outcome name)."""
    text = st.one_of(
        st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("latin-1"))
    )
    return {
        "recipe_parse": (fuzz.mutated_recipes(), lambda raw: fuzz.try_recipe(raw, build=False)),
        "recipe_build": (fuzz.mutated_recipes(), lambda raw: fuzz.try_recipe(raw, build=True)),
        "recipe_text": (text, lambda t: fuzz.outcome(lambda: fuzz.parse_recipe(t))),
        "set_overrides": (
            st.lists(fuzz.overrides, min_size=1, max_size=3),
            lambda sets: fuzz.outcome(
                lambda: fuzz.parse_recipe(fuzz.yaml.safe_dump(fuzz.BASE), overrides=sets)
            ),
        ),
        "predict_inputs": (
            st.lists(fuzz.prediction_files, min_size=1, max_size=3),
            trained.predict,
        ),
        "damaged_run": (
            st.tuples(st.lists(fuzz.damages, min_size=1, max_size=2), st.sampled_from(fuzz.VERBS)),
            lambda pair: trained.damaged(*pair),
        ),
    }


def run_chunk(strategy, attempt, examples: int, counts, crashes) -> None:
    """Draw `examples` inputs (no shrinking) and count what each one does."""

    @settings(
        max_examples=examples,
        phases=[Phase.generate],
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def body(example):
        try:
            counts[attempt(example)] += 1
        except Exception as exc:  # a crash: count it, keep the first input, go on
            key = f"crash: {type(exc).__name__}"
            counts[key] += 1
            if key not in crashes:
                crashes[key] = {
                    "input": repr(example)[:2000],
                    "error": str(exc)[:500],
                    "where": traceback.format_exc(limit=-3)[-1500:],
                }

    body()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--total", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=500, help="examples per target per round")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "fuzz.json")
    args = parser.parse_args()

    started = time.time()
    with tempfile.TemporaryDirectory() as root:
        trained = fuzz.Trained(Path(root))
        targets = make_targets(trained)
        counts = {name: collections.Counter() for name in targets}
        crashes = {name: {} for name in targets}
        done = 0
        while done < args.total:
            for name, share in TARGETS.items():
                examples = max(1, round(args.chunk * share / max(TARGETS.values())))
                examples = min(examples, args.total - done)
                if examples <= 0:
                    break
                before = sum(counts[name].values())
                run_chunk(*targets[name], examples, counts[name], crashes[name])
                done += sum(counts[name].values()) - before
            write(args.out, counts, crashes, done, args.total, started)
            print(f"{done} examples, {time.time() - started:.0f} s: {totals(counts)}", flush=True)
    print_table(counts)


def totals(counts) -> dict[str, int]:
    total = collections.Counter()
    for per_target in counts.values():
        total.update(per_target)
    return dict(total.most_common())


def write(path: Path, counts, crashes, done: int, wanted: int, started: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "examples": done,
        "wanted": wanted,
        "seconds": round(time.time() - started, 1),
        "loadavg": os.getloadavg(),
        "by_outcome": totals(counts),
        "by_target": {name: dict(c.most_common()) for name, c in counts.items()},
        "crashes": crashes,
    }
    path.write_text(json.dumps(result, indent=2) + "\n")


def print_table(counts) -> None:
    outcomes = sorted(totals(counts))
    print(f"{'target':<16}" + "".join(f"{o:>18}" for o in outcomes))
    for name, per_target in counts.items():
        print(f"{name:<16}" + "".join(f"{per_target.get(o, 0):>18}" for o in outcomes))


if __name__ == "__main__":
    main()
