"""IMDB sentiment on the official 25,000-review test set: layerwise's text classifiers, and a
plain PyTorch fastText written here as the reference they are timed against.

Every time counts everything from reading the two `.jsonl.gz` files to the test accuracy:
tokenising, the vocabulary, training and scoring. Contenders (hyperparameters from the
recipes `recipes/imdb_*.yaml`):

- `reference fastText`: plain PyTorch, no layerwise import: a regular expression tokeniser, a
  `Counter` vocabulary, hashed bigrams, an `nn.EmbeddingBag` over the padded ids, Adam with the
  same one-cycle schedule, a loop over permutation-indexed batches.
- `layerwise fastText`: `load_dataset("imdb")` (the `TextPipeline`), `create_model("fasttext")`,
  `Trainer.fit` with the doctor on, as a user would write it.
- `layerwise bilstm` / `layerwise transformer`: the same path with a `BucketBatcher` (batches of
  similar lengths) for the two slower models.
- `recipe:PATH`: any IMDB recipe file through that same path (for candidates before they
  become a shipped recipe).

Besides the accuracy and wall seconds, each layerwise contender records its training seconds,
the CPU seconds of the process (`time.process_time()`, which other processes' load disturbs far
less than wall time) and the load average sampled every 30 s while it ran.

Targets (issue 10): fastText >= 0.90 in <= 60 s (a plain PyTorch reference reaches 0.906 in
18 s), a recurrent model >= 0.88, a small Transformer >= 0.86. The machine is shared: the JSON
records the load average before and after each contender, and the fastText pair runs back to
side by side (two processes started together, `--contenders` and `--merge`), so
`layerwise / reference` compares runs under the same load.

Run: .venv/bin/python benchmarks/imdb.py [--contenders "reference fastText,layerwise fastText"]
     [--threads 2] [--output FILE] [--merge FILE ...]
     .venv/bin/python benchmarks/imdb.py --contenders recipe:recipes/imdb_bilstm.yaml --threads 1
"""

from __future__ import annotations

import argparse
import functools
import gzip
import json
import math
import os
import re
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, RESULTS_DIR, machine, table, write_json

DATA = REPO.parent / "shared" / "data" / "imdb"


def recipe(name: str) -> dict[str, Any]:
    """`recipes/imdb_<name>.yaml`, or the file `name` when it ends in `.yaml`."""
    path = Path(name) if name.endswith(".yaml") else REPO / "recipes" / f"imdb_{name}.yaml"
    return yaml.safe_load(path.read_text())


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


class LoadSampler:
    """The 1-minute load average every `every` seconds while a contender runs (a thread)."""

    def __init__(self, every: float = 30.0) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)

    def _run(self, every: float) -> None:
        while True:
            self.samples.append(round(os.getloadavg()[0], 2))
            if self._stop.wait(every):
                return

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ------------------------------------------------------------------------------ the reference
WORDS = re.compile(r"\w+(?:'\w+)?|[^\w\s]")


def _read(path: Path) -> tuple[list[str], list[int]]:
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        rows = [json.loads(line) for line in lines]
    return [r["text"] for r in rows], [r["label"] for r in rows]


def _ids(texts: list[str], index: dict[str, int], length: int) -> torch.Tensor:
    out = torch.zeros(len(texts), length, dtype=torch.long)
    for i, text in enumerate(texts):
        words = WORDS.findall(text.replace("<br />", " ").lower())[:length]
        out[i, : len(words)] = torch.tensor([index.get(w, 1) for w in words], dtype=torch.long)
    return out


class RefFastText(nn.Module):
    def __init__(self, vocab: int, buckets: int, dim: int) -> None:
        super().__init__()
        self.vocab, self.buckets = vocab, buckets
        self.bag = nn.EmbeddingBag(vocab + buckets, dim, mode="mean", padding_idx=0)
        self.out = nn.Linear(dim, 2)
        nn.init.uniform_(self.bag.weight, -1 / dim, 1 / dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        width = int((ids != 0).sum(1).max())
        ids = ids[:, : max(width, 2)]
        a, b = ids[:, :-1], ids[:, 1:]
        bigrams = torch.where(
            (a != 0) & (b != 0), (a * 116049371 + b) % self.buckets + self.vocab, 0
        )
        return self.out(self.bag(torch.cat([ids, bigrams], dim=1)))


def reference_fasttext() -> dict[str, Any]:
    """fastText by hand in plain PyTorch, with the layerwise recipe's hyperparameters."""
    spec = recipe("fasttext")
    data, model_args, train = spec["data"], spec["model"]["args"], spec["train"]
    start = time.perf_counter()
    torch.manual_seed(0)
    train_texts, train_labels = _read(DATA / "imdb_train.jsonl.gz")
    test_texts, test_labels = _read(DATA / "imdb_test.jsonl.gz")
    counts = Counter()
    for text in train_texts:
        counts.update(WORDS.findall(text.replace("<br />", " ").lower()))
    kept = [w for w, c in counts.most_common() if c >= data["args"]["min_freq"]]
    index = {w: i + 4 for i, w in enumerate(kept)}  # 0 pad, 1 unknown, 2-3 unused
    length = data["args"]["max_length"]
    x, y = _ids(train_texts, index, length), torch.tensor(train_labels)
    x_test, y_test = _ids(test_texts, index, length), torch.tensor(test_labels)
    tokenised = time.perf_counter() - start
    model = RefFastText(len(index) + 4, model_args["buckets"], model_args["dim"])
    optimizer = torch.optim.Adam(model.parameters(), lr=train["optimizer"]["lr"])
    epochs, batch = train["epochs"], data["batch_size"]
    steps = epochs * math.ceil(len(x) / batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=train["optimizer"]["lr"], total_steps=steps
    )
    for _ in range(epochs):
        order = torch.randperm(len(x))
        for i in range(0, len(x), batch):
            rows = order[i : i + batch]
            loss = nn.functional.cross_entropy(model(x[rows]), y[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    with torch.no_grad():
        predicted = torch.cat(
            [model(x_test[i : i + 1000]).argmax(1) for i in range(0, len(x_test), 1000)]
        )
    accuracy = float((predicted == y_test).float().mean())
    return {"accuracy": accuracy, "seconds": time.perf_counter() - start, "tokenise_s": tokenised}


# ------------------------------------------------------------------------------ layerwise
def layerwise_model(name: str, bucket: bool) -> dict[str, Any]:
    """A recipe's data, model and training settings through the Python API, timed end to end."""
    from layerwise import Trainer, create_model, load_dataset

    spec = recipe(name)
    data_spec, model_spec, train = spec["data"], spec["model"], spec["train"]
    start, cpu_start = time.perf_counter(), time.process_time()
    torch.manual_seed(spec.get("seed", 0))
    data = load_dataset("imdb", **data_spec["args"])
    tokenised = time.perf_counter() - start
    model = create_model(
        model_spec["name"], num_classes=2, **data.model_args, **model_spec.get("args", {})
    )
    optimizer = train["optimizer"]
    trainer = Trainer(
        model,
        optimizer=optimizer["name"],
        lr=optimizer["lr"],
        weight_decay=optimizer.get("weight_decay"),
        schedule=train["schedule"]["name"],
        grad_clip=train.get("grad_clip"),
        metrics=["accuracy"],
        device="cpu",
        seed=spec.get("seed", 0),
    )
    batch = data_spec["batch_size"]
    source = data.batcher("train", batch, seed=spec.get("seed", 0)) if bucket else data.train
    fit_start = time.perf_counter()
    history = trainer.fit(source, epochs=train["epochs"], batch_size=batch)
    train_s = time.perf_counter() - fit_start
    x_test, y_test = data.test
    by_length = (x_test != 0).sum(dim=1).argsort()  # short batches cost less; same accuracy
    scores = trainer.evaluate(
        (x_test[by_length], y_test[by_length]), batch_size=data_spec.get("eval_batch_size", 500)
    )
    findings = [f.code for f in trainer.diagnose().findings]
    return {
        "accuracy": float(scores["accuracy"]),
        "seconds": time.perf_counter() - start,
        "tokenise_s": tokenised,
        "train_s": train_s,
        "cpu_s": time.process_time() - cpu_start,
        "epochs": train["epochs"],
        "train_loss_per_epoch": [round(float(h["loss"]), 4) for h in history if "loss" in h],
        "recipe": spec,
        "vocab_size": data.pipeline.vocab_size,
        "doctor_findings": findings,
    }


TARGETS = {"fasttext": (0.90, 60.0), "bilstm": (0.88, None), "transformer": (0.86, None)}
CONTENDERS = {
    "reference fastText": reference_fasttext,
    "layerwise fastText": lambda: layerwise_model("fasttext", bucket=False),
    "layerwise bilstm": lambda: layerwise_model("bilstm", bucket=True),
    "layerwise transformer": lambda: layerwise_model("transformer", bucket=True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--contenders",
        default="reference fastText,layerwise fastText,layerwise bilstm,layerwise transformer",
        help="comma-separated, run in this order in this process",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "imdb.json")
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="*",
        default=None,
        help="instead of running, join the contenders of these result files into --output "
        "(for contenders run side by side in separate processes, under the same load)",
    )
    args = parser.parse_args()
    if args.merge is not None:
        results = {"machine": machine(), "contenders": {}, "merged_from": []}
        for path in args.merge:
            part = json.loads(path.read_text())
            results["contenders"].update(part["contenders"])
            results["merged_from"].append({"file": path.name, "machine": part["machine"]})
        return report(results, args.output)
    torch.set_num_threads(args.threads)
    results = {"machine": machine(), "contenders": {}}
    for label in args.contenders.split(","):
        before = load()
        if label.startswith("recipe:"):
            run = functools.partial(layerwise_model, label.removeprefix("recipe:"), bucket=True)
        else:
            run = CONTENDERS[label]
        with LoadSampler() as sampler:
            result = run()
        result.update(load_before=before, load_after=load(), load_samples=sampler.samples)
        result["threads"] = args.threads
        results["contenders"][label] = result
        print(f"{label}: {result}", flush=True)
        write_json(args.output, results)
    report(results, args.output)


def report(results: dict[str, Any], output: Path) -> None:
    """Print the table (and the fastText time ratio) and write the JSON."""
    contenders = results["contenders"]
    if "reference fastText" in contenders and "layerwise fastText" in contenders:
        results["fasttext_time_ratio"] = (
            contenders["layerwise fastText"]["seconds"]
            / contenders["reference fastText"]["seconds"]
        )
    rows = []
    for label, r in contenders.items():
        kind = label.split()[1].lower() if " " in label else "recipe"
        target = TARGETS.get(kind, (None, None))
        rows.append(
            [
                label,
                f"{r['accuracy']:.4f}",
                f"{r['seconds']:.1f}",
                f"{r['tokenise_s']:.1f}",
                f">= {target[0]}" + (f" in <= {target[1]:.0f} s" if target[1] else ""),
                f"{r['load_before'][0]:.1f} -> {r['load_after'][0]:.1f}",
            ]
        )
    print(table(["contender", "test acc", "total s", "tokenise s", "target", "load 1 min"], rows))
    if "fasttext_time_ratio" in results:
        print(f"layerwise / reference fastText time: {results['fasttext_time_ratio']:.2f}")
    write_json(output, results)


if __name__ == "__main__":
    main()
