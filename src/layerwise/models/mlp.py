"""Multi-layer perceptron: flatten, then (Dense -> [BatchNorm] -> activation -> [Dropout]) blocks.

The first Dense layer is lazy, so the same recipe fits 8x8 digits, 28x28 MNIST or a tabular row.
Layers are named (`fc1`, `bn1`, `act1`, `drop1`, ..., `head`) so summaries and the doctor's
findings can point at them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from layerwise.errors import RecipeError
from layerwise.models.registry import MODELS
from layerwise.nn.activations import activation as make_activation
from layerwise.nn.build import init_weights
from layerwise.nn.layers import BatchNorm, Dense, Dropout, Flatten
from layerwise.nn.sequential import Sequential


def check_classifier_args(num_classes: int, dropout: float) -> None:
    """Shared argument checks for the classifier families."""
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise RecipeError(
            f"num_classes must be a positive integer, got {num_classes!r}",
            hint="leave model.args.num_classes out to take it from the dataset",
        )
    if not 0.0 <= dropout < 1.0:
        raise RecipeError(f"dropout must be in [0, 1), got {dropout!r}", hint="e.g. dropout: 0.2")


def check_widths(field: str, widths: Sequence[int]) -> None:
    """Refuse a layer width below 1: a Dense layer of width 0 trains a model that cannot learn
    (every later layer sees zeros), and a negative one fails deep inside PyTorch."""
    for position, width in enumerate(widths):
        if not isinstance(width, int) or isinstance(width, bool) or width < 1:
            raise RecipeError(
                f"model.args.{field}[{position}] is {width!r}: layer widths must be positive "
                "integers",
                hint=f"e.g. {field}: [64, 32]; leave {field} out for the default",
            )


@MODELS.register("mlp")
def mlp(
    num_classes: int,
    hidden: Sequence[int] = (256, 128),
    activation: str | nn.Module = "relu",
    dropout: float = 0.0,
    batchnorm: bool = False,
    init: str = "he",
    input_shape: Sequence[int] | None = None,
) -> Sequential:
    """An MLP classifier (or regressor with `num_classes=1`) returning logits.

    Args:
        num_classes: output units.
        hidden: widths of the hidden layers.
        activation: an activation name (see `layerwise.nn.activation`) or module.
        dropout: dropout rate after each hidden activation (0 disables it).
        batchnorm: batch norm between each hidden Dense and its activation.
        init: weight init scheme for `init_weights` (`he`, `xavier`, `orthogonal`, `default`).
        input_shape: one sample's shape; builds the model now instead of at the first forward.

    Example:
        >>> model = mlp(10, hidden=(64,), input_shape=(1, 8, 8))
        >>> model.fc1.in_features
        64
    """
    check_classifier_args(num_classes, dropout)
    check_widths("hidden", hidden)
    layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=Flatten())
    for i, width in enumerate(hidden, start=1):
        layers[f"fc{i}"] = Dense(width, bias=not batchnorm)
        if batchnorm:
            layers[f"bn{i}"] = BatchNorm()
        layers[f"act{i}"] = make_activation(activation)
        if dropout:
            layers[f"drop{i}"] = Dropout(dropout)
    layers["head"] = Dense(num_classes)
    model = init_weights(Sequential(layers), init)
    if input_shape is not None:
        model.build(input_shape)
    return model
