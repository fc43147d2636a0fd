"""How far `layerwise explain`'s maps can be trusted, measured on many inputs.

- Grad-CAM on the strokes: for each test digit, the mean Grad-CAM (of its true class, on the
  rectified maps after the last conv, as `explain` takes them) over the drawn pixels divided by
  its mean over the background; > 1 means the map sits on the strokes. For an MNIST LeNet, the
  8x8-digits CNN with one conv block (the test suite's), the two-block LeNet on 8x8 digits (whose
  last map is 4x4), and each net untrained (same architecture, seed 1) as a control.
- Integrated gradients' completeness: |sum of attributions − (f(x) − f(blank))| / |f(x) − f(blank)|
  on test digits for 8 to 128 Gauss-Legendre steps.
- The model-randomisation check (Adebayo et al. 2018): the rank correlation between a method's
  map for the trained MNIST LeNet and for the same net with random weights; a map that barely
  changes (close to 1) shows the input more than what the model learnt.
- Time per method for one input (median of the inputs), on one thread.

Models are trained here by a plain loop (seed 0) so the script needs no run folder.
Run: .venv/bin/python benchmarks/explain.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import nn

from _common import RESULTS_DIR, machine, table, write_json
from layerwise.data import load_dataset
from layerwise.explain import (
    gradcam,
    integrated_gradients,
    last_conv_layer,
    saliency,
    stroke_ratio,
)
from layerwise.models import create_model
from layerwise.nn import materialize

SETUPS = {
    "mnist_lenet": ("mnist", {"variant": "lenet"}, 2),
    "digits_cnn_1block": ("digits", {"variant": "lenet", "channels": [16], "hidden": [64]}, 6),
    "digits_lenet_2block": ("digits", {"variant": "lenet"}, 10),
}


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int) -> nn.Module:
    optimizer = torch.optim.Adam(model.parameters(), 3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), 64):
            rows = order[start : start + 64]
            loss = nn.functional.cross_entropy(model(x[rows]), y[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def build(dataset, args: dict, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = create_model("cnn", num_classes=10, **args)
    materialize(model, dataset.train[0][:2])
    return model


def pixels_of(dataset, x: torch.Tensor) -> torch.Tensor:
    if dataset.pixel_stats is None:
        return x
    mean, std = dataset.pixel_stats
    return x * std + mean


def ratios(model: nn.Module, dataset, count: int) -> list[float]:
    x, y = dataset.test
    _, layer = last_conv_layer(model, x[:1])
    found = []
    for i in range(min(count, len(x))):
        cam = gradcam(model, x[i : i + 1], int(y[i]), layer)
        value = stroke_ratio(cam[0], pixels_of(dataset, x[i]), background=0.0)
        if value is not None:
            found.append(value)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer inputs and no JSON")
    args = parser.parse_args()
    torch.set_num_threads(1)
    count = 60 if args.quick else 500
    info = machine()
    results: dict = {"machine": info, "gradcam": {}, "integrated_gradients": {}, "timing_ms": {}}
    rows = []
    trained_models = {}
    for name, (data_name, model_args, epochs) in SETUPS.items():
        dataset = load_dataset(data_name)
        x, y = dataset.train
        if args.quick:
            x, y = x[:5000], y[:5000]
        start = time.perf_counter()
        model = fit(build(dataset, model_args, 0), x, y, 1 if args.quick else epochs)
        train_s = time.perf_counter() - start
        with torch.no_grad():
            xt, yt = dataset.test
            accuracy = float((model(xt[:2000]).argmax(1) == yt[:2000]).float().mean())
        trained_models[name] = (model, dataset)
        layer = last_conv_layer(model, xt[:1])[0]
        for state, net in (("trained", model), ("untrained", build(dataset, model_args, 1).eval())):
            found = np.array(ratios(net, dataset, count))
            entry = {
                "layer": layer,
                "inputs": len(found),
                "median_ratio": float(np.median(found)),
                "share_above_1": float((found > 1).mean()),
                "p10_ratio": float(np.percentile(found, 10)),
            }
            if state == "trained":
                entry |= {"test_accuracy": accuracy, "epochs": epochs, "train_s": train_s}
            results["gradcam"][f"{name}/{state}"] = entry
            rows.append(
                [
                    name,
                    state,
                    layer,
                    f"{accuracy:.3f}" if state == "trained" else "",
                    len(found),
                    f"{entry['median_ratio']:.2f}",
                    f"{entry['share_above_1']:.0%}",
                ]
            )
        print(table(["setup", "weights", "Grad-CAM layer", "acc", "n", "median", ">1"], rows[-2:]))

    model, dataset = trained_models["mnist_lenet"]
    xt, yt = dataset.test
    blank = torch.full((1, 1, 28, 28), (0.0 - dataset.pixel_stats[0]) / dataset.pixel_stats[1])
    gap_rows = []
    for steps in (8, 16, 32, 64, 128):
        gaps = [
            integrated_gradients(model, xt[i : i + 1], int(yt[i]), blank, steps).relative_gap
            for i in range(count // 5)
        ]
        results["integrated_gradients"][str(steps)] = {
            "inputs": len(gaps),
            "median_relative_gap": statistics.median(gaps),
            "p90_relative_gap": float(np.percentile(gaps, 90)),
            "max_relative_gap": max(gaps),
        }
        gap_rows.append([steps, len(gaps), f"{statistics.median(gaps):.2%}", f"{max(gaps):.2%}"])
    print(table(["IG steps", "n", "median gap", "max gap"], gap_rows))

    _, layer = last_conv_layer(model, xt[:1])
    random_model = build(dataset, SETUPS["mnist_lenet"][1], 1).eval()
    _, random_layer = last_conv_layer(random_model, xt[:1])
    maps = {
        "saliency": lambda m, lay, x, t: saliency(m, x, t),
        "integrated_gradients": lambda m, lay, x, t: (
            integrated_gradients(m, x, t, blank).attributions
        ),
        "gradcam": lambda m, lay, x, t: gradcam(m, x, t, lay),
    }
    same_rows = []
    for method, call in maps.items():
        rhos = []
        for i in range(count // 5):
            x, t = xt[i : i + 1], int(yt[i])
            trained_map = call(model, layer, x, t).flatten().numpy()
            random_map = call(random_model, random_layer, x, t).flatten().numpy()
            rhos.append(float(spearmanr(trained_map, random_map).statistic))
        rhos = [r for r in rhos if np.isfinite(r)]
        results["randomization"] = results.get("randomization", {}) | {
            method: {"inputs": len(rhos), "median_spearman": statistics.median(rhos)}
        }
        same_rows.append([method, len(rhos), f"{statistics.median(rhos):.2f}"])
    print(table(["method", "n", "rank corr. trained vs random weights"], same_rows))

    methods = {
        "saliency": lambda x, t: saliency(model, x, t),
        "integrated_gradients (64 steps)": lambda x, t: integrated_gradients(model, x, t, blank),
        "gradcam": lambda x, t: gradcam(model, x, t, layer),
    }
    time_rows = []
    for method, call in methods.items():
        times = []
        for i in range(20):
            start = time.perf_counter()
            call(xt[i : i + 1], int(yt[i]))
            times.append(1000 * (time.perf_counter() - start))
        results["timing_ms"][method] = statistics.median(times)
        time_rows.append([method, f"{statistics.median(times):.1f}"])
    print(table(["method (MNIST LeNet, 1 thread)", "ms per input"], time_rows))
    results["load_average_at_end"] = list(os.getloadavg())
    print(f"load average at start {info['load_average_at_start']}, at end {os.getloadavg()}")
    if not args.quick:
        write_json(RESULTS_DIR / "explain.json", results)


if __name__ == "__main__":
    main()
