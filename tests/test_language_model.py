"""Language models: shapes, causality, sampling, and learning a tiny repeated string."""

from __future__ import annotations

import pytest
import torch

from layerwise.data.shakespeare import language_model_bundle, text_windows
from layerwise.errors import DataError, LayerwiseError
from layerwise.models import create_model
from layerwise.models.language import generate
from layerwise.tasks.language_model import Generator, LanguageModelTask
from layerwise.tasks.sequence import SequenceTrainer

SMALL = {
    "lstm_lm": {"embed": 16, "hidden": 32, "layers": 1, "dropout": 0.0},
    "gpt_lm": {"dim": 32, "heads": 2, "layers": 2, "dropout": 0.0},
}


@pytest.mark.parametrize("name", list(SMALL))
def test_logits_per_position_and_no_peeking_ahead(name: str) -> None:
    model = create_model(name, vocab_size=9, context=16, **SMALL[name]).eval()
    tokens = torch.randint(0, 9, (2, 10))
    changed = tokens.clone()
    changed[:, 6:] = (changed[:, 6:] + 1) % 9
    with torch.no_grad():
        a, b = model(tokens), model(changed)
    assert a.shape == (2, 10, 9)
    assert torch.allclose(a[:, :6], b[:, :6], atol=1e-5)
    assert not torch.allclose(a[:, 6:], b[:, 6:])


def test_top_k_of_one_is_deterministic_and_greedy() -> None:
    model = create_model("gpt_lm", vocab_size=9, context=8, **SMALL["gpt_lm"])
    prompt = torch.tensor([1, 2, 3])
    runs = [
        generate(
            model, prompt, 12, temperature=1.5, top_k=1, generator=torch.Generator().manual_seed(s)
        )
        for s in (0, 1)
    ]
    assert torch.equal(runs[0], runs[1])
    assert torch.equal(runs[0], generate(model, prompt, 12, temperature=0))
    assert len(runs[0]) == 15 and torch.equal(runs[0][:3], prompt)  # longer than the context
    sampled = [
        generate(model, prompt, 30, top_k=5, generator=torch.Generator().manual_seed(s))
        for s in (0, 0, 1)
    ]
    assert torch.equal(sampled[0], sampled[1]) and not torch.equal(sampled[0], sampled[2])


def test_bad_sampling_arguments_are_errors() -> None:
    model = create_model("lstm_lm", vocab_size=5, **SMALL["lstm_lm"])
    with pytest.raises(LayerwiseError, match="top_k"):
        generate(model, torch.tensor([1]), 3, top_k=0)
    with pytest.raises(LayerwiseError, match="empty"):
        generate(model, torch.tensor([], dtype=torch.long), 3)


def test_windows_shift_by_one_and_validation_comes_after_training() -> None:
    x, y = text_windows(torch.arange(20), block_size=4, stride=3)
    assert torch.equal(x[1], torch.tensor([3, 4, 5, 6])) and torch.equal(y[1], x[1] + 1)
    bundle = language_model_bundle("t", "abcdefghij" * 27 + "xyz" * 10, block_size=8)
    assert "x" not in bundle.pipeline.vocab  # fitted on the first 90% only
    assert bundle.num_classes == len(bundle.pipeline.vocab)


@pytest.mark.parametrize("name", list(SMALL))
def test_a_language_model_learns_a_repeated_string(name: str) -> None:
    torch.manual_seed(0)
    bundle = language_model_bundle("t", "hello world. " * 60, block_size=16, stride=4)
    task = LanguageModelTask()
    model = create_model(name, **task.model_args(bundle), **SMALL[name])
    trainer = SequenceTrainer(model, lr=1e-2, doctor=False)
    history = trainer.fit(
        task.batcher(bundle, "train", 16, 0), task.batcher(bundle, "val", 64, 0), epochs=6
    )
    assert history[-1]["val_loss"] < 0.25
    text = Generator(model, bundle.pipeline).generate("hello", 13, temperature=0)
    assert text == "hello world. hello"


def test_a_prompt_with_unseen_characters_is_refused_by_name() -> None:
    bundle = language_model_bundle("t", "abc abc abc " * 20, block_size=8)
    model = create_model("lstm_lm", **LanguageModelTask().model_args(bundle), **SMALL["lstm_lm"])
    with pytest.raises(DataError, match="'z'"):
        Generator(model, bundle.pipeline).generate("abz", 5)


def test_the_closing_sample_starts_from_a_character_the_text_has() -> None:
    """A text without the recipe's prompt characters and without a line break still gets its
    sample: it starts from the most frequent character rather than failing after training."""
    bundle = language_model_bundle("t", "abbb abba " * 30, block_size=8)
    vocab, task = bundle.pipeline.vocab, LanguageModelTask()
    assert "\n" not in vocab and task.prompt == "ROMEO:"
    assert task.starting_prompt(vocab) == "b"
    with_lines = language_model_bundle("t", "abbb\nabba\n" * 30, block_size=8).pipeline.vocab
    assert task.starting_prompt(with_lines) == "\n"
    task.prompt = "ab"
    assert task.starting_prompt(vocab) == "ab"
    model = create_model("lstm_lm", **task.model_args(bundle), **SMALL["lstm_lm"])
    sample = Generator(model, bundle.pipeline).generate(task.starting_prompt(vocab), 5, seed=0)
    assert sample.startswith("ab") and set(sample) <= set("ab ")  # untrained: no `<unk>`
