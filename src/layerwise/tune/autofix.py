"""Auto-fix: train, diagnose, try the findings' recipe patches one change at a time, keep a change
only when the model gets better on held-out rows.

Data problems are fixed first (they cause training symptoms), training problems after. When a
fix changes the learning rate, the new rate is measured with the LR range test on the patched
recipe rather than guessed. A data fix must also be justified by the data
(`layerwise.diagnose.rules.fixes.data_fix_refusal`): inputs already within ±1 are not
standardised, and the constant border pixels of images are not dropped.

Each round trains the best recipe so far with one more patch. The round is kept only when its
score on validation rows that are not copies of training rows beats the best so far by more
than noise (`layerwise.tune.holdout`); otherwise its patch is set aside and the next finding's
patch is tried on the best recipe. The recipe as given is round 0 and always a candidate, so
auto-fix never ends below the run it started from on validation. Neither the number of findings
nor the test split decides anything.

The user's recipe file is never changed: the fixed recipe is written as a copy next to it
(`<name>.fixed.yaml`, only when a change was kept) together with `<name>.autofix.json`, which
records every round: the patch tried, the findings, the validation score, the decision and the
test metrics (recorded, never used).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from layerwise.diagnose.doctor import read_data_profile
from layerwise.diagnose.findings import Diagnosis, apply_patch, get_path
from layerwise.diagnose.rules import RULES
from layerwise.diagnose.rules.fixes import data_fix_refusal
from layerwise.errors import DataError, LayerwiseError, RecipeError
from layerwise.experiment import build, train
from layerwise.recipe import Recipe, apply_override, parse_recipe, validate_recipe
from layerwise.runs.atomic import atomic_write_json, atomic_write_text
from layerwise.train.metrics import create_metric
from layerwise.train.monitor import monitor_mode
from layerwise.tune.holdout import HoldoutScore, HoldoutScorer, beats
from layerwise.tune.lr_finder import lr_find


@dataclass
class FixRound:
    """One round: the recipe trained (as a patch on the original), what it gave, what was found,
    and whether the change it tried was kept."""

    round: int
    run: str | None
    applied: dict[str, Any]
    codes: list[str]
    severities: list[str]
    status: str
    val_metrics: dict[str, float] = field(default_factory=dict)
    test_metrics: dict[str, float] = field(default_factory=dict)
    tried: dict[str, Any] = field(default_factory=dict)
    holdout: dict[str, Any] = field(default_factory=dict)
    kept: bool = False
    decision: str = ""
    refused_fixes: dict[str, str] = field(default_factory=dict)
    score: HoldoutScore | None = field(default=None, repr=False, compare=False)


@dataclass
class AutoFixResult:
    rounds: list[FixRound]
    best_round: int
    fixed_recipe: Path | None
    log_path: Path

    def to_dict(self) -> dict[str, Any]:
        rounds = []
        for r in self.rounds:
            row = asdict(r)
            row.pop("score", None)
            rounds.append(row)
        return {
            "rounds": rounds,
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
    """Train the recipe, then up to `rounds` more times, each with one more change to the best
    recipe so far, keeping a change only if it beats the best round on held-out rows.

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
    higher = monitor_mode(base.train.monitor, [create_metric(m) for m in base.train.metrics])
    higher_is_better = higher == "max"
    say = echo or (lambda _: None)
    history: list[FixRound] = []
    raws: list[dict[str, Any]] = []
    best, best_diagnosis = 0, Diagnosis([])
    set_aside: set[str] = set()
    diagnoses: list[Diagnosis] = []  # of the rounds set aside
    refused: dict[str, str] = {}
    for k in range(rounds + 1):
        if k == 0:
            patch: dict[str, Any] = {}
        else:
            # The best round's findings first; then those of rounds set aside, latest first: a
            # change that did not help can still reveal a cause the best round hid (vanishing
            # gradients that show once the first change lets the model move).
            for source in [best_diagnosis, *reversed(diagnoses)]:
                patch, refused = _next_patch(
                    source, raws[best], set_aside, best_diagnosis.data_profile
                )
                if patch:
                    break
            for key, why in refused.items():
                say(f"  not applying {key}: {why}")
            if not patch:
                break
            if "train.optimizer.lr" in patch:
                patch["train.optimizer.lr"] = _measured_lr(raws[best], patch, say)
        applied = {**history[best].applied, **patch} if history else {}
        current = _round_recipe(raw, applied, base.name, k)
        say(f"auto-fix round {k}: " + (_describe(patch) if patch else "the recipe as given"))
        fix_round, diagnosis = _train_round(
            k,
            current,
            applied,
            recipe_path,
            runs_root,
            higher_is_better,
            echo if progress else None,
        )
        fix_round.tried, fix_round.refused_fixes = dict(patch), dict(refused)
        history.append(fix_round)
        raws.append(current)
        if k == 0:
            fix_round.kept, fix_round.decision = True, "the recipe as given"
        else:
            fix_round.kept, why = beats(fix_round.score, history[best].score)
            fix_round.decision = ("kept: " if fix_round.kept else "set aside: ") + why
        if fix_round.kept:
            best, best_diagnosis = k, diagnosis
        else:
            set_aside |= set(patch)
            diagnoses.append(diagnosis)
        say(
            f"  found: {', '.join(diagnosis.codes) or 'nothing'}; "
            f"validation {_fmt_score(fix_round)}; {fix_round.decision}"
        )
    return _write_result(recipe_path, output, base.name, history, raws, best)


def choose_round(history: list[FixRound]) -> int:
    """The round auto-fix keeps: walking the rounds in order, a round replaces the best so far
    only when its held-out score beats it by more than noise (`holdout.beats`); round 0, the
    recipe as given, is where it starts. Findings and test metrics play no part."""
    best = 0
    for k in range(1, len(history)):
        if beats(history[k].score, history[best].score)[0]:
            best = k
    return best


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
    """Round `k`'s raw recipe: the original with the patches kept so far, named `<name>-fix<k>`."""
    current = apply_patch(raw, applied)
    current["name"] = name if k == 0 else f"{name}-fix{k}"
    return current


def _train_round(
    k: int,
    current: dict[str, Any],
    applied: dict[str, Any],
    source: Path,
    runs_root: str | Path,
    higher_is_better: bool,
    echo: Callable[[str], None] | None = None,
) -> tuple[FixRound, Diagnosis]:
    """Train round `k`'s recipe, score its model on held-out rows and read its diagnosis; data
    the doctor refuses to train on is recorded as a `refused` round with the data findings. With
    `echo`, training shows its progress and findings as it goes."""
    recipe = validate_recipe(current, f"{source} (round {k})")
    scorer = HoldoutScorer()
    try:
        run, test_metrics = train(
            recipe, runs_root, progress=echo is not None, echo=echo, callbacks=[scorer]
        )
    except DataError as exc:
        diagnosis = exc.diagnosis
        if diagnosis is None:
            raise
        refused = FixRound(k, None, dict(applied), diagnosis.codes, _sev(diagnosis), "refused")
        return refused, diagnosis
    diagnosis = Diagnosis.from_dict(run.read_diagnosis() or {})
    if diagnosis.data_profile is None:
        diagnosis.data_profile = read_data_profile(run)
    info = run.info()
    val = {
        key.removeprefix("val_"): value
        for key, value in info.get("final_metrics", {}).items()
        if key.startswith("val_")
    }
    monitor = recipe.train.monitor.removeprefix("val_")
    score = scorer.score(val.get(monitor), higher_is_better)
    trained = FixRound(
        k,
        run.name,
        dict(applied),
        diagnosis.codes,
        _sev(diagnosis),
        info["status"],
        val,
        test_metrics,
        holdout=score.summary(),
        score=score,
    )
    return trained, diagnosis


def _next_patch(
    diagnosis: Diagnosis,
    current: dict[str, Any],
    set_aside: set[str] = frozenset(),
    profile: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """The changes to try next, and the data fixes refused as unjustified (key -> why).

    The data's fixes come first, if any, else the training fixes. Broken data causes training
    symptoms (unscaled inputs make the learning rate look too high), so fixing the data first
    and diagnosing again avoids treating a symptom twice. Keys already tried and set aside, keys
    the recipe already has at that value, and data fixes the data `profile` does not justify
    are left out.
    """
    refused: dict[str, str] = {}
    for key in diagnosis.patch():
        why = data_fix_refusal(key, profile)
        if why is not None:
            refused[key] = why
    data_side = Diagnosis([f for f in diagnosis.findings if RULES[f.code].stage == "data"])
    for candidate in (data_side, diagnosis):
        patch = {
            k: v
            for k, v in candidate.patch().items()
            if get_path(current, k) != v and k not in set_aside and k not in refused
        }
        if patch:
            return patch, refused
    return {}, refused


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


def _fmt_score(r: FixRound) -> str:
    value, scored = r.holdout.get("value"), r.holdout.get("rows_scored", 0)
    if value is None:
        return "none"
    left_out = r.holdout.get("copies_left_out", 0)
    rows = f" on {scored} rows" + (f" ({left_out} copies of train left out)" if left_out else "")
    return f"{value:.4f}" + (rows if scored else " (logged)")


def _fmt(r: FixRound) -> str:
    if not r.test_metrics:
        return "not trained"
    return " ".join(f"{k} {v:.4f}" for k, v in r.test_metrics.items() if isinstance(v, float))


def _read(path: Path) -> str:
    if not path.is_file():
        raise RecipeError(f"recipe file '{path}' not found", hint="give the path of a .yaml recipe")
    return path.read_text(encoding="utf-8")
