"""Greedy and beam search over any model with the seq2seq interface (`encode`, `decode_step`).

Both return `(N, L)` token ids without the leading `<bos>`, padded with `pad` after `<eos>`, and
the attention of each generated step over the source, `(N, L, S)`, for the heat map. Beam search
keeps finished hypotheses in the beam (they extend only by `<eos>` at no cost) and picks the
final one by score / length**`length_penalty`; with `beam=1` it takes the likeliest token at every
step, which is exactly the greedy result (a test checks it).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from layerwise.errors import LayerwiseError


def _reorder(state: dict[str, Tensor], index: Tensor) -> dict[str, Tensor]:
    return {key: value.index_select(0, index) for key, value in state.items()}


def _finish(tokens: Tensor, eos: int, pad: int) -> Tensor:
    """Replace everything after each row's first `<eos>` by `pad` (the `<eos>` is kept)."""
    is_eos = (tokens == eos).int()
    after = (is_eos.cumsum(dim=1) - is_eos) > 0
    return tokens.masked_fill(after, pad)


@torch.no_grad()
def greedy_decode(
    model: nn.Module,
    src: Tensor,
    src_lengths: Tensor,
    *,
    bos: int,
    eos: int,
    pad: int = 0,
    max_len: int = 64,
) -> tuple[Tensor, Tensor]:
    """The likeliest next token at every step, until every row has produced `<eos>`."""
    state = model.encode(src, src_lengths)
    prefix = torch.full((len(src), 1), bos, dtype=torch.long, device=src.device)
    done = torch.zeros(len(src), dtype=torch.bool, device=src.device)
    attentions = []
    for _ in range(max_len):
        logits, state, weights = model.decode_step(state, prefix)
        token = logits.argmax(dim=-1)
        prefix = torch.cat([prefix, token[:, None]], dim=1)
        attentions.append(weights)
        done |= token == eos
        if bool(done.all()):
            break
    return _finish(prefix[:, 1:], eos, pad), torch.stack(attentions, dim=1)


@torch.no_grad()
def beam_search(
    model: nn.Module,
    src: Tensor,
    src_lengths: Tensor,
    *,
    bos: int,
    eos: int,
    pad: int = 0,
    beam: int = 4,
    max_len: int = 64,
    length_penalty: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """Beam search of width `beam`; returns the best hypothesis per row and its attention."""
    if beam < 1:
        raise LayerwiseError(f"beam width must be >= 1, got {beam}", hint="e.g. beam: 4")
    n, device = len(src), src.device
    rows = torch.arange(n, device=device).repeat_interleave(beam)
    state = _reorder(model.encode(src, src_lengths), rows)
    prefix = torch.full((n * beam, 1), bos, dtype=torch.long, device=device)
    scores = torch.full((n, beam), float("-inf"), device=device)
    scores[:, 0] = 0.0  # one live hypothesis per row at the start
    done = torch.zeros(n * beam, dtype=torch.bool, device=device)
    lengths = torch.zeros(n * beam, device=device)
    attention = torch.zeros(n * beam, 0, src.shape[1], device=device)
    for _ in range(max_len):
        logits, state, weights = model.decode_step(state, prefix)
        logp = torch.log_softmax(logits.float(), dim=-1)
        vocab = logp.shape[1]
        # A finished hypothesis may only repeat <eos>, at no cost, so it keeps its score.
        logp[done] = float("-inf")
        logp[done, eos] = 0.0
        candidates = (scores.view(-1, 1) + logp).view(n, beam * vocab)
        scores, flat = candidates.topk(beam, dim=1)
        source = (torch.arange(n, device=device)[:, None] * beam + flat // vocab).view(-1)
        token = (flat % vocab).view(-1)
        state = _reorder(state, source)
        prefix = torch.cat([prefix.index_select(0, source), token[:, None]], dim=1)
        attention = torch.cat(
            [attention.index_select(0, source), weights.index_select(0, source)[:, None]], dim=1
        )
        was_done = done.index_select(0, source)
        lengths = lengths.index_select(0, source) + (~was_done).float()
        done = was_done | (token == eos)
        if bool(done.all()):
            break
    normalised = scores / lengths.view(n, beam).clamp(min=1) ** length_penalty
    best = torch.arange(n, device=device) * beam + normalised.argmax(dim=1)
    return _finish(prefix[best, 1:], eos, pad), attention[best]
