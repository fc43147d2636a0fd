"""The `faulty` dataset: any registered dataset with known faults injected.

It exists so that the doctor can be shown, tested and benchmarked on problems whose size is
known exactly: `data: {name: faulty, args: {dataset: digits, label_noise: 0.3}}` is digits with
30% of its training labels flipped. Every fault is off by default. They are injected in a fixed
order, chosen so that each one's count stays exact when several are combined (duplicated rows
are copied after labels were flipped and values went missing, so they stay exact copies; leaked
test rows keep their true labels):

    train_size -> imbalance -> label_noise -> scale, shift -> missing -> duplicates -> leakage
    -> near_leakage -> constant_features

Each fault draws from its own random stream of `seed`, so switching one on does not change
where another lands. `inject_faults` does the same to a bundle already loaded and also returns
what it injected (e.g. which labels it flipped), the ground truth a benchmark scores against.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch import Tensor

from layerwise.data.bundle import DatasetBundle
from layerwise.data.registry import DATASETS, load_dataset
from layerwise.errors import RecipeError

# Fault name -> (its default, which is "off", and what a value means, for error hints).
FAULTS: dict[str, tuple[Any, str]] = {
    "label_noise": (0.0, "the fraction of training labels to flip, in [0, 1), e.g. 0.2"),
    "duplicates": (0.0, "extra training rows as a fraction of train, in [0, 1], e.g. 0.3"),
    "leakage": (0.0, "the fraction of test rows copied into train, in [0, 1], e.g. 0.1"),
    "imbalance": (
        0.0,
        "the fraction of rows the rarer half of classes keeps, in [0, 1), e.g. 0.05",
    ),
    "missing": (0.0, "the fraction of input values set to NaN, in [0, 1), e.g. 0.05"),
    "scale": (1.0, "a factor > 0 the inputs are multiplied by, e.g. 1000"),
    "shift": (0.0, "a finite offset added to the inputs, e.g. 50"),
    "constant_features": (0, "a count of constant columns to append, e.g. 3"),
    "train_size": (None, "a number of training rows to keep, e.g. 100"),
    # Last, so that adding it moved no other fault's random stream (see `_Injector.rng`).
    "near_leakage": (
        0.0,
        "the fraction of test rows copied into train with a little noise, in [0, 1], e.g. 0.1",
    ),
}

# A near-leaked row moves each value by up to ±1% of that feature's train range (of the whole
# train range for images), uniformly: 0.6% of the range as a root-mean-square difference, well
# inside the 1.5% that `layerwise.data.overlap` calls a near copy, yet not an exact copy (unless
# every feature is constant).
NEAR_LEAK_NOISE = 0.01

# The order faults are injected in (see the module docstring for why).
ORDER = (
    "train_size",
    "imbalance",
    "label_noise",
    "scale",
    "shift",
    "missing",
    "duplicates",
    "leakage",
    "near_leakage",
    "constant_features",
)


@DATASETS.register("faulty")
def faulty(
    dataset: str = "digits",
    args: dict[str, Any] | None = None,
    label_noise: float = 0.0,
    duplicates: float = 0.0,
    leakage: float = 0.0,
    imbalance: float = 0.0,
    missing: float = 0.0,
    scale: float = 1.0,
    shift: float = 0.0,
    constant_features: int = 0,
    train_size: int | None = None,
    near_leakage: float = 0.0,
    seed: int = 0,
) -> DatasetBundle:
    """Load the registered `dataset` (with `args`) and inject faults into it.

    Args:
        dataset, args: the dataset to start from and its loader's arguments.
        label_noise: fraction of training labels replaced by a different class, drawn uniformly.
        duplicates: fraction of training rows appended again as exact copies (0.3 adds 30% more
            rows); each copied row is repeated 1 to 3 times.
        leakage: fraction of test rows copied, with their labels, into train.
        imbalance: the upper half of the classes (`c >= num_classes // 2`) keeps only this
            fraction of its training rows (at least one per class); 0 leaves them all.
        missing: fraction of input values set to NaN, in train and likewise in val and test, so
            an imputer fit on train is really needed.
        scale: inputs are multiplied by it in every split; for tables (N, F) each feature gets
            its own factor, log-uniform between scale / 10 and scale, so feature ranges differ
            tenfold. 1.0 leaves the inputs alone.
        shift: added to the inputs in every split; for tables each feature gets its own offset,
            uniform between shift / 10 and shift.
        constant_features: columns of 1.0 appended to every split (tables only).
        train_size: keep only this many training rows, stratified by class.
        near_leakage: fraction of test rows copied, with their labels, into train with a little
            noise (each value moves by up to ±1% of its train range): near copies, which
            `data.drop_duplicates` does not catch and `data.drop_leaked` does. They are drawn
            from the test rows that `leakage` did not copy.
        seed: fixes every random choice.

    The bundle is named after what was injected, e.g. `faulty(digits: label_noise=0.3)`.

    Example:
        >>> b = load_dataset("faulty", dataset="wine", missing=0.1, scale=1000.0)
    """
    faults = {
        "label_noise": label_noise,
        "duplicates": duplicates,
        "leakage": leakage,
        "imbalance": imbalance,
        "missing": missing,
        "scale": scale,
        "shift": shift,
        "constant_features": constant_features,
        "train_size": train_size,
        "near_leakage": near_leakage,
    }
    _check_ranges(**faults)  # before a big dataset is loaded for nothing
    bundle, _ = inject_faults(load_dataset(dataset, **(args or {})), seed=seed, **faults)
    return bundle


def inject_faults(
    bundle: DatasetBundle, seed: int = 0, **faults: Any
) -> tuple[DatasetBundle, dict[str, Any]]:
    """Inject `faults` (keyword arguments as for `faulty`) into a new copy of `bundle`.

    Returns the faulty bundle and a JSON-able record of what was injected, by fault:
    `label_noise: {rows, count}` (training rows whose label was flipped), `duplicates:
    {rows, sources}`, `leakage: {rows, test_rows}`, `near_leakage: {rows, test_rows}`,
    `missing: {train, val, test}` (values), `imbalance: {classes, kept}`, `constant_features:
    {indices}`, `train_size: {rows}`, `scale: {factors}`, `shift: {offsets}`.
    """
    unknown = sorted(set(faults) - set(FAULTS))
    if unknown:
        raise RecipeError(f"unknown fault '{unknown[0]}'", hint=f"faults: {', '.join(FAULTS)}")
    given = {k: v for k, v in faults.items() if v != FAULTS[k][0]}
    _check_ranges(**given)
    if bundle.train is None:
        raise RecipeError(f"dataset '{bundle.name}' has no training split to inject faults into")
    injector = _Injector(bundle, seed)
    for name in ORDER:
        if name in given:
            getattr(injector, name)(given[name])
    settings = ", ".join(f"{k}={given[k]}" for k in FAULTS if k in given)
    name = f"faulty({bundle.name}: {settings})" if settings else f"faulty({bundle.name})"
    return injector.bundle(name), injector.record


class _Injector:
    """Holds the splits while faults are injected one after another; never edits in place."""

    def __init__(self, bundle: DatasetBundle, seed: int) -> None:
        self.source = bundle
        self.seed = seed
        self.splits: dict[str, tuple[Tensor, Tensor] | None] = {
            "train": bundle.train,
            "val": bundle.val,
            "test": bundle.test,
        }
        self.record: dict[str, Any] = {}

    def bundle(self, name: str) -> DatasetBundle:
        x = self.splits["train"][0]
        return dataclasses.replace(
            self.source, name=name, input_shape=tuple(x.shape[1:]), **self.splits
        )

    def rng(self, fault: str) -> np.random.Generator:
        """An independent stream per fault, so one fault's draws do not move another's."""
        return np.random.default_rng([self.seed, list(FAULTS).index(fault)])

    @property
    def train(self) -> tuple[Tensor, Tensor]:
        return self.splits["train"]  # type: ignore[return-value]

    def parts(self) -> list[tuple[str, tuple[Tensor, Tensor]]]:
        return [(k, v) for k, v in self.splits.items() if v is not None]

    def take_train(self, index: np.ndarray) -> None:
        x, y = self.train
        rows = torch.from_numpy(np.asarray(index, dtype=np.int64))
        self.splits["train"] = (x.index_select(0, rows), y.index_select(0, rows))

    # ---------------------------------------------------------------------------- the faults
    def train_size(self, size: int) -> None:
        x, y = self.train
        if size > len(x):
            raise RecipeError(
                f"faulty: train_size={size} but '{self.source.name}' has only {len(x)} "
                "training rows",
                hint=f"give train_size of at most {len(x)}",
            )
        index = np.arange(len(x))
        if size < len(x):
            labels = y.numpy() if self.source.task == "classification" else None
            try:
                index, _ = train_test_split(
                    index, train_size=size, random_state=self.seed, stratify=labels
                )
            except ValueError:  # a class too small to stratify, or fewer rows than classes
                index, _ = train_test_split(index, train_size=size, random_state=self.seed)
            self.take_train(np.sort(index))
        self.record["train_size"] = {"rows": size}

    def imbalance(self, fraction: float) -> None:
        self.require_classes("imbalance")
        _, y = self.train
        labels, rng = y.numpy(), self.rng("imbalance")
        keep = np.ones(len(labels), dtype=bool)
        rare = list(range(self.source.num_classes // 2, self.source.num_classes))
        kept = {}
        for c in rare:
            rows = np.flatnonzero(labels == c)
            n = max(1, round(fraction * len(rows))) if len(rows) else 0
            keep[rng.choice(rows, len(rows) - n, replace=False)] = False
            kept[str(c)] = n
        self.take_train(np.flatnonzero(keep))
        self.record["imbalance"] = {"classes": rare, "kept": kept}

    def label_noise(self, fraction: float) -> None:
        self.require_classes("label_noise")
        x, y = self.train
        rng, num_classes = self.rng("label_noise"), self.source.num_classes
        rows = np.sort(rng.choice(len(y), round(fraction * len(y)), replace=False))
        offset = rng.integers(1, num_classes, size=len(rows))  # never 0: always another class
        noisy = y.clone()
        index = torch.from_numpy(rows)
        noisy[index] = (y[index] + torch.from_numpy(offset)) % num_classes
        self.splits["train"] = (x, noisy)
        self.record["label_noise"] = {"rows": rows.tolist(), "count": len(rows)}

    def scale(self, scale: float) -> None:
        factors = self.per_feature(
            scale, "scale", lambda rng, n: scale * 10 ** rng.uniform(-1, 0, n)
        )
        self.record["scale"] = {"factors": factors.flatten().tolist()}

    def shift(self, shift: float) -> None:
        low, high = sorted((shift / 10, shift))
        offsets = self.per_feature(shift, "shift", lambda rng, n: rng.uniform(low, high, n))
        self.record["shift"] = {"offsets": offsets.flatten().tolist()}

    def per_feature(self, value: float, fault: str, draw: Any) -> Tensor:
        """Multiply by (scale) or add (shift) one value per feature for tables, one for all
        features otherwise, in every split."""
        x, _ = self.train
        self.require_float(fault)
        if x.dim() == 2:
            values = torch.from_numpy(draw(self.rng(fault), x.shape[1])).float()
        else:
            values = torch.tensor([value], dtype=torch.float32)
        for name, (t, y) in self.parts():
            self.splits[name] = (t * values if fault == "scale" else t + values, y)
        return values

    def missing(self, fraction: float) -> None:
        self.require_float("missing")
        rng, counts = self.rng("missing"), {}
        for name, (x, y) in self.parts():
            flat = x.reshape(-1).clone()
            positions = rng.choice(flat.numel(), round(fraction * flat.numel()), replace=False)
            flat[torch.from_numpy(positions)] = torch.nan
            self.splits[name] = (flat.reshape(x.shape), y)
            counts[name] = len(positions)
        self.record["missing"] = counts

    def duplicates(self, fraction: float) -> None:
        x, _ = self.train
        rng, extra = self.rng("duplicates"), round(fraction * len(x))
        order = rng.permutation(len(x))
        repeats = rng.integers(1, 4, size=len(x))  # each copied row appears 1-3 more times
        total = np.cumsum(repeats)
        last = int(np.searchsorted(total, extra))  # total >= len(x) >= extra, so it exists
        sources, repeats = order[: last + 1], repeats[: last + 1].copy()
        repeats[-1] -= total[last] - extra  # trim the last row's copies to hit `extra` exactly
        self.take_train(np.concatenate([np.arange(len(x)), np.repeat(sources, repeats)]))
        self.record["duplicates"] = {"rows": int(extra), "sources": int(np.count_nonzero(repeats))}

    def leakage(self, fraction: float) -> None:
        self.require_test("leakage")
        (x, y), (xt, yt) = self.train, self.splits["test"]
        rows = np.sort(
            self.rng("leakage").choice(len(xt), round(fraction * len(xt)), replace=False)
        )
        index = torch.from_numpy(rows)
        self.splits["train"] = (torch.cat([x, xt[index]]), torch.cat([y, yt[index]]))
        self.record["leakage"] = {"rows": len(rows), "test_rows": rows.tolist()}

    def near_leakage(self, fraction: float) -> None:
        self.require_test("near_leakage")
        self.require_float("near_leakage")
        (x, y), (xt, yt) = self.train, self.splits["test"]
        taken = set(self.record.get("leakage", {}).get("test_rows", []))
        free = np.array([i for i in range(len(xt)) if i not in taken], dtype=np.int64)
        count = round(fraction * len(xt))
        if count > len(free):
            raise RecipeError(
                f"faulty: leakage and near_leakage together ask for more than the "
                f"{len(xt)} test rows of '{self.source.name}'",
                hint="keep leakage + near_leakage at most 1",
            )
        rng = self.rng("near_leakage")
        rows = np.sort(rng.choice(free, count, replace=False))
        copies = xt[torch.from_numpy(rows)]
        span = _train_range(x)
        noise = torch.from_numpy(rng.uniform(-1.0, 1.0, tuple(copies.shape))).to(copies.dtype)
        copies = copies + noise * NEAR_LEAK_NOISE * span
        index = torch.from_numpy(rows)
        self.splits["train"] = (torch.cat([x, copies]), torch.cat([y, yt[index]]))
        self.record["near_leakage"] = {"rows": len(rows), "test_rows": rows.tolist()}

    def constant_features(self, count: int) -> None:
        x, _ = self.train
        if x.dim() != 2:
            raise RecipeError(
                f"faulty: constant_features needs a table (rows, features), but "
                f"'{self.source.name}' has inputs shaped {tuple(x.shape[1:])}",
                hint="use a tabular dataset (wine, breast_cancer, csv) or "
                "args: {flatten: true} for mnist",
            )
        width = x.shape[1]
        for name, (t, y) in self.parts():
            self.splits[name] = (torch.cat([t, torch.ones(len(t), count, dtype=t.dtype)], 1), y)
        self.record["constant_features"] = {"indices": list(range(width, width + count))}

    # ---------------------------------------------------------------------------- requirements
    def require_classes(self, fault: str) -> None:
        if self.source.task != "classification" or self.source.num_classes < 2:
            raise RecipeError(
                f"faulty: {fault} needs a classification dataset with 2 or more classes, "
                f"but '{self.source.name}' is {self.source.task} with {self.source.num_classes}",
                hint=f"drop {fault}, or start from a classification dataset such as digits",
            )

    def require_test(self, fault: str) -> None:
        if self.splits["test"] is None:
            raise RecipeError(
                f"faulty: {fault} needs a test split, but '{self.source.name}' has none",
                hint="give the dataset a test split (e.g. test_fraction: 0.2 in args)",
            )

    def require_float(self, fault: str) -> None:
        if not self.train[0].is_floating_point():
            raise RecipeError(
                f"faulty: {fault} needs float inputs, but '{self.source.name}' holds integer "
                "token ids",
                hint=f"drop {fault} for text and other token data",
            )


def _train_range(x: Tensor) -> Tensor:
    """Each feature's finite range over `x` (tables), or one range for all values (images);
    a feature with no spread (or no finite value) gets a range of 0."""
    finite = torch.isfinite(x)
    low = torch.where(finite, x, torch.inf)
    high = torch.where(finite, x, -torch.inf)
    if x.dim() == 2:
        low, high = low.amin(0), high.amax(0)
    else:
        low, high = low.amin(), high.amax()
    span = high - low
    return torch.where(torch.isfinite(span), span, 0.0)


def _check_ranges(**faults: Any) -> None:
    """Reject values outside each fault's range, naming the argument, before any data loads."""
    for name, value in faults.items():
        if value is None or value == FAULTS[name][0]:
            continue
        if name in ("label_noise", "imbalance", "missing"):
            ok = 0.0 <= value < 1.0
        elif name in ("duplicates", "leakage", "near_leakage"):
            ok = 0.0 <= value <= 1.0
        elif name == "scale":
            ok = 0.0 < value < math.inf
        elif name == "shift":
            ok = math.isfinite(value)
        else:  # constant_features, train_size
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
        if not ok:
            raise RecipeError(
                f"faulty: bad value {value!r} for '{name}'", hint=f"'{name}' is {FAULTS[name][1]}"
            )
