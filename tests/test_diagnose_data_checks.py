"""profile_data: every number on hand-made data, near copies, NaN safety, and the label-noise
estimate on digits with known flipped labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from layerwise.data import DatasetBundle, load_dataset
from layerwise.data.label_noise import noisy_label_indices
from layerwise.data.overlap import NEAR_RMS
from layerwise.diagnose.data_checks import profile_data
from layerwise.diagnose.findings import apply_patch
from layerwise.errors import DataError


def table(train, val=None, test=None, num_classes=3, task="classification") -> DatasetBundle:
    return DatasetBundle("t", train, val, test, num_classes, tuple(train[0].shape[1:]), task=task)


def uniform(rows: int, width: int, seed: int) -> torch.Tensor:
    return torch.rand(rows, width, generator=torch.Generator().manual_seed(seed))


def labels(rows: int, num_classes: int = 3) -> torch.Tensor:
    return torch.arange(rows) % num_classes


def flip(y: torch.Tensor, fraction: float, num_classes: int, seed: int = 0):
    """Labels with `fraction` of them moved to another class, and the rows that moved."""
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(y), round(fraction * len(y)), replace=False)
    y = y.clone()
    shift = torch.from_numpy(rng.integers(1, num_classes, len(rows)))
    y[rows] = (y[rows] + shift) % num_classes
    return y, rows


def test_profile_is_json_and_names_the_dataset_facts() -> None:
    x = uniform(60, 4, 0)
    profile = profile_data(table((x, labels(60)), test=(x[:0], labels(0))), num_params=1234)
    json.dumps(profile, allow_nan=False)
    assert profile["task"] == "classification"
    assert (profile["num_classes"], profile["input_shape"]) == (3, [4])
    assert (profile["image"], profile["dtype"], profile["num_params"]) == (False, "float32", 1234)
    assert profile["sizes"] == {"train": 60, "val": 0, "test": 0}
    # An absent split is None; a present but empty one has zeros.
    assert profile["overlap"]["val"] is None and profile["nonfinite"]["val"] is None
    assert profile["overlap"]["test"] == {"exact": 0, "near": 0, "fraction": 0.0}
    assert profile["class_counts"]["test"] == [0, 0, 0]


def test_class_counts_per_split_and_labels_out_of_range() -> None:
    x = uniform(20, 3, 0)
    y_train = torch.tensor([0] * 12 + [1] * 5 + [2] * 2 + [3])  # 3 is not a class of 3
    y_val = torch.tensor([2, 2, 0, -1])
    profile = profile_data(table((x, y_train), val=(x[:4], y_val)))
    assert profile["class_counts"] == {"train": [12, 5, 2], "val": [1, 0, 2], "test": None}
    assert profile["invalid_labels"] == {"train": 1, "val": 1, "test": None}


def test_duplicates_count_repeats_groups_and_conflicting_labels() -> None:
    x, y = uniform(100, 5, 0), labels(100)
    x_dup = torch.cat([x, x[[0, 1, 1, 7]]])
    y_dup = torch.cat([y, torch.stack([y[0] + 1, y[1], y[1], y[7]]) % 3])
    dup = profile_data(table((x_dup, y_dup)), label_noise=False)["duplicates"]
    # Row 1 three times, rows 0 and 7 twice: 4 repeats in 3 groups, and only row 0 changes label.
    assert dup == {
        "rows": 4,
        "fraction": 4 / 104,
        "groups": 3,
        "conflicting_labels": 1,
        "indices": [100, 101, 102, 103],
    }
    clean = profile_data(table((x, y)), label_noise=False)["duplicates"]
    assert (clean["rows"], clean["groups"]) == (0, 0)


def test_exact_hash_treats_negative_zero_and_nan_as_equal_values() -> None:
    x = uniform(30, 4, 0)
    x[3, 0], x[4, 2] = 0.0, float("nan")
    copies = x[[3, 4]].clone()
    copies[0, 0] = -0.0
    overlap = profile_data(table((x, labels(30)), test=(copies, labels(2))))["overlap"]
    assert overlap["test"]["exact"] == 2
    assert overlap["train_indices"] == [3, 4]


@pytest.mark.parametrize("width", [6, 40])  # 40 > 12 columns: searched in a PCA projection
def test_overlap_finds_exact_and_noisy_copies_but_not_new_rows(width: int) -> None:
    x = uniform(300, width, 0) * torch.linspace(1, 50, width)  # columns of different ranges
    span = x.max(0).values - x.min(0).values
    noise = (uniform(4, width, 1) * 2 - 1) * 0.01 * span  # within ±1% of each column's range
    test = torch.cat(
        [uniform(50, width, 2) * torch.linspace(1, 50, width), x[10:15], x[20:24] + noise]
    )
    val = uniform(30, width, 3) * torch.linspace(1, 50, width)
    profile = profile_data(table((x, labels(300)), val=(val, labels(30)), test=(test, labels(59))))
    overlap = profile["overlap"]
    assert overlap["test"] == {"exact": 5, "near": 9, "fraction": 9 / 59}
    assert overlap["val"] == {"exact": 0, "near": 0, "fraction": 0.0}
    assert overlap["train_indices"] == [10, 11, 12, 13, 14, 20, 21, 22, 23]
    assert overlap["train_rows"] == 9 and overlap["near_rms"] == NEAR_RMS


def test_a_copy_just_outside_the_near_threshold_is_not_near() -> None:
    x = uniform(200, 20, 0)
    span = x.max(0).values - x.min(0).values
    signs = torch.where(torch.arange(20) % 2 == 0, 1.0, -1.0)
    close = x[:1] + signs * 0.8 * NEAR_RMS * span  # RMS distance 0.8 x threshold
    far = x[1:2] + signs * 1.3 * NEAR_RMS * span
    test = torch.cat([close, far])
    overlap = profile_data(table((x, labels(200)), test=(test, labels(2))))["overlap"]
    assert (overlap["test"]["near"], overlap["train_indices"]) == (1, [0])


def test_nonfinite_counts_per_split() -> None:
    x = uniform(40, 5, 0)
    val = uniform(10, 5, 1)
    val[0, 1], val[0, 2], val[3, 1], val[9, 4] = float("nan"), float("inf"), float("nan"), -np.inf
    profile = profile_data(table((x, labels(40)), val=(val, labels(10))))
    assert profile["nonfinite"]["train"] == {
        "nan": 0,
        "inf": 0,
        "rows": 0,
        "column_count": 0,
        "columns": [],
    }
    assert profile["nonfinite"]["val"] == {
        "nan": 2,
        "inf": 2,
        "rows": 3,
        "column_count": 3,
        "columns": [1, 2, 4],
    }


def test_constant_features_are_counted_by_position() -> None:
    x = uniform(50, 6, 0)
    x[:, 2] = 5.0
    x[:, 4] = float("nan")  # no finite value at all: nothing to learn from either
    x[0, 5] = float("nan")  # NaN aside, column 5 still varies
    constant = profile_data(table((x, labels(50))))["constant_features"]
    assert constant == {"count": 2, "fraction": 2 / 6, "indices": [2, 4]}


def test_scale_on_a_table_uses_finite_values_and_columns_as_features() -> None:
    x = torch.tensor([[0.0, 100.0], [2.0, 300.0], [4.0, 200.0], [float("nan"), 1e9]])
    x[3, 1] = float("inf")
    scale = profile_data(table((x, torch.tensor([0, 1, 0, 1])), num_classes=2))["scale"]
    finite = np.array([0.0, 2.0, 4.0, 100.0, 300.0, 200.0])
    assert (scale["min"], scale["max"]) == (0.0, 300.0)
    assert scale["mean"] == pytest.approx(finite.mean())
    assert scale["std"] == pytest.approx(finite.std())
    assert scale["max_abs_feature_mean"] == pytest.approx(200.0)
    std_a, std_b = np.std([0, 2, 4]), np.std([100, 300, 200])
    assert scale["feature_std_ratio"] == pytest.approx(std_b / std_a)
    assert scale["feature_std"]["min"] == pytest.approx(std_a)
    assert scale["feature_std"]["max"] == pytest.approx(std_b)
    assert scale["features"] == 2


def test_scale_on_images_is_per_channel_and_border_pixels_are_constant() -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.randn(64, 2, 4, 4, generator=g) * torch.tensor([1.0, 100.0]).view(1, 2, 1, 1)
    images[:, :, 0, 0] = 0.0  # a blank corner in both channels
    profile = profile_data(table((images, labels(64))))
    assert profile["image"] and profile["scale"]["features"] == 2
    channel_std = images.double().transpose(0, 1).reshape(2, -1).std(1, unbiased=False)
    assert profile["scale"]["feature_std_ratio"] == pytest.approx(
        float(channel_std[1] / channel_std[0]), rel=1e-6
    )
    assert profile["constant_features"]["indices"] == [0, 16]
    assert profile["constant_features"]["fraction"] == 2 / 32


def test_regression_has_no_class_counts_and_compares_targets_for_conflicts() -> None:
    x = uniform(80, 3, 0)
    x[1] = x[0]
    x[3] = x[2]
    y = torch.arange(80, dtype=torch.float32).unsqueeze(1)
    y[3] = y[2]  # rows 2 and 3 agree, rows 0 and 1 do not
    profile = profile_data(table((x, y), num_classes=1, task="regression"))
    assert profile["class_counts"] is None and profile["label_noise"] is None
    assert profile["duplicates"]["groups"] == 2
    assert profile["duplicates"]["conflicting_labels"] == 1


@pytest.mark.parametrize(
    "poison",
    ["column", "everything", "inf", "val_only"],
)
def test_never_raises_on_nonfinite_inputs(poison: str) -> None:
    x, val = uniform(120, 8, 0), uniform(20, 8, 1)
    if poison == "column":
        x[:, 3] = float("nan")
    elif poison == "everything":
        x[:] = float("nan")
    elif poison == "inf":
        x[::7, 1] = float("inf")
        x[::5, 2] = -float("inf")
    else:
        val[:, :] = float("nan")
    profile = profile_data(table((x, labels(120)), val=(val, labels(20)), test=(x[:5], labels(5))))
    json.dumps(profile, allow_nan=False)
    assert profile["overlap"]["test"]["exact"] == 5
    bad = {"column": 120, "everything": 120, "inf": 18 + 24 - 4}  # multiples of 7, 5 and 35
    assert profile["nonfinite"]["train"]["rows"] == bad.get(poison, 0)
    assert profile["label_noise"] is not None


def test_never_raises_on_nan_images_or_a_one_row_train_split() -> None:
    images = torch.rand(80, 1, 5, 5, generator=torch.Generator().manual_seed(0))
    images[::3, 0, 2] = float("nan")
    profile = profile_data(table((images, labels(80)), test=(images[:4], labels(4))))
    json.dumps(profile, allow_nan=False)
    assert profile["nonfinite"]["train"]["nan"] == 27 * 5
    assert profile["overlap"]["test"]["exact"] == 4
    one = uniform(1, 30, 0)
    profile = profile_data(table((one, labels(1)), test=(torch.cat([one, one + 1]), labels(2))))
    assert profile["overlap"]["test"] == {"exact": 1, "near": 1, "fraction": 0.5}
    assert profile["scale"]["feature_std_ratio"] is None  # one row: every column is constant


def test_label_noise_is_low_on_clean_labels_a_linear_model_cannot_separate() -> None:
    # Two rings: a linear model guesses, so the nearest-neighbour vote is the one kept.
    g = torch.Generator().manual_seed(0)
    angle, ring = torch.rand(600, generator=g) * 6.283, torch.arange(600) % 2
    radius = (1 + ring) + 0.05 * torch.randn(600, generator=g)
    x = torch.stack([radius * angle.cos(), radius * angle.sin()], dim=1)
    noise = profile_data(table((x, ring), num_classes=2))["label_noise"]
    assert noise["estimated_fraction"] < 0.03
    assert "nearest-neighbour" in noise["method"] and noise["cv_accuracy"] > 0.95


def test_overlap_lists_at_most_1000_train_rows_but_counts_them_all() -> None:
    x = uniform(1200, 3, 0)
    overlap = profile_data(table((x, labels(1200)), test=(x, labels(1200))))["overlap"]
    assert overlap["train_rows"] == 1200 and overlap["train_indices"] == list(range(1000))


def test_label_noise_is_skipped_for_token_ids_small_data_and_on_request() -> None:
    tokens = torch.randint(0, 100, (200, 12), generator=torch.Generator().manual_seed(0))
    assert profile_data(table((tokens, labels(200))))["label_noise"] is None
    assert profile_data(table((uniform(49, 3, 0), labels(49))))["label_noise"] is None
    bundle = table((uniform(200, 3, 0), labels(200)))
    assert profile_data(bundle, label_noise=False)["label_noise"] is None


def test_shape_mismatch_and_missing_train_are_data_errors() -> None:
    with pytest.raises(DataError, match=r"test inputs of 't' have shape \(5,\)"):
        profile_data(table((uniform(10, 4, 0), labels(10)), test=(uniform(3, 5, 0), labels(3))))
    with pytest.raises(DataError, match="no training rows"):
        profile_data(table((uniform(0, 4, 0), labels(0))))


@pytest.fixture(scope="module")
def digits() -> DatasetBundle:
    return load_dataset("digits")


def test_healthy_digits_show_no_problem(digits: DatasetBundle) -> None:
    profile = profile_data(digits)
    assert profile["duplicates"]["rows"] == 0
    assert profile["overlap"]["train_rows"] == 0
    assert profile["nonfinite"]["train"]["rows"] == 0
    assert profile["label_noise"]["estimated_fraction"] < 0.02
    assert profile["label_noise"]["cv_accuracy"] > 0.9
    assert profile["label_noise"]["chance_accuracy"] == pytest.approx(131 / 1293)


def test_label_noise_estimate_on_digits_with_a_quarter_flipped(digits: DatasetBundle) -> None:
    y, flipped = flip(digits.train[1], 0.25, 10)
    bundle = DatasetBundle("noisy", (digits.train[0], y), digits.val, digits.test, 10, (1, 8, 8))
    noise = profile_data(bundle)["label_noise"]
    assert noise["estimated_fraction"] == pytest.approx(0.25, abs=0.08)
    assert noise["flagged"] == len(noise["indices"])
    assert noise["rows_examined"] == len(y) and noise["method"].startswith("confident learning")
    # Most flagged rows are the flipped ones, and the reusable helper flags the same rows.
    assert np.isin(noise["indices"], flipped).mean() > 0.7
    assert noisy_label_indices(digits.train[0], y, 10, 0).tolist() == noise["indices"]


def test_label_noise_subsample_keeps_original_row_indices(digits: DatasetBundle) -> None:
    y, flipped = flip(digits.train[1], 0.3, 10, seed=1)
    rows = noisy_label_indices(digits.train[0], y, 10, 0, max_rows=600)
    assert len(rows) == pytest.approx(0.3 * 600, abs=0.1 * 600)
    assert np.isin(rows, flipped).mean() > 0.7


def test_near_copies_of_digits_test_rows_in_train_are_found(digits: DatasetBundle) -> None:
    x_test = digits.test[0]
    noise = (torch.rand(20, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1) * 0.01
    leaked = torch.cat([digits.train[0], x_test[:20] + noise])
    y = torch.cat([digits.train[1], digits.test[1][:20]])
    bundle = DatasetBundle("leaky", (leaked, y), digits.val, digits.test, 10, (1, 8, 8))
    overlap = profile_data(bundle, label_noise=False)["overlap"]
    assert overlap["test"] == {"exact": 0, "near": 20, "fraction": 20 / len(x_test)}
    assert overlap["train_indices"] == list(range(len(digits.train[0]), len(leaked)))


def test_same_seed_same_profile(digits: DatasetBundle) -> None:
    y, _ = flip(digits.train[1], 0.2, 10)
    bundle = DatasetBundle("noisy", (digits.train[0], y), None, digits.test, 10, (1, 8, 8))
    assert profile_data(bundle, seed=3) == profile_data(bundle, seed=3)


def test_mnist_sample_has_no_near_copies_across_splits(shared_data: Path) -> None:
    bundle = load_dataset("mnist", root=shared_data, subset=3000)
    profile = profile_data(bundle, label_noise=False)
    assert profile["overlap"]["test"]["near"] == 0
    assert profile["duplicates"]["rows"] == 0
    assert profile["constant_features"]["count"] > 0  # blank border pixels


# ------------------------------------------------------------------ a finding and its own patch
def data_findings(raw: dict) -> tuple[DatasetBundle, dict, dict]:
    """Build the recipe's data as a run does (`build_data`: loader, then the data fixes), profile
    it and run the data rules: (data, profile, findings by code)."""
    from layerwise.diagnose.rules import RuleContext, run_rules
    from layerwise.experiment import build_data
    from layerwise.recipe import validate_recipe

    recipe = validate_recipe(raw)
    data = build_data(recipe)
    profile = profile_data(data, label_noise=False)
    context = RuleContext(
        history=[],
        probes=None,
        data=profile,
        recipe=recipe.model_dump(mode="json"),
        task=data.task,
        num_classes=data.num_classes,
        final=True,
    )
    return data, profile, {f.code: f for f in run_rules(context, "data")}


def test_near_copy_leakage_is_cleared_by_the_findings_own_patch() -> None:
    leaky = {"dataset": "digits", "leakage": 0.02, "near_leakage": 0.1}
    raw = {"name": "leaky", "data": {"name": "faulty", "args": leaky}, "model": {"name": "mlp"}}
    _, profile, findings = data_findings(raw)
    assert profile["overlap"]["test"] == {"exact": 7, "near": 43, "fraction": 43 / 360}
    finding = findings["train_test_leakage"]
    assert finding.patch == {"data.drop_leaked": True}

    # Dropping exact copies only (the patch this finding used to carry) leaves it standing.
    _, exact_only, still = data_findings(apply_patch(raw, {"data.drop_duplicates": True}))
    assert exact_only["overlap"]["test"]["exact"] == 0 and "train_test_leakage" in still

    fixed, after, left = data_findings(apply_patch(raw, finding.patch))
    assert "train_test_leakage" not in left
    assert after["overlap"]["test"] == {"exact": 0, "near": 0, "fraction": 0.0}
    assert after["overlap"]["train_rows"] == 0
    # exactly the 43 leaked rows went: what is left is digits' own training split
    assert torch.equal(fixed.train[0], load_dataset("digits").train[0])


@pytest.mark.parametrize("name", ["digits", "wine", "breast_cancer"])
def test_healthy_data_loses_no_row_to_the_copy_fixes(name: str) -> None:
    raw = {"name": "ok", "data": {"name": name}, "model": {"name": "mlp"}}
    before, profile, findings = data_findings(raw)
    assert "train_test_leakage" not in findings and profile["overlap"]["train_rows"] == 0
    fixes = {"data.drop_leaked": True, "data.drop_duplicates": True}
    after, _, _ = data_findings(apply_patch(raw, fixes))
    assert after.sizes() == before.sizes()


def _flip(y: np.ndarray, share: float, classes: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(y), int(share * len(y)), replace=False)
    flipped = y.copy()
    flipped[rows] = (y[rows] + rng.integers(1, classes, len(rows))) % classes
    return flipped


def test_overlapping_classes_are_not_read_as_label_noise() -> None:
    """Four 2-D blobs that overlap (no label wrong): the quick model's flags sit at the borders
    (~12% of rows) while the quarter of rows it is surest of all agree with their labels. With
    a fifth of the labels flipped, those surest rows disagree as often as the flags say."""
    from sklearn.datasets import make_blobs

    from layerwise.data.label_noise import estimate_label_noise

    x, y = make_blobs(1400, 2, centers=4, cluster_std=2.5, random_state=1)
    clean = estimate_label_noise(x, y, 4, seed=0)
    assert clean["raw_fraction"] > 0.1  # what the flags alone would have said
    assert clean["estimated_fraction"] is None and "overlap" in clean["abstained"]
    assert clean["confident_disagreement"] < 0.03
    noisy = estimate_label_noise(x, _flip(y, 0.2, 4, seed=0), 4, seed=0)
    assert noisy["abstained"] is None and noisy["estimated_fraction"] > 0.15
    assert noisy["confident_disagreement"] > 0.1


def test_learnable_training_labels_are_not_judged_by_the_held_out_split() -> None:
    """The doctor field's `overfit_big_mlp` (fresh seed 207): a hard table (6 informative columns
    of 50, 300 training rows, no label wrong). The training split's quick model gets ~60% of the
    way from chance, short of the 2/3 the estimate needs, so it abstains. Those labels are
    learnable, so a model fitted on the 120 held-out rows is no better judge: no cross-split
    estimate (before, it flagged 25% of the training rows as wrong)."""
    import sys

    from conftest import REPO
    from layerwise.data.label_noise import estimate_label_noise

    sys.path.insert(0, str(REPO / "benchmarks" / "doctor_field"))
    import setups

    setup = setups.build("overfit_big_mlp", 207)
    (x, y), (x_val, y_val) = setup.train, setup.val
    noise = estimate_label_noise(x.numpy(), y.numpy(), 2, seed=207, held_out=(x_val, y_val))
    assert noise["estimated_fraction"] is None
    assert 1 / 3 <= noise["progress"] < 2 / 3 and not noise.get("cross_split")
