"""Metric learning for faces and speakers: the batch-hard triplet loss and its miner on hand-made
embeddings, EER and one-shot identification on known scores, the P x K batcher, the split by
person, and a tiny run trained, enrolled and identified through the CLI."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
import yaml

from cli_runner import layerwise
from layerwise.data.faces import PKBatcher, split_people
from layerwise.errors import DataError, RecipeError
from layerwise.train.metric_learning import (
    EqualErrorRate,
    batch_hard_triplet_loss,
    equal_error_rate,
    one_shot_top1,
    verification_scores,
)


def test_batch_hard_picks_the_farthest_positive_and_the_nearest_negative():
    # Identity 0 at x = 0, 1 and 3; identity 1 at x = 3.5 and 10 (1-D embeddings).
    x = torch.tensor([[0.0], [1.0], [3.0], [3.5], [10.0]])
    labels = torch.tensor([0, 0, 0, 1, 1])
    loss, active = batch_hard_triplet_loss(x, labels, margin=0.5)
    # anchor: hardest positive, hardest negative -> relu(dp - dn + 0.5)
    expected = [
        max(3 - 3.5 + 0.5, 0),  # 0: positive 3 (at 3), negative 3.5 (at 3.5) -> 0
        max(2 - 2.5 + 0.5, 0),  # 1: positive at 3 (2), negative 3.5 (2.5) -> 0
        max(3 - 0.5 + 0.5, 0),  # 3.0: positive at 0 (3), negative 3.5 (0.5) -> 3
        max(6.5 - 0.5 + 0.5, 0),  # 3.5: positive 10 (6.5), negative at 3 (0.5) -> 6.5
        max(6.5 - 7 + 0.5, 0),  # 10: positive 3.5 (6.5), negative at 3 (7) -> 0
    ]
    assert loss.item() == pytest.approx(sum(expected) / 5, abs=1e-5)
    assert active.item() == pytest.approx(2 / 5)


def test_anchors_without_a_positive_are_left_out_and_gradients_stay_finite():
    x = torch.tensor([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]], requires_grad=True)
    loss, active = batch_hard_triplet_loss(x, torch.tensor([0, 0, 1]), margin=0.2)
    # the two identical 0s: positive distance 0, negative sqrt(2): no violation; 1 has no positive
    assert loss.item() == 0.0 and active.item() == 0.0
    loss.backward()
    assert torch.isfinite(x.grad).all()


def test_equal_error_rate_on_a_known_score_set():
    same = torch.tensor([1, 1, 1, 1, 0, 0, 0, 0]).numpy()
    distance = torch.tensor([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9], dtype=torch.float64).numpy()
    eer, threshold = equal_error_rate(same, distance)
    # accepting distances <= 0.4 rejects one genuine pair of 4 and accepts one impostor of 4
    assert eer == pytest.approx(0.25)
    assert threshold == pytest.approx(0.4)
    separated = torch.tensor([0.1, 0.2, 0.3, 0.35, 0.4, 0.7, 0.8, 0.9]).numpy()
    assert equal_error_rate(same, separated)[0] == 0.0
    with pytest.raises(DataError, match="both same-identity and different-identity"):
        equal_error_rate(same[:4], distance[:4])


def test_verification_and_one_shot_identification_on_hand_made_embeddings():
    # A, B of identity 0 and C, D of 1 are tight pairs; identity 2 has E far off and F near A
    x = torch.tensor([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0], [0.0, 9.0], [0.05, 0.0]])
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    scores = verification_scores(x, labels)
    assert (scores["genuine_pairs"], scores["impostor_pairs"]) == (3, 12)
    assert 0 < scores["eer"] < 0.5 and 0.5 < scores["auc"] < 1
    # gallery shot 0 (A, C, E): B -> 0 right, D -> 1 right, F (0.05, 0) -> A, wrong: 2/3
    # gallery shot 1 (B, D, F): A (0, 0) -> F at 0.05, wrong; C -> 1 right; E (0, 9) -> D at
    # 6.48 (F is 9.0001 away), wrong: 1/3
    assert one_shot_top1(x, labels) == pytest.approx(1 / 2)
    metric = EqualErrorRate()
    metric.update(x[:3], labels[:3])
    metric.update(x[3:], labels[3:])
    assert metric.compute() == pytest.approx(scores["eer"])


def test_pk_batcher_draws_p_people_times_k_and_replays_an_epoch():
    y = torch.arange(6).repeat_interleave(5)
    x = torch.arange(30, dtype=torch.float32)[:, None]
    batcher = PKBatcher(x, y, people=3, per_person=2, seed=4)
    assert len(batcher) == 5
    batcher.set_epoch(1)
    batches = list(batcher)
    for xb, yb in batches:
        counts = torch.bincount(yb, minlength=6)
        assert sorted(counts[counts > 0].tolist()) == [2, 2, 2]
        assert len(set(xb.flatten().tolist())) == 6  # no photo twice in a batch
        assert (y[xb.flatten().long()] == yb).all()
    resumed = list(batcher.iter_from(3))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches[3:], resumed, strict=True))
    batcher.set_epoch(2)
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(batches, batcher, strict=True))


def test_split_by_person_never_shares_a_person():
    train, val, test = split_people(40, fold=2, folds=4, val_people=4)
    assert test == list(range(20, 30)) and len(val) == 4 and len(train) == 26
    assert not set(train) & set(test) and not set(val) & set(test) and not set(train) & set(val)
    with pytest.raises(RecipeError, match="fold is 4"):
        split_people(40, fold=4, folds=4, val_people=4)
    with pytest.raises(RecipeError, match="val_people is 29"):
        split_people(40, fold=0, folds=4, val_people=29)


TINY_FACES = {
    "name": "tiny_faces",
    "seed": 0,
    "data": {
        "name": "orl_people",
        "args": {"people": 8, "folds": 4, "val_people": 2, "size": [28, 23]},
        "batch_size": 8,
    },
    "model": {"name": "embedding_cnn", "args": {"channels": [8, 16], "dim": 16, "hflip": True}},
    "train": {
        "epochs": 1,
        "loss": {"name": "batch_hard_triplet", "args": {"margin": 0.2}},
        "metrics": [],
        "monitor": "val_eer",
    },
    "doctor": {"label_noise": False},
}


@pytest.mark.slow
def test_train_enroll_identify_round_trip(tmp_path, shared_data):
    recipe = json.loads(json.dumps(TINY_FACES))
    recipe["data"]["args"]["root"] = str(shared_data)
    (tmp_path / "faces.yaml").write_text(yaml.safe_dump(recipe))
    trained = layerwise("train", "faces.yaml", "--quiet", cwd=tmp_path)
    assert trained.code == 0, trained.stderr
    run = tmp_path / "runs" / "tiny_faces"
    settings = json.loads((run / "embedding.json").read_text())
    assert settings["people"] == {"train": [2, 3, 4, 5], "val": [6, 7], "test": [0, 1]}
    assert settings["input_shape"] == [1, 28, 23] and settings["threshold"] > 0
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "finished"
    assert {"auc", "eer", "top1", "val_eer"} <= set(info["test_metrics"])

    faces = shared_data / "faces_orl"
    for person, name in (("s1", "alice"), ("s2", "bob")):
        (tmp_path / name).mkdir()
        shutil.copy(faces / person / "1.pgm", tmp_path / name / "1.pgm")
    (tmp_path / "bob" / "notes.txt").write_text("not a photo: skipped")
    for name in ("alice", "bob"):
        enrolled = layerwise("enroll", "tiny_faces", name, cwd=tmp_path)
        assert enrolled.code == 0, enrolled.stderr
        assert enrolled.stdout.strip() == f"enrolled {name} from 1 input(s)"
    gallery = json.loads((run / "gallery.json").read_text())
    assert set(gallery) == {"alice", "bob"}
    assert math.isclose(sum(v * v for v in gallery["bob"]["embedding"]), 1.0, rel_tol=1e-5)

    # the enrolled photo itself is at distance 0 from its (one-photo) gallery entry
    found = layerwise("identify", "tiny_faces", str(faces / "s2" / "1.pgm"), cwd=tmp_path)
    assert found.code == 0, found.stderr
    assert found.stdout.startswith("bob (distance 0.000 <= threshold")

    from layerwise.runs import Run
    from layerwise.tasks.faces import identify

    match = identify(Run.open(run), faces / "s1" / "1.pgm", threshold=-1.0)
    assert (match.name, match.known) == ("alice", False)
    assert match.line().startswith("unknown (nearest: alice at distance 0.000")
