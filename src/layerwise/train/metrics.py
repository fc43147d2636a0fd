"""Metrics accumulated on the device, read once per epoch.

`update(output, target)` runs every step, so it only launches tensor kernels: no `.item()`, no
copies to the host, no Python decisions on tensor values. Accumulators are created on the first
update's device. `compute()` is the one place that syncs, once per epoch.

Outputs are what the model returns: class scores `(N, C, ...)` against class indices `(N, ...)`
(argmax decides), or one logit per target `(N,)`/`(N, 1)` for binary tasks (thresholded at
`threshold`, 0 by default, i.e. probability 0.5). Negative targets are ignored, matching the
`ignore_index=-100` padding convention of PyTorch's cross-entropy.

What torchmetrics does here, and what stays written by hand. Times are µs per `update` on this
machine's CPU, one thread, for (32, 10) / (128, 10) scores: the best of 11 interleaved rounds
(the machine was shared; busy rounds were up to 2x slower for every variant).
- `mae`, `rmse`: torchmetrics' `MeanAbsoluteError` / `MeanSquaredError` accumulate the sums
  (float64) and divide: 27 / 26 and 25 / 24 µs against 15 / 15 and 14 / 18 µs for the
  hand-written sums they replace, ~10 µs more per update, which fits.
- `precision`, `recall`, `f1`: the counts are a confusion matrix kept here (below); at `compute()`
  torchmetrics' `Binary*`/`Multiclass*` `Precision`/`Recall`/`F1Score` turn them into the score
  (averages, zero division, classes left out of the macro average).
- `roc_auc`: update keeps the scores on the device; at `compute()` torchmetrics' exact
  `binary_auroc` (`thresholds=None`) scores each class one-vs-rest.
- The counting of `accuracy`, `top_k_accuracy` and the confusion matrix stays hand-written,
  because torchmetrics' classification `update` does not fit the per-step path. It counts
  multiclass predictions with `torch.bincount`, which on CUDA reads the input's min and max back
  to the host to size its output, and it drops its one `ignore_index` value by boolean indexing
  (a data-dependent shape, another sync), where any negative target must be ignored; a fixed-size
  `index_add_` counts the same cells without a sync. And it costs more every step:
  `MulticlassAccuracy(average="micro")` 48 / 54 µs (78 / 85 µs with `ignore_index`) against
  17 / 17 µs for the accuracy here; `MulticlassAccuracy(top_k=3)` 196 / 216 µs against 23 / 26;
  `MulticlassF1Score` 66 / 57 µs against 22 / 24 for the confusion counts.
- `MeanMetric` (the running loss, updated every step) is three tensor ops and stays so.

Example:
    >>> metric = create_metric("f1", num_classes=3)
    >>> for x, y in batches:
    ...     metric.update(model(x), y)
    >>> metric.compute()
    0.71
"""

from __future__ import annotations

import math
import re
import warnings
from typing import Any

import torch
from torch import Tensor

from layerwise.errors import DataError, RecipeError, ShapeError
from layerwise.registry import Registry

# torchmetrics is imported where it is first used: importing it costs ~0.5 s (it loads matplotlib
# and scipy), which `import layerwise` and `layerwise --help` should not pay.

METRICS: Registry[Metric] = Registry("metric")

_TOP_K = re.compile(r"top(\d+)_acc(uracy)?")


def create_metric(name: str, num_classes: int | None = None, **kwargs: Any) -> Metric:
    """Create the metric `name`; `topK_accuracy` (e.g. `top5_accuracy`) is understood too.

    `num_classes` is optional: classification metrics read it from the output's shape on the
    first update, and regression metrics ignore it.
    """
    match = _TOP_K.fullmatch(name.lower())
    if match:
        name, kwargs = "top_k_accuracy", {"k": int(match.group(1)), **kwargs}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    return METRICS.create(name, **kwargs)


class Metric:
    """Base class: the contract the Trainer, the doctor and the recipes rely on.

    `update(output, target)` adds a batch on the device without a host sync; `compute()` reads the
    value (a float, or a tensor for the confusion matrix); `state_dict()` holds only tensors (and
    plain data), so a run resumes from it bit for bit. Hand-written metrics keep their
    accumulators in `_state` (made by `_new_state`); the torchmetrics-backed ones override the
    state methods.

    Attributes:
        name: the key the metric is logged under (prefixed with `val_` for validation).
        higher_is_better: which way is better, for checkpointing and early stopping.
    """

    name = "metric"
    higher_is_better: bool | None = True

    def __init__(self) -> None:
        self._state: dict[str, Tensor] | None = None

    def _new_state(self, device: torch.device) -> dict[str, Tensor]:
        raise NotImplementedError

    def _state_on(self, device: torch.device) -> dict[str, Tensor]:
        """The accumulators, created on first use and moved once if the device changes."""
        if self._state is None:
            self._state = self._new_state(device)
        elif next(iter(self._state.values())).device != device:
            self._state = {key: value.to(device) for key, value in self._state.items()}
        return self._state

    def update(self, output: Tensor, target: Tensor) -> None:
        raise NotImplementedError

    def compute(self) -> float | Tensor:
        raise NotImplementedError

    def reset(self) -> None:
        self._state = None

    def state_dict(self) -> dict[str, Tensor]:
        if self._state is None:
            return {}
        return {key: value.detach().clone() for key, value in self._state.items()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self._state = {key: value.clone() for key, value in state.items()} or None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _sum_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64


class MeanMetric(Metric):
    """Running mean of a value, e.g. the loss: `update(loss.detach(), weight=batch_size)`."""

    higher_is_better = False

    def __init__(self, name: str = "loss") -> None:
        super().__init__()
        self.name = name

    def _new_state(self, device: torch.device) -> dict[str, Tensor]:
        dtype = _sum_dtype(device)
        return {
            "total": torch.zeros((), dtype=dtype, device=device),
            "count": torch.zeros((), dtype=dtype, device=device),
        }

    def update(self, value: Tensor, weight: float | Tensor = 1.0) -> None:
        """Add `value` (every element counts once) with weight `weight`."""
        value = value.detach()
        state = self._state_on(value.device)
        state["total"] += value.sum() * weight
        state["count"] += value.numel() * weight

    def compute(self) -> float:
        if self._state is None:
            return math.nan
        total, count = self._state["total"].item(), self._state["count"].item()
        return total / count if count else math.nan


def _classify(
    output: Tensor, target: Tensor, num_classes: int | None, threshold: float
) -> tuple[Tensor, int, bool]:
    """Predicted class per target, the number of classes, and whether the task is binary."""
    if output.dim() == target.dim() + 1 and output.shape[1] > 1:
        pred, classes, binary = output.argmax(1), output.shape[1], False
    elif output.numel() == target.numel():
        pred, classes, binary = (output.reshape(target.shape) > threshold).long(), 2, True
    else:
        raise ShapeError(
            f"metric got output of shape {tuple(output.shape)} and target of shape "
            f"{tuple(target.shape)}",
            hint="classification outputs are scores (N, C) with class targets (N,), or one "
            "logit (N,) or (N, 1) per binary target",
        )
    if num_classes is not None and num_classes != classes and not (binary and num_classes <= 2):
        raise ShapeError(
            f"metric expected {num_classes} classes but the output has shape "
            f"{tuple(output.shape)} ({classes} classes)",
            hint="make the model's last layer output one score per class",
        )
    return pred, classes, binary


class _Counted(Metric):
    """Accuracy-style metric: `correct` and `count` tensors."""

    def _new_state(self, device: torch.device) -> dict[str, Tensor]:
        return {
            "correct": torch.zeros((), dtype=torch.long, device=device),
            "count": torch.zeros((), dtype=torch.long, device=device),
        }

    def compute(self) -> float:
        if self._state is None:
            return math.nan
        correct, count = self._state["correct"].item(), self._state["count"].item()
        return correct / count if count else math.nan


@METRICS.register("accuracy")
class Accuracy(_Counted):
    """Fraction of targets whose predicted class (argmax, or logit > threshold) is right."""

    name = "accuracy"

    def __init__(self, num_classes: int | None = None, threshold: float = 0.0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.threshold = threshold

    def update(self, output: Tensor, target: Tensor) -> None:
        output = output.detach()
        pred, _, _ = _classify(output, target, self.num_classes, self.threshold)
        state = self._state_on(output.device)
        valid = target >= 0
        state["correct"] += ((pred == target) & valid).sum()
        state["count"] += valid.sum()


@METRICS.register("top_k_accuracy")
class TopKAccuracy(_Counted):
    """Fraction of targets found among the `k` highest-scoring classes."""

    def __init__(self, k: int = 5, num_classes: int | None = None) -> None:
        super().__init__()
        if k < 1:
            raise RecipeError(f"top_k_accuracy needs k >= 1, got {k}", hint="e.g. k: 5")
        self.k = k
        self.num_classes = num_classes
        self.name = f"top{k}_accuracy"

    def update(self, output: Tensor, target: Tensor) -> None:
        output = output.detach()
        if output.dim() != target.dim() + 1 or output.shape[1] < self.k:
            raise ShapeError(
                f"{self.name} needs class scores (N, C) with C >= {self.k}, got output "
                f"{tuple(output.shape)} for target {tuple(target.shape)}",
                hint="use k <= the number of classes, or 'accuracy' for binary tasks",
            )
        state = self._state_on(output.device)
        top = output.topk(self.k, dim=1).indices
        hits = (top == target.unsqueeze(1)).any(1)
        valid = target >= 0
        state["correct"] += (hits & valid).sum()
        state["count"] += valid.sum()


class _Confusion(Metric):
    """Accumulates a (C, C) confusion matrix on the device; rows are targets, columns predictions.

    Targets >= C cannot be placed, so they are counted in one extra cell and reported by
    `compute()`, which is where checking costs nothing. `torch.bincount` would be the obvious
    tool, but on CUDA it syncs to size its output, so a fixed-size `index_add_` is used instead.
    """

    def __init__(self, num_classes: int | None = None, threshold: float = 0.0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.threshold = threshold
        self.binary: bool | None = None

    def _new_state(self, device: torch.device) -> dict[str, Tensor]:
        assert self.num_classes is not None
        cells = self.num_classes**2 + 2  # + out-of-range targets, + ignored targets
        return {"counts": torch.zeros(cells, dtype=torch.long, device=device)}

    def update(self, output: Tensor, target: Tensor) -> None:
        output = output.detach()
        pred, classes, binary = _classify(output, target, self.num_classes, self.threshold)
        self.num_classes, self.binary = classes, binary
        state = self._state_on(output.device)
        target = target.long().reshape(-1)
        cell = target * classes + pred.reshape(-1)
        cell = torch.where(target >= classes, classes * classes, cell)
        cell = torch.where(target < 0, classes * classes + 1, cell)
        state["counts"].index_add_(0, cell, torch.ones_like(cell))

    def state_dict(self) -> dict[str, Tensor]:
        state = super().state_dict()
        if state:
            state["binary"] = torch.tensor(bool(self.binary))
        return state

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        state = dict(state)
        binary = state.pop("binary", None)
        super().load_state_dict(state)
        if state:  # so that compute() works before the next update
            self.num_classes = math.isqrt(state["counts"].numel() - 2)
            self.binary = bool(binary) if binary is not None else None

    def matrix(self) -> Tensor:
        """The (C, C) confusion matrix on the CPU; raises if some targets were out of range."""
        if self._state is None or self.num_classes is None:
            classes = self.num_classes or 0
            return torch.zeros(classes, classes, dtype=torch.long)
        counts = self._state["counts"].cpu()
        classes = self.num_classes
        bad = int(counts[classes * classes])
        if bad:
            raise _out_of_range(bad, classes)
        return counts[: classes * classes].reshape(classes, classes)


@METRICS.register("confusion_matrix")
class ConfusionMatrix(_Confusion):
    """The confusion matrix itself: `compute()` returns a (C, C) int64 CPU tensor."""

    name = "confusion_matrix"
    higher_is_better = None

    def compute(self) -> Tensor:
        return self.matrix()


def _out_of_range(bad: int, classes: int) -> DataError:
    return DataError(
        f"{bad} target(s) are >= the number of classes ({classes})",
        hint="class targets must be indices 0..C-1; check num_classes and the labels",
    )


def _compute(metric: Any) -> Tensor:
    """`compute()` of a torchmetrics metric whose counts may have come by `merge_state`.

    torchmetrics warns when `compute()` comes before any `update()`; merged counts are real.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The ``compute`` method of metric")
        return metric.compute()


class _ClassScore(_Confusion):
    """Precision, recall or F1 from the confusion matrix, averaged as asked.

    `average=None` means "binary" (the positive class) for one-logit binary outputs and "macro"
    otherwise, as scikit-learn does. "macro" averages over the classes that occur in the targets
    or predictions; "weighted" weights classes by their number of targets; "micro" pools counts.
    A score with nothing to divide by is 0 (scikit-learn's zero_division=0); with no targets at
    all the result is NaN. The per-class counts go to torchmetrics, which does the arithmetic.
    """

    kind = ""
    averages = ("macro", "micro", "weighted", "binary")
    torchmetrics_classes = ("", "")  # (binary, multiclass) in torchmetrics.classification

    def __init__(
        self, num_classes: int | None = None, average: str | None = None, threshold: float = 0.0
    ) -> None:
        super().__init__(num_classes, threshold)
        if average is not None and average not in self.averages:
            raise RecipeError(
                f"unknown average '{average}' for {self.kind}",
                hint=f"choose one of: {', '.join(self.averages)}",
            )
        self.average = average
        self.name = self.kind if average is None else f"{self.kind}_{average}"

    def compute(self) -> float:
        if self._state is None:
            return math.nan
        cm = self.matrix().double()
        average = self.average or ("binary" if self.binary else "macro")
        if average == "binary" and self.num_classes != 2:
            raise RecipeError(
                f"{self.kind} average='binary' needs 2 classes, got {self.num_classes}",
                hint="use average: macro for multiclass tasks",
            )
        if not cm.any():
            return math.nan
        tp = cm.diagonal()
        fp, fn = cm.sum(0) - tp, cm.sum(1) - tp
        counts = {"tp": tp, "fp": fp, "tn": cm.sum() - tp - fp - fn, "fn": fn}

        from torchmetrics import classification

        binary, multiclass = (getattr(classification, n) for n in self.torchmetrics_classes)
        if average == "binary":  # the positive class's counts
            metric = binary(validate_args=False)
            counts = {key: value[1:] for key, value in counts.items()}
        else:
            metric = multiclass(self.num_classes, average=average, validate_args=False)
            if average == "micro":  # torchmetrics keeps micro counts pooled
                counts = {key: value.sum().reshape(1) for key, value in counts.items()}
        metric.merge_state(counts)
        return float(_compute(metric))


@METRICS.register("precision")
class Precision(_ClassScore):
    """Of the targets predicted as a class, the fraction that belong to it."""

    kind = "precision"
    torchmetrics_classes = ("BinaryPrecision", "MulticlassPrecision")


@METRICS.register("recall")
class Recall(_ClassScore):
    """Of the targets of a class, the fraction predicted as that class."""

    kind = "recall"
    torchmetrics_classes = ("BinaryRecall", "MulticlassRecall")


@METRICS.register("f1")
class F1(_ClassScore):
    """Harmonic mean of precision and recall."""

    kind = "f1"
    torchmetrics_classes = ("BinaryF1Score", "MulticlassF1Score")


_WIDE_FLOATS = (torch.float32, torch.float64)


class _Regression(Metric):
    """A torchmetrics regression metric over every target value, made on the first update.

    Its error sum is float64 (float32 on MPS, which has no float64). The state is saved as
    `{"error": sum, "count": n}` and merged back into a fresh torchmetrics metric on load.
    """

    higher_is_better = False
    error_state = ""  # the name of torchmetrics' error-sum state

    def __init__(self, num_classes: int | None = None) -> None:
        super().__init__()  # num_classes is accepted so a recipe can pass it to every metric
        self._metric: Any = None  # a torchmetrics.Metric once there is something to hold

    def _new_metric(self) -> Any:
        raise NotImplementedError

    def _metric_on(self, device: torch.device) -> Any:
        if self._metric is None:
            self._metric = self._new_metric().set_dtype(_sum_dtype(device)).to(device)
        elif self._metric.device != device:
            self._metric = self._metric.to(device)
        return self._metric

    def update(self, output: Tensor, target: Tensor) -> None:
        # Lean on purpose: this may run every step. torchmetrics updates without autograd.
        if output.numel() != target.numel():
            raise ShapeError(
                f"{self.name} got output of shape {tuple(output.shape)} and target of shape "
                f"{tuple(target.shape)}",
                hint="regression outputs need one value per target",
            )
        if output.dtype not in _WIDE_FLOATS:  # e.g. bf16 under autocast: sum in float32
            output = output.float()
        metric = self._metric
        if metric is None or metric.device != output.device:
            metric = self._metric_on(output.device)
        metric.update(output.reshape(-1), target.reshape(-1))

    def compute(self) -> float:
        if self._metric is None:
            return math.nan
        return float(_compute(self._metric))

    def reset(self) -> None:
        self._metric = None

    def state_dict(self) -> dict[str, Tensor]:
        if self._metric is None:
            return {}
        error, count = getattr(self._metric, self.error_state), self._metric.total
        return {"error": error.detach().clone(), "count": count.detach().clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.reset()
        if state:
            self._metric_on(state["error"].device).merge_state(
                {self.error_state: state["error"], "total": state["count"]}
            )


@METRICS.register("mae")
class MAE(_Regression):
    """Mean absolute error (torchmetrics' `MeanAbsoluteError`)."""

    name = "mae"
    error_state = "sum_abs_error"

    def _new_metric(self) -> Any:
        from torchmetrics.regression import MeanAbsoluteError

        return MeanAbsoluteError()


@METRICS.register("rmse")
class RMSE(_Regression):
    """Root mean squared error (torchmetrics' `MeanSquaredError(squared=False)`)."""

    name = "rmse"
    error_state = "sum_squared_error"

    def _new_metric(self) -> Any:
        from torchmetrics.regression import MeanSquaredError

        return MeanSquaredError(squared=False)


@METRICS.register("roc_auc")
class RocAuc(Metric):
    """Area under the ROC curve: binary, or one-vs-rest macro average over classes.

    Ranking needs every score at once, so update keeps the scores and targets on the device (a
    list of detached batch tensors, no copy) and `compute()` hands them to torchmetrics' exact
    `binary_auroc` (every threshold; its arithmetic is float32, so it agrees with scikit-learn to
    ~1e-7). Multiclass scores are softmax probabilities. A class absent from the targets (or
    present in all of them) has no AUC and is left out of the average; when no class has one the
    result is NaN, not an error. Targets >= the number of classes raise `DataError`.
    """

    name = "roc_auc"

    def __init__(self, num_classes: int | None = None) -> None:
        super().__init__()
        self.num_classes = num_classes
        self._scores: list[Tensor] = []
        self._targets: list[Tensor] = []

    def update(self, output: Tensor, target: Tensor) -> None:
        output = output.detach()
        _, classes, binary = _classify(output, target, self.num_classes, 0.0)
        if binary:
            scores = output.reshape(-1)
        else:
            scores = output.float().softmax(1).movedim(1, -1).reshape(-1, classes)
        self._scores.append(scores)
        self._targets.append(target.detach().reshape(-1))

    def compute(self) -> float:
        if not self._scores:
            return math.nan
        from torchmetrics.functional.classification import binary_auroc

        state = self.state_dict()
        keep = state["targets"] >= 0
        scores, target = state["scores"][keep].double(), state["targets"][keep].long()
        if scores.dim() == 1:  # one logit per target: class 1 is the positive class
            columns, classes = {1: scores}, 2
        else:  # one-vs-rest
            columns, classes = dict(enumerate(scores.unbind(1))), scores.shape[1]
        bad = int((target >= classes).sum())
        if bad:
            raise _out_of_range(bad, classes)
        aucs = []
        for c, column in columns.items():
            positives = (target == c).long()
            if 0 < int(positives.sum()) < len(target):  # else this class has no AUC
                auc = binary_auroc(_unit_ranks(column), positives, thresholds=None)
                aucs.append(float(auc))
        return sum(aucs) / len(aucs) if aucs else math.nan

    def reset(self) -> None:
        self._scores, self._targets = [], []

    def state_dict(self) -> dict[str, Tensor]:
        if not self._scores:
            return {}
        # Joined on the device of the latest batch (earlier ones may come from a resume on another
        # device), then copied to the CPU once, not once per batch.
        device = self._scores[-1].device
        return {
            "scores": torch.cat([s.to(device) for s in self._scores]).cpu(),
            "targets": torch.cat([t.to(device) for t in self._targets]).cpu(),
        }

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.reset()
        if state:
            self._scores, self._targets = [state["scores"].clone()], [state["targets"].clone()]


def _unit_ranks(scores: Tensor) -> Tensor:
    """Scores replaced by their dense rank scaled to [0, 1]: the same order and ties.

    An AUC depends only on the order of the scores. Handing torchmetrics values in [0, 1] keeps it
    from applying a sigmoid to logits, which in floating point ties large logits together.
    """
    distinct, rank = torch.unique(scores, return_inverse=True)
    return rank.double() / max(len(distinct) - 1, 1)
