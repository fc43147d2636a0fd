"""Diagnostic scoring: the operating threshold, calibration error and temperature scaling."""

from __future__ import annotations

import numpy as np
import pytest

from layerwise.errors import DataError
from layerwise.tasks.medical import (
    expected_calibration_error,
    fit_temperature,
    operating_point,
    positive_probabilities,
    reliability_plot,
    roc_auc,
    threshold_for_sensitivity,
)


def test_threshold_is_the_most_specific_one_that_reaches_the_sensitivity():
    sick = np.array([1] * 20 + [0] * 20)
    scores = np.concatenate([np.linspace(0.5, 0.99, 20), np.linspace(0.0, 0.6, 20)])
    point = threshold_for_sensitivity(sick, scores, 0.95)
    assert point.sensitivity >= 0.95
    assert point.threshold == pytest.approx(scores[1])  # 19 of 20 sick rows at or above it
    above = operating_point(sick, scores, point.threshold + 1e-9)
    assert above.sensitivity < 0.95  # any higher threshold misses one more
    assert point.specificity == pytest.approx(np.mean(scores[20:] < point.threshold))
    with pytest.raises(DataError, match="target sensitivity"):
        threshold_for_sensitivity(sick, scores, 1.5)


def test_ece_is_small_when_calibrated_and_large_when_over_confident():
    rng = np.random.default_rng(0)
    p = rng.random(20000)
    sick = (rng.random(20000) < p).astype(int)
    assert expected_calibration_error(sick, p) < 0.02
    sure = np.where(p > 0.5, 0.99, 0.01)  # right direction, far too sure
    assert expected_calibration_error(sick, sure) > 0.2


def test_temperature_recovers_the_over_confidence_and_keeps_the_ranking():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 2, size=(4000, 2))
    labels = (rng.random(4000) < positive_probabilities(logits, 1)).astype(int)
    temperature = fit_temperature(3.0 * logits, labels)
    assert temperature == pytest.approx(3.0, rel=0.15)
    before = positive_probabilities(3.0 * logits, 1)
    after = positive_probabilities(3.0 * logits, 1, temperature)
    assert roc_auc(labels, before) == pytest.approx(roc_auc(labels, after))
    assert expected_calibration_error(labels, after) < expected_calibration_error(labels, before)


def test_reliability_plot_writes_a_png(tmp_path):
    rng = np.random.default_rng(2)
    p = rng.random(300)
    sick = (rng.random(300) < p).astype(int)
    path = reliability_plot(sick, {"model": p, "sure": np.round(p)}, tmp_path / "r.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_labels_must_be_zero_one_with_both_present():
    with pytest.raises(DataError, match="0 \\(healthy\\) and 1 \\(sick\\)"):
        roc_auc(np.array([1, 2, 1]), np.array([0.1, 0.2, 0.3]))


def test_no_temperature_is_fitted_when_validation_is_separated_perfectly():
    logits = np.array([[2.0, -1.0], [-1.0, 3.0], [0.5, 0.0]])
    assert fit_temperature(logits, np.array([0, 1, 0])) == 1.0  # every row right: no finite T
