"""Metrics: values against scikit-learn, no host sync in update, exact resume from state."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from layerwise.errors import DataError, RecipeError, ShapeError
from layerwise.train.metrics import METRICS, MeanMetric, Metric, create_metric

C = 4


def _multiclass(n: int = 60, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random logits and targets where class 3 is never the argmax (a zero-division case)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, C, generator=g)
    logits[:, 3] -= 10
    return logits, torch.randint(0, C, (n,), generator=g)


def _binary(n: int = 50, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, 2, (n,), generator=g)
    return torch.randn(n, generator=g) + target, target


def _feed(metric: Metric, output: torch.Tensor, target: torch.Tensor, batch: int = 16) -> Metric:
    for i in range(0, len(target), batch):
        metric.update(output[i : i + batch], target[i : i + batch])
    return metric


def test_registry_lists_the_metrics() -> None:
    assert METRICS.names() == [
        "accuracy",
        "confusion_matrix",
        "f1",
        "mae",
        "precision",
        "recall",
        "rmse",
        "roc_auc",
        "top_k_accuracy",
    ]


def test_accuracy_multiclass_over_batches() -> None:
    logits, target = _multiclass()
    metric = _feed(create_metric("accuracy"), logits, target)
    expected = skm.accuracy_score(target, logits.argmax(1))
    assert metric.name == "accuracy" and metric.higher_is_better
    assert metric.compute() == pytest.approx(expected)


@pytest.mark.parametrize("shape", [(6,), (6, 1)])
def test_accuracy_binary_thresholds_logits_at_zero(shape: tuple) -> None:
    logits = torch.tensor([2.0, -1.0, 0.5, -0.5, 3.0, -2.0]).reshape(shape)
    target = torch.tensor([1, 0, 0, 0, 1, 1])  # 4 of 6 right
    metric = create_metric("accuracy")
    metric.update(logits, target)
    assert metric.compute() == pytest.approx(4 / 6)


def test_accuracy_ignores_negative_padding_targets() -> None:
    logits = torch.tensor([[[2.0, 0.0, 0.0]], [[0.0, 2.0, 0.0]]]).transpose(1, 2)  # (N, C, L)
    target = torch.tensor([[0], [-100]])
    metric = create_metric("accuracy")
    metric.update(logits, target)
    assert metric.compute() == 1.0


def test_top_k_accuracy_by_name() -> None:
    logits = torch.tensor([[0.9, 0.5, 0.1, 0.0], [0.1, 0.2, 0.3, 0.9], [0.5, 0.4, 0.3, 0.2]])
    target = torch.tensor([1, 0, 3])  # in top 2: yes, no, no
    metric = create_metric("top2_accuracy")
    metric.update(logits, target)
    assert metric.name == "top2_accuracy"
    assert metric.compute() == pytest.approx(1 / 3)
    logits, target = _multiclass()
    top3 = _feed(create_metric("top_k_accuracy", k=3), logits, target)
    expected = skm.top_k_accuracy_score(target, logits, k=3, labels=range(C))
    assert top3.compute() == pytest.approx(expected)
    with pytest.raises(ShapeError, match="top5"):
        create_metric("top5_accuracy").update(logits, target)


@pytest.mark.parametrize("name", ["precision", "recall", "f1"])
@pytest.mark.parametrize("average", ["macro", "micro", "weighted"])
def test_class_scores_match_scikit_learn(name: str, average: str) -> None:
    logits, target = _multiclass()
    metric = _feed(create_metric(name, num_classes=C, average=average), logits, target)
    score = {"precision": skm.precision_score, "recall": skm.recall_score, "f1": skm.f1_score}
    expected = score[name](target, logits.argmax(1), average=average, zero_division=0)
    assert metric.compute() == pytest.approx(expected)
    assert metric.name == f"{name}_{average}"


@pytest.mark.parametrize("name", ["precision", "recall", "f1"])
def test_class_scores_default_to_macro_or_binary(name: str) -> None:
    score = {"precision": skm.precision_score, "recall": skm.recall_score, "f1": skm.f1_score}
    logits, target = _multiclass()
    macro = _feed(create_metric(name), logits, target)
    assert macro.name == name
    expected = score[name](target, logits.argmax(1), average="macro", zero_division=0)
    assert macro.compute() == pytest.approx(expected)
    logits, target = _binary()
    binary = _feed(create_metric(name), logits.unsqueeze(1), target)
    expected = score[name](target, (logits > 0).long(), zero_division=0)  # positive class
    assert binary.compute() == pytest.approx(expected)


def test_bad_average_is_a_recipe_error() -> None:
    with pytest.raises(RecipeError, match="average"):
        create_metric("f1", average="mean")


def test_confusion_matrix_matches_scikit_learn() -> None:
    logits, target = _multiclass()
    metric = _feed(create_metric("confusion_matrix"), logits, target)
    expected = skm.confusion_matrix(target, logits.argmax(1), labels=range(C))
    assert np.array_equal(metric.compute().numpy(), expected)


def test_out_of_range_targets_are_reported_at_compute() -> None:
    metric = create_metric("confusion_matrix", num_classes=3)
    metric.update(torch.randn(4, 3), torch.tensor([0, 1, 5, 2]))  # no error, no sync here
    with pytest.raises(DataError, match="1 target"):
        metric.compute()


def test_num_classes_mismatch_is_a_shape_error() -> None:
    with pytest.raises(ShapeError, match="5 classes"):
        create_metric("f1", num_classes=5).update(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))


def test_mae_and_rmse_match_numpy() -> None:
    g = torch.Generator().manual_seed(0)
    output, target = torch.randn(40, 1, generator=g), torch.randn(40, generator=g)
    diff = output.squeeze(1).double().numpy() - target.double().numpy()
    mae = _feed(create_metric("mae"), output, target)
    rmse = _feed(create_metric("rmse", num_classes=None), output, target)
    assert mae.compute() == pytest.approx(np.abs(diff).mean())
    assert rmse.compute() == pytest.approx(np.sqrt((diff**2).mean()))
    assert not mae.higher_is_better
    with pytest.raises(ShapeError):
        mae.update(torch.randn(3, 2), torch.randn(3))


def test_roc_auc_binary_matches_scikit_learn() -> None:
    logits, target = _binary()
    metric = _feed(create_metric("roc_auc"), logits.unsqueeze(1), target)
    assert metric.compute() == pytest.approx(skm.roc_auc_score(target, logits))


def test_roc_auc_multiclass_is_one_vs_rest_macro() -> None:
    g = torch.Generator().manual_seed(3)
    logits, target = torch.randn(80, C, generator=g), torch.randint(0, C, (80,), generator=g)
    metric = _feed(create_metric("roc_auc", num_classes=C), logits, target)
    probs = logits.softmax(1).double().numpy()
    expected = skm.roc_auc_score(target, probs, multi_class="ovr", average="macro")
    assert metric.compute() == pytest.approx(expected)


def test_roc_auc_with_a_single_class_is_nan() -> None:
    metric = create_metric("roc_auc")
    metric.update(torch.randn(5), torch.ones(5))
    assert math.isnan(metric.compute())


def test_mean_metric_weights_by_batch_size() -> None:
    mean = MeanMetric()
    mean.update(torch.tensor(2.0), weight=3)
    mean.update(torch.tensor(4.0), weight=1)
    assert mean.name == "loss"
    assert mean.compute() == pytest.approx((2 * 3 + 4) / 4)
    mean.reset()
    assert math.isnan(mean.compute())


def test_unknown_metric_suggests_a_name() -> None:
    with pytest.raises(RecipeError) as info:
        create_metric("acuracy")
    assert "accuracy" in info.value.hint


CASES = [
    ("accuracy", {}, "multiclass"),
    ("accuracy", {}, "binary"),
    ("top_k_accuracy", {"k": 2}, "multiclass"),
    ("precision", {}, "multiclass"),
    ("recall", {"average": "weighted"}, "multiclass"),
    ("f1", {}, "binary"),
    ("f1", {"average": "micro"}, "multiclass"),
    ("confusion_matrix", {}, "multiclass"),
    ("mae", {}, "regression"),
    ("rmse", {}, "regression"),
    ("roc_auc", {}, "binary"),
    ("roc_auc", {}, "multiclass"),
]


def _data(kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    if kind == "multiclass":
        return _multiclass()
    if kind == "binary":
        return _binary()
    g = torch.Generator().manual_seed(2)
    return torch.randn(48, generator=g), torch.randn(48, generator=g)


def _raise(*args, **kwargs):
    raise AssertionError("host sync during update()")


@pytest.mark.parametrize(("name", "kwargs", "kind"), CASES)
def test_update_never_syncs_with_the_host(
    name: str, kwargs: dict, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    output, target = _data(kind)
    metric = create_metric(name, **kwargs)
    with monkeypatch.context() as patch:
        for method in ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__"):
            patch.setattr(torch.Tensor, method, _raise)
        _feed(metric, output, target)
    assert metric.compute() is not None  # and it still computes afterwards


@pytest.mark.parametrize(("name", "kwargs", "kind"), CASES)
def test_update_runs_on_the_outputs_device(name: str, kwargs: dict, kind: str) -> None:
    """Meta tensors have a device but no data, so an update that read values would fail."""
    output, target = _data(kind)
    metric = create_metric(name, **kwargs)
    _feed(metric, output.to("meta"), target.to("meta"))
    accumulators = metric._scores if name == "roc_auc" else metric._state.values()
    assert {t.device.type for t in accumulators} == {"meta"}


def _roundtrip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize(("name", "kwargs", "kind"), CASES)
def test_state_dict_resumes_exactly(name: str, kwargs: dict, kind: str) -> None:
    output, target = _data(kind)
    whole = _feed(create_metric(name, **kwargs), output, target).compute()

    first = _feed(create_metric(name, **kwargs), output[:32], target[:32])
    saved = _roundtrip(first.state_dict())
    resumed = create_metric(name, **kwargs)
    resumed.load_state_dict(saved)
    if kind != "regression":
        partial = resumed.compute()  # readable straight after loading
        assert np.all(np.asarray(partial) == np.asarray(first.compute()))
    _feed(resumed, output[32:], target[32:])
    assert np.array_equal(np.asarray(resumed.compute()), np.asarray(whole))


@pytest.mark.parametrize(("name", "kwargs", "kind"), CASES)
def test_reset_forgets_everything(name: str, kwargs: dict, kind: str) -> None:
    output, target = _data(kind)
    metric = _feed(create_metric(name, **kwargs), output, target)
    before = np.asarray(metric.compute())
    metric.reset()
    assert metric.state_dict() == {}
    _feed(metric, output, target)
    assert np.array_equal(np.asarray(metric.compute()), before)
