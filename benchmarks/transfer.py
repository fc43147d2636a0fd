"""Transfer learning against training from scratch, on the same few labels and the same budget.

(a) MNIST: a small CNN is pretrained by a layerwise run on digits 0-4 (a recipe, `layerwise
    train`'s path, 2 epochs); then digits 5-9 with 50 labels per class (250 images) are learnt
    three ways, with the same architecture, optimizer, batch size and number of steps:
    `scratch` (random init), `fine-tune` (the run's backbone via `load_backbone("run", ...)`, a
    new head, discriminative rates 0.5x per group going down) and `features` (backbone frozen,
    embeddings cached, only the head trains). Scored on the full 5-9 test set (4,861 images).
    Target (issue 11): fine-tune >= scratch + 10 points.
(b) IMDB with 1,000 labelled reviews: MiniLM (frozen features + head, and fine-tuned) against
    layerwise's fastText bigram model trained on the same 1,000 (see benchmarks/transfer_imdb.py;
    `--only imdb`, sizes and token limits set by the --imdb-* options).
(c) ORL faces (40 people, 5 photos each to train, 5 to test, resized to 32x32 and copied to 3
    channels): the CIFAR-10 ResNet-20 checkpoint as a frozen feature extractor + linear head,
    against a scratch CNN (layerwise `cnn` vgg) trained for the same number of epochs.

Every contender runs for 3 seeds; the table gives mean ± std and the JSON every seed, the time of
each fit and the load average before and after (other work may share the machine: these say how
busy it was: `machine.load_average_at_start`, each seed's `load_before` or `load`, and
`load_average_at_end`).

Run: .venv/bin/python benchmarks/transfer.py [--seeds 3] [--output FILE]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, machine, table, write_json
from layerwise import experiment
from layerwise.data import load_dataset
from layerwise.models import create_model
from layerwise.recipe import validate_recipe
from layerwise.train import Trainer, seed_everything
from layerwise.transfer import (
    FeatureExtractor,
    discriminative_optimizer,
    freeze,
    load_backbone,
)

CIFAR_RESNET20 = "pretrained/cifar_resnet/resnet20-12fca82f.th"
CNN_ARGS = {"variant": "vgg", "channels": [32, 64, 128]}

PRETRAIN = {
    "name": "mnist_digits_0_4",
    "seed": 0,
    "data": {
        "name": "class_subset",
        "args": {"dataset": "mnist", "classes": [0, 1, 2, 3, 4]},
        "val_fraction": 0.05,
        "batch_size": 128,
    },
    "model": {"name": "cnn", "args": CNN_ARGS},
    "train": {
        "epochs": 2,
        "optimizer": {"name": "adam", "lr": 0.002},
        "schedule": {"name": "onecycle"},
        "monitor": "val_accuracy",
    },
    "doctor": {"label_noise": False},
}


def load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def fit_and_score(
    model: torch.nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    *,
    epochs: int,
    lr: float,
    seed: int,
    optimizer: Any = "adam",
    batch_size: int = 32,
) -> dict[str, float]:
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
    seconds = time.perf_counter() - start
    accuracy = trainer.evaluate(test)["accuracy"]
    return {"accuracy": accuracy, "fit_seconds": seconds}


def mnist_benchmark(seeds: list[int], runs_root: Path) -> dict[str, Any]:
    start = time.perf_counter()
    load_before = load()
    run, pre_metrics = experiment.train(
        validate_recipe(PRETRAIN), runs_root, progress=False, echo=None
    )
    pretrain_seconds = time.perf_counter() - start
    print(
        f"pretrained on digits 0-4: test accuracy {pre_metrics['accuracy']:.4f} "
        f"in {pretrain_seconds:.0f} s"
    )
    epochs, lr = 30, 2e-3
    results: dict[str, list[dict[str, float]]] = {"scratch": [], "fine-tune": [], "features": []}
    test = None
    for seed in seeds:
        data = load_dataset(
            "class_subset", dataset="mnist", classes=[5, 6, 7, 8, 9], per_class=50, seed=seed
        )
        test = data.test
        seed_everything(seed)
        scratch = create_model("cnn", num_classes=5, **CNN_ARGS)
        row = {"seed": seed, "load_before": load()}
        results["scratch"].append(
            {
                **row,
                **fit_and_score(scratch, data.train, data.test, epochs=epochs, lr=lr, seed=seed),
            }
        )
        tuned = load_backbone("run", run.path, num_classes=5, seed=seed)
        optimizer = discriminative_optimizer(tuned, "adam", lr, factor=0.5)
        results["fine-tune"].append(
            {
                "seed": seed,
                "load_before": load(),
                **fit_and_score(
                    tuned,
                    data.train,
                    data.test,
                    epochs=epochs,
                    lr=lr,
                    seed=seed,
                    optimizer=optimizer,
                ),
            }
        )
        frozen = load_backbone("run", run.path, num_classes=5, seed=seed)
        freeze(frozen, "backbone")
        t0 = time.perf_counter()
        extractor = FeatureExtractor(frozen, cache_dir=runs_root / "features")
        train_features = (extractor.transform(data.train[0]), data.train[1])
        test_features = (extractor.transform(data.test[0]), data.test[1])
        embed_seconds = time.perf_counter() - t0
        scored = fit_and_score(
            extractor.head, train_features, test_features, epochs=epochs, lr=1e-2, seed=seed
        )
        scored["fit_seconds"] += embed_seconds
        results["features"].append({"seed": seed, "load_before": load(), **scored})
    return {
        "pretrain": {
            "recipe": PRETRAIN,
            "test_accuracy_digits_0_4": pre_metrics["accuracy"],
            "seconds": pretrain_seconds,
            "load_before": load_before,
        },
        "train_images": 250,
        "test_images": len(test[1]),
        "epochs": epochs,
        "batch_size": 32,
        "contenders": results,
    }


def orl_benchmark(seeds: list[int], data_root: Path) -> dict[str, Any]:
    data = load_dataset("faces_orl", size=32, channels=3)
    epochs = 60
    results: dict[str, list[dict[str, float]]] = {
        "scratch cnn": [],
        "resnet20 features": [],
        "resnet20 fine-tune": [],
    }
    path = data_root / CIFAR_RESNET20
    for seed in seeds:
        seed_everything(seed)
        scratch = create_model("cnn", num_classes=40, **CNN_ARGS)
        results["scratch cnn"].append(
            {
                "seed": seed,
                "load_before": load(),
                **fit_and_score(
                    scratch, data.train, data.test, epochs=epochs, lr=2e-3, seed=seed, batch_size=16
                ),
            }
        )
        model = load_backbone("cifar_resnet", path, num_classes=40, seed=seed)
        freeze(model, "backbone")
        t0 = time.perf_counter()
        extractor = FeatureExtractor(model)
        train_features = (extractor.transform(data.train[0]), data.train[1])
        test_features = (extractor.transform(data.test[0]), data.test[1])
        embed_seconds = time.perf_counter() - t0
        scored = fit_and_score(
            extractor.head,
            train_features,
            test_features,
            epochs=epochs,
            lr=1e-2,
            seed=seed,
            batch_size=16,
        )
        scored["fit_seconds"] += embed_seconds
        results["resnet20 features"].append({"seed": seed, "load_before": load(), **scored})
        tuned = load_backbone("cifar_resnet", path, num_classes=40, seed=seed)
        optimizer = discriminative_optimizer(tuned, "adam", 2e-3, factor=0.5)
        results["resnet20 fine-tune"].append(
            {
                "seed": seed,
                "load_before": load(),
                **fit_and_score(
                    tuned,
                    data.train,
                    data.test,
                    epochs=epochs,
                    lr=2e-3,
                    seed=seed,
                    optimizer=optimizer,
                    batch_size=16,
                ),
            }
        )
    return {
        "train_images": len(data.train[1]),
        "test_images": len(data.test[1]),
        "image": "32x32, grey copied to 3 channels, CIFAR ResNet statistics",
        "epochs": epochs,
        "batch_size": 16,
        "contenders": results,
    }


def summarise(name: str, contenders: dict[str, list[dict[str, float]]]) -> list[list[Any]]:
    rows = []
    base = statistics.mean(r["accuracy"] for r in next(iter(contenders.values())))
    for contender, runs in contenders.items():
        accs = [r["accuracy"] for r in runs]
        mean = statistics.mean(accs)
        spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
        seconds = statistics.mean(r["fit_seconds"] for r in runs)
        rows.append(
            [
                name,
                contender,
                f"{100 * mean:.1f} ± {100 * spread:.1f}",
                f"{100 * (mean - base):+.1f}",
                f"{seconds:.1f}",
                len(runs),
            ]
        )
    return rows


def merge(paths: list[Path], output: Path) -> None:
    """One results file from several partial ones (seeds and tasks run as separate processes)."""
    import json

    merged: dict[str, Any] = {"machine": [], "load_average_at_end": []}
    rows: list[list[Any]] = []
    for path in paths:
        part = json.loads(path.read_text())
        merged["machine"].append(part["machine"])
        merged["load_average_at_end"].append(part["load_average_at_end"])
        for key in ("mnist_5_9_50_per_class", "orl_faces"):
            if key not in part:
                continue
            if key not in merged:
                merged[key] = part[key]
                continue
            for name, runs in part[key]["contenders"].items():
                merged[key]["contenders"][name] += runs
    for key, title in (
        ("mnist_5_9_50_per_class", "MNIST 5-9, 50/class"),
        ("orl_faces", "ORL faces, 5/person"),
    ):
        if key in merged:
            rows += summarise(title, merged[key]["contenders"])
    print(
        table(
            ["task", "contender", "test accuracy % (mean ± std)", "vs first", "fit s", "seeds"],
            rows,
        )
    )
    write_json(output, merged)
    print(f"wrote {output}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only", choices=["mnist", "imdb", "orl"], default=None)
    parser.add_argument("--imdb-test-size", type=int, default=25000)
    parser.add_argument("--imdb-finetune-test-size", type=int, default=5000)
    parser.add_argument("--imdb-finetune-seeds", type=int, default=None)
    parser.add_argument("--imdb-feature-length", type=int, default=256)
    parser.add_argument("--imdb-finetune-length", type=int, default=128)
    parser.add_argument("--imdb-finetune-epochs", type=int, default=2)
    parser.add_argument(
        "--imdb-finetune-frozen", type=int, default=0, help="lowest MiniLM groups kept frozen"
    )
    parser.add_argument("--imdb-labelled", type=int, default=1000)
    parser.add_argument(
        "--imdb-contenders",
        nargs="+",
        choices=["scratch", "features", "finetune"],
        default=["scratch", "features", "finetune"],
    )
    parser.add_argument(
        "--imdb-cache",
        type=Path,
        default=Path("runs/benchmark_cache/minilm_features"),
        help="MiniLM embeddings of the test reviews, computed once per max length and kept",
    )
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "transfer.json")
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="*",
        default=None,
        help="combine result files written by earlier --only/--first-seed runs into --output",
    )
    args = parser.parse_args()
    from layerwise.data import data_root

    if args.merge:
        merge(args.merge, args.output)
        return
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    payload: dict[str, Any] = {"machine": machine()}  # its load average at start; end below
    rows: list[list[Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "mnist"):
            payload["mnist_5_9_50_per_class"] = mnist_benchmark(seeds, Path(tmp))
            rows += summarise(
                "MNIST 5-9, 50/class", payload["mnist_5_9_50_per_class"]["contenders"]
            )
        if args.only in (None, "imdb"):
            from transfer_imdb import imdb_benchmark, imdb_rows

            payload["imdb_1000_labelled"] = imdb_benchmark(
                seeds,
                labelled=args.imdb_labelled,
                test_size=args.imdb_test_size,
                finetune_test_size=args.imdb_finetune_test_size,
                finetune_seeds=args.imdb_finetune_seeds,
                feature_length=args.imdb_feature_length,
                finetune_length=args.imdb_finetune_length,
                finetune_epochs=args.imdb_finetune_epochs,
                finetune_frozen=args.imdb_finetune_frozen,
                cache=args.imdb_cache,
                only=tuple(args.imdb_contenders),
                checkpoint=args.output.with_suffix(".partial.json"),
            )
            rows += imdb_rows(payload["imdb_1000_labelled"])
        if args.only in (None, "orl"):
            payload["orl_faces"] = orl_benchmark(seeds, data_root())
            rows += summarise("ORL faces, 5/person", payload["orl_faces"]["contenders"])
    payload["load_average_at_end"] = load()
    print(
        table(
            ["task", "contender", "test accuracy % (mean ± std)", "vs first", "fit s", "seeds"],
            rows,
        )
    )
    write_json(args.output, payload)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
