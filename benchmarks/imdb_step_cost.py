"""IMDB text classifiers: CPU seconds per training step, before and after the speed fixes.

A full IMDB run of a recurrent or Transformer classifier costs CPU hours when each step is slow,
so this measures what a step costs, each fix against the path it replaced on the same batches,
the two interleaved step by step so that the load from other processes falls on both alike:

- recurrent models: packed sequences (`pack_padded_sequence`, the classifier's old path) against
  the padded tensor run one direction at a time (`layerwise.models.text._PaddedRecurrence`);
- the Transformer: dropout on the attention weights (0.1, the old recipe's) against none;
- the Transformer in eval mode: PyTorch's inference fast path against the ordinary path.

Time is `time.process_time()` on one thread (CPU seconds: other processes' load disturbs them
far less than wall time) for batches of 64 reviews (500 for eval) in random order, cut to
`max_length` words, with Adam. An epoch is 391 steps of 64; batches of similar lengths
(`BucketBatcher`, which the recipes use) cost less than these random ones.

Usage: python benchmarks/imdb_step_cost.py [--steps 4] [--output FILE]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from _common import REPO, RESULTS_DIR, machine, table, write_json

sys.path.insert(0, str(REPO / "src"))

BILSTM_OLD = {"embed_dim": 128, "hidden": 128}  # the BiLSTM recipe before the fixes
SMALL = {"embed_dim": 64, "hidden": 64}
TRANSFORMER_OLD = {"dim": 128, "heads": 4, "layers": 2, "ff_dim": 256}
TRANSFORMER_SMALL = {"dim": 64, "heads": 2, "layers": 1, "ff_dim": 128}
# (label, model, max_length, options, what "before" is, what "now" is, batch, mode)
CASES = [
    ("BiLSTM 128/128 (old recipe)", "bilstm", 400, BILSTM_OLD, "packed", "padded", 64, "train"),
    ("BiLSTM 64/64", "bilstm", 400, SMALL, "packed", "padded", 64, "train"),
    ("BiGRU 64/64, max pooling", "bigru", 400, {**SMALL, "pooling": "max"}, "packed", "padded",
     64, "train"),
    ("Transformer 2 x 128 (old recipe)", "transformer_classifier", 256, TRANSFORMER_OLD,
     "attention dropout 0.1", "attention dropout 0", 64, "train"),
    ("Transformer 1 x 64, 2 heads", "transformer_classifier", 400, TRANSFORMER_SMALL,
     "attention dropout 0.1", "attention dropout 0", 64, "train"),
    ("Transformer 1 x 64, eval", "transformer_classifier", 400, TRANSFORMER_SMALL,
     "inference fast path", "ordinary path", 500, "eval"),
]  # fmt: skip


def packed_forward(model, tokens):
    """`RecurrentClassifier.forward` as it was: through a packed sequence."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    from layerwise.text import lengths_of, padding_mask, trim

    lengths = lengths_of(tokens)
    tokens = trim(tokens, lengths)
    embedded = model.dropout(model.embedding(tokens))
    steps = lengths.clamp(1, tokens.shape[1])
    packed = pack_padded_sequence(embedded, steps, batch_first=True, enforce_sorted=False)
    run = type(model.rnn).__mro__[2].forward  # nn.LSTM/nn.GRU's own forward, packed input
    states, _ = pad_packed_sequence(run(model.rnn, packed)[0], batch_first=True)
    mask = padding_mask(steps, tokens.shape[1])
    return model.head(model.dropout(model._pool(states, mask, steps)))


def variants(name: str, options: dict, max_length: int, vocab_size: int, before: str) -> tuple:
    """Two forward functions over one model's weights: the old path and the current one."""
    import torch

    from layerwise.models import create_model

    extra = {"max_length": max_length} if "transformer" in name else {}
    model = create_model(name, num_classes=2, vocab_size=vocab_size, **extra, **options)
    if before == "packed":
        return model, (lambda t: packed_forward(model, t)), model

    def set_attention_dropout(p: float) -> None:
        for layer in model.encoder.layers:
            layer.self_attn.dropout = p

    def set_fast_path(on: bool) -> None:
        for layer in model.encoder.layers:
            layer.activation_relu_or_gelu = 2 if on else 0

    def old(t: torch.Tensor) -> torch.Tensor:
        if before.startswith("attention dropout"):
            set_attention_dropout(0.1)
        else:
            set_fast_path(True)
        try:
            return model(t)
        finally:
            set_attention_dropout(0.0)
            set_fast_path(False)

    return model, old, model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="timed steps per path (+1 warm-up)")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "imdb_step_cost.json")
    args = parser.parse_args()

    import torch

    from layerwise.data import load_dataset

    torch.set_num_threads(1)
    data = load_dataset(
        "imdb", tokenizer="word", min_freq=3, max_size=30000, max_length=400, subset=2000
    )
    x, y = data.train
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    results, rows, loads = [], [], [os.getloadavg()[0]]
    for label, name, max_length, options, before, now, batch, mode in CASES:
        torch.manual_seed(0)
        model, old, new = variants(name, options, max_length, data.model_args["vocab_size"], before)
        model.train(mode == "train")
        optimizer = torch.optim.Adam(model.parameters(), 1e-3)
        tokens = x[:, :max_length]
        costs: dict[str, list[float]] = {before: [], now: []}
        for i in range(args.steps + 1):
            rows_i = order[(i * batch) % len(x) :][:batch]
            for path, forward in ((before, old), (now, new)):
                cost = step_cost(forward, tokens[rows_i], y[rows_i], optimizer, mode)
                if i:  # the first step of each path warms up
                    costs[path].append(cost)
        per_step = {path: statistics.median(c) for path, c in costs.items()}
        loads.append(os.getloadavg()[0])
        results.append({"case": label, "model": name, "max_length": max_length, **options,
                        "batch": batch, "mode": mode, "before": before, "now": now,
                        "cpu_s_per_step_before": per_step[before], "cpu_s_per_step_now":
                        per_step[now], "speed_up": per_step[before] / per_step[now],
                        "steps_timed": args.steps, "load_1min": loads[-1]})  # fmt: skip
        speed_up = per_step[before] / per_step[now]
        rows.append([label, f"{before} -> {now}", f"{per_step[before]:.2f}",
                     f"{per_step[now]:.2f}", f"{speed_up:.1f}x"])  # fmt: skip
        print(results[-1], flush=True)
    print(table(["model", "change", "CPU s/step before", "now", "speed-up"], rows))
    write_json(
        args.output,
        {"machine": machine(), "threads": 1, "load_1min_during": [min(loads), max(loads)],
         "results": results},
    )  # fmt: skip


def step_cost(forward: Callable, tokens, labels, optimizer, mode: str) -> float:
    """CPU seconds of one Adam step (train) or one no-grad forward (eval)."""
    import torch

    started = time.process_time()
    if mode == "eval":
        with torch.no_grad():
            forward(tokens)
    else:
        torch.nn.functional.cross_entropy(forward(tokens), labels).backward()
        optimizer.step()
        optimizer.zero_grad()
    return time.process_time() - started


if __name__ == "__main__":
    main()
