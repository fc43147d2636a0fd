"""The shipped forecasting recipes split their series in time without leakage (issue 10, item 7).

For each recipe's series, as the recipe cuts it: no validation or test window has a target at or
before the last training target, the scale is fitted on the training part only (rewriting the
rest moves neither it nor any training window), and a gap (NaN or inf) anywhere in the series is
the documented `DataError` naming its time step, never a traceback or a silently filled value.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from layerwise.data.forecast import SERIES, make_windows
from layerwise.errors import DataError

RECIPES = [
    path
    for path in sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))
    if (yaml.safe_load(path.read_text(encoding="utf-8")).get("data") or {}).get("name") in SERIES
]


def recipe_windows(path: Path, values: np.ndarray | None = None):
    data = yaml.safe_load(path.read_text(encoding="utf-8"))["data"]
    loader, defaults = SERIES[data["name"]]
    args = {**defaults, **(data.get("args") or {})}
    series = loader() if values is None else values
    return make_windows(data["name"], series, **args), loader()


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_no_held_out_target_at_or_before_the_last_training_target(path: Path) -> None:
    pytest.importorskip("statsmodels")
    windows, values = recipe_windows(path)
    h = windows.horizon
    last_train_target = int(windows.train.start.max()) + h - 1
    assert last_train_target == windows.train_end - 1  # training uses its whole part
    for split in ("val", "test"):
        part = getattr(windows, split)
        if part is not None:
            assert int(part.start.min()) > last_train_target, split
    assert int(windows.val.start.max()) + h - 1 < windows.val_end <= int(windows.test.start.min())
    # The scale is the spread of the training part's one-step changes, nothing later.
    target = values[: windows.train_end] if values.ndim == 1 else values[: windows.train_end, 0]
    assert windows.scale == pytest.approx(float(np.std(np.diff(target))))


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_the_future_cannot_move_the_training_windows_or_the_scale(path: Path) -> None:
    pytest.importorskip("statsmodels")
    before, values = recipe_windows(path)
    future = np.array(values, dtype=np.float64, copy=True)
    future[before.train_end :] = future[before.train_end :] * 10.0 + 1e3
    after, _ = recipe_windows(path, future)
    assert after.scale == before.scale
    assert np.array_equal(after.train.x.numpy(), before.train.x.numpy())
    assert np.array_equal(after.train.y.numpy(), before.train.y.numpy())


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_gap_in_a_shipped_series_is_refused_naming_its_step(bad: float) -> None:
    pytest.importorskip("statsmodels")
    assert len(RECIPES) >= 3  # sunspots, co2, macrodata
    path = next(p for p in RECIPES if "sunspots" in p.stem)
    _, values = recipe_windows(path)
    gappy = np.array(values, dtype=np.float64, copy=True)
    gappy[123] = bad
    with pytest.raises(DataError, match=r"1 NaN/inf values \(the first at time step 123\)") as e:
        recipe_windows(path, gappy)
    assert "interpolate" in e.value.hint
