"""A small data set's noise is neither a too-high learning rate nor an oscillating loss.

Measured on the doctor's field set, seed 212 (two healthy setups):
- diabetes_regression: 309 rows of standardised targets (variance 1.0), a 10-32-1 MLP, Adam
  3e-3, batches of 16. The first batch, before any update, scored 0.386 (a lucky draw of 16
  rows); epoch 1 averaged 0.741, 1.92x that batch but already below the targets' variance.
- iris_raw_centimetres: 105 rows, a 4-32-3 MLP, Adam 1e-2, 7 batches of 16, 80 epochs. The epoch
  loss climbed twice (0.137 -> 0.245, 0.058 -> 0.205), each time carried by one or two batches
  of the epoch (0.62 and 0.83 at worst, below ln 3 = 1.10): 1.3 standard errors of the epochs'
  means, not updates that overshoot.
"""

from __future__ import annotations

import math

from layerwise.diagnose.rules import RuleContext, curves

DIABETES_EPOCH1 = 0.741
DIABETES_FIRST_BATCH = 0.386


def _regression(first_epoch: float, data: dict | None) -> RuleContext:
    steps = [
        {"kind": "step", "step": 3 * k, "epoch": 1, "loss": v}
        for k, v in enumerate([DIABETES_FIRST_BATCH, 0.558, 0.926, 0.808, 0.594, 0.776, 0.540])
    ]
    history = [{"epoch": 1, "step": 20, "loss": first_epoch}]
    return RuleContext(history, steps, data=data, task="regression", num_classes=None)


def test_lr_too_high_reads_a_regressors_start_against_the_targets_variance() -> None:
    variance = {"task": "regression", "target_variance": 1.0}
    assert curves.lr_too_high(_regression(DIABETES_EPOCH1, variance)) is None
    # Without the variance the lucky first batch is all there is to compare with, as before.
    assert curves.lr_too_high(_regression(DIABETES_EPOCH1, None)) is not None
    # A first epoch 1.5x above what predicting the mean scores is still a rate too high.
    found = curves.lr_too_high(_regression(1.6, variance))
    assert found is not None and found.evidence["baseline"] == 1.0
    assert "1.6x the targets' variance (1)" in found.message


IRIS_LOSS = [0.9991, 0.7019, 0.5402, 0.4243, 0.3669, 0.3219, 0.2853, 0.2581, 0.2378, 0.2216]
IRIS_LOSS += [0.23, 0.1772, 0.1728, 0.1501, 0.1493, 0.1369, 0.2454, 0.1921, 0.1419, 0.1566]
IRIS_LOSS += [0.1108, 0.113, 0.1018, 0.1261, 0.1247, 0.1091, 0.0961, 0.0905, 0.0882, 0.0958]
IRIS_LOSS += [0.0889, 0.0885, 0.1064, 0.1616, 0.143, 0.116, 0.0848, 0.0853, 0.0732, 0.0798]
IRIS_LOSS += [0.1182, 0.0926, 0.0814, 0.0742, 0.0813, 0.0821, 0.0785, 0.0669, 0.0785, 0.0697]
IRIS_LOSS += [0.0683, 0.0668, 0.0646, 0.0635, 0.0594, 0.0592, 0.0582, 0.0579, 0.0669, 0.0621]
IRIS_LOSS += [0.0646, 0.069, 0.0818, 0.0705, 0.0866, 0.1292, 0.205, 0.0879, 0.0649, 0.0543]
IRIS_LOSS += [0.058, 0.0569, 0.0532, 0.0551, 0.051, 0.0684, 0.0998, 0.0569, 0.0556, 0.0872]
# Every batch of the climbs' epochs (measured); other epochs' batches spread around their mean.
IRIS_BATCHES = {
    16: [0.124, 0.123, 0.055, 0.14, 0.189, 0.225, 0.072],
    17: [0.113, 0.144, 0.622, 0.154, 0.117, 0.182, 0.494],
    58: [0.086, 0.106, 0.042, 0.06, 0.025, 0.019, 0.076],
    67: [0.074, 0.055, 0.826, 0.321, 0.009, 0.044, 0.03],
}
SPREAD = [0.6, 1.4, 0.8, 1.2, 0.5, 1.5, 1.0]


def _iris(batches: dict[int, list[float]], probed: bool = True) -> RuleContext:
    history = [{"epoch": e, "step": 7 * e, "loss": v} for e, v in enumerate(IRIS_LOSS, start=1)]
    steps = []
    for e, mean in enumerate(IRIS_LOSS, start=1):
        losses = batches.get(e, [mean * f for f in SPREAD])
        steps += [
            {"kind": "step", "step": 7 * (e - 1) + k, "epoch": e, "loss": v}
            for k, v in enumerate(losses)
        ]
    return RuleContext(history, steps if probed else None, num_classes=3)


def test_oscillating_loss_ignores_climbs_carried_by_a_few_batches_of_a_small_data_set() -> None:
    assert [c[:2] for c in curves.climbs(list(enumerate(IRIS_LOSS, 1)), math.log(3))] == [
        (16, 17),
        (58, 67),
    ]
    assert curves.oscillating_loss(_iris(IRIS_BATCHES)) is None
    # Without probes nothing tells the few batches from the whole epoch: two climbs, as before.
    assert curves.oscillating_loss(_iris(IRIS_BATCHES, probed=False)) is not None
    # The same climbs with every batch of the high epochs raised alike stand out of the noise.
    broad = {**IRIS_BATCHES, 17: [0.245] * 6 + [0.246], 67: [0.205] * 6 + [0.206]}
    found = curves.oscillating_loss(_iris(broad))
    assert found is not None and [c["to_epoch"] for c in found.evidence["climbs"]] == [17, 67]
    # Or with a batch thrown past the untrained model (above ln 3) during each climb.
    thrown = {**IRIS_BATCHES, 17: [*IRIS_BATCHES[17][:6], 1.3], 67: [*IRIS_BATCHES[67][:6], 1.2]}
    assert curves.oscillating_loss(_iris(thrown)) is not None
