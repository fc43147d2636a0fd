"""Tiny Shakespeare recipe candidates judged by CPU cost, not wall time (the machine is shared).

For each candidate (a language-model recipe plus overrides) this trains through the real
`layerwise.tasks.sequence.train_task` with a fixed thread count and records:

- the CPU seconds of every optimizer step (`time.process_time()`, which counts this process's
  threads only, so other engineers' load changes it far less than wall time);
- the validation loss (nats per character, the whole held-out 10%) after fixed numbers of
  training tokens (evaluation time is kept out of the step costs).

A candidate's expected time on two quiet cores is `tokens needed / (tokens per CPU second /
threads)`: with its threads busy all the time, CPU seconds / threads is the wall time. Those
figures, not the wall clock of a loaded machine, choose the recipe; the 180 s budget itself is
measured by `benchmarks/language_model.py`.

Usage:
    python benchmarks/language_model_candidates.py --candidates gpt_b12 lstm_b32 --threads 2
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, RESULTS_DIR, machine, table, write_json

sys.path.insert(0, str(REPO / "src"))

GPT = "shakespeare_char_gpt.yaml"
LSTM = "shakespeare_char.yaml"

TRAIN_CHARS = 1_003_854  # the first 90% of Tiny Shakespeare


def run_of(tokens: int, block: int, batch: int, lr: float, schedule: str = "cosine") -> list[str]:
    """Overrides for one epoch of about `tokens` training tokens (windows every `stride`
    characters, overlapping when needed, as nanoGPT's random offsets do), the schedule spanning
    exactly that epoch: warm-up over its first 5%, cosine decay to 1e-4 (nanoGPT's shape)."""
    stride = max(1, round(TRAIN_CHARS * block / tokens))
    out = [f"data.args.block_size={block}", f"data.args.stride={stride}", "train.epochs=1",
           f"data.batch_size={batch}", f"train.optimizer.lr={lr}"]  # fmt: skip
    if schedule == "cosine":
        out += ["train.schedule.name=cosine",
                "train.schedule.args={warmup_epochs: 0.05, min_lr: 0.0001}"]  # fmt: skip
    return out


# name -> (recipe, overrides)
CANDIDATES: dict[str, tuple[str, list[str]]] = {
    # the recipes' batch 64 with a constant rate, as measured this morning
    "gpt_b64_const": (GPT, run_of(1_500_000, 64, 64, 1e-3, "constant")),
    "lstm_b64_const": (LSTM, run_of(1_500_000, 128, 64, 3e-3, "constant")),
    # nanoGPT's baby GPT: batch 12, warm-up then cosine 1e-3 -> 1e-4, 1.5 M tokens
    "gpt_b12": (GPT, run_of(1_500_000, 64, 12, 1e-3)),
    "gpt_b16": (GPT, run_of(1_500_000, 64, 16, 1e-3)),
    "gpt_b32": (GPT, run_of(1_500_000, 64, 32, 2e-3)),
    "lstm_b16": (LSTM, run_of(1_500_000, 128, 16, 3e-3)),
    "lstm_b32": (LSTM, run_of(1_500_000, 128, 32, 3e-3)),
    "lstm_b32_t64": (LSTM, run_of(1_500_000, 64, 32, 3e-3)),
    "lstm_b32_2m": (LSTM, run_of(2_000_000, 128, 32, 3e-3)),
    "lstm_b32_lr5": (LSTM, run_of(1_500_000, 128, 32, 5e-3)),
    "lstm_b64": (LSTM, run_of(1_500_000, 128, 64, 4e-3)),
}


def probe_callback():
    from layerwise.train import Callback

    class Probe(Callback):
        """CPU seconds per step; validation loss at token milestones and at the end."""

        order = 1000

        def __init__(self, milestones: list[int], val, name: str) -> None:
            self.milestones, self.val, self.name = sorted(milestones), val, name
            self.tokens = 0
            self.step_cpu: list[float] = []
            self.points: list[dict[str, float]] = []
            self.train_cpu = 0.0
            self.train_wall = 0.0
            self._cpu = self._wall = None

        def on_epoch_start(self, trainer) -> None:
            self._cpu, self._wall = time.process_time(), time.perf_counter()

        def on_batch_end(self, trainer) -> None:
            cpu, wall = time.process_time(), time.perf_counter()
            self.step_cpu.append(cpu - self._cpu)
            self.train_cpu += cpu - self._cpu
            self.train_wall += wall - self._wall
            x, _ = trainer.last_batch_shape
            self.tokens += x
            if self.milestones and self.tokens >= self.milestones[0]:
                self.milestones.pop(0)
                logs = trainer.evaluate(self.val)
                point = {
                    "tokens": self.tokens,
                    "step": trainer.state.step,
                    "val_loss": logs["loss"],
                    "train_cpu_s": self.train_cpu,
                    "train_wall_s": self.train_wall,
                    "load_1min": os.getloadavg()[0],
                }
                self.points.append(point)
                print(f"  {self.name}: {point}", flush=True)
            self._cpu, self._wall = time.process_time(), time.perf_counter()

        def on_fit_end(self, trainer) -> None:
            """The weights at the end of the run (the schedule's end), whatever the milestones."""
            if self.points and self.points[-1]["step"] == trainer.state.step:
                return
            logs = trainer.evaluate(self.val)
            point = {
                "tokens": self.tokens,
                "step": trainer.state.step,
                "val_loss": logs["loss"],
                "train_cpu_s": self.train_cpu,
                "train_wall_s": self.train_wall,
                "load_1min": os.getloadavg()[0],
                "end": True,
            }
            self.points.append(point)
            print(f"  {self.name}: {point}", flush=True)

    return Probe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", nargs="*", default=["gpt_b12", "lstm_b32"])
    parser.add_argument("--extra", nargs="*", default=[], help="more overrides for every one")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--milestones",
        default="250000,500000,1000000",
        help="tokens, comma-separated (and the end)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "lm_candidates.json")
    args = parser.parse_args()
    os.environ["LAYERWISE_THREADS"] = str(args.threads)

    import torch

    from layerwise.recipe import load_recipe
    from layerwise.tasks import sequence_task
    from layerwise.tasks.sequence import SequenceTrainer, train_task

    torch.set_num_threads(args.threads)
    # Count tokens per batch without touching the step: remember the last batch's size.
    original = SequenceTrainer.train_step

    def counting_step(self, batch):
        x = batch[0] if isinstance(batch, tuple | list) else batch["tgt"]
        self.last_batch_shape = (x.numel(), x.shape[0])
        return original(self, batch)

    SequenceTrainer.train_step = counting_step
    Probe = probe_callback()
    milestones = [int(m) for m in args.milestones.split(",")]
    previous = {}
    if args.output.is_file():
        import json

        previous = json.loads(args.output.read_text()).get("results", {})
    results, rows = dict(previous), []
    for name in args.candidates:
        recipe_file, overrides = resolve(name)
        recipe = load_recipe(REPO / "recipes" / recipe_file, overrides + args.extra)
        task = sequence_task(recipe)
        from layerwise.data import load_dataset

        data = load_dataset(recipe.data.name, **recipe.data.args)
        val = task.batcher(data, "val", 256, recipe.seed, "cpu")
        probe = Probe(milestones, val, name)
        with tempfile.TemporaryDirectory() as runs:
            train_task(recipe, task, runs, progress=False, echo=None, callbacks=[probe])
        steps = probe.step_cpu[5:] or probe.step_cpu  # the first steps warm caches up
        per_step = sum(steps) / len(steps)
        batch_tokens = recipe.data.batch_size * int(recipe.data.args.get("block_size", 128))
        tokens_per_cpu_s = batch_tokens / per_step
        results[name] = {
            "recipe": recipe_file,
            "overrides": overrides + args.extra,
            "threads": args.threads,
            "cpu_s_per_step": per_step,
            "tokens_per_step": batch_tokens,
            "tokens_per_cpu_s": tokens_per_cpu_s,
            "expected_quiet_tokens_per_s": tokens_per_cpu_s * args.threads,
            "points": probe.points,
        }
        rows.append(row(name, results[name]))
        write_json(args.output, payload(results, args))
    headers = ["candidate", "CPU ms/step", "tok/CPU s", "run CPU s", "val loss after tokens"]
    print(table(headers, rows))


def resolve(name: str) -> tuple[str, list[str]]:
    """A named candidate, or `gpt:lr=..:b=..` style ad-hoc ones given as recipe|override;..."""
    if name in CANDIDATES:
        return CANDIDATES[name]
    recipe, _, rest = name.partition("|")
    return {"gpt": GPT, "lstm": LSTM}.get(recipe, recipe), [o for o in rest.split(";") if o]


def row(name: str, result: dict) -> list[str]:
    end = result["points"][-1]
    vals = ", ".join(f"{p['tokens'] / 1e6:.2f}M {p['val_loss']:.3f}" for p in result["points"])
    return [name, f"{result['cpu_s_per_step'] * 1000:.1f}", f"{result['tokens_per_cpu_s']:.0f}",
            f"{end['tokens'] / result['tokens_per_cpu_s']:.0f}", vals]  # fmt: skip


def payload(results: dict, args) -> dict:
    return {
        "machine": machine(),
        "method": "CPU seconds per optimizer step by time.process_time() with fixed threads; "
        "validation loss on the whole held-out 10% after fixed training-token counts",
        "load_average_end": list(os.getloadavg()),
        "results": results,
    }


if __name__ == "__main__":
    main()
