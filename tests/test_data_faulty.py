"""The `faulty` dataset injects exactly the faults it names, and the data fixes undo them."""

from __future__ import annotations

import hashlib
import math
from collections import Counter

import pytest
import torch

from layerwise.data import DatasetBundle, clean_bundle, load_dataset
from layerwise.data.faulty import NEAR_LEAK_NOISE, inject_faults
from layerwise.data.overlap import NEAR_RMS
from layerwise.errors import RecipeError
from layerwise.recipe import DataSpec

DIGITS = load_dataset("digits")  # train/val/test: 1293/144/360, no duplicates of its own
WINE = load_dataset("wine")  # 127/15/36, 13 raw features


def digest(row: torch.Tensor) -> bytes:
    return hashlib.blake2b(row.numpy().tobytes(), digest_size=16).digest()


def same_split(a, b) -> bool:
    if a is None or b is None:
        return a is b
    return torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_no_fault_is_the_dataset_itself_under_a_new_name():
    bundle = load_dataset("faulty")
    assert bundle.name == "faulty(digits)"
    for split in ("train", "val", "test"):
        assert same_split(getattr(bundle, split), getattr(DIGITS, split))
    assert (bundle.num_classes, bundle.input_shape) == (10, (1, 8, 8))


def test_name_lists_the_faults_in_signature_order():
    bundle = load_dataset("faulty", missing=0.1, label_noise=0.3, args={"seed": 0})
    assert bundle.name == "faulty(digits: label_noise=0.3, missing=0.1)"


def test_label_noise_flips_exactly_that_share_to_another_class():
    bundle, record = inject_faults(DIGITS, label_noise=0.3)
    y, y0 = bundle.train[1], DIGITS.train[1]
    changed = (y != y0).nonzero().flatten().tolist()
    assert len(changed) == round(0.3 * 1293) == 388
    assert record["label_noise"] == {"rows": changed, "count": 388}
    assert torch.equal(bundle.train[0], DIGITS.train[0])
    assert same_split(bundle.val, DIGITS.val) and same_split(bundle.test, DIGITS.test)
    assert y.min() >= 0 and y.max() <= 9
    # flips go to every other class, not to one neighbour
    assert len(Counter(((y - y0) % 10)[changed].tolist())) == 9


def test_duplicates_append_exact_copies_each_repeated_one_to_three_times():
    bundle, record = inject_faults(DIGITS, duplicates=0.3)
    x, y = bundle.train
    extra = round(0.3 * 1293)
    assert len(x) == 1293 + extra and record["duplicates"]["rows"] == extra
    assert torch.equal(x[:1293], DIGITS.train[0])
    originals = {digest(row): int(label) for row, label in zip(x[:1293], y[:1293], strict=True)}
    copies = Counter(digest(row) for row in x[1293:])
    assert set(copies) <= set(originals)
    assert set(copies.values()) == {1, 2, 3}
    assert len(copies) == record["duplicates"]["sources"]
    assert all(
        originals[digest(r)] == int(label) for r, label in zip(x[1293:], y[1293:], strict=True)
    )


def test_leakage_copies_test_rows_with_their_labels_into_train():
    bundle, record = inject_faults(DIGITS, leakage=0.1)
    x, y = bundle.train
    rows = record["leakage"]["test_rows"]
    assert len(x) == 1293 + 36 and len(rows) == record["leakage"]["rows"] == 36
    assert torch.equal(x[1293:], DIGITS.test[0][rows])
    assert torch.equal(y[1293:], DIGITS.test[1][rows])
    assert same_split(bundle.test, DIGITS.test)


def test_near_leakage_copies_other_test_rows_with_a_little_noise():
    bundle, record = inject_faults(DIGITS, leakage=0.05, near_leakage=0.1)
    x, y = bundle.train
    exact, near = record["leakage"]["test_rows"], record["near_leakage"]["test_rows"]
    assert len(exact) == 18 and len(near) == record["near_leakage"]["rows"] == 36
    assert not set(exact) & set(near)  # drawn from the rows leakage did not copy
    assert len(x) == 1293 + 18 + 36 and torch.equal(y[1293 + 18 :], DIGITS.test[1][near])
    copies, sources = x[1293 + 18 :], DIGITS.test[0][near]
    span = DIGITS.train[0].max() - DIGITS.train[0].min()  # images: one range
    rms = (copies - sources).flatten(1).square().mean(1).sqrt() / span
    assert bool((rms > 0).all()) and float(rms.max()) < NEAR_RMS / 2  # near, never exact
    assert float((copies - sources).abs().max()) <= NEAR_LEAK_NOISE * span + 1e-6
    assert same_split(bundle.test, DIGITS.test)
    # its own random stream: switching it on moves no other fault
    _, alone = inject_faults(DIGITS, leakage=0.05)
    assert alone["leakage"] == record["leakage"]
    table, rows = inject_faults(WINE, near_leakage=0.5)
    width = WINE.train[0].max(0).values - WINE.train[0].min(0).values  # tables: per column
    moved = (table.train[0][127:] - WINE.test[0][rows["near_leakage"]["test_rows"]]).abs()
    assert len(moved) == 18 and bool((moved <= NEAR_LEAK_NOISE * width * 1.001).all())
    assert table.name == "faulty(wine: near_leakage=0.5)"


def test_imbalance_keeps_that_share_of_the_upper_half_of_classes():
    bundle, record = inject_faults(DIGITS, imbalance=0.05)
    before = torch.bincount(DIGITS.train[1], minlength=10).tolist()
    after = torch.bincount(bundle.train[1], minlength=10).tolist()
    assert after[:5] == before[:5]
    assert after[5:] == [max(1, round(0.05 * n)) for n in before[5:]]
    assert record["imbalance"]["classes"] == [5, 6, 7, 8, 9]
    kept = {digest(r) for r in bundle.train[0]}
    assert kept <= {digest(r) for r in DIGITS.train[0]}  # a subset: nothing else changed
    assert same_split(bundle.val, DIGITS.val)


def test_missing_sets_that_share_of_values_to_nan_in_every_split():
    bundle, record = inject_faults(WINE, missing=0.1)
    for split in ("train", "val", "test"):
        x, x0 = getattr(bundle, split)[0], getattr(WINE, split)[0]
        nan = torch.isnan(x)
        assert int(nan.sum()) == round(0.1 * x.numel()) == record["missing"][split]
        assert torch.equal(x[~nan], x0[~nan])


def test_scale_gives_each_feature_its_own_factor_in_every_split():
    bundle, record = inject_faults(WINE, scale=1000.0)
    factors = torch.tensor(record["scale"]["factors"])
    assert len(factors) == 13 and bool(((factors >= 100) & (factors <= 1000)).all())
    assert factors.max() / factors.min() > 3  # ranges really differ
    for split in ("train", "val", "test"):
        assert torch.allclose(getattr(bundle, split)[0], getattr(WINE, split)[0] * factors)


def test_shift_offsets_each_feature_and_images_as_a_whole():
    bundle, record = inject_faults(WINE, shift=-50.0)
    offsets = torch.tensor(record["shift"]["offsets"])
    assert bool(((offsets >= -50) & (offsets <= -5)).all())
    assert torch.allclose(bundle.test[0], WINE.test[0] + offsets)
    images, _ = inject_faults(DIGITS, shift=3.0, scale=10.0)
    assert torch.allclose(images.val[0], DIGITS.val[0] * 10 + 3)


def test_constant_features_append_columns_of_ones():
    bundle, record = inject_faults(WINE, constant_features=3)
    assert bundle.input_shape == (16,) and record["constant_features"] == {"indices": [13, 14, 15]}
    for split in ("train", "val", "test"):
        x = getattr(bundle, split)[0]
        assert bool((x[:, 13:] == 1.0).all()) and torch.equal(x[:, :13], getattr(WINE, split)[0])


def test_train_size_keeps_that_many_rows_stratified():
    bundle, _ = inject_faults(DIGITS, train_size=100)
    counts = torch.bincount(bundle.train[1], minlength=10)
    assert len(bundle.train[0]) == 100 and counts.min() >= 9 and counts.max() <= 11
    assert same_split(bundle.test, DIGITS.test)


def test_faults_are_seeded_and_independent_of_each_other():
    a, ra = inject_faults(DIGITS, label_noise=0.2, seed=1)
    b, _ = inject_faults(DIGITS, label_noise=0.2, seed=1)
    c, _ = inject_faults(DIGITS, label_noise=0.2, seed=2)
    _, rd = inject_faults(DIGITS, label_noise=0.2, missing=0.05, seed=1)
    assert torch.equal(a.train[1], b.train[1]) and not torch.equal(a.train[1], c.train[1])
    assert rd["label_noise"] == ra["label_noise"]  # missing values did not move the flips


def test_faults_combine_with_exact_counts():
    bundle = load_dataset(
        "faulty",
        dataset="wine",
        label_noise=0.2,
        duplicates=0.5,
        leakage=0.25,
        missing=0.05,
        constant_features=2,
        seed=4,
    )
    x = bundle.train[0]
    assert len(x) == 127 + round(0.5 * 127) + 9 and x.shape[1] == 15
    # copies were made after values went missing, so they are still byte-exact copies
    repeats = sum(n - 1 for n in Counter(digest(r) for r in x[: 127 + 64]).values())
    assert repeats == 64


def test_data_fixes_undo_the_injected_faults():
    bundle, record = inject_faults(
        WINE,
        duplicates=0.3,
        leakage=0.2,
        missing=0.05,
        constant_features=2,
        scale=100.0,
        imbalance=0.3,
    )
    fixes = DataSpec(
        impute="median",
        drop_constant=True,
        drop_duplicates=True,
        standardize=True,
        balance="oversample",
    )
    cleaned, report = clean_bundle(bundle, fixes)
    # copied and leaked rows carry their NaN into train, so there are more than injected
    nan = sum(int(torch.isnan(p[0]).sum()) for p in (bundle.train, bundle.val, bundle.test))
    assert report["impute"]["values"] == nan > sum(record["missing"].values())
    assert report["drop_constant"]["indices"] == [13, 14]
    assert report["drop_duplicates"] == {
        "repeats": record["duplicates"]["rows"],
        "leaked": record["leakage"]["rows"],
    }
    x, y = cleaned.train
    assert not bool(torch.isnan(x).any()) and cleaned.input_shape == (13,)
    counts = torch.bincount(y).tolist()
    assert len(set(counts)) == 1 and counts[0] > 0  # balanced


@pytest.mark.parametrize(
    ("args", "culprit"),
    [
        ({"label_noise": 1.0}, "'label_noise'"),
        ({"label_noise": -0.1}, "'label_noise'"),
        ({"duplicates": 1.5}, "'duplicates'"),
        ({"leakage": -1.0}, "'leakage'"),
        ({"near_leakage": 1.5}, "'near_leakage'"),
        ({"imbalance": 1.0}, "'imbalance'"),
        ({"missing": math.nan}, "'missing'"),
        ({"scale": 0.0}, "'scale'"),
        ({"shift": math.inf}, "'shift'"),
        ({"constant_features": -2}, "'constant_features'"),
        ({"train_size": 0}, "'train_size'"),
    ],
)
def test_out_of_range_values_name_the_argument(args, culprit):
    with pytest.raises(RecipeError) as info:
        load_dataset("faulty", **args)
    assert culprit in info.value.message and info.value.hint


def test_faults_that_do_not_fit_the_data_are_refused():
    with pytest.raises(RecipeError, match="constant_features needs a table"):
        load_dataset("faulty", constant_features=1)
    with pytest.raises(RecipeError, match="only 1293 training rows"):
        load_dataset("faulty", train_size=5000)
    no_test = DatasetBundle("t", DIGITS.train, None, None, 10, (1, 8, 8))
    with pytest.raises(RecipeError, match="leakage needs a test split"):
        inject_faults(no_test, leakage=0.1)
    with pytest.raises(RecipeError, match="near_leakage needs a test split"):
        inject_faults(no_test, near_leakage=0.1)
    with pytest.raises(RecipeError, match="more than the 360 test rows"):
        inject_faults(DIGITS, leakage=0.6, near_leakage=0.5)
    regression = DatasetBundle(
        "r", (torch.zeros(4, 2), torch.zeros(4)), None, None, 1, (2,), task="regression"
    )
    for fault in ("label_noise", "imbalance"):
        with pytest.raises(RecipeError, match=f"{fault} needs a classification dataset"):
            inject_faults(regression, **{fault: 0.5})
    tokens = DatasetBundle(
        "tok",
        (torch.ones(4, 3, dtype=torch.int64), torch.zeros(4, dtype=torch.int64)),
        None,
        None,
        2,
        (3,),
    )
    with pytest.raises(RecipeError, match="integer token ids"):
        inject_faults(tokens, missing=0.1)
    with pytest.raises(RecipeError, match="unknown fault 'noise'"):
        inject_faults(DIGITS, noise=0.1)
    with pytest.raises(RecipeError) as info:
        load_dataset("faulty", dataset="digts")
    assert "did you mean 'digits'" in info.value.hint
