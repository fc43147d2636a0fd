"""Language models over token ids: an LSTM and a small GPT-style decoder, plus sampling.

Both take `(N, T)` token ids and return next-token logits `(N, T, vocab_size)`; position t
predicts token t+1. `generate` continues a prompt with temperature and top-k sampling, the same
way for either family (the model is given the last `context` tokens at every step; nanoGPT does
the same, and it keeps the code one loop for both).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from layerwise.errors import LayerwiseError
from layerwise.models.registry import MODELS


class LSTMLanguageModel(nn.Module):
    """Embedding -> stacked LSTM -> linear head (weights tied to the embedding when sizes fit)."""

    def __init__(
        self,
        vocab_size: int,
        embed: int = 128,
        hidden: int = 256,
        layers: int = 2,
        dropout: float = 0.1,
        context: int = 256,
    ) -> None:
        super().__init__()
        self.vocab_size, self.context = vocab_size, context
        self.embed = nn.Embedding(vocab_size, embed)
        self.rnn = nn.LSTM(
            embed, hidden, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, vocab_size)

    def forward(self, tokens: Tensor) -> Tensor:
        out, _ = self.rnn(self.dropout(self.embed(tokens)))
        return self.head(self.dropout(out))


class DecoderBlock(nn.Module):
    """Pre-norm causal self-attention and MLP, each with a residual connection."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim), nn.Dropout(dropout)
        )

    def forward(self, x: Tensor, causal: Tensor) -> Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, attn_mask=causal, need_weights=False, is_causal=True)[0]
        return x + self.mlp(self.norm2(x))


class GPTLanguageModel(nn.Module):
    """A small GPT: token + learned position embeddings, pre-norm causal decoder blocks."""

    def __init__(
        self,
        vocab_size: int,
        dim: int = 128,
        heads: int = 4,
        layers: int = 4,
        context: int = 128,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.vocab_size, self.context = vocab_size, context
        self.embed = nn.Embedding(vocab_size, dim)
        self.position = nn.Embedding(context, dim)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(DecoderBlock(dim, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab_size, bias=False)
        self.head.weight = self.embed.weight  # tied, as in GPT-2
        self.apply(_gpt_init)
        for name, p in self.named_parameters():  # residual projections scaled by depth (GPT-2)
            if name.endswith("mlp.2.weight") or name.endswith("out_proj.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * layers))

    def forward(self, tokens: Tensor) -> Tensor:
        t = tokens.shape[1]
        if t > self.context:
            raise LayerwiseError(
                f"a sequence of {t} tokens is longer than the model's context ({self.context})",
                hint="feed at most `context` tokens (generate() keeps only the last ones)",
            )
        positions = torch.arange(t, device=tokens.device)
        x = self.dropout(self.embed(tokens) + self.position(positions))
        causal = nn.Transformer.generate_square_subsequent_mask(t, device=tokens.device)
        for block in self.blocks:
            x = block(x, causal)
        return self.head(self.norm(x))


def _gpt_init(module: nn.Module) -> None:
    if isinstance(module, nn.Linear | nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


@MODELS.register("lstm_lm")
def lstm_lm(
    vocab_size: int = 65,
    embed: int = 128,
    hidden: int = 256,
    layers: int = 2,
    dropout: float = 0.1,
    context: int = 256,
) -> LSTMLanguageModel:
    """Character/word LSTM language model."""
    return LSTMLanguageModel(vocab_size, embed, hidden, layers, dropout, context)


@MODELS.register("gpt_lm")
def gpt_lm(
    vocab_size: int = 65,
    dim: int = 128,
    heads: int = 4,
    layers: int = 4,
    context: int = 128,
    dropout: float = 0.1,
) -> GPTLanguageModel:
    """Small GPT-style decoder language model."""
    return GPTLanguageModel(vocab_size, dim, heads, layers, context, dropout)


def check_sampling(temperature: float, top_k: int | None) -> None:
    """Refuse sampling settings that mean nothing, before any text is asked for or generated."""
    if temperature < 0:
        raise LayerwiseError(f"temperature must be >= 0, got {temperature}", hint="e.g. 0.8")
    if top_k is not None and top_k < 1:
        raise LayerwiseError(f"top_k must be >= 1, got {top_k}", hint="e.g. 40, or omit it")


@torch.no_grad()
def generate(
    model: nn.Module,
    prompt: Tensor,
    length: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    banned: Sequence[int] = (),
) -> Tensor:
    """Continue `prompt` (1-D or `(N, T)` token ids) by `length` sampled tokens.

    `temperature` divides the logits (below 1 is more conservative; 0 means greedy), `top_k`
    keeps only the k likeliest tokens before sampling (top_k=1 is greedy and deterministic);
    `banned` ids are never produced (padding and unknown are no text to continue with).
    Returns the prompt followed by the new tokens, in the prompt's shape convention.
    """
    check_sampling(temperature, top_k)
    single = prompt.dim() == 1
    tokens = prompt[None] if single else prompt
    if tokens.shape[1] == 0:
        raise LayerwiseError("the prompt is empty", hint="give at least one token or character")
    was_training = model.training
    model.eval()
    context = getattr(model, "context", None) or tokens.shape[1] + length
    try:
        for _ in range(length):
            logits = model(tokens[:, -context:])[:, -1, :].float()
            if banned:
                logits[:, list(banned)] = float("-inf")
            if temperature == 0 or top_k == 1:
                nxt = logits.argmax(dim=-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None and top_k < logits.shape[-1]:
                    kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                probs = F.softmax(logits, dim=-1)
                nxt = torch.multinomial(probs, 1, generator=generator)
            tokens = torch.cat([tokens, nxt], dim=1)
    finally:
        model.train(was_training)
    return tokens[0] if single else tokens
