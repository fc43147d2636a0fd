"""Case (b) of benchmarks/transfer.py: IMDB with 1,000 labelled reviews, MiniLM against scratch.

Three contenders learn from the same 1,000 training reviews (500 per class, drawn by the seed):
- `scratch fastText`: layerwise's fastText bigram model (recipes/imdb_fasttext.yaml's model) on a
  word pipeline fitted on those 1,000 reviews;
- `MiniLM features + head`: all-MiniLM-L6-v2 frozen, its sentence embeddings computed once
  through `FeatureExtractor` (cached on disk, keyed by weights and token ids: the test set's are
  computed once per max length and read back for every seed), a linear head trained on them;
- `MiniLM fine-tuned`: the whole encoder trained (AdamW, the head at 1e-3, the encoder at 5e-5
  for its top layer and 0.8x per group going down), texts cut to `--finetune-length` tokens.

All are scored on the same test reviews: the full official 25,000 by default (`--test-size`),
or a balanced subset drawn by a fixed seed (1234) when the machine cannot encode 25k in time;
the fine-tuned models on `--finetune-test-size` of them (their embeddings change with every
seed, so nothing can be cached). The JSON says which.
"""

from __future__ import annotations

import gzip
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from layerwise.data import data_root
from layerwise.data.text import text_bundle
from layerwise.models import create_model
from layerwise.train import Trainer, seed_everything
from layerwise.transfer import FeatureExtractor, discriminative_optimizer, freeze
from layerwise.transfer.minilm import MiniLMClassifier, encode_texts

TEST_SEED = 1234
FASTTEXT = {"dim": 16, "ngrams": 2, "buckets": 262144}


def load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def read_imdb(split: str) -> tuple[list[str], torch.Tensor]:
    texts, labels = [], []
    with gzip.open(data_root() / "imdb" / f"imdb_{split}.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            texts.append(row["text"])
            labels.append(int(row["label"]))
    return texts, torch.tensor(labels)


def balanced(labels: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    """`size` row numbers, half of each class, drawn by `seed` (all rows when size >= len)."""
    if size >= len(labels):
        return torch.arange(len(labels))
    generator = torch.Generator().manual_seed(seed)
    picked = []
    for label in (0, 1):
        rows = torch.nonzero(labels == label).flatten()
        picked.append(rows[torch.randperm(len(rows), generator=generator)[: size // 2]])
    return torch.cat(picked).sort().values


def subset(texts: list[str], labels: torch.Tensor, rows: torch.Tensor):
    return [texts[i] for i in rows.tolist()], labels[rows]


def fit(model, train, *, epochs, lr, seed, batch_size, optimizer="adam") -> tuple[Trainer, float]:
    trainer = Trainer(
        model,
        optimizer=optimizer,
        lr=lr,
        schedule="onecycle",
        seed=seed,
        doctor=False,
        progress=False,
        metrics=("accuracy",),
    )
    start = time.perf_counter()
    trainer.fit(train, epochs=epochs, batch_size=batch_size)
    return trainer, time.perf_counter() - start


def scratch_fasttext(train, test, seed: int) -> dict[str, float]:
    seed_everything(seed)
    data = text_bundle("imdb", train, test, ["neg", "pos"], min_freq=1, max_length=1000, seed=seed)
    model = create_model("fasttext", num_classes=2, **data.model_args, **FASTTEXT)
    trainer, seconds = fit(model, data.train, epochs=20, lr=0.01, seed=seed, batch_size=32)
    accuracy = trainer.evaluate(data.test, batch_size=1000)["accuracy"]
    return {"accuracy": accuracy, "fit_seconds": seconds}


def minilm_features(train, test_tokens, test_labels, seed, length, cache) -> dict[str, float]:
    model = MiniLMClassifier.pretrained(num_classes=2, seed=seed)
    freeze(model, "backbone")
    extractor = FeatureExtractor(model, cache_dir=cache, batch_size=32)
    start = time.perf_counter()
    x_train = extractor.transform(encode_texts(train[0], length)["tokens"])
    encode_train = time.perf_counter() - start
    start = time.perf_counter()
    x_test = extractor.transform(test_tokens)
    encode_test = time.perf_counter() - start
    trainer, seconds = fit(
        extractor.head, (x_train, train[1]), epochs=100, lr=0.02, seed=seed, batch_size=64
    )
    return {
        "accuracy": trainer.evaluate((x_test, test_labels), batch_size=1000)["accuracy"],
        "fit_seconds": seconds,
        "encode_train_seconds": encode_train,
        "encode_test_seconds": encode_test,
        "test_cache_hit": extractor.hits > 0,
    }


def minilm_finetune(
    train, test_tokens, test_labels, seed, length, epochs, frozen
) -> dict[str, float]:
    seed_everything(seed)
    model = MiniLMClassifier.pretrained(num_classes=2, seed=seed)
    freeze(model, frozen)  # the lowest `frozen` groups: no backward through them (CPU time)
    encoder_lrs = [5e-5 * 0.8 ** (6 - g) for g in range(7)]  # embeddings, layer0 .. layer5
    optimizer = discriminative_optimizer(model, "adamw", 1e-3, lrs=[*encoder_lrs, 1e-3])
    tokens = encode_texts(train[0], length)["tokens"]
    trainer, seconds = fit(
        model,
        (tokens, train[1]),
        epochs=epochs,
        lr=1e-3,
        seed=seed,
        batch_size=16,
        optimizer=optimizer,
    )
    start = time.perf_counter()
    accuracy = trainer.evaluate((test_tokens, test_labels), batch_size=64)["accuracy"]
    return {
        "accuracy": accuracy,
        "fit_seconds": seconds,
        "score_seconds": time.perf_counter() - start,
    }


def imdb_benchmark(
    seeds: list[int],
    *,
    labelled: int = 1000,
    test_size: int = 25000,
    finetune_test_size: int = 5000,
    feature_length: int = 256,
    finetune_length: int = 128,
    finetune_seeds: int | None = None,
    finetune_epochs: int = 2,
    finetune_frozen: int = 0,
    only: tuple[str, ...] = ("scratch", "features", "finetune"),
    cache: Path,
    checkpoint: Path | None = None,
) -> dict[str, Any]:
    """Every seed of every contender; the partial result is written to `checkpoint` after each
    one, so a run cut short by the clock keeps what it measured."""
    torch.set_num_threads(2)
    train_texts, train_labels = read_imdb("train")
    all_test_texts, all_test_labels = read_imdb("test")
    test_rows = balanced(all_test_labels, test_size, TEST_SEED)
    test = subset(all_test_texts, all_test_labels, test_rows)
    ft_rows = balanced(test[1], finetune_test_size, TEST_SEED)
    ft_test = subset(test[0], test[1], ft_rows)
    result: dict[str, Any] = {
        "labelled_reviews": labelled,
        "test_reviews": len(test[1]),
        "test_subset_seed": TEST_SEED if len(test[1]) < len(all_test_labels) else None,
        "finetune_test_reviews": len(ft_test[1]),
        "feature_max_tokens": feature_length,
        "finetune_max_tokens": finetune_length,
        "finetune_epochs": finetune_epochs,
        "finetune_frozen_groups": finetune_frozen,
        "load_average_at_start": load(),
        "contenders": {
            "scratch fastText": [],
            "MiniLM features + head": [],
            "MiniLM fine-tuned": [],
        },
    }

    def save() -> None:
        if checkpoint is not None:
            checkpoint.write_text(json.dumps(result, indent=1))

    start = time.perf_counter()
    feature_test_tokens = (
        encode_texts(test[0], feature_length)["tokens"] if "features" in only else None
    )
    finetune_test_tokens = encode_texts(ft_test[0], finetune_length)["tokens"]
    result["tokenize_test_seconds"] = time.perf_counter() - start
    picks = {
        seed: subset(train_texts, train_labels, balanced(train_labels, labelled, seed))
        for seed in seeds
    }
    for seed in seeds if "scratch" in only else []:
        run = scratch_fasttext(picks[seed], test, seed)
        result["contenders"]["scratch fastText"].append({"seed": seed, **run, "load": load()})
        print(f"scratch fastText seed {seed}: {run}", flush=True)
        save()
    for seed in seeds if "features" in only else []:
        run = minilm_features(
            picks[seed], feature_test_tokens, test[1], seed, feature_length, cache
        )
        result["contenders"]["MiniLM features + head"].append({"seed": seed, **run, "load": load()})
        print(f"MiniLM features seed {seed}: {run}", flush=True)
        save()
    for seed in seeds[:finetune_seeds] if "finetune" in only else []:
        run = minilm_finetune(
            picks[seed],
            finetune_test_tokens,
            ft_test[1],
            seed,
            finetune_length,
            finetune_epochs,
            finetune_frozen,
        )
        result["contenders"]["MiniLM fine-tuned"].append({"seed": seed, **run, "load": load()})
        print(f"MiniLM fine-tuned seed {seed}: {run}", flush=True)
        save()
    result["load_average_at_end"] = load()
    save()
    return result


def mean_spread(runs: list[dict[str, Any]]) -> str:
    accs = [r["accuracy"] for r in runs]
    if not accs:
        return "not run"
    spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
    return f"{100 * statistics.mean(accs):.1f} ± {100 * spread:.1f}"


def imdb_rows(result: dict[str, Any]) -> list[list[Any]]:
    """Rows of benchmarks/transfer.py's table: the first contender is the base of `vs first`."""
    rows = []
    contenders = result["contenders"]
    scratch = contenders["scratch fastText"]
    base = statistics.mean(r["accuracy"] for r in scratch) if scratch else float("nan")
    for name, runs in contenders.items():
        if not runs:
            rows.append(["IMDB 1,000 labelled", name, "not run", "", "", 0])
            continue
        mean = statistics.mean(r["accuracy"] for r in runs)
        test = result["finetune_test_reviews"] if "fine-tuned" in name else result["test_reviews"]
        rows.append(
            [
                f"IMDB 1,000 labelled ({test:,} test)",
                name,
                mean_spread(runs),
                f"{100 * (mean - base):+.1f}",
                f"{statistics.mean(r['fit_seconds'] for r in runs):.1f}",
                len(runs),
            ]
        )
    return rows
