"""Packaging: the recipes ship in the package, and an installed wheel runs `layerwise quickstart`.

The repository's `recipes/` folder is the package `layerwise.recipes` (pyproject.toml maps it), so
the same files are found by name in a checkout installed with `pip install -e .` and in a wheel.
The slow test builds the wheel and the sdist from a copy of the repository, checks that both carry
every file under recipes/, installs the wheel into a fresh venv that borrows torch and the other
dependencies from this venv's site-packages (not reinstalling them), and runs the quick start there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import time
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from layerwise.cli import app
from layerwise.errors import RecipeError
from layerwise.recipes_bundled import bundled_recipe, bundled_recipe_names, resolve_recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
CACHES = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".*_cache")


def not_shipped(folder: str, names: list[str]) -> set[str]:
    """What copytree leaves out of the copy the wheel is built from: caches, venv, runs, builds."""
    top = {".git", ".venv", "runs", "build", "dist"} if Path(folder) == ROOT else set()
    return top & set(names) | CACHES(folder, names)


def recipe_files() -> set[str]:
    """Every file under recipes/ (but compiled Python), relative to it: what a wheel must carry."""
    return {
        path.relative_to(RECIPES).as_posix()
        for path in RECIPES.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


# ------------------------------------------------------------------------ configuration (fast)
def test_every_package_under_src_is_listed_in_pyproject():
    """pyproject.toml lists its packages (find() cannot map recipes/): a new one must be added."""
    setuptools = PYPROJECT["tool"]["setuptools"]
    source = ROOT / "src" / "layerwise"
    on_disk = {
        ".".join(("layerwise", *folder.relative_to(source).parts))
        for folder in [source, *source.rglob("*")]
        if folder.is_dir() and "__pycache__" not in folder.parts and any(folder.glob("*.py"))
    }
    missing = on_disk - set(setuptools["packages"])
    assert not missing, f"add {sorted(missing)} to [tool.setuptools] packages in pyproject.toml"
    assert set(setuptools["packages"]) - on_disk == {"layerwise.recipes"}
    assert setuptools["package-dir"]["layerwise.recipes"] == "recipes"


def test_the_installed_package_sees_the_repository_recipes():
    """The editable install maps layerwise.recipes onto recipes/ (re-run `pip install -e .`)."""
    names = {name.rsplit(".", 1)[0] for name in recipe_files() if name.endswith(".yaml")}
    assert set(bundled_recipe_names()) == names
    assert bundled_recipe("digits_cnn").resolve() == RECIPES / "digits_cnn.yaml"
    assert (
        bundled_recipe("broken/lr_too_high.yaml").resolve() == RECIPES / "broken/lr_too_high.yaml"
    )


def test_a_recipe_argument_is_a_file_first_then_a_bundled_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("digits_cnn", "digits_cnn.yaml", "recipes/digits_cnn.yaml"):
        assert resolve_recipe(name).resolve() == RECIPES / "digits_cnn.yaml", name
    (tmp_path / "digits_cnn").write_text("name: mine\n")
    assert resolve_recipe("digits_cnn") == Path("digits_cnn")  # a file of that name wins
    for outside in ("../digits_cnn", "/digits_cnn.yaml"):
        with pytest.raises(RecipeError, match="not found"):
            resolve_recipe(outside)


def test_train_runs_a_bundled_recipe_by_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no recipes/ folder here
    args = ["train", "digits_mlp", "--set", "train.epochs=1", "--runs-dir", "runs", "--quiet"]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "test accuracy:" in result.output
    assert (tmp_path / "runs" / "digits_mlp" / "recipe.yaml").is_file()


def test_an_unknown_recipe_name_lists_the_bundled_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RecipeError) as raised:
        CliRunner().invoke(app, ["train", "digit_cnn"], catch_exceptions=False)
    assert "'digit_cnn' not found" in raised.value.message
    assert "did you mean 'digits_cnn'?" in raised.value.hint
    assert "broken/lr_too_high" in raised.value.hint
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------ wheel in a fresh venv (slow)
def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120):
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.mark.slow
def test_the_wheel_carries_the_recipes_and_runs_quickstart_in_a_fresh_venv(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(PYTHONNOUSERSITE="1", OMP_NUM_THREADS="1")
    source = tmp_path / "source"  # build from a copy: no build/ or egg-info in the repository
    shutil.copytree(ROOT, source, ignore=not_shipped)
    dist = tmp_path / "dist"
    pip = [sys.executable, "-m", "pip"]
    offline = ["--no-deps", "--no-index", "-q"]
    run(*pip, "wheel", *offline, "--no-build-isolation", "-w", dist, ".", cwd=source, env=env)
    build_sdist = f"import setuptools.build_meta as b; b.build_sdist({str(dist)!r})"
    run(sys.executable, "-c", build_sdist, cwd=source, env=env)
    (wheel,) = dist.glob("layerwise-*.whl")
    (sdist,) = dist.glob("layerwise-*.tar.gz")

    expected = recipe_files()
    with zipfile.ZipFile(wheel) as archive:
        in_wheel = {
            name.removeprefix("layerwise/recipes/")
            for name in archive.namelist()
            if name.startswith("layerwise/recipes/")
        }
    assert in_wheel == expected, f"missing {expected - in_wheel}, extra {in_wheel - expected}"
    with tarfile.open(sdist) as archive:
        in_sdist = {
            name.split("/", 2)[2]
            for name in archive.getnames()
            if name.count("/") >= 2 and name.split("/")[1] == "recipes"
        }
    assert in_sdist >= expected, f"sdist misses {expected - in_sdist}"

    # A fresh venv with the wheel; torch & co. come from this venv's site-packages through a .pth
    # line. Python does not process .pth files inside a folder added that way, so this venv's
    # editable install of layerwise (its finder hook) stays inactive and cannot shadow the wheel.
    fresh = tmp_path / "venv"
    venv.create(fresh, with_pip=False)
    python = fresh / "bin" / "python"
    run(*pip, "--python", python, "install", *offline, wheel, cwd=tmp_path, env=env)
    purelib = run(
        python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path
    ).stdout.strip()
    borrowed = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (Path(purelib) / "_layerwise_dev_packages.pth").write_text("\n".join(borrowed) + "\n")

    where = run(
        python,
        "-c",
        "import layerwise, layerwise.recipes as r, torch; "
        "print(layerwise.__file__); print(r.__file__)",
        cwd=tmp_path,
        env=env,
    )
    for module_file in where.stdout.split():
        assert Path(module_file).is_relative_to(fresh), where.stdout

    runs = tmp_path / "runs"
    started = time.perf_counter()
    command = [fresh / "bin" / "layerwise", "quickstart", "--runs-dir", runs]
    result = run(*command, cwd=tmp_path, env=env, timeout=600)
    seconds = time.perf_counter() - started
    accuracy = float(re.search(r"test accuracy: ([0-9.]+)", result.stdout).group(1))
    assert accuracy > 0.9, result.stdout
    assert (runs / "digits_cnn" / "report.html").is_file(), result.stdout
    print(f"fresh-venv quickstart: test accuracy {accuracy:.4f} in {seconds:.0f} s")
