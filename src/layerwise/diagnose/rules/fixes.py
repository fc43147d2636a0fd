"""Recipe patches the rules share: each helper returns the dotted keys that change, or {}.

A helper looks at the raw recipe first, so a patch only holds what actually changes (an empty
patch tells `--auto-fix` there is nothing left to try) and only keys the recipe's model accepts.
What a model family accepts and what it uses when the recipe is silent are read from the family
itself, never copied here: its registered function's signature (`layerwise.models.MODELS`), and
for defaults that depend on another argument (cnn's `variant`) the family module's
`resolve_args(args)`, which the family calls too. Among the built-in families `mlp` and `cnn`
take `dropout`, `batchnorm`, `activation` and `hidden`. Without a recipe (training from Python)
every helper returns {}.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from typing import TYPE_CHECKING, Any

from layerwise.errors import LayerwiseError
from layerwise.models import MODELS

if TYPE_CHECKING:
    from layerwise.diagnose.rules import RuleContext

Patch = dict[str, Any]

DEFAULT_LR = 1e-3  # the recipe schema's default rate (recipe.py, OptimizerSpec.lr)
MAX_DROPOUT = 0.5
BASE_WEIGHT_DECAY = 5e-4  # for optimizers without decay; AdamW's default is 0.01
ADAMW_DEFAULT_WEIGHT_DECAY = 0.01
MAX_WEIGHT_DECAY = 0.1
STRONG_WEIGHT_DECAY = 1e-3  # coupled L2 (sgd, adam, rmsprop) at or above this holds weights back
STRONG_DECOUPLED_WEIGHT_DECAY = 0.1  # AdamW's decoupled decay (its default is 0.01)


def sig(x: float, digits: int = 3) -> float:
    """`x` to 3 significant digits: a patched rate reads 2e-4, not 2.0000000000000004e-4."""
    return float(f"{x:.{digits}g}")


def has_recipe(ctx: RuleContext) -> bool:
    return bool(ctx.recipe)


def family(ctx: RuleContext) -> str | None:
    name = ctx.get("model.name")
    return str(name).lower() if name else None


def family_parameters(name: str | None) -> dict[str, inspect.Parameter]:
    """The parameters of the registered model family `name` ({} when it is not registered)."""
    if not name or name not in MODELS:
        return {}
    return dict(inspect.signature(MODELS.get(name)).parameters)


def family_args(name: str | None, given: dict[str, Any] | None = None) -> dict[str, Any]:
    """The arguments family `name` will use when called with `given`: `given` over the defaults
    of its signature, completed by its module's `resolve_args` when it has one ({} when the
    family is not registered)."""
    parameters = family_parameters(name)
    if not parameters:
        return {}
    args = {k: p.default for k, p in parameters.items() if p.default is not p.empty}
    args.update(given or {})
    resolve = getattr(inspect.getmodule(MODELS.get(name)), "resolve_args", None)
    if resolve is not None:
        # An unknown cnn variant leaves the defaults unresolved: building the model will say so.
        with contextlib.suppress(LayerwiseError):
            args = resolve(args)
    return args


def takes_arg(ctx: RuleContext, key: str) -> bool:
    """Whether the recipe's model family has an argument `key` (model.args.<key>)."""
    return key in family_parameters(family(ctx))


def model_arg(ctx: RuleContext, key: str) -> Any:
    """A model argument as the family will see it: the recipe's value, else the family default."""
    value = ctx.get(f"model.args.{key}")
    if value is not None:
        return value
    given = ctx.get("model.args")
    return family_args(family(ctx), given if isinstance(given, dict) else {}).get(key)


def lr(ctx: RuleContext) -> float | None:
    """The recipe's (peak) learning rate, else the last one logged."""
    value = ctx.get("train.optimizer.lr")
    if value is None and ctx.recipe:
        value = DEFAULT_LR
    if value is None:
        logged = ctx.values("lr")
        value = logged[-1] if logged else None
    return float(value) if value is not None else None


def scale_lr(ctx: RuleContext, factor: float) -> Patch:
    if not has_recipe(ctx):
        return {}
    return {"train.optimizer.lr": sig((lr(ctx) or DEFAULT_LR) * factor)}


def grad_clip(ctx: RuleContext, value: float = 1.0) -> Patch:
    current = ctx.get("train.grad_clip")
    if not has_recipe(ctx) or (current is not None and current <= value):
        return {}
    return {"train.grad_clip": value}


def is_image(ctx: RuleContext) -> bool:
    data = ctx.data or {}
    if "image" in data:
        return bool(data["image"])
    shape = data.get("input_shape")
    if shape is not None:
        return len(shape) == 3
    return str(ctx.get("data.name", "")).lower() in ("digits", "mnist")


def augment(ctx: RuleContext) -> Patch:
    """Label-preserving augmentation for image data that has none yet.

    Colour images (3 channels, natural photos) get crops and flips; grey digits and faces get a
    small affine jitter, since flipping a digit changes its meaning.
    """
    if not has_recipe(ctx) or not is_image(ctx) or ctx.get("data.augment"):
        return {}
    shape = (ctx.data or {}).get("input_shape") or ()
    if len(shape) == 3 and shape[0] == 3:
        size = int(shape[-1])
        spec: dict[str, Any] = {
            "random_crop": {"size": size, "padding": max(1, size // 8)},
            "horizontal_flip": 0.5,
        }
    else:
        spec = {"random_affine": {"degrees": 10, "translate": [0.1, 0.1]}}
    return {"data.augment": spec}


def more_dropout(ctx: RuleContext, step: float = 0.2) -> Patch:
    if not takes_arg(ctx, "dropout"):
        return {}
    current = float(model_arg(ctx, "dropout") or 0.0)
    if current >= MAX_DROPOUT:
        return {}
    return {"model.args.dropout": sig(min(MAX_DROPOUT, current + step))}


def less_dropout(ctx: RuleContext) -> Patch:
    current = float(model_arg(ctx, "dropout") or 0.0) if takes_arg(ctx, "dropout") else 0.0
    return {"model.args.dropout": sig(current / 2)} if current >= 0.3 else {}


def _weight_decay(ctx: RuleContext) -> float:
    value = ctx.get("train.optimizer.weight_decay")
    if value is not None:
        return float(value)
    name = str(ctx.get("train.optimizer.name", "adam")).lower()
    return ADAMW_DEFAULT_WEIGHT_DECAY if name == "adamw" else 0.0


def more_weight_decay(ctx: RuleContext) -> Patch:
    if not has_recipe(ctx):
        return {}
    current = _weight_decay(ctx)
    new = BASE_WEIGHT_DECAY if current <= 0 else min(MAX_WEIGHT_DECAY, current * 5)
    return {"train.optimizer.weight_decay": sig(new)} if new > current else {}


def less_weight_decay(ctx: RuleContext) -> Patch:
    if not has_recipe(ctx):
        return {}
    current = _weight_decay(ctx)
    adamw = str(ctx.get("train.optimizer.name", "adam")).lower() == "adamw"
    strong = STRONG_DECOUPLED_WEIGHT_DECAY if adamw else STRONG_WEIGHT_DECAY
    return {"train.optimizer.weight_decay": sig(current / 10)} if current >= strong else {}


def early_stopping(ctx: RuleContext, patience: int = 5) -> Patch:
    if not has_recipe(ctx) or ctx.get("train.early_stopping"):
        return {}
    monitor = "val_loss" if ctx.has_val else "loss"
    return {"train.early_stopping": {"monitor": monitor, "patience": patience}}


def schedule(ctx: RuleContext, name: str, args: dict[str, Any] | None = None) -> Patch:
    current = ctx.get("train.schedule.name")
    if not has_recipe(ctx) or current == name:
        return {}
    return {"train.schedule": {"name": name, "args": dict(args or {})}}


def reduce_on_plateau(ctx: RuleContext) -> Patch:
    """A plateau schedule watching what this run logs (val_loss needs a validation split)."""
    monitor = "val_loss" if ctx.has_val else "loss"
    return schedule(ctx, "plateau", {"monitor": monitor, "patience": 2})


def activation(ctx: RuleContext, name: str) -> Patch:
    if not takes_arg(ctx, "activation"):
        return {}
    current = str(model_arg(ctx, "activation")).lower().replace("-", "_")
    return {"model.args.activation": name} if current != name else {}


def batchnorm(ctx: RuleContext) -> Patch:
    if not takes_arg(ctx, "batchnorm") or model_arg(ctx, "batchnorm"):
        return {}
    return {"model.args.batchnorm": True}


def he_init(ctx: RuleContext) -> Patch:
    if not has_recipe(ctx):
        return {}
    # Families with an `init` argument use its default (He for the built-in ones) unless told
    # otherwise; others keep PyTorch's own initialisation.
    init = ctx.get("model.init", "default")
    family_init = model_arg(ctx, "init") if takes_arg(ctx, "init") else "default"
    effective = family_init if init == "default" else init
    return {"model.init": "he"} if effective != "he" else {}


def wider(ctx: RuleContext, factor: int = 4, at_least: int = 64) -> Patch:
    """Hidden layers `factor` times wider and at least `at_least` units: doubling a 2-unit
    bottleneck takes rounds that auto-fix does not have."""
    if not takes_arg(ctx, "hidden"):
        return {}
    hidden = model_arg(ctx, "hidden")
    if not hidden:
        return {}
    if isinstance(hidden, int | float):  # one width for every layer (`lstm_lm`, `gru`)
        return {"model.args.hidden": max(int(hidden) * factor, at_least)}
    return {"model.args.hidden": [max(int(w) * factor, at_least) for w in hidden]}


def more_epochs(ctx: RuleContext, factor: int = 2) -> Patch:
    if not has_recipe(ctx):
        return {}
    return {"train.epochs": int(ctx.get("train.epochs", 10)) * factor}


def standardize(ctx: RuleContext) -> Patch:
    if not has_recipe(ctx) or ctx.get("data.standardize"):
        return {}
    if data_fix_refusal("data.standardize", ctx.data) is not None:
        return {}
    return {"data.standardize": True}


# A data fix changes what the model sees, so it must be justified by the data itself, not only
# by a finding: a false data finding would otherwise turn into harm (per-feature
# standardisation of flattened, already normalised MNIST blows its near-empty border pixels up
# to thousands of standard deviations whenever one is lit at test time).
BOUNDED = 1.0  # inputs within ±1 are already normalised (pixels, min-max scaling, one-hot)
TINY = 0.01  # unless they are all this small, which is a scale problem of its own
PIXEL_UNIT_SCALE = 10.0  # pixels within ±10 are scaled already (raw 0-255 pixels are not)


def data_fix_refusal(key: str, profile: dict[str, Any] | None) -> str | None:
    """Why the data fix `key` (`data.standardize`, `data.drop_constant`) is not justified by
    the data `profile` (the doctor's data checks), or None when it may be applied.

    - `data.standardize` is refused when every value already lies within ±1 (and not all
      within ±0.01), or when the inputs are pixels (see `looks_like_pixels`) already on a unit
      scale (every value within ±`PIXEL_UNIT_SCALE`, as MNIST normalised with its mean and std,
      [-0.42, 2.82]): such inputs are already normalised, and standardising their near-constant
      columns one by one only magnifies noise.
    - `data.drop_constant` is refused for pixels: their constant columns are border pixels,
      constant in this training set but not in the world, and an image's grid must keep its
      shape.

    Other keys are never refused here. Without a profile nothing is refused.
    """
    if not profile:
        return None
    scale = profile.get("scale") or {}
    lo, hi = scale.get("min"), scale.get("max")
    pixels = looks_like_pixels(profile)
    if key == "data.standardize" and lo is not None and hi is not None:
        lo, hi = float(lo), float(hi)
        reach = max(abs(lo), abs(hi))
        if lo >= -BOUNDED and hi <= BOUNDED and reach >= TINY:
            return f"inputs already lie within [{lo:.3g}, {hi:.3g}]"
        if pixels and TINY <= reach <= PIXEL_UNIT_SCALE:
            return f"the inputs are pixels already on a unit scale, within [{lo:.3g}, {hi:.3g}]"
    if key == "data.drop_constant" and pixels:
        return "the inputs are image pixels, whose constant columns are the image border"
    return None


def looks_like_pixels(profile: dict[str, Any]) -> bool:
    """Images, or images flattened into a table: a square number (at least 16) of columns.

    A heuristic for tables: a 36-column table of measurements would pass for a 6x6 image. The
    profile holds no per-column layout that could tell them apart; what it costs such a table is
    only that two data fixes are not tried.
    """
    if profile.get("image"):
        return True
    shape = profile.get("input_shape") or []
    if len(shape) != 1:
        return False
    side = math.isqrt(int(shape[0]))
    return side >= 4 and side * side == int(shape[0])


def label_smoothing(ctx: RuleContext, value: float = 0.1) -> Patch:
    if not has_recipe(ctx) or not uses_cross_entropy(ctx):
        return {}
    current = float(ctx.get("train.loss.label_smoothing", 0.0) or 0.0)
    return {"train.loss.label_smoothing": value} if current < value else {}


def uses_cross_entropy(ctx: RuleContext) -> bool:
    return str(ctx.get("train.loss.name", "cross_entropy")).lower() == "cross_entropy"


def recipe_flag(ctx: RuleContext, dotted: str) -> Patch:
    """`{dotted: True}` unless the recipe already sets it."""
    if not has_recipe(ctx) or ctx.get(dotted):
        return {}
    return {dotted: True}


def merge(*patches: Patch) -> Patch:
    merged: Patch = {}
    for patch in patches:
        merged.update(patch)
    return merged
