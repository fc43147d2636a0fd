"""IMDB text classifiers: CPU seconds per training step, to plan full runs on a shared machine.

A full IMDB run of a recurrent or Transformer classifier takes hours of CPU on this machine, so
before one is started this measures what each step costs: `time.process_time()` on one thread
(load from other processes changes it far less than wall time) for batches of 64 reviews in
random order, cut to `max_length` words, with Adam. An epoch is 391 such steps (25,000 reviews);
batches of similar lengths (`BucketBatcher`, which the recipes use) cost less.

Usage: python benchmarks/imdb_step_cost.py [--output FILE]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from _common import REPO, RESULTS_DIR, machine, table, write_json

sys.path.insert(0, str(REPO / "src"))

CONFIGS = [
    ("bilstm", 400, {"embed_dim": 128, "hidden": 128}),  # recipes/imdb_bilstm.yaml
    ("transformer_classifier", 256, {"dim": 128, "heads": 4, "layers": 2, "ff_dim": 256}),
    ("bigru", 256, {"embed_dim": 64, "hidden": 64}),
    ("bilstm", 256, {"embed_dim": 64, "hidden": 64}),
    ("transformer_classifier", 256, {"dim": 64, "heads": 4, "layers": 2, "ff_dim": 128}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="timed steps (first dropped)")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "imdb_step_cost.json")
    args = parser.parse_args()

    import torch

    from layerwise.data import load_dataset
    from layerwise.models import create_model

    torch.set_num_threads(1)
    data = load_dataset(
        "imdb", tokenizer="word", min_freq=3, max_size=30000, max_length=400, subset=2000
    )
    x, y = data.train
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    results, rows = [], []
    for name, max_length, options in CONFIGS:
        torch.manual_seed(0)
        extra = {"max_length": max_length} if "transformer" in name else {}
        model = create_model(
            name, num_classes=2, vocab_size=data.model_args["vocab_size"], **extra, **options
        )
        optimizer = torch.optim.Adam(model.parameters(), 1e-3)
        tokens = x[:, :max_length]
        costs = []
        for i in range(args.steps):
            rows_i = order[i * 64 : (i + 1) * 64]
            started = time.process_time()
            loss = torch.nn.functional.cross_entropy(model(tokens[rows_i]), y[rows_i])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            costs.append(time.process_time() - started)
        per_step = sum(costs[1:]) / len(costs[1:])
        result = {"model": name, "max_length": max_length, **options,
                  "cpu_s_per_step_b64": per_step, "cpu_s_per_epoch_estimate": per_step * 391,
                  "load_1min": os.getloadavg()[0]}  # fmt: skip
        results.append(result)
        rows.append([name, max_length, options, f"{per_step:.2f}", f"{per_step * 391 / 60:.0f}"])
        print(result, flush=True)
    print(table(["model", "max_length", "options", "CPU s/step", "CPU min/epoch"], rows))
    write_json(args.output, {"machine": machine(), "threads": 1, "results": results})


if __name__ == "__main__":
    main()
