"""A text recipe end to end: train on a CSV text column, then predict on raw text."""

from __future__ import annotations

import json
import random

import pytest
from typer.testing import CliRunner

from layerwise.cli import app
from layerwise.data.text import TextBundle
from layerwise.errors import DataError
from layerwise.experiment import load_experiment
from layerwise.runs import Run
from layerwise.text import PIPELINE_FILE, TextPipeline

POSITIVE = ["great", "wonderful", "superb", "loved", "brilliant"]
NEGATIVE = ["awful", "terrible", "boring", "hated", "dull"]
FILLER = ["the", "movie", "was", "plot", "actors", "and", "a", "film", "story"]

RECIPE = """
name: tiny_text
seed: 0
data:
  name: text
  args: {{path: {path}, text: review, target: sentiment, max_length: 12}}
  batch_size: 16
model:
  name: fasttext
  args: {{dim: 8, buckets: 256}}
train:
  epochs: 12
  optimizer: {{name: adam, lr: 0.05}}
  monitor: accuracy
doctor:
  label_noise: false
"""

runner = CliRunner()


def _reviews(n: int, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = ["neg", "pos"][i % 2]
        words = rng.sample(FILLER, 5) + rng.sample(POSITIVE if label == "pos" else NEGATIVE, 2)
        rng.shuffle(words)
        rows.append({"review": " ".join(words).capitalize() + ".", "sentiment": label})
    return rows


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("text_run")
    (root / "reviews.jsonl").write_text("\n".join(json.dumps(r) for r in _reviews(200)))
    (root / "tiny.yaml").write_text(RECIPE.format(path=root / "reviews.jsonl"))
    args = ["train", str(root / "tiny.yaml"), "--runs-dir", str(root / "runs"), "--quiet"]
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return root / "runs" / "tiny_text", result.output


@pytest.mark.slow
def test_a_text_run_saves_its_pipeline_and_predicts_raw_text_from_the_cli(text_run):
    run, _ = text_run
    assert (run / PIPELINE_FILE).is_file()
    assert float(json.loads((run / "run.json").read_text())["test_metrics"]["accuracy"]) > 0.9
    result = runner.invoke(
        app,
        ["predict", str(run), "A wonderful, brilliant film!", "Awful and boring.", "zzz qqq"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("A wonderful, brilliant film!: pos")
    assert lines[1].startswith("Awful and boring.: neg")
    assert "none of its words is in the vocabulary" in lines[2]


@pytest.mark.slow
def test_an_empty_text_is_a_data_error_naming_it(text_run):
    run, _ = text_run
    result = runner.invoke(app, ["predict", str(run), "fine", "  "])
    assert isinstance(result.exception, DataError)  # main() turns it into exit code 2
    assert "texts: item 1 is empty" in str(result.exception)


@pytest.mark.slow
def test_the_saved_pipeline_predicts_raw_text_in_python_without_the_dataset(text_run):
    run, _ = text_run
    pipeline = TextPipeline.load(run)
    experiment = load_experiment(Run.open(run), data=TextBundle.from_pipeline(pipeline))
    logits = pipeline.predict(experiment.trainer, ["superb and great", "hated it, dull"])
    assert logits.argmax(dim=1).tolist() == [1, 0]
    assert experiment.data.class_names == ["neg", "pos"]
