"""`import layerwise` and the light CLI verbs must not import the heavy libraries.

`layerwise --help` and `layerwise runs ls` answer at once because `layerwise/__init__`,
`layerwise.runs` and `layerwise.cli` import on first use. The timing itself lives in
benchmarks/cli_latency.py; these tests check the behaviour that makes it fast: which modules a
fresh interpreter has loaded after each code path, and that the lazy names still all resolve.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

import layerwise
import layerwise.runs
from layerwise.runs import Run

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "sklearn", "scipy", "matplotlib", "pandas")

# Runs in a fresh interpreter: each step, then the heavy modules loaded so far, as JSON.
PROBE = textwrap.dedent(
    """
    import contextlib, io, json, sys

    HEAVY = {heavy!r}
    runs_dir, out_path = sys.argv[1], sys.argv[2]
    report = {{}}

    def loaded():
        return sorted(m for m in HEAVY if m in sys.modules)

    def cli(*argv):
        from layerwise.cli import main

        sys.argv = ["layerwise", *argv]
        stdout = io.StringIO()
        code = 0
        with contextlib.redirect_stdout(stdout):
            try:
                main()
            except SystemExit as exc:
                code = exc.code or 0
        return {{"code": code, "stdout": stdout.getvalue(), "loaded": loaded()}}

    import layerwise
    report["import layerwise"] = {{"loaded": loaded()}}
    import layerwise.cli
    report["import layerwise.cli"] = {{"loaded": loaded()}}
    report["--help"] = cli("--help")
    report["train --help"] = cli("train", "--help")
    report["runs ls"] = cli("runs", "ls", "--runs-dir", runs_dir)
    from layerwise.runs.index import RunIndex
    from layerwise.runs.atomic import atomic_write_json
    atomic_write_json(runs_dir + "/probe.json", {{"ok": 1}})
    report["index and atomic json"] = {{"loaded": loaded() + sorted(
        m for m in ("safetensors", "numpy") if m in sys.modules
    )}}
    with open(out_path, "w") as f:
        json.dump(report, f)
    """
).format(heavy=HEAVY)


@pytest.fixture(scope="module")
def startup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """What a fresh interpreter imported along the light code paths (run once for the module)."""
    root = tmp_path_factory.mktemp("startup")
    runs_dir = root / "runs"
    for name, accuracy in (("digits_mlp", 0.91), ("digits_cnn", 0.97)):
        run = Run.create(runs_dir, name, f"name: {name}\n", model=name[7:], dataset="digits")
        run.set_status("finished", final_metrics={"test_accuracy": accuracy})
    out = root / "report.json"
    subprocess.run(
        [sys.executable, "-c", PROBE, str(runs_dir), str(out)],
        cwd=root,
        check=True,
        timeout=120,
    )
    return json.loads(out.read_text())


@pytest.mark.parametrize(
    "step",
    ["import layerwise", "import layerwise.cli", "--help", "train --help", "runs ls"],
)
def test_light_paths_import_no_heavy_library(startup: dict, step: str) -> None:
    assert startup[step]["loaded"] == [], f"{step} imported {startup[step]['loaded']}"


def test_the_light_paths_still_work(startup: dict) -> None:
    assert startup["--help"]["code"] == 0
    assert "runs" in startup["--help"]["stdout"] and "train" in startup["--help"]["stdout"]
    assert startup["train --help"]["code"] == 0
    assert "--resume" in startup["train --help"]["stdout"]
    listing = startup["runs ls"]
    assert listing["code"] == 0
    assert "digits_mlp" in listing["stdout"] and "digits_cnn" in listing["stdout"]
    assert "0.9700" in listing["stdout"] and "0.9100" in listing["stdout"]


def test_run_index_and_text_writers_need_neither_torch_nor_safetensors(startup: dict) -> None:
    assert startup["index and atomic json"]["loaded"] == []


@pytest.mark.parametrize("module", [layerwise, layerwise.runs], ids=lambda m: m.__name__)
def test_every_public_name_resolves_and_is_listed(module) -> None:
    assert sorted(module.__all__) == sorted(module._EXPORTS)  # the lazy table is complete
    listed = dir(module)
    for name in module.__all__:
        assert getattr(module, name) is not None, name
        assert name in listed, name
    with pytest.raises(AttributeError, match="no_such_name"):
        module.no_such_name  # noqa: B018


def test_lazy_names_are_the_library_objects() -> None:
    from layerwise.errors import RunError
    from layerwise.runs.index import RunIndex
    from layerwise.train.trainer import Trainer

    assert layerwise.Trainer is Trainer
    assert layerwise.RunError is RunError
    assert layerwise.runs.RunIndex is RunIndex
    assert layerwise.Run is Run


def test_version_matches_pyproject() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert layerwise.__version__ == pyproject["project"]["version"]
