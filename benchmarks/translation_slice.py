"""Multi30k en->de on a slice: BLEU after a fixed number of steps, and the CPU it took.

A full translation run takes an hour of two quiet cores; on a shared machine only slices can be
compared. Each candidate (the Transformer recipe with overrides) trains on the first `--pairs`
training pairs for a fixed number of epochs (so a fixed number of optimizer steps) on one
thread; the CPU seconds of training (`time.process_time()`) and the greedy BLEU (sacrebleu,
cased) on the 1,000 sentences of test_2016_flickr are recorded, with the load.

Usage: python benchmarks/translation_slice.py --candidates base cosine_lr1e-3
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

SMALL = [
    "model.args.dim=128", "model.args.heads=4", "model.args.layers=2", "model.args.ff=256",
    "data.args.vocab_size=1000", "train.threads=1",
]  # fmt: skip
CANDIDATES = {
    # the recipe's optimizer and schedule (one-cycle peaking at 5e-4), batch 64
    "base": ["data.batch_size=64"],
    # twice the peak rate, warm-up then cosine decay
    "cosine_lr1e-3": [
        "data.batch_size=64",
        "train.optimizer.lr=0.001",
        "train.schedule.name=cosine",
        "train.schedule.args={warmup_epochs: 0.5, min_lr: 0.00001}",
    ],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", nargs="*", default=list(CANDIDATES))
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "translation_slice.json")
    args = parser.parse_args()
    os.environ["LAYERWISE_THREADS"] = "1"

    import torch

    from layerwise.recipe import load_recipe
    from layerwise.tasks import sequence_task
    from layerwise.tasks.sequence import train_task

    torch.set_num_threads(1)
    results, rows = {}, []
    for name in args.candidates:
        overrides = [*SMALL, *CANDIDATES[name], f"data.args.subset={args.pairs}",
                     f"train.epochs={args.epochs}", "doctor.probes=false"]  # fmt: skip
        recipe = load_recipe(REPO / "recipes" / "multi30k_transformer.yaml", overrides)
        task = sequence_task(recipe)
        task.beam = 1  # greedy: the comparison needs the same search, not the best one
        cpu = time.process_time()
        with tempfile.TemporaryDirectory() as runs:
            run, metrics = train_task(recipe, task, runs, progress=False, echo=None)
            rows_logged = run.read_metrics()
            history = [r for r in rows_logged if r.get("split") == "train"]
            val_losses = [r.get("loss") for r in rows_logged if r.get("split") == "val"]
        total_cpu = time.process_time() - cpu
        results[name] = {
            "overrides": overrides,
            "steps": history[-1]["step"] if history else None,
            "cpu_s_whole_run": total_cpu,
            "bleu_greedy_test": metrics["bleu"],
            "val_loss_by_epoch": val_losses or [r.get("val_loss") for r in history],
            "load_1min_end": os.getloadavg()[0],
        }
        rows.append([name, results[name]["steps"], f"{total_cpu:.0f}", f"{metrics['bleu']:.2f}",
                     f"{(val_losses or [float('nan')])[-1]:.3f}"])  # fmt: skip
        print(results[name], flush=True)
        write_json(args.output, {"machine": machine(), "pairs": args.pairs, "results": results})
    print(table(["candidate", "steps", "CPU s", "BLEU (greedy)", "val loss"], rows))


if __name__ == "__main__":
    main()
