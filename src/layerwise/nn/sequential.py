"""A `torch.nn.Sequential` that can be built eagerly from an input shape, as Keras' is.

    model = Sequential(Conv2d(32, 3, padding="same"), ReLU(), GlobalAvgPool(), Dense(10),
                       input_shape=(1, 28, 28))

Without `input_shape` the lazy layers are built by the first forward (or `materialize`). It is a
plain `nn.Sequential` in every other respect: indexing, slicing, `state_dict`, `append`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from layerwise.errors import ShapeError
from layerwise.nn.build import materialize
from layerwise.nn.summary import ModelSummary, summary


class Sequential(nn.Sequential):
    """Layers applied in order; `input_shape` (without the batch dim) builds all lazy layers now.

    Accepts layers as arguments, a single list of layers, or an `OrderedDict` of named layers (the
    names then appear in summaries, errors and the doctor's findings instead of indices).

    Example:
        >>> model = Sequential(Flatten(), Dense(32), ReLU(), Dense(10), input_shape=(1, 8, 8))
        >>> model[1].weight.shape
        torch.Size([32, 64])
    """

    def __init__(self, *layers: Any, input_shape: Sequence[int] | None = None) -> None:
        if len(layers) == 1 and isinstance(layers[0], list | tuple):
            layers = tuple(layers[0])
        if len(layers) == 1 and isinstance(layers[0], OrderedDict | dict):
            super().__init__(OrderedDict(layers[0]))
        else:
            super().__init__(*layers)
        self.input_shape: tuple[int, ...] | None = None
        if input_shape is not None:
            self.build(input_shape)

    def build(self, input_shape: Sequence[int]) -> Sequential:
        """Create every lazy parameter for inputs of shape (N, *input_shape); returns self."""
        shape = tuple(int(d) for d in input_shape)
        if any(d <= 0 for d in shape):
            raise ShapeError(
                f"input_shape {shape} has a non-positive dim",
                hint="give the shape of one sample without the batch dim, e.g. (1, 28, 28)",
            )
        first = next(iter(self), None)
        dtype = torch.long if isinstance(first, nn.Embedding) else torch.get_default_dtype()
        # input_shape is set first so a mismatch inside the dry run is reported against it
        self.input_shape = shape
        materialize(self, torch.zeros((1, *shape), dtype=dtype))
        return self

    def summary(self, input_shape: Sequence[int] | None = None) -> ModelSummary:
        """Summary for one sample of `input_shape` (no batch dim; default: the built-with one)."""
        shape = input_shape if input_shape is not None else self.input_shape
        if shape is None:
            raise ShapeError(
                "this Sequential has no input_shape to summarise with",
                hint="call .summary(input_shape) or build it with Sequential(..., input_shape=...)",
            )
        return summary(self, (1, *shape))
