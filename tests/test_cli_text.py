"""The command's text is for people: help in paragraphs, flags shown as flags, `--version`, a
`runs ls` that fits 80 columns, every recipe error at once, did-you-mean for model arguments and
`--set` keys, output that survives a closed pipe, and docs that name the statuses the code sets."""

from __future__ import annotations

import ast
import errno
import io
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

import layerwise
from layerwise import cli
from layerwise.cli import app
from layerwise.cli_text import PipeSafeStream, reflow
from layerwise.errors import RecipeError
from layerwise.models import create_model
from layerwise.recipe import parse_recipe
from layerwise.runs import Run
from layerwise.runs.run import STATUSES

ROOT = Path(__file__).resolve().parents[1]
CLI_MD = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
README = (ROOT / "README.md").read_text(encoding="utf-8")
BASE = "name: t\nmodel: {name: mlp}\n"
runner = CliRunner()


def help_text(*verb: str) -> str:
    result = runner.invoke(app, [*verb, "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    return result.output


# ------------------------------------------------------------------------------ help
def test_prose_is_reflowed_and_examples_keep_their_lines():
    text = """First line.

        A paragraph wrapped
        in the source.

        Examples:
          layerwise a
          layerwise b
        """
    assert reflow(text) == (
        "First line.\n\nA paragraph wrapped in the source.\n\n"
        "Examples:\n  layerwise a\n  layerwise b"
    )


def test_doctor_help_wraps_at_the_terminal_not_mid_sentence():
    lines = help_text("doctor").splitlines()
    start = next(i for i, line in enumerate(lines) if "A run's diagnosis" in line)
    paragraph = []
    for line in lines[start:]:
        if not line.strip():
            break
        paragraph.append(line.rstrip())
    assert len(paragraph) >= 3
    # Every line but the last is filled to near the width, as a terminal would wrap it.
    assert all(len(line) > 65 for line in paragraph[:-1]), paragraph
    assert max(len(line) for line in lines) <= 80


@pytest.mark.parametrize("verb", [("train",), ("doctor",), ("lr-find",), ("runs", "ls"), ()])
def test_flags_show_as_flags_and_lists_as_key_value(verb):
    text = help_text(*verb)
    assert "<bool>" not in text
    assert "<list" not in text
    assert re.search(r"--help\s+Show this message", text)


def test_set_and_quiet_read_as_people_type_them():
    text = help_text("train")
    assert re.search(r"--set\s+KEY=VALUE", text)
    assert re.search(r"--quiet\s+No progress output", text)
    assert re.search(r"--resume\s+RUN", text)


def test_version_is_the_package_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert result.output.strip() == f"layerwise {declared}" == f"layerwise {layerwise.__version__}"


# ------------------------------------------------------------------------------ runs ls
@pytest.fixture
def three_runs(tmp_path):
    root = tmp_path / "runs"
    rows = [
        ("breast_cancer_mlp-fix2", "mlp", "breast_cancer", {"loss": 0.0712, "accuracy": 0.9737}),
        ("digits_cnn", "cnn", "digits", {"loss": 0.0683, "accuracy": 0.9806, "f1": 0.98}),
        ("house_prices", "mlp", "california", {"loss": 0.31, "mae": 0.412}),
    ]
    for name, model, data, metrics in rows:
        recipe = f"name: {name}\nmodel: {{name: {model}}}\ndata: {{name: {data}}}\n"
        run = Run.create(root, name, recipe + "train: {epochs: 120}\n")
        final = {f"test_{key}": value for key, value in metrics.items()}
        run.set_status("finished", final_metrics=final, epochs_done=120)
    return root


def test_runs_ls_fits_80_columns(three_runs, monkeypatch):
    monkeypatch.setattr(cli, "out", Console(width=80, highlight=False, soft_wrap=True))
    result = runner.invoke(app, ["runs", "ls", "--runs-dir", str(three_runs)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 80, result.output
    row = next(line for line in lines if line.startswith("digits_cnn"))
    # One row per run: the headline figure and the full creation time sit on the name's line.
    assert "finished" in row and "acc 0.9806" in row
    assert re.search(r"\d\d-\d\d \d\d:\d\d\s*$", row), row
    assert "mae 0.4120" in next(line for line in lines if line.startswith("house_prices"))


@pytest.mark.slow
def test_runs_ls_in_a_real_80_column_terminal(three_runs):
    result = subprocess.run(
        [sys.executable, "-m", "layerwise.cli", "runs", "ls", "--runs-dir", str(three_runs)],
        capture_output=True,
        text=True,
        env={"COLUMNS": "80", "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert max(len(line.rstrip()) for line in result.stdout.splitlines()) <= 80, result.stdout
    assert "acc 0.9737" in result.stdout


# ------------------------------------------------------------------------------ errors
def test_every_recipe_error_is_reported_at_once():
    text = BASE + "train: {epoch: 1, optimiser: {name: adam}, precision: fp8}\n"
    text += "data: {batch_size: -1}\n"
    with pytest.raises(RecipeError) as info:
        parse_recipe(text, source="three.yaml")
    message = info.value.message
    assert message.startswith("three.yaml: 4 problems:")
    for culprit in ("train.epoch", "train.optimiser", "train.precision", "data.batch_size"):
        assert culprit in message
    assert "did you mean 'epochs'?" in message and "did you mean 'optimizer'?" in message


@pytest.mark.parametrize(
    ("override", "suggestion"),
    [
        ("epochs=5", "train.epochs"),
        ("lr=0.1", "train.optimizer.lr"),
        ("train.lr=0.1", "train.optimizer.lr"),
        ("batch_size=8", "data.batch_size"),
    ],
)
def test_set_key_in_the_wrong_place_suggests_where_it_lives(override, suggestion):
    with pytest.raises(RecipeError) as info:
        parse_recipe(BASE, overrides=[override])
    assert f"(from --set {override})" in info.value.message
    assert info.value.hint.startswith(f"did you mean '{suggestion}'?")


def test_model_argument_typo_gets_did_you_mean_not_a_type_error():
    with pytest.raises(RecipeError) as info:
        create_model("mlp", num_classes=3, hiden=[8])
    assert "has no argument 'hiden' (did you mean 'hidden'?)" in info.value.message
    assert "hidden" in info.value.hint and "dropout" in info.value.hint
    with pytest.raises(RecipeError, match="arguments 'hiden', 'zzz'"):
        create_model("mlp", num_classes=3, hiden=[8], zzz=1)


# ------------------------------------------------------------------------------ pipes
class ClosedPipe(io.StringIO):
    def __init__(self, error: OSError) -> None:
        super().__init__()
        self.error = error
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        raise self.error

    def flush(self) -> None:
        raise self.error


def test_a_closed_pipe_silences_output_instead_of_raising():
    stream = ClosedPipe(BrokenPipeError(errno.EPIPE, "Broken pipe"))
    safe = PipeSafeStream(stream)
    assert safe.write("epoch 1/3\n") == len("epoch 1/3\n")
    assert safe.broken
    safe.write("epoch 2/3\n")
    safe.flush()
    assert stream.writes == 1  # nothing more is tried once the reader has gone


def test_other_write_errors_still_raise():
    safe = PipeSafeStream(ClosedPipe(OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(OSError, match="No space"):
        safe.write("x")
    assert not safe.broken


TINY = """
name: piped
data: {name: digits, args: {subset: 200}, batch_size: 32, val_fraction: 0.2}
model: {name: mlp, args: {hidden: [16]}}
train: {epochs: 3}
doctor: {label_noise: false}
"""


@pytest.mark.slow
def test_training_piped_into_head_trains_to_the_end(tmp_path):
    (tmp_path / "piped.yaml").write_text(TINY)
    command = [sys.executable, "-m", "layerwise.cli", "train", "piped.yaml", "--runs-dir", "runs"]
    trainer = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    first = trainer.stdout.readline()
    trainer.stdout.close()  # what `| head -1` does after its line
    _, errors = trainer.communicate(timeout=300)
    assert first.startswith(b"epoch 1/3"), first
    assert trainer.returncode == 0, errors.decode()
    assert b"Error" not in errors and b"Traceback" not in errors, errors.decode()
    info = Run.open("piped", root=tmp_path / "runs").info()
    assert info["status"] == "finished" and info["epochs_done"] == 3


# ------------------------------------------------------------------------------ docs
def documented_statuses() -> dict[str, str]:
    """The status table of docs/cli.md: status -> meaning."""
    table = CLI_MD[CLI_MD.index("| Status | Meaning |") :].split("\n\n")[0]
    return dict(re.findall(r"^\| `(\w+)` \| (.+) \|$", table, flags=re.M))


def statuses_set_in_the_code() -> set[str]:
    """Every literal status passed to `set_status(...)` anywhere in the package."""
    found = set()
    for path in (ROOT / "src" / "layerwise").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "set_status":
                for arg in node.args[:1]:
                    for leaf in ast.walk(arg):
                        if isinstance(leaf, ast.Constant) and isinstance(leaf.value, str):
                            found.add(leaf.value)
    return found


def test_docs_name_exactly_the_statuses_a_run_can_have():
    assert set(documented_statuses()) == set(STATUSES)
    assert statuses_set_in_the_code() <= set(STATUSES)
    assert {"running", "finished", "halted", "failed", "stopped"} <= statuses_set_in_the_code()


def test_docs_say_an_interrupted_run_is_the_status_the_code_gives_it():
    said = re.findall(r"interrupted `train` .*?marks the run\s+`(\w+)`", CLI_MD, flags=re.S)
    assert said == ["stopped"]
    assert "Interrupted" in documented_statuses()["stopped"]


@pytest.mark.slow
def test_an_interrupted_run_is_marked_as_the_docs_say(tmp_path):
    from layerwise import experiment
    from layerwise.train import Callback

    class CtrlC(Callback):
        def on_epoch_end(self, trainer):
            raise KeyboardInterrupt

    recipe = parse_recipe(TINY)
    with pytest.raises(KeyboardInterrupt) as info:
        experiment.train(recipe, tmp_path, progress=False, echo=None, callbacks=[CtrlC()])
    said = re.search(r"marks the run\s+`(\w+)`", CLI_MD).group(1)
    assert info.value.run.info()["status"] == said == "stopped"


def test_readme_commands_can_be_pasted():
    block = re.findall(r"^```bash\n(.*?)^```", README, flags=re.S | re.M)[1]
    for line in block.splitlines():
        words = shlex.split(line.split("  #")[0])
        assert words[0] == "layerwise" and "|" not in words, line
        verb = words[1:3] if words[1] == "runs" else words[1:2]
        result = runner.invoke(app, [*verb, "--help"] if verb != ["--version"] else verb)
        assert result.exit_code == 0, f"{line}: {result.output}"
