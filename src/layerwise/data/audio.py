"""Spoken audio: decoding (soundfile), log-mel features (torch), and the `fsdd` dataset.

Every clip goes through one `AudioFeatures`, so training and `layerwise predict` cannot differ:
decode → mono → the training sample rate (resampled, with a note, when a file has another) →
silence trimmed at both ends → centred in a fixed window of `clip_seconds` (zero-padded, or the
middle kept) → power spectrogram (`torch.stft`, Hann window) → mel filterbank → log → each mel
band standardised with the mean and std of the training clips. The settings and the fitted means
are saved with a run (`audio_features.json`), and predict reads them back from there.

The Free Spoken Digit Dataset (`<root>/fsdd/recordings/{digit}_{speaker}_{index}.wav`, 8 kHz)
has two splits here: `official` (recordings 0-4 of every speaker and digit are the test set, the
published protocol) and `speaker` (every recording of one speaker is the test set, the others
train: how well the model does on a voice it never heard).
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from layerwise.data.bundle import DatasetBundle
from layerwise.data.registry import DATASETS, data_root
from layerwise.errors import DataError, LayerwiseError, RecipeError, did_you_mean

FEATURES_FILE = "audio_features.json"
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".aiff", ".aif"}
FSDD_SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
FSDD_NAME = re.compile(r"^(\d)_([a-z]+)_(\d+)\.wav$")
LOG_FLOOR = 1e-6  # added to the mel power before the log: silence stays finite


def soundfile_module() -> Any:
    """The `soundfile` package, or a clear error: it lives in the `audio` extra."""
    try:
        import soundfile
    except ImportError as exc:  # an optional extra
        raise LayerwiseError(
            "reading audio needs the `soundfile` package, which is not installed",
            hint="pip install 'layerwise[audio]' (or pip install soundfile)",
        ) from exc
    return soundfile


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """A file's samples as float32 `(frames, channels)` in [-1, 1], and its sample rate."""
    soundfile = soundfile_module()
    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (
        RuntimeError,
        OSError,
        ValueError,
        TypeError,
    ) as exc:  # LibsndfileError is a RuntimeError
        raise DataError(
            f"cannot read audio file '{path}': {exc}",
            hint="give a complete .wav (or .flac/.ogg) file",
        ) from exc
    if samples.shape[0] == 0:
        raise DataError(f"audio file '{path}' holds no samples", hint="is it complete?")
    return samples, int(rate)


def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0, f_max: float | None = None
) -> Tensor:
    """Triangular filters `(n_mels, n_fft // 2 + 1)` evenly spaced on the HTK mel scale.

    Filter `m` rises from centre `m - 1` to centre `m` and falls to centre `m + 1` (centres from
    `mel_centres`). A filter that no FFT bin falls into would make a constant feature; such a
    setting (too many mels for `n_fft`) is refused.
    """
    f_max = sample_rate / 2 if f_max is None else f_max
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise RecipeError(
            f"mel range {f_min}-{f_max} Hz does not fit a sample rate of {sample_rate} Hz",
            hint=f"use 0 <= f_min < f_max <= {sample_rate / 2:g}",
        )
    edges = _mel_points(n_mels, f_min, f_max)
    bins = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins - left) / (centre - left)
    falling = (right - bins) / (right - centre)
    filters = torch.clamp(torch.minimum(rising, falling), min=0.0)
    empty = (filters.sum(dim=1) == 0).nonzero().flatten().tolist()
    if empty:
        raise RecipeError(
            f"{len(empty)} of {n_mels} mel filters hold no FFT bin (n_fft {n_fft} at "
            f"{sample_rate} Hz gives bins {sample_rate / n_fft:g} Hz apart)",
            hint="use fewer mels or a larger n_fft",
        )
    return filters.float()


def mel_centres(n_mels: int, f_min: float, f_max: float) -> Tensor:
    """The centre frequency (Hz) of each mel filter."""
    return _mel_points(n_mels, f_min, f_max)[1:-1].float()


def _mel_points(n_mels: int, f_min: float, f_max: float) -> Tensor:
    def to_mel(hz: float) -> float:
        return 2595.0 * math.log10(1.0 + hz / 700.0)

    mels = torch.linspace(to_mel(f_min), to_mel(f_max), n_mels + 2, dtype=torch.float64)
    return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)


@dataclass
class AudioFeatures:
    """How a clip becomes a model input `(1, n_mels, frames)`; fitted once on training clips.

    Args:
        sample_rate: the rate every clip is brought to (Hz).
        clip_seconds: the fixed window each clip is centred in.
        n_fft, win_length, hop_length: the STFT (samples); 256/200/80 at 8 kHz is a 25 ms
            window every 10 ms.
        n_mels, f_min, f_max: the mel filterbank (`f_max` null: half the sample rate).
        trim_db: samples quieter than this many dB below the clip's loudest 10 ms are trimmed
            from both ends (null: no trimming).
        mean, std: per mel band, fitted on the training clips' frames (`fit`).
        class_names: the labels, so a run's model can be rebuilt without the data.
    """

    sample_rate: int = 8000
    clip_seconds: float = 1.0
    n_fft: int = 256
    win_length: int = 200
    hop_length: int = 80
    n_mels: int = 40
    f_min: float = 20.0
    f_max: float | None = None
    trim_db: float | None = 40.0
    mean: list[float] | None = None
    std: list[float] | None = None
    class_names: list[str] = field(default_factory=list)

    @property
    def clip_samples(self) -> int:
        return round(self.clip_seconds * self.sample_rate)

    @property
    def frames(self) -> int:
        return self.clip_samples // self.hop_length + 1  # torch.stft with center=True

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (1, self.n_mels, self.frames)

    # ------------------------------------------------------------------ waveforms
    def waveform(self, samples: np.ndarray, rate: int, name: str) -> tuple[Tensor, list[str]]:
        """Decoded samples `(frames, channels)` -> the fixed-length mono clip, and notes."""
        notes = []
        mono = samples.mean(axis=1) if samples.ndim == 2 else samples
        if samples.ndim == 2 and samples.shape[1] > 1:
            notes.append(f"note: {name}: {samples.shape[1]} channels mixed down to mono")
        if rate != self.sample_rate:
            from scipy.signal import resample_poly

            divisor = math.gcd(rate, self.sample_rate)
            mono = resample_poly(mono, self.sample_rate // divisor, rate // divisor)
            notes.append(
                f"note: {name}: resampled from {rate} Hz to {self.sample_rate} Hz, the rate "
                "the model was trained on"
            )
        wave = torch.as_tensor(np.ascontiguousarray(mono), dtype=torch.float32)
        wave = self.trim(wave)
        if len(wave) > self.clip_samples:
            notes.append(
                f"note: {name}: {len(wave) / self.sample_rate:.2f} s of sound after trimming "
                f"silence; the middle {self.clip_seconds:g} s is used"
            )
        return self.fit_length(wave), notes

    def trim(self, wave: Tensor) -> Tensor:
        """Cut the leading and trailing stretches quieter than `trim_db` below the peak."""
        if self.trim_db is None or len(wave) < self.hop_length:
            return wave
        step = self.hop_length
        frames = wave[: len(wave) // step * step].reshape(-1, step)
        rms = frames.pow(2).mean(dim=1).sqrt()
        loud = (rms >= rms.max() * 10 ** (-self.trim_db / 20)).nonzero().flatten()
        if float(rms.max()) == 0.0 or len(loud) == 0:
            return wave
        return wave[int(loud[0]) * step : (int(loud[-1]) + 1) * step]

    def fit_length(self, wave: Tensor) -> Tensor:
        """Centre `wave` in `clip_samples`: zero-pad both sides, or keep the middle."""
        size = self.clip_samples
        if len(wave) >= size:
            start = (len(wave) - size) // 2
            return wave[start : start + size]
        before = (size - len(wave)) // 2
        return torch.nn.functional.pad(wave, (before, size - len(wave) - before))

    # ------------------------------------------------------------------ features
    def log_mel(self, waves: Tensor) -> Tensor:
        """Waveforms `(N, samples)` -> log mel power `(N, n_mels, frames)` (not standardised)."""
        window = torch.hann_window(self.win_length)
        spectrum = torch.stft(
            waves,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=window,
            center=True,
            return_complex=True,
        )
        power = spectrum.real.square() + spectrum.imag.square()
        filters = mel_filterbank(self.sample_rate, self.n_fft, self.n_mels, self.f_min, self.f_max)
        return torch.log(torch.matmul(filters, power) + LOG_FLOOR)

    def fit(self, waves: Tensor) -> Tensor:
        """Fit each mel band's mean and std on training waveforms `(N, samples)`; returns their
        standardised model inputs `(N, 1, n_mels, frames)`."""
        logs = self.log_mel_batched(waves)
        self.mean = logs.mean(dim=(0, 2)).tolist()
        self.std = logs.std(dim=(0, 2)).clamp(min=1e-5).tolist()
        return self.standardise(logs)

    def transform(self, waves: Tensor) -> Tensor:
        """Waveforms `(N, samples)` -> standardised model inputs `(N, 1, n_mels, frames)`."""
        if self.mean is None or self.std is None:
            raise DataError("audio features used before fit()", hint="call fit on training clips")
        return self.standardise(self.log_mel_batched(waves))

    def standardise(self, logs: Tensor) -> Tensor:
        mean = torch.tensor(self.mean)[:, None]
        std = torch.tensor(self.std)[:, None]
        return ((logs - mean) / std).unsqueeze(1)

    def log_mel_batched(self, waves: Tensor, batch: int = 256) -> Tensor:
        with torch.no_grad():
            return torch.cat([self.log_mel(chunk) for chunk in waves.split(batch)])

    def read_files(self, paths: list[Path]) -> tuple[Tensor, list[str]]:
        """Audio files -> model inputs `(N, 1, n_mels, frames)` and notes on how they were read."""
        waves, notes = [], []
        for path in paths:
            samples, rate = read_audio(path)
            wave, more = self.waveform(samples, rate, path.name)
            waves.append(wave)
            notes += more
        return self.transform(torch.stack(waves)), notes

    # ------------------------------------------------------------------ saving
    def save(self, folder: str | Path) -> Path:
        """Write `audio_features.json` into a run folder (atomically)."""
        path = Path(folder) / FEATURES_FILE
        handle, temp = tempfile.mkstemp(dir=path.parent, prefix=".audio_features.")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(asdict(self), out, indent=1)
        os.replace(temp, path)
        return path

    @staticmethod
    def exists(folder: str | Path) -> bool:
        return (Path(folder) / FEATURES_FILE).is_file()

    @classmethod
    def load(cls, folder: str | Path) -> AudioFeatures | None:
        """A run's saved features, or None when the run is not an audio one."""
        path = Path(folder) / FEATURES_FILE
        if not path.is_file():
            return None
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as exc:
            raise DataError(
                f"cannot read '{path}': {exc}",
                hint="the run's audio settings are damaged; train the run again",
            ) from exc


@dataclass(repr=False)
class AudioBundle(DatasetBundle):
    """A `DatasetBundle` of log-mel inputs plus the `pipeline` (`AudioFeatures`) that made them,
    which `layerwise train` saves with the run; `speakers` names the speaker of each test row."""

    pipeline: AudioFeatures | None = None
    test_speakers: list[str] = field(default_factory=list)

    @classmethod
    def from_features(cls, features: AudioFeatures, name: str = "audio") -> AudioBundle:
        """A data-free bundle (two placeholder rows) to rebuild a run's model for prediction."""
        rows = (torch.zeros(2, *features.input_shape), torch.tensor([0, 0]))
        return cls(
            name=name,
            train=rows,
            val=rows,  # a recipe may monitor val_* logs: building its Trainer checks they exist
            test=None,
            num_classes=len(features.class_names),
            input_shape=features.input_shape,
            class_names=list(features.class_names),
            pipeline=features,
        )


# ------------------------------------------------------------------------------ FSDD
@dataclass(frozen=True)
class Recording:
    path: Path
    digit: int
    speaker: str
    index: int


def fsdd_recordings(root: str | Path | None = None) -> list[Recording]:
    """Every recording under `<root>/fsdd/recordings`, sorted by name (no audio is read)."""
    folder = Path(root) if root is not None else data_root()
    folder = folder / "fsdd" / "recordings"
    if not folder.is_dir():
        raise DataError(
            f"FSDD recordings not found: '{folder}' is missing",
            hint="put the Free Spoken Digit Dataset's recordings/*.wav there, or set "
            "LAYERWISE_DATA (or data.args.root) to the folder holding fsdd/",
        )
    found = []
    for path in sorted(folder.glob("*.wav")):
        match = FSDD_NAME.match(path.name)
        if match:
            digit, speaker, index = match.groups()
            found.append(Recording(path, int(digit), speaker, int(index)))
    if not found:
        raise DataError(
            f"'{folder}' holds no recordings named digit_speaker_index.wav",
            hint="the FSDD files are named like 7_jackson_32.wav",
        )
    return found


def split_recordings(
    recordings: list[Recording], split: str = "official", speaker: str | None = None
) -> tuple[list[Recording], list[Recording]]:
    """(train, test): `official` tests on indices 0-4, `speaker` on one speaker's recordings."""
    if split == "official":
        if speaker is not None:
            raise RecipeError(
                "data.args.speaker is set, but split is 'official'",
                hint="use split: speaker to hold one speaker out",
            )
        return [r for r in recordings if r.index >= 5], [r for r in recordings if r.index < 5]
    if split == "speaker":
        speakers = sorted({r.speaker for r in recordings})
        if speaker not in speakers:
            raise RecipeError(
                f"data.args.speaker is {speaker!r}, not one of the speakers: {', '.join(speakers)}",
                hint=did_you_mean(str(speaker), speakers),
            )
        return [r for r in recordings if r.speaker != speaker], [
            r for r in recordings if r.speaker == speaker
        ]
    raise RecipeError(
        f"data.args.split is {split!r}", hint="use 'official' (indices 0-4 test) or 'speaker'"
    )


@DATASETS.register("fsdd")
def fsdd(
    split: str = "official",
    speaker: str | None = None,
    subset: int | None = None,
    n_mels: int = 40,
    clip_seconds: float = 1.0,
    root: str | None = None,
) -> AudioBundle:
    """The Free Spoken Digit Dataset as standardised log-mel inputs `(N, 1, n_mels, frames)`.

    `subset` keeps recordings 0..subset-1 of every speaker and digit (a small, still official
    split for quick tries); the mel statistics are fitted on the training clips only.
    """
    recordings = fsdd_recordings(root)
    if subset is not None:
        recordings = [r for r in recordings if r.index < subset]
    train, test = split_recordings(recordings, split, speaker)
    if not train or not test:
        raise RecipeError(
            f"fsdd split {split!r} leaves {len(train)} training and {len(test)} test clips",
            hint="use subset >= 6 with the official split",
        )
    features = AudioFeatures(n_mels=n_mels, clip_seconds=clip_seconds)
    features.class_names = [str(d) for d in range(10)]
    train_waves, test_waves = (_waves(part, features) for part in (train, test))
    train_inputs = features.fit(train_waves)
    return AudioBundle(
        name="fsdd",
        train=(train_inputs, torch.tensor([r.digit for r in train])),
        val=None,
        test=(features.transform(test_waves), torch.tensor([r.digit for r in test])),
        num_classes=10,
        input_shape=features.input_shape,
        class_names=list(features.class_names),
        pipeline=features,
        test_speakers=[r.speaker for r in test],
    )


def _waves(recordings: list[Recording], features: AudioFeatures) -> Tensor:
    waves = []
    for recording in recordings:
        samples, rate = read_audio(recording.path)
        waves.append(features.waveform(samples, rate, recording.path.name)[0])
    return torch.stack(waves)
