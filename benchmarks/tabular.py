"""Tabular prediction side by side with scikit-learn, on the same splits and seeds.

Three tables that need no download, each split per seed into train / validation / test
(stratified for classes; 20% test, then 20% of the rest for validation, so the breast cancer
validation split holds ~34 malignant rows to set a 95%-sensitivity threshold on):

- breast cancer (569 rows, 30 numeric columns, malignant vs benign): layerwise's MLP
  (`LayerwiseClassifier` behind a `StandardScaler`) against `LogisticRegression` (scaled) and
  `HistGradientBoostingClassifier`: accuracy and ROC-AUC, and the medical view: the threshold
  reaching 95% sensitivity for malignant on validation, the sensitivity and specificity it gives
  on test, ECE before and after temperature scaling fitted on validation (for all three).
- diabetes (442 rows, 10 numeric columns, disease progression): `LayerwiseRegressor` against
  `Ridge` and `HistGradientBoostingRegressor`: RMSE and R².
- fair (statsmodels' affairs survey, 6,366 rows, 3 categorical + 5 numeric columns, affairs > 0):
  `tabular_mlp` (embeddings per category; the `TableEncoder` fitted on train) trained by the
  Trainer with early stopping on validation, against `LogisticRegression` on one-hot + scaled
  columns and `HistGradientBoostingClassifier` with native categorical columns.

Hyperparameters are fixed in this file, the same for every seed (not tuned per split; the
scikit-learn models use their defaults). Every model fits on one thread (threadpoolctl limits
scikit-learn's OpenMP; the Trainer gets threads=1): with two threads on a machine shared with
other jobs, the boosted trees' OpenMP workers spin-waited and took 30-60 s per fit. Figures are
mean ± standard deviation over seeds; fit times are wall seconds on a shared machine (the load
average is recorded). The reliability plot pools the MLP's test predictions of every seed.

Usage: python benchmarks/tabular.py [--seeds 5] [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import numpy as np

from _common import REPO, RESULTS_DIR, machine, table, write_json

sys.path.insert(0, str(REPO / "src"))

MLP_CLASSIFIER = {
    "hidden": (64, 32),
    "dropout": 0.1,
    "epochs": 60,
    "lr": 1e-3,
    "weight_decay": 1e-4,
}
MLP_REGRESSOR = {"hidden": (32,), "epochs": 20, "lr": 3e-3, "weight_decay": 1e-2}
FAIR_MLP = {"hidden": [64, 32], "dropout": 0.1}
FAIR_CATEGORICAL = ["religious", "occupation", "occupation_husb"]
VAL_FRACTION = 0.2


def splits(y: np.ndarray, seed: int, stratify: bool) -> tuple[np.ndarray, ...]:
    """Row indices of train, validation and test for one seed."""
    from sklearn.model_selection import train_test_split

    rows = np.arange(len(y))
    rest, test = train_test_split(
        rows, test_size=0.2, random_state=seed, stratify=y if stratify else None
    )
    train, val = train_test_split(
        rest, test_size=VAL_FRACTION, random_state=seed, stratify=y[rest] if stratify else None
    )
    return train, val, test


def log_proba(model: Any, x: Any) -> np.ndarray:
    """Log-probabilities as logits for temperature scaling (softmax ignores the row shift);
    clipped, since boosted trees can say exactly 0."""
    return np.log(np.clip(model.predict_proba(x), 1e-12, 1.0))


def timed_fit(model: Any, x: Any, y: Any) -> float:
    start = time.perf_counter()
    model.fit(x, y)
    return time.perf_counter() - start


# ------------------------------------------------------------------------------ breast cancer
def breast_cancer(seed: int, epochs_scale: float, pooled: dict[str, list]) -> list[dict[str, Any]]:
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from layerwise.sklearn import LayerwiseClassifier
    from layerwise.tasks import medical

    x, y = load_breast_cancer(return_X_y=True)
    train, val, test = splits(y, seed, stratify=True)
    sick = (y == 0).astype(int)  # class 0 is malignant: the disease is the positive class
    mlp = {**MLP_CLASSIFIER, "epochs": max(2, int(MLP_CLASSIFIER["epochs"] * epochs_scale))}
    models = {
        "layerwise MLP": make_pipeline(StandardScaler(), LayerwiseClassifier(**mlp, seed=seed)),
        "LogisticRegression": make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)),
        "HistGradientBoosting": HistGradientBoostingClassifier(random_state=seed),
    }
    rows = []
    for name, model in models.items():
        seconds = timed_fit(model, x[train], y[train])
        logits = {
            part: log_proba(model, x[rows_]) for part, rows_ in (("val", val), ("test", test))
        }
        p_val = medical.positive_probabilities(logits["val"], positive=0)
        p_test = medical.positive_probabilities(logits["test"], positive=0)
        point = medical.threshold_for_sensitivity(sick[val], p_val, 0.95)
        on_test = medical.operating_point(sick[test], p_test, point.threshold)
        temperature = medical.fit_temperature(logits["val"], y[val])
        p_scaled = medical.positive_probabilities(logits["test"], 0, temperature)
        rows.append(
            {
                "dataset": "breast_cancer",
                "model": name,
                "seed": seed,
                "accuracy": float((model.predict(x[test]) == y[test]).mean()),
                "roc_auc": medical.roc_auc(sick[test], p_test),
                "threshold": point.threshold,
                "val_sensitivity": point.sensitivity,
                "test_sensitivity": on_test.sensitivity,
                "test_specificity": on_test.specificity,
                "ece": medical.expected_calibration_error(sick[test], p_test),
                "temperature": temperature,
                "ece_scaled": medical.expected_calibration_error(sick[test], p_scaled),
                "fit_seconds": seconds,
            }
        )
        if name == "layerwise MLP":  # pooled over seeds for the reliability plot
            pooled["sick"].append(sick[test])
            pooled["MLP"].append(p_test)
            pooled["MLP, temperature-scaled"].append(p_scaled)
    return rows


# ------------------------------------------------------------------------------ diabetes
def diabetes(seed: int, epochs_scale: float) -> list[dict[str, Any]]:
    from sklearn.datasets import load_diabetes
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from layerwise.sklearn import LayerwiseRegressor

    x, y = load_diabetes(return_X_y=True)
    train, _, test = splits(y, seed, stratify=False)
    mlp = {**MLP_REGRESSOR, "epochs": max(2, int(MLP_REGRESSOR["epochs"] * epochs_scale))}
    models = {
        "layerwise MLP": make_pipeline(StandardScaler(), LayerwiseRegressor(**mlp, seed=seed)),
        "Ridge": make_pipeline(StandardScaler(), Ridge()),
        "HistGradientBoosting": HistGradientBoostingRegressor(random_state=seed),
    }
    rows = []
    for name, model in models.items():
        seconds = timed_fit(model, x[train], y[train])
        error = model.predict(x[test]) - y[test]
        rows.append(
            {
                "dataset": "diabetes",
                "model": name,
                "seed": seed,
                "rmse": float(np.sqrt(np.mean(error**2))),
                "r2": float(model.score(x[test], y[test])),
                "fit_seconds": seconds,
            }
        )
    return rows


# ------------------------------------------------------------------------------ fair
def fair(seed: int, epochs_scale: float) -> list[dict[str, Any]]:
    import torch
    from sklearn.compose import make_column_transformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

    from layerwise.data.mixed_table import TableEncoder, fair_frame
    from layerwise.models import create_model
    from layerwise.train import EarlyStopping, Trainer

    frame = fair_frame()
    y = (frame.pop("affair") == "yes").to_numpy().astype(int)
    numeric = [c for c in frame.columns if c not in FAIR_CATEGORICAL]
    train, val, test = splits(y, seed, stratify=True)
    rows = []

    # layerwise: the table encoder fitted on the training rows, tabular_mlp, early stopping
    start = time.perf_counter()
    encoder = TableEncoder.fit(frame.iloc[train], numeric, FAIR_CATEGORICAL)
    encoded = {
        part: encoder.transform(frame.iloc[r])[0]
        for part, r in (("train", train), ("val", val), ("test", test))
    }
    labels = {
        part: torch.as_tensor(y[r]) for part, r in (("train", train), ("val", val), ("test", test))
    }
    torch.manual_seed(seed)
    model = create_model("tabular_mlp", num_classes=2, **encoder.model_args, **FAIR_MLP)
    trainer = Trainer(
        model,
        optimizer="adam",
        lr=1e-3,
        weight_decay=1e-4,
        metrics=(),
        seed=seed,
        callbacks=[EarlyStopping("val_loss", patience=5)],
        doctor=False,
        progress=False,
        threads=1,
    )
    trainer.fit(
        (encoded["train"], labels["train"]),
        (encoded["val"], labels["val"]),
        epochs=max(2, int(40 * epochs_scale)),
        batch_size=64,
    )
    seconds = time.perf_counter() - start
    logits = trainer.predict(encoded["test"]).double().numpy()
    rows.append(
        _fair_row("layerwise tabular_mlp", seed, logits, y[test], seconds, len(trainer.history))
    )

    one_hot = make_column_transformer(
        (OneHotEncoder(handle_unknown="ignore"), FAIR_CATEGORICAL), (StandardScaler(), numeric)
    )
    ordinal = make_column_transformer(
        (OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1), FAIR_CATEGORICAL),
        ("passthrough", numeric),
    )
    others = {
        "LogisticRegression": make_pipeline(one_hot, LogisticRegression(max_iter=5000)),
        "HistGradientBoosting": make_pipeline(
            ordinal,
            HistGradientBoostingClassifier(
                categorical_features=list(range(len(FAIR_CATEGORICAL))), random_state=seed
            ),
        ),
    }
    for name, pipeline in others.items():
        seconds = timed_fit(pipeline, frame.iloc[train], y[train])
        logits = log_proba(pipeline, frame.iloc[test])
        rows.append(_fair_row(name, seed, logits, y[test], seconds, None))
    return rows


def _fair_row(name, seed, logits, y, seconds, epochs) -> dict[str, Any]:
    from layerwise.tasks import medical

    p = medical.positive_probabilities(logits, positive=1)
    return {
        "dataset": "fair",
        "model": name,
        "seed": seed,
        "accuracy": float(((p >= 0.5).astype(int) == y).mean()),
        "roc_auc": medical.roc_auc(y, p),
        "fit_seconds": seconds,
        "epochs": epochs,
    }


# ------------------------------------------------------------------------------ summary
def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """dataset -> model -> metric -> mean and std over seeds."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for row in rows:
        out.setdefault(row["dataset"], {}).setdefault(row["model"], {})
    for dataset, models in out.items():
        for model in models:
            mine = [r for r in rows if r["dataset"] == dataset and r["model"] == model]
            for key, value in mine[0].items():
                if key in ("dataset", "model", "seed") or value is None:
                    continue
                values = np.array([r[key] for r in mine], dtype=float)
                models[model][key] = float(values.mean())
                models[model][f"{key}_std"] = float(values.std())
    return out


def show(summary: dict[str, Any]) -> str:
    def pm(stats, key, digits=3):
        return f"{stats[key]:.{digits}f} ± {stats[key + '_std']:.{digits}f}"

    parts = []
    bc = summary["breast_cancer"]
    parts.append(
        "breast cancer (test split; positive = malignant; threshold for 95% sensitivity "
        "chosen on validation)\n"
        + table(
            [
                "model",
                "accuracy",
                "ROC-AUC",
                "sensitivity",
                "specificity",
                "ECE",
                "ECE after T",
                "T",
                "fit s",
            ],
            [
                [
                    m,
                    pm(s, "accuracy"),
                    pm(s, "roc_auc"),
                    pm(s, "test_sensitivity"),
                    pm(s, "test_specificity"),
                    pm(s, "ece"),
                    pm(s, "ece_scaled"),
                    pm(s, "temperature", 2),
                    f"{s['fit_seconds']:.2f}",
                ]
                for m, s in bc.items()
            ],
        )
    )
    parts.append(
        "diabetes (test split)\n"
        + table(
            ["model", "RMSE", "R²", "fit s"],
            [
                [m, pm(s, "rmse", 1), pm(s, "r2"), f"{s['fit_seconds']:.2f}"]
                for m, s in summary["diabetes"].items()
            ],
        )
    )
    parts.append(
        "fair (test split; affairs > 0)\n"
        + table(
            ["model", "accuracy", "ROC-AUC", "fit s"],
            [
                [m, pm(s, "accuracy"), pm(s, "roc_auc"), f"{s['fit_seconds']:.2f}"]
                for m, s in summary["fair"].items()
            ],
        )
    )
    return "\n\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="one seed, few epochs, no JSON")
    args = parser.parse_args()
    seeds = 1 if args.quick else args.seeds
    scale = 0.1 if args.quick else 1.0
    info = machine()
    from threadpoolctl import threadpool_limits

    rows: list[dict[str, Any]] = []
    pooled: dict[str, list] = {"sick": [], "MLP": [], "MLP, temperature-scaled": []}
    start = time.perf_counter()
    with threadpool_limits(limits=1):
        for seed in range(seeds):
            rows += breast_cancer(seed, scale, pooled)
            rows += diabetes(seed, scale)
            rows += fair(seed, scale)
            print(f"seed {seed} done ({time.perf_counter() - start:.0f} s)", flush=True)
    if not args.quick:
        from layerwise.tasks.medical import reliability_plot

        sick = np.concatenate(pooled.pop("sick"))
        reliability_plot(
            sick,
            {name: np.concatenate(parts) for name, parts in pooled.items()},
            RESULTS_DIR / "tabular_reliability.png",
            title=f"Breast cancer, test splits of {seeds} seeds ({len(sick)} rows)",
        )
    summary = summarise(rows)
    print(show(summary))
    info["load_average_at_end"] = list(os.getloadavg())
    if not args.quick:
        write_json(
            RESULTS_DIR / "tabular.json",
            {
                "machine": info,
                "seeds": seeds,
                "settings": {
                    "mlp_classifier": {**MLP_CLASSIFIER, "hidden": list(MLP_CLASSIFIER["hidden"])},
                    "mlp_regressor": {**MLP_REGRESSOR, "hidden": list(MLP_REGRESSOR["hidden"])},
                    "fair_mlp": FAIR_MLP,
                    "val_fraction": VAL_FRACTION,
                    "threads": 1,
                },
                "summary": summary,
                "rows": rows,
                "seconds": time.perf_counter() - start,
            },
        )


if __name__ == "__main__":
    main()
