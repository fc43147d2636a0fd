"""Spoken digits (FSDD): test accuracy of the speech recipes against the published anchor.

Each configuration trains a bundled recipe through `layerwise.experiment.train` (the same path as
`layerwise train`) into a scratch runs folder and scores it on its test split:
- `official`: recordings 0-4 of every speaker and digit are the test set (300 clips); the
  published small-CNN results on this split are 92-97%, our target is >= 97%.
- `speaker`: every recording of one speaker (500 clips) is the test set and the other five
  speakers train: accuracy on a voice never heard, with the accuracy per speaker reported.

Each configuration writes its own part file, so they can run as separate processes at once (the
machine is shared; the load average at start and end and the wall and CPU time are recorded) and
`--merge` collects them into benchmarks/results/speech.json and prints the table.

Usage: python benchmarks/speech.py [--configs cnn_official,crnn_official,cnn_speaker] [--merge]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, RESULTS_DIR, machine, table, write_json

sys.path.insert(0, str(REPO / "src"))

ANCHOR = {"low": 0.92, "high": 0.97, "target": 0.97, "what": "published small CNNs on FSDD"}
CONFIGS = {
    "cnn_official": ("speech_digits_cnn.yaml", []),
    "crnn_official": ("speech_digits_crnn.yaml", []),
    "cnn_speaker": (
        "speech_digits_cnn.yaml",
        ["data.args.split=speaker", "data.args.speaker=theo"],
    ),
    "crnn_speaker": (
        "speech_digits_crnn.yaml",
        ["data.args.split=speaker", "data.args.speaker=theo"],
    ),
}


def run_config(name: str, parts: Path) -> dict:
    import torch

    from layerwise.data import load_dataset
    from layerwise.experiment import load_experiment, train
    from layerwise.recipe import load_recipe
    from layerwise.tasks.speech import accuracy_by_speaker

    recipe_file, overrides = CONFIGS[name]
    recipe = load_recipe(REPO / "recipes" / recipe_file, overrides)
    start_load, wall, cpu = os.getloadavg(), time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as runs:
        run, metrics = train(recipe, runs, progress=False, echo=None)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        experiment = load_experiment(run)
        bundle = load_dataset(recipe.data.name, **recipe.data.args)
        with torch.no_grad():
            predicted = experiment.trainer.predict(bundle.test[0]).argmax(dim=1)
        by_speaker = accuracy_by_speaker(predicted, bundle.test[1], bundle.test_speakers)
        epochs = run.info().get("epochs_done")
    result = {
        "config": name,
        "recipe": f"recipes/{recipe_file}",
        "overrides": overrides,
        "split": recipe.data.args.get("split", "official"),
        "held_out_speaker": recipe.data.args.get("speaker"),
        "test_accuracy": metrics["accuracy"],
        "test_size": len(bundle.test[1]),
        "accuracy_by_speaker": by_speaker,
        "epochs": epochs,
        "wall_seconds": round(wall, 1),
        "cpu_seconds": round(cpu, 1),
        "load_average_start": list(start_load),
        "load_average_end": list(os.getloadavg()),
        "machine": machine(),
    }
    parts.mkdir(parents=True, exist_ok=True)
    write_json(parts / f"{name}.json", result)
    return result


def merge(parts: Path, output: Path) -> None:
    results = {p.stem: json.loads(p.read_text()) for p in sorted(parts.glob("*.json"))}
    rows = [
        [
            name,
            r["split"] + (f" (held out: {r['held_out_speaker']})" if r["held_out_speaker"] else ""),
            r["test_size"],
            f"{r['test_accuracy']:.4f}",
            "92-97%" if r["split"] == "official" else "—",
            r["epochs"],
            f"{r['wall_seconds']:.0f} s",
            f"{r['cpu_seconds']:.0f} s",
            f"{r['load_average_start'][0]:.1f}",
        ]
        for name, r in results.items()
    ]
    headers = [
        "config",
        "split",
        "test clips",
        "accuracy",
        "anchor",
        "epochs",
        "wall",
        "cpu",
        "load",
    ]
    print(table(headers, rows))
    write_json(output, {"anchor": ANCHOR, "results": results})  # prints where it wrote


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="cnn_official,crnn_official,cnn_speaker")
    parser.add_argument("--parts", type=Path, default=RESULTS_DIR / "speech_parts")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "speech.json")
    parser.add_argument("--merge", action="store_true", help="only collect the part files")
    args = parser.parse_args()
    if not args.merge:
        for name in args.configs.split(","):
            result = run_config(name, args.parts)
            print(f"{name}: test accuracy {result['test_accuracy']:.4f} "
                  f"({result['wall_seconds']:.0f} s wall)")  # fmt: skip
    merge(args.parts, args.output)


if __name__ == "__main__":
    main()
