"""Losses by name: values checked against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight

from layerwise.errors import RecipeError, ShapeError
from layerwise.train.losses import LOSSES, balanced_class_weights, create_loss

LOGITS = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
TARGET = torch.tensor([0, 2])


def _nll(logits: torch.Tensor, target: torch.Tensor) -> list[float]:
    """Per-sample -log softmax(logits)[target], computed by hand."""
    out = []
    for row, t in zip(logits.tolist(), target.tolist(), strict=True):
        log_z = math.log(sum(math.exp(v) for v in row))
        out.append(log_z - row[t])
    return out


def test_registry_lists_the_losses() -> None:
    assert LOSSES.names() == ["bce", "cross_entropy", "huber", "mae", "mse"]


def test_cross_entropy_matches_hand_computation() -> None:
    loss = create_loss("cross_entropy")(LOGITS, TARGET)
    assert loss.item() == pytest.approx(sum(_nll(LOGITS, TARGET)) / 2, rel=1e-6)


def test_label_smoothing_matches_hand_computation() -> None:
    eps, classes = 0.1, 3
    expected = 0.0
    for row, t in zip(LOGITS.tolist(), TARGET.tolist(), strict=True):
        log_z = math.log(sum(math.exp(v) for v in row))
        log_p = [v - log_z for v in row]
        # (1 - eps) on the true class, eps spread uniformly over all classes
        expected += -(1 - eps) * log_p[t] - eps / classes * sum(log_p)
    loss = create_loss("cross_entropy", label_smoothing=eps)(LOGITS, TARGET)
    assert loss.item() == pytest.approx(expected / 2, rel=1e-6)


def test_class_weights_give_a_weighted_mean() -> None:
    nll = _nll(LOGITS, TARGET)
    weights = [1.0, 1.0, 3.0]
    loss = create_loss("cross_entropy", class_weights=weights)(LOGITS, TARGET)
    expected = (1.0 * nll[0] + 3.0 * nll[1]) / (1.0 + 3.0)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert loss.item() != pytest.approx(sum(nll) / 2, rel=1e-3)


def test_class_weights_are_a_buffer_that_follows_the_module() -> None:
    loss = create_loss("cross_entropy", class_weights=torch.tensor([1.0, 2.0]))
    assert torch.equal(dict(loss.named_buffers())["weight"], torch.tensor([1.0, 2.0]))


def test_balanced_weights_match_scikit_learn() -> None:
    y = torch.tensor([0, 0, 0, 1, 2, 2])
    expected = compute_class_weight("balanced", classes=np.arange(3), y=y.numpy())
    assert torch.allclose(balanced_class_weights(y), torch.tensor(expected, dtype=torch.float32))
    loss = create_loss("cross_entropy", class_weights="balanced", targets=y)
    assert torch.allclose(loss.weight, torch.tensor([2 / 3, 2.0, 1.0]))


def test_balanced_weights_give_absent_classes_weight_one() -> None:
    weights = balanced_class_weights([0, 0, 1, 1], num_classes=3)
    assert weights.tolist() == pytest.approx([1.0, 1.0, 1.0])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"class_weights": "balanced"},  # no targets
        {"class_weights": "inverse"},
        {"class_weights": [1.0, -1.0]},
        {"class_weights": [1.0, 2.0], "num_classes": 3},
        {"label_smoothing": 1.0},
        {"smoothing": 0.1},  # not an argument
    ],
)
def test_cross_entropy_rejects_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(RecipeError):
        create_loss("cross_entropy", **kwargs)


def test_unknown_loss_suggests_the_closest_name() -> None:
    with pytest.raises(RecipeError, match="unknown loss 'cross_entropi'") as info:
        create_loss("cross_entropi")
    assert "cross_entropy" in info.value.hint


@pytest.mark.parametrize(
    ("logit_shape", "target_shape"), [((4, 1), (4,)), ((4,), (4, 1)), ((4,), (4,))]
)
def test_bce_aligns_n_and_n_by_1(logit_shape: tuple, target_shape: tuple) -> None:
    logits = torch.tensor([0.5, -1.0, 2.0, 0.0]).reshape(logit_shape)
    target = torch.tensor([1, 0, 0, 1]).reshape(target_shape)  # integer targets are fine
    expected = F.binary_cross_entropy_with_logits(
        torch.tensor([0.5, -1.0, 2.0, 0.0]), torch.tensor([1.0, 0.0, 0.0, 1.0])
    )
    assert create_loss("bce")(logits, target).item() == pytest.approx(expected.item())


def test_bce_pos_weight_scales_the_positive_term() -> None:
    logits, target = torch.tensor([0.3, -0.2]), torch.tensor([1.0, 0.0])
    pos = -math.log(torch.sigmoid(torch.tensor(0.3)).item())
    neg = -math.log(1 - torch.sigmoid(torch.tensor(-0.2)).item())
    loss = create_loss("bce", pos_weight=3.0)(logits, target)
    assert loss.item() == pytest.approx((3.0 * pos + neg) / 2, rel=1e-6)


def test_mismatched_shapes_raise_shape_error() -> None:
    with pytest.raises(ShapeError, match=r"\(4, 2\)"):
        create_loss("bce")(torch.zeros(4, 2), torch.zeros(4))


def test_mse_does_not_broadcast_n_by_1_against_n() -> None:
    output = torch.tensor([[1.0], [2.0], [3.0]])
    target = torch.tensor([1.0, 2.0, 5.0])
    assert create_loss("mse")(output, target).item() == pytest.approx(4.0 / 3)
    assert create_loss("mae")(output, target).item() == pytest.approx(2.0 / 3)


def test_huber_is_quadratic_below_delta_and_linear_above() -> None:
    output, target = torch.tensor([0.5, 3.0]), torch.tensor([0.0, 0.0])
    # 0.5 * 0.5**2 = 0.125 ; delta * (3 - delta / 2) = 2.5
    assert create_loss("huber", delta=1.0)(output, target).item() == pytest.approx(1.3125)
    with pytest.raises(RecipeError, match="delta"):
        create_loss("huber", delta=0)
