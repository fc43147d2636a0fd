"""Translation end to end on a Multi30k slice: data, a short run, BLEU, the CLI verbs."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from layerwise.errors import DataError
from layerwise.tasks.translation import bleu, detokenize

RECIPE = """
name: mt_tiny
data:
  name: multi30k
  args: {subset: 300, vocab_size: 400}
  batch_size: 32
model:
  name: seq2seq_gru
  args: {embed: 32, hidden: 32, dropout: 0.0}
train:
  epochs: 2
  optimizer: {name: adam, lr: 0.003}
doctor: {probes: false}
"""

LM_RECIPE = """
name: lm_tiny
data:
  name: tinyshakespeare
  args: {block_size: 32, subset: 20000}
  batch_size: 32
model:
  name: lstm_lm
  args: {embed: 16, hidden: 32, layers: 1}
train:
  epochs: 1
doctor: {probes: false}
"""


def test_detokenize_and_bleu() -> None:
    assert detokenize("Ein T - Shirt ( rot ) , hier .") == "Ein T-Shirt (rot), hier."
    assert bleu(["Ein Hund läuft."], ["Ein Hund läuft."]) == pytest.approx(100.0)
    assert bleu(["Katze"], ["Ein Hund läuft über die Wiese."]) < 1.0


def test_multi30k_pairs_are_encoded_with_bos_and_eos(shared_data) -> None:
    from layerwise.data import load_dataset

    data = load_dataset("multi30k", subset=200, vocab_size=300)
    src, tgt = data.train
    assert len(src) == len(tgt) == 200 and len(data.test[0]) == 200
    vocab = data.tgt_pipeline.vocab
    assert torch.all(tgt[:, 0] == vocab.bos_id)
    lengths = (tgt != 0).sum(1)
    assert torch.all(tgt[torch.arange(200), lengths - 1] == vocab.eos_id)
    batch = data.batches("val")
    assert torch.equal(batch["src_lengths"], (batch["src"] != 0).sum(1))
    assert data.references["test"][1][0].startswith("Ein Mann mit einem")


@pytest.mark.slow
def test_translate_and_generate_from_trained_runs(shared_data, tmp_path) -> None:
    from layerwise.cli import app

    runner = CliRunner()
    for name, text in (("mt.yaml", RECIPE), ("lm.yaml", LM_RECIPE)):
        (tmp_path / name).write_text(text)
        result = runner.invoke(
            app, ["train", str(tmp_path / name), "--runs-dir", str(tmp_path), "--quiet"]
        )
        assert result.exit_code == 0, result.output
    run = tmp_path / "mt_tiny"
    assert (run / "plots" / "attention.png").stat().st_size > 1000
    assert (run / "src_pipeline.json").is_file() and (run / "tgt_pipeline.json").is_file()
    result = runner.invoke(
        app, ["translate", "mt_tiny", "A man rides a bike.", "--runs-dir", str(tmp_path)]
    )
    assert result.exit_code == 0 and result.output.strip(), result.output
    args = ["generate", "lm_tiny", "--prompt", "ROMEO:", "--tokens", "40", "--seed", "1"]
    first = runner.invoke(app, [*args, "--runs-dir", str(tmp_path)])
    again = runner.invoke(app, [*args, "--runs-dir", str(tmp_path)])
    assert first.exit_code == 0 and first.output == again.output
    assert first.output.startswith("ROMEO:") and len(first.output.strip()) > 30
    unseen = runner.invoke(
        app, ["generate", "lm_tiny", "--prompt", "ROMEO: \u2603", "--runs-dir", str(tmp_path)]
    )
    assert isinstance(unseen.exception, DataError) and "never seen" in str(unseen.exception)
