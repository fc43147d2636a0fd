"""Run by tests/test_distributed.py under torchrun (2 processes, gloo): one recipe run.

argv: RECIPE ROOT; the run goes into ROOT/full. The plots and the HTML report are skipped, here
and in the test's own runs: they cost most of a tiny run's time and are tested elsewhere
(tests/test_report.py, tests/test_browser_report.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from layerwise import experiment
from layerwise.recipe import load_recipe
from layerwise.train import distributed

REPORTING = ("plot_run_curves", "write_doctor_plots", "write_report", "plot_confusion_matrix")


def main() -> None:
    torch.set_num_threads(1)
    for name in REPORTING:
        setattr(experiment, name, lambda *args, **kwargs: None)
    recipe, root = load_recipe(Path(sys.argv[1])), Path(sys.argv[2])
    experiment.train(recipe, root / "full", progress=False, echo=None)
    distributed.teardown()


if __name__ == "__main__":
    main()
