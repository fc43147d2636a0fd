"""L1 and L2 penalties on a model's weights, added to the loss.

Biases and normalisation parameters are left out (the same rule as the optimizer's
`decay_norm_and_bias=False`), as Keras' kernel regularizers do. `Regularizer` finds the weights
once; each call is then a few multi-tensor (foreach) kernels forward and backward, with no host
sync. Measured per training step on this project's 2-core CPU: +4% for an MNIST-sized CNN; +20%
for a worst case of 20 tiny 64x64 layers, where a plain-autograd sum over the weights costs +47%.

Example:
    >>> reg = Regularizer(model, l2=1e-4)
    >>> loss = criterion(model(x), y) + reg()
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from layerwise.errors import RecipeError
from layerwise.train.optimizers import split_decay


class Regularizer:
    """Callable returning `l1 * sum|w| + l2 * sum w^2` over the model's trainable weights.

    Args:
        model: the model; call after lazy layers are materialised so shapes are known.
        l1: coefficient of the sum of absolute weights.
        l2: coefficient of the sum of squared weights (note: no 1/2 factor, as in Keras).
    """

    def __init__(self, model: nn.Module, l1: float = 0.0, l2: float = 0.0) -> None:
        for label, value in (("l1", l1), ("l2", l2)):
            if not value >= 0:
                raise RecipeError(
                    f"{label} regularization must be >= 0, got {value}",
                    hint="typical values are 1e-5 to 1e-3, or 0 to turn it off",
                )
        self.l1 = float(l1)
        self.l2 = float(l2)
        weights, _ = split_decay(model)
        self.weights = [w for w in weights if w.requires_grad]

    @property
    def active(self) -> bool:
        return bool(self.weights) and (self.l1 > 0 or self.l2 > 0)

    def __call__(self) -> Tensor | None:
        """The penalty as a 0-d tensor on the weights' device, or None when there is none."""
        if not self.active:
            return None
        return _Penalty.apply(self.l1, self.l2, *self.weights)


class _Penalty(torch.autograd.Function):
    """`l1 * sum|w| + l2 * sum w^2` with a multi-tensor backward.

    Autograd's own backward of `torch._foreach_norm` runs tensor by tensor; the gradient
    `l1 * sign(w) + 2 * l2 * w` written with foreach ops made forward plus backward ~30% faster
    (440 vs 640 us for 20 tensors of 64x64; 920 us for a per-tensor Python sum).
    """

    @staticmethod
    def forward(ctx: Any, l1: float, l2: float, *weights: Tensor) -> Tensor:
        ctx.l1, ctx.l2 = l1, l2
        ctx.save_for_backward(*weights)
        term = weights[0].new_zeros(())
        if l1 > 0:
            term = term + l1 * torch.stack(torch._foreach_norm(weights, 1)).sum()
        if l2 > 0:
            term = term + l2 * torch.stack(torch._foreach_norm(weights, 2)).square().sum()
        return term

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        weights = ctx.saved_tensors
        grads = torch._foreach_mul(weights, 2 * ctx.l2)
        if ctx.l1 > 0:
            torch._foreach_add_(grads, torch._foreach_sign(weights), alpha=ctx.l1)
        torch._foreach_mul_(grads, grad)
        return (None, None, *grads)


def regularization_term(model: nn.Module, l1: float = 0.0, l2: float = 0.0) -> Tensor | None:
    """One-off penalty; in a training loop build a `Regularizer` once and call it instead."""
    return Regularizer(model, l1, l2)()


def l1_penalty(model: nn.Module) -> Tensor:
    """Sum of absolute values of the model's weights (not biases or norm parameters)."""
    term = Regularizer(model, l1=1.0)()
    return term if term is not None else torch.zeros(())


def l2_penalty(model: nn.Module) -> Tensor:
    """Sum of squares of the model's weights (not biases or norm parameters)."""
    term = Regularizer(model, l2=1.0)()
    return term if term is not None else torch.zeros(())
