"""Integrated gradients of a text classifier over its embedding layer: one score per token.

Token ids have no gradient, so the path runs in embedding space, from the embeddings of an
all-padding text of the same length (the padding row is zero and never trained) to the text's
own embeddings, and each token's score is its attribution summed over the embedding dimensions.
Recurrent and Transformer classifiers go through captum's `LayerIntegratedGradients` on their
`nn.Embedding`. fastText pools its words and hashed word n-grams in one `nn.EmbeddingBag`, whose
output is already the mean, so there the ids' embeddings are looked up and pooled here (the
model's own arithmetic: mean of the real ids, then its linear head) and integrated with captum's
`IntegratedGradients`; an n-gram's score is shared equally by the words it spans.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from layerwise.explain.attribute import IG_STEPS, ClassScores, ExplainError, captum_attr
from layerwise.text import PAD_ID, hashed_ngrams


@dataclass
class TokenAttributions:
    """One score per token the model saw (for the explained class), and the completeness
    check of the path integral (see `attribute.IntegratedGradients`)."""

    tokens: list[str]
    scores: list[float]
    total: float
    difference: float
    steps: int
    layer: str

    @property
    def gap(self) -> float:
        return abs(self.total - self.difference)

    @property
    def relative_gap(self) -> float:
        return self.gap / max(abs(self.difference), 1e-12)


def token_attributions(
    model: nn.Module,
    tokens: Tensor,
    lengths: Tensor,
    words: list[str],
    target: int,
    steps: int = IG_STEPS,
) -> TokenAttributions:
    """Integrated gradients of the `target` logit for one text (`tokens` (1, T) ids)."""
    bag = getattr(model, "embedding", None)
    if isinstance(bag, nn.EmbeddingBag) and hasattr(model, "head"):
        return _fasttext(model, tokens, words, target, steps)
    found = next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Embedding)), None)
    if found is None:
        raise ExplainError(
            f"the text model {type(model).__name__} has no nn.Embedding layer to attribute to",
            hint="integrated gradients over the embedding layer needs a model that embeds "
            "token ids with nn.Embedding (fasttext, bilstm, transformer_classifier do)",
        )
    name, layer = found
    attr = captum_attr()
    scores = ClassScores(model)
    baseline = torch.full_like(tokens, PAD_ID)
    values = attr.LayerIntegratedGradients(scores, layer).attribute(
        tokens,
        baselines=baseline,
        target=target,
        additional_forward_args=(lengths,),
        n_steps=steps,
        internal_batch_size=steps,
    )
    with torch.no_grad():
        ends = scores(torch.cat([tokens, baseline]), lengths.repeat(2))[:, target]
    per_token = values.detach().sum(-1)[0]
    return TokenAttributions(
        words, per_token.tolist(), float(values.sum()), float(ends[0] - ends[1]), steps, name
    )


class _PooledHead(nn.Module):
    """fastText after its lookup: mean of the given id embeddings (padding ids left out, as
    the EmbeddingBag leaves them), then the head."""

    def __init__(self, head: nn.Module, real: Tensor) -> None:
        super().__init__()
        self.head, self.real = head, real

    def forward(self, embedded: Tensor) -> Tensor:
        mask = self.real.to(embedded.dtype)[None, :, None]
        return self.head((embedded * mask).sum(1) / mask.sum(1).clamp(min=1))


def _fasttext(
    model: nn.Module, tokens: Tensor, words: list[str], target: int, steps: int
) -> TokenAttributions:
    width = tokens.shape[1]
    parts, spans = [tokens], [(torch.arange(width), 1)]
    for n in range(2, model.ngrams + 1):
        grams = hashed_ngrams(tokens, n, model.buckets, offset=model.vocab_size)
        parts.append(grams)
        spans.append((torch.arange(grams.shape[1]), n))
    ids = torch.cat(parts, dim=1)
    real = ids[0] != PAD_ID
    embedded = model.embedding.weight[ids].detach()  # (1, N, dim)
    scores = ClassScores(_PooledHead(model.head, real))
    attr = captum_attr()
    values = attr.IntegratedGradients(scores).attribute(
        embedded, baselines=torch.zeros_like(embedded), target=target, n_steps=steps
    )
    with torch.no_grad():
        ends = scores(torch.cat([embedded, torch.zeros_like(embedded)]))[:, target]
    per_id = values.detach().sum(-1)[0] * real
    per_token = torch.zeros(width)
    start = 0
    for positions, n in spans:  # an n-gram at position i spans words i .. i+n-1
        for k in range(n):
            per_token.index_add_(
                0, (positions + k).clamp(max=width - 1), per_id[start : start + len(positions)] / n
            )
        start += len(positions)
    return TokenAttributions(
        words, per_token.tolist(), float(values.sum()), float(ends[0] - ends[1]), steps, "embedding"
    )
