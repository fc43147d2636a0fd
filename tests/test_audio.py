"""Audio features: the mel filterbank, log-mel shapes and values, trimming and centring,
resampling, SpecAugment masking, and the error when the `audio` extra is missing."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from layerwise.data.audio import AudioFeatures, mel_centres, mel_filterbank, read_audio
from layerwise.errors import LayerwiseError, RecipeError
from layerwise.models.audio import SpecAugment, band_mask

RATE = 8000


def tone(freq: float, seconds: float = 0.5, rate: int = RATE, amplitude: float = 0.5):
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("freq", [300.0, 1000.0, 2500.0])
def test_pure_tone_lands_in_the_mel_band_centred_nearest_it(freq):
    features = AudioFeatures()
    logs = features.log_mel(torch.from_numpy(tone(freq))[None])  # (1, n_mels, frames)
    assert logs.shape == (1, 40, 0.5 * RATE // 80 + 1)
    loudest = int(logs[0, :, 5:-5].mean(dim=1).argmax())
    centres = mel_centres(40, features.f_min, RATE / 2)
    assert loudest == int((centres - freq).abs().argmin())
    # and the band is far above the bands an octave away (a tone, not broadband noise)
    away = int((centres - freq / 2).abs().argmin())
    assert logs[0, loudest].mean() - logs[0, away].mean() > 5.0


def test_filterbank_is_triangles_peaking_at_their_centres():
    filters = mel_filterbank(RATE, 256, 40, 20.0, None)
    assert filters.shape == (40, 129)
    assert float(filters.min()) == 0.0 and float(filters.max()) <= 1.0
    bins = torch.linspace(0, RATE / 2, 129)
    peaks = bins[filters.argmax(dim=1)]
    spacing = RATE / 256  # the triangles are asymmetric: the top bin is within one bin spacing
    assert torch.all((peaks - mel_centres(40, 20.0, RATE / 2)).abs() < spacing)


def test_too_many_mels_for_the_fft_is_refused():
    with pytest.raises(RecipeError, match="hold no FFT bin"):
        mel_filterbank(RATE, 64, 80)


def test_features_are_fixed_size_and_standardised_on_training_clips():
    features = AudioFeatures(n_mels=32)
    rng = np.random.default_rng(0)
    clips = [tone(f, s) + 0.01 * rng.standard_normal(round(s * RATE)).astype(np.float32)
             for f, s in [(400, 0.3), (800, 0.6), (1500, 1.4), (2000, 0.9)]]  # fmt: skip
    waves = torch.stack([features.waveform(c[:, None], RATE, "c")[0] for c in clips])
    assert waves.shape == (4, RATE)
    x = features.fit(waves)
    assert x.shape == (4, 1, 32, 101) == (4, *features.input_shape)
    per_band = x[:, 0].transpose(0, 1).reshape(32, -1)
    assert torch.allclose(per_band.mean(dim=1), torch.zeros(32), atol=1e-4)
    assert torch.allclose(per_band.std(dim=1), torch.ones(32), atol=1e-3)
    assert torch.equal(features.transform(waves), x)  # the saved numbers give the same inputs


def test_silence_is_trimmed_and_the_sound_centred():
    features = AudioFeatures()
    sound = tone(1000, 0.2)
    clip = np.concatenate([np.zeros(2400, np.float32), sound, np.zeros(800, np.float32)])
    wave, notes = features.waveform(clip[:, None], RATE, "clip")
    assert notes == [] and wave.shape == (RATE,)
    loud = (wave.abs() > 0.01).nonzero().flatten()
    middle = (int(loud[0]) + int(loud[-1])) / 2
    assert abs(middle - RATE / 2) <= 80  # centred within one hop
    assert abs(int(loud[-1]) - int(loud[0]) + 1 - len(sound)) <= 2 * 80  # trimmed to the sound
    long_clip = tone(500, 1.6)[:, None]
    wave, notes = features.waveform(long_clip, RATE, "long")
    assert wave.shape == (RATE,) and "middle 1 s is used" in notes[0]


def test_other_rates_are_resampled_and_stereo_mixed_down_with_notes():
    features = AudioFeatures()
    at_16k = np.stack([tone(1000, 0.5, 16000), tone(1000, 0.5, 16000)], axis=1)
    wave, notes = features.waveform(at_16k, 16000, "hi.wav")
    assert any("resampled from 16000 Hz to 8000 Hz" in n for n in notes)
    assert any("2 channels mixed down" in n for n in notes)
    reference, _ = features.waveform(tone(1000, 0.5)[:, None], RATE, "ref")
    same = features.log_mel(torch.stack([wave, reference]))[:, :, 10:-10].mean(dim=2)
    assert int(same[0].argmax()) == int(same[1].argmax())


def test_read_audio_round_trip_and_damaged_file(tmp_path):
    soundfile = pytest.importorskip("soundfile")
    soundfile.write(tmp_path / "a.wav", tone(440), RATE, subtype="PCM_16")
    samples, rate = read_audio(tmp_path / "a.wav")
    assert rate == RATE and samples.shape == (4000, 1)
    assert np.abs(samples[:, 0] - tone(440)).max() < 1e-3
    (tmp_path / "bad.wav").write_bytes(b"RIFF\x00\x00not audio")
    with pytest.raises(LayerwiseError, match=r"cannot read audio file '.*bad\.wav'"):
        read_audio(tmp_path / "bad.wav")


def test_missing_soundfile_names_the_pip_command(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "soundfile", None)  # import soundfile -> ImportError
    with pytest.raises(LayerwiseError) as caught:
        read_audio(tmp_path / "a.wav")
    assert "soundfile" in str(caught.value)
    assert "pip install 'layerwise[audio]'" in caught.value.hint


def test_spec_augment_masks_bands_in_training_only():
    torch.manual_seed(0)
    x = torch.ones(64, 1, 40, 101)
    augment = SpecAugment(freq_masks=1, freq_width=8, time_masks=1, time_width=20)
    masked = augment(x)
    zero = masked[:, 0] == 0
    rows = zero.all(dim=2)  # whole mel bands masked, per sample
    cols = zero.all(dim=1)  # whole frames masked
    assert bool((rows.sum(dim=1) <= 8).all()) and bool((cols.sum(dim=1) <= 20).all())
    assert int(rows.sum()) > 64 and int(cols.sum()) > 64 * 4  # masks do happen
    # everything zeroed is a masked band or frame: nothing else is touched
    assert torch.equal(zero, rows[:, :, None] | cols[:, None, :])
    for sample in range(64):  # one contiguous band each
        band = rows[sample].nonzero().flatten()
        if len(band):
            assert int(band[-1] - band[0]) + 1 == len(band)
    augment.eval()
    assert torch.equal(augment(x), x)


def test_band_mask_is_reproducible_by_seed_and_respects_the_size():
    torch.manual_seed(3)
    first = band_mask(16, 10, 2, 50, torch.device("cpu"))
    torch.manual_seed(3)
    assert torch.equal(first, band_mask(16, 10, 2, 50, torch.device("cpu")))
    assert first.shape == (16, 10)
    assert not band_mask(16, 10, 3, 0, torch.device("cpu")).any()  # width 0: nothing masked
