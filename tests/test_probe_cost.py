"""The probes' cheaper paths give what the plain ones gave: dead units by a per-channel maximum
over contiguous pixels first (any layout, with NaN), and one write of the log per change."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from layerwise.diagnose.probe_log import ProbeLog
from layerwise.diagnose.probes import Probes, WatchedLayer, _output_stats, _per_unit_max
from layerwise.train import Callback, Trainer


def _plain_dead_frac(y: torch.Tensor) -> float:
    """dead_frac as a reduction over every dim but the unit's, as the probes first computed it."""
    dims = [d for d in range(y.dim()) if d != 1] if y.dim() > 1 else [0]
    return float(1.0 - torch.amax(y, dim=dims).clamp(min=0).sign().mean())


@pytest.mark.parametrize(
    "shape", [(6, 5, 4, 3), (6, 5, 7), (6, 5), (6,), (2, 3, 2, 2, 2)], ids=lambda s: f"{s}"
)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "transposed"])
def test_dead_and_zero_fractions_match_the_plain_reduction(shape, layout):
    torch.manual_seed(0)
    y = torch.randn(shape).relu()
    if y.dim() > 1:
        y[:, 1:3] = 0.0  # two dead units
        y[0, -1] = 0.0  # and a unit zero on one row only: alive
    if layout == "channels_last" and y.dim() == 4:
        y = y.contiguous(memory_format=torch.channels_last)
    elif layout == "transposed" and y.dim() > 2:
        y = y.transpose(0, 2).contiguous().transpose(0, 2)  # same values, strided
    relu = WatchedLayer("act", nn.ReLU(), "activation", [], dead=True)
    keys, values = _output_stats(y, relu)
    stats = dict(zip(keys, values.tolist(), strict=True))
    assert stats["dead_frac"] == pytest.approx(_plain_dead_frac(y))
    if y.dim() > 1:
        assert stats["dead_frac"] == pytest.approx(2 / shape[1])
    assert stats["zero_frac"] == pytest.approx(float((y == 0).float().mean()))


def test_a_nan_output_gives_what_the_plain_reduction_gives():
    y = torch.rand(4, 3, 2, 2)
    y[1, 2, 0, 1] = math.nan
    assert torch.isnan(_per_unit_max(y)).tolist() == [False, False, True]
    relu = WatchedLayer("act", nn.ReLU(), "activation", [], dead=True)
    keys, values = _output_stats(y, relu)
    stats = dict(zip(keys, values.tolist(), strict=True))
    assert stats["dead_frac"] == pytest.approx(_plain_dead_frac(y))
    assert math.isnan(stats["act_mean"]) and math.isnan(stats["act_std"])


class _Stop(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_batch_end(self, trainer: Trainer) -> None:
        if trainer.state.step == self.step:
            trainer.stop("test")


def _fit(probes: Probes, epochs: int, callbacks=()) -> None:
    g = torch.Generator().manual_seed(0)
    data = torch.randn(24, 4, generator=g), torch.randint(0, 3, (24,), generator=g)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    trainer = Trainer(
        model, optimizer="sgd", lr=0.1, metrics=[], callbacks=[probes, *callbacks], doctor=False
    )
    trainer.fit(data, epochs=epochs, batch_size=8, shuffle=False)


def test_the_log_is_written_once_per_change(tmp_path, monkeypatch):
    writes = []
    save = ProbeLog.save
    monkeypatch.setattr(
        ProbeLog, "save", lambda log, path: writes.append(len(log.steps)) or save(log, path)
    )
    path = tmp_path / "probes.jsonl"
    _fit(Probes(every=2, path=path), epochs=2)  # steps 0..5: samples 0, 1, 2, 4
    assert writes == [3, 4]  # at each epoch end; the fit's end holds nothing new
    assert [r["step"] for r in ProbeLog.load(path).steps] == [0, 1, 2, 4]

    writes.clear()  # a fit stopped within an epoch writes what it sampled since
    _fit(Probes(every=2, path=path), epochs=2, callbacks=[_Stop(5)])  # steps 0..4
    assert writes == [3, 4]
    assert [r["step"] for r in ProbeLog.load(path).steps] == [0, 1, 2, 4]
