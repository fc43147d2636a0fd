"""Raw text -> padded token ids: a tokeniser and a vocabulary, fitted once, saved with a run.

Example:
    >>> pipeline = TextPipeline("word", min_freq=2, max_length=400).fit(train_texts)
    >>> batch = pipeline.encode(["A raw sentence."])   # {"tokens": [1, T], "lengths": [1]}
    >>> pipeline.save(run_folder)                      # text_pipeline.json, plain JSON
    >>> TextPipeline.load(run_folder).encode(["Another one."])
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from layerwise.errors import CheckpointError, DataError
from layerwise.text.batch import pad_flat
from layerwise.text.figures import token_figures
from layerwise.text.tokenize import Tokenizer, make_tokenizer, tokenizer_from_config
from layerwise.text.vocab import SPECIALS, Vocab

PIPELINE_FILE = "text_pipeline.json"
FORMAT_VERSION = 1


class TextPipeline:
    """Tokenise, map to ids, cut to `max_length`, pad.

    Args:
        tokenizer: `word`, `char` or `subword`, or a tokeniser object.
        min_freq: tokens seen fewer times in the training texts become `<unk>`.
        max_size: at most this many ids, special tokens included (most frequent tokens kept).
        max_length: sequences keep their first `max_length` tokens (None: no limit).
        tokenizer_options: passed to the tokeniser (`lowercase`, `vocab_size` for subword).
        meta: facts saved along (e.g. `class_names`), so a run can answer with label names
            without reading its dataset again.

    `vocab` is set by `fit` (or `load`).
    """

    def __init__(
        self,
        tokenizer: str | Tokenizer = "word",
        min_freq: int = 1,
        max_size: int | None = None,
        max_length: int | None = None,
        tokenizer_options: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        if isinstance(tokenizer, str):
            tokenizer = make_tokenizer(tokenizer, **(tokenizer_options or {}))
        self.tokenizer = tokenizer
        self.min_freq = min_freq
        self.max_size = max_size
        self.max_length = max_length
        self.meta = dict(meta or {})
        self.vocab: Vocab | None = None

    # ------------------------------------------------------------------ learning
    def fit(self, texts: Sequence[str]) -> TextPipeline:
        """Learn the tokeniser (subword) and the vocabulary from training texts."""
        self.fit_encode(texts)
        return self

    def fit_encode(self, texts: Sequence[str], *, figures: bool = False) -> Any:
        """`fit` then `encode` the same texts, tokenising them once (`figures` as in `encode`)."""
        texts = check_texts(texts, "training texts")
        self.tokenizer.fit(texts)
        tokens = self.tokenizer.tokenize(texts)
        self.vocab = Vocab.build(tokens, self.min_freq, self.max_size, SPECIALS)
        return self._pad(tokens, self.max_length, figures)

    # ------------------------------------------------------------------ using
    def encode(
        self, texts: Sequence[str], max_length: int | None = None, *, figures: bool = False
    ) -> Any:
        """`{"tokens": LongTensor[B, T], "lengths": LongTensor[B]}` for raw texts; with
        `figures=True`, that and the texts' `token_figures` (unknown-token rate, vocabulary
        coverage, lengths and what the cut to `max_length` drops, measured before the cut)."""
        tokens = self.tokenizer.tokenize(check_texts(texts))
        return self._pad(tokens, max_length or self.max_length, figures)

    def encode_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, not cut nor padded."""
        vocab = self._fitted()
        return [vocab.encode(t) for t in self.tokenizer.tokenize(check_texts(texts))]

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        """The text of `ids` (padding and special tokens left out)."""
        ids = ids.tolist() if isinstance(ids, Tensor) else list(ids)
        return self.tokenizer.join(self._fitted().decode(ids))

    def unknown_share(self, texts: Sequence[str]) -> list[float]:
        """Per text, the share of its tokens the vocabulary does not know (1.0 for none known)."""
        unk = self._fitted().unk_id
        return [
            (sum(i == unk for i in ids) / len(ids)) if ids else 1.0
            for ids in self.encode_ids(texts)
        ]

    def predict(self, trainer: Any, texts: Sequence[str], batch_size: int = 256) -> Tensor:
        """`trainer.predict` on raw texts: `pipeline.predict(trainer, ["a raw sentence"])`.

        Texts are cut to `max_length`, as in training; an empty one is a `DataError` naming it.
        A text none of whose tokens is known still gets an answer (see `unknown_share`).
        """
        return trainer.predict(self.encode(texts), batch_size=batch_size)

    @property
    def vocab_size(self) -> int:
        return len(self._fitted())

    # ------------------------------------------------------------------ saving
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "tokenizer": self.tokenizer.to_config(),
            "min_freq": self.min_freq,
            "max_size": self.max_size,
            "max_length": self.max_length,
            "meta": self.meta,
            "vocab": self._fitted().to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TextPipeline:
        pipeline = cls(
            tokenizer_from_config(data["tokenizer"]),
            min_freq=data["min_freq"],
            max_size=data["max_size"],
            max_length=data["max_length"],
            meta=data.get("meta"),
        )
        pipeline.vocab = Vocab.from_dict(data["vocab"])
        return pipeline

    def save(self, folder: str | Path) -> Path:
        """Write `text_pipeline.json` into `folder` atomically; returns its path."""
        path = Path(folder) / PIPELINE_FILE
        text = json.dumps(self.to_dict(), ensure_ascii=False)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{PIPELINE_FILE}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(text)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, folder: str | Path) -> TextPipeline:
        """Read the pipeline a run saved (`folder` is the run folder or the file itself)."""
        path = Path(folder)
        path = path / PIPELINE_FILE if path.is_dir() else path
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError as exc:
            raise CheckpointError(
                f"{path} is missing",
                hint="the run was not trained on text, or its folder is damaged",
            ) from exc
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CheckpointError(
                f"{path} is not a readable text pipeline: {exc}",
                hint="the file is damaged; train the run again",
            ) from exc

    @staticmethod
    def exists(folder: str | Path) -> bool:
        return (Path(folder) / PIPELINE_FILE).is_file()

    def _pad(self, tokens: list[list[str]], max_length: int | None, figures: bool = False) -> Any:
        lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
        flat = list(chain.from_iterable(tokens))
        ids = self._fitted().encode_flat(flat)
        encoded = pad_flat(ids, lengths, max_length)
        if not figures:
            return encoded
        return encoded, token_figures(ids, lengths, flat, self._fitted(), max_length)

    def _fitted(self) -> Vocab:
        if self.vocab is None:
            raise DataError(
                "the text pipeline has no vocabulary yet", hint="call fit(train_texts) first"
            )
        return self.vocab

    def __repr__(self) -> str:
        size = "unfitted" if self.vocab is None else f"vocab={len(self.vocab)}"
        return (
            f"TextPipeline(tokenizer={self.tokenizer.kind!r}, {size}, "
            f"min_freq={self.min_freq}, max_length={self.max_length})"
        )


def check_texts(texts: Sequence[str] | str, what: str = "texts") -> list[str]:
    """The texts as a list; a `DataError` naming the first that is not text or is empty."""
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if not texts:
        raise DataError(f"no {what} given", hint="give at least one text")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise DataError(
                f"{what}: item {i} is a {type(text).__name__}, not text",
                hint="give strings (raw text)",
            )
        if not text.strip():
            raise DataError(f"{what}: item {i} is empty", hint="give a text with words in it")
    return texts
