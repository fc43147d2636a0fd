"""Multi30k (task 1, English -> German): sentence pairs as source and target token ids.

Read from `<data root>/multi30k/{train,val,test_2016_flickr}.{en,de}.gz` (29,000 / 1,014 / 1,000
line-aligned pairs). One `TextPipeline` per language is fitted on the training sentences only;
by default both are byte-pair subwords learnt by the `tokenizers` package, cased (BLEU is scored
on cased German), so rare words split into known pieces instead of becoming `<unk>`.

A split is `(src, tgt)`: `src` is `(N, S)` source ids, `tgt` is `(N, T)` `<bos> ids <eos>`, both
right-padded with 0. `TranslationBundle.batches(split)` gives the dict the translation step
takes, `{"src", "src_lengths", "tgt"}`; `references[split]` holds the raw sentence pairs that
BLEU is scored against.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from layerwise.data.bundle import DatasetBundle
from layerwise.data.registry import DATASETS, data_root
from layerwise.errors import DataError
from layerwise.text import TextPipeline, lengths_of, pad
from layerwise.text.figures import stream_figures

SPLIT_FILES = {"train": "train", "val": "val", "test": "test_2016_flickr"}


@dataclass(repr=False)
class TranslationBundle(DatasetBundle):
    """A `DatasetBundle` of `(source ids, target ids)` pairs and the two pipelines, with the
    doctor's `token_figures` of each side (`"source"`, `"target"`; see `layerwise.text.figures`)."""

    src_pipeline: TextPipeline | None = None
    tgt_pipeline: TextPipeline | None = None
    references: dict[str, tuple[list[str], list[str]]] = field(default_factory=dict)
    token_figures: dict[str, Any] | None = None

    def batches(self, split: str) -> dict[str, Tensor]:
        """The split as the translation step's dict (`src`, `src_lengths`, `tgt`)."""
        src, tgt = getattr(self, split)
        return {"src": src, "src_lengths": lengths_of(src), "tgt": tgt}


def encode_target(pipeline: TextPipeline, texts: list[str], max_length: int | None) -> Tensor:
    """`<bos> ids <eos>`, padded; sentences longer than `max_length` tokens are cut first."""
    vocab = pipeline.vocab
    ids = [row[:max_length] if max_length else row for row in pipeline.encode_ids(texts)]
    return pad([[vocab.bos_id, *row, vocab.eos_id] for row in ids])["tokens"]


def read_lines(path: Path) -> list[str]:
    """The lines of a gzipped text file, without their line ends."""
    if not path.is_file():
        raise DataError(
            f"Multi30k file {path} is missing",
            hint=f"put the gzipped Multi30k task-1 files in {path.parent} "
            "(or set LAYERWISE_DATA to the folder holding multi30k/)",
        )
    with gzip.open(path, "rt", encoding="utf-8") as file:
        return file.read().splitlines()


def read_pairs(split: str, source: str = "en", target: str = "de") -> tuple[list[str], list[str]]:
    """Raw `(source sentences, target sentences)` of one split."""
    folder = data_root() / "multi30k"
    stem = SPLIT_FILES[split]
    src, tgt = (
        read_lines(folder / f"{stem}.{source}.gz"),
        read_lines(folder / f"{stem}.{target}.gz"),
    )
    if len(src) != len(tgt):
        raise DataError(
            f"Multi30k {stem}: {len(src)} {source} lines but {len(tgt)} {target} lines",
            hint="the two files of a split must be line-aligned; restore them",
        )
    return src, tgt


@DATASETS.register("multi30k")
def multi30k(
    tokenizer: str = "subword",
    vocab_size: int = 8000,
    min_freq: int = 1,
    lowercase: bool = False,
    max_length: int | None = 64,
    source: str = "en",
    target: str = "de",
    subset: int | None = None,
) -> TranslationBundle:
    """Multi30k pairs as token ids, pipelines fitted on the training pairs.

    `vocab_size` is the subword vocabulary of each language; `max_length` cuts (rare) longer
    sentences in tokens; `subset` keeps the first N training pairs (and at most N of val/test),
    for quick tests.
    """
    options: dict[str, Any] = {"lowercase": lowercase}
    if tokenizer == "subword":
        options["vocab_size"] = vocab_size
    pipelines = {}
    splits: dict[str, tuple[list[str], list[str]]] = {}
    for split in SPLIT_FILES:
        src, tgt = read_pairs(split, source, target)
        splits[split] = (src[:subset], tgt[:subset]) if subset else (src, tgt)
    for side, texts in (("src", splits["train"][0]), ("tgt", splits["train"][1])):
        pipelines[side] = TextPipeline(
            tokenizer,
            min_freq=min_freq,
            max_length=max_length,
            tokenizer_options=options,
            meta={"dataset": "multi30k", "language": source if side == "src" else target},
        ).fit(texts)
    encoded, figures = {}, {"src": {}, "tgt": {}}
    for split, (src, tgt) in splits.items():
        sources, figures["src"][split] = pipelines["src"].encode(src, max_length, figures=True)
        # The target's figures need its tokens before the cut: one more pass of the tokeniser.
        figures["tgt"][split] = pipelines["tgt"].encode(tgt, max_length, figures=True)[1]
        encoded[split] = (sources["tokens"], encode_target(pipelines["tgt"], tgt, max_length))
    return TranslationBundle(
        name="multi30k",
        train=encoded["train"],
        val=encoded["val"],
        test=encoded["test"],
        num_classes=pipelines["tgt"].vocab_size,
        input_shape=(int(encoded["train"][0].shape[1]),),
        src_pipeline=pipelines["src"],
        tgt_pipeline=pipelines["tgt"],
        references=splits,
        token_figures={
            "source": stream_figures(pipelines["src"], figures["src"]),
            "target": stream_figures(pipelines["tgt"], figures["tgt"]),
        },
    )
