"""Object detection on generated MNIST scenes: mAP of the detection recipe against its target.

Trains `recipes/detect_mnist_scenes.yaml` (optionally with `--set` overrides) through
`layerwise.tasks.detection.train_detector`, the same path as `layerwise train`, into a runs folder
that is kept (so `layerwise predict` can use it afterwards), and records:
- validation mAP@0.5 and mAP@[.5:.95] after every epoch, and the test scores with the best
  weights (1,000 scenes of MNIST test digits);
- wall and CPU time of the whole run (scene generation included), and the load average at the
  start, every 30 s while training, and at the end: the machine is shared, so wall time says
  little without it; CPU time is the process's own.
The predictions grid (`plots/predictions.png` of the run) is copied next to the JSON.

Target (issue 12): mAP@0.5 >= 0.90.

A run stopped before its end (Ctrl-C: its checkpoints are kept) is scored afterwards with
`--score-run RUN`: test mAP with its best weights, the epochs it completed and their wall time
(the CPU time and load of the stopped process are not known then and are left out).

Usage: python benchmarks/detection.py [--set train.epochs=12 ...] [--runs-dir runs]
       python benchmarks/detection.py --score-run runs/detect_mnist_scenes
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import threading
import time
from pathlib import Path

from _common import REPO, RESULTS_DIR, machine, table, write_json

sys.path.insert(0, str(REPO / "src"))

TARGET = {"map_50": 0.90, "what": "issue 12 target for mAP@0.5 on generated MNIST scenes"}
RECIPE = REPO / "recipes" / "detect_mnist_scenes.yaml"


class LoadSampler(threading.Thread):
    """The 1-minute load average every `every` seconds, until stopped."""

    def __init__(self, every: float = 30.0) -> None:
        super().__init__(daemon=True)
        self.every, self.samples, self.done = every, [], threading.Event()

    def run(self) -> None:
        start = time.perf_counter()
        while not self.done.wait(self.every):
            self.samples.append([round(time.perf_counter() - start), os.getloadavg()[0]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--runs-dir", type=Path, default=REPO / "runs")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "detection.json")
    parser.add_argument("--score-run", type=Path, help="score this stopped run; train nothing")
    args = parser.parse_args()

    from layerwise.recipe import load_recipe
    from layerwise.runs import Run
    from layerwise.tasks.detection import evaluate_detector_run, train_detector

    sampler = LoadSampler()
    start_load, wall, cpu = os.getloadavg(), time.perf_counter(), time.process_time()
    if args.score_run is not None:
        run = Run.open(args.score_run)
        test = evaluate_detector_run(run)
        wall, cpu = None, None
    else:
        sampler.start()
        recipe = load_recipe(RECIPE, args.overrides)
        run, test = train_detector(recipe, args.runs_dir, progress=True)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        sampler.done.set()
    records = run.read_metrics()
    val = {r["epoch"]: r for r in records if r.get("split") == "val"}
    epochs = [
        {
            "epoch": r["epoch"],
            "step": r["step"],
            "loss": r["loss"],
            "seconds": r["time"],
            "val_map_50": val[r["epoch"]]["map_50"],
            "val_map": val[r["epoch"]]["map"],
        }
        for r in records
        if r.get("split") == "train" and r["epoch"] in val
    ]
    grid = args.output.with_name("detection_predictions.png")
    shutil.copyfile(run.plots_dir / "predictions.png", grid)
    planned = run.recipe().train.epochs
    if wall is None:  # a stopped run: the wall time of its epochs (scene generation left out)
        wall = sum(e["seconds"] for e in epochs)
    result = {
        "recipe": "recipes/detect_mnist_scenes.yaml",
        "overrides": args.overrides,
        "run": str(run.path),
        "run_status": run.info().get("status"),
        "epochs_planned": planned,
        "target": TARGET,
        "test": test,
        "meets_target": test.get("map_50", 0.0) >= TARGET["map_50"],
        "epochs": epochs,
        "wall_seconds": round(wall, 1),
        "cpu_seconds": None if cpu is None else round(cpu, 1),
        "load_average_start": list(start_load),
        "load_average_end": list(os.getloadavg()),
        "load_average_samples": sampler.samples,
        "predictions_png": grid.name,
        "machine": machine(),
    }
    rows = [
        [e["epoch"], e["step"], f"{e['loss']:.3f}", f"{e['val_map_50']:.3f}", f"{e['val_map']:.3f}"]
        for e in epochs
    ]
    print(table(["epoch", "step", "train loss", "val mAP@0.5", "val mAP@[.5:.95]"], rows))
    print(
        f"test mAP@0.5 {test.get('map_50', float('nan')):.4f}  "
        f"mAP@[.5:.95] {test.get('map', float('nan')):.4f}  (target >= {TARGET['map_50']})  "
        f"{len(epochs)} of {planned} epochs, wall {wall:.0f} s, "
        f"CPU {'?' if cpu is None else f'{cpu:.0f}'} s, "
        f"load {start_load[0]:.1f} -> {os.getloadavg()[0]:.1f}"
    )
    write_json(args.output, result)


if __name__ == "__main__":
    main()
