"""What the task stories (GAN, RL, recommender, sequence) do alike around their run folder.

Each task trains through its own Trainer and finishes with its own scores and plots, but some
steps around that are one procedure, kept here once so a fix to it reaches every task: a resumed
run picks up its last checkpoint, or a new one starts its metrics log over (`restore_last`).
"""

from __future__ import annotations

from torch import nn

from layerwise.runs import Run
from layerwise.train import Trainer


def restore_last(run: Run, model: nn.Module, trainer: Trainer, resume: bool) -> None:
    """When resuming, load the run's last checkpoint into `model` and `trainer` and drop the
    metrics logged after it; otherwise (a new run, or one killed before its first checkpoint)
    start the metrics log over."""
    if resume and run.has_checkpoint("last"):
        weights, state = run.load_checkpoint("last", quarantine=True)
        model.load_state_dict(weights)
        trainer.load_state_dict(state)
        run.truncate_metrics_after(state["train_state"]["step"])
    else:
        run.truncate_metrics_after(-1)
