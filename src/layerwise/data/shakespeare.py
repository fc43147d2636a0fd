"""Tiny Shakespeare for character language models: windows of text -> the next character.

Read from `<data root>/tinyshakespeare/input.txt` (1,115,394 characters). The first 90% of the
text trains and the last 10% validates (the split nanoGPT and char-rnn use), so validation text
is never seen in training. A character `TextPipeline` is fitted on the training part; a split is
`(x, y)`, both `(N, block_size)` ids, `y` being `x` shifted by one character. Training windows
start every `stride` characters (overlapping when `stride < block_size`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from layerwise.data.bundle import DatasetBundle
from layerwise.data.registry import DATASETS, data_root
from layerwise.errors import DataError
from layerwise.text import TextPipeline
from layerwise.text.figures import stream_figures


@dataclass(repr=False)
class LanguageModelBundle(DatasetBundle):
    """A `DatasetBundle` of `(tokens, next tokens)` windows and the pipeline that made them,
    with the doctor's `token_figures` of the text (`"text"`; see `layerwise.text.figures`)."""

    pipeline: TextPipeline | None = None
    token_figures: dict[str, Any] | None = None


def text_windows(ids: Tensor, block_size: int, stride: int) -> tuple[Tensor, Tensor]:
    """`(x, y)` windows of a 1-D id tensor: `x[i] = ids[s:s+block]`, `y[i] = ids[s+1:s+block+1]`."""
    if len(ids) < block_size + 1:
        raise DataError(
            f"a text of {len(ids)} tokens is too short for windows of {block_size}",
            hint="use a smaller block_size or a longer text",
        )
    starts = torch.arange(0, len(ids) - block_size, stride)
    index = starts[:, None] + torch.arange(block_size)[None, :]
    return ids[index], ids[index + 1]


def language_model_bundle(
    name: str,
    text: str,
    *,
    block_size: int = 128,
    stride: int | None = None,
    val_fraction: float = 0.1,
    tokenizer: str = "char",
) -> LanguageModelBundle:
    """Split `text` in time (first part trains), fit the pipeline on the training part and cut
    both parts into windows (validation windows do not overlap)."""
    if not text.strip():
        raise DataError(f"the text of '{name}' is empty", hint="give a text file with words in it")
    cut = int(len(text) * (1 - val_fraction))
    pipeline = TextPipeline(tokenizer, meta={"dataset": name, "block_size": block_size})
    train, train_figures = pipeline.fit_encode([text[:cut]], figures=True)
    val, val_figures = pipeline.encode([text[cut:]], figures=True)
    train_ids, val_ids = train["tokens"][0], val["tokens"][0]
    return LanguageModelBundle(
        name=name,
        train=text_windows(train_ids, block_size, stride or block_size // 2),
        val=text_windows(val_ids, block_size, block_size),
        test=None,
        num_classes=pipeline.vocab_size,
        input_shape=(block_size,),
        pipeline=pipeline,
        token_figures={
            "text": stream_figures(pipeline, {"train": train_figures, "val": val_figures})
        },
    )


@DATASETS.register("tinyshakespeare")
def tinyshakespeare(
    block_size: int = 128, stride: int | None = None, subset: int | None = None
) -> LanguageModelBundle:
    """Tiny Shakespeare as character windows; `subset` keeps the first N characters."""
    path = data_root() / "tinyshakespeare" / "input.txt"
    if not path.is_file():
        raise DataError(
            f"Tiny Shakespeare is missing: {path}",
            hint=f"put input.txt in {path.parent} (or set LAYERWISE_DATA)",
        )
    text = path.read_text(encoding="utf-8")
    return language_model_bundle(
        "tinyshakespeare", text[:subset] if subset else text, block_size=block_size, stride=stride
    )
