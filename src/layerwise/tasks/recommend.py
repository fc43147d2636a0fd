"""Recommender systems: train a rating model into a run, score it, and recommend from it.

A batch is a dict `{"user": (N,), "item": (N,), "rating": (N,)}`. `RatingTrainer` trains any
model called as `model(user=, item=)` on it through the Trainer's step contract: the loss is the
mean squared error of the ratings, plus `l2` times the model's `penalty(user, item)` (weight
decay on the embedding rows the batch uses, see `layerwise.models.recommender`), and RMSE is the
metric. Evaluation clips predictions to the training ratings' range, as Surprise does.

The scores reported for a run (`train_recommender`):
- `rmse` on the test split; on the synthetic set also `noise_floor` (the RMSE of the true means
  on the same test rows: no model can do better in expectation) and their ratio;
- `hr@10` and `ndcg@10` by leave-one-out ranking (`ranking_metrics`): each user's last test
  rating (by time) is ranked among 99 items the user never rated, sampled uniformly, as in the
  NCF paper (He et al. 2017); hit rate is the share ranked in the top 10, NDCG weighs the rank.
  The same is measured for a popularity ranking (the number of training ratings), the baseline.

`recommend(run, user, k)` gives the top `k` items a user has not rated yet, by predicted rating;
a cold-start user (at most `COLD_MAX_RATINGS` ratings in training) gets the most popular items
instead, and the result says so.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from layerwise.data import load_dataset
from layerwise.data.ratings import COLD_MAX_RATINGS, RatingsBundle
from layerwise.errors import DataError, RecipeError
from layerwise.models import MODELS, create_model
from layerwise.recipe import Recipe
from layerwise.runs import Run
from layerwise.tasks.common import log_and_checkpoint, restore_last, task_doctor, trainer_settings
from layerwise.tasks.sequence import finish_report
from layerwise.tasks.sequence import load_run_weights as load_sequence_weights
from layerwise.train import Trainer, seed_everything
from layerwise.train.callbacks.stop_on_signal import guarded_fit

Echo = Callable[[str], None] | None
Scorer = Callable[[Tensor, Tensor], Tensor]  # (users, items) -> scores, higher is better


def rating_batches(split: tuple[Tensor, Tensor]) -> dict[str, Tensor]:
    """A `([user, item], rating)` split as the dict the batcher slices into batches."""
    x, y = split
    return {"user": x[:, 0], "item": x[:, 1], "rating": y}


class RatingTrainer(Trainer):
    """A Trainer for `{"user", "item", "rating"}` batches (see the module docstring).

    Args:
        l2: weight of the model's embedding penalty in the loss (0: none).
        rating_range: `(low, high)` predictions are clipped to in evaluation and prediction.
    """

    def __init__(
        self,
        *args: Any,
        l2: float = 0.0,
        rating_range: tuple[float, float] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("loss", "mse")
        kwargs.setdefault("metrics", ("rmse",))
        super().__init__(*args, **kwargs)
        self.params.update(l2=l2, rating_range=rating_range)
        self.embedding_l2 = l2
        self.rating_range = rating_range

    def unpack(self, batch: Any) -> tuple[dict[str, Tensor], Tensor | None]:
        return {"user": batch["user"], "item": batch["item"]}, batch.get("rating")

    def train_step(self, batch: Any) -> dict[str, Tensor]:
        inputs, target = self.unpack(batch)
        with self.autocast:
            output = self.forward(inputs)
            mse = self.compute_loss(output, target)
            loss = mse
            if self.embedding_l2:
                loss = mse + self.embedding_l2 * self.model.penalty(**inputs)
        self.backward(loss)
        self.optimizer_step()
        if self.train_metrics:
            self.update_metrics(output, target)
        return {"loss": mse.detach()}

    def eval_step(self, batch: Any) -> dict[str, Tensor]:
        inputs, target = self.unpack(batch)
        output = self._clipped(self.forward(inputs))
        self.update_metrics(output, target)
        return {"loss": self.loss_fn(output, target)}

    def predict_step(self, batch: Any) -> Tensor:
        inputs, _ = self.unpack(batch)
        return self._clipped(self.forward(inputs))

    def _clipped(self, output: Tensor) -> Tensor:
        if self.rating_range is None:
            return output
        return output.clamp(*self.rating_range)


# ------------------------------------------------------------------------------------ ranking
def held_out_items(data: RatingsBundle) -> tuple[Tensor, Tensor]:
    """`(users, items)`: each user's last test rating by time (leave-one-out's held-out item)."""
    if data.test is None:
        raise DataError(f"dataset '{data.name}' has no test split to rank", hint="hold one out")
    x, times = data.test[0], data.times["test"]
    order = np.lexsort((times.numpy(), x[:, 0].numpy()))  # by user, then time
    users = x[order, 0].numpy()
    last = np.r_[users[1:] != users[:-1], True]  # the last row of each user
    return x[order[last], 0], x[order[last], 1]


def sample_negatives(
    data: RatingsBundle, users: Tensor, negatives: int = 99, seed: int = 0
) -> Tensor:
    """`(len(users), negatives)` distinct items each user rated in no split, drawn uniformly."""
    rows = data.all_rows().numpy()
    rated = np.unique(rows[:, 0] * data.num_items + rows[:, 1])
    rng = np.random.default_rng(seed)
    out = np.empty((len(users), negatives), np.int64)
    for row, user in enumerate(users.tolist()):
        seen = rated[np.searchsorted(rated, user * data.num_items) :]
        seen = seen[seen < (user + 1) * data.num_items] - user * data.num_items
        free = data.num_items - len(seen)
        if free < negatives:
            raise DataError(
                f"user {data.user_ids[user]} rated all but {free} of {data.num_items} items; "
                f"cannot sample {negatives} negatives",
                hint="rank against fewer negatives (see `ranking_negatives`)",
            )
        picks: np.ndarray = np.empty(0, np.int64)
        while len(picks) < negatives:  # rejection sampling: most items are unrated
            draw = rng.integers(0, data.num_items, 2 * negatives)
            draw = draw[~np.isin(draw, seen)]
            picks = np.unique(np.r_[picks, draw])
        out[row] = rng.permutation(picks)[:negatives]
    return torch.as_tensor(out)


def ranking_negatives(data: RatingsBundle, users: Tensor, wanted: int = 99) -> int:
    """`wanted` negatives, or fewer when some user has fewer unrated items (a tiny data set:
    the figures are then not comparable with the NCF paper's, and the metrics say how many)."""
    rows = data.all_rows()
    rated = torch.bincount(rows[:, 0], minlength=data.num_users)[users]
    return max(1, min(wanted, data.num_items - int(rated.max())))


def ranking_metrics(
    score: Scorer,
    users: Tensor,
    held: Tensor,
    negatives: Tensor,
    k: int = 10,
) -> dict[str, float]:
    """Hit rate and NDCG at `k` of each held-out item ranked among its user's negatives.

    The rank is the number of negatives scored strictly higher (ties favour the held-out item,
    which only matters for scores that tie, such as popularity counts).
    """
    candidates = torch.cat([held[:, None], negatives], dim=1)  # column 0 is the held-out item
    flat_users = users[:, None].expand_as(candidates).reshape(-1)
    scores = score(flat_users, candidates.reshape(-1)).reshape(candidates.shape).float()
    rank = (scores[:, 1:] > scores[:, :1]).sum(1)
    hit = rank < k
    ndcg = torch.where(hit, 1.0 / torch.log2(rank.double() + 2.0), 0.0)
    return {f"hr@{k}": float(hit.double().mean()), f"ndcg@{k}": float(ndcg.mean())}


def model_scorer(model: nn.Module, batch: int = 65536) -> Scorer:
    """Score `(users, items)` pairs with a rating model, in eval mode, in chunks."""

    def score(users: Tensor, items: Tensor) -> Tensor:
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                parts = [
                    model(user=u.to(device), item=v.to(device))
                    for u, v in zip(users.split(batch), items.split(batch), strict=True)
                ]
        finally:
            model.train(was_training)
        return torch.cat(parts).cpu()

    return score


def item_popularity(data: RatingsBundle) -> Tensor:
    """Training ratings per item (float), the popularity score; ties broken by mean rating."""
    x, y = data.train
    counts = torch.bincount(x[:, 1], minlength=data.num_items).double()
    sums = torch.zeros(data.num_items, dtype=torch.float64).index_add_(0, x[:, 1], y.double())
    mean = sums / counts.clamp(min=1)
    return counts + mean / 100.0  # a mean below 100 never outweighs one more rating


def popularity_scorer(data: RatingsBundle) -> Scorer:
    popularity = item_popularity(data)
    return lambda users, items: popularity[items]


def oracle_scorer(data: RatingsBundle) -> Scorer | None:
    """The true expected rating of a synthetic set (None for real data): the ceiling."""
    truth = data.truth
    if truth is None:
        return None
    parts = [truth[k] for k in ("user_bias", "item_bias", "user_factors", "item_factors")]
    bu, bi, p, q = (torch.as_tensor(v) for v in parts)
    return lambda u, i: truth["mean"] + bu[u] + bi[i] + (p[u] * q[i]).sum(-1)


def evaluate_recommender(
    trainer: RatingTrainer, data: RatingsBundle, *, k: int = 10, negatives: int = 99, seed: int = 0
) -> dict[str, float]:
    """Test RMSE (with the noise floor on a synthetic set) and leave-one-out HR/NDCG at `k`,
    the model's and the popularity baseline's."""
    metrics = trainer.evaluate(rating_batches(data.test), batch_size=8192)
    result = {"rmse": metrics["rmse"], "mse": metrics["loss"]}
    if data.truth is not None and "expected_by_split" in data.truth:
        expected = data.truth["expected_by_split"]["test"]
        floor = float((expected - data.test[1]).square().mean().sqrt())
        result.update(noise_floor=floor, rmse_over_floor=result["rmse"] / floor)
    users, held = held_out_items(data)
    negatives = ranking_negatives(data, users, negatives)
    sampled = sample_negatives(data, users, negatives, seed)
    result.update(ranking_metrics(model_scorer(trainer.model), users, held, sampled, k))
    popular = ranking_metrics(popularity_scorer(data), users, held, sampled, k)
    result.update({f"popularity_{name}": value for name, value in popular.items()})
    oracle = oracle_scorer(data)
    if oracle is not None:
        best = ranking_metrics(oracle, users, held, sampled, k)
        result.update({f"oracle_{name}": value for name, value in best.items()})
    result.update(ranked_users=float(len(users)), ranking_negatives=float(negatives))
    return result


# ----------------------------------------------------------------------------------- training
def load_ratings(recipe: Recipe) -> RatingsBundle:
    """The recipe's rating data (a `RatingsBundle`, or a `RecipeError` naming the dataset)."""
    data = load_dataset(recipe.data.name, **recipe.data.args)
    if not isinstance(data, RatingsBundle):
        raise RecipeError(
            f"data.name '{recipe.data.name}' is not rating data",
            hint="a recommender trains on movielens or synthetic_ratings",
        )
    return data


def check_ratings(data: RatingsBundle) -> None:
    """Refuse a rating that is not a finite number (a `DataError` naming the split, the count
    and the first user and item): one makes the squared error, the global mean the models start
    from and the clipping range infinite. The MovieLens reader refuses NaN but takes `inf`."""
    for name in ("train", "val", "test"):
        part = getattr(data, name)
        if part is None:
            continue
        bad = ~torch.isfinite(part[1])
        if bool(bad.any()):
            row = int(bad.nonzero()[0])
            user, item = (int(v) for v in part[0][row])
            raise DataError(
                f"{int(bad.sum())} {name} rating(s) of '{data.name}' are not finite numbers; "
                f"the first: user {data.user_ids[user]}, item {data.item_ids[item]} "
                f"({float(part[1][row])})",
                hint="remove or correct those rows in the ratings file",
            )


def build_model(recipe: Recipe, data: RatingsBundle) -> nn.Module:
    """The recipe's model with the table sizes and mean rating the data gives."""
    accepts = inspect.signature(MODELS.get(recipe.model.name)).parameters
    if "num_users" not in accepts:
        raise RecipeError(
            f"model.name '{recipe.model.name}' is not a recommender",
            hint="use biased_mf or neumf with rating data",
        )
    return create_model(recipe.model.name, **{**data.model_args, **recipe.model.args})


def build_trainer(
    recipe: Recipe, model: nn.Module, data: RatingsBundle, callbacks: Sequence[Any] = ()
) -> RatingTrainer:
    """A `RatingTrainer` configured by `recipe.train` (`train.l2` is the embedding decay;
    `train.precision` as for any recipe: the embedding lookups and biases stay fp32 under
    autocast, so bf16 rounds only the factor and MLP products). The doctor only if among
    `callbacks`: `train_recommender` adds `task_doctor`'s."""
    ratings = data.train[1]
    return RatingTrainer(
        model,
        **trainer_settings(recipe, callbacks),
        precision=recipe.train.precision,
        doctor=False,
        l2=recipe.train.l2,
        rating_range=(float(ratings.min()), float(ratings.max())),
    )


def train_recommender(
    recipe: Recipe | None,
    runs_root: str | Path = "runs",
    *,
    resume: str | Path | None = None,
    progress: bool = True,
    echo: Echo = print,
    callbacks: Sequence[Any] = (),
) -> tuple[Run, dict[str, float]]:
    """Train a recommender recipe into a new run folder, or `resume` a stopped run from its last
    checkpoint; returns the run and its test scores.

    A resumed run continues bit for bit: the data is generated or read again by the saved
    recipe, and the weights, optimizer, random state and position in the epoch come from the
    checkpoint (the batch order is a pure function of seed and epoch). `recipe` may then be
    None; a recipe that differs from the saved one is refused.

    The data gets none of the doctor's data checks: they read `[user, item]` index pairs as
    two measured features (scale, near copies a few ids apart) and say nothing a recommender
    needs. What it needs: ids within the tables (the loaders number users and items) and finite
    ratings (`check_ratings`, before the run folder is made). The doctor watches training as a
    regression (`task_doctor`).
    """
    run: Run | None = None
    if resume is not None:
        run, recipe = Run.reopen(resume, runs_root, recipe)
        if run.info().get("status") == "finished":
            return run, run.info().get("test_metrics") or {}
    seed_everything(recipe.seed)
    data = load_ratings(recipe)
    check_ratings(data)
    model = build_model(recipe, data)
    if run is None:
        run = Run.create(runs_root, recipe.name, recipe.to_yaml())
    monitor = recipe.train.monitor if data.val is not None else "loss"
    everything = log_and_checkpoint(run, recipe, monitor, progress)
    doctor = task_doctor(recipe, run, data.task, echo)
    trainer = build_trainer(recipe, model, data, [*everything, *doctor, *callbacks])
    restore_last(run, model, trainer, resume=resume is not None)
    with guarded_fit(run, trainer):
        trainer.fit(
            rating_batches(data.train),
            rating_batches(data.val) if data.val is not None else None,
            epochs=recipe.train.epochs,
            batch_size=recipe.data.batch_size,
            eval_batch_size=recipe.data.eval_batch_size or 8192,
        )
    load_run_weights(run, model, "best")
    metrics = evaluate_recommender(trainer, data, seed=recipe.seed) if data.test else {}
    run.append_metrics({"epoch": trainer.state.epoch, "split": "test", **metrics})
    finish_report(run, trainer, metrics, [])
    return run, metrics


def evaluate_recommender_run(
    run: Run, split: str = "test", which: str = "last"
) -> dict[str, float]:
    """A trained recommender run's scores on one split (`layerwise evaluate`): RMSE, and on the
    test split also the ranking metrics and the noise floor, as `train_recommender` reports."""
    recipe = run.recipe()
    data = load_ratings(recipe)
    part = getattr(data, split, None)
    if part is None:
        raise DataError(
            f"dataset '{recipe.data.name}' has no '{split}' split",
            hint="use --split train or test (val exists when data.args.val_fraction > 0)",
        )
    model = build_model(recipe, data)
    load_run_weights(run, model, which)
    trainer = build_trainer(recipe, model, data)
    if split == "test":
        metrics = evaluate_recommender(trainer, data, seed=recipe.seed)
    else:
        metrics = trainer.evaluate(rating_batches(part), batch_size=8192)
    run.append_metrics({"split": split, "eval": which, **metrics})
    return metrics


def load_run_weights(run: Run, model: nn.Module, which: str = "best") -> None:
    """Load the run's `best` (else `last`) weights into `model`."""
    load_sequence_weights(run, model, which)


# --------------------------------------------------------------------------------- recommend
@dataclass
class Recommendation:
    """The top items for one user. `cold` says they come from popularity, not the model."""

    user: Any
    rated: int  # the user's training ratings
    cold: bool
    items: list[tuple[Any, str, float]]  # (item id, title or "", score)
    score_name: str  # "predicted rating" or "ratings" (popularity counts)

    def lines(self) -> list[str]:
        """The recommendation as the CLI prints it."""
        plural = "rating" if self.rated == 1 else "ratings"
        if self.cold:
            head = (
                f"user {self.user} is a cold-start user ({self.rated} {plural} in training, "
                f"at most {COLD_MAX_RATINGS}): these are the most popular items the user has "
                "not rated, not personal predictions"
            )
        else:
            head = f"user {self.user}: {self.rated} {plural} in training; top items not yet rated"
        rows = [head, f"{'rank':>4}  {'item':>8}  {self.score_name:>16}  title"]
        for rank, (item, title, score) in enumerate(self.items, 1):
            shown = f"{int(score)}" if self.cold else f"{score:.3f}"
            rows.append(f"{rank:>4}  {item!s:>8}  {shown:>16}  {title}".rstrip())
        return rows


def recommend(run: Run, user: Any, k: int = 10, which: str = "best") -> Recommendation:
    """The top `k` items `user` (a raw id, as in the data) has not rated, from `run`'s model;
    the most popular ones for a cold-start user. An unknown user is a `DataError`."""
    if k < 1:
        raise DataError(f"--k is {k}; it must be at least 1", hint="e.g. --k 10")
    recipe = run.recipe()
    data = load_ratings(recipe)
    index = data.user_index(user)
    if index is None:
        ids = data.user_ids
        raise DataError(
            f"user {user} is not in the data of run '{run.name}' ({len(ids)} users, ids "
            f"{ids[0]}..{ids[-1]})",
            hint="give a user id from the data; a new user needs ratings in the data and a new "
            "training run",
        )
    rows = data.all_rows()
    seen = rows[rows[:, 0] == index, 1]
    rated = int((data.train[0][:, 0] == index).sum())
    if rated <= COLD_MAX_RATINGS:
        scores, score_name, cold = item_popularity(data), "ratings", True
        scores = scores.floor()  # show the count, not the tie-break
    else:
        model = build_model(recipe, data)
        load_run_weights(run, model, which)
        every = torch.arange(data.num_items)
        scores = model_scorer(model)(torch.full_like(every, index), every)
        low, high = data.train[1].min(), data.train[1].max()
        scores, score_name, cold = scores.clamp(low, high), "predicted rating", False
    ranked = scores.double().clone()
    if cold:  # keep the tie-break of the popularity order
        ranked = item_popularity(data)
    ranked[seen] = -math.inf
    top = torch.topk(ranked, min(k, data.num_items - len(seen.unique()))).indices.tolist()
    items = [
        (data.item_ids[i], data.item_names[i] if data.item_names else "", float(scores[i]))
        for i in top
    ]
    return Recommendation(data.user_ids[index], rated, cold, items, score_name)


RECOMMENDER_DATASETS = frozenset({"movielens", "synthetic_ratings"})


def recommender_task(recipe: Recipe) -> bool:
    """Does `recipe` train a recommender (rating data, trained by `train_recommender`)?"""
    return recipe.data.name in RECOMMENDER_DATASETS
