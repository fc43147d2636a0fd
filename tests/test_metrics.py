"""Metrics: values against scikit-learn, no host sync in update, exact resume from state.

The metrics are computed by torchmetrics where it fits (see layerwise.train.metrics); these tests
hold them to scikit-learn's numbers on random data, whichever library does the arithmetic.
"""

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
    assert {t.device.type for t in _accumulators(metric)} == {"meta"}


def _accumulators(metric: Metric) -> list[torch.Tensor]:
    """The tensors a metric accumulates into (its internals, whichever library holds them)."""
    if metric.name == "roc_auc":
        return metric._scores + metric._targets
    if metric.name in ("mae", "rmse"):
        return list(metric._metric.metric_state.values())  # the torchmetrics object's states
    return list(metric._state.values())


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


def test_state_dict_holds_only_what_weights_only_loading_accepts() -> None:
    allowed = (torch.Tensor, list, dict, int, float, bool, str)
    for name, kwargs, kind in CASES:
        output, target = _data(kind)
        state = _feed(create_metric(name, **kwargs), output[:20], target[:20]).state_dict()
        assert state and all(isinstance(v, allowed) for v in state.values()), name
        buffer = io.BytesIO()
        torch.save(state, buffer)
        buffer.seek(0)
        loaded = torch.load(buffer, weights_only=True)  # raises on anything else
        assert loaded.keys() == state.keys()
        assert all(torch.equal(loaded[k], state[k]) for k in state)


# ---------------------------------------------------------------- cross-checks on random data

SCORES = {"precision": skm.precision_score, "recall": skm.recall_score, "f1": skm.f1_score}


def _random(seed: int, n: int, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random scores and targets; every third seed leaves the last class out of the targets."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, classes, generator=g) * 2
    high = classes - 1 if seed % 3 == 2 else classes
    return logits, torch.randint(0, high, (n,), generator=g)


SEEDS_AND_SIZES = [(0, 97, 3), (1, 200, 5), (2, 64, 4), (3, 31, 10), (4, 150, 2), (5, 80, 7)]


@pytest.mark.parametrize(("seed", "n", "classes"), SEEDS_AND_SIZES)
def test_accuracy_and_top_k_match_scikit_learn_on_random_data(
    seed: int, n: int, classes: int
) -> None:
    logits, target = _random(seed, n, classes)
    accuracy = _feed(create_metric("accuracy"), logits, target, batch=13)
    assert accuracy.compute() == pytest.approx(skm.accuracy_score(target, logits.argmax(1)))
    for k in range(1, classes + 1):
        top = _feed(create_metric(f"top{k}_accuracy"), logits, target, batch=13)
        if k == classes:
            assert top.compute() == 1.0
        elif classes > 2:  # scikit-learn wants one score column for two classes
            expected = skm.top_k_accuracy_score(target, logits, k=k, labels=range(classes))
            assert top.compute() == pytest.approx(expected), k


@pytest.mark.parametrize(("seed", "n", "classes"), SEEDS_AND_SIZES)
@pytest.mark.parametrize("name", ["precision", "recall", "f1"])
@pytest.mark.parametrize("average", ["macro", "micro", "weighted"])
@pytest.mark.parametrize("given", [True, False])
def test_class_scores_match_scikit_learn_on_random_data(
    seed: int, n: int, classes: int, name: str, average: str, given: bool
) -> None:
    """With or without num_classes; macro leaves out a class absent from targets and outputs."""
    logits, target = _random(seed, n, classes)
    logits[:, -1] -= 100 * (seed % 3 == 2)  # then the last class is never predicted either
    num_classes = classes if given else None
    metric = create_metric(name, num_classes=num_classes, average=average)
    _feed(metric, logits, target, batch=13)
    expected = SCORES[name](target, logits.argmax(1), average=average, zero_division=0)
    assert metric.compute() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("name", ["precision", "recall", "f1"])
@pytest.mark.parametrize("average", [None, "binary", "macro", "micro", "weighted"])
def test_class_scores_on_one_logit_binary_outputs(seed: int, name: str, average: str) -> None:
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, 2, (90,), generator=g)
    logits = torch.randn(90, generator=g) + target - 0.5 + seed  # seed 3: nearly all positive
    metric = _feed(create_metric(name, average=average, threshold=0.25), logits, target)
    sk_average = "binary" if average is None else average
    pred = (logits > 0.25).long()
    expected = SCORES[name](target, pred, average=sk_average, zero_division=0)
    assert metric.compute() == pytest.approx(expected, abs=1e-12)


def test_binary_average_needs_two_classes() -> None:
    metric = _feed(create_metric("f1", average="binary"), *_multiclass())
    with pytest.raises(RecipeError, match="2 classes"):
        metric.compute()


@pytest.mark.parametrize(("seed", "n", "classes"), SEEDS_AND_SIZES)
def test_confusion_matrix_matches_scikit_learn_on_random_data(
    seed: int, n: int, classes: int
) -> None:
    logits, target = _random(seed, n, classes)
    metric = _feed(create_metric("confusion_matrix", num_classes=classes), logits, target, 13)
    matrix = metric.compute()
    assert matrix.dtype == torch.int64 and matrix.device.type == "cpu"
    expected = skm.confusion_matrix(target, logits.argmax(1), labels=range(classes))
    assert np.array_equal(matrix.numpy(), expected)


@pytest.mark.parametrize("seed", range(4))
def test_mae_and_rmse_match_scikit_learn_on_random_data(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    output = torch.randn(101, generator=g) * 10 ** (seed - 1)
    target = output + torch.randn(101, generator=g)
    mae = _feed(create_metric("mae"), output, target, batch=17)
    rmse = _feed(create_metric("rmse"), output.unsqueeze(1), target, batch=17)
    assert mae.compute() == pytest.approx(skm.mean_absolute_error(target, output), rel=1e-6)
    expected = skm.root_mean_squared_error(target, output)
    assert rmse.compute() == pytest.approx(expected, rel=1e-6)


def test_regression_accepts_integer_targets_and_low_precision_outputs() -> None:
    output = torch.tensor([0.5, 2.0, 2.5, 7.0]).bfloat16()
    target = torch.tensor([0, 2, 3, 5])
    assert create_metric("mae").compute() != create_metric("mae").compute()  # NaN when empty
    mae = _feed(create_metric("mae"), output, target)
    assert mae.compute() == pytest.approx((0.5 + 0 + 0.5 + 2) / 4)


@pytest.mark.parametrize(("seed", "n", "classes"), SEEDS_AND_SIZES)
def test_roc_auc_matches_scikit_learn_on_random_data(seed: int, n: int, classes: int) -> None:
    """One-vs-rest over the classes present in the targets (all of them, for scikit-learn)."""
    logits, target = _random(seed, n, classes)
    metric = _feed(create_metric("roc_auc"), logits, target, batch=13)
    probs = logits.softmax(1).double().numpy()
    present = [c for c in range(classes) if (target == c).any()]
    aucs = [skm.roc_auc_score(target == c, probs[:, c]) for c in present]
    assert metric.compute() == pytest.approx(np.mean(aucs), rel=1e-6)  # torchmetrics: float32
    if len(present) == classes > 2:
        expected = skm.roc_auc_score(target, probs, multi_class="ovr", average="macro")
        assert metric.compute() == pytest.approx(expected, rel=1e-6)


def test_roc_auc_binary_keeps_the_order_of_large_logits() -> None:
    """A sigmoid would round logits > ~37 to 1.0 and tie them; the ranking must not change."""
    g = torch.Generator().manual_seed(5)
    target = torch.randint(0, 2, (200,), generator=g)
    logits = (torch.randn(200, generator=g) + target) * 40
    metric = _feed(create_metric("roc_auc"), logits, target)
    assert metric.compute() == pytest.approx(skm.roc_auc_score(target, logits), rel=1e-6)


def test_roc_auc_counts_ties_as_half() -> None:
    metric = create_metric("roc_auc")
    metric.update(torch.tensor([0.0, 0.0, 1.0, 1.0]), torch.tensor([0, 1, 0, 1]))
    assert metric.compute() == pytest.approx(0.5)


def test_roc_auc_out_of_range_targets_are_a_data_error() -> None:
    metric = create_metric("roc_auc", num_classes=3)
    metric.update(torch.randn(4, 3), torch.tensor([0, 1, 2, 3]))
    with pytest.raises(DataError, match="1 target"):
        metric.compute()
    binary = create_metric("roc_auc")
    binary.update(torch.randn(4), torch.tensor([0, 1, 2, 1]))
    with pytest.raises(DataError, match="1 target"):
        binary.compute()


@pytest.mark.parametrize("name", ["precision", "recall", "f1"])
def test_class_scores_report_out_of_range_targets(name: str) -> None:
    metric = create_metric(name, num_classes=3)
    metric.update(torch.randn(4, 3), torch.tensor([0, 1, 3, 2]))
    with pytest.raises(DataError, match="1 target"):
        metric.compute()


# ---------------------------------------------------------------- negative targets are ignored

CLASSIFICATION = [
    ("accuracy", {}),
    ("top_k_accuracy", {"k": 2}),
    ("precision", {"average": "macro"}),
    ("recall", {"average": "weighted"}),
    ("f1", {"average": "micro"}),
    ("f1", {}),
    ("confusion_matrix", {}),
    ("roc_auc", {}),
]


@pytest.mark.parametrize(("name", "kwargs"), CLASSIFICATION)
@pytest.mark.parametrize("kind", ["multiclass", "sequence", "binary"])
def test_negative_targets_are_ignored(name: str, kwargs: dict, kind: str) -> None:
    """Any negative target (-100, -1, -7) counts as if that position were not there."""
    g = torch.Generator().manual_seed(11)
    if kind == "binary":
        if name == "top_k_accuracy":
            return
        target = torch.randint(0, 2, (120,), generator=g)
        output = torch.randn(120, generator=g) + target
        kept_output, flat_output = output, output
    else:
        target = torch.randint(0, C, (120,), generator=g)
        output = torch.randn(120, C, generator=g) + torch.nn.functional.one_hot(target, C)
        flat_output = output
    pad = torch.rand(120, generator=g) < 0.3
    padded = torch.where(pad, torch.tensor([-100, -1, -7]).repeat(40), target)
    if kind == "sequence":  # (N, C, L) scores against (N, L) targets, as a tagger gives
        output, padded = output.reshape(20, 6, C).transpose(1, 2), padded.reshape(20, 6)
    got = _feed(create_metric(name, **kwargs), output, padded, batch=7).compute()
    kept_output = flat_output[~pad]
    want = _feed(create_metric(name, **kwargs), kept_output, target[~pad], batch=7).compute()
    assert np.array_equal(np.asarray(got), np.asarray(want))
    if name == "accuracy":
        pred = kept_output.argmax(1) if kept_output.dim() == 2 else (kept_output > 0).long()
        assert got == pytest.approx(skm.accuracy_score(target[~pad], pred))


@pytest.mark.parametrize(("name", "kwargs"), CLASSIFICATION)
def test_only_ignored_targets_give_nan_or_an_empty_matrix(name: str, kwargs: dict) -> None:
    metric = create_metric(name, **kwargs)
    metric.update(torch.randn(5, C), torch.full((5,), -100))
    value = metric.compute()
    if name == "confusion_matrix":
        assert torch.equal(value, torch.zeros(C, C, dtype=torch.long))
    else:
        assert math.isnan(value)


# ---------------------------------------------------------------- resume


@pytest.mark.parametrize(("name", "kwargs"), CLASSIFICATION)
def test_resume_mid_accumulation_with_padding_matches_one_pass(name: str, kwargs: dict) -> None:
    g = torch.Generator().manual_seed(4)
    output = torch.randn(90, C, generator=g)
    target = torch.where(torch.rand(90, generator=g) < 0.2, -100, torch.randint(0, C, (90,)))
    whole = _feed(create_metric(name, **kwargs), output, target, batch=10).compute()
    for cut in (10, 40, 80):
        first = _feed(create_metric(name, **kwargs), output[:cut], target[:cut], batch=10)
        resumed = create_metric(name, **kwargs)
        resumed.load_state_dict(_roundtrip(first.state_dict()))
        first.update(output[cut:], target[cut:])  # the original goes on, unaffected by the copy
        _feed(resumed, output[cut:], target[cut:], batch=10)
        assert np.array_equal(np.asarray(resumed.compute()), np.asarray(whole))
        assert np.array_equal(np.asarray(first.compute()), np.asarray(whole))


def test_regression_state_written_before_torchmetrics_still_loads() -> None:
    """Checkpoints hold {"error": float64 sum, "count": int64}, as the hand-written MAE saved."""
    output, target = _data("regression")
    whole = _feed(create_metric("mae"), output, target).compute()
    head = (output[:32] - target[:32]).abs().sum(dtype=torch.float64)
    resumed = create_metric("mae")
    resumed.load_state_dict({"error": head, "count": torch.tensor(32)})
    _feed(resumed, output[32:], target[32:])
    assert resumed.compute() == pytest.approx(whole, rel=1e-9)  # batch sums were float32


def test_metrics_infer_the_number_of_classes_and_keep_it_after_a_load() -> None:
    logits, target = _random(1, 200, 5)
    metric = _feed(create_metric("f1"), logits, target)
    assert metric.num_classes == 5
    assert metric.compute() == pytest.approx(
        skm.f1_score(target, logits.argmax(1), average="macro", zero_division=0)
    )
    resumed = create_metric("confusion_matrix")
    resumed.load_state_dict(
        _roundtrip(_feed(create_metric("confusion_matrix"), logits, target).state_dict())
    )
    assert resumed.compute().shape == (5, 5)


def test_roc_auc_reads_its_scores_from_the_device_once_however_many_batches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = []
    original = torch.Tensor.cpu

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    counts = []
    for batches in (2, 20):
        metric = create_metric("roc_auc")
        for _ in range(batches):
            metric.update(torch.randn(8), torch.randint(0, 2, (8,)))
        calls.clear()
        monkeypatch.setattr(torch.Tensor, "cpu", counting)
        metric.compute()
        monkeypatch.undo()
        counts.append(len(calls))
    assert counts[0] == counts[1] > 0
