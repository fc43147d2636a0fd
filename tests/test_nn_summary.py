"""summary(): exact parameter and MAC counts, computed by hand, for lazy and raw PyTorch models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from layerwise.errors import ShapeError
from layerwise.nn import (
    BatchNorm,
    Conv2d,
    Dense,
    Flatten,
    MaxPool2d,
    ReLU,
    Sequential,
    summary,
)


def small_net() -> Sequential:
    return Sequential(
        Conv2d(4, 3, padding="same"),  # 1x8x8 -> 4x8x8
        BatchNorm(),
        ReLU(),
        MaxPool2d(2),  # -> 4x4x4
        Flatten(),  # -> 64
        Dense(10),
        input_shape=(1, 8, 8),
    )


def test_small_net_counts_by_hand():
    model = small_net()
    model[5].bias.requires_grad_(False)
    s = summary(model, (1, 1, 8, 8))
    # conv: 4*1*3*3 + 4 = 40 params; 4*8*8 outputs x 1*3*3 = 2304 MACs
    # bn: 4 + 4 = 8 params; one MAC per element = 256
    # dense: 64*10 + 10 = 650 params (10 of them frozen); 64*10 = 640 MACs
    assert [(r.name, r.type) for r in s.rows] == [
        ("0", "Conv2d"),
        ("1", "BatchNorm2d"),
        ("2", "ReLU"),
        ("3", "MaxPool2d"),
        ("4", "Flatten"),
        ("5", "Linear"),
    ]
    assert [r.output_shape for r in s.rows] == [
        (1, 4, 8, 8),
        (1, 4, 8, 8),
        (1, 4, 8, 8),
        (1, 4, 4, 4),
        (1, 64),
        (1, 10),
    ]
    assert [r.params for r in s.rows] == [40, 8, 0, 0, 0, 650]
    assert [r.macs for r in s.rows] == [2304, 256, 0, 0, 0, 640]
    assert s.rows[5].non_trainable_params == 10
    assert (s.total_params, s.trainable_params, s.non_trainable_params) == (698, 688, 10)
    assert s.total_macs == 3200
    assert s.param_bytes == 698 * 4


def test_table_text():
    text = str(summary(small_net(), (1, 1, 8, 8)))
    assert "Layer (type)" in text and "Output shape" in text
    assert "5 (Linear)" in text and "(1, 4, 4, 4)" in text
    assert "Total params: 698" in text
    assert "Total MACs: 3,200" in text


def test_macs_scale_with_the_example_batch():
    example = torch.zeros(4, 1, 8, 8)
    assert summary(small_net(), example).total_macs == 4 * 3200


def test_sequential_summary_uses_its_input_shape():
    assert small_net().summary().total_macs == 3200


def test_summary_builds_lazy_models_and_restores_state():
    model = Sequential(Dense(3), BatchNorm(), Dense(2))
    s = summary(model, (1, 5))
    assert s.total_params == (5 * 3 + 3) + (3 + 3) + (3 * 2 + 2)
    assert model.training
    bn = model[1]
    assert bn.running_mean.eq(0).all() and bn.num_batches_tracked == 0


def test_rnn_macs():
    # LSTM: 4 gates x hidden 5 x (input 3 + hidden 5) = 160 per step; 4 steps x batch 1
    lstm = summary(nn.LSTM(3, 5, batch_first=True), torch.zeros(1, 4, 3))
    assert lstm.total_macs == 640
    assert lstm.total_params == 4 * 5 * (3 + 5) + 2 * 4 * 5
    assert lstm.rows[0].output_shape == [(1, 4, 5), [(1, 1, 5), (1, 1, 5)]]
    # GRU, 2 layers, bidirectional, 5 steps x batch 2 = 10 steps per direction:
    # layer 0: 3*4*(3+4) = 84, layer 1 (input 2*4): 3*4*(8+4) = 144 -> 228 x 10 x 2
    gru = nn.GRU(3, 4, num_layers=2, bidirectional=True, batch_first=True)
    assert summary(gru, torch.zeros(2, 5, 3)).total_macs == 4560
    # LSTMCell on a batch of 2: 2 x 4 x 6 x (2 + 6)
    assert summary(nn.LSTMCell(2, 6), (2, 2)).total_macs == 384


def test_conv_variants_and_attention_macs():
    grouped = nn.Conv2d(4, 8, 3, padding=1, groups=2)
    # 8*5*5 outputs x (4/2 channels x 9 taps)
    assert summary(grouped, (1, 4, 5, 5)).total_macs == 3600
    transposed = nn.ConvTranspose2d(4, 2, 2, stride=2)
    # every input element (4*3*3) is spread over 2 out channels x 2x2 taps
    assert summary(transposed, (1, 4, 3, 3)).total_macs == 288
    attention = nn.MultiheadAttention(8, 2, batch_first=True)
    x = torch.zeros(2, 3, 8)
    # q, k, v projections 3 x 6 tokens x 8 x 8; output projection 6 x 8 x 8;
    # scores and weighted sum 2 x batch 2 x 3 x 3 x 8
    s = summary(attention, (x, x, x))
    assert s.total_macs == 4 * 6 * 64 + 2 * 2 * 3 * 3 * 8
    # out_proj's weights are used functionally, never called: listed, not run
    assert s.rows[-1].name == "out_proj" and s.rows[-1].output_shape is None
    assert sum(r.params for r in s.rows) == s.total_params == 4 * 8 * 8 + 4 * 8


class Scaled(nn.Module):
    """A raw PyTorch module with its own parameter and a layer called twice."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.fc = nn.Linear(4, 4)
        self.unused = nn.Linear(4, 100)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.fc(x)) * self.scale


def test_raw_module_with_own_params_and_shared_layer():
    s = summary(Scaled(), (2, 4))
    by_name = {r.name: r for r in s.rows}
    assert by_name["fc"].macs == 2 * (2 * 4 * 4)
    assert by_name[""].params == 1
    assert by_name["unused"].output_shape is None and by_name["unused"].params == 500
    assert s.total_params == 1 + 20 + 500 == sum(r.params for r in s.rows)


def test_wrong_shape_raises_shape_error():
    with pytest.raises(ShapeError, match="layer '0'"):
        summary(small_net(), (1, 3, 8, 8))
