"""Text datasets: raw texts and labels -> a `TextBundle` of padded token ids.

A `TextBundle` is a `DatasetBundle` whose inputs are right-padded token ids (`LongTensor[N, T]`,
0 = padding) and which carries the fitted `TextPipeline`, so a run saves it and predicts on raw
text. The pipeline is fitted on the training texts only (validation and test words it never saw
become `<unk>`, as they would for new text). Registered datasets: `imdb` (the staged aclImdb
reviews) and `text` (a text column and a label column of the user's own CSV/TSV/JSONL file).
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from layerwise.data.batcher import InMemoryBatcher, epoch_generator
from layerwise.data.bundle import DatasetBundle, Split
from layerwise.data.files import resolve_path
from layerwise.data.registry import DATASETS, data_root
from layerwise.data.split import split
from layerwise.errors import DataError, did_you_mean
from layerwise.text import TextPipeline, bucket_order, lengths_of
from layerwise.text.figures import stream_figures


@dataclass(repr=False)
class TextBundle(DatasetBundle):
    """A `DatasetBundle` of padded token ids plus the `pipeline` that made them from text, and
    the `token_figures` the doctor reads (`layerwise.text.figures.stream_figures`, under
    `"text"`), measured as the splits were encoded."""

    pipeline: TextPipeline | None = None
    token_figures: dict[str, Any] | None = None

    @property
    def model_args(self) -> dict[str, Any]:
        """What a text model needs from the data: `vocab_size` and `max_length` (the longest
        sequence it will see, for position tables)."""
        return {"vocab_size": self.pipeline.vocab_size, "max_length": int(self.input_shape[0])}

    @classmethod
    def from_pipeline(cls, pipeline: TextPipeline) -> TextBundle:
        """A bundle holding only what building a run's model needs (the pipeline, class names,
        input width) and two placeholder rows, so `layerwise predict` on raw text neither reads
        nor tokenises the training data again."""
        class_names = list(pipeline.meta.get("class_names") or [])
        if not class_names or not pipeline.max_length:
            raise DataError(
                "the saved text pipeline lacks the class names or max_length of its run",
                hint="train the run again with this version of layerwise",
            )
        width = int(pipeline.max_length)
        rows = (torch.zeros(2, width, dtype=torch.long), torch.tensor([0, len(class_names) - 1]))
        return cls(
            name=str(pipeline.meta.get("dataset", "text")),
            train=rows,
            val=rows,
            test=None,
            num_classes=len(class_names),
            input_shape=(width,),
            class_names=class_names,
            pipeline=pipeline,
        )

    def batcher(
        self,
        split_name: str,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> InMemoryBatcher:
        """A batcher of one split whose batches group texts of similar length (see
        `BucketBatcher`), so models that trim padding run on short batches."""
        x, y = getattr(self, split_name)
        return BucketBatcher(x, y, batch_size=batch_size, shuffle=shuffle, seed=seed, device=device)


class BucketBatcher(InMemoryBatcher):
    """An `InMemoryBatcher` of padded token ids whose shuffled batches hold similar lengths.

    The order is still a pure function of `(seed, epoch)` (`text.bucket_order`), so a resumed run
    replays it; without shuffling it keeps the rows' order, like its parent.
    """

    def __init__(self, x: Tensor, y: Tensor | None = None, **options: Any) -> None:
        super().__init__(x, y, **options)
        self.lengths = lengths_of(x).cpu()

    def order(self) -> Tensor | None:
        if not self.shuffle:
            return None
        generator = epoch_generator(self.seed, self.epoch)
        return bucket_order(self.lengths, self.batch_size, generator)


def text_bundle(
    name: str,
    train: tuple[list[str], Tensor],
    test: tuple[list[str], Tensor] | None,
    class_names: list[str],
    *,
    tokenizer: str = "word",
    min_freq: int = 1,
    max_size: int | None = None,
    max_length: int | None = 256,
    tokenizer_options: dict[str, Any] | None = None,
    test_fraction: float = 0.2,
    val_fraction: float = 0.0,
    seed: int = 0,
) -> TextBundle:
    """Split texts (test first if none is given, then validation), fit a pipeline on the
    training texts, and encode every split with it."""
    texts, labels = train
    if test is None:
        texts, labels, test = _carve(texts, labels, test_fraction, seed)
    val = None
    if val_fraction:
        texts, labels, val = _carve(texts, labels, val_fraction, seed)
    pipeline = TextPipeline(
        tokenizer,
        min_freq=min_freq,
        max_size=max_size,
        max_length=max_length,
        tokenizer_options=tokenizer_options,
        meta={"class_names": list(class_names), "dataset": name},
    )
    encoded, train_figures = pipeline.fit_encode(texts, figures=True)
    x_train = encoded["tokens"]
    if pipeline.max_length is None:  # new text is cut to the longest training text
        pipeline.max_length = int(x_train.shape[1])
    width = pipeline.max_length
    figures: dict[str, Any] = {"train": train_figures}

    def encode(split_name: str, part: tuple[list[str], Tensor] | None) -> Split:
        if part is None:
            return None
        encoded, figures[split_name] = pipeline.encode(part[0], figures=True)
        return _widen(encoded["tokens"], width), part[1]

    val_split, test_split = encode("val", val), encode("test", test)
    return TextBundle(
        name=name,
        train=(_widen(x_train, width), labels),
        val=val_split,
        test=test_split,
        num_classes=len(class_names),
        input_shape=(width,),
        class_names=list(class_names),
        pipeline=pipeline,
        token_figures={"text": stream_figures(pipeline, figures)},
    )


@DATASETS.register("imdb")
def imdb(
    tokenizer: str = "word",
    min_freq: int = 2,
    max_size: int | None = None,
    max_length: int | None = 400,
    tokenizer_options: dict[str, Any] | None = None,
    val_fraction: float = 0.0,
    subset: int | None = None,
    seed: int = 0,
) -> TextBundle:
    """The IMDB movie reviews (Maas et al. 2011): 25,000 train and the official 25,000 test,
    labels 0 = neg, 1 = pos, read from `<data root>/imdb/imdb_{train,test}.jsonl.gz`.

    `subset` keeps that many reviews of each split (drawn by `seed`, both classes), for quick
    tests. Reviews longer than `max_length` tokens keep their first `max_length`.
    """
    folder = data_root() / "imdb"
    train = _read_jsonl(folder / "imdb_train.jsonl.gz", "text", "label", subset, seed)
    test = _read_jsonl(folder / "imdb_test.jsonl.gz", "text", "label", subset, seed + 1)
    return text_bundle(
        "imdb",
        (train[0], torch.tensor(train[1], dtype=torch.long)),
        (test[0], torch.tensor(test[1], dtype=torch.long)),
        ["neg", "pos"],
        tokenizer=tokenizer,
        min_freq=min_freq,
        max_size=max_size,
        max_length=max_length,
        tokenizer_options=tokenizer_options,
        val_fraction=val_fraction,
        seed=seed,
    )


@DATASETS.register("text")
def text_file(
    path: str | Path,
    text: str = "text",
    target: str = "label",
    tokenizer: str = "word",
    min_freq: int = 1,
    max_size: int | None = None,
    max_length: int | None = 256,
    tokenizer_options: dict[str, Any] | None = None,
    test_fraction: float = 0.2,
    val_fraction: float = 0.0,
    seed: int = 0,
    sep: str | None = None,
) -> TextBundle:
    """A `text` column and a `target` column of the user's own table.

    `.csv` (or `.tsv`, or any `sep`), `.jsonl`/`.ndjson` (one JSON object per line), each
    optionally `.gz`. Labels are class names (sorted) or integers 0..C-1.
    """
    file = resolve_path(path)
    frame = _read_table(file, sep)
    columns = [str(c) for c in frame.columns]
    for column in (text, target):
        if column not in columns:
            raise DataError(f"{file} has no column '{column}'", hint=did_you_mean(column, columns))
    frame = frame.rename(columns=str)
    missing = frame[text].isna() | frame[target].isna()
    if missing.any():
        raise DataError(
            f"{file} has {int(missing.sum())} rows without a text or a label "
            f"(first in row {int(missing.to_numpy().argmax())})",
            hint="drop or fill those rows",
        )
    labels = frame[target]
    if pd.api.types.is_integer_dtype(labels) and not pd.api.types.is_bool_dtype(labels):
        codes = labels.to_numpy()
        if codes.min() < 0:
            raise DataError(f"labels of {file} include negative classes", hint="use 0, 1, 2, ...")
        class_names = [str(c) for c in range(int(codes.max()) + 1)]
    else:
        codes, uniques = pd.factorize(labels.astype(str), sort=True)
        class_names = [str(u) for u in uniques]
    texts = frame[text].astype(str).tolist()
    return text_bundle(
        file.name,
        (texts, torch.as_tensor(codes, dtype=torch.long)),
        None,
        class_names,
        tokenizer=tokenizer,
        min_freq=min_freq,
        max_size=max_size,
        max_length=max_length,
        tokenizer_options=tokenizer_options,
        test_fraction=test_fraction,
        val_fraction=val_fraction,
        seed=seed,
    )


def _read_jsonl(
    file: Path, text: str, target: str, subset: int | None, seed: int
) -> tuple[list[str], list[int]]:
    if not file.is_file():
        raise DataError(
            f"IMDB file not found: {file}",
            hint=f"put imdb_train.jsonl.gz and imdb_test.jsonl.gz (one {{'text', 'label'}} "
            f"object per line) in {file.parent}, or set LAYERWISE_DATA",
        )
    with gzip.open(file, "rt", encoding="utf-8") as lines:
        rows = [json.loads(line) for line in lines]
    if subset is not None:
        keep = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))[:subset]
        rows = [rows[i] for i in sorted(keep.tolist())]
    return [r[text] for r in rows], [int(r[target]) for r in rows]


def _read_table(file: Path, sep: str | None) -> pd.DataFrame:
    name = file.name.lower().removesuffix(".gz")
    try:
        if name.endswith((".jsonl", ".ndjson", ".json")):
            return pd.read_json(file, lines=True)
        return pd.read_csv(file, sep=sep or ("\t" if name.endswith(".tsv") else ","))
    except (OSError, ValueError) as exc:
        raise DataError(
            f"cannot read {file}: {exc}",
            hint="give a CSV/TSV with a header line or a JSONL file (one object per line)",
        ) from exc


def _carve(
    texts: list[str], labels: Tensor, fraction: float, seed: int
) -> tuple[list[str], Tensor, tuple[list[str], Tensor]]:
    """Split texts by a stratified split of their row numbers."""
    (keep, y_keep), (held, y_held) = split(torch.arange(len(texts)), labels, fraction, seed=seed)
    return (
        [texts[i] for i in keep.tolist()],
        y_keep,
        ([texts[i] for i in held.tolist()], y_held),
    )


def _widen(tokens: Tensor, width: int) -> Tensor:
    """Pad (with 0) or cut to exactly `width` columns, so every split has one shape."""
    if tokens.shape[1] >= width:
        return tokens[:, :width].contiguous()
    return torch.nn.functional.pad(tokens, (0, width - tokens.shape[1]))
