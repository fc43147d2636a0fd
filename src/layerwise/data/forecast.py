"""Time series as supervised samples: windows of the past -> the next `horizon` values.

A series is split **in time** before any window is cut: training windows have every target before
`train_end`, validation windows every target in `[train_end, val_end)`, test windows every target
at or after `val_end`. The inputs of a validation or test window may reach back before its
boundary (that is the past a forecaster is allowed to see), but no target value of a later split
is ever an input or a target of an earlier one, and the scale is fitted on the training part only.

Each window is expressed relative to its last observed value (the *anchor*): inputs become
`x - x[-1]` per feature and targets `y - anchor`, both divided by the standard deviation of the
training part's one-step changes. A forecaster then learns the change from "tomorrow = today"
(the naive forecast), which carries over to trending series (CO2) whose test values lie above
everything seen in training. `ForecastData.to_original` undoes it.

Statsmodels ships the series (no download): `sunspots` (yearly, 1700-2008), `co2` (weekly Mauna
Loa, averaged to months, gaps interpolated), `macrodata` (US quarterly, 1959-2009: real GDP
growth from itself and four other indicators).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from layerwise.data.bundle import DatasetBundle
from layerwise.data.registry import DATASETS
from layerwise.errors import DataError, LayerwiseError


@dataclass
class Windows:
    """The windows of one split: normalised tensors plus what turns them back into values.

    Attributes:
        x: `(N, past, features)` inputs, relative to each window's last value, scaled.
        y: `(N, horizon)` targets, relative to the anchor, scaled.
        anchor: `(N,)` the last observed target value of each window (original units).
        target: `(N, horizon)` the true future values (original units).
        start: `(N,)` the time index of each window's first target.
    """

    x: Tensor
    y: Tensor
    anchor: Tensor
    target: Tensor
    start: Tensor


@dataclass
class ForecastData:
    """A series cut into time-ordered train/val/test windows, with its scale and season."""

    name: str
    values: np.ndarray  # (T, features) float64, original units
    target_index: int
    past: int
    horizon: int
    season: int
    train_end: int
    val_end: int
    scale: float
    train: Windows
    val: Windows | None
    test: Windows

    def to_original(self, scaled: Tensor, split: str = "test") -> Tensor:
        """Model outputs `(N, horizon)` of `split`'s windows in the series' own units."""
        windows = getattr(self, split)
        return scaled.detach().cpu().double() * self.scale + windows.anchor[:, None]

    def seasonal_naive(self, split: str = "test", season: int | None = None) -> Tensor:
        """The seasonal-naive forecast of every window: the value one season before each target
        step, taken from the window's past only (season 1 is the plain naive forecast)."""
        m = season or self.season
        windows = getattr(self, split)
        series = torch.tensor(self.values[:, self.target_index])
        steps = torch.arange(self.horizon)
        # Step h (0-based) of a window starting at s repeats the value at s + h - m*ceil((h+1)/m).
        back = m * torch.div(steps + m, m, rounding_mode="floor")
        index = windows.start[:, None] + steps[None, :] - back[None, :]
        return series[index]

    def mase_scale(self) -> float:
        """The mean absolute seasonal difference of the training part (MASE's denominator)."""
        train = self.values[: self.train_end, self.target_index]
        return float(np.mean(np.abs(train[self.season :] - train[: -self.season])))

    def bundle(self) -> DatasetBundle:
        """The windows as a regression `DatasetBundle` (one output per horizon step)."""
        val = None if self.val is None else (self.val.x, self.val.y)
        return DatasetBundle(
            name=self.name,
            train=(self.train.x, self.train.y),
            val=val,
            test=(self.test.x, self.test.y),
            num_classes=self.horizon,
            input_shape=tuple(self.train.x.shape[1:]),
            task="regression",
        )


def make_windows(
    name: str,
    values: np.ndarray,
    *,
    past: int,
    horizon: int,
    season: int,
    target_index: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
) -> ForecastData:
    """Cut `values` (T,) or (T, features) into time-ordered train/val/test windows.

    `val_fraction` and `test_fraction` are shares of the time steps whose values are forecast
    targets; the training part is everything before them. Raises `DataError` for NaN or inf
    values (fill gaps first) and for a series too short for the window and horizon.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2:
        raise DataError(
            f"series '{name}' must be 1-D (time) or 2-D (time, features), got shape {values.shape}",
            hint="give one row per time step",
        )
    bad = ~np.isfinite(values)
    if bad.any():
        first = int(np.argwhere(bad)[0, 0])
        raise DataError(
            f"series '{name}' has {int(bad.sum())} NaN/inf values (the first at time step {first})",
            hint="fill the gaps first, e.g. pandas' Series.interpolate(), or drop those steps",
        )
    if past < 1 or horizon < 1 or season < 1:
        raise DataError(
            f"past, horizon and season must be >= 1 (got {past}, {horizon}, {season})",
            hint="e.g. past: 24, horizon: 3",
        )
    t = len(values)
    val_end = t - round(test_fraction * t)
    train_end = val_end - round(val_fraction * t)
    # Every split needs at least one window; the first window needs `past` steps of history
    # and a seasonal-naive forecast needs one season of it.
    first_target = max(past, season)
    if train_end - first_target < horizon or t - val_end < horizon:
        raise DataError(
            f"series '{name}' has {t} time steps: too short for past={past}, "
            f"horizon={horizon} with {test_fraction:.0%} of it held out for testing",
            hint="shorten past or horizon, or use a longer series",
        )
    if train_end < val_end and val_end - train_end < horizon:
        raise DataError(
            f"the validation part of '{name}' ({val_end - train_end} steps) is shorter than "
            f"the horizon ({horizon})",
            hint="raise val_fraction, shorten the horizon, or set val_fraction: 0",
        )
    train_diffs = np.diff(values[:train_end, target_index])
    scale = float(np.std(train_diffs)) or 1.0
    feature_scale = np.std(np.diff(values[:train_end], axis=0), axis=0)
    feature_scale[feature_scale == 0] = 1.0

    def cut(lo: int, hi: int) -> Windows | None:
        starts = np.arange(max(lo, first_target), hi - horizon + 1)
        if len(starts) == 0:
            return None
        idx_past = starts[:, None] + np.arange(-past, 0)[None, :]
        idx_future = starts[:, None] + np.arange(horizon)[None, :]
        x = values[idx_past]  # (N, past, F)
        last = x[:, -1:, :]
        anchor = last[:, 0, target_index]
        target = values[idx_future, target_index]
        return Windows(
            x=torch.from_numpy((x - last) / feature_scale).float(),
            y=torch.from_numpy((target - anchor[:, None]) / scale).float(),
            anchor=torch.from_numpy(anchor),
            target=torch.from_numpy(target),
            start=torch.from_numpy(starts),
        )

    return ForecastData(
        name=name,
        values=values,
        target_index=target_index,
        past=past,
        horizon=horizon,
        season=season,
        train_end=train_end,
        val_end=val_end,
        scale=scale,
        train=cut(0, train_end),
        val=cut(train_end, val_end) if val_end > train_end else None,
        test=cut(val_end, t),
    )


# ------------------------------------------------------------------------------ the series
def _statsmodels_datasets():
    try:
        import statsmodels.api as sm
    except ImportError as exc:
        raise LayerwiseError(
            "the forecasting datasets need statsmodels, which is not installed",
            hint="pip install 'layerwise[timeseries]'",
        ) from exc
    return sm.datasets


def sunspots_series() -> np.ndarray:
    """Yearly mean sunspot numbers, 1700-2008 (309 values)."""
    return _statsmodels_datasets().sunspots.load_pandas().data["SUNACTIVITY"].to_numpy()


def co2_series() -> np.ndarray:
    """Monthly mean CO2 at Mauna Loa, March 1958 - December 2001 (526 values): the weekly
    record averaged per month; the few months with no reading are interpolated in time."""
    weekly = _statsmodels_datasets().co2.load_pandas().data["co2"]
    monthly = weekly.resample("MS").mean().interpolate(method="time")
    return monthly.to_numpy()


MACRO_COLUMNS = ("realgdp", "realcons", "realinv", "unemp", "infl")


def macrodata_series() -> np.ndarray:
    """US quarterly macro data 1959-2009: quarter-on-quarter growth (%) of real GDP,
    consumption and investment, unemployment and inflation (202 rows, GDP growth first)."""
    frame = _statsmodels_datasets().macrodata.load_pandas().data
    growth = [np.diff(np.log(frame[c].to_numpy())) * 100 for c in MACRO_COLUMNS[:3]]
    levels = [frame[c].to_numpy()[1:] for c in MACRO_COLUMNS[3:]]
    return np.stack(growth + levels, axis=1)


SERIES = {
    "sunspots": (sunspots_series, {"past": 30, "horizon": 3, "season": 11}),
    "co2": (co2_series, {"past": 36, "horizon": 12, "season": 12}),
    "macrodata": (macrodata_series, {"past": 12, "horizon": 4, "season": 4}),
}
"""Each series' loader and its defaults: window length, horizon and season (sunspots follow an
~11-year cycle, CO2 a 12-month one; macro data is quarterly)."""


def load_forecast(
    name: str,
    past: int | None = None,
    horizon: int | None = None,
    season: int | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
) -> ForecastData:
    """One of the bundled series (`sunspots`, `co2`, `macrodata`) cut into windows."""
    if name not in SERIES:
        raise DataError(f"unknown series '{name}'", hint=f"choose one of {', '.join(SERIES)}")
    loader, defaults = SERIES[name]
    return make_windows(
        name,
        loader(),
        past=past or defaults["past"],
        horizon=horizon or defaults["horizon"],
        season=season or defaults["season"],
        val_fraction=val_fraction,
        test_fraction=test_fraction,
    )


def _register(name: str) -> None:
    def dataset(
        past: int | None = None,
        horizon: int | None = None,
        season: int | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
    ) -> DatasetBundle:
        return load_forecast(name, past, horizon, season, val_fraction, test_fraction).bundle()

    dataset.__doc__ = (
        f"The `{name}` series as forecasting windows (see `layerwise.data.forecast`): inputs "
        "(N, past, features), targets (N, horizon), split in time."
    )
    DATASETS.register(name)(dataset)


for _name in SERIES:
    _register(_name)
