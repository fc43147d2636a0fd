"""Auto-fix: train, diagnose, apply the findings' recipe patches, retrain; repeat.

Data problems are fixed first (they cause training symptoms), training problems after. When a
fix changes the learning rate, the new rate is measured with the LR range test on the patched
recipe rather than guessed.

The user's recipe file is never changed: the fixed recipe is written as a copy next to it
(`<name>.fixed.yaml`) together with `<name>.autofix.json`, which records every round: the findings,
the patch that was applied and the metrics before and after. The copy is the recipe of the round
with the fewest and least severe findings left; validation scores only break ties, because with
leaked or duplicated data the broken round's validation score is the inflated one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from layerwise.diagnose.findings import Diagnosis, apply_patch, get_path
from layerwise.diagnose.rules import RULES
from layerwise.errors import DataError, LayerwiseError, RecipeError
from layerwise.experiment import build, train
from layerwise.recipe import Recipe, apply_override, parse_recipe, validate_recipe
from layerwise.runs.atomic import atomic_write_json, atomic_write_text
from layerwise.train.metrics import create_metric
from layerwise.train.monitor import monitor_mode
from layerwise.tune.lr_finder import lr_find

SEVERITY_WEIGHT = {"info": 1, "warning": 10, "error": 100, "fatal": 1000}


@dataclass
class FixRound:
    """One round: the recipe trained (as a patch on the original), what it gave, what was found."""

    round: int
    run: str | None
    applied: dict[str, Any]
    codes: list[str]
    severities: list[str]
    status: str
    val_metrics: dict[str, float] = field(default_factory=dict)
    test_metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class AutoFixResult:
    rounds: list[FixRound]
    best_round: int
    fixed_recipe: Path | None
    log_path: Path

    def to_dict(self) -> dict[str, Any]:
        return {
            "rounds": [asdict(r) for r in self.rounds],
            "best_round": self.best_round,
            "fixed_recipe": str(self.fixed_recipe) if self.fixed_recipe else None,
        }


def auto_fix(
    recipe_path: str | Path,
    *,
    rounds: int = 3,
    runs_root: str | Path = "runs",
    overrides: list[str] | None = None,
    output: str | Path | None = None,
    echo: Callable[[str], None] | None = print,
    progress: bool = False,
) -> AutoFixResult:
    """Train the recipe, then up to `rounds` more times, each with the previous round's fixes.

    Args:
        recipe_path: the user's recipe file (read only).
        rounds: how many fix rounds at most after the first training.
        runs_root: where the runs of each round go (`<name>-fix<k>`).
        overrides: `key.path=value` strings applied before the first round (like `--set`).
        output: where to write the fixed recipe (default: `<recipe>.fixed.yaml` beside it).
        echo: where the rounds' lines go (None: silent).
        progress: also show each round's training as it goes (a line per epoch, the data
            checks and live findings, as `layerwise train` does).
    """
    if rounds < 1:
        raise RecipeError(f"--rounds must be at least 1, got {rounds}", hint="e.g. --rounds 3")
    recipe_path = Path(recipe_path)
    base, raw = _read_recipe(recipe_path, overrides)
    mode = monitor_mode(base.train.monitor, [create_metric(m) for m in base.train.metrics])
    say = echo or (lambda _: None)
    applied: dict[str, Any] = {}
    history: list[FixRound] = []
    raws: list[dict[str, Any]] = []
    for k in range(rounds + 1):
        current = _round_recipe(raw, applied, base.name, k)
        say(f"auto-fix round {k}: " + (_describe(applied) if applied else "the recipe as given"))
        fix_round, diagnosis = _train_round(
            k, current, applied, recipe_path, runs_root, echo if progress else None
        )
        history.append(fix_round)
        raws.append(current)
        say(f"  found: {', '.join(diagnosis.codes) or 'nothing'}; test {_fmt(fix_round)}")
        if k == rounds:
            break
        patch = _next_patch(diagnosis, current)
        if not patch:
            break
        if "train.optimizer.lr" in patch:
            patch["train.optimizer.lr"] = _measured_lr(current, patch, say)
        applied = {**applied, **patch}
    best = _best_round(history, base.train.monitor, mode)
    return _write_result(recipe_path, output, base.name, history, raws, best)


def _read_recipe(path: Path, overrides: list[str] | None) -> tuple[Recipe, dict[str, Any]]:
    """The validated recipe (errors come before any training) and its raw mapping, overridden."""
    text = _read(path)
    base = parse_recipe(text, str(path), overrides)
    raw = yaml.safe_load(text)
    for override in overrides or []:
        apply_override(raw, override)
    return base, raw


def _round_recipe(
    raw: dict[str, Any], applied: dict[str, Any], name: str, k: int
) -> dict[str, Any]:
    """Round `k`'s raw recipe: the original with every patch so far, named `<name>-fix<k>`."""
    current = apply_patch(raw, applied)
    current["name"] = name if k == 0 else f"{name}-fix{k}"
    return current


def _train_round(
    k: int,
    current: dict[str, Any],
    applied: dict[str, Any],
    source: Path,
    runs_root: str | Path,
    echo: Callable[[str], None] | None = None,
) -> tuple[FixRound, Diagnosis]:
    """Train round `k`'s recipe and read its diagnosis; data the doctor refuses to train on is
    recorded as a `refused` round with the data findings. With `echo`, training shows its
    progress and findings as it goes."""
    recipe = validate_recipe(current, f"{source} (round {k})")
    try:
        run, test_metrics = train(recipe, runs_root, progress=echo is not None, echo=echo)
    except DataError as exc:
        diagnosis = exc.diagnosis
        if diagnosis is None:
            raise
        refused = FixRound(k, None, dict(applied), diagnosis.codes, _sev(diagnosis), "refused")
        return refused, diagnosis
    diagnosis = Diagnosis.from_dict(run.read_diagnosis() or {})
    info = run.info()
    val = {
        key.removeprefix("val_"): value
        for key, value in info.get("final_metrics", {}).items()
        if key.startswith("val_")
    }
    trained = FixRound(
        k,
        run.name,
        dict(applied),
        diagnosis.codes,
        _sev(diagnosis),
        info["status"],
        val,
        test_metrics,
    )
    return trained, diagnosis


def _next_patch(diagnosis: Diagnosis, current: dict[str, Any]) -> dict[str, Any]:
    """The changes to try next: the data's fixes first, if any, else the training fixes.

    Broken data causes training symptoms (unscaled inputs make the learning rate look too high),
    so fixing the data first and diagnosing again avoids treating a symptom twice.
    """
    data_side = Diagnosis([f for f in diagnosis.findings if RULES[f.code].stage == "data"])
    for candidate in (data_side, diagnosis):
        patch = {k: v for k, v in candidate.patch().items() if get_path(current, k) != v}
        if patch:
            return patch
    return {}


def _measured_lr(current: dict[str, Any], patch: dict[str, Any], say: Callable) -> float:
    """Replace a rule's guessed learning rate (x0.1, x10) by the range test's suggestion for the
    patched recipe; keep the guess if the test cannot suggest one."""
    guess = patch["train.optimizer.lr"]
    say(f"  measuring a learning rate for the patch (lr-find; the rule guessed {guess:g})")
    try:
        result = lr_find(build(validate_recipe(apply_patch(current, patch))), echo=say)
    except LayerwiseError:
        return guess
    if not math.isfinite(result.suggestion) or result.suggestion <= 0:
        return guess
    suggestion = float(f"{result.suggestion:.2g}")
    say(f"  lr-find on the patched recipe suggests {suggestion:g} (the rule guessed {guess:g})")
    return suggestion


def _best_round(history: list[FixRound], monitor: str, mode: str) -> int:
    """The trained round with the least severe findings left; among equals the best validation
    score of `monitor` (better when higher if `mode` is `max`, lower if `min`), then the later
    round."""
    key = monitor.removeprefix("val_")
    sign = 1.0 if mode == "max" else -1.0

    def rank(i: int) -> tuple[float, float, int]:
        r = history[i]
        if r.status != "finished":
            return (math.inf, math.inf, -i)
        value = r.val_metrics.get(key)
        score = sign * value if value is not None and math.isfinite(value) else -math.inf
        return (sum(SEVERITY_WEIGHT[s] for s in r.severities), -score, -i)

    return min(range(len(history)), key=rank)


def _write_result(
    recipe_path: Path,
    output: str | Path | None,
    name: str,
    history: list[FixRound],
    raws: list[dict[str, Any]],
    best: int,
) -> AutoFixResult:
    """Write the best round's recipe as `<stem>.fixed.yaml` (unless it is the recipe as given)
    and every round as `<stem>.autofix.json`, beside the recipe or at `output`."""
    stem = recipe_path.name.removesuffix(".yaml").removesuffix(".yml")
    fixed: Path | None = None
    if history[best].applied:
        fixed_path = Path(output) if output else recipe_path.with_name(f"{stem}.fixed.yaml")
        header = (
            f"# Written by `layerwise doctor --auto-fix` from {recipe_path.name} "
            f"(round {best}): {_describe(history[best].applied)}\n"
        )
        fixed_raw = dict(raws[best], name=f"{name}-fixed")
        fixed = atomic_write_text(fixed_path, header + yaml.safe_dump(fixed_raw, sort_keys=False))
    log_path = (
        Path(output).with_suffix(".autofix.json")
        if output
        else recipe_path.with_name(f"{stem}.autofix.json")
    )
    result = AutoFixResult(history, best, fixed, log_path)
    atomic_write_json(log_path, result.to_dict())
    return result


def _sev(diagnosis: Diagnosis) -> list[str]:
    return [f.severity for f in diagnosis.findings]


def _describe(patch: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in patch.items())


def _fmt(r: FixRound) -> str:
    if not r.test_metrics:
        return "not trained"
    return " ".join(f"{k} {v:.4f}" for k, v in r.test_metrics.items() if isinstance(v, float))


def _read(path: Path) -> str:
    if not path.is_file():
        raise RecipeError(f"recipe file '{path}' not found", hint="give the path of a .yaml recipe")
    return path.read_text(encoding="utf-8")
