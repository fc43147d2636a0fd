"""Gate saturation of LSTM/GRU layers: recomputed gates equal a step-by-step loop, and the probes
log them on sampled steps."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from layerwise.diagnose.gates import GATE_MARGIN, gate_saturation
from layerwise.diagnose.probes import Probes
from layerwise.train import Trainer


def gates_by_loop(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Share of saturated gate values per gate, stepping the first layer's cell by hand."""
    n, steps, _ = x.shape
    h, c, seen = torch.zeros(n, m.hidden_size), torch.zeros(n, m.hidden_size), []
    for t in range(steps):
        gi = x[:, t] @ m.weight_ih_l0.T + m.bias_ih_l0
        gh = h @ m.weight_hh_l0.T + m.bias_hh_l0
        if isinstance(m, nn.LSTM):
            i, f, g, o = (gi + gh).chunk(4, -1)
            i, f, o = i.sigmoid(), f.sigmoid(), o.sigmoid()
            c = f * c + i * g.tanh()
            h = o * c.tanh()
            seen.append(torch.stack([i, f, o]))
        else:
            (ir, iz, i_n), (hr, hz, h_n) = gi.chunk(3, -1), gh.chunk(3, -1)
            r, z = (ir + hr).sigmoid(), (iz + hz).sigmoid()
            h = (1 - z) * (i_n + r * h_n).tanh() + z * h
            seen.append(torch.stack([r, z]))
    gates = torch.stack(seen, 1)
    return ((gates < GATE_MARGIN) | (gates > 1 - GATE_MARGIN)).double().mean(dim=(1, 2, 3))


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU])
def test_recomputed_gates_equal_the_cell_stepped_by_hand(cls: type[nn.Module]) -> None:
    torch.manual_seed(0)
    m = cls(5, 6, num_layers=2, bidirectional=True)  # time-major; layer 0 forward is measured
    x = torch.randn(4, 9, 5) * 3
    with torch.no_grad():
        keys, values = gate_saturation(m, (x.transpose(0, 1),))
        expected = gates_by_loop(m, x)
    assert keys[0] == "gate_sat_frac" and len(keys) == 1 + len(expected)
    assert torch.allclose(values[1:].double(), expected, atol=1e-6)
    assert values[0] == pytest.approx(float(expected.mean()), abs=1e-6)
    assert 0 < float(values[0]) < 1  # inputs x3 saturate some gates, not all
    # A packed batch: padded steps are left out, each row counts its own length.
    m = cls(5, 6, batch_first=True)
    lengths = torch.tensor([9, 3, 6, 1])
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    with torch.no_grad():
        _, values = gate_saturation(m, (packed,))
        rows = [gates_by_loop(m, x[i : i + 1, : int(n)]) * int(n) for i, n in enumerate(lengths)]
    assert torch.allclose(values[1:].double(), sum(rows) / lengths.sum(), atol=1e-6)
    assert gate_saturation(nn.RNN(5, 6), (x,)) is None  # no gates


class LastStep(nn.Module):
    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.lstm = nn.LSTM(3, 8, batch_first=True)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(x * self.scale)[0][:, -1])


def test_probes_log_gate_saturation_of_an_lstm() -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 12, 3)
    y = (x[:, :, 0].mean(1) > 0).long()
    shares = {}
    for scale in (1.0, 100.0):
        probes = Probes(every=2)
        trainer = Trainer(LastStep(scale), doctor=False, callbacks=[probes], seed=0)
        trainer.fit((x, y), epochs=1, batch_size=16)
        stats = [s["layers"]["lstm"] for s in probes.log.steps]
        assert all({"gate_sat_frac", "gate_sat_forget"} <= set(s) for s in stats)
        shares[scale] = max(s["gate_sat_frac"] for s in stats)
    assert shares[1.0] < 0.05 and shares[100.0] > 0.5  # unscaled inputs pin the gates
