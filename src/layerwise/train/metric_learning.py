"""Metric learning: the batch-hard triplet loss, and how an embedding is judged.

Loss (Hermans, Beyer & Leibe 2017, "In defense of the triplet loss"): in a P x K batch, each
anchor is paired with its hardest positive (the farthest input of the same identity) and its
hardest negative (the nearest input of another identity), and pays `relu(d(a, p) - d(a, n) +
margin)`. Embeddings are L2-normalised, so distances lie in [0, 2]. Anchors without a positive
in the batch are left out.

Judging an embedding on identities never seen in training:
- verification: every pair of inputs is scored by minus their distance (same identity or not);
  `verification_scores` gives the ROC AUC and the equal error rate (EER: where the false accept
  and false reject rates meet), with the distance threshold at that point;
- identification: `one_shot_top1` enrols one input per identity as its gallery and names every
  other input by its nearest gallery entry; the figure is averaged over every choice of which
  shot is the gallery.

`EqualErrorRate` is the EER as a Trainer metric (lower is better): it keeps the epoch's
embeddings and scores all their pairs once, at `compute()`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from layerwise.errors import DataError
from layerwise.train.metrics import Metric


def pairwise_distances(embeddings: Tensor) -> Tensor:
    """Euclidean distances between all rows `(N, D)` -> `(N, N)` (exactly 0 on the diagonal;
    the square root's gradient is kept finite at 0)."""
    squared = torch.cdist(embeddings, embeddings).square()
    return squared.clamp(min=1e-12).sqrt() * (1 - torch.eye(len(embeddings), device=squared.device))


def batch_hard_triplet_loss(
    embeddings: Tensor, labels: Tensor, margin: float = 0.2
) -> tuple[Tensor, Tensor]:
    """The batch-hard triplet loss (mean over anchors that have a positive) and the share of
    those anchors whose triplet still violates the margin (a training log; 0 means the
    batch taught nothing)."""
    distances = pairwise_distances(embeddings)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    positive = same & ~eye
    hardest_positive = distances.masked_fill(~positive, float("-inf")).amax(dim=1)
    hardest_negative = distances.masked_fill(same, float("inf")).amin(dim=1)
    has_both = positive.any(dim=1) & (~same).any(dim=1)
    violation = (hardest_positive - hardest_negative + margin).clamp(min=0)
    violation = torch.where(has_both, violation, torch.zeros_like(violation))
    anchors = has_both.sum().clamp(min=1)
    active = ((violation > 0) & has_both).sum() / anchors
    return violation.sum() / anchors, active


def pair_scores(embeddings: Tensor, labels: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Every unordered pair `i < j`: (same identity 0/1, distance)."""
    distances = torch.cdist(embeddings.double(), embeddings.double())
    i, j = torch.triu_indices(len(labels), len(labels), offset=1)
    same = (labels[i] == labels[j]).cpu().numpy().astype(np.int8)
    return same, distances[i, j].cpu().numpy()


def equal_error_rate(same: np.ndarray, distance: np.ndarray) -> tuple[float, float]:
    """(EER, distance threshold at it) for pairs scored by distance (smaller: more alike).

    On the ROC curve (accept when distance <= t) the EER is where the false accept rate equals
    the false reject rate; between two ROC points it is taken where they cross, as the mean of
    the two rates at the closest point.
    """
    from sklearn.metrics import roc_curve

    _check_pairs(same)
    fpr, tpr, thresholds = roc_curve(same, -distance)
    fnr = 1 - tpr
    at = int(np.argmin(np.abs(fnr - fpr)))
    threshold = float(-thresholds[at]) if np.isfinite(thresholds[at]) else float(distance.min())
    return float((fpr[at] + fnr[at]) / 2), threshold


def verification_scores(embeddings: Tensor, labels: Tensor) -> dict[str, float]:
    """ROC AUC, EER and its threshold over all pairs of `embeddings` (see the module
    docstring), with the number of genuine and impostor pairs."""
    from sklearn.metrics import roc_auc_score

    same, distance = pair_scores(embeddings, labels)
    eer, threshold = equal_error_rate(same, distance)
    return {
        "auc": float(roc_auc_score(same, -distance)),
        "eer": eer,
        "threshold": threshold,
        "genuine_pairs": float(same.sum()),
        "impostor_pairs": float(len(same) - same.sum()),
    }


def one_shot_top1(embeddings: Tensor, labels: Tensor) -> float:
    """Identification with one gallery input per identity: the share of the other inputs whose
    nearest gallery entry is their identity, averaged over every choice of gallery shot
    (shot s is each identity's s-th input, for s up to the fewest inputs any identity has)."""
    identities = labels.unique()
    rows = [torch.nonzero(labels == i).flatten() for i in identities]
    shots = min(len(r) for r in rows)
    if len(identities) < 2 or shots < 2:
        raise DataError(
            "one-shot identification needs at least two identities with two inputs each",
            hint="evaluate on more people",
        )
    distances = torch.cdist(embeddings.double(), embeddings.double())
    scores = []
    for shot in range(shots):
        gallery = torch.stack([r[shot] for r in rows])
        probes = torch.cat([torch.cat([r[:shot], r[shot + 1 :]]) for r in rows])
        nearest = distances[probes][:, gallery].argmin(dim=1)
        scores.append(float((identities[nearest] == labels[probes]).double().mean()))
    return float(np.mean(scores))


def embedding_scores(embeddings: Tensor, labels: Tensor) -> dict[str, float]:
    """Verification (`auc`, `eer`, `threshold`) and one-shot identification (`top1`)."""
    return {**verification_scores(embeddings, labels), "top1": one_shot_top1(embeddings, labels)}


class EqualErrorRate(Metric):
    """The verification EER over all pairs of the inputs seen since the last reset."""

    name = "eer"
    higher_is_better = False

    def _new_state(self, device: torch.device) -> dict[str, Tensor]:
        return {
            "embeddings": torch.empty(0, device=device),
            "labels": torch.empty(0, device=device),
        }

    def update(self, output: Tensor, target: Tensor) -> None:
        state = self._state_on(output.device)
        state["embeddings"] = torch.cat([state["embeddings"].view(-1, output.shape[1]), output])
        state["labels"] = torch.cat([state["labels"].long(), target.long()])

    def compute(self) -> float:
        if self._state is None or len(self._state["labels"]) < 2:
            return float("nan")
        labels = self._state["labels"]
        same, distance = pair_scores(self._state["embeddings"].float(), labels)
        if same.all() or not same.any():
            return float("nan")
        return equal_error_rate(same, distance)[0]


def _check_pairs(same: np.ndarray) -> None:
    if same.all() or not same.any():
        raise DataError(
            "verification needs both same-identity and different-identity pairs",
            hint="evaluate on at least two identities with two inputs each",
        )
