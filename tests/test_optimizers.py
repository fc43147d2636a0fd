"""Optimizers by name, parameter groups without decay, and the L1/L2 regularizer."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from layerwise.errors import RecipeError
from layerwise.train.optimizers import OPTIMIZERS, create_optimizer, split_decay
from layerwise.train.regularization import (
    Regularizer,
    l1_penalty,
    l2_penalty,
    regularization_term,
)


def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.ReLU(), nn.Linear(4, 2))


def _set_grads(model: nn.Module) -> None:
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)


def test_registry_lists_the_optimizers() -> None:
    assert OPTIMIZERS.names() == ["adam", "adamw", "rmsprop", "sgd"]


@pytest.mark.parametrize(
    ("name", "cls", "fast"),
    [
        ("sgd", torch.optim.SGD, "fused"),
        ("adam", torch.optim.Adam, "fused"),
        ("adamw", torch.optim.AdamW, "fused"),
        ("rmsprop", torch.optim.RMSprop, "foreach"),
    ],
)
def test_each_optimizer_uses_a_pytorch_fast_path(name: str, cls: type, fast: str) -> None:
    opt = create_optimizer(name, _model(), lr=0.01)
    assert type(opt) is cls
    assert opt.defaults[fast] is True
    assert opt.param_groups[0]["lr"] == 0.01


def test_adamw_keeps_its_usual_default_decay_and_adam_has_none() -> None:
    assert create_optimizer("adamw", _model()).defaults["weight_decay"] == 0.01
    assert create_optimizer("adam", _model()).defaults["weight_decay"] == 0.0
    assert create_optimizer("adamw", _model(), weight_decay=0.0).defaults["weight_decay"] == 0.0


def test_sgd_step_matches_the_update_rule() -> None:
    model = nn.Linear(2, 1)
    before = [p.detach().clone() for p in model.parameters()]
    opt = create_optimizer("sgd", model, lr=0.1, weight_decay=0.2)
    _set_grads(model)
    opt.step()
    for old, new in zip(before, model.parameters(), strict=True):
        assert torch.allclose(new, old - 0.1 * (0.5 + 0.2 * old))


@pytest.mark.parametrize(
    ("name", "kwargs", "reference"),
    [
        ("sgd", {"momentum": 0.9, "nesterov": True}, torch.optim.SGD),
        ("adam", {"betas": [0.8, 0.99], "amsgrad": True}, torch.optim.Adam),
        ("rmsprop", {"alpha": 0.9, "momentum": 0.5, "centered": True}, torch.optim.RMSprop),
    ],
)
def test_steps_match_plain_pytorch(name: str, kwargs: dict, reference: type) -> None:
    ours, theirs = _model(), _model()
    theirs.load_state_dict(ours.state_dict())
    opt = create_optimizer(name, ours, lr=0.01, weight_decay=0.1, **kwargs)
    if "betas" in kwargs:
        kwargs = {**kwargs, "betas": tuple(kwargs["betas"])}
    ref = reference(theirs.parameters(), lr=0.01, weight_decay=0.1, foreach=False, **kwargs)
    for step in range(3):
        for model in (ours, theirs):
            for i, p in enumerate(model.parameters()):
                p.grad = torch.sin(torch.arange(p.numel(), dtype=torch.float32) + i + step).view_as(
                    p
                )
        opt.step()
        ref.step()
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_nesterov_without_momentum_is_a_recipe_error_with_a_hint() -> None:
    with pytest.raises(RecipeError, match="nesterov") as info:
        create_optimizer("sgd", _model(), nesterov=True)
    assert "momentum" in info.value.hint


@pytest.mark.parametrize(
    "kwargs",
    [
        {"lr": 0.0},
        {"weight_decay": -0.1},
        {"momentum": 0.9, "name": "adam"},  # adam has no momentum option
        {"betas": [1.5, 0.999], "name": "adam"},  # PyTorch's range check
        {"betas": [0.9], "name": "adamw"},
    ],
)
def test_bad_arguments_are_recipe_errors(kwargs: dict) -> None:
    name = kwargs.pop("name", "sgd")
    with pytest.raises(RecipeError):
        create_optimizer(name, _model(), **kwargs)


def test_unknown_name_and_empty_model_are_recipe_errors() -> None:
    with pytest.raises(RecipeError) as info:
        create_optimizer("adamm", _model())
    assert "adam" in info.value.hint
    with pytest.raises(RecipeError, match="no parameters"):
        create_optimizer("sgd", nn.ReLU())


def test_split_decay_separates_weights_from_biases_and_norms() -> None:
    model = _model()
    decay, no_decay = split_decay(model)
    assert [id(p) for p in decay] == [id(model[0].weight), id(model[3].weight)]
    expected = [model[0].bias, model[1].weight, model[1].bias, model[3].bias]
    assert [id(p) for p in no_decay] == [id(p) for p in expected]


def test_split_decay_handles_lazy_layers_and_shared_weights() -> None:
    shared = nn.Linear(4, 4)
    model = nn.Sequential(nn.LazyLinear(4), nn.LazyBatchNorm1d(), shared, shared)
    decay, no_decay = split_decay(model)
    assert [id(p) for p in decay] == [id(model[0].weight), id(shared.weight)]
    assert len(no_decay) == 4  # lazy bias, lazy BN weight and bias, shared bias (once)


def test_no_decay_group_is_not_shrunk_by_weight_decay() -> None:
    model = _model()
    opt = create_optimizer("adamw", model, lr=0.1, weight_decay=0.5, decay_norm_and_bias=False)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.5, 0.0]
    before = copy.deepcopy(model)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # only weight decay moves anything
    opt.step()
    assert torch.allclose(model[0].weight, before[0].weight * (1 - 0.1 * 0.5))
    assert torch.equal(model[0].bias, before[0].bias)
    assert torch.equal(model[1].weight, before[1].weight)


def test_decay_norm_and_bias_false_on_a_parameter_list_splits_by_rank() -> None:
    params = list(_model().parameters())
    opt = create_optimizer("sgd", params, weight_decay=0.1, decay_norm_and_bias=False)
    assert [len(g["params"]) for g in opt.param_groups] == [2, 4]
    with pytest.raises(RecipeError, match="parameter groups"):
        create_optimizer("sgd", [{"params": params}], decay_norm_and_bias=False)


def test_regularizer_sums_weights_only() -> None:
    model = _model()
    w0, w3 = model[0].weight.detach(), model[3].weight.detach()
    l1 = w0.abs().sum() + w3.abs().sum()
    l2 = w0.square().sum() + w3.square().sum()
    assert torch.allclose(l1_penalty(model), l1)
    assert torch.allclose(l2_penalty(model), l2)
    term = regularization_term(model, l1=0.01, l2=0.1)
    assert torch.allclose(term, 0.01 * l1 + 0.1 * l2)
    assert regularization_term(model) is None


def test_regularizer_gradient_matches_autograd() -> None:
    model = _model()
    with torch.no_grad():
        model[0].weight[0, 0] = 0.0  # |w| has gradient 0 at 0 (sign), not NaN
    reg = Regularizer(model, l1=0.01, l2=0.1)
    (3.0 * reg()).backward()  # the outer factor checks the chain rule
    for w in (model[0].weight, model[3].weight):
        expected = 3.0 * (0.01 * torch.sign(w) + 0.2 * w)
        assert torch.allclose(w.grad, expected)
    assert model[0].bias.grad is None and model[1].weight.grad is None


def test_regularizer_skips_frozen_weights_and_rejects_negative_coefficients() -> None:
    model = _model()
    model[0].weight.requires_grad_(False)
    reg = Regularizer(model, l2=1.0)
    assert [id(w) for w in reg.weights] == [id(model[3].weight)]
    with pytest.raises(RecipeError, match="l1"):
        Regularizer(model, l1=-1.0)
