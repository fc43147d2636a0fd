"""Data augmentation from a few lines of recipe.

A spec names torchvision v2 transforms in the order they run, each with its arguments:

    augment:
      random_crop: {size: 28, padding: 2}
      random_rotation: 10          # a bare value fills the main argument (here `degrees`)
      horizontal_flip: 0.5         # probability
      random_erasing: 0.25

A list keeps the same meaning (`["horizontal_flip", {"random_rotation": 10}]`), and `false`
switches an entry off, so `--set augment.horizontal_flip=false` works. The pipeline works on
float tensors of shape (C, H, W), one sample at a time, as the batchers call it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from layerwise.errors import RecipeError, did_you_mean

# name -> (torchvision.transforms.v2 class name, the argument a bare value fills). Names, not
# classes: importing torchvision costs seconds, and most runs (tables, text, sound) never augment.
TRANSFORMS: dict[str, tuple[str, str | None]] = {
    "random_crop": ("RandomCrop", "size"),
    "random_resized_crop": ("RandomResizedCrop", "size"),
    "center_crop": ("CenterCrop", "size"),
    "resize": ("Resize", "size"),
    "pad": ("Pad", "padding"),
    "random_rotation": ("RandomRotation", "degrees"),
    "random_affine": ("RandomAffine", "degrees"),
    "random_perspective": ("RandomPerspective", "distortion_scale"),
    "horizontal_flip": ("RandomHorizontalFlip", "p"),
    "vertical_flip": ("RandomVerticalFlip", "p"),
    "color_jitter": ("ColorJitter", "brightness"),
    "gaussian_blur": ("GaussianBlur", "kernel_size"),
    "gaussian_noise": ("GaussianNoise", "sigma"),
    "random_erasing": ("RandomErasing", "p"),
    "normalize": ("Normalize", None),
}

Spec = dict[str, Any] | list[Any] | Callable[..., Any] | None


def augmentations(spec: Spec) -> Callable[..., Any] | None:
    """Build a `v2.Compose` from `spec`; `None` (or an empty spec) means no augmentation.

    A callable is returned unchanged, so Python users can pass their own pipeline wherever a
    spec is accepted.

    Example:
        >>> aug = augmentations({"random_crop": {"size": 28, "padding": 2}, "horizontal_flip": 0.5})
        >>> aug(torch.rand(1, 28, 28)).shape
        torch.Size([1, 28, 28])
    """
    if spec is None or callable(spec):
        return spec
    if isinstance(spec, dict):
        entries = list(spec.items())
    elif isinstance(spec, list):
        entries = [_entry(item) for item in spec]
    else:
        raise RecipeError(
            f"augment must be a mapping or a list of transforms, got {type(spec).__name__}",
            hint="e.g. augment: {random_crop: {size: 28, padding: 2}, horizontal_flip: 0.5}",
        )
    steps = [_build(name, args) for name, args in entries if args is not False]
    return _v2().Compose(steps) if steps else None


def transform_class(name: str) -> type:
    """The torchvision v2 class behind the augmentation `name` (a key of `TRANSFORMS`)."""
    return getattr(_v2(), TRANSFORMS[name][0])


def _v2() -> Any:
    from torchvision.transforms import v2

    return v2


def _entry(item: Any) -> tuple[str, Any]:
    if isinstance(item, str):
        return item, None
    if isinstance(item, dict) and len(item) == 1:
        return next(iter(item.items()))
    raise RecipeError(
        f"augment list entry {item!r} must be a name or a one-key mapping",
        hint="e.g. [horizontal_flip, {random_rotation: 10}]",
    )


def _build(name: str, args: Any) -> Callable[..., Any]:
    key = str(name).lower()
    if key not in TRANSFORMS:
        raise RecipeError(f"unknown augmentation '{name}'", hint=did_you_mean(key, TRANSFORMS))
    cls, main = transform_class(key), TRANSFORMS[key][1]
    if args is None or args is True:
        kwargs: dict[str, Any] = {}
    elif isinstance(args, dict):
        kwargs = dict(args)
    elif main is not None:
        kwargs = {main: args}
    else:
        raise RecipeError(
            f"augmentation '{key}' needs named arguments, got {args!r}",
            hint=f"write {key}: {{{_params(cls)}}}",
        )
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise RecipeError(
            f"bad arguments for augmentation '{key}': {exc}",
            hint=f"{key} ({cls.__name__}) takes: {_params(cls)}",
        ) from exc


def _params(cls: type) -> str:
    names = [p for p in inspect.signature(cls).parameters if p not in ("self", "args", "kwargs")]
    return ", ".join(names)
