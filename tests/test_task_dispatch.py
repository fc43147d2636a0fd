"""The one lookup from a recipe to the task that trains it (`layerwise.tasks.dispatch`), and
`layerwise train` handing new and resumed runs to it. Nothing trains here: the tasks' own test
files train them through the CLI."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from cli_runner import layerwise
from layerwise import experiment
from layerwise.errors import RecipeError
from layerwise.recipe import parse_recipe
from layerwise.runs import Run
from layerwise.tasks import dispatch
from layerwise.tasks.detection import train_detector
from layerwise.tasks.faces import train_embedding
from layerwise.tasks.gan import train_gan
from layerwise.tasks.recommend import train_recommender
from layerwise.tasks.rl import train_rl


def _recipe(data: str, model: str, name: str = "r") -> object:
    return parse_recipe(f"name: {name}\nmodel: {{name: {model}}}\ndata: {{name: {data}}}\n")


@pytest.mark.parametrize(
    ("data", "model", "expected"),
    [
        ("mnist_scenes", "scene_fcos", train_detector),
        ("synthetic_ratings", "matrix_factorization", train_recommender),
        ("movielens", "ncf", train_recommender),
        ("orl_faces", "embedding_cnn", train_embedding),
        ("mnist", "dcgan", train_gan),
        ("mnist", "CGAN", train_gan),
        ("cartpole", "dqn", train_rl),
        ("cartpole", "ppo", train_rl),
    ],
)
def test_each_task_recipe_gets_its_own_train_function(data, model, expected) -> None:
    assert dispatch.task_trainer(_recipe(data, model)) is expected


@pytest.mark.parametrize(("data", "model"), [("digits", "mlp"), ("mnist", "cnn"), ("co2", "gru")])
def test_everything_else_trains_through_the_generic_experiment(data, model) -> None:
    assert dispatch.task_kind(_recipe(data, model)) is None
    assert dispatch.task_trainer(_recipe(data, model)) is None


@pytest.mark.parametrize(
    ("data", "task_class"),
    [("multi30k", "TranslationTask"), ("tinyshakespeare", "LanguageModelTask")],
)
def test_a_sequence_recipe_trains_through_train_task_with_its_task(
    monkeypatch, data, task_class
) -> None:
    calls = []
    monkeypatch.setattr(
        "layerwise.tasks.sequence.train_task", lambda *args, **kw: calls.append((args, kw))
    )
    recipe = _recipe(data, "seq2seq_gru")
    train = dispatch.task_trainer(recipe)
    train(None, "somewhere", resume="run-1", progress=False)
    ((args, options),) = calls
    assert args[0] is None and args[2] == "somewhere"
    assert type(args[1]).__name__ == task_class
    assert options == {"resume": "run-1", "progress": False}


def test_the_first_kind_that_claims_a_recipe_wins() -> None:
    # sequence data with a GAN model, scenes with an embedding model: the data's task is asked first
    names = [kind.name for kind in dispatch.TASKS]
    assert dispatch.task_kind(_recipe("multi30k", "dcgan")).name == names[0]
    assert dispatch.task_kind(_recipe("mnist_scenes", "embedding_cnn")).name == "detection"
    assert names.index("detection") < names.index("embedding (faces, speakers)")


def test_cli_train_hands_new_and_resumed_runs_to_the_task(tmp_path: Path, monkeypatch) -> None:
    """A new run is looked up by its recipe; a resumed one by its saved recipe, and the task is
    given no recipe (it reopens the run) and the run's name."""
    recipe_text = "name: fake_gan\nmodel: {name: dcgan}\ndata: {name: mnist}\n"
    (tmp_path / "fake_gan.yaml").write_text(recipe_text)
    runs = tmp_path / "runs"
    calls, made = [], []

    def fake_train(recipe, runs_root, **options):
        calls.append((recipe, Path(runs_root), options))
        run = Run.open(options["resume"], root=runs_root) if options.get("resume") else None
        run = run or Run.create(runs_root, recipe.name, recipe.to_yaml())
        run.set_status("finished", test_metrics={"fid": 1.5})
        made.append(run.name)
        return run, {"fid": 1.5}

    looked_up = []

    def lookup(recipe):
        looked_up.append(recipe.name)
        return fake_train

    monkeypatch.setattr(dispatch, "task_trainer", lookup)
    new = layerwise("train", "fake_gan.yaml", "--quiet", "--runs-dir", str(runs), cwd=tmp_path)
    assert new.code == 0, new.stderr
    assert "fid" in new.stdout and "run folder:" in new.stdout
    (given, root, options) = calls[0]
    assert given.name == "fake_gan" and root == runs
    assert options == {"resume": None, "progress": False}
    name = made[0]

    again = layerwise("train", "--resume", name, "--runs-dir", str(runs), cwd=tmp_path)
    assert again.code == 0, again.stderr
    (given, root, options) = calls[1]
    assert given is None and root == runs
    assert options == {"resume": name, "progress": True}
    assert looked_up == ["fake_gan", "fake_gan"]  # the resumed run: its saved recipe


REFUSED_UNDER_NPROC = [
    ("mnist_scenes", "scene_fcos", "detection"),
    ("synthetic_ratings", "matrix_factorization", "recommender"),
    ("orl_faces", "embedding_cnn", "embedding"),
    ("mnist", "dcgan", "GAN"),
    ("cartpole", "ppo", "RL agent"),
    ("tinyshakespeare", "lstm_lm", "language model"),
]


@pytest.fixture
def no_torchrun(monkeypatch) -> None:
    """Starting torchrun fails the test: a refused recipe must not get that far."""

    def popen(*args, **kwargs):
        raise AssertionError(f"torchrun started: {args}")

    monkeypatch.setattr("layerwise.train.distributed.subprocess.Popen", popen)


def _assert_refused(result, name: str, kind: str) -> None:
    assert result.code == 2, result.stderr
    assert f"'{name}'" in result.stderr and kind in result.stderr
    assert "several processes" in result.stderr and "hint: train it in one process" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize(("data", "model", "kind"), REFUSED_UNDER_NPROC)
def test_nproc_refuses_every_task_with_its_own_loop(
    tmp_path: Path, no_torchrun, data, model, kind
) -> None:
    """Only the generic experiment splits batches across ranks; a task's own loop would run
    whole in every process, each writing the same run folder. Refused before torchrun starts."""
    (tmp_path / "task.yaml").write_text(
        f"name: task_run\nmodel: {{name: {model}}}\ndata: {{name: {data}}}\n"
    )
    result = layerwise("train", "task.yaml", "--nproc", "2", cwd=tmp_path)
    _assert_refused(result, "task_run", kind)
    assert [p.name for p in tmp_path.iterdir()] == ["task.yaml"]  # nothing written


@pytest.mark.parametrize(
    ("bundled", "kind"),
    [
        ("detect_mnist_scenes", "detection"),
        ("recsys_synthetic_mf", "recommender"),
        ("recsys_synthetic_ncf", "recommender"),
        ("faces_orl_triplet", "embedding (faces, speakers)"),
        ("speakers_fsdd_triplet", "embedding (faces, speakers)"),
    ],
)
def test_nproc_refuses_the_bundled_detection_recommender_and_face_recipes(
    tmp_path: Path, no_torchrun, bundled, kind
) -> None:
    result = layerwise("train", bundled, "--nproc", "2", cwd=tmp_path)
    _assert_refused(result, bundled, kind)
    assert not any(tmp_path.iterdir())  # no run folder, no data cache


def test_under_torchrun_a_task_recipe_is_refused_before_its_run_folder(
    tmp_path: Path, monkeypatch
) -> None:
    """Started by torchrun directly (no --nproc), every rank refuses before writing."""
    for var, value in (("RANK", "1"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "1")):
        monkeypatch.setenv(var, value)
    result = layerwise("train", "detect_mnist_scenes", "--quiet", cwd=tmp_path)
    _assert_refused(result, "detect_mnist_scenes", "detection")
    assert not any(tmp_path.iterdir())


def test_every_kind_that_cannot_train_distributed_has_a_refusal_case() -> None:
    """A task kind states `distributed`; each one that says no is checked above."""
    assert all(isinstance(kind.distributed, bool) for kind in dispatch.TASKS)
    for kind in dispatch.TASKS:
        if not kind.distributed:
            assert any(case[2] in kind.name for case in REFUSED_UNDER_NPROC), kind.name


def test_a_kind_that_states_it_trains_distributed_is_let_through(monkeypatch) -> None:
    """The refusal is the kind's own `distributed` flag, not a list of names."""
    recipe = _recipe("synthetic_ratings", "matrix_factorization", name="ratings")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RecipeError, match="recommender"):
        experiment.check_distributed(recipe)
    monkeypatch.setattr(
        dispatch,
        "TASKS",
        tuple(
            dataclasses.replace(kind, distributed=kind.name == "recommender")
            for kind in dispatch.TASKS
        ),
    )
    experiment.check_distributed(recipe)  # no error: the recommender kind now says it can
    with pytest.raises(RecipeError, match="detection"):
        experiment.check_distributed(_recipe("mnist_scenes", "scene_fcos"))


def test_library_train_and_resume_hand_task_recipes_to_the_task(
    tmp_path: Path, monkeypatch
) -> None:
    """`layerwise.experiment.train`/`resume` from Python make the CLI's lookup: a recommender
    recipe goes to its task (before, only GAN and RL did; the rest fell to the classifier)."""
    from layerwise import experiment

    calls = []

    def fake_train(recipe, runs_root, **options):
        calls.append((recipe, options))
        run = Run.open(options["resume"]) if options.get("resume") else None
        run = run or Run.create(runs_root, recipe.name, recipe.to_yaml())
        run.set_status("finished", test_metrics={"rmse": 0.9})
        return run, {"rmse": 0.9}

    monkeypatch.setattr(
        experiment, "task_trainer", lambda r: fake_train if dispatch.task_kind(r) else None
    )
    recipe = _recipe("synthetic_ratings", "matrix_factorization", name="mf")
    run, metrics = experiment.train(recipe, tmp_path, progress=False, echo=None)
    assert metrics == {"rmse": 0.9} and calls[0] == (
        recipe,
        {"progress": False, "echo": None, "callbacks": ()},
    )
    experiment.resume(run.name, tmp_path, progress=False, echo=None)
    assert calls[1] == (
        None,
        {"resume": run.path, "progress": False, "echo": None, "callbacks": ()},
    )
