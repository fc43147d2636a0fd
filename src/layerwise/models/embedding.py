"""`embedding_cnn`: a small CNN that maps an image or a spectrogram to a unit-length embedding.

Blocks of 3x3 conv -> BatchNorm -> ReLU -> 2x2 max-pooling, then the spatial grid is averaged
(so any input size works: 46x56 faces, 40x101 log-mel spectrograms), a linear layer projects to
`dim`, and the result is L2-normalised: distances between embeddings lie in [0, 2], which the
triplet margin and the accept threshold are measured in.

Training-time augmentation lives in the model, as `audio_cnn`'s SpecAugment does, so it draws
from torch's global generator (seeded and checkpointed by the Trainer) and is off in eval mode:
`hflip` mirrors half the faces (a face's mirror image is the same person), `spec_augment`
masks bands of a spectrogram.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import torch
from torch import Tensor, nn

from layerwise.models.audio import SpecAugment
from layerwise.models.registry import MODELS


class EmbeddingCNN(nn.Module):
    """See the module docstring. `forward(x)` -> `(N, dim)` rows of unit length."""

    def __init__(
        self,
        in_channels: int = 1,
        channels: Sequence[int] = (32, 64, 128, 128),
        dim: int = 64,
        dropout: float = 0.0,
        hflip: bool = False,
        spec_augment: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.hflip = hflip
        self.augment = SpecAugment(**spec_augment) if spec_augment else nn.Identity()
        widths = [in_channels, *channels]
        self.features = nn.Sequential(
            *(
                nn.Sequential(
                    nn.Conv2d(a, b, 3, padding=1, bias=False),
                    nn.BatchNorm2d(b),
                    nn.ReLU(inplace=True),
                    nn.MaxPool2d(2),
                )
                for a, b in pairwise(widths)
            )
        )
        self.dropout = nn.Dropout(dropout)
        self.project = nn.Linear(widths[-1], dim)

    def forward(self, x: Tensor) -> Tensor:
        if self.training and self.hflip:
            flip = torch.rand(len(x), device=x.device) < 0.5
            x = torch.where(flip.view(-1, *([1] * (x.dim() - 1))), x.flip(-1), x)
        x = self.augment(x)
        pooled = self.features(x).mean(dim=(-2, -1))
        return nn.functional.normalize(self.project(self.dropout(pooled)), dim=1)


@MODELS.register("embedding_cnn")
def embedding_cnn(
    in_channels: int = 1,
    channels: Sequence[int] = (32, 64, 128, 128),
    dim: int = 64,
    dropout: float = 0.0,
    hflip: bool = False,
    spec_augment: dict[str, Any] | None = None,
) -> EmbeddingCNN:
    """A unit-length embedding CNN for metric learning (faces, speakers)."""
    return EmbeddingCNN(in_channels, channels, dim, dropout, hflip, spec_augment)
