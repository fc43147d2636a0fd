"""A classifier's reference for `underfitting` and `loss_plateau`: the data check's quick models.

Labels drawn from a logistic model leave even the best classifier at a loss of most of ln 2; a
network that does as well as a cross-validated logistic regression there has nothing left to
learn. A network short of what a simple model reaches (a linear model on circles, which a
nearest-neighbour vote separates) is still named, and the finding names the reference.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn import datasets

from layerwise.data import DatasetBundle
from layerwise.data.label_noise import estimate_label_noise
from layerwise.diagnose.data_checks import profile_data
from layerwise.diagnose.rules import RuleContext, curves


def logistic_labels(rows: int, seed: int = 9) -> tuple[np.ndarray, np.ndarray]:
    """10 standard normal features, labels drawn from sigmoid(x . w), |w| = 1.6: the best
    possible accuracy is about 0.76 and the best possible log-loss about 0.51."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 10))
    w = rng.normal(size=10)
    w *= 1.6 / np.linalg.norm(w)
    y = (rng.random(rows) < 1 / (1 + np.exp(-(x @ w)))).astype(np.int64)
    return x.astype(np.float32), y


def circles(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    x, y = datasets.make_circles(rows, noise=0.05, factor=0.5, random_state=seed)
    return x.astype(np.float32), y.astype(np.int64)


def bundle(name: str, x: np.ndarray, y: np.ndarray) -> DatasetBundle:
    train = (torch.from_numpy(x), torch.from_numpy(y))
    return DatasetBundle(name, train, None, None, 2, (x.shape[1],))


def history(loss, val_loss, acc, val_acc):
    return [
        {"epoch": i + 1, "loss": a, "val_loss": b, "accuracy": c, "val_accuracy": d}
        for i, (a, b, c, d) in enumerate(zip(loss, val_loss, acc, val_acc, strict=True))
    ]


def context(hist, data) -> RuleContext:
    return RuleContext(history=hist, data=data, task="classification", num_classes=2, final=True)


# The tester's run (h9): a 10-32-2 MLP, Adam 1e-3, 15 epochs on 4,000 rows of logistic labels.
TRAIN_LOSS = [0.60, 0.54, 0.53, 0.525, 0.52, 0.518, 0.516, 0.515, 0.515, 0.514, 0.5145, 0.514]
VAL_LOSS = [0.55, 0.53, 0.525, 0.52, 0.518, 0.517, 0.516, 0.516, 0.515, 0.515, 0.5145, 0.515]
TRAIN_ACC = [0.68, 0.73, 0.735, 0.74, 0.74, 0.742, 0.743, 0.743, 0.744, 0.744, 0.743, 0.746]
VAL_ACC = [0.73, 0.745, 0.75, 0.75, 0.752, 0.752, 0.753, 0.753, 0.754, 0.754, 0.756, 0.755]
CONVERGED = history(
    [*TRAIN_LOSS, 0.5142, 0.514, 0.5142],
    [*VAL_LOSS, 0.5149, 0.515, 0.515],
    [*TRAIN_ACC, 0.744, 0.744, 0.744],
    [*VAL_ACC, 0.754, 0.754, 0.754],
)
# A linear layer on circles: stuck at chance from the second epoch on.
STUCK = history(
    [0.70, 0.694, 0.693, 0.6932, 0.6931, 0.6932, 0.6931, 0.6931],
    [0.694, 0.693, 0.6932, 0.6931, 0.6931, 0.6932, 0.6931, 0.6931],
    [0.50, 0.52, 0.53, 0.52, 0.53, 0.52, 0.53, 0.53],
    [0.51, 0.52, 0.52, 0.53, 0.52, 0.52, 0.53, 0.52],
)


def test_the_data_check_records_what_simple_models_reach() -> None:
    x, y = logistic_labels(1500)
    reference = estimate_label_noise(x, y, 2)["reference"]
    # A logistic regression reaches close to the best possible log-loss and accuracy.
    assert reference["log_loss_model"] == "logistic regression"
    assert 0.48 < reference["log_loss"] < 0.58
    assert 0.70 < reference["accuracy"] < 0.80
    # On circles the nearest-neighbour vote separates what a line cannot.
    x, y = circles(1000)
    reference = estimate_label_noise(x, y, 2)["reference"]
    assert reference["accuracy_model"] == reference["log_loss_model"] != "logistic regression"
    assert reference["accuracy"] > 0.95 and reference["log_loss"] < 0.25
    # Images (and inputs the quick models only see through PCA) get no reference.
    images = np.random.default_rng(0).random((200, 1, 8, 8)).astype(np.float32)
    noise = estimate_label_noise(images.reshape(200, -1), np.arange(200) % 2, 2, image=True)
    assert noise["reference"] is None


def test_a_network_as_good_as_a_logistic_regression_is_not_underfitting() -> None:
    x, y = logistic_labels(1500)
    data = profile_data(bundle("logistic", x, y))
    assert curves.underfitting(context(CONVERGED, data)) is None
    assert curves.loss_plateau(context(CONVERGED, data)) is None
    # Without the reference the same curve reads as a poor fit (74% of ln 2).
    assert curves.underfitting(context(CONVERGED, None)) is not None
    assert curves.loss_plateau(context(CONVERGED, None)) is not None


def test_underfitting_still_fires_where_a_simple_model_does_better() -> None:
    x, y = circles(1000)
    data = profile_data(bundle("circles", x, y))
    for found in (
        curves.underfitting(context(STUCK, data)),
        curves.loss_plateau(context(STUCK, data)),
    ):
        assert found is not None
        assert found.evidence["reference_accuracy"] > 0.95
        assert found.evidence["reference_log_loss"] < 0.25
        assert "nearest-neighbour vote reaches loss" in found.message
    # The same stuck curve measured against the logistic labels' reference also stays named:
    # a loss at ln 2 is far above the 0.52 a logistic regression reaches there.
    x, y = logistic_labels(1500)
    data = profile_data(bundle("logistic", x, y))
    assert curves.underfitting(context(STUCK, data)) is not None
