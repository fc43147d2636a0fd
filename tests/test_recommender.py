"""Recommenders: rating data (synthetic and MovieLens files), the models, ranking metrics,
training through the step contract, and recommending (warm, cold-start and unknown users)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from layerwise.data import load_dataset
from layerwise.data.ratings import COLD_MAX_RATINGS, RatingsBundle
from layerwise.errors import DataError, ShapeError
from layerwise.models import create_model
from layerwise.recipe import parse_recipe
from layerwise.tasks.recommend import (
    RatingTrainer,
    build_model,
    build_trainer,
    evaluate_recommender_run,
    held_out_items,
    load_ratings,
    ranking_metrics,
    rating_batches,
    recommend,
    recommender_task,
    sample_negatives,
    train_recommender,
)
from layerwise.train import Callback

TINY = {"num_users": 60, "num_items": 40, "mean_ratings": 15, "min_ratings": 8, "rank": 3}


def tiny(**changes) -> RatingsBundle:
    return load_dataset("synthetic_ratings", **{**TINY, **changes})


# ------------------------------------------------------------------------------ synthetic data
def test_synthetic_set_is_deterministic_and_has_the_known_noise():
    a, b, c = tiny(seed=3), tiny(seed=3), tiny(seed=4)
    assert torch.equal(a.train[0], b.train[0]) and torch.equal(a.test[1], b.test[1])
    assert not torch.equal(a.train[1][:50], c.train[1][:50])
    big = load_dataset("synthetic_ratings", num_users=300, num_items=100, min_ratings=20, noise=0.7)
    rows = torch.cat([big.truth["expected_by_split"][k] for k in ("train", "val", "test")])
    ratings = torch.cat([big.train[1], big.val[1], big.test[1]])
    floor = float((rows - ratings).square().mean().sqrt())
    assert floor == pytest.approx(0.7, rel=0.03)  # ~14,000 draws: the floor is the noise sigma
    assert big.truth["noise"] == 0.7


def test_synthetic_split_keeps_cold_users_in_training_and_splits_disjoint():
    data = tiny(cold_fraction=0.2)
    counts = torch.bincount(data.all_rows()[:, 0], minlength=data.num_users)
    cold = (counts <= COLD_MAX_RATINGS).nonzero().flatten()
    assert len(cold) >= 5 and (counts == 0).any()  # some users have no rating at all
    held = torch.cat([data.val[0][:, 0], data.test[0][:, 0]])
    assert not torch.isin(held, cold).any()
    keys = [set((x[:, 0] * 1000 + x[:, 1]).tolist()) for x, _ in (data.train, data.val, data.test)]
    assert sum(map(len, keys)) == len(set().union(*keys))  # no rating in two splits
    assert data.model_args["num_users"] == 60 and data.user_ids[0] == 1


def test_leave_one_out_holds_out_each_warm_users_last_rating():
    data = tiny(split="loo")
    test_users = data.test[0][:, 0]
    assert len(test_users) == len(test_users.unique())  # one per user
    for row in range(0, len(test_users), 7):
        user = test_users[row]
        train_times = data.times["train"][data.train[0][:, 0] == user]
        assert data.times["test"][row] > train_times.max()
        assert data.times["test"][row] > data.times["val"][data.val[0][:, 0] == user].max()


# ------------------------------------------------------------------------------------ MovieLens
def write_movielens(folder: Path) -> Path:
    """A MovieLens-100k-shaped folder: 6 users, 12 items, u.data, u1.base/u1.test, u.item."""
    rng = np.random.default_rng(0)
    lines = []
    for user in (1, 2, 3, 5, 8, 13):
        for item in rng.choice(np.arange(1, 13), 8, replace=False):
            lines.append(f"{user}\t{item + 100}\t{rng.integers(1, 6)}\t{rng.integers(8e8, 9e8)}")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.data").write_text("\n".join(lines) + "\n")
    (folder / "u1.base").write_text("\n".join(lines[:40]) + "\n")
    (folder / "u1.test").write_text("\n".join(lines[40:]) + "\n")
    items = [f"{i + 100}|Film {i} (1995)|01-Jan-1995||http://x|0|1" for i in range(1, 13)]
    (folder / "u.item").write_bytes("\n".join(items).encode("latin-1"))
    return folder


def test_movielens_100k_files_and_their_u1_split(tmp_path):
    folder = write_movielens(tmp_path / "ml-100k")
    data = load_dataset("movielens", path=str(folder), split="u1", val_fraction=0.0)
    assert data.user_ids == [1, 2, 3, 5, 8, 13] and data.num_items == len(data.item_ids)
    assert len(data.train[0]) == 40 and len(data.test[0]) == 8 and data.val is None
    assert data.item_names[data.item_ids.index(101)] == "Film 1 (1995)"
    first = (folder / "u1.test").read_text().split("\n")[0].split("\t")
    x, y = data.test
    assert data.user_ids[int(x[0, 0])] == int(first[0]) and y[0] == float(first[2])
    assert data.user_index("13") == 5 and data.user_index(99) is None
    loo = load_dataset("movielens", path=str(folder / "u.data"), split="loo")
    assert len(loo.test[0]) == 6


def test_movielens_ratings_csv(tmp_path):
    rows = ["userId,movieId,rating,timestamp"]
    rows += [f"{u},{i},{(u + i) % 5 + 0.5},{u * 100 + i}" for u in range(1, 6) for i in range(1, 9)]
    (tmp_path / "ratings.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "movies.csv").write_text(
        "movieId,title,genres\n" + "".join(f"{i},Movie {i},Drama\n" for i in range(1, 9))
    )
    data = load_dataset("movielens", path=str(tmp_path), split="loo")
    assert data.num_users == 5 and data.item_names[0] == "Movie 1"
    assert data.test[0][:, 1].tolist() == [7] * 5  # each user's last item by time


def test_u_data_and_ratings_csv_of_the_same_ratings_load_alike(tmp_path):
    """A MovieLens-shaped copy of a synthetic set (ids from 1 with gaps, ratings 1-5, unix
    times) written in both formats, with u1.base/u1.test split files, reads back the same."""
    source = tiny(seed=5, cold_fraction=0.0)
    x, y = (torch.cat(part) for part in zip(source.train, source.val, source.test, strict=True))
    users, items = x[:, 0].numpy() * 3 + 1, x[:, 1].numpy() * 2 + 7  # raw ids with gaps
    stars = y.round().clamp(1, 5).int().numpy()
    times = 880_000_000 + np.random.default_rng(0).permutation(len(y))
    lines = [f"{u}\t{i}\t{r}\t{t}" for u, i, r, t in zip(users, items, stars, times, strict=True)]
    ml100k, latest = tmp_path / "ml-100k", tmp_path / "ml-latest"
    ml100k.mkdir(), latest.mkdir()
    (ml100k / "u.data").write_text("\n".join(lines) + "\n")
    (ml100k / "u1.base").write_text("\n".join(lines[::5] + lines[1::5] + lines[2::5]) + "\n")
    (ml100k / "u1.test").write_text("\n".join(lines[3::5] + lines[4::5]) + "\n")
    csv = ["userId,movieId,rating,timestamp"] + [line.replace("\t", ",") for line in lines]
    (latest / "ratings.csv").write_text("\n".join(csv) + "\n")
    a = load_dataset("movielens", path=str(ml100k), split="random", val_fraction=0.1)
    b = load_dataset("movielens", path=str(latest), split="random", val_fraction=0.1)
    assert a.user_ids == sorted(set(users.tolist())) == b.user_ids and a.item_ids == b.item_ids
    for part in ("train", "val", "test"):
        assert torch.equal(getattr(a, part)[0], getattr(b, part)[0])
        assert torch.equal(getattr(a, part)[1], getattr(b, part)[1])
    ratings = torch.cat([a.train[1], a.val[1], a.test[1]])
    assert sorted(ratings.tolist()) == sorted(stars.tolist())
    u1 = load_dataset("movielens", path=str(ml100k), split="u1", val_fraction=0.1)
    assert len(u1.train[0]) + len(u1.val[0]) == sum(len(lines[k::5]) for k in range(3))
    assert len(u1.test[0]) == len(lines[3::5]) + len(lines[4::5])
    first = lines[3].split("\t")  # u1.test's first line, back to raw ids
    assert u1.user_ids[int(u1.test[0][0, 0])] == int(first[0])
    assert u1.item_ids[int(u1.test[0][0, 1])] == int(first[1]) and u1.test[1][0] == int(first[2])


U1 = {"u.data": "1\t2\t3\t4\n1\t3\t5\t5\n", "u1.base": "1\t2\t3\t4\n", "u1.test": "1\t3\t5\t5\n"}


@pytest.mark.parametrize(
    ("files", "args", "culprit"),
    [
        ({}, {"path": "nowhere"}, "nowhere not found"),
        ({"notes.txt": "x"}, {}, "holds neither u.data nor ratings.csv"),
        ({"u.data": "1\t2\t3\n4\t5\t1\n"}, {}, "u.data line 1: 3 fields where 4 are expected"),
        ({"u.data": "1\t2\t3\t9\n\n4\t5\t1\n"}, {}, "u.data line 3: 3 fields where 4"),
        ({"u.data": "1\t2\t3\t9\n4\t5\t1\t9\t9\n"}, {}, "u.data line 2: 5 fields where 4"),
        ({"u.data": "1\t2\t4\t7\n1\t3\tfive\t7\n"}, {}, "u.data line 2: rating 'five' is not"),
        ({"u.data": ""}, {}, "u.data holds no ratings"),
        ({"ratings.csv": "userId,movieId,rating\n1,2,3\n1,3,x\n"}, {}, "line 3: rating 'x'"),
        ({"ratings.csv": "userId,movieId,rating\n1,2,3\n1,3\n"}, {}, "line 3: 2 fields where 3"),
        ({"ratings.csv": "userId,movieId,rating,timestamp\n"}, {}, "ratings.csv holds no ratings"),
        ({"ratings.csv": "user,item,rating\n1,2,3\n"}, {}, "without userId, movieId"),
        ({"ratings.csv": "userId,movieId,rating\n1,2,3\n"}, {"split": "u1"}, "split 'u1' needs"),
        ({"u.data": "1\t2\t3\t4\n"}, {"split": "u2"}, "u2.base is missing"),
        (U1 | {"u1.test": "1\t2\t3\t4\n1\t2\t3\n"}, {"split": "u1"}, "u1.test line 2: 3 fields"),
        (
            U1 | {"u1.test": "1\t2\t4\t4\n7\t2\t3\t4\n"},
            {"split": "u1"},
            "u1.test line 2 has user 7",
        ),
        (U1 | {"u1.base": "1\t9\t3\t4\n"}, {"split": "u1"}, "u1.base line 1 has item 9, which"),
    ],
)
def test_movielens_bad_input_names_the_culprit(tmp_path, files, args, culprit):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(DataError) as raised:
        load_dataset("movielens", **{"path": str(tmp_path), **args})
    assert culprit in raised.value.message and raised.value.hint


# ---------------------------------------------------------------------------------- the models
def test_biased_mf_is_mean_plus_biases_plus_dot_and_its_penalty():
    model = create_model("biased_mf", num_users=3, num_items=4, dim=2, global_mean=3.0)
    with torch.no_grad():
        model.biases.user_bias.weight[:, 0] = torch.tensor([0.5, -1.0, 0.0])
        model.biases.item_bias.weight[:, 0] = torch.tensor([0.0, 0.25, 0.0, 0.0])
        model.user_factors.weight.copy_(torch.tensor([[1.0, 2.0], [0.0, 1.0], [1.0, 1.0]]))
        model.item_factors.weight.copy_(torch.tensor([[1.0, 0.0], [3.0, -1.0], [0, 0], [0, 0]]))
    user, item = torch.tensor([0, 1]), torch.tensor([1, 0])
    assert model(user=user, item=item).tolist() == [3.0 + 0.5 + 0.25 + 1.0, 3.0 - 1.0 + 0.0]
    # rows used: user 0 (5 + 0.25), item 1 (10 + 0.0625); user 1 (1 + 1), item 0 (1 + 0)
    assert float(model.penalty(user, item).detach()) == pytest.approx((15.3125 + 3.0) / 2)


def test_neumf_starts_as_biased_mf_on_its_gmf_pair():
    """The head reads the GMF products with weight 1 and the MLP with 0 at the start, so the
    untrained NeuMF is mean + biases + the GMF pair's dot product (the MLP learns a residual)."""
    torch.manual_seed(0)
    model = create_model("neumf", num_users=5, num_items=6, dim=3, hidden=[8, 4], global_mean=3)
    with torch.no_grad():
        model.biases.user_bias.weight.normal_()
    user, item = torch.tensor([0, 4, 2]), torch.tensor([5, 1, 1])
    dot = (model.gmf_user(user) * model.gmf_item(item)).sum(-1)
    expected = 3.0 + model.biases.user_bias(user)[:, 0] + dot
    assert torch.allclose(model(user=user, item=item), expected, atol=1e-6)
    assert model.mlp(torch.ones(1, 8)).abs().sum() > 0  # the MLP computes; the head ignores it


@pytest.mark.parametrize("family", ["biased_mf", "neumf"])
def test_a_recommender_also_takes_one_tensor_of_user_item_rows(family):
    """What generic tools (summary, export, a split's x) pass: `(N, 2)` rows, float or int."""
    model = create_model(family, num_users=5, num_items=7, global_mean=3.0).eval()
    rows = torch.tensor([[0, 6], [4, 1]])
    expected = model(user=rows[:, 0], item=rows[:, 1])
    assert torch.equal(model(rows), expected) and torch.equal(model(rows.float()), expected)
    with pytest.raises(ShapeError, match=r"got one tensor of shape \(2, 3\)"):
        model(torch.zeros(2, 3, dtype=torch.long))


# ------------------------------------------------------------------------------------- ranking
def test_ranking_metrics_hit_rate_and_ndcg():
    users, held = torch.tensor([0, 1, 2]), torch.tensor([10, 11, 12])
    negatives = torch.arange(20, 29).repeat(3, 1)  # 9 negatives each

    def score(u, i):  # user 0: held item best; user 1: 2 negatives above it; user 2: all above
        above = torch.tensor([0, 2, 9])[u]
        return torch.where(i < 20, 100.0 - above.float(), 100.0 - (i - 20).float() - 0.5)

    metrics = ranking_metrics(score, users, held, negatives, k=3)
    assert metrics["hr@3"] == pytest.approx(2 / 3)
    assert metrics["ndcg@3"] == pytest.approx((1.0 + 1 / math.log2(4)) / 3)


def test_negatives_are_distinct_items_the_user_never_rated():
    data = tiny()
    users, held = held_out_items(data)
    negatives = sample_negatives(data, users, 20, seed=0)
    rows = data.all_rows()
    for row, user in enumerate(users.tolist()):
        rated = set(rows[rows[:, 0] == user, 1].tolist())
        picked = negatives[row].tolist()
        assert len(set(picked)) == 20 and not rated & set(picked)
        assert int(held[row]) in rated


# ------------------------------------------------------------------------ training and recommend
RECIPE = """
name: rec_tiny
seed: 0
data:
  name: synthetic_ratings
  batch_size: 128
  args: {num_users: 80, num_items: 50, mean_ratings: 25, min_ratings: 12, rank: 2,
          noise: 0.2, cold_fraction: 0.1, popularity: 0.3}
model: {name: biased_mf, args: {dim: 4}}
train:
  epochs: 15
  optimizer: {name: adam, lr: 0.03}
  l2: 0.005
  metrics: [rmse]
"""


def test_rating_trainer_steps_on_dict_batches_and_logs_the_plain_mse():
    recipe = parse_recipe(RECIPE)
    data = load_dataset("synthetic_ratings", **recipe.data.args)
    model = create_model("biased_mf", **data.model_args, dim=4)
    trainer = RatingTrainer(model, lr=0.03, l2=0.5, doctor=False, progress=False, threads=1)
    batch = next(iter(trainer._batcher(rating_batches(data.train), 8).iter_from(0)))
    assert set(batch) == {"user", "item", "rating"}
    (epoch,) = trainer.fit(rating_batches(data.train), epochs=1, batch_size=128)
    # the logged loss is the ratings' MSE (the embedding decay is left out of it), so it is the
    # square of the epoch's RMSE over the same outputs
    assert epoch["loss"] == pytest.approx(epoch["rmse"] ** 2, rel=1e-4)


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_the_recipes_precision_reaches_the_rating_trainer(precision):
    spec = RECIPE.replace("biased_mf, args: {dim: 4}", "neumf, args: {dim: 4, hidden: [8]}")
    recipe = parse_recipe(spec + f"  precision: {precision}\n")
    data = load_ratings(recipe)
    trainer = build_trainer(recipe, build_model(recipe, data), data)
    assert trainer.precision == precision
    batch = {key: value[:64] for key, value in rating_batches(data.train).items()}
    with trainer.autocast:  # the MLP tower computes in the recipe's precision
        mlp = trainer.model.mlp(torch.zeros(4, trainer.model.mlp[0].in_features))
    assert mlp.dtype == (torch.bfloat16 if precision == "bf16" else torch.float32)
    logs = trainer.train_step(batch)  # and a step trains under it
    assert math.isfinite(float(logs["loss"]))
    with trainer.autocast:  # predicted ratings stay fp32: the mean and biases are added in fp32
        assert trainer.predict_step(batch).dtype == torch.float32


def run_data_spread(recipe) -> float:
    return float(load_dataset("synthetic_ratings", **recipe.data.args).test[1].std())


@pytest.mark.slow
def test_train_then_recommend_for_warm_cold_and_unknown_users(tmp_path):
    recipe = parse_recipe(RECIPE)
    assert recommender_task(recipe)
    run, metrics = train_recommender(recipe, tmp_path, progress=False, echo=None)
    spread = float(run_data_spread(recipe))  # the RMSE of predicting the mean rating
    assert metrics["rmse"] < 0.6 * spread and metrics["rmse_over_floor"] < 2.5
    assert 0 <= metrics["hr@10"] <= 1
    assert metrics["ranking_negatives"] < 99  # 50 items: fewer negatives, and the run says so
    assert run.info()["status"] == "finished" and run.report_path.is_file()
    data = load_dataset("synthetic_ratings", **recipe.data.args)
    counts = torch.bincount(data.train[0][:, 0], minlength=data.num_users)
    warm = int((counts > 10).nonzero()[0])
    top = recommend(run, data.user_ids[warm], k=5)
    rated = set(data.all_rows()[data.all_rows()[:, 0] == warm, 1].tolist())
    items = [data.item_ids.index(item) for item, _, _ in top.items]
    assert not top.cold and len(items) == 5 and not rated & set(items)
    scores = [score for _, _, score in top.items]
    assert scores == sorted(scores, reverse=True)
    cold = int((counts <= COLD_MAX_RATINGS).nonzero()[0])
    popular = recommend(run, data.user_ids[cold], k=3)
    assert popular.cold and "cold-start" in popular.lines()[0]
    popularity = torch.bincount(data.train[0][:, 1], minlength=data.num_items)
    shown = [data.item_ids.index(item) for item, _, _ in popular.items]
    assert [int(popularity[i]) for i in shown] == [int(s) for _, _, s in popular.items]
    assert int(popularity[shown[0]]) == int(popularity.max()) or shown[0] in rated
    with pytest.raises(DataError, match="user 81 is not in the data"):
        recommend(run, 81)
    again = evaluate_recommender_run(run, "test", "best")  # `layerwise evaluate`
    assert again["rmse"] == pytest.approx(metrics["rmse"]) and again["hr@10"] == metrics["hr@10"]


class _InterruptAt(Callback):
    """Raise KeyboardInterrupt after optimizer step `step` (as Ctrl-C between steps would)."""

    order = 100

    def __init__(self, step: int) -> None:
        self.step = step

    def on_batch_end(self, trainer) -> None:
        if trainer.state.step == self.step:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_an_interrupted_run_resumes_bit_for_bit(tmp_path):
    spec = RECIPE.replace("epochs: 15", "epochs: 3\n  checkpoint_every_steps: 4")
    recipe = parse_recipe(spec)
    whole, expected = train_recommender(recipe, tmp_path / "a", progress=False, echo=None)
    with pytest.raises(KeyboardInterrupt):
        train_recommender(
            recipe, tmp_path / "b", progress=False, echo=None, callbacks=[_InterruptAt(10)]
        )
    stopped = tmp_path / "b" / "rec_tiny"
    assert json.loads((stopped / "run.json").read_text())["status"] == "stopped"
    run, metrics = train_recommender(None, tmp_path / "b", resume=stopped, progress=False)
    assert metrics == expected  # same weights, same scores, to the last bit

    def timeless(run):
        return [{k: v for k, v in r.items() if k != "time"} for r in run.read_metrics()]

    assert timeless(run) == timeless(whole)  # the same epochs logged once each
