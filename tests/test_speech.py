"""The spoken-digit task: the fsdd splits (no test recording in train), the dataset on a small
synthetic FSDD folder, and training then `predict` on wav files and folders, end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from layerwise.data import load_dataset
from layerwise.data.audio import FEATURES_FILE, AudioFeatures, fsdd_recordings, split_recordings
from layerwise.errors import DataError, RecipeError
from layerwise.tasks.speech import accuracy_by_speaker, audio_files

RATE = 8000
SPEAKERS = ("ann", "bob")


def digit_clip(digit: int, index: int, speaker: int, rate: int = RATE) -> np.ndarray:
    """A made-up 'spoken digit': a tone whose pitch names the digit, then a shorter one; each
    speaker a little sharper, each take a little longer, with noise."""
    rng = np.random.default_rng(digit * 100 + index * 10 + speaker)
    freq = (250 + 320 * digit) * (1 + 0.03 * speaker)
    seconds = 0.25 + 0.02 * index
    t = np.arange(round(seconds * rate)) / rate
    sound = np.concatenate(
        [np.sin(2 * np.pi * freq * t), 0.5 * np.sin(2 * np.pi * 1.5 * freq * t[: len(t) // 2])]
    )
    silence = np.zeros(round(0.1 * rate))
    clip = np.concatenate([silence, 0.4 * sound, silence])
    return (clip + 0.005 * rng.standard_normal(len(clip))).astype(np.float32)


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    """An FSDD layout: 2 speakers x 10 digits x 7 takes (takes 0-4 test, 5-6 train)."""
    soundfile = pytest.importorskip("soundfile")
    root = tmp_path_factory.mktemp("data")
    folder = root / "fsdd" / "recordings"
    folder.mkdir(parents=True)
    for s, speaker in enumerate(SPEAKERS):
        for digit in range(10):
            for index in range(7):
                clip = digit_clip(digit, index, s)
                soundfile.write(
                    folder / f"{digit}_{speaker}_{index}.wav", clip, RATE, subtype="PCM_16"
                )
    (folder / "notes.txt").write_text("not a recording")
    return root


def test_official_split_keeps_every_test_recording_out_of_train(shared_data):
    recordings = fsdd_recordings(shared_data)
    assert len(recordings) == 3000
    train, test = split_recordings(recordings, "official")
    assert (len(train), len(test)) == (2700, 300)
    assert {r.index for r in test} == {0, 1, 2, 3, 4}
    assert min(r.index for r in train) == 5
    assert not {r.path for r in train} & {r.path for r in test}
    per_pair = {}
    for r in test:
        per_pair[(r.speaker, r.digit)] = per_pair.get((r.speaker, r.digit), 0) + 1
    assert len(per_pair) == 60 and set(per_pair.values()) == {5}


def test_speaker_split_holds_one_voice_out(shared_data):
    train, test = split_recordings(fsdd_recordings(shared_data), "speaker", "theo")
    assert (len(train), len(test)) == (2500, 500)
    assert {r.speaker for r in test} == {"theo"} and "theo" not in {r.speaker for r in train}


def test_bad_split_arguments_are_recipe_errors(fake_root):
    recordings = fsdd_recordings(fake_root)
    with pytest.raises(RecipeError, match="not one of the speakers: ann, bob"):
        split_recordings(recordings, "speaker", "anne")
    with pytest.raises(RecipeError, match="split is 'random'"):
        split_recordings(recordings, "random")
    with pytest.raises(RecipeError, match="speaker is set"):
        split_recordings(recordings, "official", "ann")
    with pytest.raises(DataError, match="fsdd/recordings"):
        fsdd_recordings(fake_root / "nowhere")


def test_fsdd_dataset_shapes_labels_and_split(fake_root):
    bundle = load_dataset("fsdd", root=str(fake_root), n_mels=32)
    (x, y), (x_test, _) = bundle.train, bundle.test
    assert x.shape == (40, 1, 32, 101) and x_test.shape == (100, 1, 32, 101)
    assert bundle.input_shape == (1, 32, 101) and bundle.num_classes == 10
    assert bundle.class_names == [str(d) for d in range(10)]
    assert torch.equal(torch.bincount(y), torch.full((10,), 4))
    assert bundle.test_speakers.count("ann") == 50
    # standardised on train only: train bands have mean 0, test ones only about that
    assert float(x.mean(dim=(0, 1, 3)).abs().max()) < 1e-4
    assert bundle.pipeline.mean is not None and len(bundle.pipeline.mean) == 32
    held_out = load_dataset("fsdd", root=str(fake_root), split="speaker", speaker="bob")
    assert held_out.sizes() == {"train": 70, "val": 0, "test": 70}
    assert set(held_out.test_speakers) == {"bob"}


def test_audio_files_expands_folders_and_refuses_other_files(fake_root, tmp_path):
    folder = fake_root / "fsdd" / "recordings"
    assert len(audio_files([folder])) == 140  # notes.txt left out
    with pytest.raises(DataError, match=r"takes audio files, not '\.txt'"):
        audio_files([folder / "notes.txt"])
    with pytest.raises(DataError, match="holds no audio files"):
        audio_files([tmp_path])
    with pytest.raises(DataError, match="not found"):
        audio_files([tmp_path / "missing.wav"])


def test_accuracy_by_speaker():
    scores = accuracy_by_speaker(
        torch.tensor([1, 2, 3, 4]), torch.tensor([1, 0, 3, 4]), ["b", "a", "b", "a"]
    )
    assert scores == {"a": 0.5, "b": 1.0}


@pytest.mark.slow
def test_train_then_predict_wav_files_and_a_folder(fake_root, tmp_path):
    """A tiny CNN trained through `layerwise train` on the synthetic clips; predict reads new
    wav files (one at another sample rate) through the run's saved features."""
    from typer.testing import CliRunner

    from layerwise.cli import app
    from layerwise.predict import predict_run

    soundfile = pytest.importorskip("soundfile")
    recipe = {
        "name": "tiny_speech",
        "seed": 0,
        "data": {
            "name": "fsdd",
            "args": {"root": str(fake_root), "n_mels": 32},
            "batch_size": 16,
            "val_fraction": 0.25,
        },
        "model": {"name": "audio_cnn", "args": {"channels": [8, 16], "dropout": 0.0}},
        "train": {
            "epochs": 8,
            "optimizer": {"name": "adam", "lr": 0.01},
            "metrics": ["accuracy"],
            "monitor": "val_accuracy",  # predict rebuilds the Trainer without the data
        },
        "doctor": {"label_noise": False},
    }
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(recipe))
    runs = tmp_path / "runs"
    runner = CliRunner()
    result = runner.invoke(
        app, ["train", str(tmp_path / "tiny.yaml"), "--runs-dir", str(runs), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    run_path = runs / "tiny_speech"
    saved = AudioFeatures.load(run_path)
    assert (run_path / FEATURES_FILE).is_file() and saved.n_mels == 32 and saved.mean is not None

    clips = tmp_path / "clips"
    clips.mkdir()
    for digit in (2, 7):
        soundfile.write(clips / f"say_{digit}.wav", digit_clip(digit, 3, 0), RATE)
    hi_rate = tmp_path / "seven_16k.wav"
    soundfile.write(hi_rate, np.repeat(digit_clip(7, 2, 1), 2), 16000)  # the same sound at 16 kHz
    names, ranked, notes = predict_run(run_path, [clips], runs_root=runs)
    assert names == ["say_2.wav", "say_7.wav"]
    assert [row[0][0] for row in ranked] == ["2", "7"]
    result = runner.invoke(
        app, ["predict", str(run_path), str(clips / "say_7.wav"), "--runs-dir", str(runs)]
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith("say_7.wav: 7 ")  # the digit first, then its probability
    # a file at another rate is resampled (and said so) rather than refused
    names, ranked, notes = predict_run(run_path, [hi_rate], runs_root=runs)
    assert any("resampled from 16000 Hz" in note for note in notes)
    assert ranked[0][0][0] == "7"
    with pytest.raises(DataError, match=r"nothing\.wav' not found"):
        predict_run(run_path, [tmp_path / "nothing.wav"], runs_root=runs)
