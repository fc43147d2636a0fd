"""materialize / check_input explain shape errors; init_weights sets the promised statistics."""

from __future__ import annotations

import copy
import math
from collections import OrderedDict

import pytest
import torch
from torch import nn

from layerwise.errors import RecipeError, ShapeError
from layerwise.nn import (
    BatchNorm,
    Conv2d,
    Dense,
    Flatten,
    GlobalAvgPool,
    ReLU,
    Sequential,
    check_input,
    explain_shape_error,
    init_weights,
    materialize,
)


def mnist_cnn() -> Sequential:
    return Sequential(
        OrderedDict(
            conv=Conv2d(8, 3, padding="same"),
            act=ReLU(),
            flatten=Flatten(),
            head=Dense(10),
        ),
        input_shape=(1, 28, 28),
    )


def test_linear_fed_the_wrong_width():
    model = nn.Sequential(OrderedDict(flatten=nn.Flatten(), classifier=nn.Linear(64, 10)))
    with pytest.raises(ShapeError) as info:
        check_input(model, torch.zeros(4, 100))
    message = str(info.value)
    assert "layer 'classifier' (Linear)" in message
    assert "(4, 100)" in message and "(..., 64)" in message


def test_conv_fed_the_wrong_channel_count():
    model = mnist_cnn()
    with pytest.raises(ShapeError) as info:
        check_input(model, torch.zeros(2, 3, 28, 28))
    error = info.value
    assert "layer 'conv' (Conv2d)" in error.message
    assert "(2, 3, 28, 28)" in error.message and "(N, 1, H, W)" in error.message
    assert "the model expects inputs of shape (N, 1, 28, 28)" in error.hint
    assert isinstance(error.__cause__, RuntimeError)


def test_wrong_image_size_blames_the_layer_and_names_the_built_shape():
    with pytest.raises(ShapeError) as info:
        check_input(mnist_cnn(), torch.zeros(2, 1, 32, 32))
    assert "layer 'head' (Linear) got input of shape (2, 8192) but expects (..., 6272)" in str(
        info.value
    )
    assert "(N, 1, 28, 28) but got (2, 1, 32, 32)" in info.value.hint


def test_nested_layers_are_named_by_qualified_name():
    inner = nn.Sequential(OrderedDict(proj=nn.Linear(6, 3)))
    model = nn.Sequential(OrderedDict(body=inner))
    with pytest.raises(ShapeError, match=r"layer 'body\.proj' \(Linear\)"):
        check_input(model, torch.zeros(2, 5))


def test_first_layer_sets_the_expected_shape_when_nothing_else_does():
    model = nn.Sequential(nn.Conv2d(3, 4, 3))
    with pytest.raises(ShapeError) as info:
        check_input(model, torch.zeros(2, 1, 8, 8))
    assert "the model expects inputs of shape (N, 3, H, W)" in info.value.hint


def test_materialize_reports_the_failing_layer_while_building():
    model = nn.Sequential(Flatten(), Dense(8), nn.Linear(10, 2))
    with pytest.raises(ShapeError, match=r"layer '2' \(Linear\) got input of shape \(2, 8\)"):
        materialize(model, torch.zeros(2, 1, 4, 4))


def test_dtype_batch_of_one_and_small_input_get_their_own_hints():
    model = mnist_cnn()
    with pytest.raises(ShapeError, match="dtype float64") as info:
        check_input(model, torch.zeros(2, 1, 28, 28, dtype=torch.float64))
    assert "x.float()" in info.value.hint

    bn = Sequential(Dense(4), BatchNorm(), input_shape=(3,)).train()
    with pytest.raises(ShapeError, match=r"layer '1' \(BatchNorm1d\)") as info:
        check_input(bn, torch.zeros(1, 3))
    assert "at least 2 samples" in info.value.hint

    valid = nn.Sequential(nn.Conv2d(1, 2, 5))
    with pytest.raises(ShapeError) as info:
        check_input(valid, torch.zeros(1, 1, 3, 3))
    assert "smaller than its kernel" in info.value.hint


def test_check_input_passes_outputs_and_foreign_errors_through():
    model = mnist_cnn().eval()
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(check_input(model, x), model(x))

    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        check_input(Broken(), x)
    # an error that does not come back when the model runs alone (e.g. from the loss) is not ours
    foreign = RuntimeError("size mismatch between input and target")
    assert explain_shape_error(model, x, foreign) is None


def test_materialize_restores_modes_and_leaves_stats_alone():
    model = Sequential(Conv2d(4, 3), BatchNorm(), GlobalAvgPool(), Dense(2))
    model.train()
    model[3].eval()  # a user's per-module choice must survive
    built = materialize(model, torch.randn(5, 2, 6, 6))
    assert built is model
    assert not any(isinstance(p, nn.parameter.UninitializedParameter) for p in model.parameters())
    assert model.training and model[0].training and not model[3].training
    assert model[1].running_mean.eq(0).all() and model[1].num_batches_tracked == 0


def test_he_init_matches_sqrt_2_over_fan_in():
    linear, conv = nn.Linear(512, 256), nn.Conv2d(64, 64, 3)
    init_weights(nn.Sequential(linear, conv), "he")
    assert linear.weight.std().item() == pytest.approx(math.sqrt(2 / 512), rel=0.03)
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.03)
    assert linear.bias.eq(0).all() and conv.bias.eq(0).all()


def test_xavier_orthogonal_and_default():
    linear = init_weights(nn.Linear(300, 100), "xavier")
    bound = math.sqrt(6 / (300 + 100))
    assert linear.weight.abs().max().item() <= bound
    assert linear.weight.std().item() == pytest.approx(math.sqrt(2 / 400), rel=0.03)

    ortho = init_weights(nn.Linear(64, 32), "orthogonal")
    torch.testing.assert_close(ortho.weight @ ortho.weight.T, torch.eye(32), atol=1e-5, rtol=0)

    untouched = nn.Linear(8, 8)
    before = untouched.weight.detach().clone()
    init_weights(untouched, "default")
    assert untouched.weight.equal(before)


def test_lazy_layers_are_initialised_once_when_built():
    model = init_weights(nn.Sequential(Dense(256)), "he")
    twin = copy.deepcopy(model)
    materialize(model, torch.zeros(2, 1024))
    layer = model[0]
    assert layer.weight.std().item() == pytest.approx(math.sqrt(2 / 1024), rel=0.03)
    assert layer.bias.eq(0).all()
    with torch.no_grad():
        layer.weight.fill_(0.5)
    model(torch.zeros(2, 1024))  # no second init on later calls
    assert layer.weight.eq(0.5).all()
    twin(torch.zeros(2, 1024))  # copies made before the build work the same way
    assert twin[0].bias.eq(0).all()
    with torch.no_grad():
        twin[0].weight.fill_(0.5)
    twin(torch.zeros(2, 1024))
    assert twin[0].weight.eq(0.5).all()


def test_unknown_init_scheme_has_did_you_mean():
    with pytest.raises(RecipeError, match="unknown weight init 'xavir'") as info:
        init_weights(nn.Linear(2, 2), "xavir")
    assert "did you mean 'xavier'" in info.value.hint


def test_loaded_weights_survive_the_first_forward_of_a_lazy_model():
    trained = init_weights(nn.Sequential(Dense(16)), "he")
    materialize(trained, torch.zeros(2, 8))
    fresh = init_weights(nn.Sequential(Dense(16)), "he")
    fresh.load_state_dict(trained.state_dict())
    fresh(torch.zeros(2, 8))  # the pending lazy init must not overwrite what was loaded
    assert fresh[0].weight.equal(trained[0].weight)
    twin = copy.deepcopy(init_weights(nn.Sequential(Dense(16)), "he"))
    twin.load_state_dict(trained.state_dict())
    twin(torch.zeros(2, 8))
    assert twin[0].weight.equal(trained[0].weight)
