"""RL agents against the rl-baselines3-zoo figures: environment steps and wall time until the
greedy policy's mean return over 100 evaluation episodes reaches the game's threshold.

    .venv/bin/python benchmarks/rl.py [--jobs cartpole_ppo cartpole_dqn acrobot_dqn]
                                      [--seeds 0 1 2] [--epochs N] [--merge]

Each job trains its recipe (recipes/rl_<job>.yaml) through `layerwise.experiment.train`, as
`layerwise train` does (doctor, checkpoints and report included), with `eval_episodes: 100`, so
the evaluation after every epoch is the target's own measure: the greedy policy's mean return
over 100 episodes (fixed seeds no training episode uses). Training stops at the first epoch
whose evaluation reaches the threshold (CartPole-v1: 475; Acrobot-v1: -100), or after its
epochs; that epoch's environment steps and the wall time since the fit started (evaluations
included) are the figures. The run's test (100 greedy episodes of the same weights from other
seeds, which chose nothing) is recorded too.

Anchor: rl-baselines3-zoo's benchmark.md (trained agents, deterministic policy): on CartPole-v1
DQN 500.0 ± 0.0 after 50k steps, PPO 500.0 ± 0.0 after 100k steps, A2C 500.0 ± 0.0 after 500k;
on Acrobot-v1 DQN -76.6 ± 11.8 after 100k, PPO -73.5 ± 18.2 after 1M. The zoo reports the
final return after a fixed budget, not the steps to a threshold, and no wall time.

The machine is shared: the load average is recorded with every run.
Results: benchmarks/results/rl.json (rewritten after every run).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
RESULTS = ROOT / "benchmarks" / "results" / "rl.json"

from layerwise.experiment import train  # noqa: E402
from layerwise.recipe import load_recipe  # noqa: E402
from layerwise.train import Callback  # noqa: E402

JOBS = {
    "cartpole_ppo": ("rl_cartpole_ppo", 475.0),
    "cartpole_dqn": ("rl_cartpole_dqn", 475.0),
    "acrobot_dqn": ("rl_acrobot_dqn", -100.0),
}
ZOO = {
    "cartpole_ppo": "PPO 500.0 ± 0.0 after 100k steps",
    "cartpole_dqn": "DQN 500.0 ± 0.0 after 50k steps",
    "acrobot_dqn": "DQN -76.6 ± 11.8 after 100k steps (PPO -73.5 ± 18.2 after 1M)",
}


class UntilSolved(Callback):
    """Record every epoch's evaluation with the wall time since the fit started; stop at the
    first that reaches `threshold`. Runs after `RLMonitor` (order -7), which logs it."""

    order = -6

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.start = time.perf_counter()
        self.curve: list[dict[str, float]] = []
        self.solved: dict[str, float] | None = None

    def on_fit_start(self, trainer) -> None:
        self.start = time.perf_counter()

    def on_epoch_end(self, trainer) -> None:
        logs = trainer.logs
        point = {
            "epoch": logs["epoch"],
            "env_steps": logs["env_steps"],
            "eval_return": logs["eval_return"],
            "eval_return_std": logs["eval_return_std"],
            "wall_s": time.perf_counter() - self.start,
            "load": os.getloadavg()[0],
        }
        self.curve.append(point)
        if self.solved is None and logs["eval_return"] >= self.threshold:
            self.solved = point
            trainer.stop(f"eval_return reached {self.threshold}", source="benchmark")


def run_job(job: str, seed: int, epochs: int | None, root: Path) -> dict:
    recipe_name, threshold = JOBS[job]
    overrides = [f"seed={seed}", "data.args.eval_episodes=100", f"name={job}_{seed}"]
    if epochs is not None:
        overrides.append(f"train.epochs={epochs}")
    recipe = load_recipe(ROOT / "recipes" / f"{recipe_name}.yaml", overrides)
    watcher = UntilSolved(threshold)
    load_before = os.getloadavg()
    started = time.perf_counter()
    _, test = train(recipe, root, progress=False, echo=None, callbacks=[watcher])
    row = {
        "job": job,
        "seed": seed,
        "recipe": f"recipes/{recipe_name}.yaml",
        "threshold": threshold,
        "solved": watcher.solved is not None,
        "env_steps_to_threshold": watcher.solved["env_steps"] if watcher.solved else None,
        "wall_s_to_threshold": round(watcher.solved["wall_s"], 1) if watcher.solved else None,
        "epochs_run": len(watcher.curve),
        "env_steps_run": watcher.curve[-1]["env_steps"] if watcher.curve else 0,
        "best_eval_return": max((p["eval_return"] for p in watcher.curve), default=None),
        "test_return": test.get("return"),
        "test_return_std": test.get("return_std"),
        "total_wall_s": round(time.perf_counter() - started, 1),
        "curve": watcher.curve,
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "cpu_count": os.cpu_count(),
    }
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", nargs="+", default=list(JOBS), choices=list(JOBS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    parser.add_argument("--merge", action="store_true", help="keep other rows of rl.json")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    rows = []
    if args.merge and args.out.exists():
        rows = json.loads(args.out.read_text())["runs"]
    with tempfile.TemporaryDirectory() as tmp:
        for job in args.jobs:
            for seed in args.seeds:
                row = run_job(job, seed, args.epochs, Path(tmp))
                rows = [r for r in rows if (r["job"], r["seed"]) != (job, seed)] + [row]
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(
                    json.dumps(
                        {
                            "note": "shared 2-core machine; load averages per run",
                            "anchor": "rl-baselines3-zoo benchmark.md",
                            "zoo": ZOO,
                            "runs": rows,
                        },
                        indent=1,
                    )
                )
                steps = row["env_steps_to_threshold"]
                print(
                    f"{job:14s} seed {seed}: "
                    + (
                        f"reached {row['threshold']:g} at {steps:,} steps, "
                        f"{row['wall_s_to_threshold']} s"
                        if row["solved"]
                        else f"not reached in {row['env_steps_run']:,} steps "
                        f"(best {row['best_eval_return']:.1f})"
                    )
                    + f"; test {row['test_return']:.1f} ± {row['test_return_std']:.1f}; "
                    f"load {row['load_before'][0]}-{row['load_after'][0]}; zoo {ZOO[job]}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
