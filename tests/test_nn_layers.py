"""Lazy layers resolve their shapes, activations come by name, Sequential builds eagerly."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from layerwise.errors import RecipeError, ShapeError
from layerwise.nn import (
    AvgPool2d,
    BatchNorm,
    BatchNorm1d,
    BatchNorm2d,
    Conv1d,
    Conv2d,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    GlobalAvgPool,
    LayerNorm,
    Linear,
    MaxPool1d,
    MaxPool2d,
    ReLU,
    Sequential,
    activation,
    materialize,
)

LAZY_CASES = [
    # (layer, input shape, output shape, parameter shapes after build, class it becomes)
    (lambda: Dense(5), (2, 3), (2, 5), [(5, 3), (5,)], nn.Linear),
    (lambda: Dense(5, bias=False), (2, 7, 3), (2, 7, 5), [(5, 3)], nn.Linear),
    (lambda: Conv1d(4, 3, padding="same"), (2, 3, 7), (2, 4, 7), [(4, 3, 3), (4,)], nn.Conv1d),
    (lambda: Conv1d(4, 3, stride=2), (2, 3, 9), (2, 4, 4), [(4, 3, 3), (4,)], nn.Conv1d),
    (lambda: Conv2d(4, 3), (2, 3, 8, 8), (2, 4, 6, 6), [(4, 3, 3, 3), (4,)], nn.Conv2d),
    (
        lambda: Conv2d(4, 3, stride=2, padding="same"),
        (2, 3, 7, 7),
        (2, 4, 4, 4),
        [(4, 3, 3, 3), (4,)],
        nn.Conv2d,
    ),
    (
        lambda: Conv2d(4, 2, padding="same"),
        (2, 1, 7, 7),
        (2, 4, 7, 7),
        [(4, 1, 2, 2), (4,)],
        nn.Conv2d,
    ),
    (lambda: BatchNorm(), (2, 3), (2, 3), [(3,), (3,)], nn.BatchNorm1d),
    (lambda: BatchNorm(), (2, 3, 5), (2, 3, 5), [(3,), (3,)], nn.BatchNorm1d),
    (lambda: BatchNorm(), (2, 6, 4, 4), (2, 6, 4, 4), [(6,), (6,)], nn.BatchNorm2d),
    (lambda: BatchNorm1d(), (2, 3), (2, 3), [(3,), (3,)], nn.BatchNorm1d),
    (lambda: BatchNorm2d(), (2, 6, 4, 4), (2, 6, 4, 4), [(6,), (6,)], nn.BatchNorm2d),
    (lambda: LayerNorm(), (2, 3, 6), (2, 3, 6), [(6,), (6,)], nn.LayerNorm),
    (lambda: LayerNorm(elementwise_affine=False), (2, 6), (2, 6), [], nn.LayerNorm),
]


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize(("make", "shape", "out_shape", "param_shapes", "becomes"), LAZY_CASES)
def test_lazy_layer_resolves_shapes_on_first_call(make, shape, out_shape, param_shapes, becomes):
    layer = make()
    assert not list(layer.parameters()) or layer.has_uninitialized_params()
    out = layer(torch.randn(shape))
    assert tuple(out.shape) == out_shape
    assert [tuple(p.shape) for p in layer.parameters()] == param_shapes
    assert type(layer) is becomes


def test_linear_is_dense():
    assert Linear is Dense


def test_layernorm_normalises_the_last_dim():
    out = LayerNorm()(torch.randn(4, 3, 16) * 5 + 2)
    torch.testing.assert_close(out.mean(-1), torch.zeros(4, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.std(-1, unbiased=False), torch.ones(4, 3), atol=1e-3, rtol=0)


def test_batchnorm_dispatches_by_rank_and_normalises_channels():
    bn = BatchNorm()
    x = torch.randn(8, 3, 5, 5) * 4 + 1
    out = bn(x)
    assert isinstance(bn, nn.BatchNorm2d)
    torch.testing.assert_close(out.mean((0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)


def test_batchnorm_rejects_a_rank_it_cannot_normalise():
    with pytest.raises(ShapeError, match=r"BatchNorm.*got input of shape \(5\)"):
        materialize(nn.Sequential(BatchNorm()), torch.zeros(5))


def test_shape_independent_layers():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    assert MaxPool2d(2)(x).shape == (2, 3, 2, 2)
    assert AvgPool2d(2)(x).shape == (2, 3, 2, 2)
    assert MaxPool1d(2)(x[:, :, 0]).shape == (2, 3, 2)
    assert Flatten()(x).shape == (2, 48)
    assert Dropout(0.5).eval()(x).equal(x)
    torch.testing.assert_close(GlobalAvgPool()(x), x.mean((2, 3)))
    assert GlobalAvgPool()(x[:, :, 0]).shape == (2, 3)
    assert Embedding(10, 4)(torch.tensor([[1, 2, 9]])).shape == (1, 3, 4)


def test_same_padding_with_even_kernel_and_stride_is_refused():
    with pytest.raises(RecipeError, match="even kernel"):
        Conv2d(4, 2, stride=2, padding="same")
    with pytest.raises(RecipeError, match="unknown padding 'full'"):
        Conv1d(4, 3, padding="full")


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("relu", nn.ReLU),
        ("sigmoid", nn.Sigmoid),
        ("tanh", nn.Tanh),
        ("leaky_relu", nn.LeakyReLU),
        ("Leaky-ReLU", nn.LeakyReLU),
        ("gelu", nn.GELU),
        ("softmax", nn.Softmax),
        ("identity", nn.Identity),
        ("linear", nn.Identity),
    ],
)
def test_activation_by_name(name, cls):
    assert type(activation(name)) is cls


def test_softmax_normalises_the_last_dim():
    out = activation("softmax")(torch.randn(3, 5))
    torch.testing.assert_close(out.sum(-1), torch.ones(3))


def test_activation_kwargs_instances_and_classes():
    assert activation("leaky_relu", negative_slope=0.2).negative_slope == 0.2
    template = nn.LeakyReLU(0.3)
    copy = activation(template)
    assert copy is not template and copy.negative_slope == 0.3
    assert isinstance(activation(nn.Mish), nn.Mish)


def test_unknown_activation_has_did_you_mean():
    with pytest.raises(RecipeError, match="unknown activation 'rleu'") as info:
        activation("rleu")
    assert "did you mean 'relu'" in info.value.hint


def test_sequential_builds_eagerly_from_input_shape():
    model = Sequential(Flatten(), Dense(32), ReLU(), Dense(10), input_shape=(1, 8, 8))
    assert model.input_shape == (1, 8, 8)
    assert model[1].weight.shape == (32, 64)
    assert model.training  # the dry run does not leave the model in eval mode
    assert model(torch.zeros(3, 1, 8, 8)).shape == (3, 10)


def test_sequential_accepts_a_list_or_named_layers():
    assert len(Sequential([Dense(4), ReLU()])) == 2
    named = Sequential(OrderedDict(hidden=Dense(4), act=ReLU()), input_shape=(3,))
    assert named.hidden.weight.shape == (4, 3)


def test_sequential_with_embedding_builds_from_integer_zeros():
    model = Sequential(Embedding(20, 8), Flatten(), Dense(2), input_shape=(5,))
    assert model[2].weight.shape == (2, 40)


def test_sequential_rejects_bad_input_shape_and_summary_without_shape():
    with pytest.raises(ShapeError, match="non-positive"):
        Sequential(Dense(2), input_shape=(0, 3))
    with pytest.raises(ShapeError, match="no input_shape"):
        Sequential(Dense(2)).summary()
