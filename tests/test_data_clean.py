"""Data fixes (`data.impute`, `drop_constant`, `drop_duplicates`, `drop_leaked`, `drop_noisy`,
`standardize`, `balance`) on hand-made tensors with known answers, and loaders that keep NaN for
them."""

from __future__ import annotations

import math
import sys
import types

import numpy as np
import pytest
import torch

from layerwise.data import DatasetBundle, check_finite, clean_bundle, load_dataset, to_tensors
from layerwise.data.clean import (
    drop_constant,
    drop_duplicates,
    drop_leaked,
    impute,
    oversample,
    standardize,
)
from layerwise.errors import DataError, RecipeError
from layerwise.recipe import DataSpec, parse_recipe

NAN, INF = math.nan, math.inf


def make(train, val=None, test=None, *, num_classes=3, task="classification") -> DatasetBundle:
    """A bundle from nested lists; labels default to 0, 1, 2, 0, 1, … per split."""

    def part(rows, labels=None):
        if rows is None:
            return None
        x = torch.tensor(rows, dtype=torch.float32)
        if labels is None:
            labels = [i % num_classes for i in range(len(x))]
        dtype = torch.float32 if task == "regression" else torch.int64
        return x, torch.tensor(labels, dtype=dtype)

    parts = [p if isinstance(p, tuple) else part(p) for p in (train, val, test)]
    return DatasetBundle(
        name="toy",
        train=parts[0],
        val=parts[1],
        test=parts[2],
        num_classes=num_classes,
        input_shape=tuple(parts[0][0].shape[1:]),
        task=task,
    )


def spec(**fields) -> DataSpec:
    return DataSpec(**fields)


@pytest.fixture
def fake_noise_check(monkeypatch):
    """Stands in for layerwise.data.label_noise.noisy_label_indices, recording its calls."""
    calls = []
    flagged: list[int] = []

    def noisy_label_indices(x, y, num_classes, seed):
        calls.append((x.clone(), y.clone(), num_classes, seed))
        return list(flagged)

    module = types.ModuleType("layerwise.data.label_noise")
    module.noisy_label_indices = noisy_label_indices
    monkeypatch.setitem(sys.modules, "layerwise.data.label_noise", module)
    return calls, flagged


# ------------------------------------------------------------------------------------- whole
def test_no_fix_asked_returns_the_same_bundle_and_an_empty_report():
    bundle = make([[1.0, NAN], [2.0, 3.0]])
    cleaned, report = clean_bundle(bundle, spec())
    assert cleaned is bundle and report == {}


def test_inputs_are_never_modified_in_place():
    bundle = make([[1.0, NAN, 5.0], [3.0, 4.0, 5.0], [1.0, NAN, 5.0]], [[NAN, 2.0, 5.0]])
    before = [t.clone() for part in (bundle.train, bundle.val) for t in part]
    everything = spec(
        impute="mean",
        drop_constant=True,
        drop_duplicates=True,
        standardize=True,
        balance="oversample",
    )
    clean_bundle(bundle, everything)
    after = [t for part in (bundle.train, bundle.val) for t in part]
    for a, b in zip(before, after, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


def test_fixes_run_in_order_impute_constant_duplicates_noisy_standardize_balance(
    fake_noise_check,
):
    calls, flagged = fake_noise_check
    train = (
        # col 0 has a gap the median (2) fills, making row 0 a copy of rows 1 and 2;
        # col 2 is constant; the last row is a copy of the test row.
        torch.tensor(
            [
                [NAN, 1.0, 7.0],
                [2.0, 1.0, 7.0],
                [2.0, 1.0, 7.0],
                [8.0, 0.0, 7.0],
                [1.0, 3.0, 7.0],
                [0.0, 5.0, 7.0],
                [9.0, 9.0, 7.0],
            ]
        ),
        torch.tensor([0, 0, 0, 1, 1, 0, 1]),
    )
    test = (torch.tensor([[9.0, 9.0, 7.0]]), torch.tensor([1]))
    bundle = make(train, None, test, num_classes=2)
    flagged.append(3)  # of the 4 rows left, [0, 5] (label 0) is "mislabelled"
    everything = spec(
        impute="median",
        drop_constant=True,
        drop_duplicates=True,
        drop_noisy=True,
        standardize=True,
        balance="oversample",
    )
    cleaned, report = clean_bundle(bundle, everything, seed=3)

    assert list(report) == [
        "impute",
        "drop_constant",
        "drop_duplicates",
        "drop_noisy",
        "standardize",
        "balance",
    ]
    assert report["impute"]["values"] == 1
    assert report["drop_constant"] == {"features": 1, "indices": [2]}
    assert report["drop_duplicates"] == {"repeats": 2, "leaked": 1}
    # the noise check saw the deduplicated, still unscaled table, and the recipe's seed
    (x_seen, y_seen, num_classes, seed) = calls[0]
    assert torch.equal(x_seen, torch.tensor([[2.0, 1.0], [8.0, 0.0], [1.0, 3.0], [0.0, 5.0]]))
    assert y_seen.tolist() == [0, 1, 1, 0] and (num_classes, seed) == (2, 3)
    assert report["drop_noisy"] == {"rows": 1}
    # standardize is fit on the 3 rows kept: col 0 [2, 8, 1], col 1 [1, 0, 3]
    assert report["standardize"]["mean"] == pytest.approx([11 / 3, 4 / 3])
    # balance comes last: one copy of the single class-0 row, not dropped as a duplicate
    assert report["balance"]["counts_before"] == [1, 2] and report["balance"]["added"] == 1
    x, y = cleaned.train
    assert y.tolist() == [0, 1, 1, 0]
    assert torch.equal(x[3], x[0])
    assert cleaned.input_shape == (2,) and cleaned.test[0].shape == (1, 2)


def test_report_is_json_able():
    import json

    bundle = make([[1.0, NAN, 2.0], [2.0, 4.0, 2.0], [2.0, 4.0, 2.0]], [[NAN, 1.0, 2.0]])
    everything = spec(
        impute="mean",
        drop_constant=True,
        drop_duplicates=True,
        standardize=True,
        balance="oversample",
    )
    _, report = clean_bundle(bundle, everything)
    assert json.loads(json.dumps(report)) == report


# ------------------------------------------------------------------------------------ impute
def test_impute_mean_fills_every_split_from_finite_train_values():
    bundle = make(
        [[1.0, NAN, NAN], [3.0, 4.0, NAN], [INF, 8.0, NAN]],
        [[NAN, NAN, NAN], [5.0, -INF, 1.0]],
        [[0.0, 0.0, 0.0]],
    )
    cleaned, report = impute(bundle, "mean")
    # col 0: mean of 1 and 3; col 1: mean of 4 and 8; col 2: no finite train value -> 0
    assert cleaned.train[0].tolist() == [[1.0, 6.0, 0.0], [3.0, 4.0, 0.0], [2.0, 8.0, 0.0]]
    assert cleaned.val[0].tolist() == [[2.0, 6.0, 0.0], [5.0, 6.0, 1.0]]
    assert cleaned.test[0] is bundle.test[0]  # nothing to fill: not copied
    assert report == {
        "strategy": "mean",
        "values": 9,
        "features": 3,
        "per_split": {"train": 5, "val": 4, "test": 0},
    }


def test_impute_median_resists_the_outlier():
    bundle = make([[1.0], [2.0], [100.0], [NAN]], [[NAN]])
    median, _ = impute(bundle, "median")
    mean, _ = impute(bundle, "mean")
    assert median.train[0][3].item() == 2.0 and median.val[0].item() == 2.0
    assert mean.train[0][3].item() == pytest.approx(103 / 3)


def test_impute_median_of_an_even_count_is_the_middle_average():
    cleaned, _ = impute(make([[1.0], [2.0], [4.0], [10.0], [NAN]]), "median")
    assert cleaned.train[0][4].item() == 3.0


def test_impute_on_images_fills_per_pixel():
    x = torch.arange(8.0).reshape(2, 1, 2, 2)  # pixel (0, 0) is 0 then 4
    x[1, 0, 0, 0] = NAN
    x = torch.cat([x, torch.full((1, 1, 2, 2), 10.0)])  # pixel (0, 0): 0, NaN, 10 -> mean 5
    cleaned, report = impute(make((x, torch.tensor([0, 1, 2]))), "mean")
    assert cleaned.train[0][1, 0, 0, 0].item() == 5.0 and report["values"] == 1


def test_impute_with_nothing_missing_keeps_the_bundle():
    bundle = make([[1.0, 2.0]])
    cleaned, report = impute(bundle, "mean")
    assert cleaned is bundle and report["values"] == 0


# ----------------------------------------------------------------------------- drop_constant
def test_drop_constant_judges_train_only_and_narrows_every_split():
    bundle = make(
        [[1.0, 5.0, 0.0, 2.0], [2.0, 5.0, 0.0, 2.0], [3.0, 5.0, 0.0, 4.0]],
        [[9.0, 6.0, 1.0, 9.0]],  # val varies in cols 1 and 2: still dropped
        [[7.0, 5.0, 0.0, 8.0]],
    )
    cleaned, report = drop_constant(bundle)
    assert report == {"features": 2, "indices": [1, 2]}
    assert cleaned.train[0].tolist() == [[1.0, 2.0], [2.0, 2.0], [3.0, 4.0]]
    assert cleaned.val[0].tolist() == [[9.0, 9.0]] and cleaned.test[0].tolist() == [[7.0, 8.0]]
    assert cleaned.input_shape == (2,)
    assert bundle.input_shape == (4,)


def test_drop_constant_refuses_images_with_a_hint():
    images = make((torch.zeros(3, 1, 2, 2), torch.tensor([0, 1, 2])))
    with pytest.raises(RecipeError) as info:
        clean_bundle(images, spec(drop_constant=True))
    assert "data.drop_constant" in info.value.message and "(1, 2, 2)" in info.value.message
    assert "images" in info.value.hint


def test_drop_constant_refuses_to_drop_every_feature():
    with pytest.raises(DataError, match="every one of the 2 features"):
        drop_constant(make([[1.0, 2.0], [1.0, 2.0]]))


# --------------------------------------------------------------------------- drop_duplicates
def test_drop_duplicates_drops_repeats_and_rows_leaked_from_val_and_test():
    a, b, c, d, e = [1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [4.0, 4.0], [5.0, 5.0]
    train = (torch.tensor([a, b, a, c, b, d, e, d, a]), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2]))
    bundle = make(train, [c], [d])
    cleaned, report = drop_duplicates(bundle)
    # a and b are kept once (their first rows, first labels); c (val) and both d (test) go
    assert report == {"repeats": 3, "leaked": 3}
    assert cleaned.train[0].tolist() == [a, b, e]
    assert cleaned.train[1].tolist() == [0, 1, 0]
    assert cleaned.val is bundle.val and cleaned.test is bundle.test


def test_drop_duplicates_compares_values_exactly():
    # -0.0 is 0.0 and NaN matches NaN (a copied row with a gap is still a copy); 1 ulp apart is not
    rows = [[0.0, 1.0], [-0.0, 1.0], [0.0, 1.0 + 1e-7], [NAN, 2.0], [NAN, 2.0], [INF, 2.0]]
    cleaned, report = drop_duplicates(make(rows))
    assert report == {"repeats": 2, "leaked": 0}
    kept = cleaned.train[0]
    assert len(kept) == 4 and kept[1, 1].item() == pytest.approx(1.0 + 1e-7)
    assert bool(torch.isinf(kept[3, 0]))
    unchanged = make([[0.0, 1.0], [0.0, 1.0 + 1e-7]])
    assert drop_duplicates(unchanged)[0] is unchanged


def test_drop_duplicates_refuses_to_empty_train():
    with pytest.raises(DataError, match="every training row"):
        drop_duplicates(make([[1.0], [1.0]], [[1.0]]))


# ------------------------------------------------------------------------------- drop_leaked
def _spread(rows: int, width: int, seed: int) -> torch.Tensor:
    """Rows far apart from each other: each feature uniform in [0, 1]."""
    return torch.rand(rows, width, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("width", [4, 30])  # 30 > 12 features: searched in a PCA projection
def test_drop_leaked_drops_every_train_row_near_or_equal_to_a_val_or_test_row(width):
    x = _spread(200, width, 0)
    span = x.max(0).values - x.min(0).values
    close = torch.where(torch.arange(width) % 2 == 0, 1.0, -1.0) * 0.005 * span  # 0.5% of range
    far = torch.where(torch.arange(width) % 2 == 0, 1.0, -1.0) * 0.03 * span  # 3% of range
    test = torch.cat([x[10:11] + close, x[20:21] + far, _spread(5, width, 1)])
    val = x[30:31].clone()  # an exact copy
    # Two train rows are near copies of the same test row: both go, not only the nearest.
    x = torch.cat([x, x[10:11] + 2 * close])
    bundle = make(
        (x, torch.arange(201) % 3), (val, torch.tensor([0])), (test, torch.zeros(7).long())
    )
    cleaned, report = drop_leaked(bundle)
    assert report == {"rows": 3, "exact": 1, "near_rms": 0.015}
    assert len(cleaned.train[0]) == 198
    kept = {tuple(row.tolist()) for row in cleaned.train[0]}
    for row in (10, 30, 200):
        assert tuple(x[row].tolist()) not in kept
    assert tuple(x[20].tolist()) in kept  # 3% away: a different row
    assert cleaned.val is bundle.val and cleaned.test is bundle.test


def test_drop_leaked_keeps_data_without_copies_and_refuses_to_empty_train():
    x = _spread(50, 3, 0)
    bundle = make((x, torch.arange(50) % 3), (_spread(10, 3, 1), torch.zeros(10).long()))
    assert drop_leaked(bundle)[0] is bundle
    no_held_out = make((x, torch.arange(50) % 3))
    assert drop_leaked(no_held_out) == (no_held_out, {"rows": 0, "exact": 0, "near_rms": 0.015})
    with pytest.raises(DataError, match="every training row"):
        drop_leaked(make([[1.0, 2.0], [3.0, 4.0]], [[1.0, 2.0]], [[3.0, 4.0]]))


def test_drop_leaked_runs_after_drop_duplicates_in_clean_bundle():
    x = _spread(60, 3, 0)
    train = torch.cat([x, x[:2], x[5:6] + 0.001])  # 2 repeats, 1 near copy of a test row
    bundle = make((train, torch.arange(63) % 3), None, (x[5:6], torch.tensor([2])))
    _, report = clean_bundle(bundle, spec(drop_duplicates=True, drop_leaked=True))
    assert list(report) == ["drop_duplicates", "drop_leaked"]
    assert report["drop_duplicates"] == {"repeats": 2, "leaked": 1}
    assert report["drop_leaked"]["rows"] == 1  # the near copy; the exact one was already gone


# -------------------------------------------------------------------------------- drop_noisy
def test_drop_noisy_drops_the_rows_the_check_flags(fake_noise_check):
    calls, flagged = fake_noise_check
    flagged.extend([3, 0, 3])
    bundle = make([[0.0], [1.0], [2.0], [3.0], [4.0]], [[9.0]])
    cleaned, report = clean_bundle(bundle, spec(drop_noisy=True), seed=7)
    assert report == {"drop_noisy": {"rows": 2}}
    assert cleaned.train[0].flatten().tolist() == [1.0, 2.0, 4.0]
    assert cleaned.train[1].tolist() == [1, 2, 1]
    assert calls[0][2:] == (3, 7) and cleaned.val is bundle.val


def test_drop_noisy_needs_classes_and_finite_inputs(fake_noise_check):
    regression = make([[0.0], [1.0]], task="regression", num_classes=1)
    with pytest.raises(RecipeError, match=r"data\.drop_noisy needs class labels"):
        clean_bundle(regression, spec(drop_noisy=True))
    with pytest.raises(DataError, match="NaN") as info:
        clean_bundle(make([[0.0], [NAN]]), spec(drop_noisy=True))
    assert "data.impute" in info.value.hint
    # with impute on, the gap is filled first and the check runs
    clean_bundle(make([[0.0], [NAN]]), spec(drop_noisy=True, impute="mean"))
    assert fake_noise_check[0][-1][0].tolist() == [[0.0], [0.0]]


# ------------------------------------------------------------------------------- standardize
def test_standardize_tables_per_feature_with_train_statistics():
    bundle = make([[1.0, 10.0, 7.0], [3.0, 30.0, 7.0]], [[5.0, 0.0, 8.0]], [[2.0, 20.0, 7.0]])
    cleaned, report = standardize(bundle)
    assert cleaned.train[0].tolist() == [[-1.0, -1.0, 0.0], [1.0, 1.0, 0.0]]
    # val is far from train and stays so: it is scaled with train's statistics
    assert cleaned.val[0].tolist() == [[3.0, -2.0, 1.0]]
    assert cleaned.test[0].tolist() == [[0.0, 0.0, 0.0]]
    assert report == {
        "dims": "feature",
        "mean": [2.0, 20.0, 7.0],
        "std": [1.0, 10.0, 1.0],
        "constant": 1,
    }


def test_standardize_centres_a_constant_feature_to_exactly_zero():
    # 0.1 is not exact in float32, so its summed mean is not 0.1 exactly either
    x = torch.cat([torch.full((1000, 1), 0.1), torch.arange(1000.0).unsqueeze(1)], dim=1)
    cleaned, report = standardize(make((x, torch.zeros(1000, dtype=torch.int64))))
    assert bool((cleaned.train[0][:, 0] == 0).all()) and report["constant"] == 1
    assert cleaned.train[0][:, 1].std(correction=0).item() == pytest.approx(1.0, abs=1e-5)


def test_standardize_images_per_channel_and_updates_pixel_stats():
    x = torch.zeros(2, 2, 1, 2)
    x[:, 0] = torch.tensor([[[0.0, 2.0]], [[4.0, 6.0]]])  # mean 3, std sqrt(5)
    x[:, 1] = 9.0  # constant channel
    cleaned, report = standardize(make((x, torch.tensor([0, 1]))))
    assert report["dims"] == "channel"
    assert report["mean"] == [3.0, 9.0] and report["std"] == pytest.approx([math.sqrt(5), 1.0])
    expected = (torch.tensor([0.0, 2.0, 4.0, 6.0]) - 3) / math.sqrt(5)
    assert torch.allclose(cleaned.train[0][:, 0].flatten(), expected)
    assert bool((cleaned.train[0][:, 1] == 0).all())
    assert cleaned.pixel_stats is None  # one (mean, std) cannot describe two channels


def test_standardize_single_channel_pixel_stats_reproduce_the_training_inputs():
    pixels = torch.rand(20, 1, 3, 3)
    bundle = make((pixels * 2 - 0.5, torch.zeros(20, dtype=torch.int64)))
    bundle.pixel_stats = (0.25, 0.5)  # the loader already mapped pixels p to (p - 0.25) / 0.5
    cleaned, _ = standardize(bundle)
    mean, std = cleaned.pixel_stats
    # what `layerwise predict` does to a new image file in [0, 1]
    assert torch.allclose((pixels - mean) / std, cleaned.train[0], atol=1e-5)


def test_standardize_ignores_nan_and_keeps_it_in_place():
    cleaned, report = standardize(make([[1.0], [NAN], [3.0]]))
    assert report["mean"] == [2.0] and report["std"] == [1.0]
    assert cleaned.train[0].flatten().tolist()[::2] == [-1.0, 1.0]
    assert math.isnan(cleaned.train[0][1].item())


def test_standardize_refuses_token_ids():
    tokens = make((torch.tensor([[1, 2], [3, 4]]), torch.tensor([0, 1])))
    with pytest.raises(RecipeError, match="integer token ids"):
        standardize(tokens)


# ----------------------------------------------------------------------------------- balance
def test_oversample_draws_copies_until_every_class_matches_the_largest():
    y = torch.tensor([0, 0, 0, 0, 1, 2, 2])
    x = torch.arange(7.0).unsqueeze(1)
    bundle = make((x, y), num_classes=4)  # class 3 has no rows at all
    cleaned, report = oversample(bundle, seed=0)
    assert report == {
        "method": "oversample",
        "added": 5,
        "rows_per_class": 4,
        "counts_before": [4, 1, 2, 0],
        "empty": [3],
    }
    xs, ys = cleaned.train
    assert torch.bincount(ys, minlength=4).tolist() == [4, 4, 4, 0]
    assert torch.equal(xs[:7], x) and torch.equal(ys[:7], y)  # every original row, first
    for row, label in zip(xs[7:].flatten().tolist(), ys[7:].tolist(), strict=True):
        assert y[int(row)].item() == label  # each copy is a real row of its class
    again, _ = oversample(bundle, seed=0)
    assert torch.equal(again.train[0], xs)


def test_oversample_is_seeded():
    y = torch.tensor([0] * 10 + [1] * 3)
    bundle = make((torch.arange(13.0).unsqueeze(1), y), num_classes=2)
    draws = [tuple(oversample(bundle, s)[0].train[0][13:].flatten().tolist()) for s in range(4)]
    assert all(len(d) == 7 and set(d) <= {10.0, 11.0, 12.0} for d in draws)
    assert len(set(draws)) > 1
    assert oversample(bundle, 2)[0].train[0][13:].flatten().tolist() == list(draws[2])


def test_balance_needs_classes():
    with pytest.raises(RecipeError, match=r"data\.balance needs class labels"):
        clean_bundle(make([[0.0]], task="regression", num_classes=1), spec(balance="oversample"))


# ---------------------------------------------------------------------------- recipe fields
def test_fields_default_off():
    data = parse_recipe("name: r\nmodel: {name: mlp}\n").data
    assert (data.impute, data.balance) == (None, None)
    assert not (data.standardize or data.drop_duplicates or data.drop_constant or data.drop_noisy)
    assert not data.drop_leaked


@pytest.mark.parametrize(
    "setting",
    [
        "impute: mode",
        "impute: 0",
        "balance: undersample",
        "standardize: maybe",
        "drop_duplicates: [1]",
        "drop_leaked: maybe",
        "drop_constant: 2",
        "drop_noisy: {a: 1}",
        "drop_nan: true",
    ],
)
def test_bad_field_values_are_recipe_errors_naming_the_field(setting):
    key = setting.split(":")[0]
    with pytest.raises(RecipeError) as info:
        parse_recipe(f"name: r\nmodel: {{name: mlp}}\ndata: {{{setting}}}\n")
    assert f"data.{key}" in info.value.message


def test_fields_parse_from_yaml_and_overrides():
    recipe = parse_recipe(
        "name: r\nmodel: {name: mlp}\ndata: {impute: median, balance: oversample}\n",
        overrides=["data.standardize=true", "data.drop_duplicates=yes"],
    )
    assert recipe.data.impute == "median" and recipe.data.balance == "oversample"
    assert recipe.data.standardize and recipe.data.drop_duplicates


# ---------------------------------------------------------------------- loaders and the gate
def test_to_tensors_keeps_nonfinite_only_when_allowed():
    x = np.array([[1.0, np.nan], [np.inf, 2.0]])
    with pytest.raises(DataError, match="1 NaN and 1 infinite"):
        to_tensors(x, [0, 1])
    xt, _ = to_tensors(x, [0, 1], allow_nonfinite=True)
    assert int(torch.isnan(xt).sum()) == 1 and int(torch.isinf(xt).sum()) == 1
    with pytest.raises(DataError, match="labels contain 1 NaN"):
        to_tensors(x, [0.0, np.nan], allow_nonfinite=True)  # labels must be finite regardless


def test_csv_and_npz_loaders_keep_nan_for_impute_to_fill(tmp_path):
    rows = ["a,b,label"] + [f"{i},{i % 5},{i % 2}" for i in range(20)]
    rows[4] = "3,,1"
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    x = np.tile(np.arange(3.0), (30, 1))
    x[7, 2], x[8, 0] = np.nan, np.inf
    np.savez(tmp_path / "t.npz", x=x, y=np.arange(30) % 3)

    table = load_dataset("csv", path=tmp_path / "t.csv", val_fraction=0)
    arrays = load_dataset("npz", path=tmp_path / "t.npz", val_fraction=0)
    for bundle, count in ((table, 1), (arrays, 2)):
        total = sum(int((~torch.isfinite(p[0])).sum()) for p in (bundle.train, bundle.test))
        assert total == count
        with pytest.raises(DataError, match="inputs of"):
            check_finite(bundle)
        filled, report = clean_bundle(bundle, spec(impute="median"))
        assert report["impute"]["values"] == count
        check_finite(filled)


def test_check_finite_names_split_counts_rows_and_features():
    bundle = make([[1.0, 2.0]], [[1.0, 2.0], [NAN, 1.0], [INF, NAN]])
    with pytest.raises(DataError) as info:
        check_finite(bundle)
    assert info.value.message == (
        "val inputs of 'toy' contain 2 NaN and 1 infinite values (2 rows, first row 1; "
        "features 0, 1)"
    )
    assert "data.impute" in info.value.hint
    check_finite(make([[1.0, 2.0]], [[3.0, 4.0]]))
