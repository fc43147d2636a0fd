"""Text models and attention: variable lengths and padding masks, gradients, registry errors."""

from __future__ import annotations

import pytest
import torch

from layerwise.errors import RecipeError, ShapeError
from layerwise.models import create_model
from layerwise.nn.attention import (
    AdditiveAttention,
    AttentionPooling,
    DotProductAttention,
    MultiHeadAttention,
    masked_softmax,
)
from layerwise.text import pad

VOCAB = 50
MODELS = {
    "fasttext": {"dim": 8, "buckets": 64},
    "bilstm": {"embed_dim": 8, "hidden": 6},
    "bigru": {"embed_dim": 8, "hidden": 6, "pooling": "max", "layers": 2},
    "rnn_classifier": {"embed_dim": 8, "hidden": 6, "cell": "rnn", "pooling": "last"},
    "transformer_classifier": {"dim": 16, "heads": 2, "layers": 1, "ff_dim": 16, "max_length": 12},
}


def _batch() -> dict[str, torch.Tensor]:
    return pad([[5, 6, 7, 8, 9, 10], [11, 12], [13], [14, 15, 16, 17]])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_text_models_ignore_padding_and_learn_through_every_parameter(name):
    model = create_model(name, num_classes=3, vocab_size=VOCAB, **MODELS[name]).eval()
    batch = _batch()
    logits = model(batch["tokens"])
    assert logits.shape == (4, 3) and bool(torch.isfinite(logits).all())
    wider = torch.nn.functional.pad(batch["tokens"], (0, 5))  # more padding changes nothing
    torch.testing.assert_close(model(wider), logits)
    torch.testing.assert_close(model(**batch), logits)  # explicit lengths, same answer
    alone = model(batch["tokens"][1:2, :2])  # a row alone, unpadded, as in its batch
    torch.testing.assert_close(alone, logits[1:2], atol=1e-5, rtol=1e-4)
    model.train()
    model(**batch).logsumexp(dim=1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing


@pytest.mark.parametrize("name", sorted(MODELS))
def test_an_all_padding_row_gives_finite_logits(name):
    model = create_model(name, num_classes=2, vocab_size=VOCAB, **MODELS[name]).eval()
    tokens = torch.tensor([[5, 6, 0], [0, 0, 0]])
    assert bool(torch.isfinite(model(tokens)).all())


def test_fasttext_bigrams_change_the_answer_for_reordered_words():
    model = create_model("fasttext", num_classes=2, vocab_size=VOCAB, dim=8, buckets=64).eval()
    words_only = create_model("fasttext", num_classes=2, vocab_size=VOCAB, ngrams=1, dim=8)
    a, b = torch.tensor([[5, 6, 7]]), torch.tensor([[7, 6, 5]])
    assert not torch.allclose(model(a), model(b))
    torch.testing.assert_close(words_only(a), words_only(b))  # a bag of words has no order
    assert words_only.embedding.num_embeddings == VOCAB
    assert model.embedding.num_embeddings == VOCAB + 64


def test_a_transformer_refuses_more_tokens_than_its_positions():
    model = create_model("transformer_classifier", num_classes=2, vocab_size=VOCAB, max_length=4)
    with pytest.raises(ShapeError, match="5 tokens is longer than the 4 positions"):
        model(torch.ones(1, 5, dtype=torch.long) * 7)


def test_bad_text_model_arguments_are_recipe_errors():
    with pytest.raises(RecipeError, match="vocab_size"):
        create_model("bilstm", num_classes=2, vocab_size=2)
    with pytest.raises(RecipeError, match="divisible by heads"):
        create_model("transformer_classifier", num_classes=2, vocab_size=VOCAB, dim=10, heads=3)
    with pytest.raises(RecipeError, match="attention_dropout must be in"):
        create_model("transformer_classifier", num_classes=2, vocab_size=VOCAB, attention_dropout=1)
    with pytest.raises(RecipeError):
        create_model("rnn_classifier", num_classes=2, vocab_size=VOCAB, cell="transformer")


def test_masked_softmax_gives_padding_no_weight_and_empty_rows_zeros():
    scores = torch.tensor([[1.0, 2.0, 3.0], [0.5, 0.5, 0.5]])
    mask = torch.tensor([[True, True, False], [False, False, False]])
    weights = masked_softmax(scores, mask)
    assert weights[0, 2] == 0 and torch.isclose(weights[0].sum(), torch.tensor(1.0))
    assert weights[1].tolist() == [0.0, 0.0, 0.0]


def test_attention_modules_weigh_only_real_positions():
    keys = torch.randn(2, 5, 8)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    for attention, query in (
        (AdditiveAttention(6, 8, hidden=7), torch.randn(2, 6)),
        (DotProductAttention(), torch.randn(2, 8)),
    ):
        context, weights = attention(query, keys, mask=mask)
        assert context.shape == (2, 8) and weights.shape == (2, 5)
        assert weights[1, 2:].abs().sum() == 0
        torch.testing.assert_close(weights.sum(dim=1), torch.ones(2))
        context, weights = attention(query[:, None].expand(2, 3, -1), keys, mask=mask)
        assert context.shape == (2, 3, 8) and weights[1, :, 2:].abs().sum() == 0
    pooled, weights = AttentionPooling(8)(keys, mask)
    assert pooled.shape == (2, 8) and weights[1, 2:].abs().sum() == 0
    output, weights = MultiHeadAttention(8, heads=2)(keys, keys, mask=mask)
    assert output.shape == (2, 5, 8) and weights[1, :, 2:].abs().sum() == 0
    _, weights = MultiHeadAttention(8, heads=2)(keys, keys, causal=True)
    assert weights[0, 0, 1:].abs().sum() == 0  # the first position sees only itself


@pytest.mark.parametrize(
    ("cell", "layers", "bidirectional"),
    [("lstm", 2, True), ("gru", 1, True), ("rnn", 2, False), ("gru", 2, True)],
)
def test_recurrence_on_padded_rows_equals_packed_sequences(cell, layers, bidirectional):
    """The padded-tensor recurrence (fast on the CPU) gives the packed sequence's states at every
    real position, in both directions and through stacked layers."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    from layerwise.models.text import RNNS

    torch.manual_seed(0)
    options = {"num_layers": layers, "batch_first": True, "bidirectional": bidirectional}
    rnn = RNNS[cell](5, 4, **options)
    torch_class = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell]
    assert isinstance(rnn, torch_class)  # the doctor's recurrent probes look for these
    reference = torch_class(5, 4, **options)
    reference.load_state_dict(rnn.state_dict())  # the same parameter names
    lengths = torch.tensor([6, 2, 1, 4])
    x = torch.randn(4, 6, 5) * (torch.arange(6) < lengths[:, None])[..., None]
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    expected, _ = pad_packed_sequence(reference(packed)[0], batch_first=True, total_length=6)
    states, _ = rnn(x, lengths)
    real = torch.arange(6) < lengths[:, None]
    torch.testing.assert_close(states[real], expected[real], atol=1e-5, rtol=1e-4)
    assert states.shape == expected.shape == (4, 6, 4 * (2 if bidirectional else 1))
