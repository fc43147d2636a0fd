"""Face (and speaker) recognition by metric learning: train an embedding, judge it on identities
never seen in training, enrol people and identify new inputs.

Training (`train_embedding`, what `layerwise train` runs for an `embedding_cnn` recipe): the
data is an identity dataset (`orl_people`, `fsdd_speakers`, see `layerwise.data.faces`), drawn
in P x K batches (`PKBatcher`: P = `data.batch_size` / K identities, K =
`data.args.images_per_person` inputs each), and `MetricTrainer` minimises the batch-hard triplet
loss (`train.loss: {name: batch_hard_triplet, args: {margin: 0.2}}`). Validation people, when
the split has them, give `val_eer`, the usual monitor. Progress, checkpoints, resume, the doctor
and the report are the ones every run has.

At the end the run is scored on its test identities (`layerwise.train.metric_learning`): ROC
AUC and EER over all their pairs, and one-shot identification top-1. The accept threshold of
`identify` is the distance at the EER on the validation identities (on the training ones when
there are none, which is optimistic, and `embedding.json` says which).

`enroll(run, folder, name)` stores the mean embedding of a person's inputs in the run folder's
`gallery.json`; `identify(run, file)` names the nearest enrolled person and the distance, or
"unknown" above the threshold.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from layerwise.data import load_dataset
from layerwise.data.audio import AUDIO_SUFFIXES, AudioFeatures
from layerwise.data.faces import IMAGE_SUFFIXES, IdentityBundle, PKBatcher, read_face
from layerwise.errors import DataError, RecipeError, RunError
from layerwise.models import create_model
from layerwise.recipe import Recipe
from layerwise.runs import Run
from layerwise.runs.atomic import atomic_write_json
from layerwise.tasks.common import log_and_checkpoint, restore_last, task_doctor, trainer_settings
from layerwise.tasks.sequence import finish_report, load_run_weights
from layerwise.train import Trainer, seed_everything
from layerwise.train.callbacks.stop_on_signal import guarded_fit
from layerwise.train.metric_learning import (
    EqualErrorRate,
    batch_hard_triplet_loss,
    embedding_scores,
    verification_scores,
)

EMBEDDING_MODELS = frozenset({"embedding_cnn"})
METRIC_LOSSES = frozenset({"batch_hard_triplet"})
SETTINGS_FILE = "embedding.json"
GALLERY_FILE = "gallery.json"
Echo = Callable[[str], None] | None


def embedding_task(recipe: Recipe) -> bool:
    """Does `recipe` train an embedding by metric learning (`train_embedding`)?"""
    return recipe.model.name.lower() in EMBEDDING_MODELS


class MetricTrainer(Trainer):
    """A Trainer for `(inputs, identity)` batches whose model returns embeddings: the step
    minimises the batch-hard triplet loss; evaluation logs that loss and the EER.

    Args:
        margin: the triplet margin (embeddings have unit length, distances lie in [0, 2]).
    """

    def __init__(self, *args: Any, margin: float = 0.2, **kwargs: Any) -> None:
        kwargs.setdefault("loss", None)
        kwargs.setdefault("metrics", (EqualErrorRate(),))
        super().__init__(*args, **kwargs)
        self.params.update(margin=margin)
        self.margin = margin

    def train_step(self, batch: Any) -> dict[str, Tensor]:
        inputs, identities = self.unpack(batch)
        with self.autocast:
            embeddings = self.forward(inputs)
            loss, active = batch_hard_triplet_loss(embeddings.float(), identities, self.margin)
        self.backward(loss)
        self.optimizer_step()
        return {"loss": loss.detach(), "active_triplets": active}

    def eval_step(self, batch: Any) -> dict[str, Tensor]:
        inputs, identities = self.unpack(batch)
        embeddings = self.forward(inputs).float()
        self.update_metrics(embeddings, identities)
        return {"loss": batch_hard_triplet_loss(embeddings, identities, self.margin)[0]}

    def predict_step(self, batch: Any) -> Tensor:
        inputs, _ = self.unpack(batch)
        return self.forward(inputs).float()


# ----------------------------------------------------------------------------------- training
def load_identities(recipe: Recipe) -> IdentityBundle:
    """The recipe's identity data, or a `RecipeError` naming a dataset that is not one."""
    data = load_dataset(recipe.data.name, **recipe.data.args)
    if not isinstance(data, IdentityBundle):
        raise RecipeError(
            f"data.name '{recipe.data.name}' is not split by identity",
            hint="an embedding_cnn trains on orl_people or fsdd_speakers",
        )
    return data


def build_model(recipe: Recipe, data: IdentityBundle) -> nn.Module:
    args = {"in_channels": data.input_shape[0], **recipe.model.args}
    return create_model(recipe.model.name, **args)


def build_trainer(recipe: Recipe, model: nn.Module, callbacks: Sequence[Any] = ()) -> MetricTrainer:
    """A `MetricTrainer` configured by `recipe.train` (`train.loss.args.margin`), with
    `callbacks` (the doctor only if among them: `train_embedding` adds `task_doctor`'s)."""
    spec = recipe.train
    if spec.loss.name not in METRIC_LOSSES:
        raise RecipeError(
            f"train.loss.name is '{spec.loss.name}'; an embedding model trains with a metric loss",
            hint=f"use one of: {', '.join(sorted(METRIC_LOSSES))}",
        )
    return MetricTrainer(
        model,
        **trainer_settings(recipe, callbacks),
        doctor=False,
        margin=float(spec.loss.args.get("margin", 0.2)),
    )


def train_embedding(
    recipe: Recipe | None,
    runs_root: str | Path = "runs",
    *,
    resume: str | Path | None = None,
    progress: bool = True,
    echo: Echo = print,
    callbacks: Sequence[Any] = (),
) -> tuple[Run, dict[str, float]]:
    """Train an embedding recipe into a new run folder, or `resume` a stopped run from its last
    checkpoint (bit for bit: the P x K draw is a pure function of seed and epoch); returns the
    run and its scores on the test identities.

    The data gets none of the doctor's data checks: they judge labels as classes to predict,
    and an identity is none (the validation and test people have no training rows by design,
    which the classifier checks call class imbalance). What matters here, that no person is in
    two splits and that there are two or more to draw triplets from, is made so by the loaders
    (they split by person) and `PKBatcher`. The doctor watches training (`task_doctor`, task
    `embedding`)."""
    run: Run | None = None
    if resume is not None:
        run, recipe = Run.reopen(resume, runs_root, recipe)
        if run.info().get("status") == "finished":
            return run, run.info().get("test_metrics") or {}
    seed_everything(recipe.seed)
    data = load_identities(recipe)
    model = build_model(recipe, data)
    if run is None:
        run = Run.create(runs_root, recipe.name, recipe.to_yaml())
    monitor = recipe.train.monitor if data.val is not None else "loss"
    everything = log_and_checkpoint(run, recipe, monitor, progress)
    doctor = task_doctor(recipe, run, "embedding", echo)
    trainer = build_trainer(recipe, model, [*everything, *doctor, *callbacks])
    restore_last(run, model, trainer, resume is not None)
    per_person = data.images_per_person
    batches = PKBatcher(
        *data.train,
        people=max(2, recipe.data.batch_size // per_person),
        per_person=per_person,
        seed=recipe.seed,
        device=trainer.device,
    )
    with guarded_fit(run, trainer):
        trainer.fit(
            batches,
            data.val,
            epochs=recipe.train.epochs,
            eval_batch_size=recipe.data.eval_batch_size or 512,
        )
    load_run_weights(run, model, "best")
    metrics = score_run(run, trainer, data)
    run.append_metrics({"epoch": trainer.state.epoch, "split": "test", **metrics})
    finish_report(run, trainer, metrics, [])
    return run, metrics


def embed(model: nn.Module, x: Tensor, batch: int = 512) -> Tensor:
    """Embeddings of `x` in eval mode, on the model's device, returned on the CPU."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return torch.cat([model(part.to(device)).float().cpu() for part in x.split(batch)])
    finally:
        model.train(was_training)


def score_run(run: Run, trainer: MetricTrainer, data: IdentityBundle) -> dict[str, float]:
    """Scores on the test identities; writes the run's `embedding.json` (modality, input shape,
    accept threshold and where it came from) and, for speakers, its audio features."""
    source, split = ("val", data.val) if data.val is not None else ("train", data.train)
    chosen = verification_scores(embed(trainer.model, split[0]), split[1])
    metrics: dict[str, float] = {}
    if data.test is not None:
        metrics = embedding_scores(embed(trainer.model, data.test[0]), data.test[1])
        metrics["test_identities"] = float(len(data.test[1].unique()))
    metrics.update({f"{source}_eer": chosen["eer"], "accept_threshold": chosen["threshold"]})
    settings = {
        "modality": data.modality,
        "input_shape": list(data.input_shape),
        "threshold": chosen["threshold"],
        "threshold_from": f"EER point on the {source} identities",
        "people": data.people,
    }
    atomic_write_json(run.path / SETTINGS_FILE, settings)
    if data.pipeline is not None:
        data.pipeline.save(run.path)
    return metrics


# ---------------------------------------------------------------------- enroll and identify
@dataclass
class Embedder:
    """A trained embedding run, ready to embed files: its `embedding.json` settings, and its
    model once `load_model` has read the weights (input checks need no weights)."""

    run: Run
    settings: dict[str, Any]
    model: nn.Module | None = None
    features: AudioFeatures | None = None

    @property
    def suffixes(self) -> set[str]:
        return AUDIO_SUFFIXES if self.settings["modality"] == "audio" else IMAGE_SUFFIXES

    def check_file(self, path: Path) -> Path:
        """`path` if this model reads that kind of file, else a `DataError` naming it."""
        if path.suffix.lower() not in self.suffixes:
            raise DataError(
                f"cannot read '{path}': this model takes {', '.join(sorted(self.suffixes))} "
                f"files, not '{path.suffix or '(no suffix)'}'",
                hint="give a photo of a face (a clip of a voice for a speaker model)",
            )
        return path

    def read(self, paths: Sequence[Path]) -> Tensor:
        """Files -> model inputs made exactly as the training inputs were."""
        if self.settings["modality"] == "audio":
            if self.features is None:
                self.features = AudioFeatures.load(self.run.path)
            return self.features.read_files([self.check_file(p) for p in paths])[0]
        size = tuple(self.settings["input_shape"][1:])
        return torch.stack([read_face(self.check_file(p), size) for p in paths])

    def load_model(self) -> nn.Module:
        if self.model is None:
            recipe = self.run.recipe()
            args = {"in_channels": self.settings["input_shape"][0], **recipe.model.args}
            self.model = create_model(recipe.model.name, **args)
            load_run_weights(self.run, self.model, "best")
        return self.model

    def embed(self, inputs: Tensor) -> Tensor:
        return embed(self.load_model(), inputs)


def load_embedder(run: Run) -> Embedder:
    """The run's settings (the model is read when first needed); a run that is not an
    embedding run is a `RunError`."""
    path = run.path / SETTINGS_FILE
    recipe = run.recipe()
    if not embedding_task(recipe) or not path.is_file():
        raise RunError(
            f"run '{run.name}' is not a face or speaker embedding model "
            f"(model '{recipe.model.name}', no {SETTINGS_FILE})",
            hint="enroll and identify work on a finished run of an embedding_cnn recipe, "
            "e.g. layerwise train recipes/faces_orl_triplet.yaml",
        )
    return Embedder(run, json.loads(path.read_text(encoding="utf-8")))


def input_files(folder: str | Path, suffixes: set[str]) -> list[Path]:
    """The files in `folder` with one of `suffixes` (sorted); none is a `DataError`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(
            f"'{folder}' is not a folder", hint="enroll takes a folder of one person's inputs"
        )
    found = sorted(p for p in folder.iterdir() if p.suffix.lower() in suffixes)
    if not found:
        raise DataError(
            f"folder '{folder}' holds no inputs to enrol",
            hint=f"put the person's files there ({', '.join(sorted(suffixes))})",
        )
    return found


def read_gallery(run: Run) -> dict[str, dict[str, Any]]:
    path = run.path / GALLERY_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def enroll(run: Run, folder: str | Path, name: str | None = None) -> tuple[str, int]:
    """Store the mean embedding of the inputs in `folder` as person `name` (default: the
    folder's name) in the run's gallery, replacing an earlier entry of that name; returns the
    name and the number of inputs."""
    embedder = load_embedder(run)
    files = input_files(folder, embedder.suffixes)
    embeddings = embedder.embed(embedder.read(files))
    mean = nn.functional.normalize(embeddings.mean(dim=0), dim=0)
    name = name or Path(folder).resolve().name
    gallery = read_gallery(run)
    gallery[name] = {"embedding": mean.tolist(), "inputs": len(files)}
    atomic_write_json(run.path / GALLERY_FILE, gallery)
    return name, len(files)


@dataclass
class Match:
    """The nearest enrolled person; `known` is False when the distance is above the threshold."""

    name: str
    distance: float
    threshold: float
    known: bool

    def line(self) -> str:
        if self.known:
            return f"{self.name} (distance {self.distance:.3f} <= threshold {self.threshold:.3f})"
        return (
            f"unknown (nearest: {self.name} at distance {self.distance:.3f} > threshold "
            f"{self.threshold:.3f})"
        )


def identify(run: Run, file: str | Path, threshold: float | None = None) -> Match:
    """The enrolled person nearest to `file`'s embedding (see `Match`)."""
    embedder = load_embedder(run)
    inputs = embedder.read([Path(file)])
    gallery = read_gallery(run)
    if not gallery:
        raise DataError(
            f"run '{run.name}' has nobody enrolled",
            hint=f"layerwise enroll {run.name} person_dir --name NAME",
        )
    query = embedder.embed(inputs)[0]
    names = list(gallery)
    entries = torch.tensor([gallery[n]["embedding"] for n in names])
    distances = (entries - query).norm(dim=1)
    best = int(distances.argmin())
    limit = embedder.settings["threshold"] if threshold is None else threshold
    distance = float(distances[best])
    return Match(names[best], distance, float(limit), distance <= limit)
