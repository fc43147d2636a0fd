"""Metrics accumulated on the device, read once per epoch.

`update(output, target)` runs every step, so it only launches tensor kernels: no `.item()`, no
copies to the host, no Python decisions on tensor values. Counts live in tensors created on the
first update's device. `compute()` is the one place that syncs, once per epoch.

Outputs are what the model returns: class scores `(N, C, ...)` against class indices `(N, ...)`
(argmax decides), or one logit per target `(N,)`/`(N, 1)` for binary tasks (thresholded at
`threshold`, 0 by default, i.e. probability 0.5). Negative targets are ignored, matching the
`ignore_index=-100` padding convention of PyTorch's cross-entropy.

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
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import Tensor

from layerwise.errors import DataError, RecipeError, ShapeError
from layerwise.registry import Registry

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
    """Base class: subclasses define `_new_state`, `update` and `compute`.

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
            raise DataError(
                f"{bad} target(s) are >= the number of classes ({classes})",
                hint="class targets must be indices 0..C-1; check num_classes and the labels",
            )
        return counts[: classes * classes].reshape(classes, classes)


@METRICS.register("confusion_matrix")
class ConfusionMatrix(_Confusion):
    """The confusion matrix itself: `compute()` returns a (C, C) int64 CPU tensor."""

    name = "confusion_matrix"
    higher_is_better = None

    def compute(self) -> Tensor:
        return self.matrix()


def _divide(numerator: Tensor, denominator: Tensor) -> Tensor:
    """Elementwise division with 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    return torch.where(denominator > 0, numerator / denominator.clamp(min=1e-300), 0.0)


class _ClassScore(_Confusion):
    """Precision, recall or F1 from the confusion matrix, averaged as asked.

    `average=None` means "binary" (the positive class) for one-logit binary outputs and "macro"
    otherwise, as scikit-learn does. "macro" averages over the classes that occur in the targets
    or predictions; "weighted" weights classes by their number of targets; "micro" pools counts.
    """

    kind = ""
    averages = ("macro", "micro", "weighted", "binary")

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

    def _score(self, tp: Tensor, predicted: Tensor, actual: Tensor) -> Tensor:
        raise NotImplementedError

    def compute(self) -> float:
        if self._state is None:
            return math.nan
        cm = self.matrix().double()
        tp, predicted, actual = cm.diagonal(), cm.sum(0), cm.sum(1)
        average = self.average or ("binary" if self.binary else "macro")
        if average == "binary":
            if self.num_classes != 2:
                raise RecipeError(
                    f"{self.kind} average='binary' needs 2 classes, got {self.num_classes}",
                    hint="use average: macro for multiclass tasks",
                )
            return float(self._score(tp[1], predicted[1], actual[1]))
        if average == "micro":
            return float(self._score(tp.sum(), predicted.sum(), actual.sum()))
        scores = self._score(tp, predicted, actual)
        if average == "weighted":
            return float(_divide((scores * actual).sum(), actual.sum()))
        present = (predicted + actual) > 0
        return float(scores[present].mean()) if present.any() else math.nan


@METRICS.register("precision")
class Precision(_ClassScore):
    """Of the targets predicted as a class, the fraction that belong to it."""

    kind = "precision"

    def _score(self, tp: Tensor, predicted: Tensor, actual: Tensor) -> Tensor:
        return _divide(tp, predicted)


@METRICS.register("recall")
class Recall(_ClassScore):
    """Of the targets of a class, the fraction predicted as that class."""

    kind = "recall"

    def _score(self, tp: Tensor, predicted: Tensor, actual: Tensor) -> Tensor:
        return _divide(tp, actual)


@METRICS.register("f1")
class F1(_ClassScore):
    """Harmonic mean of precision and recall."""

    kind = "f1"

    def _score(self, tp: Tensor, predicted: Tensor, actual: Tensor) -> Tensor:
        return _divide(2 * tp, predicted + actual)


class _Regression(Metric):
    """Sum of an elementwise error over every target value (float64) and the count."""

    higher_is_better = False

    def __init__(self, num_classes: int | None = None) -> None:
        super().__init__()  # num_classes is accepted so a recipe can pass it to every metric

    def _new_state(self, device: torch.device) -> dict[str, Tensor]:
        dtype = _sum_dtype(device)
        return {
            "error": torch.zeros((), dtype=dtype, device=device),
            "count": torch.zeros((), dtype=torch.long, device=device),
        }

    def _error(self, diff: Tensor) -> Tensor:
        raise NotImplementedError

    def update(self, output: Tensor, target: Tensor) -> None:
        output = output.detach()
        if output.numel() != target.numel():
            raise ShapeError(
                f"{self.name} got output of shape {tuple(output.shape)} and target of shape "
                f"{tuple(target.shape)}",
                hint="regression outputs need one value per target",
            )
        state = self._state_on(output.device)
        diff = output.reshape(-1) - target.reshape(-1).to(output.dtype)
        state["error"] += self._error(diff).sum()
        state["count"] += diff.numel()

    def _mean_error(self) -> float:
        if self._state is None:
            return math.nan
        error, count = self._state["error"].item(), self._state["count"].item()
        return error / count if count else math.nan


@METRICS.register("mae")
class MAE(_Regression):
    """Mean absolute error."""

    name = "mae"

    def _error(self, diff: Tensor) -> Tensor:
        return diff.abs()

    def compute(self) -> float:
        return self._mean_error()


@METRICS.register("rmse")
class RMSE(_Regression):
    """Root mean squared error."""

    name = "rmse"

    def _error(self, diff: Tensor) -> Tensor:
        return diff.square()

    def compute(self) -> float:
        return math.sqrt(self._mean_error())


@METRICS.register("roc_auc")
class RocAuc(Metric):
    """Area under the ROC curve: binary, or one-vs-rest macro average over classes.

    Ranking needs every score at once, so scores and targets are kept on the device (a list of
    detached batch tensors, no copy) and handed to scikit-learn at `compute()`. Multiclass scores
    are softmax probabilities. A class absent from the targets (or present in all of them) has no
    AUC and is left out of the average; when no class has one the result is NaN, not an error.
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
        state = self.state_dict()
        scores, target = state["scores"].double().numpy(), state["targets"].numpy()
        keep = target >= 0
        scores, target = scores[keep], target[keep].astype(np.int64)
        if scores.ndim == 1:
            return _binary_auc(target, scores)
        aucs = [_binary_auc(target == c, scores[:, c]) for c in range(scores.shape[1])]
        aucs = [auc for auc in aucs if not math.isnan(auc)]
        return float(np.mean(aucs)) if aucs else math.nan

    def reset(self) -> None:
        self._scores, self._targets = [], []

    def state_dict(self) -> dict[str, Tensor]:
        if not self._scores:
            return {}
        # On the CPU: batches may come from different devices after a resume.
        return {
            "scores": torch.cat([s.cpu() for s in self._scores]),
            "targets": torch.cat([t.cpu() for t in self._targets]),
        }

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.reset()
        if state:
            self._scores, self._targets = [state["scores"].clone()], [state["targets"].clone()]


def _binary_auc(target: np.ndarray, scores: np.ndarray) -> float:
    positives = int(np.count_nonzero(target))
    if positives == 0 or positives == len(target):
        return math.nan
    return float(roc_auc_score(target, scores))
