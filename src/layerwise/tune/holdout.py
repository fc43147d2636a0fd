"""How auto-fix judges a round: its score on validation rows that are not copies of training rows,
and whether one round beats another by more than noise.

Why not the number of findings: a round with fewer findings is not a better model (a finding of
overfitting on 130 rows can trigger regularisation that costs accuracy). Why not the logged
validation score alone: with leaked or duplicated data the validation rows that copy training
rows are answered from memory, which inflates the broken round. So each round's model is scored
per row on the validation rows that `layerwise.data.overlap.find_copies` (the doctor's own
near-copy search) says have no exact or near copy in that round's training rows. The test split
is never looked at.

Per row, a classifier scores 1 when its top class is the label, 0 otherwise (accuracy, whatever
the loss: label smoothing or class weights change the loss's scale, not what is right); a
regressor scores minus its squared error. A candidate round beats the current best when its
summed per-row gain over the rows both scored exceeds `NOISE_Z` times the root of the summed
squared differences (McNemar's test for right/wrong rows: two trainings that differ only by
chance disagree on a few rows in both directions, and those cancel). Models without in-memory
tensor validation data fall back to the logged final value of the monitor, which must improve
by more than `FALLBACK_MARGIN` of its size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from layerwise.data.overlap import as_rows, find_copies
from layerwise.train.callbacks.base import Callback

NOISE_Z = 1.0  # how many noise units (see `_paired`) the summed per-row gain must exceed
MIN_ROWS = 2  # right/wrong rows: the net number of rows newly right must be at least this
FALLBACK_MARGIN = 0.01  # relative improvement of the logged monitor when rows cannot be scored


@dataclass
class HoldoutScore:
    """A round's validation score: `rows` per validation row (NaN where the row was left out as
    a copy of a training row), or only `value` when rows could not be scored."""

    value: float | None
    rows: list[float] = field(default_factory=list)
    copies_left_out: int = 0
    higher_is_better: bool = True

    @property
    def scored(self) -> int:
        return int(np.isfinite(np.asarray(self.rows, dtype=float)).sum()) if self.rows else 0

    def summary(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "rows_scored": self.scored,
            "copies_left_out": self.copies_left_out,
        }


def beats(candidate: HoldoutScore | None, best: HoldoutScore | None) -> tuple[bool, str]:
    """Whether `candidate` is better than `best` by more than noise, and why (one phrase).

    A round that could not be scored (refused data, no validation split) never beats one that
    could; any scored round beats one that was not.
    """
    if candidate is None or candidate.value is None or not math.isfinite(candidate.value):
        return False, "no validation score"
    if best is None or best.value is None or not math.isfinite(best.value):
        return True, "the earlier round has no validation score"
    new, old = np.asarray(candidate.rows, float), np.asarray(best.rows, float)
    if len(new) and len(new) == len(old):
        both = np.isfinite(new) & np.isfinite(old)
        if both.sum() >= 2:
            return _paired(new[both] - old[both], candidate.higher_is_better)
    gain = candidate.value - best.value
    gain = gain if candidate.higher_is_better else -gain
    margin = FALLBACK_MARGIN * max(abs(best.value), 1e-12)
    verdict = gain > margin
    return verdict, f"logged score {'+' if gain >= 0 else ''}{gain:.4g} vs margin {margin:.3g}"


def _paired(diff: np.ndarray, higher_is_better: bool) -> tuple[bool, str]:
    """A sign-test-like rule on the per-row differences: their sum must exceed `NOISE_Z` times
    the square root of their summed squares. For right/wrong rows that is McNemar's: b rows
    newly right and c newly wrong keep the change only when b - c > NOISE_Z * sqrt(b + c) and
    b - c >= `MIN_ROWS`, so one row better is noise, three better and none worse is not, and
    four better against two worse is not enough."""
    diff = diff if higher_is_better else -diff
    gain, noise = float(diff.sum()), NOISE_Z * math.sqrt(float((diff**2).sum()))
    right_or_wrong = bool(np.isin(diff, (-1.0, 0.0, 1.0)).all())
    verdict = gain > 0 and gain > noise and (not right_or_wrong or gain >= MIN_ROWS)
    n = len(diff)
    if right_or_wrong:
        better, worse = int((diff > 0).sum()), int((diff < 0).sum())
        return verdict, f"{better} rows newly right, {worse} newly wrong of {n} (noise {noise:.2f})"
    return verdict, f"gain {gain / n:+.4g} per row vs noise {noise / n:.4g} on {n} rows"


class HoldoutScorer(Callback):
    """Remembers the trainer of a run so that its final model can be scored afterwards."""

    order = 100

    def __init__(self) -> None:
        self.trainer: Any = None

    def on_fit_start(self, trainer: Any) -> None:
        self.trainer = trainer

    def score(self, fallback: float | None, higher_is_better: bool) -> HoldoutScore:
        """The final model's score on the copy-free validation rows (see the module doc), or
        the logged `fallback` when the data are not in-memory tensors or the task is neither
        classification nor regression."""
        logged = HoldoutScore(fallback, higher_is_better=higher_is_better)
        trainer = self.trainer
        val = getattr(trainer, "val_data", None)
        train = getattr(trainer, "train_data", None)
        if not _tensors(val) or not _tensors(train) or len(val.y) == 0:
            return logged
        x, y = val.x, val.y
        with torch.no_grad():
            out = trainer.predict(x)
        if not isinstance(out, torch.Tensor) or len(out) != len(y):
            return logged
        if y.dtype in (torch.int64, torch.int32) and out.dim() == 2:
            rows = (out.argmax(dim=1) == y.to(out.device)).double()
            higher = True
        elif y.is_floating_point() and out.shape == y.shape:
            rows = -((out.double() - y.double()) ** 2).reshape(len(y), -1).mean(dim=1)
            higher = True
        else:
            return logged
        image = x.dim() >= 3
        copies = find_copies({"train": as_rows(train.x), "val": as_rows(x)}, image=image)
        copied = torch.from_numpy(copies.near["val"]).to(rows.device)
        rows = torch.where(copied, torch.full_like(rows, float("nan")), rows).cpu().numpy()
        kept = rows[np.isfinite(rows)]
        value = float(kept.mean()) if len(kept) else None
        return HoldoutScore(value, rows.tolist(), int(copied.sum()), higher)


def _tensors(batcher: Any) -> bool:
    return (
        batcher is not None
        and isinstance(getattr(batcher, "x", None), torch.Tensor)
        and isinstance(getattr(batcher, "y", None), torch.Tensor)
    )
