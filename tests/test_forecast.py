"""Forecasting: time-ordered windows (no leakage), seasonal-naive baseline, forecaster shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from layerwise.data import load_dataset
from layerwise.data.forecast import load_forecast, make_windows
from layerwise.errors import DataError
from layerwise.models import create_model
from layerwise.train import Trainer


def series(n: int = 200, features: int = 1) -> np.ndarray:
    t = np.arange(n, dtype=np.float64)
    columns = [np.sin(2 * np.pi * t / 12) + 0.05 * t + k for k in range(features)]
    return np.stack(columns, axis=1)


def test_splits_are_ordered_in_time_and_never_share_a_target() -> None:
    data = make_windows("s", series(), past=24, horizon=6, season=12)
    last_train_target = int(data.train.start.max()) + data.horizon - 1
    assert last_train_target < data.train_end
    assert int(data.val.start.min()) >= data.train_end
    assert int(data.val.start.max()) + data.horizon - 1 < data.val_end
    assert int(data.test.start.min()) >= data.val_end
    assert int(data.test.start.max()) + data.horizon - 1 == len(data.values) - 1


def test_training_windows_and_scale_ignore_everything_after_the_training_part() -> None:
    values = series()
    before = make_windows("s", values, past=24, horizon=6, season=12)
    changed = values.copy()
    changed[before.train_end :] *= 100.0  # rewrite the future: nothing trained on may move
    after = make_windows("s", changed, past=24, horizon=6, season=12)
    assert after.scale == before.scale
    assert torch.equal(after.train.x, before.train.x)
    assert torch.equal(after.train.y, before.train.y)
    assert not torch.equal(after.test.target, before.test.target)


def test_windows_turn_back_into_the_true_values() -> None:
    data = make_windows("s", series(features=3), past=10, horizon=4, season=12)
    assert data.train.x.shape[1:] == (10, 3)
    assert torch.allclose(data.to_original(data.test.y), data.test.target, atol=1e-4)


def test_seasonal_naive_is_exact_on_a_purely_periodic_series() -> None:
    periodic = np.tile(np.arange(12.0), 20)
    data = make_windows("p", periodic, past=24, horizon=15, season=12)
    assert torch.equal(data.seasonal_naive("test"), data.test.target)
    naive = data.seasonal_naive("test", season=1)  # the last observed value, repeated
    assert torch.equal(naive, data.test.anchor[:, None].expand_as(naive))


def test_gaps_and_short_series_are_refused_clearly() -> None:
    gappy = series()
    gappy[50] = np.nan
    with pytest.raises(DataError, match=r"NaN/inf.*time step 50"):
        make_windows("g", gappy, past=12, horizon=3, season=12)
    with pytest.raises(DataError, match="too short"):
        make_windows("s", series(30), past=24, horizon=12, season=12)


@pytest.mark.parametrize(
    "family", ["lstm_forecaster", "gru_forecaster", "cnn_forecaster", "mlp_forecaster"]
)
def test_forecasters_map_a_window_to_the_horizon(family: str) -> None:
    model = create_model(family, num_classes=5)
    assert model(torch.randn(7, 16, 3)).shape == (7, 5)


def test_a_forecaster_beats_the_naive_forecast_on_a_seasonal_series() -> None:
    data = make_windows("s", series(240), past=24, horizon=3, season=12)
    model = create_model("mlp_forecaster", num_classes=3, hidden=32)
    trainer = Trainer(model, loss="mse", metrics=(), lr=3e-3, doctor=False)
    trainer.fit((data.train.x, data.train.y), epochs=40, batch_size=32)
    mae = (data.to_original(trainer.predict(data.test.x)) - data.test.target).abs().mean()
    naive = (data.seasonal_naive("test", season=1) - data.test.target).abs().mean()
    assert mae < 0.5 * naive


def test_bundled_series_are_registered_as_regression_windows() -> None:
    pytest.importorskip("statsmodels")
    bundle = load_dataset("macrodata", past=8, horizon=2)
    assert bundle.task == "regression" and bundle.num_classes == 2
    assert bundle.input_shape == (8, 5)
    co2 = load_forecast("co2")
    assert np.isfinite(co2.values).all() and len(co2.values) == 526
