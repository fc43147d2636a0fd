"""Training token-sequence tasks (translation, language models) into a run folder.

`SequenceTrainer` is the step: next-token cross-entropy over `(N, T, vocab)` logits with padding
ignored, for the two batch structures of these tasks:

- translation: `{"src": (N, S), "src_lengths": (N,), "tgt": (N, T)}` where `tgt` is
  `<bos> w1 … wn <eos>` padded; the model reads `tgt[:, :-1]` and is scored on `tgt[:, 1:]`
  (teacher forcing);
- language model: `(tokens, next_tokens)`, both `(N, T)`.

`train_task` is the short story of such a run: load the data (which fits the text pipelines on
the training texts), create the model with the sizes the pipelines give, make the run folder and
save the pipelines in it, fit with metrics log and checkpoints, then let the task score the test
split (BLEU, perplexity) and draw what it draws (attention heat map, samples).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch.nn.functional as F
from torch import Tensor, nn

from layerwise.data import DatasetBundle, load_dataset
from layerwise.diagnose.findings import Diagnosis
from layerwise.errors import CheckpointError
from layerwise.models import create_model
from layerwise.recipe import Recipe
from layerwise.report import plot_run_curves, write_report
from layerwise.runs import Run
from layerwise.tasks.common import (
    checkpoint_to_load,
    close_run,
    log_and_checkpoint,
    restore_last,
    task_doctor,
    trainer_settings,
)
from layerwise.train import Trainer, seed_everything
from layerwise.train.callbacks.stop_on_signal import guarded_fit

Echo = Callable[[str], None] | None


def sequence_loss(logits: Tensor, target: Tensor, pad: int = 0, smoothing: float = 0.0) -> Tensor:
    """Mean cross-entropy per real (non-padding) target token."""
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        target.reshape(-1),
        ignore_index=pad,
        label_smoothing=smoothing,
    )


class SequenceTrainer(Trainer):
    """A Trainer whose steps score next-token predictions, ignoring padding (id `pad`).

    Logs `loss` (nats per token; its exponential is the perplexity) and `token_accuracy`.
    """

    def __init__(self, *args: Any, pad: int = 0, label_smoothing: float = 0.0, **kwargs: Any):
        kwargs.setdefault("loss", None)
        kwargs.setdefault("metrics", ())
        super().__init__(*args, **kwargs)
        self.params.update(pad=pad, label_smoothing=label_smoothing)
        self.pad, self.label_smoothing = pad, label_smoothing

    def unpack(self, batch: Any) -> tuple[Any, Tensor]:
        if isinstance(batch, dict) and "tgt" in batch:  # translation, teacher forcing
            # Drop the columns that are padding in every row (lengths read on the CPU: free).
            src = batch["src"][:, : max(int(batch["src_lengths"].max()), 1)]
            tgt = batch["tgt"][:, : max(int((batch["tgt"] != self.pad).sum(1).max()), 2)]
            return {"src": src, "src_lengths": batch["src_lengths"], "tgt": tgt[:, :-1]}, tgt[:, 1:]
        return super().unpack(batch)

    def _logs(self, batch: Any, training: bool) -> dict[str, Tensor]:
        inputs, target = self.unpack(batch)
        with self.autocast:
            logits = self.forward(inputs)
            loss = sequence_loss(logits, target, self.pad, self.label_smoothing if training else 0)
        if training:
            self.backward(loss)
            self.optimizer_step()
        real = target != self.pad
        correct = ((logits.detach().argmax(-1) == target) & real).sum()
        return {"loss": loss.detach() if training else loss, "token_accuracy": correct / real.sum()}

    def train_step(self, batch: Any) -> dict[str, Tensor]:
        return self._logs(batch, training=True)

    def eval_step(self, batch: Any) -> dict[str, Tensor]:
        return self._logs(batch, training=False)

    def predict_step(self, batch: Any) -> Tensor:
        inputs, _ = self.unpack(batch)
        return self.forward(inputs)

    def _forward_macs(self) -> float:
        """The work of one batch's forward, which the Trainer skips for a custom step: without
        it every sequence run would train on one thread even on an idle multi-core machine."""
        return self._batch_forward_macs()


class SequenceTask(Protocol):
    """What `train_task` needs from a task module (`tasks/translation.py`, …)."""

    def model_args(self, data: DatasetBundle) -> dict[str, Any]: ...
    def batcher(
        self, data: DatasetBundle, split: str, batch_size: int, seed: int, device: Any
    ) -> Any: ...
    def save_data(self, run: Run, data: DatasetBundle) -> None: ...
    def restore_data(self, run: Run, data: DatasetBundle) -> DatasetBundle: ...
    def finish(self, run: Run, trainer: SequenceTrainer, data: DatasetBundle, recipe: Recipe,
               echo: Echo) -> dict[str, float]: ...  # fmt: skip
    def report_sections(self, run: Run) -> list[tuple[str, str]]: ...


def build_trainer(
    recipe: Recipe, model: nn.Module, callbacks: Sequence[Any] = ()
) -> SequenceTrainer:
    """A `SequenceTrainer` configured by `recipe.train` (its loss and metrics are fixed), with
    `callbacks` (the doctor only if among them: `train_task` adds `data_doctor`'s)."""
    return SequenceTrainer(
        model,
        **trainer_settings(recipe, callbacks),  # train_task adds its own bar when asked
        precision=recipe.train.precision,
        doctor=False,
        label_smoothing=recipe.train.loss.label_smoothing,
    )


def build_model(recipe: Recipe, task: SequenceTask, data: DatasetBundle) -> nn.Module:
    """The recipe's model with the vocabulary sizes (and pad id) the data's pipelines give."""
    return create_model(recipe.model.name, **{**task.model_args(data), **recipe.model.args})


def train_task(
    recipe: Recipe | None,
    task: SequenceTask,
    runs_root: str | Path = "runs",
    *,
    resume: str | Path | None = None,
    progress: bool = True,
    echo: Echo = print,
    callbacks: Sequence[Any] = (),
) -> tuple[Run, dict[str, float]]:
    """Train a sequence-task recipe into a new run folder, or `resume` a stopped run from its
    last checkpoint; returns the run and its test metrics.

    A resumed run continues bit for bit: the data is read again by the saved recipe and encoded
    by the pipelines saved in the run (`task.restore_data`); the weights, optimizer, schedule,
    random state and the position in the epoch come from the checkpoint; the batch order is a
    pure function of seed and epoch. `recipe` may then be None (the saved one is used); a
    recipe that differs from the saved one is refused. `callbacks` are added to the metrics log
    and checkpoints (e.g. a time budget).
    """
    run: Run | None = None
    if resume is not None:
        run, recipe = Run.reopen(resume, runs_root, recipe)
        if run.info().get("status") == "finished":
            return run, run.info().get("test_metrics") or {}
    seed_everything(recipe.seed)
    data = load_dataset(recipe.data.name, **recipe.data.args)
    model = build_model(recipe, task, data)
    if run is None:
        run = Run.create(runs_root, recipe.name, recipe.to_yaml())
        task.save_data(run, data)
    else:  # the saved pipelines, so ids mean the tokens the weights were trained on
        data = task.restore_data(run, data)
    everything = log_and_checkpoint(run, recipe, recipe.train.monitor, progress)
    doctor = data_doctor(recipe, data, model, run, echo)
    trainer = build_trainer(recipe, model, [*everything, *doctor, *callbacks])
    restore_last(run, model, trainer, resume=resume is not None)
    with guarded_fit(run, trainer):
        size, device = recipe.data.batch_size, trainer.device
        trainer.fit(
            task.batcher(data, "train", size, recipe.seed, device),
            task.batcher(data, "val", recipe.data.eval_batch_size or 256, recipe.seed, device)
            if data.val is not None
            else None,
            epochs=recipe.train.epochs,
        )
    if run.has_checkpoint("best"):
        load_run_weights(run, model, "best")
    metrics = task.finish(run, trainer, data, recipe, echo)
    run.append_metrics({"epoch": trainer.state.epoch, "split": "test", **metrics})
    finish_report(run, trainer, metrics, task.report_sections(run))
    return run, metrics


def data_doctor(
    recipe: Recipe, data: DatasetBundle, model: nn.Module, run: Run, echo: Echo
) -> list[Any]:
    """The doctor of a sequence run, having checked the data once first (as `layerwise train`
    does for other recipes, when `doctor.data_checks` is on): the data profile holds the token
    figures of the bundle (unknown-token rate, vocabulary coverage, lengths, truncation of each
    side and split), which the doctor's data rules read; it is saved as `data_profile.json`.
    Label noise is not estimated (next tokens are no labels a quick model could doubt). The
    callbacks are `task_doctor`'s, which run no second check at fit start; empty when the recipe
    turns the doctor off (`doctor.probes: false`)."""
    if not recipe.doctor.probes:
        return []
    from layerwise.diagnose.doctor import write_data_profile

    profile = None
    if recipe.doctor.data_checks:
        diagnosis = check_sequence_data(recipe, data, model)
        profile = diagnosis.data_profile
        write_data_profile(run, profile)
        for finding in diagnosis.findings if echo is not None else []:
            echo(f"doctor: {finding.headline()}")
    return task_doctor(
        recipe, run, data.task, echo, data_profile=profile, num_classes=data.num_classes
    )


def check_sequence_data(recipe: Recipe, data: DatasetBundle, model: nn.Module) -> Diagnosis:
    """The data checks of a sequence run (`layerwise train` and `layerwise doctor --data-only`):
    the token figures and the generic checks, without label noise (next tokens are no labels a
    quick model could doubt)."""
    from layerwise.diagnose.doctor import check_data

    return check_data(
        data,
        num_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        recipe=recipe.model_dump(mode="json"),
        seed=recipe.seed,
        label_noise=False,
    )


def sequence_data_only(recipe: Recipe, task: SequenceTask) -> Diagnosis:
    """`layerwise doctor RECIPE --data-only` on a sequence recipe: its data, encoded by its task's
    pipelines, checked as `layerwise train` checks it."""
    seed_everything(recipe.seed)
    data = load_dataset(recipe.data.name, **recipe.data.args)
    return check_sequence_data(recipe, data, build_model(recipe, task, data))


def finish_report(
    run: Run, trainer: SequenceTrainer, metrics: dict[str, float], sections: list[tuple[str, str]]
) -> None:
    """Diagnosis, status, learning curves and `report.html`, as every other run has them."""
    diagnosis = close_run(run, trainer, metrics)
    plot_run_curves(run)
    count = sum(p.numel() for p in trainer.model.parameters())
    summary = f"{trainer.model}\n\n{count:,} parameters"
    write_report(run, summary_text=summary, diagnosis=diagnosis, extra_sections=sections)


def load_run_weights(run: Run, model: nn.Module, which: str = "best") -> None:
    """Load the run's `best` (else `last`) weights into `model`."""
    weights, _ = run.load_checkpoint(checkpoint_to_load(run, which))
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise CheckpointError(
            f"the checkpoint of run '{run.name}' does not fit its model: "
            + str(exc).strip().splitlines()[0],
            hint="the recipe's model changed since the run was trained",
        ) from exc
