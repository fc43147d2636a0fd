"""Translation: train an encoder-decoder on sentence pairs, score BLEU, translate raw text.

The step is `SequenceTrainer`'s (teacher forcing on `{"src", "src_lengths", "tgt"}` batches).
Batches group pairs of similar target length (`PairBucketBatcher`), so a batch of short
sentences is not padded to the longest one of the corpus. At the end the test split is
translated by beam search (width `TranslationTask.beam`) and scored with sacrebleu against the raw
reference sentences (`test_translations.txt` keeps the output); the attention of the first test
sentence is drawn as `plots/attention.png`.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from layerwise.data import DatasetBundle
from layerwise.data.batcher import InMemoryBatcher, epoch_generator
from layerwise.data.multi30k import encode_target
from layerwise.errors import LayerwiseError
from layerwise.models.seq2seq_search import beam_search, greedy_decode
from layerwise.recipe import Recipe
from layerwise.runs import Run
from layerwise.tasks.sequence import Echo, SequenceTrainer, load_run_weights
from layerwise.text import TextPipeline, bucket_order, lengths_of

SRC_FILE, TGT_FILE = "src_pipeline.json", "tgt_pipeline.json"


@dataclass
class Translator:
    """A trained translation model with its two pipelines: raw text in, raw text out."""

    model: nn.Module
    src: TextPipeline
    tgt: TextPipeline

    @property
    def bos(self) -> int:
        return self.tgt.vocab.bos_id

    @property
    def eos(self) -> int:
        return self.tgt.vocab.eos_id

    def translate_ids(
        self, src: Tensor, src_lengths: Tensor, beam: int = 4, max_len: int = 80
    ) -> tuple[Tensor, Tensor]:
        """Token ids `(N, L)` and attention `(N, L, S)` for encoded source batches.

        Output is capped at twice the longest source plus 10 tokens (and `max_len`), so a model
        that never says `<eos>` cannot make decoding run away.
        """
        self.model.eval()
        max_len = min(max_len, 2 * int(src_lengths.max()) + 10)
        if beam == 1:
            return greedy_decode(
                self.model, src, src_lengths, bos=self.bos, eos=self.eos, max_len=max_len
            )
        return beam_search(
            self.model, src, src_lengths, bos=self.bos, eos=self.eos, beam=beam, max_len=max_len
        )

    def translate(self, sentences: list[str], beam: int = 4, batch_size: int = 128) -> list[str]:
        """Translations of raw sentences (empty ones are refused with a `DataError`)."""
        out: list[str] = []
        for lo in range(0, len(sentences), batch_size):
            encoded = self.src.encode(sentences[lo : lo + batch_size])
            ids, _ = self.translate_ids(encoded["tokens"], encoded["lengths"], beam)
            out += [detokenize(self.tgt.decode(row)) for row in ids]
        return out

    def attention(self, sentence: str, beam: int = 1) -> tuple[list[str], list[str], Tensor]:
        """Source tokens, output tokens and the `(len(out), len(src))` attention of one sentence."""
        encoded = self.src.encode([sentence])
        ids, weights = self.translate_ids(encoded["tokens"], encoded["lengths"], beam)
        src_tokens = self.src.tokenizer.tokenize([sentence])[0][: int(encoded["lengths"][0])]
        out_ids = [int(i) for i in ids[0] if int(i) != 0]
        out_tokens = [self.tgt.vocab.itos[i] for i in out_ids]
        return src_tokens, out_tokens, weights[0, : len(out_ids), : len(src_tokens)]


class PairBucketBatcher(InMemoryBatcher):
    """Shuffled batches of sentence pairs of similar target length (order fixed by seed, epoch)."""

    def __init__(self, data: dict[str, Tensor], **options: Any) -> None:
        super().__init__(data, **options)
        self.lengths = lengths_of(data["tgt"]).cpu()

    def order(self) -> Tensor | None:
        if not self.shuffle:
            return None
        generator = epoch_generator(self.seed, self.epoch)
        return bucket_order(self.lengths, self.batch_size, generator)


class TranslationTask:
    """Hooks of `layerwise.tasks.sequence.train_task` for translation datasets."""

    beam = 4

    def model_args(self, data: DatasetBundle) -> dict[str, Any]:
        return {
            "src_vocab": data.src_pipeline.vocab_size,
            "tgt_vocab": data.tgt_pipeline.vocab_size,
            "pad_index": 0,
        }

    def batcher(
        self, data: DatasetBundle, split: str, batch_size: int, seed: int, device: Any = "cpu"
    ) -> PairBucketBatcher:
        return PairBucketBatcher(
            data.batches(split),
            batch_size=batch_size,
            shuffle=split == "train",
            seed=seed,
            device=device,
        )

    def save_data(self, run: Run, data: DatasetBundle) -> None:
        _save(data.src_pipeline, run.path, SRC_FILE)
        _save(data.tgt_pipeline, run.path, TGT_FILE)

    def restore_data(self, run: Run, data: DatasetBundle) -> DatasetBundle:
        """`data` encoded again by the pipelines saved in `run` (a subword model learnt twice
        from the same text can differ in its tie-breaks, so it is never refitted on resume)."""
        src, tgt = TextPipeline.load(run.path / SRC_FILE), TextPipeline.load(run.path / TGT_FILE)
        encoded = {
            split: (
                src.encode(sources, src.max_length)["tokens"],
                encode_target(tgt, targets, tgt.max_length),
            )
            for split, (sources, targets) in data.references.items()
        }
        return replace(
            data,
            train=encoded["train"],
            val=encoded["val"],
            test=encoded["test"],
            num_classes=tgt.vocab_size,
            input_shape=(int(encoded["train"][0].shape[1]),),
            src_pipeline=src,
            tgt_pipeline=tgt,
        )

    def finish(
        self, run: Run, trainer: SequenceTrainer, data: DatasetBundle, recipe: Recipe, echo: Echo
    ) -> dict[str, float]:
        translator = Translator(trainer.model, data.src_pipeline, data.tgt_pipeline)
        self.translator = translator  # what was scored, for callers that go on using it
        metrics = trainer.evaluate(self.batcher(data, "test", 256, recipe.seed, trainer.device))
        sources, references = data.references["test"]
        hypotheses = translator.translate(sources, beam=self.beam)
        metrics["bleu"] = bleu(hypotheses, references)
        (run.path / "test_translations.txt").write_text("\n".join(hypotheses) + "\n", "utf-8")
        self.examples = list(zip(sources, hypotheses, references, strict=True))[:10]
        plot_attention(translator, sources[0], run.plots_dir / "attention.png")
        if echo is not None:
            echo(f"test BLEU {metrics['bleu']:.2f} (beam {self.beam}, sacrebleu, cased)")
        return metrics

    def report_sections(self, run: Run) -> list[tuple[str, str]]:
        """The first test sentences with their translation and reference, for `report.html`."""
        rows = "".join(
            f"<tr><td>{html.escape(s)}</td><td>{html.escape(h)}</td><td>{html.escape(r)}</td></tr>"
            for s, h, r in getattr(self, "examples", [])
        )
        head = "<tr><th>source</th><th>translation (beam search)</th><th>reference</th></tr>"
        return [("Test translations", f"<table>{head}{rows}</table>")] if rows else []


_SPACE_BEFORE = re.compile(r" ([.,!?;:)\]])")
_SPACE_AFTER = re.compile(r"([(\[]) ")
_SPACED_JOINER = re.compile(r"(\w) ([-'/]) (?=\w)")


def detokenize(text: str) -> str:
    """Undo the spaces the subword pre-tokeniser puts around punctuation ("bike ." -> "bike.",
    "T - Shirt" -> "T-Shirt"), so BLEU compares the text a reader would see."""
    text = _SPACE_BEFORE.sub(r"\1", text)
    text = _SPACE_AFTER.sub(r"\1", text)
    return _SPACED_JOINER.sub(r"\1\2", text)


def _save(pipeline: TextPipeline, folder: Path, name: str) -> None:
    # TextPipeline.save writes `text_pipeline.json`; a translation run has two pipelines.
    path = pipeline.save(folder)
    path.replace(folder / name)


def bleu(hypotheses: list[str], references: list[str]) -> float:
    """Corpus BLEU by sacrebleu (13a tokenisation, cased), the figure papers report."""
    try:
        import sacrebleu
    except ImportError as exc:
        raise LayerwiseError(
            "BLEU needs sacrebleu, which is not installed", hint="pip install 'layerwise[text]'"
        ) from exc
    return float(sacrebleu.corpus_bleu(hypotheses, [references]).score)


def plot_attention(translator: Translator, sentence: str, path: Path) -> Path:
    """Draw the attention of `sentence`'s greedy translation as a heat map PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    src_tokens, out_tokens, weights = translator.attention(sentence)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(0.45 * len(src_tokens) + 2, 0.4 * len(out_tokens) + 1.5))
    ax.imshow(weights.float().numpy(), cmap="viridis", aspect="auto", vmin=0.0)
    ax.set_xticks(range(len(src_tokens)), src_tokens, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(out_tokens)), out_tokens, fontsize=8)
    ax.set_xlabel("source")
    ax.set_ylabel("translation")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def load_translator(run: Run, which: str = "best") -> Translator:
    """The model and pipelines of a translation run, ready to translate."""
    from layerwise.models import create_model

    src = TextPipeline.load(run.path / SRC_FILE)
    tgt = TextPipeline.load(run.path / TGT_FILE)
    recipe = run.recipe()
    args = {"src_vocab": src.vocab_size, "tgt_vocab": tgt.vocab_size, "pad_index": 0}
    model = create_model(recipe.model.name, **{**args, **recipe.model.args})
    load_run_weights(run, model, which)
    model.eval()
    return Translator(model, src, tgt)
