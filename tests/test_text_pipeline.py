"""The text pipeline: tokenisers, vocabulary, padding, n-grams, buckets, saving, text datasets."""

from __future__ import annotations

import json

import pytest
import torch

from layerwise.data import load_dataset
from layerwise.data.text import BucketBatcher
from layerwise.errors import CheckpointError, DataError, RecipeError
from layerwise.text import (
    PIPELINE_FILE,
    TextPipeline,
    Vocab,
    bucket_order,
    hashed_ngrams,
    lengths_of,
    make_tokenizer,
    pad,
    to_offsets,
    trim,
)

REVIEWS = [
    "A great movie!<br /><br />I loved it.",
    "A dull, boring movie. I hated it.",
    "Great acting, great story; loved every minute.",
    "Boring. Dull. Hated the ending.",
]


def test_word_tokens_are_lowercased_words_and_punctuation_without_html_breaks():
    words = make_tokenizer("word").tokenize(["Don't stop!<br />It's GREAT, 10/10."])
    assert words == [["don't", "stop", "!", "it's", "great", ",", "10", "/", "10", "."]]
    assert make_tokenizer("word", lowercase=False).tokenize(["Hi there"]) == [["Hi", "there"]]


def test_char_tokens_are_characters():
    assert make_tokenizer("char").tokenize(["ab c"]) == [["a", "b", " ", "c"]]


def test_subword_tokens_split_an_unseen_word_into_known_pieces():
    tokenizer = make_tokenizer("subword", vocab_size=60).fit(REVIEWS * 5)
    pieces = tokenizer.tokenize(["greatest"])[0]
    assert len(pieces) > 1 and "<unk>" not in pieces
    assert tokenizer.join(pieces) == "greatest"


def test_an_unknown_tokenizer_is_a_recipe_error_with_a_suggestion():
    with pytest.raises(RecipeError, match="unknown tokenizer 'wrod'") as info:
        make_tokenizer("wrod")
    assert "word" in info.value.hint


def test_vocab_keeps_frequent_tokens_after_the_specials_and_maps_the_rest_to_unk():
    vocab = Vocab.build([["b", "a", "b", "c"], ["a", "b", "d"]], min_freq=2)
    assert vocab.itos == ["<pad>", "<unk>", "<bos>", "<eos>", "b", "a"]
    assert (vocab.pad_id, vocab.unk_id, vocab.bos_id, vocab.eos_id) == (0, 1, 2, 3)
    assert vocab.encode(["a", "c", "b"]) == [5, 1, 4]
    assert vocab.encode_flat(["a", "zzz"]).tolist() == [5, 1]
    assert vocab.decode([2, 5, 1, 4, 0]) == ["a", "<unk>", "b"]
    capped = Vocab.build([["b", "a", "b", "c"], ["a", "b", "d"]], max_size=5)
    assert capped.itos[4:] == ["b"] and len(capped) == 5
    assert Vocab.from_dict(json.loads(json.dumps(vocab.to_dict()))).itos == vocab.itos


def test_vocab_refuses_bad_settings():
    with pytest.raises(RecipeError, match="min_freq"):
        Vocab.build([["a"]], min_freq=0)
    with pytest.raises(RecipeError, match="max_size 3"):
        Vocab.build([["a"]], max_size=3)
    with pytest.raises(DataError, match="no tokens"):
        Vocab.build([[]])


def test_pad_right_pads_cuts_and_reports_lengths():
    batch = pad([[5, 6, 7], [8], []], max_length=2)
    assert batch["tokens"].tolist() == [[5, 6], [8, 0], [0, 0]]
    assert batch["lengths"].tolist() == [2, 1, 0]
    assert lengths_of(batch["tokens"]).tolist() == [2, 1, 0]
    assert trim(torch.tensor([[4, 0, 0], [5, 6, 0]]), torch.tensor([1, 2])).shape == (2, 2)


def test_offsets_are_what_an_embedding_bag_takes():
    tokens, lengths = torch.tensor([[4, 5, 0], [6, 0, 0]]), torch.tensor([2, 1])
    flat, offsets = to_offsets(tokens, lengths)
    assert flat.tolist() == [4, 5, 6] and offsets.tolist() == [0, 2]


def test_hashed_bigrams_are_deterministic_shifted_and_padded():
    tokens = torch.tensor([[4, 5, 6, 0], [4, 5, 0, 0], [7, 0, 0, 0]])
    grams = hashed_ngrams(tokens, n=2, buckets=100, offset=1000)
    assert grams.shape == (3, 3)
    assert grams[0, 0] == grams[1, 0]  # the same bigram (4, 5) -> the same id
    assert grams[0, 0] != grams[0, 1]
    assert bool(((grams[0, :2] >= 1000) & (grams[0, :2] < 1100)).all())
    assert grams[0, 2] == 0 and grams[1, 1:].tolist() == [0, 0] and grams[2].tolist() == [0, 0, 0]
    assert torch.equal(grams, hashed_ngrams(tokens, n=2, buckets=100, offset=1000))


def test_bucket_order_is_a_seeded_permutation_of_batches_with_similar_lengths():
    lengths = torch.randint(1, 500, (1000,))
    order = bucket_order(lengths, 10, torch.Generator().manual_seed(0), pool=100)
    assert sorted(order.tolist()) == list(range(1000))
    spread = torch.stack([lengths[b].max() - lengths[b].min() for b in order.split(10)])
    assert spread.float().mean() < 20  # random batches of 10 spread over ~400
    again = bucket_order(lengths, 10, torch.Generator().manual_seed(0), pool=100)
    assert torch.equal(order, again)


def test_bucket_batcher_shuffles_by_epoch_and_keeps_order_without_shuffle():
    x = pad([[4] * n for n in range(1, 41)])["tokens"]
    y = torch.arange(40)
    batcher = BucketBatcher(x, y, batch_size=8, shuffle=True, seed=0)
    epochs = []
    for epoch in (0, 1):
        batcher.set_epoch(epoch)
        epochs.append(torch.cat([yb for _, yb in batcher]))
    assert sorted(epochs[0].tolist()) == list(range(40)) and not torch.equal(*epochs)
    plain = BucketBatcher(x, y, batch_size=8, shuffle=False)
    assert torch.cat([yb for _, yb in plain]).tolist() == list(range(40))


def test_a_pipeline_round_trips_through_a_folder_as_json(tmp_path):
    pipeline = TextPipeline("word", min_freq=2, max_length=6, meta={"class_names": ["n", "p"]})
    encoded = pipeline.fit_encode(REVIEWS)
    assert encoded["tokens"].shape == (4, 6) and encoded["lengths"].max() == 6
    path = pipeline.save(tmp_path)
    assert path.name == PIPELINE_FILE and json.loads(path.read_text())["vocab"]["tokens"]
    loaded = TextPipeline.load(tmp_path)
    new = ["Loved the great movie", "hated it"]
    for key in ("tokens", "lengths"):
        assert torch.equal(loaded.encode(new)[key], pipeline.encode(new)[key])
    assert loaded.meta == {"class_names": ["n", "p"]}
    assert loaded.decode(loaded.encode(["great movie zebra"])["tokens"][0]) == "great movie <unk>"
    assert loaded.unknown_share(["zebra", "great zebra"]) == [1.0, 0.5]


def test_a_subword_pipeline_round_trips_with_its_learnt_merges(tmp_path):
    pipeline = TextPipeline("subword", tokenizer_options={"vocab_size": 80})
    pipeline.fit(REVIEWS * 3)
    pipeline.save(tmp_path)
    loaded = TextPipeline.load(tmp_path)
    text = ["the greatest, most boring movie"]
    assert torch.equal(loaded.encode(text)["tokens"], pipeline.encode(text)["tokens"])


def test_bad_texts_and_damaged_files_are_clear_errors(tmp_path):
    pipeline = TextPipeline().fit(REVIEWS)
    with pytest.raises(DataError, match="item 1 is empty"):
        pipeline.encode(["fine", "   "])
    with pytest.raises(DataError, match="item 0 is a int"):
        pipeline.encode([3])
    with pytest.raises(DataError, match="no vocabulary"):
        TextPipeline().encode(["x"])
    with pytest.raises(CheckpointError, match="missing"):
        TextPipeline.load(tmp_path)
    (tmp_path / PIPELINE_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="not a readable text pipeline"):
        TextPipeline.load(tmp_path)


def test_a_text_column_of_a_csv_or_jsonl_file_becomes_a_text_dataset(tmp_path):
    rows = [{"review": text, "sentiment": ["pos", "neg"][i % 2]} for i, text in enumerate(REVIEWS)]
    rows = rows * 5
    (tmp_path / "r.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "r.csv").write_text(
        "review,sentiment\n" + "\n".join(f'"{r["review"]}",{r["sentiment"]}' for r in rows)
    )
    for name in ("r.jsonl", "r.csv"):
        data = load_dataset(
            "text", path=tmp_path / name, text="review", target="sentiment", max_length=8
        )
        assert data.class_names == ["neg", "pos"] and data.sizes() == {
            "train": 16,
            "val": 0,
            "test": 4,
        }
        assert data.train[0].dtype == torch.long and data.input_shape == (8,)
        assert data.test[0].shape == (4, 8)
        assert data.model_args == {"vocab_size": data.pipeline.vocab_size, "max_length": 8}
    with pytest.raises(DataError, match="no column 'txt'") as info:
        load_dataset("text", path=tmp_path / "r.csv", text="txt", target="sentiment")
    assert "review" in info.value.hint


@pytest.mark.shared
def test_imdb_reads_both_official_splits_with_a_vocabulary_from_train(shared_data):
    data = load_dataset("imdb", subset=200, max_length=64, val_fraction=0.1)
    assert data.sizes() == {"train": 180, "val": 20, "test": 200}
    assert data.class_names == ["neg", "pos"] and set(data.test[1].tolist()) == {0, 1}
    assert data.train[0].shape == (180, 64) and data.pipeline.max_length == 64
    assert data.pipeline.meta["class_names"] == ["neg", "pos"]
