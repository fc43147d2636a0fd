"""The search space a recipe declares in `tune.space`, as Optuna suggestions and recipe patches.

Each entry maps a dotted recipe key to one kind of dimension (validated by `layerwise.recipe`):
`uniform: [low, high]`, `log_uniform: [low, high]`, `int: [low, high]` or `choice: [...]`.
Optuna's categorical values must be plain scalars, while a choice may hold lists (layer widths),
so choices are offered to Optuna as their JSON text and decoded back here.
"""

from __future__ import annotations

import json
from typing import Any

from layerwise.diagnose.findings import apply_patch
from layerwise.errors import RecipeError
from layerwise.recipe import Recipe, validate_recipe


def suggest(trial: Any, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Ask an Optuna trial for one point of the space: {dotted key: recipe value}."""
    params: dict[str, Any] = {}
    for key, spec in space.items():
        kind, values = next(iter(spec.items()))
        if kind == "uniform":
            params[key] = trial.suggest_float(key, values[0], values[1])
        elif kind == "log_uniform":
            params[key] = trial.suggest_float(key, values[0], values[1], log=True)
        elif kind == "int":
            params[key] = trial.suggest_int(key, values[0], values[1])
        else:
            options = [json.dumps(option) for option in values]
            params[key] = json.loads(trial.suggest_categorical(key, options))
    return params


def decode(params: dict[str, Any], space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Optuna's stored params (choices as JSON text) as recipe values."""
    return {
        key: json.loads(value) if "choice" in space.get(key, {}) else value
        for key, value in params.items()
    }


def trial_recipe(raw: dict[str, Any], params: dict[str, Any], name: str) -> Recipe:
    """The base recipe with one point of the space applied, renamed, without its `tune`."""
    patched = apply_patch(raw, params)
    patched.pop("tune", None)
    patched["name"] = name
    return validate_recipe(patched, source=f"tune trial '{name}'")


def check_space(raw: dict[str, Any], space: dict[str, dict[str, Any]]) -> None:
    """Refuse before the first trial a space whose keys the recipe does not have: each key is
    set to its first value in turn and the recipe validated (`train.optimizer.lrr` is an unknown
    key with a did-you-mean). Keys under free-form `args` are checked when the model is built."""
    for key, spec in space.items():
        kind, values = next(iter(spec.items()))
        try:
            trial_recipe(raw, {key: values[0]}, "space-check")
        except RecipeError as exc:
            raise RecipeError(
                f"tune.space.{key} ({kind} {values!r}) does not make a valid recipe: "
                + exc.message.partition(": ")[2],
                hint=exc.hint,
            ) from None
