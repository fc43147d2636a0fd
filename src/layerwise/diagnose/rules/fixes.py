"""Recipe patches the rules share: each helper returns the dotted keys that change, or {}.

A helper looks at the raw recipe first, so a patch only holds what actually changes (an empty
patch tells `--auto-fix` there is nothing left to try) and only keys the recipe's model accepts:
`model.args.dropout`, `batchnorm`, `activation` and `hidden` exist for the `mlp` and `cnn`
families only. Without a recipe (training from Python) every helper returns {}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from layerwise.diagnose.rules import RuleContext

Patch = dict[str, Any]

# Defaults of the recipe schema and the model families (see recipe.py, models/mlp.py, cnn.py).
DEFAULT_LR = 1e-3
FAMILIES_WITH_ARGS = ("mlp", "cnn")
MLP_DEFAULT_HIDDEN = (256, 128)
CNN_DEFAULTS = {
    "lenet": {"dropout": 0.0, "batchnorm": False, "hidden": (120, 84)},
    "vgg": {"dropout": 0.2, "batchnorm": True, "hidden": ()},
}
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


def model_arg(ctx: RuleContext, key: str) -> Any:
    """A model argument as the family will see it: the recipe's value, else the family default."""
    value = ctx.get(f"model.args.{key}")
    if value is not None:
        return value
    if family(ctx) == "cnn":
        variant = str(ctx.get("model.args.variant", "lenet")).lower()
        return CNN_DEFAULTS.get(variant, {}).get(key)
    if family(ctx) == "mlp":
        return {"dropout": 0.0, "batchnorm": False, "hidden": MLP_DEFAULT_HIDDEN}.get(key)
    return None


def takes_model_args(ctx: RuleContext) -> bool:
    return family(ctx) in FAMILIES_WITH_ARGS


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
    if not takes_model_args(ctx):
        return {}
    current = float(model_arg(ctx, "dropout") or 0.0)
    if current >= MAX_DROPOUT:
        return {}
    return {"model.args.dropout": sig(min(MAX_DROPOUT, current + step))}


def less_dropout(ctx: RuleContext) -> Patch:
    current = float(model_arg(ctx, "dropout") or 0.0) if takes_model_args(ctx) else 0.0
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
    if not takes_model_args(ctx):
        return {}
    current = str(ctx.get("model.args.activation", "relu")).lower().replace("-", "_")
    return {"model.args.activation": name} if current != name else {}


def batchnorm(ctx: RuleContext) -> Patch:
    if not takes_model_args(ctx) or model_arg(ctx, "batchnorm"):
        return {}
    return {"model.args.batchnorm": True}


def he_init(ctx: RuleContext) -> Patch:
    if not has_recipe(ctx):
        return {}
    # The built-in families already use He init unless told otherwise.
    init = ctx.get("model.init", "default")
    family_init = ctx.get("model.args.init", "he" if takes_model_args(ctx) else "default")
    effective = family_init if init == "default" else init
    return {"model.init": "he"} if effective != "he" else {}


def wider(ctx: RuleContext, factor: int = 4, at_least: int = 64) -> Patch:
    """Hidden layers `factor` times wider and at least `at_least` units: doubling a 2-unit
    bottleneck takes rounds that auto-fix does not have."""
    if not takes_model_args(ctx):
        return {}
    hidden = model_arg(ctx, "hidden")
    if not hidden:
        return {}
    return {"model.args.hidden": [max(int(w) * factor, at_least) for w in hidden]}


def more_epochs(ctx: RuleContext, factor: int = 2) -> Patch:
    if not has_recipe(ctx):
        return {}
    return {"train.epochs": int(ctx.get("train.epochs", 10)) * factor}


def standardize(ctx: RuleContext) -> Patch:
    if not has_recipe(ctx) or ctx.get("data.standardize"):
        return {}
    return {"data.standardize": True}


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
