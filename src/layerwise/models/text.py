"""Text classifiers over padded token ids: fastText, a (bi)recurrent net with attention pooling,
and a small Transformer encoder.

Every model takes `tokens` (`LongTensor[B, T]`, right-padded with 0) and optionally `lengths`
(`LongTensor[B]`; computed from the padding when absent), so it trains on the plain `(x, y)`
tensors of a `TextBundle` as well as on `{"tokens", "lengths", "label"}` dict batches. Each first
drops the columns that are padding in every row of the batch (`text.trim`), so batches of short
texts (see `BucketBatcher`) run faster. `vocab_size` (and `max_length` for the Transformer) come
from the dataset when a recipe leaves them out.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from layerwise.errors import RecipeError, ShapeError
from layerwise.models.mlp import check_classifier_args
from layerwise.models.registry import MODELS
from layerwise.nn.attention import AttentionPooling
from layerwise.text import PAD_ID, hashed_ngrams, lengths_of, padding_mask, trim


def _tokens_and_lengths(tokens: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor]:
    """Integer ids (a float example from `summary` is cast) trimmed to the batch's longest row."""
    tokens = tokens.long()
    lengths = lengths_of(tokens) if lengths is None else lengths
    return trim(tokens, lengths), lengths


def _check_vocab(vocab_size: int) -> None:
    if not isinstance(vocab_size, int) or vocab_size <= 4:
        raise RecipeError(
            f"vocab_size must be an integer above 4 (the special tokens), got {vocab_size!r}",
            hint="leave model.args.vocab_size out to take it from the text dataset",
        )


# ---------------------------------------------------------------------------------- fastText
class FastText(nn.Module):
    """Joulin et al. (2017): the mean embedding of a text's words and hashed word n-grams, then
    one linear layer. N-gram ids follow the word ids in the same table."""

    def __init__(
        self, num_classes: int, vocab_size: int, dim: int, ngrams: int, buckets: int, sparse: bool
    ) -> None:
        super().__init__()
        self.vocab_size, self.ngrams, self.buckets = vocab_size, ngrams, buckets
        extra = buckets if ngrams > 1 else 0
        self.embedding = nn.EmbeddingBag(
            vocab_size + extra, dim, mode="mean", padding_idx=PAD_ID, sparse=sparse
        )
        self.head = nn.Linear(dim, num_classes)
        nn.init.uniform_(self.embedding.weight, -1.0 / dim, 1.0 / dim)
        with torch.no_grad():
            self.embedding.weight[PAD_ID].zero_()

    def forward(self, tokens: Tensor, lengths: Tensor | None = None) -> Tensor:
        tokens, _ = _tokens_and_lengths(tokens, lengths)
        parts = [tokens]
        for n in range(2, self.ngrams + 1):
            parts.append(hashed_ngrams(tokens, n, self.buckets, offset=self.vocab_size))
        ids = torch.cat(parts, dim=1)
        # Flat ids with offsets skip the padding (here also between words and n-grams), which
        # a padded matrix would still walk through.
        real = ids != PAD_ID
        offsets = torch.zeros(len(ids), dtype=torch.long, device=ids.device)
        offsets[1:] = real.sum(dim=1).cumsum(0)[:-1]
        return self.head(self.embedding(ids[real], offsets))


@MODELS.register("fasttext")
def fasttext(
    num_classes: int,
    vocab_size: int,
    dim: int = 32,
    ngrams: int = 2,
    buckets: int = 2**20,
    sparse: bool = False,
    max_length: int | None = None,
) -> FastText:
    """A fastText classifier.

    Args:
        num_classes: output units.
        vocab_size: word ids (from the dataset's vocabulary).
        dim: embedding size.
        ngrams: longest word n-gram (1: words only; 2: words and bigrams, as published).
        buckets: hash slots shared by all n-grams.
        sparse: sparse embedding gradients (for an optimizer that takes them, e.g. `sgd`).
        max_length: accepted for symmetry with the other text models (unused).
    """
    check_classifier_args(num_classes, 0.0)
    _check_vocab(vocab_size)
    if ngrams < 1 or buckets < 1:
        raise RecipeError(
            f"fasttext needs ngrams >= 1 and buckets >= 1, got {ngrams} and {buckets}",
            hint="e.g. ngrams: 2, buckets: 1048576",
        )
    return FastText(num_classes, vocab_size, dim, ngrams, buckets, sparse)


# ---------------------------------------------------------------------------------- recurrent
def reverse_padded(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse each row of `x` (`[B, T, ...]`) within its length, leaving the padding after it.

    Its own inverse. A recurrence run forward over the reversed rows is the backward direction
    of the original ones, and its padding still comes after every real token.
    """
    positions = torch.arange(x.shape[1], device=x.device)
    ends = lengths.to(x.device)[:, None]
    index = torch.where(positions < ends, ends - 1 - positions, positions)
    return x.gather(1, index.view(*index.shape, *[1] * (x.dim() - 2)).expand_as(x))


class _PaddedRecurrence:
    """`forward(x, lengths)` for `nn.LSTM`/`nn.GRU`/`nn.RNN` on right-padded batch-first input.

    Padding never reaches a real position's state: each direction of each layer runs as its own
    one-directional recurrence with the padding after the real tokens (the backward one over
    rows reversed within their lengths). The result at real positions equals that of a packed
    sequence, but it runs on the padded tensor, which PyTorch's fused CPU kernel takes and a
    packed sequence does not: 5-8x less CPU per step (batches of similar lengths keep the
    padding short). Positions past a row's length hold values no one may read (mask them).
    Parameters, their names and the module type are those of the PyTorch class, so saved
    weights load and the doctor's recurrent probes see it.
    """

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        directions = 2 if self.bidirectional else 1
        per_direction = len(self._flat_weights) // (self.num_layers * directions)
        out = x
        for layer in range(self.num_layers):
            if layer and self.dropout and self.training:
                out = nn.functional.dropout(out, self.dropout)
            states = []
            for direction in range(directions):
                first = (layer * directions + direction) * per_direction
                weights = self._flat_weights[first : first + per_direction]
                source = reverse_padded(out, lengths) if direction else out
                result = self._one_direction(source, weights)
                states.append(reverse_padded(result, lengths) if direction else result)
            out = torch.cat(states, dim=-1) if directions > 1 else states[0]
        return out, None

    def _one_direction(self, x: Tensor, weights: list[Tensor]) -> Tensor:
        h0 = x.new_zeros(1, x.shape[0], self.hidden_size)
        args = (weights, self.bias, 1, 0.0, self.training, False, True)
        if self.mode == "LSTM":
            return torch.lstm(x, (h0, h0), *args)[0]
        if self.mode == "GRU":
            return torch.gru(x, h0, *args)[0]
        run = torch.rnn_tanh if self.nonlinearity == "tanh" else torch.rnn_relu
        return run(x, h0, *args)[0]


class PaddedLSTM(_PaddedRecurrence, nn.LSTM):
    """`nn.LSTM` taking right-padded input and lengths (see `_PaddedRecurrence`)."""


class PaddedGRU(_PaddedRecurrence, nn.GRU):
    """`nn.GRU` taking right-padded input and lengths (see `_PaddedRecurrence`)."""


class PaddedRNN(_PaddedRecurrence, nn.RNN):
    """`nn.RNN` taking right-padded input and lengths (see `_PaddedRecurrence`)."""


RNNS = {"lstm": PaddedLSTM, "gru": PaddedGRU, "rnn": PaddedRNN}


class RecurrentClassifier(nn.Module):
    """Embedding -> (bi)directional LSTM/GRU/RNN -> pooling -> linear.

    Padding never enters the recurrence (`_PaddedRecurrence`: the result of packed sequences,
    on the padded tensor); pooling (`attention`, `max`, `mean` or `last`) sees only real
    positions. `self.attention_weights` keeps the last batch's weights.
    """

    def __init__(
        self,
        num_classes: int,
        vocab_size: int,
        embed_dim: int,
        hidden: int,
        layers: int,
        cell: str,
        bidirectional: bool,
        pooling: str,
        dropout: float,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD_ID)
        self.dropout = nn.Dropout(dropout)
        self.rnn = RNNS[cell](
            embed_dim,
            hidden,
            num_layers=layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if layers > 1 else 0.0,
        )
        width = hidden * (2 if bidirectional else 1)
        self.pooling = pooling
        self.pool = AttentionPooling(width) if pooling == "attention" else None
        self.head = nn.Linear(width, num_classes)
        self.attention_weights: Tensor | None = None

    def forward(self, tokens: Tensor, lengths: Tensor | None = None) -> Tensor:
        tokens, lengths = _tokens_and_lengths(tokens, lengths)
        embedded = self.dropout(self.embedding(tokens))
        steps = lengths.to(tokens.device).clamp(1, tokens.shape[1])
        states, _ = self.rnn(embedded, steps)
        mask = padding_mask(steps, tokens.shape[1])
        return self.head(self.dropout(self._pool(states, mask, steps)))

    def _pool(self, states: Tensor, mask: Tensor, steps: Tensor) -> Tensor:
        if self.pool is not None:
            pooled, weights = self.pool(states, mask)
            self.attention_weights = weights.detach()
            return pooled
        if self.pooling == "max":
            return states.masked_fill(~mask[..., None], float("-inf")).amax(dim=1)
        if self.pooling == "mean":
            return (states * mask[..., None]).sum(dim=1) / steps[:, None]
        last = states[torch.arange(len(states), device=states.device), steps - 1]
        if not self.rnn.bidirectional:
            return last
        half = states.shape[-1] // 2  # the backward direction ends at position 0
        return torch.cat([last[:, :half], states[:, 0, half:]], dim=1)


@MODELS.register("rnn_classifier")
def rnn_classifier(
    num_classes: int,
    vocab_size: int,
    embed_dim: int = 128,
    hidden: int = 128,
    layers: int = 1,
    cell: Literal["lstm", "gru", "rnn"] = "lstm",
    bidirectional: bool = True,
    pooling: Literal["attention", "max", "mean", "last"] = "attention",
    dropout: float = 0.3,
    max_length: int | None = None,
) -> RecurrentClassifier:
    """A recurrent text classifier (default: a BiLSTM with attention pooling).

    Args:
        num_classes: output units.
        vocab_size: token ids (from the dataset's vocabulary).
        embed_dim, hidden: embedding and hidden-state sizes (per direction).
        layers: stacked recurrent layers.
        cell: `lstm`, `gru` or `rnn` (tanh).
        bidirectional: run a second recurrence right to left and concatenate.
        pooling: how the states become one vector: `attention`, `max`, `mean` or `last`.
        dropout: after the embedding, between stacked layers and before the head.
        max_length: accepted for symmetry with the Transformer (unused: any length works).
    """
    check_classifier_args(num_classes, dropout)
    _check_vocab(vocab_size)
    return RecurrentClassifier(
        num_classes, vocab_size, embed_dim, hidden, layers, cell, bidirectional, pooling, dropout
    )


@MODELS.register("bilstm")
def bilstm(num_classes: int, vocab_size: int, **options) -> RecurrentClassifier:
    """`rnn_classifier` with a bidirectional LSTM (the defaults), under its usual name."""
    return rnn_classifier(num_classes, vocab_size, **{"cell": "lstm", **options})


@MODELS.register("bigru")
def bigru(num_classes: int, vocab_size: int, **options) -> RecurrentClassifier:
    """`rnn_classifier` with a bidirectional GRU."""
    return rnn_classifier(num_classes, vocab_size, **{"cell": "gru", **options})


# ---------------------------------------------------------------------------------- Transformer
class TransformerClassifier(nn.Module):
    """Token + learnt position embeddings -> pre-norm Transformer encoder (padding masked) ->
    masked mean of the positions -> linear.

    `attention_dropout` (on the attention weights) is separate from `dropout` (embeddings,
    residual branches, head): PyTorch's fused CPU attention kernel takes no dropout, and with it
    a training step on 300-token reviews costs about 4x the CPU (the `(B, heads, T, T)` weights
    are built, dropped and kept for the backward pass).
    """

    def __init__(
        self,
        num_classes: int,
        vocab_size: int,
        max_length: int,
        dim: int,
        heads: int,
        layers: int,
        ff_dim: int,
        dropout: float,
        attention_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.max_length = max_length
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=PAD_ID)
        self.position = nn.Embedding(max_length, dim)
        block = nn.TransformerEncoderLayer(
            dim, heads, ff_dim, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        block.self_attn.dropout = attention_dropout
        # PyTorch's inference "fast path" (taken in eval mode) costs 2-3x the ordinary path on
        # padded CPU batches (7 vs 2.6 CPU s for 500 reviews of 400 tokens); this flag is one
        # of the conditions it checks, and the ordinary path still applies `activation`.
        block.activation_relu_or_gelu = 0
        self.encoder = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, tokens: Tensor, lengths: Tensor | None = None) -> Tensor:
        tokens, lengths = _tokens_and_lengths(tokens, lengths)
        width = tokens.shape[1]
        if width > self.max_length:
            raise ShapeError(
                f"a sequence of {width} tokens is longer than the {self.max_length} positions "
                "this Transformer was built for",
                hint="cut texts to max_length (the text pipeline does) or build the model with "
                "a larger max_length",
            )
        positions = torch.arange(width, device=tokens.device)
        hidden = self.dropout(self.embedding(tokens) + self.position(positions))
        mask = padding_mask(lengths.clamp(min=1), width)
        hidden = self.norm(self.encoder(hidden, src_key_padding_mask=~mask))
        pooled = (hidden * mask[..., None]).sum(dim=1) / mask.sum(dim=1, keepdim=True)
        return self.head(self.dropout(pooled))


@MODELS.register("transformer_classifier")
def transformer_classifier(
    num_classes: int,
    vocab_size: int,
    max_length: int = 512,
    dim: int = 128,
    heads: int = 4,
    layers: int = 2,
    ff_dim: int = 256,
    dropout: float = 0.1,
    attention_dropout: float = 0.0,
) -> TransformerClassifier:
    """A small Transformer encoder classifier.

    Args:
        num_classes: output units.
        vocab_size: token ids (from the dataset's vocabulary).
        max_length: positions it can take (from the dataset when not given).
        dim, heads, layers, ff_dim: model width, attention heads, encoder blocks, feed-forward
            width.
        dropout: on embeddings, the blocks' residual branches and before the head.
        attention_dropout: on the attention weights (0 keeps the CPU's fused attention kernel,
            about 4x cheaper per step on long texts).
    """
    check_classifier_args(num_classes, dropout)
    if not 0.0 <= attention_dropout < 1.0:
        raise RecipeError(
            f"attention_dropout must be in [0, 1), got {attention_dropout!r}",
            hint="e.g. attention_dropout: 0.0 (the fastest on a CPU)",
        )
    _check_vocab(vocab_size)
    if dim % heads:
        raise RecipeError(
            f"dim ({dim}) must be divisible by heads ({heads})", hint="e.g. dim: 128, heads: 4"
        )
    return TransformerClassifier(
        num_classes, vocab_size, max_length, dim, heads, layers, ff_dim, dropout, attention_dropout
    )
