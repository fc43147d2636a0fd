"""Language-model and translation runs: a crashed run resumes bit for bit and gets a report."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from layerwise.errors import CheckpointError
from layerwise.recipe import parse_recipe
from layerwise.runs import Run
from layerwise.tasks import sequence_task
from layerwise.tasks.sequence import train_task
from layerwise.text import TextPipeline, Vocab
from layerwise.train import Callback

LM = """
name: lm_resume
data:
  name: tinyshakespeare
  args: {block_size: 16, subset: 2400}
  batch_size: 16
model:
  name: gpt_lm
  args: {dim: 16, heads: 2, layers: 1, dropout: 0.1}
train:
  epochs: 2
  checkpoint_every_steps: 4
  threads: 1
  optimizer: {name: adamw, lr: 0.003}
  schedule: {name: cosine, args: {warmup_epochs: 0.2, min_lr: 0.0001}}
"""

MT = """
name: mt_resume
data:
  name: multi30k
  args: {subset: 48, vocab_size: 120}
  batch_size: 16
model:
  name: seq2seq_gru
  args: {embed: 16, hidden: 16, dropout: 0.1}
train:
  epochs: 2
  checkpoint_every_steps: 2
  threads: 1
  optimizer: {name: adam, lr: 0.003}
doctor: {probes: false}
"""


class Crash(Callback):
    """A kill mid-epoch: only what is on disk survives."""

    order = 30  # after the checkpoint callback

    def __init__(self, step: int) -> None:
        self.step = step

    def on_batch_end(self, trainer) -> None:
        if trainer.state.step == self.step:
            raise RuntimeError("killed")


def _train_rows(run: Run) -> list[dict]:
    keep = ("epoch", "step", "split", "loss", "val_loss", "token_accuracy")
    return [{k: r[k] for k in keep if k in r} for r in run.read_metrics() if r["split"] != "test"]


@pytest.mark.slow
@pytest.mark.parametrize(("text", "crash_at"), [(LM, 14), (MT, 5)], ids=["lm", "mt"])
def test_a_crashed_run_resumes_bit_for_bit_with_a_report(
    shared_data, tmp_path: Path, text: str, crash_at: int
) -> None:
    recipe = parse_recipe(text)
    task = sequence_task(recipe)
    straight, _ = train_task(recipe, task, tmp_path / "a", progress=False, echo=None)

    with pytest.raises(RuntimeError, match="killed"):
        train_task(recipe, task, tmp_path / "b", progress=False, echo=None,
                   callbacks=[Crash(crash_at)])  # fmt: skip
    crashed = Run.open(recipe.name, root=tmp_path / "b")
    assert crashed.info()["status"] == "failed"
    _, state = crashed.load_checkpoint("last")
    assert state["train_state"]["batch_in_epoch"] > 0  # stopped inside an epoch

    resumed, metrics = train_task(
        None, sequence_task(recipe), tmp_path / "b", resume=recipe.name, progress=False, echo=None
    )
    a, _ = straight.load_checkpoint("last")
    b, _ = resumed.load_checkpoint("last")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _train_rows(resumed) == _train_rows(straight)
    assert metrics == straight.info()["test_metrics"]
    info = resumed.info()
    assert info["status"] == "finished" and info["epochs_done"] == 2
    page = resumed.report_path.read_text(encoding="utf-8")
    assert "curves" in page and ("Sample" in page or "Test translations" in page)


def test_resume_refuses_a_changed_recipe_and_changed_data(shared_data, tmp_path: Path) -> None:
    recipe = parse_recipe(LM, overrides=["train.epochs=1", "data.args.subset=2000"])
    task = sequence_task(recipe)
    with pytest.raises(RuntimeError):
        train_task(recipe, task, tmp_path, progress=False, echo=None, callbacks=[Crash(3)])
    changed = parse_recipe(LM, overrides=["train.epochs=3", "data.args.subset=2000"])
    with pytest.raises(CheckpointError, match="differs"):
        train_task(changed, task, tmp_path, resume=recipe.name, progress=False, echo=None)
    saved = TextPipeline.load(tmp_path / recipe.name)
    saved.vocab = Vocab(saved.vocab.itos[4:][::-1])  # the same tokens, other ids
    saved.save(tmp_path / recipe.name)
    with pytest.raises(CheckpointError, match="vocabulary"):
        train_task(None, task, tmp_path, resume=recipe.name, progress=False, echo=None)
