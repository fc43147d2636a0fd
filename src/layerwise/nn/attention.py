"""Attention: additive (Bahdanau), dot-product (Luong, scaled as in Transformers), multi-head,
and attention pooling, all taking a padding `mask` (True at real positions).

Each returns `(context, weights)` so a caller can keep the weights (heat maps, the doctor).
Shapes: `query [B, Dq]` (one query per row) or `[B, Tq, Dq]`; `keys [B, T, Dk]`; `values`
default to the keys; `mask [B, T]` bool. Rows whose mask is all False get zero weights instead
of NaN, so a batch may hold an empty sequence.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def masked_softmax(scores: Tensor, mask: Tensor | None) -> Tensor:
    """Softmax over the last dimension, ignoring positions where `mask` is False.

    `mask` broadcasts against `scores` from the left on the batch dimension: `[B, T]` for
    scores `[B, T]` or `[B, Tq, T]`.
    """
    if mask is None:
        return torch.softmax(scores, dim=-1)
    if scores.dim() == 3 and mask.dim() == 2:
        mask = mask[:, None, :]
    scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return torch.nan_to_num(weights, nan=0.0)  # all-masked rows: softmax of only -inf


def _attend(weights: Tensor, values: Tensor) -> Tensor:
    return (
        torch.bmm(weights, values)
        if weights.dim() == 3
        else torch.einsum("bt,btd->bd", weights, values)
    )


class AdditiveAttention(nn.Module):
    """Bahdanau attention: `score = v · tanh(W_q q + W_k k)`.

    Args:
        query_dim, key_dim: feature sizes of queries and keys.
        hidden: size of the tanh layer (default: `key_dim`).
    """

    def __init__(self, query_dim: int, key_dim: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or key_dim
        self.query_proj = nn.Linear(query_dim, hidden, bias=False)
        self.key_proj = nn.Linear(key_dim, hidden)
        self.score = nn.Linear(hidden, 1, bias=False)

    def forward(
        self, query: Tensor, keys: Tensor, values: Tensor | None = None, mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        projected_keys = self.key_proj(keys)  # [B, T, H]
        q = self.query_proj(query)
        if q.dim() == 2:
            scores = self.score(torch.tanh(projected_keys + q[:, None, :])).squeeze(-1)
        else:  # [B, Tq, 1, H] + [B, 1, T, H]
            scores = self.score(torch.tanh(q[:, :, None] + projected_keys[:, None])).squeeze(-1)
        weights = masked_softmax(scores, mask)
        return _attend(weights, keys if values is None else values), weights


class DotProductAttention(nn.Module):
    """Luong attention: `score = q · k`, divided by `sqrt(d)` when `scaled` (Transformers).

    Queries and keys must have the same size (project them first otherwise).
    """

    def __init__(self, scaled: bool = True) -> None:
        super().__init__()
        self.scaled = scaled

    def forward(
        self, query: Tensor, keys: Tensor, values: Tensor | None = None, mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        single = query.dim() == 2
        q = query[:, None, :] if single else query
        scores = torch.bmm(q, keys.transpose(1, 2))
        if self.scaled:
            scores = scores / math.sqrt(keys.shape[-1])
        weights = masked_softmax(scores, mask)
        context = torch.bmm(weights, keys if values is None else values)
        return (context.squeeze(1), weights.squeeze(1)) if single else (context, weights)


class MultiHeadAttention(nn.Module):
    """`torch.nn.MultiheadAttention` (batch first) taking a True-at-real-tokens `mask`.

    Returns `(output [B, Tq, D], weights [B, Tq, T])` (weights averaged over heads).
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)

    def forward(
        self,
        query: Tensor,
        keys: Tensor,
        values: Tensor | None = None,
        mask: Tensor | None = None,
        causal: bool = False,
    ) -> tuple[Tensor, Tensor]:
        values = keys if values is None else values
        padding = None if mask is None else ~mask
        causal_mask = None
        if causal:
            size = (query.shape[1], keys.shape[1])
            causal_mask = torch.ones(size, dtype=torch.bool, device=query.device).triu(1)
        output, weights = self.attention(
            query, keys, values, key_padding_mask=padding, attn_mask=causal_mask
        )
        return output, weights


class AttentionPooling(nn.Module):
    """One vector per sequence: a learnt query attends over the positions (additive scores),
    padding left out. Used by the recurrent classifier, as in Yang et al. (2016)."""

    def __init__(self, dim: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or dim
        self.proj = nn.Linear(dim, hidden)
        self.score = nn.Linear(hidden, 1, bias=False)

    def forward(self, states: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        scores = self.score(torch.tanh(self.proj(states))).squeeze(-1)
        weights = masked_softmax(scores, mask)
        return torch.einsum("bt,btd->bd", weights, states), weights
