"""Learning-rate schedules: their shapes, their errors, and exact resume from a state dict."""

from __future__ import annotations

import io
import itertools
import math

import pytest
import torch
from torch import nn

from layerwise.errors import RecipeError
from layerwise.train.schedules import SCHEDULES, Schedule, create_schedule

LR = 0.1


def _optimizer(momentum: float = 0.9) -> torch.optim.Optimizer:
    return torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=LR, momentum=momentum)


def _make(name: str, epochs: int = 4, steps: int = 5, **kwargs) -> Schedule:
    return create_schedule(name, _optimizer(), epochs=epochs, steps_per_epoch=steps, **kwargs)


def _run(schedule: Schedule, n: int, metrics: list[float] | None = None) -> list[float]:
    """Step n times (an optimizer step first, as in training) and return the rates used."""
    lrs = []
    for i in range(n):
        lrs.append(schedule.last_lr)
        schedule.optimizer.step()
        schedule.step(metrics[i] if metrics else None)
    return lrs


def test_registry_lists_the_schedules() -> None:
    assert SCHEDULES.names() == ["constant", "cosine", "onecycle", "plateau", "step", "warmup"]


def test_constant_keeps_the_rate() -> None:
    schedule = _make("constant")
    assert schedule.per_step is False
    assert _run(schedule, 6) == [LR] * 6


def test_step_decays_every_step_size_epochs() -> None:
    schedule = _make("step", step_size=2, gamma=0.5)
    assert schedule.per_step is False
    assert _run(schedule, 6) == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025])


def test_cosine_follows_the_formula_and_holds_min_lr_at_the_end() -> None:
    schedule = _make("cosine", epochs=2, steps=5, min_lr=0.01)
    assert schedule.per_step is True
    lrs = _run(schedule, 10)
    expected = [0.01 + 0.09 * (1 + math.cos(math.pi * k / 10)) / 2 for k in range(10)]
    assert lrs == pytest.approx(expected)
    _run(schedule, 5)  # training longer than planned must not climb back up
    assert schedule.last_lr == pytest.approx(0.01)


def test_cosine_warmup_rises_linearly_then_decays() -> None:
    schedule = _make("cosine", epochs=4, steps=5, warmup_epochs=1)
    lrs = _run(schedule, 20)
    assert lrs[:6] == pytest.approx([LR * (k + 1) / 6 for k in range(5)] + [LR])
    assert all(a > b for a, b in itertools.pairwise(lrs[5:]))
    with pytest.raises(RecipeError, match="warmup_epochs"):
        _make("cosine", epochs=2, warmup_epochs=2)


def test_onecycle_peaks_at_max_lr_at_pct_start() -> None:
    schedule = _make("onecycle", epochs=10, steps=10, max_lr=1.0, pct_start=0.3)
    lrs = _run(schedule, 100)
    assert lrs[0] == pytest.approx(1.0 / 25)
    assert max(lrs) == pytest.approx(1.0)
    assert lrs.index(max(lrs)) == 29  # end of the first 30% of the 100 steps
    assert lrs[-1] == pytest.approx(1.0 / 25 / 1e4)
    _run(schedule, 3)  # PyTorch raises past the last step; the Schedule holds the final rate
    assert schedule.last_lr == pytest.approx(lrs[-1])


def test_onecycle_defaults_to_the_optimizer_rate_and_spares_plain_sgd_momentum() -> None:
    plain = create_schedule("onecycle", _optimizer(0.0), epochs=1, steps_per_epoch=10)
    assert max(_run(plain, 10)) == pytest.approx(LR)
    assert plain.optimizer.param_groups[0]["momentum"] == 0.0
    with_momentum = _make("onecycle", epochs=1, steps=10)
    _run(with_momentum, 3)
    assert 0.85 < with_momentum.optimizer.param_groups[0]["momentum"] < 0.95


def test_warmup_then_constant() -> None:
    schedule = _make("warmup", warmup_steps=4)
    assert _run(schedule, 7) == pytest.approx([0.02, 0.04, 0.06, 0.08, LR, LR, LR])
    by_epochs = _make("warmup", steps=2, warmup_epochs=2)
    assert _run(by_epochs, 5) == pytest.approx([0.02, 0.04, 0.06, 0.08, LR])
    for kwargs in ({}, {"warmup_steps": 2, "warmup_epochs": 1}):
        with pytest.raises(RecipeError, match="exactly one"):
            _make("warmup", **kwargs)


def test_plateau_reduces_after_patience_epochs_without_improvement() -> None:
    schedule = _make("plateau", patience=2, factor=0.5)
    assert schedule.per_step is False and schedule.monitor == "val_loss"
    lrs = _run(schedule, 7, metrics=[1.0, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9])
    # best at epoch 2; epochs 3 and 4 are within patience; epoch 5 is the third bad one
    assert lrs == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05])


def test_plateau_does_not_reduce_while_improving_and_maximises_accuracy() -> None:
    improving = _make("plateau", patience=1)
    assert _run(improving, 5, metrics=[1.0, 0.8, 0.6, 0.4, 0.2]) == [LR] * 5
    accuracy = _make("plateau", monitor="val_accuracy", patience=1)
    assert accuracy.scheduler.mode == "max"
    assert _run(accuracy, 5, metrics=[0.5, 0.6, 0.7, 0.8, 0.9]) == [LR] * 5


def test_plateau_without_a_metric_is_a_clear_error() -> None:
    schedule = _make("plateau")
    with pytest.raises(RecipeError, match="val_loss") as info:
        schedule.step()
    assert "validation" in info.value.hint


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("unknown", {}),
        ("cosine", {"warmup": 1}),  # not an argument
        ("step", {}),  # step_size is required
        ("step", {"step_size": 0}),
        ("plateau", {"mode": "sideways"}),
        ("plateau", {"factor": 2.0}),  # PyTorch's range check
    ],
)
def test_bad_schedules_are_recipe_errors(name: str, kwargs: dict) -> None:
    with pytest.raises(RecipeError):
        _make(name, **kwargs)


def test_run_length_must_be_positive() -> None:
    with pytest.raises(RecipeError, match="epochs"):
        create_schedule("cosine", _optimizer(), epochs=0, steps_per_epoch=3)


def _roundtrip(state: dict) -> dict:
    """Through torch.save and a weights_only load, as a checkpoint goes."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


SCHEDULE_CASES = [
    ("constant", {}),
    ("step", {"step_size": 1, "gamma": 0.7}),
    ("cosine", {"warmup_epochs": 1, "min_lr": 0.001}),
    ("cosine", {}),
    ("onecycle", {}),
    ("warmup", {"warmup_steps": 6}),
    ("plateau", {"patience": 1, "factor": 0.5}),
]


@pytest.mark.parametrize("load_optimizer", [True, False])
@pytest.mark.parametrize(("name", "kwargs"), SCHEDULE_CASES)
def test_state_dict_resumes_exactly(name: str, kwargs: dict, load_optimizer: bool) -> None:
    metrics = [1.0, 0.9, 0.95, 0.97, 0.99, 0.8, 0.85, 0.9, 0.95, 0.97, 0.99, 1.0]
    k, n = 7, 12
    uninterrupted = _run(_make(name, epochs=4, steps=3, **kwargs), n, metrics)

    first = _make(name, epochs=4, steps=3, **kwargs)
    before = _run(first, k, metrics[:k])
    saved = _roundtrip({"schedule": first.state_dict(), "optimizer": first.optimizer.state_dict()})

    resumed = _make(name, epochs=4, steps=3, **kwargs)
    if load_optimizer:
        resumed.optimizer.load_state_dict(saved["optimizer"])
    resumed.load_state_dict(saved["schedule"])
    after = _run(resumed, n - k, metrics[k:])
    assert before + after == uninterrupted
    assert len(set(uninterrupted)) > 1 or name == "constant"  # the test can see a change
