"""Exact and near copies (`layerwise.data.overlap`): one definition for the data fixes and the
doctor's profile. The hash, the exact near-copy search against brute force, the rows a fix drops
against the rows the profile counts, and data/ importing nothing above it."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from layerwise.data import DatasetBundle, load_dataset
from layerwise.data.clean import drop_duplicates, drop_leaked
from layerwise.data.overlap import (
    NEAR_RMS,
    _NearSearch,
    find_copies,
    repeated_rows,
    row_hashes,
    split_rows,
)
from layerwise.diagnose.data_checks import profile_data
from layerwise.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
NAN = float("nan")


def table(train, val=None, test=None) -> DatasetBundle:
    return DatasetBundle("t", train, val, test, 3, tuple(train[0].shape[1:]))


# ------------------------------------------------------------------------------ one row hash
def test_row_hash_compares_values_not_bytes():
    rows = torch.tensor([[0.0, 1.0], [-0.0, 1.0], [NAN, 1.0], [NAN, 1.0], [0.0, 1.0 + 1e-7]])
    rows[3, 0] = torch.tensor(np.frombuffer(np.uint32(0x7FC00001).tobytes(), np.float32)[0])
    assert bool(torch.isnan(rows[3, 0]))  # a NaN with another payload: still equal
    h = row_hashes(rows)
    assert h[0] == h[1] and h[2] == h[3] and len(set(h.tolist())) == 3
    assert repeated_rows(h).tolist() == [False, True, False, True, False]
    # a tensor, its float64 copy and its (N, positions) view hash alike: one canonical form
    images = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    assert (row_hashes(images) == row_hashes(images.flatten(1).numpy())).all()
    assert (row_hashes(images.half()) == row_hashes(images.half().float())).all()


def test_row_hash_reads_column_major_arrays_as_their_values():
    """pandas hands out Fortran-ordered arrays (`pd.concat(...).to_numpy()`); hashing a row's
    bytes used to fail on them with a BufferError inside the doctor's data check."""
    values = np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32)
    fortran = np.asfortranarray(values)
    assert not fortran.flags["C_CONTIGUOUS"]
    assert (row_hashes(fortran) == row_hashes(values)).all()
    assert (row_hashes(torch.from_numpy(fortran)) == row_hashes(values)).all()


def test_a_fit_on_pandas_frames_runs_the_data_checks():
    pd = pytest.importorskip("pandas")
    from torch import nn

    from layerwise import Trainer

    rng = np.random.default_rng(0)

    def frame(n: int):
        numbers = pd.DataFrame(rng.normal(size=(n, 3)), columns=list("abc"))
        onehot = pd.get_dummies(pd.Series(rng.integers(0, 3, n)).astype(str), dtype=float)
        return pd.concat([numbers, onehot], axis=1).astype("float32")

    train, val = frame(120), frame(40)
    assert not train.to_numpy().flags["C_CONTIGUOUS"]
    trainer = Trainer(nn.Sequential(nn.Linear(6, 2)), threads=1, progress=False)
    trainer.fit((train, (train["a"] > 0).astype(int)), (val, (val["a"] > 0).astype(int)), epochs=1)
    profile = trainer.diagnose().data_profile
    assert profile["sizes"]["train"] == 120 and profile["sizes"]["val"] == 40
    assert profile["overlap"]["val"]["exact"] == 0


def test_split_rows_gives_every_split_trains_dtype_and_refuses_other_shapes():
    x = torch.arange(12).reshape(4, 3)
    rows = split_rows(table((x, torch.zeros(4).long()), test=(x[:1], torch.zeros(1).long())))
    assert rows["train"].dtype == np.float64 and rows["test"].shape == (1, 3)
    with pytest.raises(DataError, match="shape"):
        split_rows(table((x, torch.zeros(4).long()), test=(x[:1, :2], torch.zeros(1).long())))


# ------------------------------------------------------------------------------ near copies
def brute_force(
    train: np.ndarray, query: np.ndarray, image: bool, radius: float = NEAR_RMS
) -> np.ndarray:
    """(query, train) pairs within `radius`, by checking every pair: what the search must find."""
    lo, hi = np.nanmin(train, axis=0), np.nanmax(train, axis=0)
    if image:
        lo, hi = np.full_like(lo, lo.min()), np.full_like(hi, hi.max())
    width = np.where(hi > lo, hi - lo, 1.0)

    def scale(a):
        s = (a - lo) / width
        return np.clip(np.where(np.isfinite(s), s, 0.0), -1, 2)

    d = scale(query)[:, None, :] - scale(train)[None, :, :]
    return np.argwhere(np.sqrt((d**2).mean(axis=2)) <= radius)


@pytest.mark.parametrize(("shape", "image"), [((8,), False), ((40,), False), ((1, 8, 8), True)])
def test_near_search_finds_every_pair_brute_force_finds(shape, image):
    g = torch.Generator().manual_seed(1)
    train = torch.rand(400, *shape, generator=g)
    # crowds: groups of train rows around a few centres, and queries in and between them
    centres = torch.rand(5, *shape, generator=g)
    crowd = centres.repeat_interleave(20, 0) + 0.012 * torch.randn(100, *shape, generator=g)
    train = torch.cat([train, crowd])
    query = torch.cat(
        [centres, crowd[::7] + 0.01 * torch.randn(15, *shape, generator=g), train[:5].clone()]
    )
    rows = {"train": train.flatten(1).numpy(), "test": query.flatten(1).numpy()}
    copies = find_copies(rows, image=image, seed=0)
    # The crowds are denser than 1.5%, so the radius shrinks to where ordinary neighbours sit.
    assert 0 < copies.near_rms <= NEAR_RMS
    pairs = brute_force(rows["train"], rows["test"], image, copies.near_rms)
    assert len(pairs) > 5  # the crowd gives some queries near copies
    assert set(np.flatnonzero(copies.near["test"])) == set(pairs[:, 0])
    assert set(np.flatnonzero(copies.train_near)) == set(pairs[:, 1])
    assert np.flatnonzero(copies.exact["test"]).tolist() == [20, 21, 22, 23, 24]
    assert np.flatnonzero(copies.train_exact).tolist() == [0, 1, 2, 3, 4]


def token_rows(n: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Reviews as token ids: frequent words have small ids, lengths vary, right-padded with 0."""
    ids = np.minimum(rng.zipf(1.3, size=(n, width)), 5_000).astype(np.float64)
    lengths = rng.integers(5, width, size=n)
    ids[np.arange(width)[None, :] >= lengths[:, None]] = 0.0
    return ids


def test_near_search_on_padded_token_ids_finds_every_pair_brute_force_finds():
    """Token ids project poorly onto 12 axes, so the search leans on the residual runs there:
    train rows copied with changes from 0.3 to 1.4 times the radius are found exactly up to it."""
    rng = np.random.default_rng(0)
    train = token_rows(700, 150, rng)
    span = train.max(axis=0) - train.min(axis=0)
    # The radius depends on train alone: short reviews of common words crowd, so it shrinks.
    radius = find_copies({"train": train, "test": train[:1]}, image=False, seed=0).near_rms
    assert radius < NEAR_RMS / 2
    # changes in the first 5 words (never padding), RMS over all 150 positions as planned
    planned = np.linspace(0.3, 1.4, 40) * radius
    change = np.zeros((40, 150))
    change[:, :5] = rng.choice([-1.0, 1.0], size=(40, 5)) * planned[:, None] * np.sqrt(150 / 5)
    leaked = train[:40] + change * span
    rows = {"train": train, "test": np.concatenate([leaked, token_rows(40, 150, rng)])}
    copies = find_copies(rows, image=False, seed=0)
    assert copies.near_rms == radius
    pairs = brute_force(rows["train"], rows["test"], False, copies.near_rms)
    assert set(np.flatnonzero(copies.near["test"])) == set(pairs[:, 0])
    assert set(np.flatnonzero(copies.train_near)) == set(pairs[:, 1])
    assert copies.near["test"][:40].tolist() == (planned <= radius * 0.999).tolist()


def test_near_search_finds_copies_that_differ_only_after_the_first_positions():
    """Candidate pairs are measured on their first 64 positions before all of them: a copy
    changed only further on (planted from 0.3 to 1.4 times the radius) is still found exactly
    up to the radius, as brute force finds it, and repeated train rows change nothing."""
    rng = np.random.default_rng(2)
    train = token_rows(600, 300, rng)
    train[:, :200] = np.maximum(train[:, :200], 1.0)  # every review 200+ words: no padding there
    radius = find_copies({"train": train, "test": train[:1]}, image=False, seed=0).near_rms
    span = train.max(axis=0) - train.min(axis=0)
    planted = np.linspace(0.3, 1.4, 30) * radius
    change = np.zeros((30, 300))
    change[:, 150:160] = rng.choice([-1.0, 1.0], size=(30, 10)) * planted[:, None] * np.sqrt(30)
    leaked = train[:30] + change * span
    assert np.all(leaked[:, :64] == train[:30, :64])  # the first positions alone see a copy
    test = np.concatenate([leaked, token_rows(30, 300, rng)])
    copies = find_copies({"train": train, "test": test}, image=False, seed=0)
    assert copies.near_rms == radius
    pairs = brute_force(train, test, False, radius)
    assert set(np.flatnonzero(copies.near["test"])) == set(pairs[:, 0])
    assert set(np.flatnonzero(copies.train_near)) == set(pairs[:, 1])
    assert copies.near["test"][:30].tolist() == (planted <= radius * 0.999).tolist()


def test_near_search_bound_never_exceeds_a_distance_and_prunes_token_rows():
    """The k-d tree's coordinates (projection and residual norm per run of positions) are never
    further apart than the rows are, and they are much closer to it than the projection alone."""
    rng = np.random.default_rng(1)
    search = _NearSearch(token_rows(600, 120, rng), image=False, seed=0)
    a, b = rng.integers(0, 600, size=(2, 2_000))
    full = np.linalg.norm(search.scaled[a].astype(np.float64) - search.scaled[b], axis=1)
    coords = search._bounds(search.scaled)
    bound = np.linalg.norm(coords[a] - coords[b], axis=1)
    projected = search._project(search.scaled)
    alone = np.linalg.norm(projected[a] - projected[b], axis=1)
    assert np.all(bound <= full * (1 + 1e-9) + 1e-12)
    # the k-d tree holds a coarser bound still (8 axes, norms of 8 groups of the rest)
    coarse = search._coarse(coords)
    assert coarse.shape[1] == 16
    assert np.all(np.linalg.norm(coarse[a] - coarse[b], axis=1) <= bound * (1 + 1e-9) + 1e-12)
    assert np.median(bound / np.maximum(full, 1e-12)) > 1.5 * np.median(
        alone / np.maximum(full, 1e-12)
    )


# ------------------------------------------------------------------------------ fix == finding
def with_row_ids(bundle: DatasetBundle) -> DatasetBundle:
    """The bundle with each train label replaced by the row's index, so the rows a fix keeps can
    be told apart even when they are copies (labels never enter a row's hash or distance)."""
    x, _ = bundle.train
    return dataclasses.replace(bundle, train=(x, torch.arange(len(x))), num_classes=len(x))


def dropped(bundle: DatasetBundle, cleaned: DatasetBundle) -> set[int]:
    return set(range(len(bundle.train[0]))) - set(cleaned.train[1].tolist())


def test_rows_profiled_as_duplicates_are_the_rows_drop_duplicates_drops():
    bundle = load_dataset("faulty", dataset="wine", duplicates=0.3, leakage=0.2, missing=0.05)
    x, _ = bundle.train
    x = x.clone()
    x[0, 0] = 0.0
    signed = x[:1].clone()
    signed[0, 0] = -0.0  # the same value: a repeat
    nudged = x[1:2].clone()
    nudged[0, 1] = torch.nextafter(nudged[0, 1], torch.tensor(np.inf))  # 1 ulp: not a repeat
    bundle = with_row_ids(
        dataclasses.replace(bundle, train=(torch.cat([x, signed, nudged]), bundle.train[1]))
    )
    profile = profile_data(bundle, label_noise=False)
    duplicates, overlap = profile["duplicates"], profile["overlap"]
    assert overlap["test"]["near"] == overlap["test"]["exact"] == 7  # only exact copies here
    cleaned, report = drop_duplicates(bundle)
    gone = dropped(bundle, cleaned)
    assert set(duplicates["indices"]) <= gone  # every profiled repeat is dropped ...
    assert gone == set(duplicates["indices"]) | set(overlap["train_indices"])  # ... and no more
    assert len(x) in duplicates["indices"] and len(x) + 1 not in gone
    assert report["repeats"] + report["leaked"] == len(gone)


def test_rows_profiled_as_leaked_are_the_rows_drop_leaked_drops():
    bundle = with_row_ids(
        load_dataset("faulty", dataset="digits", leakage=0.05, near_leakage=0.1, duplicates=0.1)
    )
    overlap = profile_data(bundle, label_noise=False)["overlap"]
    assert overlap["test"]["exact"] == 18 and overlap["test"]["near"] == 18 + 36
    cleaned, report = drop_leaked(bundle)
    assert dropped(bundle, cleaned) == set(overlap["train_indices"])
    assert report["rows"] == overlap["train_rows"] == len(overlap["train_indices"])
    after = profile_data(cleaned, label_noise=False)["overlap"]
    assert after["test"] == {"exact": 0, "near": 0, "fraction": 0.0}


# ------------------------------------------------------------------------------ layers
ABOVE_DATA = ("train", "diagnose", "runs", "report", "experiment", "tune", "cli", "tasks", "serve")


def test_data_imports_nothing_above_it():
    """DESIGN.md: errors/registry <- nn, models, data <- train <- diagnose <- ... (no cycle)."""
    for path in sorted((ROOT / "src" / "layerwise" / "data").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                parts = name.split(".")
                assert not (
                    parts[0] == "layerwise" and len(parts) > 1 and parts[1] in ABOVE_DATA
                ), f"{path.name} imports {name}"


@pytest.mark.slow
def test_importing_data_loads_no_package_above_it():
    code = (
        "import sys, layerwise.data\n"
        "above = sorted(m for m in sys.modules if m.split('.')[:2] in "
        f"[['layerwise', p] for p in {ABOVE_DATA!r}])\n"
        "print(above)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def nearest_rms(train: np.ndarray, sample: np.ndarray) -> np.ndarray:
    """Each sampled train row's RMS distance (scaled per column) to its nearest other row."""
    lo, hi = train.min(axis=0), train.max(axis=0)
    s = (train - lo) / (hi - lo)
    d = np.sqrt(((s[sample][:, None, :] - s[None, :, :]) ** 2).mean(axis=2))
    d[np.arange(len(sample)), sample] = np.inf
    return d.min(axis=1)


def test_dense_low_dimensional_rows_are_not_near_copies_of_each_other():
    """Two features, 3,000 rows: ordinary neighbours sit ~0.3% apart, so a fixed 1.5% radius
    called nearly every held-out row a copy; the radius measured on the data calls about 1%."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3_600, 2)).astype(np.float32)
    rows = {"train": x[:3_000], "val": x[3_000:]}
    copies = find_copies(rows, image=False, seed=0)
    assert copies.near_rms == copies.ordinary_rms < NEAR_RMS / 10
    # The radius is the 1% quantile of the distance to the nearest other train row.
    sample = np.sort(rng.choice(3_000, 500, replace=False))
    truth = np.quantile(nearest_rms(rows["train"].astype(np.float64), sample), 0.01)
    assert copies.near_rms == pytest.approx(truth, rel=0.5)
    assert copies.near["val"].mean() < 0.03
    # A row copied with tiny noise (0.01% of the range) is still a near copy.
    leaked = x[3_000:3_100] + 1e-4 * (x.max(axis=0) - x.min(axis=0))
    rows = {"train": np.concatenate([x[:3_000], leaked]), "val": x[3_000:]}
    assert find_copies(rows, image=False, seed=0).near["val"][:100].all()


def test_wide_data_keeps_the_fixed_radius():
    digits = load_dataset("digits")
    rows = split_rows(digits)
    copies = find_copies(rows, image=True, seed=0)
    assert copies.near_rms == NEAR_RMS and copies.ordinary_rms > 2 * NEAR_RMS
