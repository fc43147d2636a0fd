"""`layerwise tune`: a hyperparameter search over a recipe with Optuna (TPE and pruning).

Every trial is a normal layerwise run (`runs/<study>-trial<N>`, with its report), trained from
the recipe with one point of its `tune.space` applied. The study lives in an Optuna RDB storage,
`runs/tune/<study>/study.sqlite3`, so a search that was killed continues where it stopped when
started again with the same study name: trials that were running when it died (left `RUNNING`
in the storage) are marked failed and their parameters tried again first. One process works on
a study at a time. At the end the best point is written as a recipe, `runs/tune/<study>/best.yaml`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from layerwise.errors import LayerwiseError, RecipeError, did_you_mean
from layerwise.recipe import TuneSpec, apply_override, load_recipe
from layerwise.runs.atomic import atomic_write_text
from layerwise.tune.pruning import TrialPruning
from layerwise.tune.space import check_space, decode, suggest, trial_recipe

Echo = Callable[[str], None] | None


@dataclass
class TrialRow:
    """One trial as the table shows it."""

    number: int
    state: str
    value: float | None
    epochs: int
    pruned_by: str | None
    params: dict[str, Any]
    run: str | None
    seconds: float | None
    steps: int = 0
    fit_seconds: float | None = None


@dataclass
class TuneResult:
    study_name: str
    direction: str
    metric: str
    rows: list[TrialRow] = field(default_factory=list)
    best: TrialRow | None = None
    best_recipe: Path | None = None
    storage: Path | None = None


def tune(
    recipe_path: str | Path,
    *,
    trials: int,
    timeout: float | None = None,
    study_name: str | None = None,
    resume: bool = False,
    overrides: list[str] | None = None,
    runs_root: str | Path = "runs",
    echo: Echo = print,
) -> TuneResult:
    """Run (or continue) the search until the study holds `trials` finished trials."""
    import optuna

    recipe = load_recipe(recipe_path, overrides)
    if recipe.tune is None:
        raise RecipeError(
            f"recipe '{recipe_path}' has no tune section, so there is nothing to search",
            hint="add e.g. tune: {space: {train.optimizer.lr: {log_uniform: [1e-4, 1e-1]}}} "
            "(see docs/tune.md)",
        )
    if trials < 1:
        raise LayerwiseError(f"--trials is {trials}", hint="ask for at least one trial")
    spec = recipe.tune
    raw = yaml.safe_load(Path(recipe_path).read_text(encoding="utf-8"))
    for override in overrides or []:
        apply_override(raw, override)
    check_space(raw, spec.space)
    _check_prune_on(spec.prune_on)
    metric = spec.metric or recipe.train.monitor
    _check_metric(metric, recipe.train.metrics)
    direction = _direction(spec, metric, recipe.train.metrics)
    name = study_name or recipe.name
    folder = Path(runs_root) / "tune" / name
    db = folder / "study.sqlite3"
    if resume and not db.exists():
        raise LayerwiseError(
            f"no study '{name}' to resume (looked for {db})",
            hint="start it without --resume, or give the --study name it was started with",
        )
    folder.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{db.resolve()}")
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        direction=direction,
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=spec.startup_trials, n_warmup_steps=spec.warmup_epochs
        ),
        load_if_exists=True,
    )
    _check_same_search(study, spec, metric, name)
    # Seeded by how far the study has got, so that a continued search draws new points rather
    # than replaying the random start of the first process, and a rerun draws the same ones.
    study.sampler = optuna.samplers.TPESampler(seed=spec.seed + len(study.trials))
    _retry_interrupted(study, storage, echo)
    done = _finished(study)
    if echo is not None and done:
        echo(f"tune: continuing study '{name}': {done} of {trials} trials finished")
    objective = _objective(raw, spec, metric, name, runs_root, echo)
    if trials > done:
        study.optimize(objective, n_trials=trials - done, timeout=timeout, catch=())
    return _result(study, spec, metric, raw, folder, db)


def _objective(
    raw: dict[str, Any], spec: TuneSpec, metric: str, name: str, runs_root: Any, echo: Echo
) -> Callable[[Any], float]:
    import optuna

    from layerwise import experiment

    prune_on = tuple(spec.prune_on) if spec.doctor_prune else ()

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, spec.space)
        recipe = trial_recipe(raw, params, f"{name}-trial{trial.number}")
        if not spec.doctor_prune:  # plain Optuna: the doctor watches but stops nothing
            recipe.doctor.stop_on_fatal = False
        pruning = TrialPruning(trial, metric, median=spec.pruner == "median", prune_on=prune_on)
        started = time.perf_counter()
        run, _ = experiment.train(recipe, runs_root, progress=False, echo=None, callbacks=[pruning])
        seconds = time.perf_counter() - started
        trial.set_user_attr("run", run.name)
        trial.set_user_attr("epochs", len(pruning.values))
        trial.set_user_attr("seconds", round(seconds, 3))
        trial.set_user_attr("steps", pruning.steps)
        trial.set_user_attr("fit_seconds", round(pruning.fit_seconds, 3))
        outcome = run.info()["status"]  # kept as training left it; only the trial is added
        run.set_status(outcome, tune={"study": name, "trial": trial.number})
        finite = [v for v in pruning.values if math.isfinite(v)]
        pruned_by = pruning.pruned_by or (None if finite else "no finite value")
        if pruned_by is not None:
            trial.set_user_attr("pruned_by", pruned_by)
        if echo is not None:
            shown = {k: _short(v) for k, v in params.items()}
            outcome = (
                f"pruned ({pruned_by})" if pruned_by else f"{metric} {_best(finite, trial):.4f}"
            )
            echo(
                f"trial {trial.number}: {outcome} after {len(pruning.values)} epoch(s), "
                f"{seconds:.1f} s  {shown}"
            )
        if pruned_by is not None:
            raise optuna.TrialPruned(pruned_by)
        return _best(finite, trial)

    return objective


def _best(values: list[float], trial: Any) -> float:
    """A trial's score: its best epoch, as the best checkpoint keeps it."""
    maximize = trial.study.direction.name == "MAXIMIZE"
    return (max if maximize else min)(values) if values else math.nan


def _short(value: Any) -> Any:
    return float(f"{value:.3g}") if isinstance(value, float) else value


def _check_metric(metric: str, metrics: list[str]) -> None:
    names = ["loss", *metrics]
    valid = names + [f"val_{n}" for n in names]
    if metric not in valid:
        raise RecipeError(
            f"tune.metric is '{metric}', which training does not log",
            hint=did_you_mean(metric, valid),
        )


def _check_prune_on(codes: list[str]) -> None:
    from layerwise.diagnose.findings import CODES

    for code in codes:
        if code not in CODES:
            raise RecipeError(
                f"tune.prune_on names '{code}', which is not a doctor finding",
                hint=did_you_mean(code, list(CODES)),
            )


def _direction(spec: TuneSpec, metric: str, metrics: list[str]) -> str:
    if spec.direction != "auto":
        return spec.direction
    from layerwise.train import create_metric
    from layerwise.train.monitor import monitor_mode

    made = []
    for name in metrics:
        try:
            made.append(create_metric(name))
        except (LayerwiseError, TypeError):
            continue
    return "maximize" if monitor_mode(metric, made) == "max" else "minimize"


def _check_same_search(study: Any, spec: TuneSpec, metric: str, name: str) -> None:
    """A study continues only the search it was started with (same space and metric)."""
    declared = {"space": spec.space, "metric": metric}
    stored = study.user_attrs.get("search")
    if stored is None:
        study.set_user_attr("search", declared)
    elif stored != declared:
        raise RecipeError(
            f"study '{name}' was started with another search (space or metric differ)",
            hint="give this search a new --study name, or restore the recipe's tune section",
        )


def _retry_interrupted(study: Any, storage: Any, echo: Echo) -> None:
    """Trials left RUNNING by a killed process: mark them failed and queue their params again."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        if trial.params:
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
        if echo is not None:
            echo(f"tune: trial {trial.number} was interrupted; it is tried again")


def _finished(study: Any) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def _result(
    study: Any, spec: TuneSpec, metric: str, raw: dict[str, Any], folder: Path, db: Path
) -> TuneResult:
    from optuna.trial import TrialState

    result = TuneResult(study.study_name, study.direction.name.lower(), metric, storage=db)
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.WAITING:
            continue
        result.rows.append(
            TrialRow(
                number=t.number,
                state=t.state.name.lower(),
                value=t.value,
                epochs=t.user_attrs.get("epochs", 0),
                pruned_by=t.user_attrs.get("pruned_by"),
                params=decode(t.params, spec.space),
                run=t.user_attrs.get("run"),
                seconds=t.user_attrs.get("seconds"),
                steps=t.user_attrs.get("steps", 0),
                fit_seconds=t.user_attrs.get("fit_seconds"),
            )
        )
    complete = [r for r in result.rows if r.state == "complete" and r.value is not None]
    if complete:
        pick = max if result.direction == "maximize" else min
        result.best = pick(complete, key=lambda r: r.value)
        best = trial_recipe(raw, result.best.params, f"{raw.get('name', 'tuned')}-tuned")
        text = f"# best of study '{study.study_name}': trial {result.best.number}, "
        text += f"{metric} {result.best.value:.6g}\n" + best.to_yaml()
        result.best_recipe = atomic_write_text(folder / "best.yaml", text)
    return result
