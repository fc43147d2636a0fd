"""Each task's doctor: faces, recommender and sequence runs check their data the way that fits
them (no classifier checks at fit start; a sequence run's token checks exactly once), and the
probes and training rules watch them as the recipe's `doctor` section says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import layerwise.diagnose.data_checks as data_checks
import layerwise.tasks.faces as faces
import layerwise.tasks.sequence as sequence
from layerwise.data.faces import IdentityBundle
from layerwise.data.shakespeare import language_model_bundle
from layerwise.diagnose.doctor import TASK_FIELD, Doctor, read_data_profile, run_task
from layerwise.diagnose.probes import Probes
from layerwise.errors import DataError
from layerwise.recipe import parse_recipe
from layerwise.runs import Run
from layerwise.tasks.language_model import LanguageModelTask
from layerwise.tasks.recommend import train_recommender
from layerwise.train import Callback


class Spy(Callback):
    """Keeps the callbacks the Trainer runs with (its default ones included)."""

    def __init__(self) -> None:
        self.callbacks: list[Callback] = []

    def on_fit_start(self, trainer) -> None:
        self.callbacks = list(trainer.callbacks)


@pytest.fixture
def data_checks_spied(monkeypatch) -> list[str]:
    """The task of every `profile_data` call; a fit-start check of the Trainer is an error."""
    calls: list[str] = []
    original = data_checks.profile_data

    def profile(bundle, *args, **kwargs):
        calls.append(bundle.task)
        return original(bundle, *args, **kwargs)

    def fit_start_check(self, trainer) -> None:
        raise AssertionError("the classifier data checks ran at fit start")

    monkeypatch.setattr(data_checks, "profile_data", profile)
    monkeypatch.setattr(Doctor, "_check_fit_data", fit_start_check)
    return calls


def doctors(spy: Spy) -> tuple[list[Doctor], list[Probes]]:
    found = [c for c in spy.callbacks if isinstance(c, Doctor)]
    return found, [c for c in spy.callbacks if isinstance(c, Probes)]


def assert_watched(spy: Spy, run_path: Path, task: str) -> Doctor:
    """One doctor, told the task and the recipe, with its probe log in the run folder."""
    (doctor,), (probes,) = doctors(spy)
    assert doctor.task == task and doctor.recipe is not None and not doctor.check_data
    assert probes.path == run_path / "probes.jsonl"
    records = [json.loads(line) for line in probes.path.read_text().splitlines()]
    assert any(r.get("layers") for r in records)  # per-layer statistics were recorded
    run = Run(run_path)  # `layerwise doctor RUN` judges the finished run as the same task
    assert run_task(read_data_profile(run), [], run.info().get(TASK_FIELD)) == task
    return doctor


# ------------------------------------------------------------------------------------- faces
FACES = """
name: faces_doctor
seed: 0
data:
  name: orl_people
  args: {images_per_person: 2}
  batch_size: 8
model: {name: embedding_cnn, args: {channels: [4, 8], dim: 8}}
train:
  epochs: 2
  loss: {name: batch_hard_triplet, args: {margin: 0.2}}
  metrics: []
  monitor: val_eer
  threads: 1
"""


def identities(people: int = 8, per_person: int = 4) -> IdentityBundle:
    """Random 1x12x10 'faces', split by person as `orl_people` splits them (no shared data)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(people * per_person, 1, 12, 10, generator=generator)
    y = torch.arange(people).repeat_interleave(per_person)
    split = {"train": list(range(2, people - 2)), "val": [people - 2, people - 1], "test": [0, 1]}

    def rows(keep: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        mask = torch.isin(y, torch.tensor(keep))
        return x[mask], y[mask]

    return IdentityBundle(
        name="orl_people",
        train=rows(split["train"]),
        val=rows(split["val"]),
        test=rows(split["test"]),
        num_classes=people,
        input_shape=(1, 12, 10),
        images_per_person=2,
        people=split,
    )


@pytest.mark.parametrize("probes", [True, False], ids=["doctor", "no_doctor"])
def test_a_face_run_gets_no_classifier_data_checks_and_its_own_doctor(
    tmp_path, monkeypatch, data_checks_spied, probes
):
    monkeypatch.setattr(faces, "load_dataset", lambda name, **args: identities())
    spy = Spy()
    recipe = parse_recipe(FACES + f"doctor: {{probes: {str(probes).lower()}}}\n")
    run, metrics = faces.train_embedding(recipe, tmp_path, progress=False, callbacks=[spy])
    assert data_checks_spied == [] and "eer" in metrics
    assert not (run.path / "data_profile.json").exists()
    if probes:
        assert_watched(spy, run.path, "embedding")
        diagnosis = json.loads((run.path / "diagnosis.json").read_text())
        codes = {f["code"] for f in diagnosis["findings"]}
        assert not codes & {"class_imbalance", "data_too_small", "label_noise"}
    else:
        assert doctors(spy) == ([], [])


# ------------------------------------------------------------------------------- recommender
RATINGS = """
name: rec_doctor
seed: 0
data:
  name: synthetic_ratings
  batch_size: 128
  args: {num_users: 60, num_items: 40, mean_ratings: 15, min_ratings: 8, rank: 2}
model: {name: biased_mf, args: {dim: 4}}
train:
  epochs: 2
  optimizer: {name: adam, lr: 0.03}
  metrics: [rmse]
  threads: 1
"""


def test_a_recommender_run_is_watched_as_a_regression_without_table_checks(
    tmp_path, data_checks_spied
):
    spy = Spy()
    recipe = parse_recipe(RATINGS + "doctor: {probe_every: 1, live: false}\n")
    run, metrics = train_recommender(recipe, tmp_path, progress=False, callbacks=[spy])
    assert data_checks_spied == [] and metrics["rmse"] > 0
    doctor = assert_watched(spy, run.path, "regression")
    assert doctor.echo is None  # doctor.live: false silences the live findings
    assert not (run.path / "data_profile.json").exists()


def test_a_recommender_without_probes_has_no_doctor(tmp_path, data_checks_spied):
    spy = Spy()
    recipe = parse_recipe(RATINGS + "doctor: {probes: false}\n")
    run, _ = train_recommender(recipe, tmp_path, progress=False, echo=None, callbacks=[spy])
    assert doctors(spy) == ([], []) and not (run.path / "probes.jsonl").exists()
    assert data_checks_spied == []


# ---------------------------------------------------------------------------------- sequence
LM = """
name: lm_doctor
seed: 0
data:
  name: tinyshakespeare
  args: {block_size: 16}
  batch_size: 16
model: {name: gpt_lm, args: {dim: 16, heads: 2, layers: 1}}
train:
  epochs: 1
  threads: 1
  optimizer: {name: adam, lr: 0.01}
"""


@pytest.mark.parametrize("checks", [True, False], ids=["data_checks", "no_data_checks"])
def test_a_language_model_run_checks_its_tokens_once_before_training(
    tmp_path, monkeypatch, data_checks_spied, checks
):
    text = "to be or not to be,\nthat is the question.\n" * 40
    bundle = language_model_bundle("tinyshakespeare", text, block_size=16)
    monkeypatch.setattr(sequence, "load_dataset", lambda name, **args: bundle)
    spy = Spy()
    recipe = parse_recipe(LM + f"doctor: {{data_checks: {str(checks).lower()}}}\n")
    run, _ = sequence.train_task(
        recipe, LanguageModelTask(), tmp_path, progress=False, echo=None, callbacks=[spy]
    )
    doctor = assert_watched(spy, run.path, "classification")
    assert data_checks_spied == (["classification"] if checks else [])
    profile = run.path / "data_profile.json"
    assert profile.exists() == checks
    if checks:  # the doctor reads the token figures of that one check
        assert doctor.data_profile == json.loads(profile.read_text())
        assert doctor.data_profile["tokens"]


def test_a_rating_that_is_not_finite_is_refused_before_the_run_folder(tmp_path):
    """The MovieLens reader refuses NaN but takes 'inf'. The batcher refused it only once the
    fit started, after the run folder was made, without saying where; now the row is named."""
    rows = ["userId,movieId,rating,timestamp"]
    rows += [f"{u},{i},{(u + i) % 5 + 1},{u * 100 + i}" for u in range(1, 6) for i in range(1, 9)]
    rows[12] = "2,4,inf,204"
    (tmp_path / "ratings.csv").write_text("\n".join(rows) + "\n")
    recipe = parse_recipe(
        RATINGS.replace(
            "name: synthetic_ratings",
            "name: movielens",
        ).replace(
            "args: {num_users: 60, num_items: 40, mean_ratings: 15, min_ratings: 8, rank: 2}",
            f"args: {{path: '{tmp_path}', split: random, val_fraction: 0.0}}",
        )
    )
    with pytest.raises(DataError, match=r"1 (train|test) rating\(s\) .* user 2, item 4 \(inf\)"):
        train_recommender(recipe, tmp_path / "runs", progress=False, echo=None)
    assert not (tmp_path / "runs").exists()
