"""Which task trains a recipe: the one lookup `layerwise train` makes, for new and resumed runs.

Most recipes train through the generic experiment (`layerwise.experiment`). A few kinds of
problem have their own batch structure, step and scores, and train through their task's own
function instead. `TASKS` lists those kinds in the order they are asked (the first that claims a
recipe trains it, so a new kind of task is one entry here); `task_trainer(recipe)` returns the
claiming task's train function, or None for the generic experiment. Every such function is
called alike and returns the run and its test metrics:

    train(recipe, runs_root, *, resume=None, progress=True, callbacks=())

where `recipe` may be None when `resume` names the run (its saved recipe is used). A task's
module, and torch with it, is imported only when the lookup reaches it.

Each kind also states whether it trains correctly data-parallel (`distributed`; no default, so a
new kind must say). `layerwise train --nproc N` refuses a recipe whose kind says no before any
process starts, and under torchrun before any run folder is made (`layerwise.experiment`). None
does today: each task's train function makes its run folder, checkpoints and test scores in
every process (only the generic experiment leaves them to rank 0), and some losses are not the
same over a rank's part of a batch as over the whole batch (detection normalises by the batch's
positive locations, the embedding task mines its triplets within the batch).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from layerwise.tasks import gan_task, rl_task, sequence_task

if TYPE_CHECKING:
    from layerwise.recipe import Recipe
    from layerwise.runs import Run

TaskTrain = Callable[..., "tuple[Run, dict[str, float]]"]


@dataclass(frozen=True)
class TaskKind:
    """A kind of problem trained by its own function: `claims(recipe)` says whether a recipe is
    one, `trainer(recipe)` gives the function that trains it, and `distributed` whether that
    function trains correctly in several processes (`--nproc`, torchrun); when not, such recipes
    are refused there."""

    name: str
    claims: Callable[[Recipe], bool]
    trainer: Callable[[Recipe], TaskTrain]
    distributed: bool


def _is_sequence(recipe: Recipe) -> bool:
    return sequence_task(recipe) is not None


def _sequence_trainer(recipe: Recipe) -> TaskTrain:
    from layerwise.tasks.sequence import train_task

    task = sequence_task(recipe)

    def train(recipe: Recipe | None, runs_root: str | Path = "runs", **options: Any) -> Any:
        return train_task(recipe, task, runs_root, **options)

    return train


def _is_detection(recipe: Recipe) -> bool:
    from layerwise.tasks.detection import detection_task

    return detection_task(recipe)


def _detection_trainer(recipe: Recipe) -> TaskTrain:
    from layerwise.tasks.detection import train_detector

    return train_detector


def _is_recommender(recipe: Recipe) -> bool:
    from layerwise.tasks.recommend import recommender_task

    return recommender_task(recipe)


def _recommender_trainer(recipe: Recipe) -> TaskTrain:
    from layerwise.tasks.recommend import train_recommender

    return train_recommender


def _is_embedding(recipe: Recipe) -> bool:
    from layerwise.tasks.faces import embedding_task

    return embedding_task(recipe)


def _embedding_trainer(recipe: Recipe) -> TaskTrain:
    from layerwise.tasks.faces import train_embedding

    return train_embedding


def _gan_trainer(recipe: Recipe) -> TaskTrain:
    from layerwise.tasks.gan import train_gan

    return train_gan


def _rl_trainer(recipe: Recipe) -> TaskTrain:
    from layerwise.tasks.rl import train_rl

    return train_rl


TASKS: tuple[TaskKind, ...] = (
    TaskKind("translation or language model", _is_sequence, _sequence_trainer, distributed=False),
    TaskKind("detection", _is_detection, _detection_trainer, distributed=False),
    TaskKind("recommender", _is_recommender, _recommender_trainer, distributed=False),
    TaskKind("embedding (faces, speakers)", _is_embedding, _embedding_trainer, distributed=False),
    TaskKind("GAN", gan_task, _gan_trainer, distributed=False),
    TaskKind("RL agent", rl_task, _rl_trainer, distributed=False),
)


def task_kind(recipe: Recipe) -> TaskKind | None:
    """The first kind in `TASKS` that claims `recipe`, or None for the generic experiment."""
    return next((kind for kind in TASKS if kind.claims(recipe)), None)


def task_trainer(recipe: Recipe) -> TaskTrain | None:
    """The function that trains `recipe` (see the module docstring), or None when the generic
    experiment (`layerwise.experiment.train`/`resume`) does."""
    kind = task_kind(recipe)
    return kind.trainer(recipe) if kind is not None else None
