"""Mixed numeric/categorical tables: the encoder (fitted on training rows only), the
`tabular_mlp` model, the `csv_table` dataset and a whole run that predicts raw CSV rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from layerwise import experiment
from layerwise.data import load_dataset
from layerwise.data.mixed_table import TABLE_FILE, TableEncoder, table_bundle
from layerwise.errors import DataError
from layerwise.models import create_model
from layerwise.predict import evaluate_file, predict_run
from layerwise.recipe import Recipe


def clinic_frame(rows: int = 240, seed: int = 0) -> pd.DataFrame:
    """A made-up clinic table: the outcome depends on the ward (a category) and on the dose
    (a number with gaps), so a model must read both."""
    rng = np.random.default_rng(seed)
    ward = rng.choice(["north", "south", "east"], size=rows)
    dose = rng.normal(50.0, 10.0, size=rows)
    age = rng.integers(20, 90, size=rows).astype(float)
    score = (ward == "north") * 2.0 + (dose - 50.0) / 5.0 + rng.normal(0, 0.3, size=rows)
    dose[rng.random(rows) < 0.1] = np.nan
    return pd.DataFrame(
        {"ward": ward, "dose": dose, "age": age, "outcome": np.where(score > 1, "bad", "good")}
    )


def test_encoder_layout_unknown_slot_missing_flags_and_training_only_statistics():
    train = pd.DataFrame(
        {"ward": ["a", "b", None, "a"], "dose": [1.0, np.nan, 3.0, 5.0], "age": [10, 20, 30, 40]}
    )
    encoder = TableEncoder.fit(train, numeric=["dose", "age"], categorical=["ward"])
    assert encoder.categories == {"ward": ["<missing>", "a", "b"]}
    assert encoder.cardinalities == [4]  # three seen values + the unknown slot 0
    assert encoder.indicators == ["dose"]  # only dose had gaps in training
    assert encoder.fill == [3.0, 25.0]  # medians of the training rows
    new = pd.DataFrame(
        {"ward": ["b", "zzz", None], "dose": [np.nan, 3.0, 1.0], "age": [25, 25, 25]}
    )
    x, notes = encoder.transform(new, "new.csv")
    assert x.shape == (3, 1 + 2 + 1)
    assert x[:, 0].tolist() == [3.0, 0.0, 1.0]  # b, unknown, <missing>
    dose_mean = np.mean([1.0, 3.0, 3.0, 5.0])  # the gap filled with the median 3 before scaling
    dose_std = np.std([1.0, 3.0, 3.0, 5.0])
    assert x[0, 1].item() == pytest.approx((3.0 - dose_mean) / dose_std)
    assert x[:, 3].tolist() == [1.0, 0.0, 0.0]  # the missing-dose flag
    assert any("never seen in training (zzz)" in n for n in notes)
    assert any("1 missing number" in n for n in notes)


def test_scaling_is_fitted_on_the_training_split_only():
    frame = clinic_frame()
    bundle = table_bundle(frame, "outcome", test_fraction=0.25, val_fraction=0.1, seed=3)
    numeric_start = len(bundle.table.categorical)
    train_numbers = bundle.train[0][:, numeric_start : numeric_start + 2]
    assert train_numbers.mean(0).abs().max() < 1e-5  # exactly standardised on train
    test_numbers = bundle.test[0][:, numeric_start : numeric_start + 2]
    assert test_numbers.mean(0).abs().max() > 1e-3  # the test rows were not used to fit
    assert bundle.table.categorical == ["ward"] and bundle.table.numeric == ["dose", "age"]
    assert bundle.class_names == ["bad", "good"]
    assert bundle.model_args == {"cardinalities": [4], "num_numeric": 3}


def test_tabular_mlp_reads_codes_and_maps_out_of_range_codes_to_the_unknown_slot():
    torch.manual_seed(0)
    model = create_model("tabular_mlp", num_classes=2, cardinalities=[4], num_numeric=2)
    model.eval()
    rows = torch.tensor([[0.0, 0.5, -1.0], [7.0, 0.5, -1.0], [2.0, 0.5, -1.0]])
    out = model(rows)
    assert out.shape == (3, 2)
    assert torch.equal(out[0], out[1])  # code 7 does not exist: the unknown slot 0
    assert not torch.equal(out[0], out[2])


def test_text_in_a_numeric_column_and_a_missing_target_column_name_the_culprit():
    frame = clinic_frame(20)
    with pytest.raises(DataError, match="no column 'outcom'"):
        table_bundle(frame, "outcom")
    frame["dose"] = frame["dose"].astype(object)
    frame.loc[3, "dose"] = "high"
    with pytest.raises(DataError, match="numeric column 'dose' holds text"):
        table_bundle(frame, "outcome", numeric=["dose", "age"], categorical=["ward"])


@pytest.mark.slow
def test_csv_table_run_saves_its_encoder_and_predicts_raw_rows(tmp_path):
    frame = clinic_frame(300)
    frame.to_csv(tmp_path / "clinic.csv", index=False)
    recipe = Recipe.model_validate(
        {
            "name": "clinic",
            "data": {
                "name": "csv_table",
                "args": {"path": str(tmp_path / "clinic.csv"), "target": "outcome"},
            },
            "model": {"name": "tabular_mlp", "args": {"hidden": [16]}},
            "train": {"epochs": 12, "optimizer": {"name": "adam", "lr": 0.02}},
            "doctor": {"label_noise": False},
            "track": {"tensorboard": False},
        }
    )
    run, test_metrics = experiment.train(recipe, tmp_path / "runs", progress=False, echo=None)
    assert (run.path / TABLE_FILE).exists()
    assert test_metrics["accuracy"] >= 0.85  # ward and dose explain the outcome
    raw = frame.drop(columns=["outcome"]).iloc[:40]
    raw.to_csv(tmp_path / "new.csv", index=False)
    names, ranked, notes = predict_run(run.path, [tmp_path / "new.csv"])
    assert names[0] == "new.csv[0]" and len(ranked) == 40
    agreement = np.mean([r[0][0] == y for r, y in zip(ranked, frame["outcome"][:40], strict=True)])
    assert agreement >= 0.8
    frame.iloc[:40].to_csv(tmp_path / "labelled.csv", index=False)
    _, metrics, _ = evaluate_file(run.path, tmp_path / "labelled.csv")
    assert metrics["accuracy"] == pytest.approx(agreement)  # the same rows, encoded the same way
    assert any("missing number" in n for n in notes)  # the dose gaps were filled and said so
    loaded = experiment.load_experiment(run)
    bundle = load_dataset("csv_table", path=str(tmp_path / "clinic.csv"), target="outcome")
    assert loaded.data.table == bundle.table  # the same split and fit, rebuilt
    np.save(tmp_path / "rows.npy", np.zeros((2, 3)))
    with pytest.raises(DataError, match="is not a CSV file"):
        predict_run(run.path, [tmp_path / "rows.npy"])
    raw.drop(columns=["ward"]).to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(DataError, match="lacks column\\(s\\) 'ward'"):
        predict_run(run.path, [tmp_path / "short.csv"])


@pytest.mark.slow
def test_regression_table_run_predicts_values_not_probabilities(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"site": rng.choice(["a", "b"], 80), "x": rng.normal(size=80)})
    frame["y"] = 100.0 + 10.0 * frame["x"] + (frame["site"] == "a") * 5.0
    frame.to_csv(tmp_path / "sites.csv", index=False)
    recipe = Recipe.model_validate(
        {
            "name": "sites",
            "data": {
                "name": "csv_table",
                "args": {"path": str(tmp_path / "sites.csv"), "target": "y"},
            },
            "model": {"name": "tabular_mlp", "args": {"hidden": [8]}},
            "train": {"epochs": 2, "loss": {"name": "mse"}, "metrics": []},
            "doctor": {"probes": False, "data_checks": False},
            "track": {"tensorboard": False},
        }
    )
    run, _ = experiment.train(recipe, tmp_path / "runs", progress=False, echo=None)
    frame.drop(columns=["y"]).iloc[:5].to_csv(tmp_path / "new.csv", index=False)
    _, rows, _ = predict_run(run.path, [tmp_path / "new.csv"])
    loaded = experiment.load_experiment(run)
    expected = loaded.trainer.predict(loaded.data.table.transform(frame.iloc[:5])[0])
    assert [row[0][0] for row in rows] == ["value"] * 5
    assert [row[0][1] for row in rows] == pytest.approx(expected.reshape(-1).tolist())
