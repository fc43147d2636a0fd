"""Forecasters: a window `(N, past, features)` in, the next `horizon` values `(N, horizon)` out.

`num_classes` is the horizon (the recipe fills it from the dataset, as for any regression). Each
family starts with a lazy linear projection of the features, so the same model fits one series or
several without being told how many. The recurrent forecasters read the window step by step and
predict every horizon step at once from the last hidden state (a direct multi-step forecast, so
errors do not feed back); the CNN and MLP are the non-recurrent baselines.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from layerwise.errors import RecipeError
from layerwise.models.registry import MODELS


class RecurrentForecaster(nn.Module):
    """LSTM or GRU over the window, then a linear head from the last hidden state."""

    def __init__(
        self,
        num_classes: int,
        cell: str = "lstm",
        hidden: int = 64,
        layers: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU}.get(cell)
        if rnn is None:
            raise RecipeError(f"unknown cell '{cell}'", hint="use 'lstm' or 'gru'")
        self.project = nn.LazyLinear(hidden)
        self.rnn = rnn(hidden, hidden, num_layers=layers, batch_first=True,
                       dropout=dropout if layers > 1 else 0.0)  # fmt: skip
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.rnn(self.project(x))
        return self.head(self.dropout(out[:, -1]))


class ConvForecaster(nn.Module):
    """Two causal-padded 1-D convolutions over time, then the last step's features."""

    def __init__(self, num_classes: int, channels: int = 32, kernel: int = 3) -> None:
        super().__init__()
        self.project = nn.LazyLinear(channels)
        self.convs = nn.Sequential(
            nn.ConstantPad1d((kernel - 1, 0), 0.0),
            nn.Conv1d(channels, channels, kernel),
            nn.ReLU(),
            nn.ConstantPad1d((2 * (kernel - 1), 0), 0.0),
            nn.Conv1d(channels, channels, kernel, dilation=2),
            nn.ReLU(),
        )
        self.head = nn.Linear(2 * channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        features = self.convs(self.project(x).transpose(1, 2))  # (N, C, T)
        pooled = torch.cat([features[:, :, -1], features.mean(dim=2)], dim=1)
        return self.head(pooled)


class MLPForecaster(nn.Module):
    """The whole window flattened into one hidden layer."""

    def __init__(self, num_classes: int, hidden: int = 64, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.LazyLinear(hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


@MODELS.register("lstm_forecaster")
def lstm_forecaster(
    num_classes: int = 1, hidden: int = 64, layers: int = 1, dropout: float = 0.0
) -> RecurrentForecaster:
    """LSTM forecaster; `num_classes` is the horizon."""
    return RecurrentForecaster(num_classes, "lstm", hidden, layers, dropout)


@MODELS.register("gru_forecaster")
def gru_forecaster(
    num_classes: int = 1, hidden: int = 64, layers: int = 1, dropout: float = 0.0
) -> RecurrentForecaster:
    """GRU forecaster; `num_classes` is the horizon."""
    return RecurrentForecaster(num_classes, "gru", hidden, layers, dropout)


@MODELS.register("cnn_forecaster")
def cnn_forecaster(num_classes: int = 1, channels: int = 32, kernel: int = 3) -> ConvForecaster:
    """1-D CNN forecaster (causal, dilated); `num_classes` is the horizon."""
    return ConvForecaster(num_classes, channels, kernel)


@MODELS.register("mlp_forecaster")
def mlp_forecaster(num_classes: int = 1, hidden: int = 64, dropout: float = 0.0) -> MLPForecaster:
    """MLP over the flattened window; `num_classes` is the horizon."""
    return MLPForecaster(num_classes, hidden, dropout)
