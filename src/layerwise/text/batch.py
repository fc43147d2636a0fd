"""Padding, lengths, offsets, n-grams and length buckets: token ids in the shapes models take.

Sequences are padded on the right with id 0 (`<pad>`), so `lengths_of(tokens)` recovers each
row's length and a model can take either `tokens` alone or `tokens` with `lengths`.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain

import numpy as np
import torch
from torch import Tensor

PAD_ID = 0
_NGRAM_PRIME = 116_049_371  # the multiplier fastText hashes word n-grams with


def pad(
    sequences: Sequence[Sequence[int]], max_length: int | None = None, pad_id: int = PAD_ID
) -> dict[str, Tensor]:
    """`{"tokens": LongTensor[B, T], "lengths": LongTensor[B]}`, right-padded with `pad_id`.

    `T` is the longest sequence, cut to `max_length` when given (longer sequences keep their
    first `max_length` ids). An empty batch gives shape (0, 1); an empty sequence length 0.
    """
    lengths = np.fromiter(map(len, sequences), dtype=np.int64, count=len(sequences))
    flat = np.fromiter(chain.from_iterable(sequences), dtype=np.int64, count=int(lengths.sum()))
    return pad_flat(flat, lengths, max_length, pad_id)


def pad_flat(
    ids: np.ndarray, lengths: np.ndarray, max_length: int | None = None, pad_id: int = PAD_ID
) -> dict[str, Tensor]:
    """`pad` for sequences given back to back: `ids` of every sequence, then their `lengths`.

    All in NumPy, so padding a corpus of millions of tokens costs a fraction of a second.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    starts = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    position = np.arange(len(ids)) - np.repeat(starts, lengths)
    row = np.repeat(np.arange(len(lengths)), lengths)
    if max_length:
        keep = position < max_length
        row, position, ids = row[keep], position[keep], ids[keep]
        lengths = np.minimum(lengths, max_length)
    width = max(int(lengths.max(initial=0)), 1)
    tokens = np.full((len(lengths), width), pad_id, dtype=np.int64)
    tokens[row, position] = ids
    return {"tokens": torch.from_numpy(tokens), "lengths": torch.from_numpy(lengths)}


def lengths_of(tokens: Tensor, pad_id: int = PAD_ID) -> Tensor:
    """Lengths of right-padded rows: the count of non-padding ids in each."""
    return (tokens != pad_id).sum(dim=1)


def padding_mask(lengths: Tensor, width: int) -> Tensor:
    """Bool `[B, width]`, True at real tokens and False at padding."""
    return torch.arange(width, device=lengths.device) < lengths[:, None]


def to_offsets(tokens: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """The flat ids and start offsets `nn.EmbeddingBag` takes instead of a padded matrix."""
    flat = tokens[padding_mask(lengths, tokens.shape[1])]
    offsets = torch.zeros_like(lengths)
    offsets[1:] = lengths.cumsum(0)[:-1]
    return flat, offsets


def trim(tokens: Tensor, lengths: Tensor) -> Tensor:
    """Drop the columns that are padding in every row (a batch of short texts runs faster).

    Reads the longest length from the device: free on the CPU, one sync per batch on a GPU.
    """
    longest = max(int(lengths.max()), 1) if len(lengths) else 1
    return tokens[:, :longest]


def hashed_ngrams(
    tokens: Tensor, n: int = 2, buckets: int = 2**20, offset: int = 0, pad_id: int = PAD_ID
) -> Tensor:
    """Ids of the word n-grams of each row, hashed into `buckets` slots after `offset`.

    Row `b` of the result holds, at position `i`, the hash of `tokens[b, i : i + n]` (shifted by
    `offset`, e.g. the vocabulary size, so n-gram ids follow the word ids in one embedding
    table), or `pad_id` where that window reaches into padding. Hashing word ids (not strings)
    is deterministic across processes and runs on the whole batch at once.
    """
    if tokens.shape[1] < n:
        return tokens.new_full((tokens.shape[0], 1), pad_id)
    width = tokens.shape[1] - n + 1
    hashed = tokens[:, :width].clone()
    valid = hashed != pad_id
    for k in range(1, n):
        part = tokens[:, k : k + width]
        hashed = (hashed * _NGRAM_PRIME + part) % buckets
        valid &= part != pad_id
    return torch.where(valid, hashed + offset, torch.full_like(hashed, pad_id))


def bucket_order(
    lengths: Tensor, batch_size: int, generator: torch.Generator, pool: int = 50
) -> Tensor:
    """A permutation of rows whose consecutive `batch_size` blocks have similar lengths.

    Rows are shuffled, cut into pools of `pool` batches, sorted by length inside each pool, cut
    into batches, and the batches shuffled: every epoch differs (from `generator`), yet a batch
    pads little. Taking `perm[k * batch_size : (k + 1) * batch_size]` gives batch `k`.
    """
    n = len(lengths)
    shuffled = torch.randperm(n, generator=generator)
    chunk = batch_size * pool
    parts = []
    for start in range(0, n, chunk):
        rows = shuffled[start : start + chunk]
        parts.append(rows[torch.argsort(lengths[rows], stable=True)])
    ordered = torch.cat(parts) if parts else shuffled
    batches = list(ordered.split(batch_size))
    full = batches if not batches or len(batches[-1]) == batch_size else batches[:-1]
    order = torch.randperm(len(full), generator=generator).tolist()
    tail = batches[len(full) :]  # a short last batch stays last, as an unbucketed epoch has it
    return torch.cat([full[i] for i in order] + tail) if batches else shuffled
