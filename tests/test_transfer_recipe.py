"""The recipe's `backbone:` section end to end: a tiny run pretrains on digits 0-4, then recipes
fine-tune it (discriminative rates, gradual unfreezing) and train a head on cached features."""

from __future__ import annotations

from pathlib import Path

import pytest

from layerwise import experiment
from layerwise.errors import CheckpointError, RecipeError
from layerwise.recipe import validate_recipe
from layerwise.transfer import FeatureExtractor, FeatureModel

pytestmark = pytest.mark.slow

TINY_CNN = {"name": "cnn", "args": {"channels": [4, 8], "hidden": [16]}}
QUIET_DOCTOR = {"label_noise": False, "data_checks": False, "probes": False}


def digits(classes: list[int], per_class: int | None = None) -> dict:
    args = {"dataset": "digits", "classes": classes}
    if per_class:
        args["per_class"] = per_class
    return {"name": "class_subset", "args": args, "batch_size": 32}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    recipe = {
        "name": "pre",
        "data": digits([0, 1, 2, 3, 4]),
        "model": TINY_CNN,
        "train": {"epochs": 2, "optimizer": {"lr": 0.01}},
        "doctor": QUIET_DOCTOR,
    }
    run, _ = experiment.train(validate_recipe(recipe), root, progress=False, echo=None)
    return run.path


def transfer_recipe(pretrained: Path, **backbone) -> dict:
    return {
        "name": "ft",
        "data": digits([5, 6, 7, 8, 9], per_class=10),
        "model": {"name": "pretrained"},
        "backbone": {"source": "run", "path": str(pretrained), **backbone},
        "train": {"epochs": 3, "optimizer": {"lr": 0.01}},
        "doctor": QUIET_DOCTOR,
    }


def test_finetune_with_discriminative_rates_and_gradual_unfreezing(pretrained, tmp_path):
    recipe = validate_recipe(transfer_recipe(pretrained, lr_factor=0.5, unfreeze_every=1))
    built = experiment.build(recipe)
    model = built.model
    assert model.head.out_features == 5
    built.trainer.fit(built.data.train, epochs=3, batch_size=32)
    groups = built.trainer.optimizer.param_groups
    assert [g["name"] for g in groups] == ["block1", "block2", "fc1", "head"]
    assert [g["lr"] for g in groups] == pytest.approx([0.00125, 0.0025, 0.005, 0.01])
    unfreezing = next(c for c in built.trainer.callbacks if type(c).__name__ == "GradualUnfreezing")
    assert [names for _, names in unfreezing.history] == [
        ["block1", "block2", "fc1"],
        ["block1", "block2"],
        ["block1"],
    ]


def test_features_mode_caches_in_the_run_and_reuses(pretrained, tmp_path):
    recipe = validate_recipe(transfer_recipe(pretrained, mode="features"))
    run, metrics = experiment.train(recipe, tmp_path, progress=False, echo=None)
    cached = sorted((run.path / "features").glob("*.safetensors"))
    assert len(cached) == 3  # train, val and test
    assert 0.0 <= metrics["accuracy"] <= 1.0
    # the whole model evaluates raw images exactly as the head did on the embeddings
    _, again = experiment.evaluate_run(run.path, runs_root=tmp_path)
    assert again["accuracy"] == pytest.approx(metrics["accuracy"])
    # a rebuild of the run (as resume does) reads the embeddings back instead of computing them
    built = experiment.build(run.recipe())
    assert isinstance(built.model, FeatureModel)
    extractor = FeatureExtractor(built.model.model, cache_dir=run.path / "features")
    extractor.transform(built.data.train[0])
    assert (extractor.hits, extractor.misses) == (1, 0)


def test_recipe_errors_name_the_problem(pretrained, tmp_path):
    with pytest.raises(RecipeError, match="blok1"):
        experiment.build(validate_recipe(transfer_recipe(pretrained, freeze=["blok1"])))
    bad = transfer_recipe(pretrained)
    bad["backbone"] = {"source": "cifar_resnet", "path": str(pretrained / "recipe.yaml")}
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        experiment.build(validate_recipe(bad))
