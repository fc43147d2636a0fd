"""Tokenisers: text -> list of token strings, each with a JSON config so a run can rebuild it.

Three kinds, chosen by name in a recipe (`tokenizer: word | char | subword`):
- `WordTokenizer`: lower-cased words and punctuation marks by one regular expression (fast,
  and what fastText-style models were published with); HTML line breaks (`<br />`) are dropped.
- `CharTokenizer`: one token per character (character language models, spelling-robust models).
- `SubwordTokenizer`: byte-pair encoding trained by the `tokenizers` package, so rare words
  split into known pieces instead of becoming unknown.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from layerwise.errors import RecipeError, did_you_mean

_BREAKS = re.compile(r"<br\s*/?>", re.IGNORECASE)
_WORDS = re.compile(r"\w+(?:'\w+)?|[^\w\s]")


class Tokenizer(Protocol):
    """What a pipeline needs from a tokeniser."""

    kind: str

    def fit(self, texts: Sequence[str]) -> Tokenizer: ...
    def tokenize(self, texts: Sequence[str]) -> list[list[str]]: ...
    def join(self, tokens: Sequence[str]) -> str: ...
    def to_config(self) -> dict[str, Any]: ...


def clean(text: str, lowercase: bool) -> str:
    """Drop HTML line breaks (IMDB reviews carry them) and lower-case when asked."""
    text = _BREAKS.sub(" ", text)
    return text.lower() if lowercase else text


class WordTokenizer:
    """Words (letters, digits, an inner apostrophe) and single punctuation marks."""

    kind = "word"

    def __init__(self, lowercase: bool = True) -> None:
        self.lowercase = lowercase

    def fit(self, texts: Sequence[str]) -> WordTokenizer:
        return self  # nothing to learn

    def tokenize(self, texts: Sequence[str]) -> list[list[str]]:
        find, lowercase = _WORDS.findall, self.lowercase
        return [find(clean(text, lowercase)) for text in texts]

    def join(self, tokens: Sequence[str]) -> str:
        return " ".join(tokens)

    def to_config(self) -> dict[str, Any]:
        return {"kind": self.kind, "lowercase": self.lowercase}


class CharTokenizer:
    """Every character is a token (HTML line breaks become spaces)."""

    kind = "char"

    def __init__(self, lowercase: bool = False) -> None:
        self.lowercase = lowercase

    def fit(self, texts: Sequence[str]) -> CharTokenizer:
        return self

    def tokenize(self, texts: Sequence[str]) -> list[list[str]]:
        return [list(clean(text, self.lowercase)) for text in texts]

    def join(self, tokens: Sequence[str]) -> str:
        return "".join(tokens)

    def to_config(self) -> dict[str, Any]:
        return {"kind": self.kind, "lowercase": self.lowercase}


class SubwordTokenizer:
    """Byte-pair encoding learnt from the training texts by the `tokenizers` package.

    Args:
        vocab_size: pieces the BPE model learns (the `Vocab` built on top may keep fewer).
        lowercase: lower-case before splitting.
        model: a trained tokenizer as the JSON string `tokenizers` writes (set by `fit`, or when
            loading a saved pipeline).
    """

    kind = "subword"

    def __init__(self, vocab_size: int = 8000, lowercase: bool = True, model: str | None = None):
        self.vocab_size = vocab_size
        self.lowercase = lowercase
        self.model = model
        self._tokenizer: Any = None if model is None else _tokenizers().Tokenizer.from_str(model)

    def fit(self, texts: Sequence[str]) -> SubwordTokenizer:
        tk = _tokenizers()
        tokenizer = tk.Tokenizer(tk.models.BPE(unk_token="<unk>", end_of_word_suffix="</w>"))
        tokenizer.pre_tokenizer = tk.pre_tokenizers.Whitespace()
        trainer = tk.trainers.BpeTrainer(
            vocab_size=self.vocab_size, special_tokens=["<unk>"], end_of_word_suffix="</w>"
        )
        tokenizer.train_from_iterator(self._cleaned(texts), trainer=trainer)
        self._tokenizer, self.model = tokenizer, tokenizer.to_str()
        return self

    def tokenize(self, texts: Sequence[str]) -> list[list[str]]:
        if self._tokenizer is None:
            raise RecipeError(
                "the subword tokenizer is used before it was fitted",
                hint="call fit(texts) (TextPipeline.fit does) or load a saved pipeline",
            )
        encodings = self._tokenizer.encode_batch(self._cleaned(texts))
        return [encoding.tokens for encoding in encodings]

    def join(self, tokens: Sequence[str]) -> str:
        return "".join(tokens).replace("</w>", " ").strip()

    def to_config(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "vocab_size": self.vocab_size,
            "lowercase": self.lowercase,
            "model": None if self.model is None else json.loads(self.model),
        }

    def _cleaned(self, texts: Iterable[str]) -> list[str]:
        return [clean(text, self.lowercase) for text in texts]


TOKENIZERS: dict[str, type] = {
    "word": WordTokenizer,
    "char": CharTokenizer,
    "subword": SubwordTokenizer,
}


def make_tokenizer(kind: str = "word", **options: Any) -> Tokenizer:
    """The tokeniser named `kind` (`word`, `char`, `subword`) with its options."""
    if kind not in TOKENIZERS:
        raise RecipeError(f"unknown tokenizer '{kind}'", hint=did_you_mean(kind, TOKENIZERS))
    return TOKENIZERS[kind](**options)


def tokenizer_from_config(config: dict[str, Any]) -> Tokenizer:
    """Rebuild a tokeniser from `to_config()` output (a saved pipeline)."""
    options = dict(config)
    kind = options.pop("kind")
    if kind == "subword" and options.get("model") is not None:
        options["model"] = json.dumps(options["model"])
    return make_tokenizer(kind, **options)


def _tokenizers() -> Any:
    try:
        import tokenizers
    except ImportError as exc:  # an optional extra
        raise RecipeError(
            "the subword tokenizer needs the `tokenizers` package",
            hint="pip install 'layerwise[text]' (or pip install tokenizers)",
        ) from exc
    return tokenizers
