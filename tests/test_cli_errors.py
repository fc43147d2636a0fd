"""Bad input through the `layerwise` command.

Every case must end in exactly one message naming the culprit plus a hint on stderr, exit code 2,
no traceback unless `--debug` (which raises the error so its traceback shows), and leave every
file already saved (run folders, checkpoints, the run index) byte for byte and mtime untouched.

Most cases call `layerwise.cli.main()` in this process: it is the console entry point, where the
error-to-exit-code translation lives, and a subprocess costs seconds of imports on a small
machine. One test runs the real `python -m layerwise.cli` in subprocesses.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cli_runner import layerwise
from layerwise.errors import (
    CheckpointError,
    DataError,
    LayerwiseError,
    RecipeError,
    RunError,
    ShapeError,
)
from layerwise.explain import ExplainError
from layerwise.serve.app import ServeError
from layerwise.serve.export import ExportError

TINY = """\
name: tiny
seed: 0
data: {name: digits, batch_size: 64, args: {subset: 200}}
model: {name: mlp, args: {hidden: [16]}}
train: {epochs: 1}
"""
TUNE_SPACE = "tune.space={train.optimizer.lr: {log_uniform: [0.001, 0.1]}}"
SYNTAX_ERROR = "name: broken\nmodel:\n  name: mlp\n   args: {}\n"  # line 4 is mis-indented
TYPO_KEY = "name: typo\nmodel: {name: mlp}\ntrain: {epochs: 1, optimiser: {name: adam}}\n"
RL = """\
name: rl_cart
data: {name: gym, args: {env: CartPole-v1}}
model: {name: dqn, args: {hidden: [8]}}
train: {loss: {name: huber}, metrics: []}
"""


def snapshot(folder: Path) -> dict[str, tuple[int, bytes] | None]:
    """Every file's mtime and bytes, and every folder, under `folder`."""
    return {
        str(path.relative_to(folder)): (path.stat().st_mtime_ns, path.read_bytes())
        if path.is_file()
        else None
        for path in sorted(folder.rglob("*"))
    }


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding one finished run `tiny`, damaged copies of it, and bad input files."""
    root = tmp_path_factory.mktemp("cli_errors")
    (root / "tiny.yaml").write_text(TINY)
    trained = layerwise("train", "tiny.yaml", "--quiet", cwd=root)
    assert trained.code == 0, trained.stderr
    runs = root / "runs"

    def damaged_copy(name: str, file: str, damage) -> None:
        """Damage `kind/file` in every kept checkpoint of that kind, so none is left to use."""
        shutil.copytree(runs / "tiny", runs / name)
        kind, file = file.split("/")
        for path in (runs / name / "checkpoints").glob(f"{kind}-*/{file}"):
            path.write_bytes(damage(path.read_bytes()))
        info_path = runs / name / "run.json"  # as a run killed mid-training would be
        info_path.write_text(json.dumps({**json.loads(info_path.read_text()), "status": "running"}))

    damaged_copy("torn_state", "last/state.pt", lambda data: data[: len(data) // 2])
    damaged_copy("garbage_last", "last/weights.safetensors", lambda data: b"\x07garbage" * 20)
    damaged_copy("torn_best", "best/weights.safetensors", lambda data: data[:40])

    (root / "syntax.yaml").write_text(SYNTAX_ERROR)
    (root / "typo_key.yaml").write_text(TYPO_KEY)
    (root / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    (root / "empty").mkdir()
    (root / "blocker").write_text("a regular file where the runs folder should go")
    rng = np.random.default_rng(0)
    np.savez(root / "short_labels.npz", x=rng.random((100, 4)), y=np.arange(90) % 3)
    x = rng.random((100, 4))
    x[7, 2] = np.nan
    np.savez(root / "nan_inputs.npz", x=x, y=np.arange(100) % 3)
    rows = ["a,b,label"] + [f"{i},{i + 1},{i % 2}" for i in range(12)]
    rows[4] = "3,,1"  # data row 3 has no value in column b
    (root / "nan_inputs.csv").write_text("\n".join(rows) + "\n")
    np.save(root / "row.npy", rng.random((2, 64), dtype=np.float32))
    np.save(root / "wide.npy", np.zeros((3, 65), np.float32))
    np.save(root / "nan_rows.npy", np.full((2, 64), np.nan, np.float32))
    np.save(root / "words.npy", np.array(["seven", "three"]))
    (root / "notes.txt").write_text("not an input")
    from layerwise.models import create_model  # GAN runs with untrained weights, for `generate`
    from layerwise.recipe import parse_recipe
    from layerwise.runs import Run

    for name, family in (("gan_dc", "dcgan"), ("gan_c", "cgan")):
        spec = f"name: {name}\nmodel: {{name: {family}, args: {{latent_dim: 8, width: 4}}}}\n"
        gan_run = Run.create(runs, name, parse_recipe(spec).to_yaml())
        weights = create_model(family, latent_dim=8, width=4).state_dict()
        gan_run.save_checkpoint(weights, {"format": 2}, best=False)
    # A cgan run saved by the layout before conditional batch norm (a label embedding in G).
    spec = "name: gan_old\nmodel: {name: cgan, args: {latent_dim: 8, width: 4}}\n"
    old_run = Run.create(runs, "gan_old", parse_recipe(spec).to_yaml())
    weights = create_model("cgan", latent_dim=8, width=4).state_dict()
    weights["generator.embed.weight"] = weights.pop("generator.norm1.scale.weight")[:, :8]
    old_run.save_checkpoint(weights, {"format": 2}, best=False)
    gan = "name: gan\ndata: {name: mnist, args: {subset: 100}}\nmodel: {name: dcgan}\n"
    (root / "gan.yaml").write_text(gan)  # a GAN recipe for `train` (refused before data loads)
    (root / "rl.yaml").write_text(RL)  # an RL recipe, and a run of it with untrained weights
    rl_run = Run.create(runs, "rl_cart", parse_recipe(RL).to_yaml())
    weights = create_model("dqn", obs_dim=4, num_actions=2, hidden=[8]).state_dict()
    rl_run.save_checkpoint(weights, {"format": 2}, best=False)
    return root


def check(
    work: Path, *args: str, culprit: list[str], error: type[LayerwiseError], hint: str = ""
) -> str:
    """Run a failing command twice (plain, then --debug) and check the whole contract."""
    before = snapshot(work)
    result = layerwise(*args, cwd=work)
    lines = result.stderr.splitlines()
    assert result.code == 2, result.stderr
    assert len(lines) == 2, f"expected one message and one hint, got:\n{result.stderr}"
    message, hint_line = lines
    assert message.startswith("error: ")
    assert hint_line.startswith("  hint: ") and len(hint_line) > len("  hint: ")
    for piece in culprit:
        assert piece in message, f"{piece!r} not in {message!r}"
    assert hint in hint_line
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert snapshot(work) == before, "a failed command changed, added or removed files"

    with pytest.raises(LayerwiseError) as raised:
        layerwise(*args, "--debug", cwd=work)
    assert type(raised.value) is error
    assert message == f"error: {raised.value.message}"
    assert snapshot(work) == before
    return message


# 1 -------------------------------------------------------------------------------- recipe file
def test_missing_recipe_file(work):
    check(work, "train", "missing.yaml", culprit=["'missing.yaml'", "not found"], error=RecipeError)


def test_brackets_in_a_message_print_literally(work):
    # rich would swallow "[red]" as a style tag and fail on "[/x]" as an unmatched closing tag
    check(work, "train", "[red]gone[/x].yaml", culprit=["'[red]gone[/x].yaml'"], error=RecipeError)


def test_recipe_that_is_not_text(work):
    check(work, "train", "latin1.yaml", culprit=["latin1.yaml", "not UTF-8"], error=RecipeError)


# 2-4 ------------------------------------------------------------------------ recipe content
def test_yaml_syntax_error_names_the_line(work):
    check(work, "train", "syntax.yaml", culprit=["syntax.yaml", "line 4"], error=RecipeError)


@pytest.mark.parametrize(
    ("args", "key", "suggestion"),
    [
        (["typo_key.yaml"], "train.optimiser", "did you mean 'optimizer'?"),
        (["tiny.yaml", "--set", "train.epoch=2"], "train.epoch", "did you mean 'epochs'?"),
    ],
)
def test_unknown_key_suggests_the_right_one(work, args, key, suggestion):
    check(
        work, "train", *args, culprit=[f"unknown key '{key}'"], error=RecipeError, hint=suggestion
    )


def test_wrong_type_names_the_key_path(work):
    check(
        work,
        *("train", "tiny.yaml", "--set", "train.optimizer.lr=fast"),
        culprit=["'train.optimizer.lr'", "'fast'"],
        error=RecipeError,
    )


@pytest.mark.parametrize(
    ("override", "culprit", "takes"),
    [
        ("model.args.hidden=abc", ["'hidden'", "model 'mlp'", "'abc'"], "Sequence[int]"),
        ("model.args.dropout=lots", ["'dropout'", "model 'mlp'", "'lots'"], "float"),
        ("data.args.subset=[1]", ["'subset'", "dataset 'digits'", "[1]"], "int | None"),
    ],
)
def test_wrong_type_of_a_factory_argument(work, override, culprit, takes):
    check(
        work,
        "train",
        "tiny.yaml",
        "--set",
        override,
        culprit=culprit,
        error=RecipeError,
        hint=takes,
    )


# 5 ---------------------------------------------------------------------------- unknown names
@pytest.mark.parametrize(
    ("override", "kind", "wrong", "right"),
    [
        ("model.name=mpl", "model", "mpl", "mlp"),
        ("train.optimizer.name=adma", "optimizer", "adma", "adam"),
        ("train.loss.name=cross_entropi", "loss", "cross_entropi", "cross_entropy"),
        ("data.name=digit", "dataset", "digit", "digits"),
        ("train.schedule.name=onecycl", "schedule", "onecycl", "onecycle"),
        ("train.metrics=[acuracy]", "metric", "acuracy", "accuracy"),
    ],
)
def test_unknown_name_suggests_the_closest(work, override, kind, wrong, right):
    check(
        work,
        *("train", "tiny.yaml", "--set", override, "--quiet"),
        culprit=[f"unknown {kind} '{wrong}'"],
        error=RecipeError,
        hint=f"did you mean '{right}'?",
    )


# 6, 7, 9 ----------------------------------------------------------------------------- data
def test_missing_mnist_files_say_where_to_put_them(work):
    check(
        work,
        *("train", "tiny.yaml", "--set", "data.name=mnist", "--set", "data.args={root: empty}"),
        culprit=["MNIST file not found", "empty/MNIST/raw/train-images-idx3-ubyte"],
        error=DataError,
        hint="in empty/MNIST/raw/",
    )


def test_missing_npz_file(work):
    check(
        work,
        *("train", "tiny.yaml", "--set", "data.name=npz", "--set", "data.args={path: nope.npz}"),
        culprit=["data file not found", str(work / "nope.npz")],
        error=DataError,
        hint="LAYERWISE_DATA",
    )


def test_label_count_not_matching_inputs(work):
    check(
        work,
        *("train", "tiny.yaml", "--set", "data.name=npz"),
        *("--set", "data.args={path: short_labels.npz}"),
        culprit=["short_labels.npz", "100 rows", "labels have 90"],
        error=DataError,
    )


@pytest.mark.parametrize(
    ("data", "culprit"),
    [
        # The doctor's data check refuses them (after the split, so rows are not the file's).
        (
            "{name: npz, args: {path: nan_inputs.npz}}",
            ["nan_inputs.npz", "missing_values", "1 NaN"],
        ),
        ("{name: csv, args: {path: nan_inputs.csv}}", ["nan_inputs.csv", "missing_values", "NaN"]),
    ],
)
def test_nan_in_training_inputs(work, data, culprit):
    check(
        work,
        *("train", "tiny.yaml", "--set", f"data={data}"),
        culprit=culprit,
        error=DataError,
        hint="data.impute",
    )


def test_nan_in_prediction_inputs(work):
    check(work, "predict", "tiny", "nan_rows.npy", culprit=["nan_rows.npy", "NaN"], error=DataError)


def test_text_array_given_to_predict(work):
    check(
        work, "predict", "tiny", "words.npy", culprit=["words.npy", "not numeric"], error=DataError
    )


# 8 ---------------------------------------------------------------------------------- shapes
def test_prediction_input_of_the_wrong_width(work):
    check(
        work,
        *("predict", "tiny", "wide.npy"),
        culprit=["wide.npy", "rows of 65 values", "64 (1 x 8 x 8) features"],
        error=ShapeError,
        hint="as in the training data",
    )


def test_model_whose_first_layer_does_not_fit_the_data(work):
    check(
        work,
        *("train", "tiny.yaml", "--set", "model={name: resnet20, args: {in_channels: 3}}"),
        # PyTorch's own words keep their brackets: "weight of size [16, 3, 3, 3]"
        culprit=["layer 'conv1'", "(2, 1, 8, 8)", "(N, 3, H, W)", "[16, 3, 3, 3]"],
        error=ShapeError,
    )


# 10, 11 ------------------------------------------------------------------------ checkpoints
@pytest.mark.parametrize(
    ("args", "file"),
    [
        (["train", "--resume", "torn_state"], "torn_state/checkpoints/last-"),
        (["train", "--resume", "garbage_last"], "garbage_last/checkpoints/last-"),
        (["evaluate", "garbage_last", "--weights", "last"], "garbage_last/checkpoints/last-"),
        (["evaluate", "torn_best", "--weights", "best"], "torn_best/checkpoints/best-"),
        (["predict", "torn_best", "row.npy", "--weights", "best"], "torn_best/checkpoints/best-"),
    ],
)
def test_corrupt_checkpoint_is_named_and_left_alone(work, args, file):
    check(work, *args, culprit=[file, "damaged", "checksum"], error=CheckpointError)


def test_resume_with_a_changed_recipe_keeps_the_run(work):
    check(
        work,
        *("train", "tiny.yaml", "--resume", "tiny", "--set", "train.epochs=3"),
        culprit=["train.epochs: 1 -> 3"],
        error=CheckpointError,
    )


# 12-14 ------------------------------------------------------------------------ runs and files
def test_runs_folder_that_cannot_be_created(work):
    # Tests run as root, which chmod cannot stop: put the runs folder below a regular file.
    check(
        work,
        *("train", "tiny.yaml", "--runs-dir", "blocker/runs"),
        culprit=["cannot create runs folder", "blocker/runs"],
        error=RunError,
        hint="--runs-dir",
    )


@pytest.mark.parametrize(
    "args",
    [
        ["evaluate", "tinny"],
        ["predict", "tinny", "row.npy"],
        ["runs", "show", "tinny"],
        ["runs", "compare", "tiny", "tinny"],
        ["train", "--resume", "tinny"],
    ],
    ids=lambda args: " ".join(args[:2]),
)
def test_unknown_run_name_suggests_the_closest(work, args):
    check(work, *args, culprit=["no run 'tinny'"], error=RunError, hint="did you mean 'tiny'?")


@pytest.mark.parametrize(
    ("given", "culprit"),
    [
        ("notes.txt", ["notes.txt", "unknown file type '.txt'"]),
        ("absent.npy", ["'absent.npy'", "not found"]),
    ],
)
def test_predict_input_that_cannot_be_read(work, given, culprit):
    check(work, "predict", "tiny", given, culprit=culprit, error=DataError)


# ----------------------------------------------------------------------------------- explain
@pytest.mark.parametrize(
    ("options", "culprit", "hint"),
    [
        (["--method", "sailency"], ["unknown explanation method 'sailency'"], "'saliency'"),
        (["--target", "12"], ["--target 12", "run 'tiny'", "10 classes"], "a class name"),
        (["--method", "gradcam"], ["Grad-CAM needs a conv layer", "run 'tiny'"], "saliency"),
    ],
    ids=["unknown method", "class out of range", "Grad-CAM without a conv layer"],
)
def test_explain_asked_for_what_the_run_cannot_give(work, options, culprit, hint):
    check(
        work, "explain", "tiny", "row.npy", *options, culprit=culprit, error=ExplainError, hint=hint
    )


@pytest.mark.parametrize(
    ("given", "culprit"),
    [
        ("notes.txt", ["notes.txt", "unknown file type '.txt'"]),
        ("a gripping film", ["'a gripping film' is not a file", "image run"]),
    ],
    ids=["wrong file", "text given to an image run"],
)
def test_explain_input_an_image_run_cannot_read(work, given, culprit):
    check(work, "explain", "tiny", given, culprit=culprit, error=DataError)


def test_explain_without_captum_names_the_extra(work, monkeypatch):
    monkeypatch.setitem(sys.modules, "captum.attr", None)
    check(
        work,
        *("explain", "tiny", "row.npy"),
        culprit=["captum", "not installed"],
        error=ExplainError,
        hint="pip install 'layerwise[interpret]'",
    )


# --------------------------------------------------------------------------- beyond the CLI verbs
def test_stray_argument_of_the_constant_schedule_is_not_ignored(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY)
    result = layerwise(
        *("train", "tiny.yaml", "--quiet", "--set", "train.schedule.args={warmup_epochs: 2}"),
        cwd=tmp_path,
    )
    assert result.code == 2
    assert "schedule 'constant'" in result.stderr and "warmup_epochs" in result.stderr
    info = json.loads((tmp_path / "runs" / "tiny" / "run.json").read_text())
    assert info["status"] == "failed"


@pytest.mark.slow
def test_real_entry_point_in_subprocesses(work):
    """`python -m layerwise.cli`: exit code 2 and one message; with --debug, the traceback."""
    before = snapshot(work)
    verb = ["evaluate", "garbage_last", "--weights", "last"]
    command = [sys.executable, "-m", "layerwise.cli", *verb]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    plain, debug = (
        subprocess.Popen(
            command + extra,
            cwd=work,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for extra in ([], ["--debug"])
    )
    plain_out, plain_err = plain.communicate(timeout=300)
    _debug_out, debug_err = debug.communicate(timeout=300)

    assert plain.returncode == 2, plain_err
    lines = plain_err.splitlines()
    assert len(lines) == 2, plain_err
    assert lines[0].startswith("error: every 'last' checkpoint in '")
    assert "garbage_last/checkpoints/last-" in lines[0] and "weights.safetensors" in lines[0]
    assert lines[1].startswith("  hint: ")
    assert "Traceback" not in plain_err and plain_out == ""

    assert debug.returncode not in (0, 2)
    assert "Traceback (most recent call last)" in debug_err
    assert "layerwise.errors.CheckpointError" in debug_err
    assert snapshot(work) == before


# ------------------------------------------------------------- issue 15: every verb, more inputs
@pytest.fixture(scope="module")
def damaged(work: Path) -> Path:
    """Run folders damaged beyond their checkpoints, a garbled run index, and bad input files."""
    runs = work / "runs"
    for name in ("bad_metrics", "bad_recipe", "bad_info"):
        shutil.copytree(runs / "tiny", runs / name)
    metrics = runs / "bad_metrics" / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join([lines[0], "{not json", *lines[1:]]) + "\n")
    (runs / "bad_recipe" / "recipe.yaml").write_text("name: bad_recipe\nmodel: [unclosed\n")
    (runs / "bad_info" / "run.json").write_text('{"name": "bad_info", "sta')
    (work / "garbled_index" / "runs").mkdir(parents=True)
    (work / "garbled_index" / "runs" / "index.sqlite").write_bytes(
        b"SQLite format 2\0" + b"x" * 200
    )
    (work / "no_images").mkdir()
    (work / "no_images" / "readme.md").write_text("no pictures here")
    (work / "noise.png").write_bytes(bytes(range(256)) * 3)
    (work / "cut.ppm").write_bytes(b"P4\n54 ")  # a header cut short: Pillow raises ValueError
    (work / "text_column.csv").write_text("a,b\n1,seven\n2,three\n")
    (work / "mixed.csv").write_text(
        "ward,dose,outcome\nnorth,1.5,bad\nsouth,high,good\neast,2.0,bad\nnorth,,good\n"
    )
    np.savez(work / "x_only.npz", x=np.zeros((4, 64), np.float32))
    np.savez(work / "y_2d.npz", x=np.zeros((4, 64), np.float32), y=np.zeros((4, 64)))
    # a recommender run (untrained: recommend checks the user and --k before any weights) and
    # MovieLens folders that cannot be read
    from layerwise.recipe import parse_recipe
    from layerwise.runs import Run

    # a face embedding run (its settings only: enroll and identify check their input first)
    face = "name: face\ndata: {name: orl_people}\nmodel: {name: embedding_cnn}\n"
    face_run = Run.create(work / "runs", "face", parse_recipe(face).to_yaml())
    settings = {"modality": "image", "input_shape": [1, 28, 23], "threshold": 0.5}
    (face_run.path / "embedding.json").write_text(json.dumps(settings))
    data = "{name: synthetic_ratings, args: {num_users: 30, num_items: 20, min_ratings: 5}}"
    spec = f"name: rec\ndata: {data}\nmodel: {{name: biased_mf, args: {{dim: 2}}}}\n"
    Run.create(work / "runs", "rec", parse_recipe(spec).to_yaml())
    # a detection run (untrained: predict reads its images before any weights)
    det = "name: det\ndata: {name: mnist_scenes}\nmodel: {name: scene_fcos}\n"
    Run.create(work / "runs", "det", parse_recipe(det).to_yaml())
    u1 = {"u.data": "1\t2\t3\t4\n", "u1.base": "1\t2\t3\t4\n", "u1.test": "9\t2\t3\t4\n"}
    for name, files, split in (
        ("ml_cols", {"u.data": "1\t2\t3\n"}, "random"),
        ("ml_rating", {"u.data": "1\t2\t4\t7\n1\t3\tfive\t7\n"}, "random"),
        ("ml_csv", {"ratings.csv": "user,item,rating\n1,2,3\n"}, "random"),
        ("ml_u1", u1, "u1"),
        ("ml_missing", {}, "random"),
    ):
        for file, text in files.items():
            (work / name).mkdir(exist_ok=True)
            (work / name / file).write_text(text)
        where = name if files else "no_such_folder"
        (work / f"{name}.yaml").write_text(
            f"name: {name}\ndata: {{name: movielens, args: {{path: {where}, split: {split}}}}}\n"
            "model: {name: biased_mf}\n"
        )
    return work


CATALOG = [
    # train: recipe and --set
    (["train"], ["no recipe given"], LayerwiseError),
    (["train", "tiny.yaml", "--set", "train.epochs"], ["bad override 'train.epochs'"], RecipeError),
    (
        ["train", "tiny.yaml", "--set", "name.x=1"],
        ["'name' is a value, not a section"],
        RecipeError,
    ),
    (["train", "tiny.yaml", "--set", "train.epochs=0"], ["'train.epochs'", "(got 0)"], RecipeError),
    (["train", "tiny.yaml", "--set", "data.batch_size=-8"], ["'data.batch_size'"], RecipeError),
    (
        ["train", "tiny.yaml", "--set", "train.optimizer.lr=.nan"],
        ["'train.optimizer.lr'"],
        RecipeError,
    ),
    # train --nproc: refused before any process starts
    (["train", "tiny.yaml", "--nproc", "0"], ["--nproc", "got 0"], LayerwiseError),
    (
        ["train", "--resume", "gan_dc", "--nproc", "2"],
        ["'gan_dc'", "GAN", "several processes"],
        RecipeError,
    ),
    # train: model sanity before any run folder
    (
        ["train", "tiny.yaml", "--set", "model.args.hidden=[0]"],
        ["model.args.hidden[0] is 0"],
        RecipeError,
    ),
    (
        ["train", "tiny.yaml", "--set", "model.args.num_classes=3"],
        ["model.args.num_classes", "10 classes"],
        RecipeError,
    ),
    (
        ["train", "tiny.yaml", "--set", "train.loss.name=mse"],
        ["train.loss.name is 'mse'", "(10,)"],
        ShapeError,
    ),
    # doctor
    (["doctor", "tiny", "--auto-fix"], ["'tiny' is a run", "--auto-fix"], LayerwiseError),
    (["doctor", "tinny"], ["no run 'tinny'"], RunError),
    (["doctor", "bad_recipe"], ["bad_recipe/recipe.yaml", "damaged"], RunError),
    (["doctor", "syntax.yaml", "--data-only"], ["syntax.yaml", "line 4"], RecipeError),
    # lr-find and summary
    (["lr-find", "missing.yaml"], ["'missing.yaml'", "not found"], RecipeError),
    (["lr-find", "typo_key.yaml"], ["unknown key 'train.optimiser'"], RecipeError),
    (["summary", "tinny"], ["no run 'tinny'"], RunError),
    (["summary", "syntax.yaml"], ["syntax.yaml", "line 4"], RecipeError),
    # runs ls / show / compare on damaged folders
    (
        ["runs", "ls", "--runs-dir", "garbled_index/runs"],
        ["garbled_index/runs/index.sqlite"],
        RunError,
    ),
    (["runs", "show", "bad_metrics"], ["bad_metrics/metrics.jsonl", "line 2"], RunError),
    (["runs", "show", "bad_info"], ["bad_info/run.json"], RunError),
    (["runs", "compare", "tiny", "bad_metrics"], ["bad_metrics/metrics.jsonl", "line 2"], RunError),
    # evaluate and predict
    (["train", "--resume", "bad_recipe"], ["bad_recipe/recipe.yaml"], RecipeError),
    (["evaluate", "bad_recipe"], ["bad_recipe/recipe.yaml"], RecipeError),
    (["predict", "tiny", "no_images"], ["no_images", "no image files"], DataError),
    (["predict", "tiny", "noise.png"], ["noise.png"], DataError),
    (["predict", "tiny", "cut.ppm"], ["cut.ppm", "Reached EOF"], DataError),
    (["predict", "tiny", "text_column.csv"], ["text_column.csv"], DataError),
    # quickstart
    (["quickstart", "--runs-dir", "blocker/runs"], ["blocker/runs"], RunError),
    # translate, generate, chat: an unknown run, or a run that was not trained on text
    (["translate", "tinny", "A man."], ["no run 'tinny'"], RunError),
    (["translate", "tiny", "A man."], ["tiny/src_pipeline.json is missing"], CheckpointError),
    (["generate", "tinny"], ["no run 'tinny'"], RunError),
    (
        ["generate", "tiny", "--prompt", "ROMEO:"],
        ["tiny/text_pipeline.json is missing"],
        CheckpointError,
    ),
    (["chat", "tinny"], ["no run 'tinny'"], RunError),
    # generate with a GAN run: a class of an unconditional GAN, a class it does not have, no images
    (["generate", "gan_dc", "--label", "3"], ["gan_dc", "unconditional"], DataError),
    (["generate", "gan_c", "--label", "12"], ["--label 12", "0..9"], DataError),
    (["generate", "gan_c", "--n", "0"], ["--n must be 1..4096", "got 0"], DataError),
    (
        ["generate", "gan_old"],
        ["gan_old", "does not fit the current 'cgan'", "generator.embed.weight"],
        CheckpointError,
    ),
    (["chat", "tiny"], ["tiny/text_pipeline.json is missing"], CheckpointError),
    # play (RL runs) and RL recipes
    (["play", "tiny"], ["run 'tiny' trains a 'mlp'", "not an RL agent"], LayerwiseError),
    (["play", "rl_cart", "--episodes", "0"], ["--episodes must be 1..10000", "got 0"], DataError),
    (["play", "rl_cart", "--gif", "out.png"], ["out.png", "must end in .gif"], DataError),
    (["play", "rl_cart", "--gif", "nowhere/out.gif"], ["nowhere", "does not exist"], DataError),
    (
        ["train", "rl.yaml", "--set", "data.args.env=CartPol-v1"],
        ["data.args.env", "unknown gymnasium environment 'CartPol-v1'"],
        RecipeError,
    ),
    (
        ["train", "rl.yaml", "--set", "train.loss.name=cross_entropy"],
        ["train.loss.name", "a dqn agent trains with huber or mse"],
        RecipeError,
    ),
    (
        ["train", "rl.yaml", "--set", "train.loss.args.gama=0.9"],
        ["train.loss.args.gama is not a DQN setting"],
        RecipeError,
    ),
    (["chat", "tiny", "--top-k", "0"], ["top_k must be >= 1", "got 0"], LayerwiseError),
    # GAN recipes: model settings checked before the data is read
    (
        ["train", "gan.yaml", "--set", "model.args.latent_scale=-1"],
        ["model.args.latent_scale must be a number >= 0", "got -1"],
        RecipeError,
    ),
    # lr-find: the sweep's own options
    (["lr-find", "tiny.yaml", "--steps", "0"], ["num_steps >= 10", "got 0"], LayerwiseError),
    (
        ["lr-find", "tiny.yaml", "--start-lr", "1", "--end-lr", "0.1"],
        ["0 < start_lr < end_lr", "start_lr=1.0"],
        LayerwiseError,
    ),
    (
        ["lr-find", "tiny.yaml", "--set", "train.epochs=0"],
        ["'train.epochs'", "(got 0)"],
        RecipeError,
    ),
    # summary
    (["summary", "missing.yaml"], ["'missing.yaml'", "not found"], RecipeError),
    (["summary", "bad_recipe"], ["bad_recipe/recipe.yaml"], RecipeError),
    # runs show / compare
    (["runs", "show", "empty"], ["'empty' is not a run folder"], RunError),
    (["runs", "compare", "tinny"], ["no run 'tinny'"], RunError),
    (
        ["runs", "compare", "tiny", "bad_info", "bad_metrics"],
        ["bad_metrics/metrics.jsonl"],
        RunError,
    ),
    # evaluate --data: a labelled file that cannot be read or does not fit
    (["evaluate", "tiny", "--data", "missing.csv"], ["'missing.csv'"], DataError),
    (["evaluate", "tiny", "--data", "notes.txt"], ["'notes.txt'", "'label' column"], DataError),
    (
        ["evaluate", "tiny", "--data", "text_column.csv"],
        ["'text_column.csv'", "no label column 'label'"],
        DataError,
    ),
    (
        ["evaluate", "tiny", "--data", "short_labels.npz"],
        ["short_labels.npz", "4 values"],
        ShapeError,
    ),
    (["evaluate", "tiny", "--data", "x_only.npz"], ["x_only.npz"], DataError),
    (["evaluate", "bad_recipe", "--data", "x_only.npz"], ["bad_recipe/recipe.yaml"], RecipeError),
    # found by benchmarks/fuzz.py: each was a crash with a traceback
    (["evaluate", "tiny", "--data", "y_2d.npz"], ["y_2d.npz", "shape (4, 64)"], DataError),
    (["predict", "tiny", "row.npy", "--top-k", "0"], ["--top-k is 0"], LayerwiseError),
    (
        ["predict", "tiny", "row.npy", "--top-k", "-1", "--output", "out.csv"],
        ["--top-k is -1"],
        LayerwiseError,
    ),
    # tune: the search space and its options, before any study or run folder is made
    (["tune", "tiny.yaml"], ["tiny.yaml", "no tune section"], RecipeError),
    (
        ["tune", "tiny.yaml", "--set", "tune.space={train.optimizer.lr: {loguniform: [0.1, 1]}}"],
        ["tune.space.train.optimizer.lr", "did you mean 'log_uniform'"],
        RecipeError,
    ),
    (
        ["tune", "tiny.yaml", "--set", "tune.space={train.optimizer.lr: {log_uniform: [0, 1]}}"],
        ["tune.space.train.optimizer.lr", "low > 0"],
        RecipeError,
    ),
    (
        ["tune", "tiny.yaml", "--set", "tune.space={train.optimizer.lrr: {uniform: [0.1, 1]}}"],
        ["tune.space.train.optimizer.lrr", "unknown key"],
        RecipeError,
    ),
    (
        ["tune", "tiny.yaml", "--set", "tune.space={lr: {uniform: [0.1, 1]}}"],
        ["tune.space.lr", "not a recipe key"],
        RecipeError,
    ),
    (
        ["tune", "tiny.yaml", "--set", TUNE_SPACE, "--set", "tune.metric=val_acc"],
        ["tune.metric is 'val_acc'"],
        RecipeError,
    ),
    (
        ["tune", "tiny.yaml", "--set", TUNE_SPACE, "--set", "tune.prune_on=[loss_nann]"],
        ["tune.prune_on", "loss_nann"],
        RecipeError,
    ),
    (
        ["tune", "tiny.yaml", "--set", TUNE_SPACE, "--resume", "--study", "nothere"],
        ["no study 'nothere' to resume"],
        LayerwiseError,
    ),
    (
        ["tune", "tiny.yaml", "--set", TUNE_SPACE, "--trials", "0"],
        ["--trials is 0"],
        LayerwiseError,
    ),
    # track: MLflow asked for but not installed (refused before any run folder)
    *(
        [(["train", "tiny.yaml", "--set", "track.mlflow=true"], ["track.mlflow"], RecipeError)]
        if importlib.util.find_spec("mlflow") is None
        else []
    ),
    # csv_table: a mixed table's columns, named before any run folder
    (
        [
            "train",
            "tiny.yaml",
            "--set",
            "data.name=csv_table",
            "--set",
            "data.args={path: mixed.csv, target: outcom}",
        ],
        ["mixed.csv has no column 'outcom'"],
        DataError,
    ),
    (
        [
            "train",
            "tiny.yaml",
            "--set",
            "data.name=csv_table",
            "--set",
            "data.args={path: mixed.csv, target: outcome, numeric: [dose]}",
        ],
        ["mixed.csv: numeric column 'dose' holds text ('high')"],
        DataError,
    ),
    # export and serve: refused before anything is loaded or written
    (
        ["export", "tiny", "--out", "notes.txt"],
        ["'notes.txt'", "does not end in .onnx"],
        ExportError,
    ),
    (
        ["export", "tiny", "--format", "torchscript", "--out", "empty"],
        ["'empty'", "a folder"],
        ExportError,
    ),
    (["serve", "tiny", "--max-batch", "0"], ["--max-batch 0"], ServeError),
    (["serve", "tiny", "--port", "70000"], ["--port 70000"], ServeError),
    (["serve", "tiny", "--max-upload-mb", "0"], ["--max-upload-mb", "0 bytes"], ServeError),
    # recommend, and rating data that cannot be read (before any run folder is made)
    (["recommend", "rec", "--user", "999"], ["user 999 is not in the data", "'rec'"], DataError),
    (["recommend", "rec", "--user", "3", "--k", "0"], ["--k is 0"], DataError),
    (["recommend", "recc", "--user", "3"], ["no run 'recc'"], RunError),
    # enroll and identify: a run that is not a face model, a folder without photos, not a photo
    (["enroll", "tiny", "no_images"], ["run 'tiny' is not a face", "model 'mlp'"], RunError),
    (["identify", "tiny", "noise.png"], ["run 'tiny' is not a face"], RunError),
    (["enroll", "face", "no_images"], ["folder 'no_images' holds no inputs to enrol"], DataError),
    (["enroll", "face", "mixed.csv"], ["'mixed.csv' is not a folder"], DataError),
    (["identify", "face", "noise.png"], ["cannot read 'noise.png' as an image"], DataError),
    (["identify", "face", "mixed.csv"], ["cannot read 'mixed.csv'", "not '.csv'"], DataError),
    (["train", "ml_missing.yaml"], ["movielens: no_such_folder not found"], DataError),
    (["train", "ml_cols.yaml"], ["ml_cols/u.data line 1: 3 fields where 4"], DataError),
    (["train", "ml_rating.yaml"], ["ml_rating/u.data line 2: rating 'five' is not"], DataError),
    (["train", "ml_u1.yaml"], ["ml_u1/u1.test line 1 has user 9", "u.data does not"], DataError),
    (["train", "ml_csv.yaml"], ["ml_csv/ratings.csv", "without userId, movieId"], DataError),
    # detection: scenes that cannot be made, a model that is not a detector, not an image
    (
        [
            "train",
            "tiny.yaml",
            "--set",
            "data.name=mnist_scenes",
            "--set",
            "data.args={train_size: 0}",
        ],
        ["train_size is 0"],
        DataError,
    ),
    (
        ["train", "tiny.yaml", "--set", "data={name: mnist_scenes, args: {train_size: 1}}"],
        ["model.name 'mlp' is not a detector"],
        RecipeError,
    ),
    (["predict", "det", "mixed.csv"], ["cannot read 'mixed.csv' as an image"], DataError),
    # a MiniLM backbone on data that is not text; another source without its weights' path
    (
        ["train", "tiny.yaml", "--set", "backbone={source: minilm}"],
        ["backbone source minilm needs a text dataset"],
        RecipeError,
    ),
    (
        ["train", "tiny.yaml", "--set", "backbone={source: run}"],
        ["backbone source run needs backbone.path"],
        RecipeError,
    ),
]


@pytest.mark.parametrize(
    ("args", "culprit", "error"), CATALOG, ids=[" ".join(case[0]) for case in CATALOG]
)
def test_catalog(damaged, args, culprit, error):
    """One message naming the culprit, a hint, exit code 2, no traceback, no file changed."""
    check(damaged, *args, culprit=culprit, error=error)


def test_detection_without_pycocotools_names_the_extra(work, monkeypatch):
    from layerwise.tasks.detection import MissingExtraError

    monkeypatch.setitem(sys.modules, "pycocotools", None)  # `import pycocotools` fails
    args = ["train", "tiny.yaml", "--set", "data.name=mnist_scenes"]
    message = check(
        work, *args, culprit=["needs `pycocotools`"], error=MissingExtraError, hint="[detect]"
    )
    assert "not installed" in message


def test_rl_without_gymnasium_names_the_extra(work, monkeypatch):
    monkeypatch.setitem(sys.modules, "gymnasium", None)  # `import gymnasium` raises ImportError
    for args in (["train", "rl.yaml"], ["play", "rl_cart"]):
        message = check(
            work, *args, culprit=["needs the gymnasium package"], error=LayerwiseError, hint="[rl]"
        )
        assert "not installed" in message
