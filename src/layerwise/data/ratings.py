"""Rating data for recommenders: MovieLens files from a path the user gives, and a synthetic set.

MovieLens may not be redistributed, so nothing here ships or downloads it: `movielens(path)`
reads the folder a user unpacked (`u.data` of MovieLens 100k: tab-separated user, item, rating,
timestamp; or `ratings.csv` of the later releases, with a header; with the 100k's `u1.base` /
`u1.test` … split files when present). `synthetic_ratings` makes a rating set whose structure is
known, so tests and benchmarks can check that a model recovers it: each user and item has a bias
and `rank` latent factors, a rating is `mean + b_u + b_i + p_u·q_i + noise` with Gaussian noise of
known `noise` (the floor no model can beat: the RMSE of the true means), items are picked with a
popularity skew and by affinity (people rate what they like), and a few cold-start users have two
ratings or fewer (or none).

A split is `(x, y)`: `x` is `(N, 2)` int64 `[user, item]` indices (0-based, contiguous), `y` the
float32 ratings. `RatingsBundle` adds what recommending needs: the raw ids, item titles when the
files have them, the timestamps (leave-one-out ranking holds out each user's last rating) and
the truth of a synthetic set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from layerwise.data.bundle import DatasetBundle
from layerwise.data.registry import DATASETS
from layerwise.errors import DataError

SPLITS = ("random", "loo", "u1", "u2", "u3", "u4", "u5", "ua", "ub")
COLD_MAX_RATINGS = 2  # users with this many ratings or fewer are cold-start users


@dataclass(repr=False)
class RatingsBundle(DatasetBundle):
    """A `DatasetBundle` of `([user, item], rating)` rows, with ids, titles and timestamps.

    Attributes:
        num_users, num_items: the sizes of the index spaces (embedding tables).
        user_ids, item_ids: the raw id of each index (MovieLens ids; 1-based for the synthetic).
        item_names: a title per item index when the files have them, else empty.
        times: the timestamp of every row, per split name (`train`, `val`, `test`).
        truth: for a synthetic set, what generated it (`noise`, `mean`, biases and factors).
    """

    num_users: int = 0
    num_items: int = 0
    user_ids: list[Any] = field(default_factory=list)
    item_ids: list[Any] = field(default_factory=list)
    item_names: list[str] = field(default_factory=list)
    times: dict[str, Tensor] = field(default_factory=dict)
    truth: dict[str, Any] | None = None

    @property
    def model_args(self) -> dict[str, Any]:
        """What a recommender model is created with: table sizes and the mean training rating."""
        mean = float(self.train[1].mean()) if len(self.train[1]) else 0.0
        return {"num_users": self.num_users, "num_items": self.num_items, "global_mean": mean}

    def all_rows(self) -> Tensor:
        """`[user, item]` of every rating in every split (what "already rated" means)."""
        return torch.cat([part[0] for part in (self.train, self.val, self.test) if part])

    def user_index(self, raw: Any) -> int | None:
        """The index of raw user id `raw` (compared as text, so `42` and `"42"` match)."""
        lookup = {str(u): i for i, u in enumerate(self.user_ids)}
        return lookup.get(str(raw))


# ---------------------------------------------------------------------------------- synthetic
@DATASETS.register("synthetic_ratings")
def synthetic_ratings(
    num_users: int = 2000,
    num_items: int = 1000,
    rank: int = 8,
    noise: float = 0.5,
    mean_ratings: int = 120,
    min_ratings: int = 20,
    popularity: float = 0.8,
    affinity: float = 1.0,
    cold_fraction: float = 0.05,
    split: str = "random",
    test_fraction: float = 0.1,
    val_fraction: float = 0.05,
    seed: int = 0,
) -> RatingsBundle:
    """A low-rank rating set with known structure, the same for the same arguments.

    Args:
        num_users, num_items: sizes; user ids are 1..num_users, item ids 1..num_items.
        rank: latent factors per user and item; their dot products have standard deviation 0.8.
        noise: standard deviation of the Gaussian noise on each rating: the RMSE floor.
        mean_ratings, min_ratings: a warm user's ratings are log-normal around `mean_ratings`,
            at least `min_ratings` (and at most half the items).
        popularity: Zipf exponent of how often items are picked (0: all alike).
        affinity: how much a user's taste steers what they rate (0: popularity only).
        cold_fraction: share of users with 0, 1 or 2 ratings (all in training).
        split, test_fraction, val_fraction: see `split_ratings`.
    """
    _check_synthetic(num_users, num_items, rank, noise, min_ratings, cold_fraction, split)
    rng = np.random.default_rng(seed)
    scale = (0.8**2 / rank) ** 0.25  # so that p_u·q_i has standard deviation 0.8
    truth = {
        "noise": noise,
        "mean": 3.5,
        "user_bias": rng.normal(0, 0.3, num_users),
        "item_bias": rng.normal(0, 0.4, num_items),
        "user_factors": rng.normal(0, scale, (num_users, rank)),
        "item_factors": rng.normal(0, scale, (num_items, rank)),
    }
    taste = truth["user_factors"] @ truth["item_factors"].T  # (users, items)
    pop = 1.0 / np.arange(1, num_items + 1) ** popularity
    pop = pop[rng.permutation(num_items)]
    counts = np.clip(
        rng.lognormal(np.log(mean_ratings), 0.5, num_users).astype(int),
        min_ratings,
        num_items // 2,
    )
    cold = rng.random(num_users) < cold_fraction
    counts[cold] = rng.integers(0, COLD_MAX_RATINGS + 1, int(cold.sum()))
    users, items = [], []
    weights = pop[None, :] * np.exp(affinity * taste / 0.8)
    for user in range(num_users):
        if counts[user]:
            p = weights[user] / weights[user].sum()
            chosen = rng.choice(num_items, size=counts[user], replace=False, p=p)
            users.append(np.full(counts[user], user))
            items.append(chosen)
    user = np.concatenate(users)
    item = np.concatenate(items)
    expected = (
        truth["mean"] + truth["user_bias"][user] + truth["item_bias"][item] + taste[user, item]
    )
    rating = expected + rng.normal(0, noise, len(user))
    time = rng.permutation(len(user))  # a random order of rating events
    truth["expected"] = expected  # per row, for the oracle RMSE of a split
    rows = _rows(user, item, rating, time)
    return _bundle(
        "synthetic_ratings",
        rows,
        num_users,
        num_items,
        list(range(1, num_users + 1)),
        list(range(1, num_items + 1)),
        [],
        split,
        test_fraction,
        val_fraction,
        seed,
        truth=truth,
    )


def _check_synthetic(
    num_users: int,
    num_items: int,
    rank: int,
    noise: float,
    min_ratings: int,
    cold_fraction: float,
    split: str,
) -> None:
    if num_users < 2 or num_items < 2 * max(min_ratings, 1) or rank < 1 or noise < 0:
        raise DataError(
            f"synthetic_ratings: need num_users >= 2, num_items >= 2 * min_ratings, rank >= 1 "
            f"and noise >= 0 (got {num_users}, {num_items}, min_ratings {min_ratings}, rank "
            f"{rank}, noise {noise})",
            hint="e.g. num_users: 200, num_items: 100, min_ratings: 10, rank: 4, noise: 0.5",
        )
    if not 0 <= cold_fraction < 1:
        raise DataError(
            f"synthetic_ratings: cold_fraction is {cold_fraction}", hint="use 0 <= it < 1"
        )
    if split not in ("random", "loo"):
        raise DataError(
            f"synthetic_ratings: split '{split}' is not one of random, loo",
            hint="the u1..u5/ua/ub splits are files of MovieLens 100k",
        )


# --------------------------------------------------------------------------------- MovieLens
@DATASETS.register("movielens")
def movielens(
    path: str,
    split: str = "u1",
    test_fraction: float = 0.2,
    val_fraction: float = 0.05,
    seed: int = 0,
) -> RatingsBundle:
    """MovieLens ratings from `path`: a folder holding `u.data` or `ratings.csv`, or that file.

    Args:
        path: where the user unpacked MovieLens (it is not redistributable, so not bundled).
        split: `u1`..`u5`, `ua`, `ub`: MovieLens 100k's own split files `<split>.base` and
            `<split>.test` (u1 is the one papers report); `random`: `test_fraction` of each
            user's ratings held out; `loo`: each user's last rating held out (leave-one-out).
            A folder with `ratings.csv` only has no split files: use `random` or `loo`.
        val_fraction: share of the training ratings kept for validation (0: none).
    """
    if split not in SPLITS:
        raise DataError(f"movielens: split '{split}' is unknown", hint=f"use one of {SPLITS}")
    folder, main = _find_ratings_file(Path(path).expanduser())
    frame = _read_ratings(main)
    fixed = None
    if split not in ("random", "loo"):
        if main.name != "u.data":
            raise DataError(
                f"movielens: split '{split}' needs MovieLens 100k's split files, but {folder} "
                f"holds {main.name}",
                hint="use split: random or split: loo for ratings.csv",
            )
        base, test = folder / f"{split}.base", folder / f"{split}.test"
        for file in (base, test):
            if not file.is_file():
                raise DataError(
                    f"movielens: split file {file} is missing",
                    hint="unpack the whole ml-100k archive there, or use split: random or loo",
                )
        fixed = (_read_ratings(base), _read_ratings(test))
    user_raw = np.unique(frame["user"].to_numpy())
    item_raw = np.unique(frame["item"].to_numpy())
    if fixed is not None:
        for file, part in zip((base, test), fixed, strict=True):
            _check_known_ids(file, part, main, user_raw, item_raw)
    names = _item_names(folder, item_raw)

    def rows_of(part: Any) -> dict[str, np.ndarray]:
        return _rows(
            np.searchsorted(user_raw, part["user"].to_numpy()),
            np.searchsorted(item_raw, part["item"].to_numpy()),
            part["rating"].to_numpy(),
            part["time"].to_numpy(),
        )

    return _bundle(
        "movielens",
        rows_of(frame),
        len(user_raw),
        len(item_raw),
        user_raw.tolist(),
        item_raw.tolist(),
        names,
        split,
        test_fraction,
        val_fraction,
        seed,
        fixed=None if fixed is None else (rows_of(fixed[0]), rows_of(fixed[1])),
    )


def _check_known_ids(
    file: Path, part: Any, main: Path, user_raw: np.ndarray, item_raw: np.ndarray
) -> None:
    """A split file may only hold users and items of the main file (their indices come from
    it): a row that does not is a `DataError` naming its line."""
    for column, known in (("user", user_raw), ("item", item_raw)):
        unknown = np.flatnonzero(~np.isin(part[column].to_numpy(), known))
        if len(unknown):
            row = int(unknown[0])
            raise DataError(
                f"movielens: {file} line {_line_of_row(file, row, csv=False)} has {column} "
                f"{part[column].iloc[row]}, which {main.name} does not hold",
                hint=f"{file.name} must come from the same MovieLens release as {main.name}",
            )


def _find_ratings_file(path: Path) -> tuple[Path, Path]:
    if path.is_file():
        return path.parent, path
    if not path.is_dir():
        raise DataError(
            f"movielens: {path} not found",
            hint="give data.args.path: the folder where you unpacked MovieLens (ml-100k holds "
            "u.data); it is not bundled because its licence forbids redistribution",
        )
    for name in ("u.data", "ratings.csv"):
        if (path / name).is_file():
            return path, path / name
    raise DataError(
        f"movielens: {path} holds neither u.data nor ratings.csv",
        hint="point data.args.path at the unpacked ml-100k (u.data) or ml-latest (ratings.csv)",
    )


U_DATA_COLUMNS = ("user", "item", "rating", "timestamp")
CSV_NUMBERS = ("userId", "movieId", "rating", "timestamp")  # the ratings.csv columns we read


def _read_ratings(file: Path) -> Any:
    """A frame of user, item, rating, time from `u.data`-style or `ratings.csv` files.

    pandas reads a good file fast; when it cannot (a line with the wrong number of fields, a
    value that is not a number), the file is scanned line by line once to name the culprit."""
    import pandas as pd

    csv = file.suffix == ".csv"
    try:
        frame = pd.read_csv(file) if csv else pd.read_csv(file, sep=r"\s+", header=None)
    except pd.errors.EmptyDataError:
        raise DataError(f"movielens: {file} holds no ratings", hint="check the file") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise _bad_file(file, csv, str(exc).splitlines()[0]) from exc
    if csv:
        wanted = ["userId", "movieId", "rating"]
        missing = [c for c in wanted if c not in frame.columns]
        if missing:
            raise DataError(
                f"movielens: {file} has columns {list(frame.columns)[:6]}, without "
                f"{', '.join(missing)}",
                hint="ratings.csv needs the header userId,movieId,rating[,timestamp]",
            )
        time = frame["timestamp"] if "timestamp" in frame.columns else range(len(frame))
        frame = pd.DataFrame(
            {"user": frame["userId"], "item": frame["movieId"], "rating": frame["rating"]}
        ).assign(time=list(time))
    elif frame.shape[1] != len(U_DATA_COLUMNS):
        raise _bad_file(file, csv, f"{frame.shape[1]} columns per line")
    else:
        frame.columns = ["user", "item", "rating", "time"]
    if frame.empty:
        raise DataError(f"movielens: {file} holds no ratings", hint="check the file")
    for column in frame.columns:
        if not pd.api.types.is_numeric_dtype(frame[column]) or frame[column].isna().any():
            raise _bad_file(file, csv, f"column '{column}' holds values that are not numbers")
    return frame


def _bad_file(file: Path, csv: bool, fallback: str) -> DataError:
    """The error for a ratings file pandas could not take: its first bad line and what is wrong
    with it, or `fallback` (pandas' complaint) when no line is to blame."""
    found = _first_bad_line(file, csv)
    where = f"{file} line {found[0]}: {found[1]}" if found else f"cannot read {file}: {fallback}"
    return DataError(
        f"movielens: {where}",
        hint="u.data lines are tab-separated user id, item id, rating, timestamp (numbers); "
        "ratings.csv has the header userId,movieId,rating,timestamp",
    )


def _first_bad_line(file: Path, csv: bool) -> tuple[int, str] | None:
    """`(line number, what is wrong)` for the first line of `file` that is not a rating row:
    the wrong number of fields, or a field we read that is not a finite number."""
    with file.open(encoding="utf-8", errors="replace") as handle:
        lines = enumerate(handle, 1)
        if csv:
            names = [name.strip() for name in next(lines, (0, ""))[1].rstrip("\r\n").split(",")]
        else:
            names = list(U_DATA_COLUMNS)
        numbers = [i for i, name in enumerate(names) if not csv or name in CSV_NUMBERS]
        for number, line in lines:
            if not line.strip():
                continue
            fields = line.rstrip("\r\n").split(",") if csv else line.split()
            if len(fields) != len(names):
                return number, (
                    f"{len(fields)} fields where {len(names)} are expected ({', '.join(names)})"
                )
            for i in numbers:
                if not _is_number(fields[i]):
                    return number, f"{names[i]} '{fields[i].strip()}' is not a number"
    return None


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _line_of_row(file: Path, row: int, csv: bool) -> int:
    """The line number of data row `row` (0-based) of `file`, as pandas counts rows (blank
    lines and a csv's header are not rows)."""
    with file.open(encoding="utf-8", errors="replace") as handle:
        seen = -1 if csv else 0  # the header is no row
        for number, line in enumerate(handle, 1):
            if line.strip():
                if seen == row:
                    return number
                seen += 1
    return row + 1


def _item_names(folder: Path, item_raw: np.ndarray) -> list[str]:
    """Titles from `u.item` (100k, latin-1, `|`-separated) or `movies.csv`, else none."""
    import pandas as pd

    titles: dict[int, str] = {}
    if (folder / "u.item").is_file():
        items = pd.read_csv(
            folder / "u.item", sep="|", header=None, encoding="latin-1", usecols=[0, 1]
        )
        titles = dict(zip(items[0], items[1], strict=True))
    elif (folder / "movies.csv").is_file():
        items = pd.read_csv(folder / "movies.csv", usecols=["movieId", "title"])
        titles = dict(zip(items["movieId"], items["title"], strict=True))
    if not titles:
        return []
    return [str(titles.get(int(raw), raw)) for raw in item_raw]


# --------------------------------------------------------------------------------- splitting
def _rows(user: Any, item: Any, rating: Any, time: Any) -> dict[str, np.ndarray]:
    return {
        "user": np.array(user, np.int64),  # copies: pandas may hand out read-only arrays
        "item": np.array(item, np.int64),
        "rating": np.array(rating, np.float32),
        "time": np.array(time, np.int64),
    }


def split_ratings(
    rows: dict[str, np.ndarray], split: str, test_fraction: float, val_fraction: float, seed: int
) -> dict[str, np.ndarray]:
    """Which split each row goes to: 0 train, 1 val, 2 test.

    `random` holds out `test_fraction` of the ratings of every user with more than
    `COLD_MAX_RATINGS` (a user's first rating always trains); `loo` holds out each such user's
    last rating (by time) for test and the one before for validation (when `val_fraction` > 0),
    as the NCF paper does. Cold-start users' ratings all train.
    """
    n = len(rows["user"])
    where = np.zeros(n, np.int8)
    rng = np.random.default_rng(seed + 1)
    order = np.lexsort((rows["time"], rows["user"]))  # by user, then time
    user_sorted = rows["user"][order]
    starts = np.r_[0, np.flatnonzero(np.diff(user_sorted)) + 1]
    ends = np.r_[starts[1:], n]
    position = np.arange(n) - np.repeat(starts, ends - starts)  # rank of a row within its user
    count = np.repeat(ends - starts, ends - starts)
    warm = count > COLD_MAX_RATINGS
    if split == "loo":
        last = position == count - 1
        where[order[warm & last]] = 2
        if val_fraction > 0:
            where[order[warm & (position == count - 2)]] = 1
        return where
    draw = rng.random(n)
    held = warm & (position > 0)
    where[order[held & (draw < test_fraction)]] = 2
    val = held & (draw >= test_fraction) & (draw < test_fraction + val_fraction)
    where[order[val]] = 1
    return where


def _bundle(
    name: str,
    rows: dict[str, np.ndarray],
    num_users: int,
    num_items: int,
    user_ids: list[Any],
    item_ids: list[Any],
    item_names: list[str],
    split: str,
    test_fraction: float,
    val_fraction: float,
    seed: int,
    *,
    fixed: tuple[dict[str, np.ndarray], dict[str, np.ndarray]] | None = None,
    truth: dict[str, Any] | None = None,
) -> RatingsBundle:
    for value, label in ((test_fraction, "test_fraction"), (val_fraction, "val_fraction")):
        if not 0 <= value < 1:
            raise DataError(f"{name}: {label} is {value}", hint="use a share 0 <= it < 1")
    if fixed is not None:  # MovieLens' own base/test files; validation carved out of base
        base, test = fixed
        where = np.where(np.random.default_rng(seed + 1).random(len(base["user"])) < val_fraction,
                         1, 0)  # fmt: skip
        parts = {
            "train": _select(base, where == 0),
            "val": _select(base, where == 1),
            "test": test,
        }
    else:
        where = split_ratings(rows, split, test_fraction, val_fraction, seed)
        names = ("train", "val", "test")
        parts = {key: _select(rows, where == code) for code, key in enumerate(names)}
    splits = {key: _as_split(part) for key, part in parts.items()}
    if truth is not None and fixed is None:
        truth["expected_by_split"] = {
            key: torch.as_tensor(truth["expected"][where == code], dtype=torch.float32)
            for code, key in enumerate(("train", "val", "test"))
        }
    return RatingsBundle(
        name=name,
        train=splits["train"],
        val=splits["val"] if len(parts["val"]["user"]) else None,
        test=splits["test"] if len(parts["test"]["user"]) else None,
        num_classes=1,
        input_shape=(2,),
        task="regression",
        num_users=num_users,
        num_items=num_items,
        user_ids=user_ids,
        item_ids=item_ids,
        item_names=item_names,
        times={key: torch.as_tensor(part["time"]) for key, part in parts.items()},
        truth=truth,
    )


def _select(rows: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
    return {key: value[mask] for key, value in rows.items()}


def _as_split(part: dict[str, np.ndarray]) -> tuple[Tensor, Tensor]:
    x = torch.as_tensor(np.stack([part["user"], part["item"]], axis=1))
    return x, torch.as_tensor(part["rating"])
