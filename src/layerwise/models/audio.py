"""Spoken-word classifiers on log-mel spectrograms `(N, 1, n_mels, frames)`.

Both families start with `SpecAugment` (Park et al. 2019): while training, a few random bands of
mel channels and of frames are set to 0, the mean of the standardised features, so the model
cannot lean on one formant or one instant. It draws from torch's global generator (the Trainer
seeds and checkpoints it, so a resumed run replays the same masks) and does nothing in eval mode.

- `audio_cnn`: a stride-2 3x3 stem, then 3x3 conv → BN → ReLU blocks each followed by 2x2
  max-pooling; the time axis is averaged out and the remaining (channel, mel band) grid flattened
  into a linear head, so the head still knows which band a pattern sits in.
- `audio_crnn`: the same convolutions (the last one unpooled), then a bidirectional GRU over the
  pooled frames, mean and max over time into the head: the order of the sounds is modelled
  explicitly.

The stride-2 stem is there for speed: on 2 CPU cores the full-resolution first layers cost most
of a step (the module's first version, two convs per block at full resolution, took 4x longer per
batch), while the accuracy comes from the later, narrower layers.
"""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import Tensor, nn

from layerwise.models.registry import MODELS


class SpecAugment(nn.Module):
    """Mask `freq_masks` bands of up to `freq_width` mel channels and `time_masks` bands of up to
    `time_width` frames in every training sample (each width uniform in 0..max)."""

    def __init__(
        self, freq_masks: int = 2, freq_width: int = 6, time_masks: int = 2, time_width: int = 12
    ) -> None:
        super().__init__()
        self.freq_masks, self.freq_width = freq_masks, freq_width
        self.time_masks, self.time_width = time_masks, time_width

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return x
        n, size_f, size_t = x.shape[0], x.shape[-2], x.shape[-1]
        band_f = band_mask(n, size_f, self.freq_masks, self.freq_width, x.device)
        band_t = band_mask(n, size_t, self.time_masks, self.time_width, x.device)
        mask = band_f[:, :, None] | band_t[:, None, :]  # (N, F, T)
        return x.masked_fill(mask.reshape(n, *([1] * (x.dim() - 3)), size_f, size_t), 0.0)

    def extra_repr(self) -> str:
        return (
            f"freq_masks={self.freq_masks}, freq_width={self.freq_width}, "
            f"time_masks={self.time_masks}, time_width={self.time_width}"
        )


def band_mask(n: int, size: int, count: int, max_width: int, device: torch.device) -> Tensor:
    """`(n, size)` booleans: `count` random bands per row, widths uniform in 0..max_width."""
    positions = torch.arange(size, device=device)
    mask = torch.zeros(n, size, dtype=torch.bool, device=device)
    max_width = min(max_width, size)
    for _ in range(count):
        width = torch.randint(0, max_width + 1, (n, 1), device=device)
        start = (torch.rand(n, 1, device=device) * (size - width + 1)).floor().long()
        mask |= (positions >= start) & (positions < start + width)
    return mask


def conv_block(channels_in: int, channels_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(channels_out),
        nn.ReLU(),
    )


def conv_stack(channels: list[int] | tuple[int, ...], pool_last: bool) -> nn.Sequential:
    """A stride-2 stem of `channels[0]`, then a conv block per further width with 2x2
    max-pooling after each (but the last unless `pool_last`)."""
    layers: list[nn.Module] = [conv_block(1, channels[0], stride=2)]
    for number, (width_in, width_out) in enumerate(pairwise(channels)):
        layers.append(conv_block(width_in, width_out))
        if pool_last or number < len(channels) - 2:
            layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


def _spec_augment(spec_augment: bool | dict) -> nn.Module:
    if spec_augment is False or spec_augment is None:
        return nn.Identity()
    return SpecAugment(**(spec_augment if isinstance(spec_augment, dict) else {}))


class AudioCNN(nn.Module):
    def __init__(
        self,
        num_classes: int,
        channels: list[int] | tuple[int, ...] = (16, 32, 64),
        dropout: float = 0.3,
        spec_augment: bool | dict = True,
    ) -> None:
        super().__init__()
        self.augment = _spec_augment(spec_augment)
        self.features = conv_stack(channels, pool_last=True)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.LazyLinear(num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(self.augment(x))  # (N, C, F', T')
        return self.head(self.dropout(x.mean(dim=-1).flatten(1)))


class AudioCRNN(nn.Module):
    def __init__(
        self,
        num_classes: int,
        channels: list[int] | tuple[int, ...] = (16, 32, 64),
        hidden: int = 64,
        dropout: float = 0.3,
        spec_augment: bool | dict = True,
    ) -> None:
        super().__init__()
        self.augment = _spec_augment(spec_augment)
        self.features = conv_stack(channels, pool_last=False)
        self.project = nn.LazyLinear(hidden)
        self.rnn = nn.GRU(hidden, hidden, batch_first=True, bidirectional=True)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(4 * hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(self.augment(x))  # (N, C, F', T')
        x = x.permute(0, 3, 1, 2).flatten(2)  # (N, T', C * F'): one vector per pooled frame
        out, _ = self.rnn(torch.relu(self.project(x)))
        pooled = torch.cat([out.mean(dim=1), out.amax(dim=1)], dim=1)
        return self.head(self.dropout(pooled))


@MODELS.register("audio_cnn")
def audio_cnn(
    num_classes: int,
    channels: list[int] | tuple[int, ...] = (16, 32, 64),
    dropout: float = 0.3,
    spec_augment: bool | dict = True,
) -> AudioCNN:
    """A small CNN on log-mel spectrograms (about 70k parameters with 40 mels, 10 classes)."""
    return AudioCNN(num_classes, channels, dropout, spec_augment)


@MODELS.register("audio_crnn")
def audio_crnn(
    num_classes: int,
    channels: list[int] | tuple[int, ...] = (16, 32, 64),
    hidden: int = 64,
    dropout: float = 0.3,
    spec_augment: bool | dict = True,
) -> AudioCRNN:
    """Conv blocks, then a bidirectional GRU over the frames (about 90k parameters)."""
    return AudioCRNN(num_classes, channels, hidden, dropout, spec_augment)
