"""Speech recognition of spoken words (the `fsdd` digits): what is specific to audio around the
generic experiment.

Training needs nothing special: the `fsdd` dataset turns clips into standardised log-mel inputs
(`layerwise.data.audio`), the `audio_cnn` and `audio_crnn` models mask them with SpecAugment while
training, and `layerwise train` saves the features' settings and fitted statistics with the run
(`audio_features.json`, the bundle's `pipeline`). This module reads new clips for prediction
through those saved settings, and scores a model per speaker (how the speaker-independent split
is judged: one voice never heard in training).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from layerwise.data.audio import AUDIO_SUFFIXES, AudioFeatures
from layerwise.errors import DataError

SPEECH_DATASETS = frozenset({"fsdd"})


def audio_files(items: Sequence[Any]) -> list[Path]:
    """The audio files named by `items`: files as given, folders as the audio files in them
    (sorted by name). Anything else is a `DataError` naming it."""
    found: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            inside = sorted(p for p in path.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
            if not inside:
                raise DataError(
                    f"folder '{path}' holds no audio files",
                    hint=f"a speech model reads {', '.join(sorted(AUDIO_SUFFIXES))} files",
                )
            found += inside
        elif path.is_file():
            if path.suffix.lower() not in AUDIO_SUFFIXES:
                raise DataError(
                    f"cannot read '{path}': a speech model takes audio files, not "
                    f"'{path.suffix or '(no suffix)'}'",
                    hint=f"give {', '.join(sorted(AUDIO_SUFFIXES))} files or a folder of them",
                )
            found.append(path)
        else:
            raise DataError(f"input '{path}' not found", hint="check the path")
    return found


def read_clips(
    features: AudioFeatures, items: Sequence[Any]
) -> tuple[Tensor, list[str], list[str]]:
    """Audio files or folders -> model inputs made exactly as the run's training clips were, a
    name per clip and notes (resampled, mixed down, cut)."""
    paths = audio_files(items)
    x, notes = features.read_files(paths)
    return x, [p.name for p in paths], notes


def accuracy_by_speaker(
    predicted: Tensor, labels: Tensor, speakers: Sequence[str]
) -> dict[str, float]:
    """The share of correct predictions for each speaker (sorted by name)."""
    correct = (torch.as_tensor(predicted) == torch.as_tensor(labels)).tolist()
    scores: dict[str, list[bool]] = {}
    for speaker, hit in zip(speakers, correct, strict=True):
        scores.setdefault(speaker, []).append(hit)
    return {name: sum(hits) / len(hits) for name, hits in sorted(scores.items())}
