"""The broken-setup library: every recipe in recipes/broken raises its finding; healthy ones none.

Each broken recipe is named after the finding code it must raise (other codes may come along: a
learning rate 25x too high also oscillates). A false alarm on a healthy recipe is a bug.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from layerwise.diagnose.findings import CODES
from layerwise.errors import DataError
from layerwise.experiment import train
from layerwise.recipe import load_recipe

pytestmark = (
    pytest.mark.slow
)  # every broken and healthy recipe trains end to end: make test, not make test-fast

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
BROKEN = sorted((RECIPES / "broken").glob("*.yaml"))
HEALTHY = ["digits_cnn.yaml", "digits_mlp.yaml", "breast_cancer_mlp.yaml", "wine_mlp.yaml"]


def diagnose(recipe_path: Path, tmp_path: Path, overrides: list[str] | None = None) -> list[str]:
    recipe = load_recipe(recipe_path, overrides)
    try:
        run, _ = train(recipe, tmp_path, progress=False, echo=None)
    except DataError as refused:  # fatal data findings stop before training
        return refused.diagnosis.codes
    return run.read_diagnosis()["codes"]


def raised(recipe_path: Path, tmp_path: Path) -> list[str]:
    """Every code the diagnosis raised, root causes and the symptoms they explain: raw
    breast-cancer features explode the gradients, which the diagnosis lists as explained by
    unscaled_inputs."""
    recipe = load_recipe(recipe_path)
    try:
        run, _ = train(recipe, tmp_path, progress=False, echo=None)
    except DataError as refused:
        return refused.diagnosis.codes
    stored = run.read_diagnosis()
    return stored["codes"] + [f["code"] for f in stored.get("explained", [])]


def test_every_finding_code_has_a_broken_recipe():
    assert sorted(p.stem for p in BROKEN) == sorted(CODES)


@pytest.mark.parametrize("path", BROKEN, ids=[p.stem for p in BROKEN])
def test_broken_recipe_raises_its_finding(path: Path, tmp_path: Path):
    codes = raised(path, tmp_path)
    assert path.stem in codes, f"{path.name} raised {codes}"


@pytest.mark.parametrize("name", HEALTHY)
def test_healthy_recipe_raises_nothing(name: str, tmp_path: Path):
    assert diagnose(RECIPES / name, tmp_path) == []


def test_healthy_mnist_subset_raises_nothing(shared_data, tmp_path: Path):
    overrides = ["data.args.subset=6000", "train.epochs=5"]
    assert diagnose(RECIPES / "mnist_mlp.yaml", tmp_path, overrides) == []
