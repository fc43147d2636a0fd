"""Rows that copy other rows: exact copies by one row hash, near copies by a distance.

The data fixes (`data.drop_duplicates` and `data.drop_leaked` in `layerwise.data.clean`) and the
doctor's data profile (`duplicates` and `overlap` in `layerwise.diagnose.data_checks`) both call
these functions, so a row the doctor counts as a copy is exactly a row the fix drops, and a
finding about copies is gone once its fix has run.

Definitions:
- A *row* is one sample's inputs, flattened (a table row, a whole image). `split_rows` gives
  every split of a bundle as a (rows, positions) array in one float dtype, train's: float64
  inputs stay float64, integer token ids become float64 (which holds them exactly), anything
  else becomes float32.
- An *exact copy* has the same values: -0.0 equals 0.0 and NaN equals NaN (a copied row with a
  missing value is still a copy). `row_hashes` hashes each row's values this way.
- A *near copy* of a train row is a row whose root-mean-square difference from it is at most
  `NEAR_RMS` (1.5%) of the train range: per column for tables, one global range for images.
  Values are scaled to that range, clipped to [-1, 2] and NaN/inf set to 0, so one wild value
  cannot dominate. A copy with ±1% uniform noise is 0.6% away. The nearest genuinely different
  rows measured: MNIST test 3.0% (a single digit; 190 of 10,000 are within 5%), digits 6.4%,
  breast cancer 3.0%, wine 7.0%.
- Closeness is judged against the data's own neighbours: in dense low-dimensional data (two
  features, thousands of rows) ordinary rows sit 0.35% from their nearest neighbour (median), so
  a fixed 1.5% would call almost every held-out row a copy. The radius is therefore the smaller
  of `NEAR_RMS` and the distance within which only `ORDINARY_SHARE` (1%) of train rows have
  their nearest other (non-identical) train row: a held-out row drawn like the train rows is
  then a "near copy" with odds of about 1%, five times below the leakage finding's 5%. On
  digits, MNIST and other wide data that distance is far above 1.5%, so nothing changes there.

The near-copy search is exact: every train row within the radius of a held-out row is found, not
only the nearest one. Dropping them all leaves none behind at that radius: the train range
distances are measured against can only shrink when rows go, which only lengthens the remaining
distances, and standardising afterwards changes no distance (per column for tables; for images
with several channels standardised separately, the one global range can move a little). In dense
low-dimensional data the ordinary-neighbour radius is re-measured on the smaller train split and
can grow a little, so a few more rows may then count. Example:

    >>> rows = split_rows(bundle)
    >>> copies = find_copies(rows, image=bundle.train[0].dim() >= 3)
    >>> copies.train_near.sum()  # train rows that are exact or near copies of a val/test row
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.spatial import cKDTree

from layerwise.data.bundle import DatasetBundle
from layerwise.errors import DataError

SPLITS = ("train", "val", "test")
NEAR_RMS = 0.015
ORDINARY_SHARE = 0.01  # the radius is at most where 1% of train rows have their nearest neighbour
ORDINARY_SAMPLE = 2_000  # train rows whose nearest neighbour is measured
ORDINARY_CANDIDATES = 10  # nearest rows in the projection checked in full space for each
NEAR_COMPONENTS = 12  # projection searched for near copies; any orthonormal one bounds distances
BOUND_BLOCKS = 32  # runs of positions whose residual norms tighten the projection's bound
TREE_AXES = 8  # projection axes the k-d tree holds (the full bound then filters its candidates)
TREE_GROUPS = 8  # norms over groups of the other coordinates (axes, then residual runs) it holds
TREE_LEAF = 64  # rows per k-d tree leaf (scipy's 16 visits more nodes in these dimensions)
# The k-d tree splits at the middle of the widest coordinate (balanced_tree=False): faster to
# build and, on IMDB's token rows, to query than scipy's median splits; the pairs are the same.
PCA_FIT_ROWS = 5_000
CHUNK_ROWS = 4_096
# Rows whose temporaries are made at once where no result depends on it (hashes, scaling, the
# bound, distances): small blocks stay in cache (20,000 distances over 1,000 token ids: 0.42 CPU s
# in one array, 0.04 in blocks of 1,024).
BLOCK_ROWS = 1_024
FILTER_PAIRS = 8_192  # candidate pairs whose full bound is measured at once
HEAD_POSITIONS = 64  # positions a candidate pair is measured on before all of them
# The projected search radius is widened a little so that float32 rounding in the projection
# can never hide a pair that is within NEAR_RMS in full space (the full check decides).
RADIUS_SLACK = 1e-3


# ---------------------------------------------------------------------------- rows
def split_rows(bundle: DatasetBundle) -> dict[str, np.ndarray]:
    """Each present split's inputs as a (rows, positions) NumPy array in train's float dtype.

    No copy is made when the inputs are already float32/float64 of one dtype. Raises
    `DataError` when a split's samples do not have train's shape.
    """
    if bundle.train is None:
        raise DataError(f"dataset '{bundle.name}' has no training split")
    shape = tuple(bundle.train[0].shape[1:])
    dtype = row_dtype(bundle.train[0].dtype)
    out = {}
    for name in SPLITS:
        part = getattr(bundle, name)
        if part is None:
            continue
        x = part[0]
        if tuple(x.shape[1:]) != shape:
            raise DataError(
                f"the {name} inputs of '{bundle.name}' have shape {tuple(x.shape[1:])} per row "
                f"but the train inputs have {shape}",
                hint="every split must hold samples of the same shape",
            )
        out[name] = as_rows(x, dtype)
    return out


def row_dtype(dtype: torch.dtype) -> np.dtype:
    """The float dtype rows of `dtype` are compared in (see the module doc)."""
    wide = dtype in (torch.float64, torch.int32, torch.int64)
    return np.dtype(np.float64 if wide else np.float32)


def as_rows(x: torch.Tensor | np.ndarray, dtype: np.dtype | None = None) -> np.ndarray:
    """`x` (N, ...) as a 2-D (N, positions) float array (a view when no conversion is needed)."""
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu()
        dtype = dtype or row_dtype(t.dtype)
        if t.dtype in (torch.bfloat16, torch.float16, torch.bool):
            t = t.float()
        a = t.numpy()
    else:
        a = np.asarray(x)
        dtype = dtype or np.dtype(np.float64 if a.dtype.itemsize > 4 else np.float32)
    a = a.reshape(len(a), int(np.prod(a.shape[1:], dtype=np.int64)))
    return a.astype(dtype, copy=False)


def _chunks(x: np.ndarray, rows: int = CHUNK_ROWS):
    for start in range(0, len(x), rows):
        yield x[start : start + rows]


# ---------------------------------------------------------------------------- exact copies
def row_hashes(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """A 64-bit BLAKE2b hash of each row's values, with -0.0 and NaN payloads made canonical.

    Two rows get the same hash exactly when their values are equal (NaN counting as equal to
    NaN); a collision among a million rows has odds of about 1 in 30 million. One hashlib call
    per row costs about 0.3 s for 57,000 MNIST rows.
    """
    rows = x if isinstance(x, np.ndarray) and x.ndim == 2 else as_rows(x)
    if rows.dtype not in (np.float32, np.float64):
        rows = as_rows(rows)
    out = np.empty(len(rows), dtype=np.uint64)
    for start in range(0, len(rows), BLOCK_ROWS):
        # -0.0 + 0.0 == +0.0; C order, since a row's bytes are hashed (pandas often gives F order)
        chunk = np.ascontiguousarray(rows[start : start + BLOCK_ROWS] + rows.dtype.type(0))
        chunk[np.isnan(chunk)] = np.nan
        digests = (hashlib.blake2b(memoryview(row), digest_size=8).digest() for row in chunk)
        out[start : start + len(chunk)] = np.frombuffer(b"".join(digests), dtype=np.uint64)
    return out


def repeated_rows(hashes: np.ndarray) -> np.ndarray:
    """Mask of the rows that repeat an earlier row (the first of each group is not marked)."""
    _, first = np.unique(hashes, return_index=True)
    repeated = np.ones(len(hashes), dtype=bool)
    repeated[first] = False
    return repeated


# ---------------------------------------------------------------------------- near copies
@dataclass
class Copies:
    """Which rows copy which, between train and the held-out splits (val, test).

    `exact[split]` / `near[split]`: masks over that split's rows, True for a row with an exact
    copy (near: an exact or near copy) in train. `train_exact` / `train_near`: masks over the
    train rows, True for a row that is an exact (near: an exact or near) copy of a held-out row.
    `near` always includes `exact`.
    """

    exact: dict[str, np.ndarray] = field(default_factory=dict)
    near: dict[str, np.ndarray] = field(default_factory=dict)
    train_exact: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    train_near: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    near_rms: float = NEAR_RMS  # the radius used: NEAR_RMS, or less in dense data
    ordinary_rms: float | None = None  # the ORDINARY_SHARE quantile of nearest-neighbour distances


def find_copies(
    rows: dict[str, np.ndarray],
    *,
    image: bool,
    seed: int = 0,
    hashes: dict[str, np.ndarray] | None = None,
) -> Copies:
    """Find the exact and near copies between `rows["train"]` and every other split in `rows`.

    Args:
        rows: split name -> (rows, positions) array, as from `split_rows`; needs "train".
        image: the inputs are images (one value range for all positions) rather than a table.
        seed: fixes the sample the projection is fitted on (the result does not depend on it).
        hashes: `row_hashes` of each split, when already computed.
    """
    hashes = dict(hashes or {})
    for name, a in rows.items():
        if name not in hashes:
            hashes[name] = row_hashes(a)
    train = rows["train"]
    held_out = [s for s in rows if s != "train"]
    copies = Copies(
        exact={s: np.isin(hashes[s], hashes["train"]) for s in held_out},
        train_exact=np.isin(hashes["train"], _concat([hashes[s] for s in held_out])),
    )
    # Search among distinct rows only: repeats neither slow the search nor change its answer.
    unique_train, train_first, train_group = _distinct(hashes["train"])
    query_hashes = _concat([hashes[s] for s in held_out])
    unique_query, query_first, _ = _distinct(query_hashes)
    queries = _concat([rows[s] for s in held_out], width=train.shape[1], dtype=train.dtype)
    near_queries = np.zeros(0, dtype=np.uint64)
    near_train = np.zeros(len(unique_train), dtype=bool)
    if len(unique_query) and len(unique_train):
        search = _NearSearch(train, image, seed, rows=train_first)
        copies.near_rms, copies.ordinary_rms = search.rms, search.ordinary
        q, t = search.pairs(queries, query_first)
        near_queries = unique_query[np.unique(q)]
        near_train[t] = True
    for s in held_out:
        copies.near[s] = copies.exact[s] | np.isin(hashes[s], near_queries)
    copies.train_near = copies.train_exact | near_train[train_group]
    return copies


def _distinct(hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct hashes, the first row of each, and each row's group (index into the first)."""
    unique, first, group = np.unique(hashes, return_index=True, return_inverse=True)
    return unique, first, group.reshape(-1)


def _concat(parts: list[np.ndarray], width: int | None = None, dtype=np.uint64) -> np.ndarray:
    if len(parts) == 1:  # one held-out split (test only): no copy of its rows
        return parts[0]
    if parts:
        return np.concatenate(parts)
    return np.zeros((0, width) if width is not None else 0, dtype=dtype)


class _Scaler:
    """Min-max scaling to train's finite range (per column for tables, global for images), with
    NaN/inf set to 0 and values clipped to [-1, 2] so one wild value cannot dominate a distance."""

    def __init__(self, train: np.ndarray, image: bool) -> None:
        lo, hi = np.full(train.shape[1], np.inf), np.full(train.shape[1], -np.inf)
        for chunk in _chunks(train, BLOCK_ROWS):
            low = high = chunk
            finite = np.isfinite(chunk)
            if not finite.all():
                low, high = np.where(finite, chunk, np.inf), np.where(finite, chunk, -np.inf)
            lo = np.fmin(lo, low.min(axis=0, initial=np.inf))
            hi = np.fmax(hi, high.max(axis=0, initial=-np.inf))
        has = lo <= hi
        lo, hi = np.where(has, lo, 0.0), np.where(has, hi, 1.0)
        if image and has.any():
            lo, hi = np.full_like(lo, lo[has].min()), np.full_like(hi, hi[has].max())
        span = hi - lo
        self.lo = lo.astype(np.float32)
        self.inv = (1.0 / np.where(span > 0, span, 1.0)).astype(np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        s = np.subtract(x, self.lo, dtype=np.float32)  # x in float32, then minus lo: a new array
        s *= self.inv
        finite = np.isfinite(s)
        if not finite.all():
            s[~finite] = 0.0
        return np.clip(s, -1.0, 2.0, out=s)


class _NearSearch:
    """Every (query, train) pair of rows within `rms` of each other: `NEAR_RMS`, or the distance
    ordinary train rows keep from their nearest neighbour when that is smaller (module doc).

    Rows are scaled once and projected onto at most 12 principal axes fitted on a sample of
    train. An orthonormal projection never lengthens a distance, so a near copy is always within
    `rms * sqrt(width)` of the query in the projection. The search tightens that bound without
    losing a pair: a row is its projection plus a residual orthogonal to it, and the residual is
    cut into `BOUND_BLOCKS` runs of positions; the distance between two rows is at least the
    distance between their (projection, residual norm of each run) coordinates, since
    ||a - b|| >= | ||a|| - ||b|| | holds run by run. A k-d tree over those coordinates lists every
    train row within the radius, and each candidate is confirmed in full space. Token ids
    project poorly (12 axes hold 10% of IMDB's variance): for IMDB's 25,000 test rows the 32
    runs leave 340,000 candidates to confirm where 8 runs leave 1.4 million, and the search
    takes about 7 CPU s instead of 78 with the projection alone; the pairs found are the same.

    A k-d tree over all 44 coordinates prunes poorly there (the radius is close to each
    coordinate's spread: 6.1 CPU s for IMDB's 400 ids), so the tree holds a coarser bound, the
    first `TREE_AXES` coordinates and the norms of `TREE_GROUPS` groups of the others (which a
    pair's distance never falls below either). Its candidates (1.4-1.9 million on IMDB) are
    filtered by the full bound, vectorised, which leaves exactly the candidates a tree over all
    44 coordinates lists; the tree's part of the search then takes about 1 CPU s on IMDB.
    """

    def __init__(
        self, train: np.ndarray, image: bool, seed: int, rows: np.ndarray | None = None
    ) -> None:
        """`rows`: the train rows searched among, in this order (all of them by default). The
        scale is train's range either way: repeated rows do not change it."""
        self.scale = _Scaler(train, image)
        self.scaled = self._scaled(train, rows)
        n, width = self.scaled.shape
        self.radius = NEAR_RMS * np.sqrt(width) * (1 + RADIUS_SLACK)  # until `rms` is known
        self.pca = None
        if width > NEAR_COMPONENTS and n > 1:
            from sklearn.decomposition import PCA

            rng = np.random.default_rng(seed)
            sample = np.sort(rng.choice(n, min(n, PCA_FIT_ROWS), replace=False))
            components = min(NEAR_COMPONENTS, len(sample))
            self.pca = PCA(components, random_state=seed).fit(self.scaled[sample])
        self.tree = cKDTree(self._project(self.scaled))
        self.ordinary = self._ordinary_distance(seed)
        self.rms = NEAR_RMS if self.ordinary is None else min(NEAR_RMS, self.ordinary)
        self.radius = self.rms * np.sqrt(width) * (1 + RADIUS_SLACK)
        self.train_bounds = None if self.pca is None else self._bounds(self.scaled)
        self.bound_tree = (
            self.tree
            if self.train_bounds is None
            else cKDTree(self._coarse(self.train_bounds), leafsize=TREE_LEAF, balanced_tree=False)
        )

    def _scaled(self, x: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """`x[rows]` (all of `x` by default) scaled (float32, see `_Scaler`), block by block so
        no float64 copy of the rows is made."""
        n = len(x) if rows is None else len(rows)
        out = np.empty((n, x.shape[1]), dtype=np.float32)
        for start in range(0, n, BLOCK_ROWS):
            part = slice(start, start + BLOCK_ROWS)
            out[part] = self.scale(x[part] if rows is None else x[rows[part]])
        return out

    def _ordinary_distance(self, seed: int) -> float | None:
        """The `ORDINARY_SHARE` quantile of train rows' RMS distance to their nearest other
        distinct train row (rows are distinct here), from a seeded sample of rows.

        The candidates are each row's nearest rows in the projection, measured in full space; with
        a projection (wide rows) the nearest found may not be the true nearest, which can only
        overstate the distance, and the radius never exceeds `NEAR_RMS` anyway."""
        n = len(self.scaled)
        if n < 3:
            return None
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(n, min(n, ORDINARY_SAMPLE), replace=False))
        k = min(ORDINARY_CANDIDATES + 1, n)
        _, found = self.tree.query(self._project(self.scaled[rows]), k=k)
        found = np.asarray(found).reshape(len(rows), k)
        others = found != rows[:, None]
        q = np.repeat(rows, k)[others.reshape(-1)]
        t = found.reshape(-1)[others.reshape(-1)]
        rms = np.empty(len(q))
        for at in range(0, len(q), BLOCK_ROWS):  # row by row, as one array would give it
            part = slice(at, at + BLOCK_ROWS)
            diff = (self.scaled[q[part]] - self.scaled[t[part]]).astype(np.float64)
            rms[part] = np.sqrt(np.mean(diff**2, axis=1))
        nearest = np.full(len(rows), np.inf)
        np.minimum.at(nearest, np.searchsorted(rows, q), rms)
        nearest = nearest[np.isfinite(nearest)]
        return float(np.quantile(nearest, ORDINARY_SHARE)) if len(nearest) else None

    def _project(self, scaled: np.ndarray) -> np.ndarray:
        parts = list(_chunks(scaled))
        if self.pca is not None:
            parts = [self.pca.transform(p) for p in parts]
        return np.concatenate(parts).astype(np.float64) if parts else np.zeros((0, 1))

    def _bounds(self, scaled: np.ndarray) -> np.ndarray:
        """Each scaled row's projection and the norm of its residual in each of `BOUND_BLOCKS`
        runs of positions: distances between these never exceed distances between the rows."""
        mean, axes = self.pca.mean_, self.pca.components_.astype(np.float64)
        runs = np.array_split(np.arange(scaled.shape[1]), min(BOUND_BLOCKS, scaled.shape[1]))
        out = []
        for chunk in _chunks(scaled, BLOCK_ROWS):
            centred = chunk.astype(np.float64) - mean
            projected = centred @ axes.T
            residual = centred - projected @ axes
            norms = [np.sqrt(np.einsum("ij,ij->i", r, r)) for r in _runs(residual, runs)]
            out.append(np.column_stack([projected, *norms]))
        return np.concatenate(out) if out else np.zeros((0, 1))

    def _coarse(self, bounds: np.ndarray) -> np.ndarray:
        """The tree's coordinates from `_bounds`' rows: the first `TREE_AXES` as they are, and
        the norm of each of `TREE_GROUPS` groups of the rest (the other axes, then the residual
        norms). Never further apart than the full bound, since | ||a_U|| - ||b_U|| | <=
        ||a_U - b_U|| for any group U of coordinates."""
        rest = bounds[:, TREE_AXES:]
        groups = np.array_split(np.arange(rest.shape[1]), min(TREE_GROUPS, rest.shape[1]))
        norms = [np.sqrt(np.einsum("ij,ij->i", rest[:, g], rest[:, g])) for g in groups]
        return np.column_stack([bounds[:, :TREE_AXES], *norms])

    def pairs(self, x: np.ndarray, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(query row indices, train row indices) of every pair within `rms`: queries are
        `x[rows]` (all of `x` by default), indexed by their place there."""
        scaled = self._scaled(x, rows)
        bounds = self._project(scaled) if self.pca is None else self._bounds(scaled)
        coords = bounds if self.pca is None else self._coarse(bounds)
        found_q, found_t = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
        # Queries in the order of their first coordinate: neighbours are looked up one after
        # another, so the tree's nodes they visit are still in cache (a quarter less CPU).
        order = np.argsort(coords[:, 0], kind="stable")
        for start in range(0, len(order), CHUNK_ROWS):
            chunk = order[start : start + CHUNK_ROWS]
            candidates = self.bound_tree.query_ball_point(
                coords[chunk], self.radius, return_sorted=False
            )
            lengths = np.fromiter(map(len, candidates), dtype=np.int64, count=len(candidates))
            if not lengths.sum():
                continue
            q = np.repeat(chunk, lengths)
            t = np.concatenate([np.asarray(c, dtype=np.int64) for c in candidates if c])
            if self.train_bounds is not None:  # the full bound: what a tree over it would list
                q, t = self._within_bound(bounds, q, t)
            close = self._close(scaled, q, t)
            found_q.append(q[close])
            found_t.append(t[close])
        return np.concatenate(found_q), np.concatenate(found_t)

    def _within_bound(
        self, bounds: np.ndarray, q: np.ndarray, t: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The candidate pairs whose full bound (`_bounds`) is within the radius."""
        keep = np.zeros(len(q), dtype=bool)
        for at in range(0, len(q), FILTER_PAIRS):
            d = bounds[q[at : at + FILTER_PAIRS]] - self.train_bounds[t[at : at + FILTER_PAIRS]]
            keep[at : at + FILTER_PAIRS] = np.einsum("ij,ij->i", d, d) <= self.radius**2
        return q[keep], t[keep]

    def _close(self, scaled: np.ndarray, q: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Mask of the pairs (query `q`, train `t`) whose RMS distance is at most `rms`.

        Squared differences only add up, so a pair already beyond the radius over the first
        `HEAD_POSITIONS` positions is beyond it over all of them: those positions are measured
        first, and only the pairs still within reach are measured in full, as before. Token ids
        are left-aligned, so most pairs are settled there (90% of IMDB's 340,000 candidates)."""
        width = scaled.shape[1]
        threshold = self.rms + 1e-9
        reach = width * threshold**2 * (1 + 1e-6)  # the margin covers float64 summation order
        close = np.zeros(len(q), dtype=bool)
        for at in range(0, len(q), BLOCK_ROWS):
            qq, tt = q[at : at + BLOCK_ROWS], t[at : at + BLOCK_ROWS]
            live = np.arange(len(qq))
            if width > 2 * HEAD_POSITIONS:
                head = scaled[qq, :HEAD_POSITIONS] - self.scaled[tt, :HEAD_POSITIONS]
                live = np.flatnonzero(np.einsum("ij,ij->i", head, head, dtype=np.float64) <= reach)
            diff = (scaled[qq[live]] - self.scaled[tt[live]]).astype(np.float64)
            close[at + live] = np.sqrt(np.mean(diff**2, axis=1)) <= threshold
        return close


def _runs(rows: np.ndarray, runs: list[np.ndarray]):
    """`rows` cut into the given contiguous runs of columns (views, no copies)."""
    for run in runs:
        yield rows[:, run[0] : run[-1] + 1]
