"""What the doctor costs on the detection recipe's FCOS: probes on against off, interleaved.

The detection recipe used to turn the doctor off because, with it, a 2-step run's first epoch
took 81 s. This measures where that went, on the recipe's own model (`detect_mnist_scenes.yaml`:
widths 16-24-48-64, FPN 32, batch 32) and an epoch as long as the recipe's (250 batches: 320
generated scenes repeated 25 times, so no 8,000 scenes need generating), on one thread:

- `off`: the DetectionTrainer without the doctor;
- `on`: the doctor a detection run attaches now (`tasks.detection.doctor_watch`: probes at the
  interval the recipe's epoch picks, `auto_every(250)` = every 28 steps, and the Doctor's rules
  at epoch ends; no probes.jsonl is written, an epoch-end cost of a few ms);
- `every-1`: probes on every step, which prices one sample (`every-1 - off`, per round).

Rounds: each contender trains 28 more steps per round (a callback ends `fit`, the next round
carries on), so every `on` round holds exactly one regular sample, and 9 rounds are one epoch
of 250 steps, with its one histogram sample. The starter rotates. Times are the process's CPU
seconds (one thread; the machine is shared, so wall time says little) and wall seconds, with the
load average. The ratio `on / off` is taken of the summed CPU time over all rounds (the
histogram step included: that is what an epoch pays) and of the per-round medians.

With `--data-checks`, it also times what the old attachment ran before the first step:
`Trainer(doctor=True)` added the doctor's data checks on the fit data (`Doctor(check_data=True)`),
which on the recipe's 8,000 training scenes profile 16,384-pixel rows for near copies and
label noise (minutes of CPU and several GB) and report the 0-255 pixels as unscaled inputs.

Run: .venv/bin/python benchmarks/detection_probes.py [--rounds 9] [--data-checks] [--quick]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, RESULTS_DIR, machine, table, write_json
from layerwise.data import make_batcher
from layerwise.diagnose.doctor import Doctor
from layerwise.diagnose.probes import Probes, auto_every
from layerwise.recipe import load_recipe
from layerwise.tasks.detection import build_detector, build_trainer, doctor_watch, load_scenes
from layerwise.train import Callback, Trainer

RECIPE = REPO / "recipes" / "detect_mnist_scenes.yaml"
SCENES, REPEAT, BATCH = 320, 25, 32  # 8,000 rows: the recipe's 250 batches per epoch
CONTENDERS = ("off", "on", "every-1")


class StopAfter(Callback):
    """Ends `fit` after `steps` optimizer steps; the next `fit` continues the same run."""

    order = 50

    def __init__(self, steps: int) -> None:
        self.steps, self.end = steps, 0

    def on_fit_start(self, trainer: Trainer) -> None:
        self.end = trainer.state.step + self.steps

    def on_batch_end(self, trainer: Trainer) -> None:
        if trainer.state.step >= self.end:
            trainer.stop_training = True


class FakeRun:
    """Where `doctor_watch` would put probes.jsonl: nothing is written (`path` is dropped)."""

    path = Path(os.devnull).parent


def contender(name: str, recipe: Any, data: Any, init: dict, steps: int) -> tuple[Any, Trainer]:
    model = build_detector(recipe, data)
    model.load_state_dict(init)
    if name == "on":
        doctor = doctor_watch(recipe, FakeRun(), echo=None)
        doctor[0].path = None  # in memory, as the other contenders
    elif name == "every-1":
        doctor = [Probes(every=1)]
    else:
        doctor = []
    trainer = build_trainer(recipe, model, [*doctor, StopAfter(steps)])
    images, rows = data.train
    batcher = make_batcher(
        (images.repeat(REPEAT, 1, 1, 1), rows.repeat(REPEAT, 1, 1)), batch_size=BATCH, seed=0
    )

    def run() -> None:
        trainer.fit(batcher, epochs=10**9)

    return run, trainer


def time_data_checks(recipe: Any) -> dict[str, Any]:
    """CPU and wall time of the fit-start data checks `Trainer(doctor=True)` ran on the
    recipe's full training set, and what they said."""
    full = load_scenes(recipe)
    trainer = build_trainer(recipe, build_detector(recipe, full))
    trainer.train_data = trainer._batcher(full.train, BATCH, shuffle=True)
    trainer.val_data = trainer._batcher(full.val, 100, shuffle=False)
    said: list[str] = []
    import layerwise.diagnose.data_checks  # noqa: F401  (imports outside the timing)

    cpu, wall, load = time.process_time(), time.perf_counter(), os.getloadavg()
    Doctor(check_data=True, echo=said.append)._check_fit_data(trainer)
    return {
        "rows": len(full.train[0]),
        "cpu_s": time.process_time() - cpu,
        "wall_s": time.perf_counter() - wall,
        "load_before": list(load),
        "load_after": list(os.getloadavg()),
        "findings": said,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9, help="rounds of 28 steps (9: an epoch)")
    parser.add_argument("--data-checks", action="store_true", help="also time the old checks")
    parser.add_argument("--quick", action="store_true", help="2 rounds, no JSON")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "detection_probes.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    recipe = load_recipe(RECIPE, overrides=["train.threads=1"])
    small = load_recipe(
        RECIPE,
        overrides=[
            "train.threads=1",
            "doctor.probes=true",
            f"data.args.train_size={SCENES}",
            "data.args.val_size=4",
            "data.args.test_size=4",
        ],
    )
    data = load_scenes(small)
    every = auto_every(SCENES * REPEAT // BATCH)
    torch.manual_seed(0)
    init = build_detector(small, data).state_dict()
    built = {name: contender(name, small, data, init, every) for name in CONTENDERS}
    for run, _ in built.values():  # warm-up: the dense early samples, caches, lazy set-up
        run()
    probes = next(c for c in built["on"][1].callbacks if isinstance(c, Probes))
    assert probes.every_ == every, f"probes every {probes.every_}, not the recipe's {every}"

    rounds_wanted = 2 if args.quick else args.rounds
    rounds = []
    for i in range(rounds_wanted):
        shift = i % len(CONTENDERS)
        cpu, wall = {}, {}
        load = os.getloadavg()[0]
        for name in CONTENDERS[shift:] + CONTENDERS[:shift]:
            gc.collect()
            c, w = time.process_time(), time.perf_counter()
            built[name][0]()
            cpu[name] = (time.process_time() - c) / every * 1e3
            wall[name] = (time.perf_counter() - w) / every * 1e3
        rounds.append({"cpu_ms_per_step": cpu, "wall_ms_per_step": wall, "load1": load})
        print(f"round {i + 1}: " + ", ".join(f"{k} {v:.0f} ms" for k, v in cpu.items()))

    def series(name: str, key: str = "cpu_ms_per_step") -> list[float]:
        return [r[key][name] for r in rounds]

    mean = {name: statistics.fmean(series(name)) for name in CONTENDERS}
    med = {name: statistics.median(series(name)) for name in CONTENDERS}
    # every-1 samples each step: its extra CPU per step is the cost of one sample
    sample_ms = statistics.median(
        a - b for a, b in zip(series("every-1"), series("off"), strict=True)
    )
    result = {
        "what": "doctor on vs off on the detection recipe's FCOS, CPU ms per step, one thread",
        "machine": machine(),
        "model": dict(small.model.args),
        "batch_size": BATCH,
        "batches_per_epoch": SCENES * REPEAT // BATCH,
        "every": every,
        "rounds": rounds,
        "cpu_ms_per_step_mean": mean,
        "cpu_ms_per_step_median": med,
        "on_over_off_cpu_of_sums": mean["on"] / mean["off"],
        "on_over_off_cpu_of_medians": med["on"] / med["off"],
        "on_over_off_wall_of_medians": statistics.median(series("on", "wall_ms_per_step"))
        / statistics.median(series("off", "wall_ms_per_step")),
        "cpu_ms_per_sample": sample_ms,
        "samples_in_on": len(probes.log.steps),
        "histograms_in_on": len(probes.log.hists),
        "load_average_at_end": list(os.getloadavg()),
    }
    if args.data_checks:
        result["old_fit_start_data_checks"] = time_data_checks(recipe)
    print(
        table(
            ["contender", "CPU ms/step (mean)", "median", "on / off"],
            [
                [n, f"{mean[n]:.1f}", f"{med[n]:.1f}", f"{mean[n] / mean['off']:.3f}"]
                for n in CONTENDERS
            ],
        )
    )
    print(f"one sample: {sample_ms:.1f} CPU ms; every {every} steps")
    if args.data_checks:
        checks = result["old_fit_start_data_checks"]
        print(f"old fit-start data checks: {checks['cpu_s']:.1f} CPU s on {checks['rows']} rows")
    if not args.quick:
        write_json(args.output, result)


if __name__ == "__main__":
    main()
