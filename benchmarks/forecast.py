"""Forecasting against the naive baselines on the same hold-out: MAE, RMSE and MASE.

For each bundled series (sunspots, monthly CO2, US macro data) every forecaster family is
trained on the training windows (early stopping on the validation windows, best weights kept)
and scored on the test windows in the series' own units, next to the naive forecast (the last
value) and the seasonal-naive forecast (the value one season earlier), which need no training.
MASE divides the MAE by the training part's mean absolute seasonal difference. Scores are the
mean over `--seeds` seeds; the load average is recorded because the machine may be shared.

Usage: python benchmarks/forecast.py [--seeds 3] [--epochs 60]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from _common import REPO, RESULTS_DIR, machine, table, write_json

sys.path.insert(0, str(REPO / "src"))

FAMILIES = ["lstm_forecaster", "gru_forecaster", "cnn_forecaster", "mlp_forecaster"]


def scores(pred, target, mase_scale: float) -> dict[str, float]:
    error = (pred.double() - target.double()).abs()
    mae = float(error.mean())
    return {
        "mae": mae,
        "rmse": float(error.pow(2).mean().sqrt()),
        "mase": mae / mase_scale,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "forecast.json")
    args = parser.parse_args()

    import torch

    from layerwise.data.forecast import SERIES, load_forecast
    from layerwise.models import create_model
    from layerwise.train import EarlyStopping, Trainer

    torch.set_num_threads(1)  # tiny models: one thread is faster on a shared machine
    loads = [os.getloadavg()]
    results: dict[str, dict] = {}
    rows = []
    for name in SERIES:
        data = load_forecast(name)
        scale = data.mase_scale()
        target = data.test.target
        entry = {
            "naive": scores(data.seasonal_naive("test", season=1), target, scale),
            "seasonal_naive": scores(data.seasonal_naive("test"), target, scale),
            "windows": {
                "train": len(data.train.y),
                "val": len(data.val.y),
                "test": len(target),
            },
            "past": data.past,
            "horizon": data.horizon,
            "season": data.season,
        }
        for family in FAMILIES:
            runs, seconds = [], 0.0
            for seed in range(args.seeds):
                torch.manual_seed(seed)
                model = create_model(family, num_classes=data.horizon)
                trainer = Trainer(
                    model,
                    loss="mse",
                    metrics=(),
                    lr=3e-3,
                    seed=seed,
                    doctor=False,
                    callbacks=[EarlyStopping("val_loss", patience=15)],
                )
                t0 = time.perf_counter()
                trainer.fit(
                    (data.train.x, data.train.y),
                    (data.val.x, data.val.y),
                    epochs=args.epochs,
                    batch_size=32,
                )
                seconds += time.perf_counter() - t0
                pred = data.to_original(trainer.predict(data.test.x))
                runs.append(scores(pred, target, scale))
            entry[family] = {
                key: sum(r[key] for r in runs) / len(runs) for key in ("mae", "rmse", "mase")
            }
            entry[family]["per_seed"] = runs
            entry[family]["train_seconds"] = seconds / args.seeds
        loads.append(os.getloadavg())
        results[name] = entry
        best_naive = entry["seasonal_naive"]["mae"]
        for method in ["naive", "seasonal_naive", *FAMILIES]:
            s = entry[method]
            verdict = "" if method in ("naive", "seasonal_naive") else (
                "beats s-naive" if s["mae"] < best_naive else "loses to s-naive"
            )  # fmt: skip
            rows.append(
                [name, method, f"{s['mae']:.3f}", f"{s['rmse']:.3f}", f"{s['mase']:.3f}", verdict]
            )
    print(table(["series", "method", "MAE", "RMSE", "MASE", "vs seasonal naive"], rows))
    write_json(
        args.output,
        {
            "machine": machine(),
            "seeds": args.seeds,
            "max_epochs": args.epochs,
            "results": results,
            "load_average": {"samples_1min": [load[0] for load in loads], "end": list(loads[-1])},
        },
    )


if __name__ == "__main__":
    main()
