"""A vocabulary: token strings <-> integer ids, with special tokens first.

Ids 0-3 are `<pad>`, `<unk>`, `<bos>`, `<eos>` (in that order, so padding is always id 0, which
models use as `padding_idx`); then the kept tokens, most frequent first (ties alphabetically, so
the same texts always give the same ids).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import chain
from typing import Any

import numpy as np

from layerwise.errors import DataError, RecipeError

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIALS = (PAD, UNK, BOS, EOS)


class Vocab:
    """Maps tokens to ids; unknown tokens map to the id of `<unk>`.

    Build one with `Vocab.build(token_lists, min_freq=2, max_size=30000)`; save it with
    `to_dict()` (plain JSON) and rebuild it with `Vocab.from_dict`.
    """

    def __init__(self, tokens: Sequence[str], specials: Sequence[str] = SPECIALS) -> None:
        if list(specials[:2]) != [PAD, UNK]:
            raise RecipeError(
                f"a vocabulary starts with {PAD} and {UNK}, got specials {list(specials)}",
                hint="padding is id 0 and unknown id 1 in every layerwise vocabulary",
            )
        self.specials = list(specials)
        self.itos: list[str] = [*self.specials, *(t for t in tokens if t not in self.specials)]
        self.stoi: dict[str, int] = _UnknownIsOne((token, i) for i, token in enumerate(self.itos))
        self.pad_id, self.unk_id = 0, 1
        self.bos_id = self.stoi.get(BOS)
        self.eos_id = self.stoi.get(EOS)

    @classmethod
    def build(
        cls,
        token_lists: Iterable[Sequence[str]],
        min_freq: int = 1,
        max_size: int | None = None,
        specials: Sequence[str] = SPECIALS,
    ) -> Vocab:
        """Keep tokens seen at least `min_freq` times, at most `max_size` ids in all."""
        if min_freq < 1:
            raise RecipeError(f"min_freq must be at least 1, got {min_freq}", hint="e.g. 2")
        counts = Counter(chain.from_iterable(token_lists))
        if not counts:
            raise DataError("cannot build a vocabulary from no tokens", hint="give non-empty texts")
        kept = sorted(
            (t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t)
        )
        if max_size is not None:
            if max_size <= len(specials):
                raise RecipeError(
                    f"max_size {max_size} leaves no room beside the {len(specials)} special tokens",
                    hint=f"use a max_size above {len(specials)}",
                )
            kept = kept[: max_size - len(specials)]
        return cls(kept, specials)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return dict.__contains__(self.stoi, token)

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """Ids of `tokens`, unknown ones as `<unk>`."""
        get, unk = self.stoi.get, self.unk_id
        return [get(token, unk) for token in tokens]

    def encode_flat(self, tokens: Sequence[str]) -> np.ndarray:
        """Ids of one flat list of tokens as an int64 array (the fast path for whole corpora)."""
        return np.fromiter(map(self.stoi.__getitem__, tokens), dtype=np.int64, count=len(tokens))

    def decode(self, ids: Iterable[int], skip_specials: bool = True) -> list[str]:
        """Tokens of `ids`; padding, `<bos>` and `<eos>` are left out unless asked (`<unk>` stays,
        so a reader sees where a word was unknown)."""
        hidden = {i for i, t in enumerate(self.specials) if t != UNK} if skip_specials else set()
        return [self.itos[i] for i in ids if i not in hidden]

    def to_dict(self) -> dict[str, Any]:
        return {"specials": self.specials, "tokens": self.itos[len(self.specials) :]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Vocab:
        return cls(data["tokens"], data["specials"])

    def __repr__(self) -> str:
        return f"Vocab(size={len(self)}, specials={self.specials})"


class _UnknownIsOne(dict):
    """A token -> id dict where a missing token is `<unk>` (id 1), looked up at C speed."""

    def __missing__(self, token: str) -> int:
        return 1
