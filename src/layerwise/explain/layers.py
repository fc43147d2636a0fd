"""What each layer learned: the first layer's filters, and every conv layer's feature maps for
one input."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def first_layer_filters(
    model: nn.Module, image_shape: tuple[int, ...]
) -> tuple[str, Tensor] | None:
    """The first conv layer's kernels (out, in, k, k), or, for a model whose first weighted
    layer is a Dense one over the whole image (an MLP), each unit's weights shaped as the image
    (units, C, H, W): the pattern that unit responds to most. None for anything else."""
    pixels = math.prod(image_shape)
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module.weight.detach()
        if isinstance(module, nn.Linear):
            if module.in_features != pixels:
                return None
            return name, module.weight.detach().reshape(-1, *image_shape)
    return None


def feature_maps(model: nn.Module, x: Tensor) -> list[tuple[str, Tensor]]:
    """Every conv layer's output for `x` (batch of 1), as (name, (C, h, w)), in forward order."""
    seen: list[tuple[str, Tensor]] = []
    hooks = [
        module.register_forward_hook(
            lambda _m, _i, out, name=name: seen.append((name, out.detach()[0]))
        )
        for name, module in model.named_modules()
        if isinstance(module, nn.Conv2d)
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return seen
