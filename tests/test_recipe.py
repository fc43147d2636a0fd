"""Recipes: validation errors name the key path; overrides reach any field."""

from __future__ import annotations

import pytest

from layerwise.errors import RecipeError
from layerwise.recipe import load_recipe, parse_recipe

BASE = "name: r\nmodel: {name: mlp}\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (BASE + "train: {epochs: ten}", "'train.epochs'"),
        (BASE + "train: {optimizr: {lr: 1}}", "unknown key 'train.optimizr'"),
        (BASE + "data: {batch_size: -1}", "'data.batch_size'"),
        ("model: {name: mlp}\n", "missing required key 'name'"),
        (BASE + "train: {precision: fp8}", "'train.precision'"),
    ],
)
def test_errors_name_the_key_path(text, expected):
    with pytest.raises(RecipeError) as info:
        parse_recipe(text)
    assert expected in str(info.value)


def test_typo_gets_did_you_mean_with_valid_keys():
    with pytest.raises(RecipeError) as info:
        parse_recipe(BASE + "train:\n  optimizer: {lrr: 0.1}\n")
    assert "did you mean 'lr'?" in info.value.hint
    assert "valid keys in train.optimizer" in info.value.hint


def test_yaml_syntax_error_gives_line_number():
    with pytest.raises(RecipeError, match="line 2"):
        parse_recipe("name: a\n model: x\n")


def test_top_level_must_be_a_mapping():
    with pytest.raises(RecipeError, match="mapping"):
        parse_recipe("- a\n- b\n")


def test_overrides_are_typed_and_create_sections():
    recipe = parse_recipe(
        BASE,
        overrides=["train.optimizer.lr=0.1", "train.epochs=3", "model.args.hidden=[64, 32]"],
    )
    assert recipe.train.optimizer.lr == 0.1
    assert recipe.train.epochs == 3
    assert recipe.model.args["hidden"] == [64, 32]


@pytest.mark.parametrize("override", ["train.epochs", "=3", "name.x=1"])
def test_bad_overrides(override):
    with pytest.raises(RecipeError):
        parse_recipe(BASE, overrides=[override])


def test_override_of_unknown_key_is_caught_by_validation():
    with pytest.raises(RecipeError, match=r"unknown key 'train\.epoch'"):
        parse_recipe(BASE, overrides=["train.epoch=3"])


def test_missing_file(tmp_path):
    with pytest.raises(RecipeError, match="not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_resolved_yaml_round_trips():
    recipe = parse_recipe(BASE + "train: {epochs: 4}")
    assert parse_recipe(recipe.to_yaml()) == recipe


def test_shipped_recipes_are_valid():
    from pathlib import Path

    recipes = sorted((Path(__file__).parents[1] / "recipes").glob("*.yaml"))
    assert len(recipes) >= 3
    for path in recipes:
        assert load_recipe(path).name == path.stem
