"""Application tasks: the batch structure, step and finishing of one kind of problem each.

Token-sequence tasks train through `layerwise.tasks.sequence.train_task` instead of the generic
experiment, because their step (teacher forcing, next-token loss over padded sequences) and their
score (BLEU, perplexity) differ: `sequence_task(recipe)` names the task a recipe's dataset
belongs to, or None for everything the generic experiment trains (forecasting included: its
windows are an ordinary regression). Modules are imported on first use, so importing this package
costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from layerwise.recipe import Recipe

TRANSLATION_DATASETS = frozenset({"multi30k"})
LANGUAGE_MODEL_DATASETS = frozenset({"tinyshakespeare"})
GAN_MODELS = frozenset({"dcgan", "cgan"})
RL_MODELS = frozenset({"dqn", "ppo"})


def sequence_task(recipe: Recipe) -> Any:
    """The task object that trains `recipe` (translation or language model), or None."""
    if recipe.data.name in TRANSLATION_DATASETS:
        from layerwise.tasks.translation import TranslationTask

        return TranslationTask()
    if recipe.data.name in LANGUAGE_MODEL_DATASETS:
        from layerwise.tasks.language_model import LanguageModelTask

        return LanguageModelTask()
    return None


def gan_task(recipe: Recipe) -> bool:
    """Does `recipe` train a GAN (trained by `layerwise.tasks.gan.train_gan`)?"""
    return recipe.model.name.lower() in GAN_MODELS


def rl_task(recipe: Recipe) -> bool:
    """Does `recipe` train an RL agent (trained by `layerwise.tasks.rl.train_rl`)?"""
    return recipe.model.name.lower() in RL_MODELS


__all__ = [
    "GAN_MODELS",
    "LANGUAGE_MODEL_DATASETS",
    "RL_MODELS",
    "TRANSLATION_DATASETS",
    "gan_task",
    "rl_task",
    "sequence_task",
]
