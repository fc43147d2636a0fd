"""`backbone: {source: minilm}` end to end on a tiny review table: features mode trains only the
head on cached embeddings, fine-tune mode trains the encoder at lower rates, and
`layerwise predict RUN "a raw sentence"` answers through the run's saved pipeline."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from cli_runner import layerwise
from layerwise import experiment
from layerwise.errors import RecipeError
from layerwise.recipe import validate_recipe

pytestmark = pytest.mark.slow

GOOD = ["a wonderful, moving film", "brilliant acting and a great story", "I loved every minute"]
BAD = ["a dull, boring mess", "terrible acting and an awful plot", "I hated every minute"]
QUIET_DOCTOR = {"label_noise": False, "data_checks": False, "probes": False}


@pytest.fixture(scope="module")
def reviews(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "reviews.csv"
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["text", "label"])
        for i in range(4):
            writer.writerows([[f"{t} ({i})", "pos"] for t in GOOD])
            writer.writerows([[f"{t} ({i})", "neg"] for t in BAD])
    return path


def recipe(reviews: Path, tokenizer: str = "minilm", **backbone) -> dict:
    return {
        "name": "minilm_reviews",
        "data": {
            "name": "text",
            "args": {"path": str(reviews), "tokenizer": tokenizer, "max_length": 30},
            "batch_size": 8,
        },
        "model": {"name": "pretrained"},
        "backbone": {"source": "minilm", **backbone},
        "train": {"epochs": 2, "optimizer": {"name": "adam", "lr": 0.05}},
        "doctor": QUIET_DOCTOR,
    }


def test_features_mode_caches_embeddings_and_predicts_raw_text(reviews, tmp_path):
    run, metrics = experiment.train(
        validate_recipe(recipe(reviews, mode="features")), tmp_path, progress=False, echo=None
    )
    assert len(list((run.path / "features").glob("*.safetensors"))) == 2  # train and test
    assert metrics["accuracy"] >= 0.8  # sentiment is linear in MiniLM's embeddings
    out = layerwise(
        "predict",
        run.name,
        "an awful, boring film",
        "a great film",
        "--runs-dir",
        str(tmp_path),
        cwd=tmp_path,
    )
    assert out.code == 0, out.stderr
    first, second = out.stdout.strip().splitlines()
    assert first.startswith("an awful, boring film: neg")
    assert second.startswith("a great film: pos")


def test_finetune_mode_trains_the_encoder_at_lower_rates(reviews):
    built = experiment.build(validate_recipe(recipe(reviews, lr_factor=0.1, freeze=6)))
    before = built.model.layer5.output.dense.weight.detach().clone()
    frozen = built.model.layer3.output.dense.weight.detach().clone()
    built.trainer.fit(built.data.train, epochs=1, batch_size=8)
    rates = {g["name"]: g["lr"] for g in built.trainer.optimizer.param_groups}
    assert rates["layer5"] == pytest.approx(0.1 * rates["head"])
    assert not torch.equal(before, built.model.layer5.output.dense.weight)  # trained
    assert torch.equal(frozen, built.model.layer3.output.dense.weight)  # group 6 of 8: frozen


def test_a_word_tokenizer_is_refused_naming_the_setting(reviews):
    with pytest.raises(RecipeError, match="WordPiece"):
        experiment.build(validate_recipe(recipe(reviews, tokenizer="word")))
