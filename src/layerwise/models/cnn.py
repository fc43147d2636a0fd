"""Small convolutional classifiers: a LeNet-style net and a compact VGG-style net.

Both infer their input channels lazily and fit any image of 4x4 pixels or more (8x8 digits,
28x28 MNIST, 32x32 CIFAR): convolutions use padding="same" and pooling rounds up (ceil_mode), so
no feature map shrinks to zero.

- `lenet`: two (conv 5x5 -> act -> max-pool) blocks, flatten, Dense 120 -> 84 -> logits.
- `strided`: only stride-2 (conv -> BN -> act) units, 5x5 for the first (at stride 2 a 3x3
  window misses part of a pen stroke) and 3x3 after, then flatten and a linear head: no pooling
  and no full-resolution layer, so a 28x28 image costs about 0.61M MACs with 16-32-64 channels.
  The fastest net here that still learns MNIST to 99% in one epoch (`recipes/mnist_fast.yaml`).
- `vgg`: a stride-2 3x3 stem, then blocks of (conv 3x3 -> BN -> act) x 2, max-pooling between
  blocks, global average pooling, dropout and a linear head. On a 2-core CPU small nets are bound
  by memory traffic, so halving the resolution in the stem costs little accuracy and saves most of
  the time: with 32-64-128 channels a 28x28 image costs about 8.5M MACs.

Layers are named (`block1.conv1`, `block1.bn1`, ..., `head`) for summaries and the doctor.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from torch import nn

from layerwise.errors import RecipeError, did_you_mean
from layerwise.models.mlp import check_classifier_args, check_widths
from layerwise.models.registry import MODELS
from layerwise.nn.activations import activation as make_activation
from layerwise.nn.build import init_weights
from layerwise.nn.layers import BatchNorm, Conv2d, Dense, Dropout, Flatten, GlobalAvgPool
from layerwise.nn.sequential import Sequential

# The defaults of each variant: `cnn` fills the arguments left None from here (`resolve_args`),
# and so does the doctor when it patches a recipe, so the two cannot disagree.
VARIANTS = {
    "lenet": {"channels": (6, 16), "hidden": (120, 84), "dropout": 0.0, "batchnorm": False},
    "vgg": {"channels": (32, 64, 128), "hidden": (), "dropout": 0.2, "batchnorm": True},
    "strided": {"channels": (16, 32, 64), "hidden": (), "dropout": 0.0, "batchnorm": True},
}


def resolve_args(args: dict[str, Any]) -> dict[str, Any]:
    """`cnn`'s arguments as it will use them: those left None (or out) filled from `VARIANTS`.

    `args` must name the `variant`. An unknown variant raises `RecipeError`.

    Example:
        >>> resolve_args({"variant": "vgg", "dropout": 0.5})["hidden"]
        ()
    """
    variant = args["variant"]
    key = str(variant).lower()
    if key not in VARIANTS:
        raise RecipeError(f"unknown cnn variant '{variant}'", hint=did_you_mean(key, VARIANTS))
    resolved = {**args, "variant": key}
    for name, default in VARIANTS[key].items():
        if resolved.get(name) is None:
            resolved[name] = default
    return resolved


def _conv_unit(
    channels: int, kernel: int, batchnorm: bool, activation: str | nn.Module, stride: int = 1
) -> list[tuple[str, nn.Module]]:
    """conv -> [bn] -> act, returned as (suffix, layer) pairs for naming."""
    unit: list[tuple[str, nn.Module]] = [
        ("conv", Conv2d(channels, kernel, stride=stride, padding="same", bias=not batchnorm))
    ]
    if batchnorm:
        unit.append(("bn", BatchNorm()))
    unit.append(("act", make_activation(activation)))
    return unit


def _lenet(
    channels: Sequence[int], hidden: Sequence[int], dropout: float, batchnorm: bool, act
) -> OrderedDict[str, nn.Module]:
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for i, width in enumerate(channels, start=1):
        block = OrderedDict(_conv_unit(width, 5, batchnorm, act))
        block["pool"] = nn.MaxPool2d(2, ceil_mode=True)
        layers[f"block{i}"] = nn.Sequential(block)
    layers["flatten"] = Flatten()
    for j, width in enumerate(hidden, start=1):
        fc: OrderedDict[str, nn.Module] = OrderedDict(dense=Dense(width), act=make_activation(act))
        if dropout:
            fc["drop"] = Dropout(dropout)
        layers[f"fc{j}"] = nn.Sequential(fc)
    return layers


def _vgg(
    channels: Sequence[int], hidden: Sequence[int], dropout: float, batchnorm: bool, act
) -> OrderedDict[str, nn.Module]:
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    layers["stem"] = nn.Sequential(OrderedDict(_conv_unit(channels[0], 3, batchnorm, act, 2)))
    for i, width in enumerate(channels, start=1):
        block: OrderedDict[str, nn.Module] = OrderedDict()
        for k in (1, 2):
            for suffix, layer in _conv_unit(width, 3, batchnorm, act):
                block[f"{suffix}{k}"] = layer
        if i < len(channels):
            block["pool"] = nn.MaxPool2d(2, ceil_mode=True)
        layers[f"block{i}"] = nn.Sequential(block)
    layers["pool"] = GlobalAvgPool()
    return _add_hidden_and_dropout(layers, hidden, dropout, act)


def _strided(
    channels: Sequence[int], hidden: Sequence[int], dropout: float, batchnorm: bool, act
) -> OrderedDict[str, nn.Module]:
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for i, width in enumerate(channels, start=1):
        kernel = 5 if i == 1 else 3
        layers[f"block{i}"] = nn.Sequential(
            OrderedDict(_conv_unit(width, kernel, batchnorm, act, 2))
        )
    layers["flatten"] = Flatten()
    return _add_hidden_and_dropout(layers, hidden, dropout, act)


def _add_hidden_and_dropout(
    layers: OrderedDict[str, nn.Module], hidden: Sequence[int], dropout: float, act
) -> OrderedDict[str, nn.Module]:
    """vgg's and strided's end: Dense -> act per hidden width, then dropout before the head."""
    for j, width in enumerate(hidden, start=1):
        layers[f"fc{j}"] = nn.Sequential(OrderedDict(dense=Dense(width), act=make_activation(act)))
    if dropout:
        layers["drop"] = Dropout(dropout)
    return layers


BUILDERS = {"lenet": _lenet, "vgg": _vgg, "strided": _strided}


@MODELS.register("cnn")
def cnn(
    num_classes: int,
    variant: str = "lenet",
    channels: Sequence[int] | None = None,
    hidden: Sequence[int] | None = None,
    dropout: float | None = None,
    batchnorm: bool | None = None,
    activation: str | nn.Module = "relu",
    init: str = "he",
    input_shape: Sequence[int] | None = None,
) -> Sequential:
    """A CNN classifier returning logits; `None` arguments take the variant's defaults.

    Args:
        num_classes: output units.
        variant: `lenet` (channels (6, 16), Dense (120, 84), no BN), `vgg` (channels
            (32, 64, 128), BN, dropout 0.2 before the head, global average pooling) or `strided`
            (channels (16, 32, 64), each a stride-2 conv with BN, the first 5x5, flattened into the
            head).
        channels: conv widths, one per block.
        hidden: widths of Dense layers before the head.
        dropout: dropout rate (lenet: after each hidden Dense; vgg, strided: before the head).
        batchnorm: batch norm after every convolution.
        activation: an activation name or module.
        init: weight init scheme for `init_weights`.
        input_shape: one sample's shape, e.g. (1, 28, 28); builds the model now.

    Example:
        >>> model = cnn(10, variant="vgg", input_shape=(1, 8, 8))
        >>> model(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """
    given = {"channels": channels, "hidden": hidden, "dropout": dropout, "batchnorm": batchnorm}
    args = resolve_args({"variant": variant, **given})
    key = args["variant"]
    channels, hidden = tuple(args["channels"]), tuple(args["hidden"])
    dropout, batchnorm = float(args["dropout"]), bool(args["batchnorm"])
    check_classifier_args(num_classes, dropout)
    if not channels:
        raise RecipeError("cnn needs at least one conv block", hint="e.g. channels: [32, 64]")
    check_widths("channels", channels)
    check_widths("hidden", hidden)
    layers = BUILDERS[key](channels, hidden, dropout, batchnorm, activation)
    layers["head"] = Dense(num_classes)
    model = init_weights(Sequential(layers), init)
    if input_shape is not None:
        model.build(input_shape)
    return model
