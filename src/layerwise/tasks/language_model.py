"""Language models: train on text windows, report validation perplexity, generate text.

The step is `SequenceTrainer`'s on `(tokens, next tokens)` batches. At the end the validation
loss (nats per token) and its perplexity are the run's test metrics, and a sample continuing
"ROMEO:" is kept as `sample.txt`. `load_generator(run)` gives back the model and pipeline, which
`layerwise generate` and `layerwise chat` use.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from layerwise.data import DatasetBundle
from layerwise.data.batcher import InMemoryBatcher
from layerwise.errors import CheckpointError, DataError
from layerwise.models.language import generate
from layerwise.recipe import Recipe
from layerwise.runs import Run
from layerwise.tasks.sequence import Echo, SequenceTrainer, load_run_weights
from layerwise.text import PIPELINE_FILE, TextPipeline, Vocab


@dataclass
class Generator:
    """A trained language model with its pipeline: a prompt in, a continuation out."""

    model: nn.Module
    pipeline: TextPipeline

    def encode_prompt(self, prompt: str) -> torch.Tensor:
        """Ids of `prompt`; characters the model never saw are refused, naming them."""
        if not prompt:
            raise DataError("the prompt is empty", hint='give some text, e.g. --prompt "ROMEO:"')
        tokens = self.pipeline.tokenizer.tokenize([prompt])[0]
        unknown = sorted({t for t in tokens if t not in self.pipeline.vocab})
        if unknown:
            raise DataError(
                f"the prompt has {len(unknown)} token(s) never seen in training: "
                + ", ".join(repr(t) for t in unknown[:10]),
                hint="leave them out or replace them (the model can only continue text made of "
                "what it was trained on)",
            )
        return torch.tensor(self.pipeline.vocab.encode(tokens), dtype=torch.long)

    def generate(
        self,
        prompt: str,
        length: int = 200,
        temperature: float = 0.8,
        top_k: int | None = None,
        seed: int | None = None,
    ) -> str:
        """`prompt` followed by `length` sampled tokens, as text: never a special token
        (`<pad>`, `<unk>`…), which would print as markup in the middle of the text."""
        ids = self.encode_prompt(prompt)
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        vocab = self.pipeline.vocab
        out = generate(
            self.model,
            ids,
            length,
            temperature=temperature,
            top_k=top_k,
            generator=generator,
            banned=[vocab.stoi[token] for token in vocab.specials],
        )
        return prompt + self.pipeline.tokenizer.join(self.pipeline.vocab.decode(out[len(ids) :]))


class LanguageModelTask:
    """Hooks of `layerwise.tasks.sequence.train_task` for language-model datasets."""

    prompt = "ROMEO:"

    def model_args(self, data: DatasetBundle) -> dict[str, Any]:
        return {"vocab_size": data.pipeline.vocab_size, "context": int(data.input_shape[0])}

    def batcher(
        self, data: DatasetBundle, split: str, batch_size: int, seed: int, device: Any = "cpu"
    ) -> InMemoryBatcher:
        x, y = getattr(data, split)
        return InMemoryBatcher(
            x, y, batch_size=batch_size, shuffle=split == "train", seed=seed, device=device
        )

    def save_data(self, run: Run, data: DatasetBundle) -> None:
        data.pipeline.save(run.path)

    def restore_data(self, run: Run, data: DatasetBundle) -> DatasetBundle:
        """`data` as it is, once its vocabulary is checked against the one saved in `run` (a
        character vocabulary is rebuilt identically from the same text; other text is refused)."""
        saved = TextPipeline.load(run.path / PIPELINE_FILE)
        if saved.vocab.itos != data.pipeline.vocab.itos:
            raise CheckpointError(
                f"run '{run.name}': the vocabulary built from the data differs from the one "
                f"saved in {PIPELINE_FILE}",
                hint="the text changed since the run started; start a new run",
            )
        return data

    def finish(
        self, run: Run, trainer: SequenceTrainer, data: DatasetBundle, recipe: Recipe, echo: Echo
    ) -> dict[str, float]:
        logs = trainer.evaluate(self.batcher(data, "val", 256, recipe.seed, trainer.device))
        metrics = {"val_loss": logs["loss"], "perplexity": math.exp(logs["loss"])}
        metrics["token_accuracy"] = logs.get("token_accuracy", float("nan"))
        prompt = self.starting_prompt(data.pipeline.vocab)
        sample = Generator(trainer.model, data.pipeline).generate(prompt, 300, seed=recipe.seed)
        (run.path / "sample.txt").write_text(sample + "\n", encoding="utf-8")
        self.sample = sample
        if echo is not None:
            echo(f"validation loss {metrics['val_loss']:.3f} nats, perplexity "
                 f"{metrics['perplexity']:.2f}\n--- sample ---\n{sample}")  # fmt: skip
        return metrics

    def starting_prompt(self, vocab: Vocab) -> str:
        """The recipe's prompt when the text has all its characters, else a line break, else the
        most frequent character: the closing sample must start from something the model saw."""
        if all(c in vocab for c in self.prompt):
            return self.prompt
        if "\n" in vocab:
            return "\n"
        return vocab.itos[len(vocab.specials)]

    def report_sections(self, run: Run) -> list[tuple[str, str]]:
        """The sample the finished model wrote (temperature 0.8, seeded), for `report.html`."""
        sample = getattr(self, "sample", None)
        if sample is None:
            return []
        note = f"<p>300 characters after {html.escape(repr(self.prompt))}, temperature 0.8.</p>"
        return [("Sample", f"{note}<pre>{html.escape(sample)}</pre>")]


def load_generator(run: Run, which: str = "best") -> Generator:
    """The model and pipeline of a language-model run, ready to generate."""
    from layerwise.models import create_model

    pipeline = TextPipeline.load(run.path / PIPELINE_FILE)
    recipe = run.recipe()
    block = int(pipeline.meta.get("block_size", 128))
    args = {"vocab_size": pipeline.vocab_size, "context": block}
    model = create_model(recipe.model.name, **{**args, **recipe.model.args})
    load_run_weights(run, model, which)
    model.eval()
    return Generator(model, pipeline)
