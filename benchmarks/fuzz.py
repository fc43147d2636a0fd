"""Fuzz every user input through the `layerwise` command at scale and count outcomes.

Each example is one command line run by the console entry point (`layerwise.cli.main`) inside
this process, with stdout and stderr captured: success (exit 0), a `LayerwiseError` (exit 2, one
`error:` message, no traceback), or a crash (any other exit code or exception, a traceback, or an
exit 2 without the message). Running in-process instead of one process per example is what makes
10^5 examples fit in well under an hour on one core; `--cross-check` examples per target are also
run as real `layerwise` processes at the end, and the exit code and message must agree with the
in-process run.

The strategies are those of tests/test_fuzz.py (which runs a few hundred in `make test`):
  recipe_text     any text as a recipe file                -> `summary r.yaml`
  recipe_summary  schema-generated recipes, mutated        -> `summary r.yaml` (builds data + model)
  recipe_data     the same                                 -> `doctor r.yaml --data-only`
  recipe_train    the same, one epoch                      -> `train r.yaml --set train.epochs=1`
  set_overrides   `--set` overrides                        -> `doctor base.yaml --data-only --set`
  predict_inputs  .npy/.csv/images/random bytes            -> `predict RUN files.. [--output ..]`
  evaluate_data   labelled .csv/.npz files                 -> `evaluate RUN --data FILE`
  damaged_run     run.json, metrics/probes, index, checkpoint manifests, weights, state damaged
                  -> `runs ls/show/compare`, `doctor`, `evaluate`, `predict`, `summary RUN`
Training is avoided except in recipe_train (a 150-row digits MLP for one epoch). The typer
command tree is built once (it is rebuilt by every `app()` call otherwise, 30 ms each), and the
address space is capped (`--memory-gib`) so that a recipe asking for a 10^12-wide layer fails as
it would on a smaller machine instead of swapping a shared one. Shrinking is off, so a crash is
counted with its first input and the run goes on. Results go to benchmarks/results/fuzz.json after
every round, so a run cut short still says how many examples it ran.

    nice -n 10 python benchmarks/fuzz.py --total 100000
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import typer.main
import yaml
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "tests"))
warnings.filterwarnings("ignore")

import test_fuzz as fuzz  # noqa: E402
from cli_runner import layerwise  # noqa: E402
from layerwise.errors import LayerwiseError  # noqa: E402

# Shares of the total per target (the cheap ones get more examples).
TARGETS = {
    "recipe_text": 0.30,
    "recipe_summary": 0.24,
    "recipe_data": 0.05,
    "recipe_train": 0.005,
    "set_overrides": 0.24,
    "predict_inputs": 0.088,
    "evaluate_data": 0.02,
    "damaged_run": 0.06,
}
MIN_DRAW = 10  # examples per call to a target's strategy


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str
    error: str = ""  # the LayerwiseError class an in-process exit 2 came from


# ------------------------------------------------------------------------------ runners
_last_error: list[str] = [""]
_original_init = LayerwiseError.__init__


def _remember_class(self, *args, **kwargs) -> None:
    _last_error[0] = type(self).__name__
    _original_init(self, *args, **kwargs)


def in_process(argv: list[str], cwd: Path) -> Result:
    """`layerwise ARGV` by the console entry point in this process."""
    _last_error[0] = ""
    result = layerwise(*argv, cwd=cwd)
    code = 0 if result.code is None else result.code if isinstance(result.code, int) else 1
    return Result(code, result.stdout, result.stderr, _last_error[0] if code == 2 else "")


LAYERWISE = Path(sys.executable).with_name("layerwise")


def in_subprocess(argv: list[str], cwd: Path) -> Result:
    """`layerwise ARGV` as a real process."""
    done = subprocess.run(
        [str(LAYERWISE), *argv], cwd=cwd, capture_output=True, text=True, timeout=600
    )
    return Result(done.returncode, done.stdout, done.stderr)


Runner = Callable[[list[str], Path], Result]
PICTURES = shutil.ignore_patterns("*.png", "*.html")  # copies of a run skip its plots


def classify(result: Result) -> str:
    """`ok`, `exit 2 <ErrorClass>`, or `crash: <why>`."""
    if "Traceback (most recent call last)" in result.stderr + result.stdout:
        return "crash: traceback"
    if result.code == 0:
        return "ok"
    if result.code == 2:
        if not result.stderr.startswith("error: "):
            return "crash: exit 2 without an error message"
        return f"exit 2 {result.error}".strip()
    return f"crash: exit {result.code}"


def first_error_line(result: Result) -> str:
    return next((line for line in result.stderr.splitlines() if line.startswith("error:")), "")


# ------------------------------------------------------------------------------ workspace
class Workspace:
    """A folder with the base recipe and one finished tiny run (the pristine copy is restored
    into each damaged-run example's own folder)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "base.yaml").write_text(yaml.safe_dump(fuzz.BASE))
        result = in_process(["train", "base.yaml", "--quiet", "--runs-dir", "runs"], root)
        assert result.code == 0, result.stderr
        self.runs = root / "runs"
        self.run_dir = next(p for p in self.runs.iterdir() if p.is_dir())
        files = self.run_dir.rglob("*")
        kept = [p for p in files if p.is_file() and p.suffix not in (".png", ".html")]
        self.run_files = [
            *sorted(str(p.relative_to(self.run_dir)) for p in kept),
            "../index.sqlite",
        ]

    def folder(self) -> contextlib.AbstractContextManager[str]:
        return tempfile.TemporaryDirectory(dir=self.root)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Size and modification time of every file (an atomic rewrite changes the time)."""
    return {
        str(p): (s.st_size, s.st_mtime_ns)
        for p in folder.rglob("*")
        if (s := p.stat()) and p.is_file()
    }


def changed(before: dict[str, tuple[int, int]], folder: Path) -> list[str]:
    """Files that existed before and differ (or are gone) now."""
    return [name for name, stamp in before.items() if _stamp(Path(name)) != stamp]


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


# ------------------------------------------------------------------------------ targets
def recipe_file(folder: Path, raw: Any) -> str:
    if isinstance(raw, str):
        (folder / "r.yaml").write_text(raw, encoding="utf-8", errors="surrogatepass")
    else:
        (folder / "r.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False))
    return "r.yaml"


@st.composite
def labelled_files(draw) -> tuple[str, Any]:
    """A labelled file for `evaluate --data`: CSV with or without the label column, or .npz
    with x and y (either missing, any dtype or shape)."""
    if draw(st.booleans()):
        text = draw(fuzz.csv_texts())
        if draw(st.booleans()):
            lines = text.split("\n")
            at = draw(st.integers(0, 70))
            header = lines[0].split(",")
            header.insert(min(at, len(header)), "label")
            lines[0] = ",".join(header)
            text = "\n".join(lines)
        return "csv", text
    arrays = {}
    for key in draw(st.lists(st.sampled_from(["x", "y", "z"]), max_size=3, unique=True)):
        arrays[key] = draw(fuzz.npy_arrays())
    return "npz", arrays


# Settings a user might well write, edge cases included (a huge lr, batch 1, every optimizer...),
# for recipes that pass the schema and reach training.
PLAUSIBLE = {
    "data.batch_size": st.sampled_from([1, 7, 32, 1000]),
    "data.val_fraction": st.sampled_from([0.0, 0.1, 0.5, 0.9]),
    "data.standardize": st.booleans(),
    "data.impute": st.booleans(),
    "data.drop_constant": st.booleans(),
    "data.drop_duplicates": st.booleans(),
    "data.balance": st.booleans(),
    "data.args.subset": st.sampled_from([1, 2, 10, 40, 150]),
    "model.name": st.sampled_from(["mlp", "cnn"]),
    "model.args.hidden": st.lists(st.integers(1, 64), max_size=3),
    "model.args.dropout": st.sampled_from([0.0, 0.5, 0.99]),
    "model.args.activation": st.sampled_from(["relu", "tanh", "sigmoid", "gelu", "leaky_relu"]),
    "model.args.batchnorm": st.booleans(),
    "model.init": st.sampled_from(["kaiming", "xavier", "zeros", "normal"]),
    "train.epochs": st.sampled_from([1, 2]),
    "train.optimizer.name": st.sampled_from(["sgd", "adam", "adamw", "rmsprop", "adagrad"]),
    "train.optimizer.lr": st.sampled_from([1e-6, 1e-3, 0.1, 10.0, 1e6]),
    "train.optimizer.weight_decay": st.sampled_from([0.0, 1e-4, 10.0]),
    "train.optimizer.momentum": st.sampled_from([0.0, 0.9, 0.999]),
    "train.loss.label_smoothing": st.sampled_from([0.0, 0.1, 0.9]),
    "train.schedule.name": st.sampled_from(["onecycle", "cosine", "step", "plateau", "none"]),
    "train.metrics": st.sampled_from([["accuracy"], ["accuracy", "f1"], []]),
    "train.grad_clip": st.sampled_from([None, 1e-6, 1.0]),
    "train.l1": st.sampled_from([0.0, 1e-3, 1.0]),
    "train.l2": st.sampled_from([0.0, 1e-3, 1.0]),
    "train.checkpoint_every_steps": st.sampled_from([None, 1, 3]),
    "train.early_stopping.patience": st.sampled_from([0, 1]),
    "doctor.probes": st.booleans(),
    "doctor.probe_every": st.sampled_from([1, 2, 50]),
    "doctor.data_checks": st.booleans(),
    "doctor.stop_on_fatal": st.booleans(),
    "track.tensorboard": st.booleans(),
}


@st.composite
def plausible_recipes(draw) -> dict[str, Any]:
    """The base recipe with 1-4 settings from PLAUSIBLE, still under `train.epochs: 1`."""
    raw = yaml.safe_load(yaml.safe_dump(fuzz.BASE))
    for path in draw(st.lists(st.sampled_from(sorted(PLAUSIBLE)), min_size=1, max_size=4)):
        *parents, leaf = path.split(".")
        node = raw
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = draw(PLAUSIBLE[path])
    return raw


class Targets:
    def __init__(self, space: Workspace) -> None:
        self.space = space
        self.run_name = space.run_dir.name
        damages = st.tuples(
            st.sampled_from(space.run_files),
            st.sampled_from(["truncate", "flip", "garbage", "empty", "append", "delete", "utf16"]),
            st.integers(0, 10**6),
            st.binary(min_size=1, max_size=40),
        )
        recipes = fuzz.mutated_recipes()
        # Schema mutations are almost never valid recipes, so training gets plausible ones too.
        trainable = st.one_of(recipes, plausible_recipes())
        texts = st.one_of(
            st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("latin-1"))
        )
        self.strategies = {
            "recipe_text": texts,
            "recipe_summary": recipes,
            "recipe_data": recipes,
            "recipe_train": trainable,
            "set_overrides": st.lists(fuzz.overrides, min_size=1, max_size=3),
            "predict_inputs": st.tuples(
                st.lists(fuzz.prediction_files, min_size=1, max_size=3),
                st.booleans(),
                st.integers(-1, 12),
            ),
            "evaluate_data": labelled_files(),
            "damaged_run": st.tuples(
                st.lists(damages, min_size=1, max_size=2),
                st.sampled_from(
                    ["ls", "show", "compare", "doctor", "evaluate", "best", "predict", "summary"]
                ),
            ),
        }

    # Each target: (example, runner) -> (result, files that an exit 2 changed).
    def recipe_text(self, text: str, run: Runner):
        return self._recipe(text, ["summary"], run)

    def recipe_summary(self, raw, run: Runner):
        return self._recipe(raw, ["summary"], run)

    def recipe_data(self, raw, run: Runner):
        return self._recipe(raw, ["doctor", "--data-only"], run)

    def recipe_train(self, raw, run: Runner):
        return self._recipe(raw, ["train", "--quiet", "--set", "train.epochs=1"], run)

    def _recipe(self, raw, verb: list[str], run: Runner):
        with self.space.folder() as name:
            folder = Path(name)
            path = recipe_file(folder, raw)
            before = snapshot(folder)
            result = run([verb[0], path, *verb[1:], "--runs-dir", "runs"], folder)
            return result, changed(before, folder)

    def set_overrides(self, sets: list[str], run: Runner):
        with self.space.folder() as name:
            folder = Path(name)
            (folder / "base.yaml").write_text(yaml.safe_dump(fuzz.BASE))
            before = snapshot(folder)
            argv = ["doctor", "base.yaml", "--data-only"]
            for one in sets:
                argv += ["--set", one]
            return run(argv, folder), changed(before, folder)

    def predict_inputs(self, example, run: Runner):
        items, to_file, top_k = example
        with self.space.folder() as name:
            folder = Path(name)
            paths = [fuzz.write_input(folder, item, n).name for n, item in enumerate(items)]
            argv = ["predict", str(self.space.run_dir), *paths, "--top-k", str(top_k)]
            if to_file:
                argv += ["--output", "out.csv"]
            before = snapshot(folder) | snapshot(self.space.runs)
            result = run(argv, folder)
            return result, changed(before, folder)

    def evaluate_data(self, example, run: Runner):
        kind, value = example
        with self.space.folder() as name:
            folder = Path(name)
            runs = folder / "runs"
            shutil.copytree(self.space.runs, runs, ignore=PICTURES)
            path = folder / f"new.{kind}"
            if kind == "csv":
                path.write_text(value, encoding="utf-8")
            else:
                np.savez(path, **value)
            before = snapshot(folder)
            result = run(
                ["evaluate", self.run_name, "--data", path.name, "--runs-dir", "runs"], folder
            )
            return result, changed(before, folder)

    def damaged_run(self, example, run: Runner):
        hows, verb = example
        with self.space.folder() as name:
            folder = Path(name)
            runs = folder / "runs"
            shutil.copytree(self.space.runs, runs, ignore=PICTURES)
            for how in hows:
                fuzz.damage(runs / self.run_name, how)
            if verb == "predict":
                np.save(folder / "x.npy", np.zeros((2, 64), dtype="float32"))
            argv = {
                "ls": ["runs", "ls"],
                "show": ["runs", "show", self.run_name],
                "compare": ["runs", "compare", self.run_name],
                "doctor": ["doctor", self.run_name],
                "evaluate": ["evaluate", self.run_name],
                "best": ["evaluate", self.run_name, "--weights", "best", "--split", "val"],
                "predict": ["predict", self.run_name, "x.npy"],
                "summary": ["summary", self.run_name],
            }[verb]
            before = snapshot(folder)
            result = run([*argv, "--runs-dir", "runs"], folder)
            return result, changed(before, folder)


# ------------------------------------------------------------------------------ driving
@dataclass
class Tally:
    counts: collections.Counter
    crashes: dict[str, dict[str, str]]
    changed_on_error: list[dict[str, Any]]
    cross: dict[str, Any]
    saved: list[tuple[Any, Result]]  # examples kept for the cross-check at the end


def run_chunk(
    target: Callable, strategy, examples: int, tally: Tally, cross_left: list[int], rnd: int
) -> None:
    """Draw `examples` inputs (no shrinking) and count what each one does."""

    @seed(rnd)
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
            result, touched = target(example, in_process)
            kind = classify(result)
            where = result.stderr[-1500:]
        except Exception as exc:  # an exception out of main() itself
            kind, where = f"crash: {type(exc).__name__}", traceback.format_exc(limit=-4)[-1500:]
            result, touched = None, []
        tally.counts[kind] += 1
        if kind.startswith("crash") and kind not in tally.crashes:
            tally.crashes[kind] = {"input": repr(example)[:2000], "where": where}
        if touched and kind.startswith("exit 2") and len(tally.changed_on_error) < 20:
            tally.changed_on_error.append({"input": repr(example)[:500], "files": touched[:5]})
        if result is not None and cross_left[0] > 0:  # checked as real processes at the end
            cross_left[0] -= 1
            tally.saved.append((example, result))

    body()


def cross_check(target: Callable, example, inside: Result, cross: dict[str, Any]) -> None:
    """The same example as a real process: same exit code, same error line."""
    try:
        outside, _ = target(example, in_subprocess)
    except (ValueError, UnicodeError):  # a NUL or lone surrogate cannot be a real argv
        cross["skipped"] += 1
        return
    same = outside.code == inside.code and first_error_line(outside) == first_error_line(inside)
    cross["agree" if same else "disagree"] += 1
    if not same and len(cross["differences"]) < 10:
        cross["differences"].append(
            {
                "input": repr(example)[:500],
                "in_process": [inside.code, first_error_line(inside)[:300]],
                "subprocess": [outside.code, first_error_line(outside)[:300]],
            }
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--total", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=500, help="examples per round (all targets)")
    parser.add_argument("--cross-check", type=int, default=2, help="subprocess examples per target")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--max-minutes", type=float, default=None, help="start no new round after this"
    )
    parser.add_argument("--memory-gib", type=float, default=8.0, help="address-space cap")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "fuzz.json")
    parser.add_argument(
        "--merge", type=Path, nargs="+", help="instead of fuzzing, add up these results into --out"
    )
    args = parser.parse_args()
    if args.merge:
        merge(args.merge, args.out)
        return

    limit = int(args.memory_gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    # The command tree is the same for every call; build it once.
    typer.main.get_command = functools.cache(typer.main.get_command)
    LayerwiseError.__init__ = _remember_class

    started = time.time()
    with tempfile.TemporaryDirectory(prefix="layerwise-fuzz-") as root:
        targets = Targets(Workspace(Path(root)))
        tallies = {
            name: Tally(
                collections.Counter(),
                {},
                [],
                {"agree": 0, "disagree": 0, "skipped": 0, "differences": []},
                [],
            )
            for name in TARGETS
        }
        cross_left = {name: [args.cross_check] for name in TARGETS}
        seconds, cpu_seconds = collections.Counter(), collections.Counter()
        done, rnd = 0, 0
        deadline = started + 60 * args.max_minutes if args.max_minutes else float("inf")
        owed = collections.Counter()
        while done < args.total and time.time() < deadline:
            for name, share in TARGETS.items():
                # Hypothesis draws the simplest example first, so a target given one example a
                # round would see that same example every round: rare targets wait and draw
                # several at once.
                owed[name] += args.chunk * share
                if owed[name] < MIN_DRAW:
                    continue
                examples = min(int(owed[name]), args.total - done)
                if examples <= 0:
                    break
                owed[name] -= examples
                tally = tallies[name]
                before, clock, cpu = sum(tally.counts.values()), time.time(), time.process_time()
                run_chunk(
                    getattr(targets, name),
                    targets.strategies[name],
                    examples,
                    tally,
                    cross_left[name],
                    args.seed * 1_000_003 + rnd,
                )
                seconds[name] += time.time() - clock
                cpu_seconds[name] += time.process_time() - cpu
                done += sum(tally.counts.values()) - before
            rnd += 1
            write(args.out, tallies, (seconds, cpu_seconds), done, args, started)
            print(f"{done} examples, {time.time() - started:.0f} s: {totals(tallies)}", flush=True)
        for name, tally in tallies.items():
            for example, inside in tally.saved:
                cross_check(getattr(targets, name), example, inside, tally.cross)
        write(args.out, tallies, (seconds, cpu_seconds), done, args, started)
    print_table(tallies)


def totals(tallies: dict[str, Tally]) -> dict[str, int]:
    total = collections.Counter()
    for tally in tallies.values():
        total.update(tally.counts)
    return dict(total.most_common())


def write(path: Path, tallies, clocks, done: int, args, started: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    seconds, cpu_seconds = clocks
    by_outcome = totals(tallies)
    result = {
        "command": "nice -n 10 .venv/bin/python benchmarks/fuzz.py " + " ".join(sys.argv[1:]),
        "examples": done,
        "wanted": args.total,
        "seconds": round(time.time() - started, 1),
        "loadavg": os.getloadavg(),
        "cpus": os.cpu_count(),
        "memory_cap_gib": args.memory_gib,
        "summary": {
            "ok": by_outcome.get("ok", 0),
            "exit 2": sum(n for k, n in by_outcome.items() if k.startswith("exit 2")),
            "crash": sum(n for k, n in by_outcome.items() if k.startswith("crash")),
        },
        "by_outcome": by_outcome,
        "by_target": {name: dict(t.counts.most_common()) for name, t in tallies.items()},
        "cpu_seconds": round(time.process_time(), 1),
        "seconds_by_target": {name: round(s, 1) for name, s in seconds.items()},
        "cpu_seconds_by_target": {name: round(s, 1) for name, s in cpu_seconds.items()},
        "crashes": {name: t.crashes for name, t in tallies.items() if t.crashes},
        "exit_2_that_changed_files": {
            name: t.changed_on_error for name, t in tallies.items() if t.changed_on_error
        },
        "cross_check_with_real_processes": {name: t.cross for name, t in tallies.items()},
    }
    path.write_text(json.dumps(result, indent=2) + "\n")


def merge(paths: list[Path], out: Path) -> None:
    """One result from runs made side by side (other seeds, one process each): counts add up,
    wall times do not (the processes ran at the same time)."""
    parts = [json.loads(path.read_text()) for path in paths]
    result: dict[str, Any] = {
        "command": " && ".join(part["command"] for part in parts) + " (side by side)",
        "parts": [
            {key: part[key] for key in ("command", "examples", "seconds", "loadavg", "cpu_seconds")}
            for part in parts
        ],
        "examples": sum(part["examples"] for part in parts),
        "seconds": max(part["seconds"] for part in parts),
        "cpus": parts[0]["cpus"],
        "memory_cap_gib": parts[0]["memory_cap_gib"],
    }
    for key in ("summary", "by_outcome", "cpu_seconds_by_target"):
        result[key] = dict(
            sum((collections.Counter(part[key]) for part in parts), collections.Counter())
        )
    result["by_target"] = {
        name: dict(
            sum(
                (collections.Counter(part["by_target"].get(name, {})) for part in parts),
                collections.Counter(),
            )
        )
        for name in TARGETS
    }
    result["summary"] = {kind: result["summary"].get(kind, 0) for kind in ("ok", "exit 2", "crash")}
    for key in ("crashes", "exit_2_that_changed_files", "cross_check_with_real_processes"):
        result[key] = [part[key] for part in parts]
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['examples']} examples: {result['summary']}")


def print_table(tallies: dict[str, Tally]) -> None:
    outcomes = sorted(totals(tallies))
    print(f"{'target':<16}" + "".join(f"{o[:20]:>22}" for o in outcomes))
    for name, tally in tallies.items():
        print(f"{name:<16}" + "".join(f"{tally.counts.get(o, 0):>22}" for o in outcomes))


if __name__ == "__main__":
    main()
