"""Encoder-decoders: shapes, source masking, greedy = beam 1, and a step that learns."""

from __future__ import annotations

import pytest
import torch

from layerwise.models import create_model
from layerwise.models.seq2seq_search import beam_search, greedy_decode
from layerwise.tasks.sequence import SequenceTrainer, sequence_loss

BOS, EOS = 2, 3
SMALL = {
    "seq2seq_gru": {"embed": 16, "hidden": 16, "dropout": 0.0},
    "seq2seq_transformer": {"dim": 16, "heads": 2, "layers": 1, "ff": 32, "dropout": 0.0},
}


def make(name: str, **extra) -> torch.nn.Module:
    return create_model(name, src_vocab=12, tgt_vocab=11, **{**SMALL[name], **extra}).eval()


def padded_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    src = torch.tensor([[5, 6, 7, 8], [9, 4, 0, 0], [6, 0, 0, 0]])
    lengths = torch.tensor([4, 2, 1])
    tgt = torch.tensor([[BOS, 5, 6, 7], [BOS, 8, 0, 0], [BOS, 4, 9, 0]])
    return src, lengths, tgt


@pytest.mark.parametrize("name", list(SMALL))
def test_teacher_forcing_gives_logits_per_target_position(name: str) -> None:
    src, lengths, tgt = padded_batch()
    assert make(name)(src, lengths, tgt).shape == (3, 4, 11)


@pytest.mark.parametrize("name", list(SMALL))
def test_padding_in_the_source_changes_nothing(name: str) -> None:
    model = make(name)
    src, lengths, tgt = padded_batch()
    other = src.clone()
    other[1, 2:] = 7  # garbage where row 1 is padding
    other[2, 1:] = 11
    with torch.no_grad():
        assert torch.allclose(model(src, lengths, tgt), model(other, lengths, tgt), atol=1e-5)
        _, _, weights = model.decode_step(model.encode(src, lengths), tgt[:, :1])
    assert torch.all(weights[1, 2:] == 0) and torch.all(weights[2, 1:] == 0)
    assert torch.allclose(weights.sum(dim=1), torch.ones(3))


def test_transformer_decoder_is_causal() -> None:
    model = make("seq2seq_transformer")
    src, lengths, tgt = padded_batch()
    changed = tgt.clone()
    changed[:, 3] = 10
    with torch.no_grad():
        a, b = model(src, lengths, tgt), model(src, lengths, changed)
    assert torch.allclose(a[:, :3], b[:, :3], atol=1e-5)


def test_transformer_embeddings_enter_at_the_scale_of_the_positions() -> None:
    """Embeddings are multiplied by sqrt(dim), so they are drawn at 1/sqrt(dim): the tokens
    enter at unit scale, like the sinusoidal positions, and padding enters as zeros."""
    dim = 64
    model = create_model("seq2seq_transformer", src_vocab=400, tgt_vocab=300, dim=dim)
    for table in (model.src_embed, model.tgt_embed):
        scaled = table.weight.detach()[1:] * dim**0.5
        assert 0.9 < float(scaled.std()) < 1.1
        assert float(table.weight.detach()[0].abs().max()) == 0.0


@pytest.mark.parametrize("name", list(SMALL))
def test_beam_of_one_is_greedy(name: str) -> None:
    torch.manual_seed(1)
    model = make(name)
    src, lengths, _ = padded_batch()
    greedy, greedy_attention = greedy_decode(model, src, lengths, bos=BOS, eos=EOS, max_len=9)
    beam, beam_attention = beam_search(model, src, lengths, bos=BOS, eos=EOS, beam=1, max_len=9)
    assert torch.equal(greedy, beam)
    assert torch.allclose(greedy_attention, beam_attention)


def test_a_beam_as_wide_as_every_prefix_finds_the_likeliest_output() -> None:
    # With beam >= vocab**(max_len - 1) no prefix is ever pruned: the search is exact, so its
    # output is at least as likely as the greedy one.
    torch.manual_seed(2)
    model = make("seq2seq_gru")
    src, lengths, _ = padded_batch()

    def log_prob(out: torch.Tensor) -> torch.Tensor:
        # Teacher-forced log-probability of each row's output up to and including <eos>.
        prefix = torch.cat([torch.full((3, 1), BOS), out], dim=1)
        with torch.no_grad():
            logp = model(src, lengths, prefix[:, :-1]).log_softmax(-1)
        picked = logp.gather(2, out[:, :, None]).squeeze(2)
        return (picked * (out != 0)).sum(1)

    greedy, _ = greedy_decode(model, src, lengths, bos=BOS, eos=EOS, max_len=3)
    exact, _ = beam_search(
        model, src, lengths, bos=BOS, eos=EOS, beam=121, max_len=3, length_penalty=0.0
    )
    assert torch.all(log_prob(exact) >= log_prob(greedy) - 1e-5)


def test_the_translation_step_learns_to_copy() -> None:
    torch.manual_seed(0)
    src = torch.randint(4, 10, (64, 5))
    tgt = torch.cat([torch.full((64, 1), BOS), src, torch.full((64, 1), EOS)], dim=1)
    data = {"src": src, "src_lengths": torch.full((64,), 5), "tgt": tgt}
    model = create_model("seq2seq_gru", src_vocab=10, tgt_vocab=10, embed=32, hidden=32, dropout=0)
    trainer = SequenceTrainer(model, lr=1e-2, doctor=False)
    history = trainer.fit(data, epochs=30, batch_size=32)
    assert history[-1]["loss"] < 0.3 * history[0]["loss"]
    out, _ = greedy_decode(model.eval(), src[:8], data["src_lengths"][:8], bos=BOS, eos=EOS)
    assert (out[:, :5] == src[:8]).float().mean() > 0.9


def test_sequence_loss_ignores_padding() -> None:
    logits = torch.randn(2, 3, 5)
    target = torch.tensor([[1, 2, 0], [3, 0, 0]])
    changed = logits.clone()
    changed[0, 2] = 100.0  # a padded position
    assert torch.equal(sequence_loss(logits, target), sequence_loss(changed, target))
