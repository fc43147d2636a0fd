"""Activations by name, so a recipe can say `activation: gelu` and get a module.

The classes are PyTorch's own; `activation(name)` only maps names to them and turns a typo into a
`RecipeError` with a did-you-mean hint. Softmax normalises the last dim (Keras' convention).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

from torch import nn

from layerwise.errors import RecipeError, did_you_mean

ReLU = nn.ReLU
LeakyReLU = nn.LeakyReLU
Sigmoid = nn.Sigmoid
Tanh = nn.Tanh
GELU = nn.GELU
ELU = nn.ELU
SELU = nn.SELU
SiLU = nn.SiLU
Softplus = nn.Softplus
Softmax = nn.Softmax
Identity = nn.Identity

ACTIVATIONS: dict[str, Callable[..., nn.Module]] = {
    "relu": ReLU,
    "leaky_relu": LeakyReLU,
    "sigmoid": Sigmoid,
    "tanh": Tanh,
    "gelu": GELU,
    "elu": ELU,
    "selu": SELU,
    "silu": SiLU,
    "swish": SiLU,
    "softplus": Softplus,
    "softmax": lambda **kw: Softmax(dim=kw.pop("dim", -1), **kw),
    "identity": Identity,
    "linear": Identity,
}


def activation(name: str | nn.Module | type[nn.Module], **kwargs: object) -> nn.Module:
    """Return a fresh activation module for `name` (case-insensitive; "leaky-relu" works too).

    A module instance is copied and a module class instantiated, so model families can take
    `activation="relu"`, `activation=nn.Mish` or `activation=nn.LeakyReLU(0.1)` alike and every
    layer still gets its own module (hooks and the doctor see each one separately). Extra keyword
    arguments go to the class (e.g. `activation("leaky_relu", negative_slope=0.2)`).
    """
    if isinstance(name, nn.Module):
        return copy.deepcopy(name)
    if isinstance(name, type) and issubclass(name, nn.Module):
        return name(**kwargs)
    key = str(name).strip().lower().replace("-", "_")
    if key not in ACTIVATIONS:
        raise RecipeError(f"unknown activation '{name}'", hint=did_you_mean(key, ACTIVATIONS))
    return ACTIVATIONS[key](**kwargs)
