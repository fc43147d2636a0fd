"""The learning-rate range test: the schedule, early stop, restoring state, the rule, the plot."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from layerwise.errors import LayerwiseError
from layerwise.experiment import build
from layerwise.recipe import parse_recipe
from layerwise.train import Callback, Trainer
from layerwise.train.device import rng_state, set_rng_state
from layerwise.tune.lr_finder import (
    BELOW_EDGE,
    LRFindResult,
    LRRangeTest,
    lr_find,
    plot_lr_find,
    suggest_lr,
)

TINY = """
name: tiny_lr
seed: 3
data: {name: digits, args: {subset: 240}, batch_size: 32, val_fraction: 0.2}
model: {name: mlp, args: {hidden: [16], dropout: 0.1}}
train:
  epochs: 2
  optimizer: {name: adam, lr: 0.01}
  schedule: {name: onecycle}
"""


def tiny(*overrides: str):
    return build(parse_recipe(TINY, overrides=list(overrides)))


class Counter(Callback):
    def __init__(self) -> None:
        self.events = 0

    def on_batch_end(self, trainer) -> None:
        self.events += 1

    def after_backward(self, trainer) -> None:
        self.events += 1


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_rates_grow_geometrically_over_every_step_cycling_the_data():
    experiment = tiny()
    result = lr_find(experiment, start_lr=1e-5, end_lr=1e-3, num_steps=30)
    assert math.ceil(len(experiment.data.train[0]) / 32) * 4 < 30  # the data was cycled
    assert len(result.lrs) == len(result.losses) == len(result.raw_losses) == 30
    assert not result.diverged
    assert result.lrs[0] == pytest.approx(1e-5)
    assert result.lrs[-1] == pytest.approx(1e-3)
    ratios = np.diff(np.log(result.lrs))
    assert np.allclose(ratios, math.log(100) / 29)
    assert all(math.isfinite(v) for v in result.raw_losses)


def test_the_losses_are_a_bias_corrected_moving_average_of_the_raw_losses():
    result = lr_find(tiny(), start_lr=1e-5, end_lr=1e-3, num_steps=12, smooth=0.9)
    raw = result.raw_losses
    assert result.losses[0] == pytest.approx(raw[0])  # bias correction: no pull towards 0
    expected = (0.9 * 0.1 * raw[0] + 0.1 * raw[1]) / (1 - 0.9**2)
    assert result.losses[1] == pytest.approx(expected)


def test_the_test_stops_early_when_the_loss_blows_up():
    experiment = tiny("train.optimizer.name=sgd")
    result = lr_find(experiment, start_lr=1e-3, end_lr=1e6, num_steps=100, diverge=4.0)
    assert result.diverged
    assert len(result.lrs) < 100
    last = result.losses[-1]
    assert not math.isfinite(last) or last > 4.0 * min(result.losses[:-1])
    assert all(v <= 4.0 * min(result.losses[: i + 1]) for i, v in enumerate(result.losses[:-1]))
    assert result.suggestion < result.lrs[-1]


def test_the_experiment_trains_afterwards_exactly_as_if_the_test_had_not_run():
    probed, untouched = tiny(), tiny()
    counter = Counter()
    probed.trainer.callbacks.append(counter)
    callbacks = list(probed.trainer.callbacks)
    before_weights, before_rng = weights(probed.model), rng_state()

    lr_find(probed, start_lr=1e-4, end_lr=1.0, num_steps=20)

    assert counter.events == 0  # callbacks (probes, checkpoints) never see the range test
    assert probed.trainer.callbacks == callbacks
    assert probed.trainer.optimizer is None and probed.trainer.schedule is None
    assert same(weights(probed.model), before_weights)
    assert all(p.grad is None for p in probed.model.parameters())
    after_rng = rng_state()
    assert torch.equal(after_rng["torch"], before_rng["torch"])
    assert after_rng["python"] == before_rng["python"]
    assert torch.equal(after_rng["numpy"][1], before_rng["numpy"][1])

    histories = []
    for experiment in (probed, untouched):
        histories.append(
            experiment.trainer.fit(experiment.data.train, experiment.data.val, epochs=2)
        )
    assert same(weights(probed.model), weights(untouched.model))
    strip = [{k: v for k, v in h.items() if k != "time"} for h in histories[0]]
    assert strip == [{k: v for k, v in h.items() if k != "time"} for h in histories[1]]


def test_a_trained_experiment_keeps_its_optimizer_state_and_continues_identically():
    probed, untouched = tiny(), tiny()
    for experiment in (probed, untouched):
        experiment.trainer.fit(experiment.data.train, epochs=1)
    optimizer = probed.trainer.optimizer
    state = {k: v.clone() for k, v in optimizer.state_dict()["state"][0].items()}
    lr = optimizer.param_groups[0]["lr"]
    rng = rng_state()  # dropout draws from the global RNG: both continuations start from here

    lr_find(probed, start_lr=1e-4, end_lr=1.0, num_steps=15)

    assert probed.trainer.optimizer is optimizer
    assert optimizer.param_groups[0]["lr"] == lr
    assert all(torch.equal(v, optimizer.state_dict()["state"][0][k]) for k, v in state.items())
    probed.trainer.fit(probed.data.train, epochs=2)
    set_rng_state(rng)
    untouched.trainer.fit(untouched.data.train, epochs=2)
    assert same(weights(probed.model), weights(untouched.model))


def test_the_trainers_own_step_runs_with_the_rate_set_in_the_param_groups():
    experiment = tiny("train.grad_clip=0.5", "train.l2=0.001")
    seen: list[float] = []

    class Spy(type(experiment.trainer)):
        def train_step(self, batch):
            seen.append(self.optimizer.param_groups[0]["lr"])
            assert self is not experiment.trainer  # a fresh Trainer of the same class
            assert self.regularizer is not None and self.grad_clip == 0.5
            # no probes, doctor, schedule or metrics watch the range test
            assert [type(c) for c in self.callbacks] == [LRRangeTest] and self.metrics == []
            return super().train_step(batch)

    experiment.trainer.__class__ = Spy
    result = lr_find(experiment, start_lr=1e-4, end_lr=1e-2, num_steps=16)
    assert seen == pytest.approx(result.lrs)  # no schedule moved the rate


def test_the_range_test_is_a_callback_that_stops_fit_after_its_steps():
    experiment = tiny()
    x, y = experiment.data.train
    test = LRRangeTest(1e-5, 1e-2, num_steps=20)
    trainer = Trainer(experiment.model, lr=0.5, metrics=(), doctor=False, callbacks=[test])
    trainer.fit((x, y), epochs=10, batch_size=64)
    per_epoch = math.ceil(len(x) / 64)
    assert trainer.state.step == 20 and trainer.state.epoch == 20 // per_epoch < 10
    assert trainer.stop_reason.source == "LRRangeTest" and not trainer.stop_reason.fatal
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-2)  # the last step's
    result = test.result()
    assert len(result.raw_losses) == 20 and result.lrs == pytest.approx(test.lrs_)


def decades(a: float, b: float) -> float:
    return abs(math.log10(a) - math.log10(b))


def valley(lrs: np.ndarray, fall: float, climb: float, high: float = 2.0) -> np.ndarray:
    """A box-shaped valley: `high` below rate `fall`, 0.5 up to rate `climb`, then `high`."""
    return np.where((lrs >= fall) & (lrs < climb), 0.5, high)


LRS = np.geomspace(1e-7, 10, 100)  # the default grid: 12.4 rates per decade
STEP = math.log10(LRS[1] / LRS[0])


@pytest.mark.parametrize("shift", [0.1, 1.0, 10.0, 100.0])
def test_the_rule_suggests_a_tenth_of_the_valleys_upper_edge(shift):
    # The one-decade average (13 rates) passes 30% of the fall once 4 of its 13 rates lie
    # beyond the climb, i.e. centred 3 rates before it; the edge is the rate before that.
    climb = 1e-2 * shift
    found = suggest_lr(LRS.tolist(), valley(LRS, fall=1e-5 * shift, climb=climb).tolist())
    first_high = int(np.argmax(climb <= LRS))
    assert found.edge_lr == LRS[first_high - 4]
    assert found.lr == pytest.approx(found.edge_lr / BELOW_EDGE)
    assert 1e-5 * shift < found.min_loss_lr < climb
    assert f"{found.edge_lr:.3g}" in found.rule


def test_a_blow_up_counts_no_more_than_a_return_to_the_starting_loss():
    tame = suggest_lr(LRS.tolist(), valley(LRS, 1e-5, 1e-2).tolist())
    wild = valley(LRS, 1e-5, 1e-2, high=2.0)
    wild[LRS >= 1e-2] = 1e4
    wild[-1] = math.inf
    assert suggest_lr(LRS.tolist(), wild.tolist()) == tame


def test_a_flat_floor_moves_the_lowest_point_but_not_the_suggestion():
    rng = np.random.default_rng(0)
    lows, suggestions = [], []
    for _ in range(20):
        noisy = valley(LRS, 1e-5, 1e-1) + rng.normal(0, 0.1, len(LRS))
        found = suggest_lr(LRS.tolist(), noisy.tolist())
        lows.append(math.log10(found.min_loss_lr))
        suggestions.append(math.log10(found.lr))
    assert max(lows) - min(lows) > 1.0  # the floor's lowest point is anywhere on 4 decades
    assert max(suggestions) - min(suggestions) <= 3 * STEP + 1e-9
    assert decades(10 ** np.mean(suggestions), 1e-1 / 10**0.2 / BELOW_EDGE) <= 2 * STEP


def test_the_steepest_rate_is_where_a_smooth_fall_is_fastest():
    knee = 1e-3
    x = np.log10(LRS)
    losses = 2.3 - 2.0 / (1 + np.exp(-(x - math.log10(knee)) * 4)) + np.where(x > -1, 5.0, 0.0)
    found = suggest_lr(LRS.tolist(), losses.tolist())
    assert decades(found.steepest_lr, knee) <= STEP + 1e-9


def _moving_average(values: np.ndarray, beta: float) -> list[float]:
    out, avg = [], 0.0
    for i, value in enumerate(values):
        avg = beta * avg + (1 - beta) * value
        out.append(avg / (1 - beta ** (i + 1)))
    return out


def test_the_moving_average_lags_behind_the_valley_the_rule_reads():
    # a fall at 1e-3, a floor, then a slow climb from 1e-2 back to the start at 1, a blow-up
    x = np.log10(LRS)
    raw = np.where(x < -3, 2.0, 0.5 + 1.5 * np.clip((x + 2) / 2, 0, 1))
    raw[x > 0] = 50.0
    found = suggest_lr(LRS.tolist(), raw.tolist())
    assert 1e-2 < found.edge_lr < 0.1  # 30% of the way back up: x = -2 + 0.3 * 2, less 0.5 window
    lagged = _moving_average(raw, 0.98)
    assert LRS[int(np.argmin(lagged))] > 3 * found.edge_lr  # still falling well past the edge


def test_a_curve_that_only_rises_suggests_the_first_rate_and_says_so():
    lrs = np.geomspace(1e-5, 1, 20)
    found = suggest_lr(lrs.tolist(), np.linspace(1, 5, 20).tolist())
    assert found.min_loss_lr == pytest.approx(1e-5)
    assert found.lr == pytest.approx(1e-5)
    assert "lower start_lr" in found.rule


def test_a_curve_still_falling_at_the_end_says_to_raise_end_lr():
    lrs = np.geomspace(1e-5, 1e-2, 30)
    found = suggest_lr(lrs.tolist(), np.linspace(3, 1, 30).tolist())
    assert found.edge_lr == pytest.approx(1e-2)
    assert found.lr == pytest.approx(1e-3)
    assert "raise end_lr" in found.rule


def test_too_few_finite_losses_or_a_length_mismatch_is_an_error():
    with pytest.raises(LayerwiseError, match="finite"):
        suggest_lr([1e-3, 1e-2, 1e-1], [1.0, math.nan, math.inf])
    with pytest.raises(LayerwiseError, match="3 rates but 2 losses"):
        suggest_lr([1e-3, 1e-2, 1e-1], [1.0, 2.0])


def test_losses_that_start_as_nan_are_read_from_the_first_finite_one():
    raw = valley(LRS, 1e-5, 1e-2)
    raw[:5] = math.nan
    found = suggest_lr(LRS.tolist(), raw.tolist())
    assert found.edge_lr == suggest_lr(LRS.tolist(), valley(LRS, 1e-5, 1e-2).tolist()).edge_lr


def test_plot_is_written(tmp_path):
    lrs = np.geomspace(1e-6, 1, 60)
    raw = valley(lrs, 1e-4, 1e-1) + np.random.default_rng(0).normal(0, 0.1, len(lrs))
    found = suggest_lr(lrs.tolist(), raw.tolist())
    result = LRFindResult(
        lrs=lrs.tolist(),
        losses=_moving_average(raw, 0.9),
        suggestion=found.lr,
        rule=found.rule,
        min_loss_lr=found.min_loss_lr,
        steepest_lr=found.steepest_lr,
        edge_lr=found.edge_lr,
        raw_losses=raw.tolist(),
    )
    path = plot_lr_find(result, tmp_path / "plots" / "lr_find.png")
    assert path == tmp_path / "plots" / "lr_find.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 5000
    assert [p.name for p in path.parent.iterdir()] == ["lr_find.png"]  # no temp file left


def test_result_to_dict_is_json_ready():
    result = LRFindResult(
        [1e-3, 1e-2], [1.0, math.inf], 1e-3, "rule", 1e-3, 1e-3, raw_losses=[1.0, math.nan]
    )
    data = result.to_dict()
    json.dumps(data, allow_nan=False)
    assert data["losses"] == [1.0, None] and data["raw_losses"] == [1.0, None]
    assert data["edge_lr"] is None
    assert data["suggestion"] == 1e-3 and data["rule"] == "rule"


@pytest.mark.parametrize(
    ("kwargs", "culprit"),
    [
        ({"start_lr": 1.0, "end_lr": 1.0}, "start_lr"),
        ({"start_lr": 1.0, "end_lr": 0.1}, "start_lr"),
        ({"start_lr": 0.0}, "start_lr"),
        ({"num_steps": 9}, "num_steps"),
        ({"smooth": 1.0}, "smooth"),
        ({"diverge": 1.0}, "diverge"),
    ],
)
def test_bad_arguments_are_refused_before_anything_runs(kwargs, culprit):
    experiment = tiny()
    before = weights(experiment.model)
    with pytest.raises(LayerwiseError, match=culprit) as info:
        lr_find(experiment, **kwargs)
    assert info.value.hint
    assert same(weights(experiment.model), before)
