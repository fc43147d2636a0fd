"""Encoder-decoder models for translation: a GRU with attention and a small Transformer.

Both share one interface, which is all that training and search (`layerwise.models.seq2seq_search`)
need:

- `forward(src, src_lengths, tgt) -> logits (N, T, vocab)`: teacher forcing; `tgt` is the decoder
  input (`<bos> w1 … wn`, padded) and position t predicts target token t+1.
- `encode(src, src_lengths) -> state`: a dict of tensors whose first dimension is the batch, so a
  beam search can reorder or repeat it with one `index_select`.
- `decode_step(state, prefix) -> (logits (N, vocab), state, attention (N, S))`: the next token's
  logits given the target prefix `(N, t)` generated so far, and the attention over the source.

Padding is masked by `src_lengths` (source positions at or past a row's length are never
attended to), and by `pad_index` in the target.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from layerwise.errors import RecipeError, ShapeError
from layerwise.models.registry import MODELS

State = dict[str, Tensor]


def source_mask(src_lengths: Tensor, max_len: int) -> Tensor:
    """`(N, S)` True where a source position is padding."""
    positions = torch.arange(max_len, device=src_lengths.device)
    return positions[None, :] >= src_lengths[:, None]


class Attention(nn.Module):
    """Attention of a decoder state over encoder outputs.

    `kind="additive"` is Bahdanau's `v·tanh(W_q q + W_k k)`; `kind="dot"` is Luong's general
    score `q·W k`. Keys are projected once per sentence (`keys`), not at every step.
    """

    def __init__(self, query_dim: int, key_dim: int, dim: int, kind: str = "additive") -> None:
        super().__init__()
        if kind not in ("additive", "dot"):
            raise RecipeError(f"unknown attention '{kind}'", hint="use 'additive' or 'dot'")
        self.kind = kind
        self.key_proj = nn.Linear(key_dim, dim if kind == "additive" else query_dim, bias=False)
        if kind == "additive":
            self.query_proj = nn.Linear(query_dim, dim, bias=False)
            self.v = nn.Linear(dim, 1, bias=False)

    def keys(self, memory: Tensor) -> Tensor:
        return self.key_proj(memory)

    def forward(
        self, query: Tensor, keys: Tensor, memory: Tensor, pad: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Context `(N, key_dim)` and weights `(N, S)` for a query `(N, query_dim)`."""
        if self.kind == "additive":
            scores = self.v(torch.tanh(keys + self.query_proj(query)[:, None, :])).squeeze(2)
        else:
            scores = torch.bmm(keys, query[:, :, None]).squeeze(2)
        weights = torch.softmax(scores.masked_fill(pad, float("-inf")), dim=1)
        return torch.bmm(weights[:, None, :], memory).squeeze(1), weights


class GRUAttentionSeq2Seq(nn.Module):
    """Bidirectional GRU encoder (packed by length), GRU decoder with attention (Bahdanau)."""

    def __init__(
        self,
        src_vocab: int,
        tgt_vocab: int,
        embed: int = 256,
        hidden: int = 256,
        layers: int = 1,
        dropout: float = 0.2,
        attention: str = "additive",
        pad_index: int = 0,
    ) -> None:
        super().__init__()
        self.pad_index = pad_index
        self.src_embed = nn.Embedding(src_vocab, embed, padding_idx=pad_index)
        self.tgt_embed = nn.Embedding(tgt_vocab, embed, padding_idx=pad_index)
        self.encoder = nn.GRU(
            embed,
            hidden,
            num_layers=layers,
            batch_first=True,
            bidirectional=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.bridge = nn.Linear(2 * hidden, hidden)
        self.attention = Attention(hidden, 2 * hidden, hidden, attention)
        self.cell = nn.GRUCell(embed + 2 * hidden, hidden)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden + 2 * hidden + embed, hidden)
        self.head = nn.Linear(hidden, tgt_vocab)

    def encode(self, src: Tensor, src_lengths: Tensor) -> State:
        lengths = src_lengths.clamp(min=1).cpu()
        packed = pack_padded_sequence(
            self.dropout(self.src_embed(src)), lengths, batch_first=True, enforce_sorted=False
        )
        out, _ = self.encoder(packed)
        memory, _ = pad_packed_sequence(out, batch_first=True, total_length=src.shape[1])
        pad = source_mask(src_lengths, src.shape[1])
        # The mean of the real positions starts the decoder (the last state of a packed
        # backward GRU is its first position, so a mean is the simpler summary of both).
        real = (~pad).unsqueeze(2).float()
        summary = (memory * real).sum(1) / real.sum(1).clamp(min=1)
        return {
            "memory": memory,
            "keys": self.attention.keys(memory),
            "pad": pad,
            "hidden": torch.tanh(self.bridge(summary)),
        }

    def decode_step(self, state: State, prefix: Tensor) -> tuple[Tensor, State, Tensor]:
        embedded = self.dropout(self.tgt_embed(prefix[:, -1]))
        hidden = state["hidden"]
        context, weights = self.attention(hidden, state["keys"], state["memory"], state["pad"])
        hidden = self.cell(torch.cat([embedded, context], dim=1), hidden)
        features = torch.tanh(self.out(torch.cat([hidden, context, embedded], dim=1)))
        logits = self.head(self.dropout(features))
        return logits, {**state, "hidden": hidden}, weights

    def forward(self, src: Tensor, src_lengths: Tensor, tgt: Tensor) -> Tensor:
        state = self.encode(src, src_lengths)
        steps = []
        for t in range(tgt.shape[1]):
            logits, state, _ = self.decode_step(state, tgt[:, : t + 1])
            steps.append(logits)
        return torch.stack(steps, dim=1)


class PositionalEncoding(nn.Module):
    """Fixed sinusoidal positions (Vaswani et al.), so any length up to `max_len` works."""

    def __init__(self, dim: int, max_len: int = 512) -> None:
        super().__init__()
        position = torch.arange(max_len)[:, None]
        freq = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
        table = torch.zeros(max_len, dim)
        table[:, 0::2] = torch.sin(position * freq)
        table[:, 1::2] = torch.cos(position * freq)
        self.register_buffer("table", table, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] > self.table.shape[0]:
            raise ShapeError(
                f"a sequence of {x.shape[1]} tokens is longer than the model allows "
                f"({self.table.shape[0]})",
                hint="shorten the input or build the model with a larger max_len",
            )
        return x + self.table[: x.shape[1]]


class CrossDecoderLayer(nn.Module):
    """Pre-norm decoder layer (causal self-attention, cross-attention, MLP) that also returns
    its cross-attention weights, averaged over heads, for the heat map."""

    def __init__(self, dim: int, heads: int, ff: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.mlp = nn.Sequential(
            nn.Linear(dim, ff), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ff, dim)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: Tensor, memory: Tensor, causal: Tensor, tgt_pad: Tensor | None, src_pad: Tensor
    ) -> tuple[Tensor, Tensor]:
        h = self.norm1(x)
        attended = self.self_attn(
            h, h, h, attn_mask=causal, key_padding_mask=tgt_pad, need_weights=False
        )[0]
        x = x + self.dropout(attended)
        h = self.norm2(x)
        attended, weights = self.cross_attn(h, memory, memory, key_padding_mask=src_pad)
        x = x + self.dropout(attended)
        return x + self.dropout(self.mlp(self.norm3(x))), weights


class TransformerSeq2Seq(nn.Module):
    """A small Transformer encoder-decoder (pre-norm, sinusoidal positions)."""

    def __init__(
        self,
        src_vocab: int,
        tgt_vocab: int,
        dim: int = 256,
        heads: int = 4,
        layers: int = 3,
        ff: int = 512,
        dropout: float = 0.1,
        max_len: int = 256,
        pad_index: int = 0,
        tie_embeddings: bool = False,
    ) -> None:
        super().__init__()
        self.pad_index, self.dim = pad_index, dim
        self.src_embed = nn.Embedding(src_vocab, dim, padding_idx=pad_index)
        self.tgt_embed = nn.Embedding(tgt_vocab, dim, padding_idx=pad_index)
        for table in (self.src_embed, self.tgt_embed):
            # Scaled by sqrt(dim) in `_embed`, so drawn at 1/sqrt(dim) (Vaswani et al.): unit-scale
            # inputs. PyTorch's N(0, 1) would start the residual stream 16x larger than the
            # positions (dim 256) and each layer's output, and the model learnt far slower.
            nn.init.normal_(table.weight, std=dim**-0.5)
            with torch.no_grad():
                table.weight[pad_index].zero_()
        self.positions = PositionalEncoding(dim, max_len)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            dim, heads, ff, dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(
            layer, layers, norm=nn.LayerNorm(dim), enable_nested_tensor=False
        )
        self.decoder = nn.ModuleList(
            CrossDecoderLayer(dim, heads, ff, dropout) for _ in range(layers)
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, tgt_vocab)
        if tie_embeddings:
            self.head.weight = self.tgt_embed.weight

    def _embed(self, table: nn.Embedding, tokens: Tensor) -> Tensor:
        return self.dropout(self.positions(table(tokens) * math.sqrt(self.dim)))

    def encode(self, src: Tensor, src_lengths: Tensor) -> State:
        pad = source_mask(src_lengths, src.shape[1])
        memory = self.encoder(self._embed(self.src_embed, src), src_key_padding_mask=pad)
        return {"memory": memory, "pad": pad}

    def decode(self, state: State, tgt: Tensor) -> tuple[Tensor, Tensor]:
        """Logits `(N, T, vocab)` for every prefix position, and the last layer's
        cross-attention `(N, T, S)`."""
        t = tgt.shape[1]
        causal = torch.ones(t, t, dtype=torch.bool, device=tgt.device).triu(1)
        tgt_pad = tgt == self.pad_index
        x = self._embed(self.tgt_embed, tgt)
        weights = None
        for layer in self.decoder:
            x, weights = layer(x, state["memory"], causal, tgt_pad, state["pad"])
        return self.head(self.norm(x)), weights

    def decode_step(self, state: State, prefix: Tensor) -> tuple[Tensor, State, Tensor]:
        logits, weights = self.decode(state, prefix)
        return logits[:, -1], state, weights[:, -1]

    def forward(self, src: Tensor, src_lengths: Tensor, tgt: Tensor) -> Tensor:
        return self.decode(self.encode(src, src_lengths), tgt)[0]


@MODELS.register("seq2seq_gru")
def seq2seq_gru(
    src_vocab: int = 1000,
    tgt_vocab: int = 1000,
    embed: int = 256,
    hidden: int = 256,
    layers: int = 1,
    dropout: float = 0.2,
    attention: str = "additive",
    pad_index: int = 0,
) -> GRUAttentionSeq2Seq:
    """GRU encoder-decoder with additive (Bahdanau) or dot (Luong) attention."""
    return GRUAttentionSeq2Seq(
        src_vocab, tgt_vocab, embed, hidden, layers, dropout, attention, pad_index
    )


@MODELS.register("seq2seq_transformer")
def seq2seq_transformer(
    src_vocab: int = 1000,
    tgt_vocab: int = 1000,
    dim: int = 256,
    heads: int = 4,
    layers: int = 3,
    ff: int = 512,
    dropout: float = 0.1,
    max_len: int = 256,
    pad_index: int = 0,
    tie_embeddings: bool = False,
) -> TransformerSeq2Seq:
    """Small Transformer encoder-decoder."""
    return TransformerSeq2Seq(
        src_vocab, tgt_vocab, dim, heads, layers, ff, dropout, max_len, pad_index, tie_embeddings
    )
