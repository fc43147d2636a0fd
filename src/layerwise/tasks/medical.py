"""Scoring a binary diagnostic model as a clinician would: ranking, an operating threshold,
and whether its probabilities can be taken at their word.

- `roc_auc`: how well the scores rank sick above healthy, whatever the threshold.
- `threshold_for_sensitivity`: the operating point is chosen on the validation split (never the
  test split): the highest threshold that still finds the wanted share of the sick (e.g. 95%),
  since a missed cancer costs more than a second look. The test split then says what sensitivity
  and specificity that threshold really gives.
- `expected_calibration_error` and `reliability_plot`: do 80%-sure predictions come true 80% of
  the time? Networks trained with cross-entropy are often over-confident.
- `fit_temperature`: temperature scaling (Guo et al., 2017), one number T fitted on the
  validation split by minimising the negative log-likelihood of softmax(logits / T). It changes
  no prediction's rank (the ROC-AUC and every threshold's verdicts stay the same), only how sure
  the probabilities are.

Scores are the positive class's probabilities; `positive` names which column of a model's
logits is the disease (0 for scikit-learn's breast cancer data, where class 0 is malignant).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from layerwise.errors import DataError


@dataclass
class OperatingPoint:
    """A threshold on the positive-class probability and what it gives on one split."""

    threshold: float
    sensitivity: float  # true positive rate: sick rows called sick
    specificity: float  # true negative rate: healthy rows called healthy

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def positive_probabilities(logits: np.ndarray, positive: int = 1, temperature: float = 1.0):
    """softmax(logits / T)[:, positive] as float64 (logits may also be log-probabilities:
    softmax ignores a per-row shift)."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    weights = np.exp(scaled)
    return weights[:, positive] / weights.sum(axis=1)


def roc_auc(sick: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve of `scores` for the 0/1 labels `sick`."""
    sick = _binary(sick)
    return float(roc_auc_score(sick, scores))


def operating_point(sick: np.ndarray, scores: np.ndarray, threshold: float) -> OperatingPoint:
    """Sensitivity and specificity of calling rows with score >= `threshold` sick."""
    sick = _binary(sick).astype(bool)
    called = np.asarray(scores) >= threshold
    return OperatingPoint(
        threshold=float(threshold),
        sensitivity=float((called & sick).sum() / sick.sum()),
        specificity=float((~called & ~sick).sum() / (~sick).sum()),
    )


def threshold_for_sensitivity(
    sick: np.ndarray, scores: np.ndarray, sensitivity: float = 0.95
) -> OperatingPoint:
    """The highest threshold whose sensitivity on (`sick`, `scores`) is at least `sensitivity`
    (the most specific threshold that still finds that share of the sick)."""
    if not 0.0 < sensitivity <= 1.0:
        raise DataError(
            f"target sensitivity {sensitivity} must be in (0, 1]", hint="e.g. 0.95 for 95%"
        )
    sick = _binary(sick).astype(bool)
    sick_scores = np.sort(np.asarray(scores, dtype=np.float64)[sick])[::-1]
    needed = int(np.ceil(sensitivity * len(sick_scores)))  # sick rows that must be called
    threshold = sick_scores[needed - 1]
    return operating_point(sick, scores, threshold)


def expected_calibration_error(sick: np.ndarray, scores: np.ndarray, bins: int = 10) -> float:
    """ECE of the positive-class probability: rows are put in `bins` equal-width bins of their
    score, and the gap between each bin's mean score and its share of sick rows is averaged,
    weighted by the bin's size (0 is perfectly calibrated)."""
    sick = _binary(sick).astype(np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    which = np.minimum((scores * bins).astype(int), bins - 1)
    error = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            error += members.mean() * abs(scores[members].mean() - sick[members].mean())
    return float(error)


def fit_temperature(logits: np.ndarray, labels: np.ndarray, max_iter: int = 100) -> float:
    """The temperature T > 0 minimising the cross-entropy of softmax(logits / T) on `labels`
    (class indices), fitted by L-BFGS on log T so T stays positive.

    When the logits classify every row right, the cross-entropy falls without end as T goes to
    0 (there is no best T, and a tiny one would make every later prediction 100% sure): then 1.0
    is returned, i.e. no scaling. Small validation splits of an easy task hit this.
    """
    x = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if bool((x.argmax(dim=1) == y).all()):
        return 1.0
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x / log_t.exp(), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp())


def reliability_plot(
    sick: np.ndarray,
    curves: dict[str, np.ndarray],
    path: str | Path,
    bins: int = 10,
    title: str = "Reliability",
) -> Path:
    """A reliability diagram: per score bin, the share of sick rows against the mean score, one
    line per entry of `curves` (name -> scores, e.g. before and after temperature scaling),
    with each curve's ECE in the legend; the diagonal is perfect calibration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sick = _binary(sick).astype(np.float64)
    figure, axis = plt.subplots(figsize=(4.6, 4.2))
    axis.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="perfect")
    for name, scores in curves.items():
        scores = np.asarray(scores, dtype=np.float64)
        which = np.minimum((scores * bins).astype(int), bins - 1)
        used = [b for b in range(bins) if (which == b).any()]
        mean_score = [scores[which == b].mean() for b in used]
        share = [sick[which == b].mean() for b in used]
        ece = expected_calibration_error(sick, scores, bins)
        axis.plot(mean_score, share, marker="o", label=f"{name} (ECE {ece:.3f})")
    axis.set_xlabel("mean predicted probability of the positive class")
    axis.set_ylabel("share of positive rows")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.set_title(title)
    axis.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _binary(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    values = set(np.unique(labels).tolist())
    if not values <= {0, 1} or len(values) < 2:  # True == 1 and False == 0 in a set
        raise DataError(
            f"labels must be 0 (healthy) and 1 (sick), both present; got values {sorted(values)}",
            hint="turn the classes into 0/1 with the disease as 1",
        )
    return labels.astype(np.int64)
