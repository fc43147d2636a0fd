"""Recipe → run pipeline checks that happen before or around training."""

from __future__ import annotations

import pytest

from layerwise import experiment
from layerwise.errors import CheckpointError, RecipeError
from layerwise.recipe import parse_recipe
from layerwise.train import Callback

pytestmark = pytest.mark.slow  # trains recipes into run folders: make test, not make test-fast

TINY = """
name: tiny
data: {name: digits, args: {subset: 200}, batch_size: 32, val_fraction: 0.2}
model: {name: mlp, args: {hidden: [16]}}
train: {epochs: 1}
"""


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("train.monitor=val_acuracy", "train.monitor"),
        ("train.early_stopping.monitor=val_los", "train.early_stopping.monitor"),
    ],
)
def test_misspelt_monitor_is_refused_before_a_run_exists(tmp_path, override, field):
    recipe = parse_recipe(TINY, overrides=[override])
    with pytest.raises(RecipeError, match=field) as info:
        experiment.train(recipe, tmp_path / "runs", progress=False)
    assert "did you mean" in info.value.hint
    assert not (tmp_path / "runs" / "tiny").exists()


def test_resume_refuses_when_every_checkpoint_lost_its_state(tmp_path):
    recipe = parse_recipe(TINY, overrides=["train.epochs=2"])
    run, _ = experiment.train(recipe, tmp_path / "runs", progress=False)
    for state in run.checkpoints_dir.glob("last-*/state.pt"):
        state.unlink()
    run.set_status("running")  # as a run killed mid-training would be
    metrics_before = run.metrics_path.read_bytes()
    with pytest.raises(CheckpointError, match="every 'last' checkpoint") as info:
        experiment.resume("tiny", tmp_path / "runs", progress=False)
    assert "state.pt" in info.value.message
    assert run.metrics_path.read_bytes() == metrics_before
    assert len(list(run.checkpoints_dir.glob("last-*/weights.safetensors"))) == 2


def test_resume_falls_back_to_the_previous_checkpoint_and_says_so(tmp_path):
    recipe = parse_recipe(TINY, overrides=["train.epochs=2"])
    run, _ = experiment.train(recipe, tmp_path / "runs", progress=False)
    newest, older = run.checkpoints.entries("last")
    (newest / "weights.safetensors").write_bytes(b"")
    run.set_status("running")
    said: list[str] = []
    resumed, _ = experiment.resume("tiny", tmp_path / "runs", progress=False, echo=said.append)
    warning = next(line for line in said if line.startswith("warning:"))
    assert newest.name in warning and older.name in warning
    assert (newest.parent / f"damaged-{newest.name}").is_dir()  # kept aside, not deleted
    assert resumed.info()["status"] == "finished"


def test_resuming_a_finished_run_changes_nothing(tmp_path):
    run, test_metrics = experiment.train(parse_recipe(TINY), tmp_path / "runs", progress=False)
    before = run.metrics_path.read_bytes()
    _, again = experiment.resume("tiny", tmp_path / "runs", progress=False)
    assert again == test_metrics
    assert run.metrics_path.read_bytes() == before


def test_the_diagnosis_in_memory_is_the_one_the_run_folder_gives(tmp_path):
    from layerwise.diagnose.doctor import diagnose_run

    recipe = parse_recipe(TINY, overrides=["train.epochs=3", "doctor.probe_every=1"])
    run, _ = experiment.train(recipe, tmp_path / "runs", progress=False, echo=None)
    written = run.read_diagnosis()
    assert written == diagnose_run(run, save=False).to_dict()
    assert written["data_profile"] is not None  # the data checks reached the final diagnosis


class CountTestRows(Callback):
    """After training, counts the rows the evaluation and prediction steps see."""

    def __init__(self) -> None:
        self.rows = {"eval_step": 0, "predict_step": 0}

    def on_fit_end(self, trainer):
        for name in self.rows:
            setattr(trainer, name, self._counting(trainer, name, getattr(trainer, name)))

    def _counting(self, trainer, name, step):
        def counting(batch):
            self.rows[name] += trainer.batch_size(batch)
            return step(batch)

        return counting


def test_finishing_a_run_reads_the_test_split_once_and_plots_from_it(tmp_path):
    data = experiment.build_data(parse_recipe(TINY))
    counter = CountTestRows()
    run, test = experiment.train(
        parse_recipe(TINY), tmp_path / "runs", progress=False, echo=None, callbacks=[counter]
    )
    assert counter.rows["eval_step"] == len(data.test[0])  # metrics and confusion matrix
    assert counter.rows["predict_step"] <= 32  # only the images of the sample grid
    assert (run.plots_dir / "confusion_matrix.png").stat().st_size > 0
    assert 0 <= test["accuracy"] <= 1
