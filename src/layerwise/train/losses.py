"""Loss functions, created by name from a recipe.

Every loss is a plain `nn.Module` (a thin subclass of the PyTorch loss), so it can be used in a
hand-written loop. Class weights and `pos_weight` are buffers: move the loss to the model's device
with `loss.to(device)` (the Trainer does this).

Binary and regression losses accept targets shaped `(N,)` or `(N, 1)` against outputs shaped
`(N, 1)` or `(N,)`: a trailing size-1 dimension is added or dropped on the target. Plain PyTorch
would broadcast `(N, 1)` against `(N,)` into an `(N, N)` matrix and silently train on nonsense.

Example:
    >>> loss = create_loss("cross_entropy", label_smoothing=0.1)
    >>> loss(torch.randn(8, 3), torch.randint(0, 3, (8,))).shape
    torch.Size([])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from layerwise.errors import DataError, RecipeError, ShapeError
from layerwise.registry import Registry

LOSSES: Registry[nn.Module] = Registry("loss")


def create_loss(name: str, **kwargs: Any) -> nn.Module:
    """Create the loss registered as `name` (`cross_entropy`, `bce`, `mse`, `mae`, `huber`)."""
    return LOSSES.create(name, **kwargs)


def align_target(output: Tensor, target: Tensor) -> Tensor:
    """Return `target` reshaped to `output`'s shape when they differ only by a trailing 1.

    Shapes are Python ints, so this costs no host sync.
    """
    if target.shape == output.shape:
        return target
    if output.dim() == target.dim() + 1 and output.shape[-1] == 1:
        target = target.unsqueeze(-1)
    elif target.dim() == output.dim() + 1 and target.shape[-1] == 1:
        target = target.squeeze(-1)
    if target.shape != output.shape:
        raise ShapeError(
            f"loss got output of shape {tuple(output.shape)} "
            f"and target of shape {tuple(target.shape)}",
            hint="the model's output and the targets must have the same shape "
            "(up to a trailing dimension of size 1)",
        )
    return target


class BCEWithLogitsLoss(nn.BCEWithLogitsLoss):
    """Binary cross-entropy on logits; integer or float 0/1 targets, `(N,)` or `(N, 1)`."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return super().forward(input, align_target(input, target).to(input.dtype))


class MSELoss(nn.MSELoss):
    """Mean squared error with the `(N,)` vs `(N, 1)` broadcasting trap removed."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return super().forward(input, align_target(input, target).to(input.dtype))


class L1Loss(nn.L1Loss):
    """Mean absolute error with the `(N,)` vs `(N, 1)` broadcasting trap removed."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return super().forward(input, align_target(input, target).to(input.dtype))


class HuberLoss(nn.HuberLoss):
    """Huber loss (quadratic below `delta`, linear above) with aligned target shapes."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return super().forward(input, align_target(input, target).to(input.dtype))


def balanced_class_weights(targets: Any, num_classes: int | None = None) -> Tensor:
    """Weights `n / (k * count_c)` so that every present class contributes equally.

    `k` counts the classes present in `targets` (as scikit-learn's "balanced" does); a class
    absent from `targets` gets weight 1, which only matters if it shows up later.
    """
    y = torch.as_tensor(targets).reshape(-1)
    if y.numel() == 0 or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise DataError(
            f"class_weights='balanced' needs non-empty integer class targets, got dtype {y.dtype} "
            f"with {y.numel()} values",
            hint="pass the training labels as integers, e.g. targets=y_train",
        )
    if int(y.min()) < 0:
        raise DataError(
            "class_weights='balanced' got negative class targets",
            hint="class targets must be indices 0..C-1",
        )
    counts = torch.bincount(y.long().cpu(), minlength=num_classes or 0).double()
    present = counts > 0
    k = int(present.sum())
    weights = torch.where(present, y.numel() / (k * counts.clamp(min=1)), torch.ones_like(counts))
    return weights.float()


def _as_weights(value: Any, what: str) -> Tensor:
    try:
        weights = torch.as_tensor(value, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise RecipeError(
            f"{what} must be a list of numbers, got {value!r}",
            hint=f"e.g. {what}: [1.0, 3.0]",
        ) from exc
    if weights.dim() > 1 or not torch.isfinite(weights).all() or (weights < 0).any():
        raise RecipeError(
            f"{what} must be a flat list of finite non-negative numbers, got {value!r}",
            hint=f"e.g. {what}: [1.0, 3.0]",
        )
    return weights


@LOSSES.register("cross_entropy")
def cross_entropy(
    label_smoothing: float = 0.0,
    class_weights: Sequence[float] | Tensor | str | None = None,
    targets: Any = None,
    num_classes: int | None = None,
) -> nn.Module:
    """Cross-entropy on logits.

    Args:
        label_smoothing: mass in [0, 1) spread uniformly over all classes.
        class_weights: a weight per class, or "balanced" (needs `targets`) to weight each class
            by `n / (k * count)`.
        targets: the training labels, used only by `class_weights="balanced"`.
        num_classes: number of classes, so that "balanced" covers classes absent from `targets`.
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise RecipeError(
            f"label_smoothing must be in [0, 1), got {label_smoothing}",
            hint="typical values are 0.0 (off) or 0.1",
        )
    weight = None
    if isinstance(class_weights, str):
        if class_weights != "balanced":
            raise RecipeError(
                f"unknown class_weights '{class_weights}'",
                hint="use 'balanced' or a list with one weight per class",
            )
        if targets is None:
            raise RecipeError(
                "class_weights='balanced' needs the training targets",
                hint='call create_loss("cross_entropy", class_weights="balanced", targets=y_train)',
            )
        weight = balanced_class_weights(targets, num_classes)
    elif class_weights is not None:
        weight = _as_weights(class_weights, "class_weights")
    if weight is not None and num_classes is not None and weight.numel() != num_classes:
        raise RecipeError(
            f"class_weights has {weight.numel()} entries but there are {num_classes} classes",
            hint="give exactly one weight per class",
        )
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)


@LOSSES.register("bce")
def bce(pos_weight: float | Sequence[float] | Tensor | None = None) -> nn.Module:
    """Binary cross-entropy on logits; `pos_weight` > 1 makes positives count more."""
    weight = None if pos_weight is None else _as_weights(pos_weight, "pos_weight")
    return BCEWithLogitsLoss(pos_weight=weight)


@LOSSES.register("mse")
def mse() -> nn.Module:
    """Mean squared error, for regression."""
    return MSELoss()


@LOSSES.register("mae")
def mae() -> nn.Module:
    """Mean absolute error (L1), for regression that should shrug off outliers."""
    return L1Loss()


@LOSSES.register("huber")
def huber(delta: float = 1.0) -> nn.Module:
    """Huber loss: squared error below `delta`, absolute error above."""
    if not delta > 0:
        raise RecipeError(f"huber delta must be > 0, got {delta}", hint="the default is 1.0")
    return HuberLoss(delta=delta)
