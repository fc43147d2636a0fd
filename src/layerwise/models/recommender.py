"""Recommenders that predict a user's rating of an item: biased matrix factorisation and NeuMF.

Both are called as `model(user=..., item=...)` with `(N,)` index tensors (or with one `(N, 2)`
tensor of `[user, item]` rows, as generic tools pass a split's `x`) and return `(N,)` predicted
ratings, so a dict batch `{"user", "item", "rating"}` trains them through the Trainer's step
contract. Both start from the mean training rating (`global_mean`) and learn a bias per user and
per item on top of it, the baseline that already explains much of a rating.

Weight decay on embeddings is `penalty(user, item)`: the mean squared norm of the embedding rows
and biases a batch touches, which the recommender task adds to the loss times the recipe's
`train.l2`. Decaying only the rows in use, as the SGD of Koren's biased MF does, keeps the
tables of rarely seen users and items from being shrunk on every step of the others.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from layerwise.errors import RecipeError, ShapeError
from layerwise.models.registry import MODELS


class _Biases(nn.Module):
    """The global mean plus a learned bias per user and per item."""

    def __init__(self, num_users: int, num_items: int, global_mean: float) -> None:
        super().__init__()
        self.register_buffer("global_mean", torch.tensor(float(global_mean)))
        self.user_bias = nn.Embedding(num_users, 1)
        self.item_bias = nn.Embedding(num_items, 1)
        nn.init.zeros_(self.user_bias.weight)
        nn.init.zeros_(self.item_bias.weight)

    def forward(self, user: Tensor, item: Tensor) -> Tensor:
        return self.global_mean + self.user_bias(user)[:, 0] + self.item_bias(item)[:, 0]

    def penalty(self, user: Tensor, item: Tensor) -> Tensor:
        return self.user_bias(user)[:, 0].square() + self.item_bias(item)[:, 0].square()


def _pairs(user: Tensor, item: Tensor | None) -> tuple[Tensor, Tensor]:
    """`(user, item)` index tensors, also from one `(N, 2)` tensor of `[user, item]` rows (what
    a rating split's `x` holds, and what generic tools such as `summary` and export pass)."""
    if item is not None:
        return user, item
    if user.dim() != 2 or user.shape[1] != 2:
        raise ShapeError(
            f"a recommender takes user and item indices, or one (N, 2) tensor of [user, item] "
            f"rows; got one tensor of shape {tuple(user.shape)}",
            hint="call model(user=..., item=...) with (N,) index tensors",
        )
    pairs = user.long()
    return pairs[:, 0], pairs[:, 1]


def _embedding(count: int, dim: int, std: float) -> nn.Embedding:
    table = nn.Embedding(count, dim)
    nn.init.normal_(table.weight, 0.0, std)
    return table


class BiasedMF(nn.Module):
    """`mean + b_u + b_i + p_u · q_i` (Koren, Bell and Volinsky 2009; Surprise's SVD).

    Args:
        num_users, num_items: sizes of the embedding tables (filled from the data).
        dim: latent factors per user and item.
        global_mean: the mean training rating (filled from the data).
        init_std: standard deviation of the initial factors.

    Example:
        >>> model = BiasedMF(num_users=943, num_items=1682, dim=32, global_mean=3.53)
        >>> model(user=torch.tensor([0, 1]), item=torch.tensor([5, 9])).shape
        torch.Size([2])
    """

    def __init__(
        self,
        num_users: int,
        num_items: int,
        dim: int = 32,
        global_mean: float = 0.0,
        init_std: float = 0.1,
    ) -> None:
        super().__init__()
        self.biases = _Biases(num_users, num_items, global_mean)
        self.user_factors = _embedding(num_users, dim, init_std)
        self.item_factors = _embedding(num_items, dim, init_std)

    def forward(self, user: Tensor, item: Tensor | None = None) -> Tensor:
        user, item = _pairs(user, item)
        dot = (self.user_factors(user) * self.item_factors(item)).sum(-1)
        return self.biases(user, item) + dot

    def penalty(self, user: Tensor, item: Tensor) -> Tensor:
        """Mean over the batch of the squared norms of the rows it uses (factors and biases)."""
        users, items = self.user_factors(user), self.item_factors(item)
        squares = users.square().sum(-1) + items.square().sum(-1)
        return (squares + self.biases.penalty(user, item)).mean()


class NeuMF(nn.Module):
    """Neural collaborative filtering (He et al. 2017): GMF and an MLP side by side.

    The GMF branch multiplies a user and an item embedding element-wise; the MLP branch reads
    another pair, concatenated, through `hidden` ReLU layers; one linear layer (the head) reads
    both. For explicit ratings the output is a rating, added to the global mean and the biases
    (the paper scores implicit feedback with a sigmoid instead).

    The head starts as biased MF: weight 1 on every GMF product (their plain dot product) and 0
    on the MLP, which then learns only what the dot product misses. With PyTorch's default head
    (random weights of about 0.2) the GMF factors' gradients were scaled down by those weights
    and the products by the small initial factors: NeuMF spent its first 3-4 epochs fitting
    little more than the biases (train RMSE 0.91-0.74, against 0.50 for the truth) and then
    overfitted in the few epochs left (benchmarks/recommender.py; docs/recommender.md).

    Args:
        num_users, num_items, global_mean: filled from the data.
        dim: the GMF embedding size (the MLP's embeddings are `hidden[0] // 2` wide).
        hidden: widths of the MLP's layers.
        dropout: dropout after each MLP layer.
    """

    def __init__(
        self,
        num_users: int,
        num_items: int,
        dim: int = 16,
        hidden: Sequence[int] = (64, 32, 16),
        dropout: float = 0.0,
        global_mean: float = 0.0,
        init_std: float = 0.1,
    ) -> None:
        super().__init__()
        if not hidden or min(hidden) < 1 or dim < 1:
            raise RecipeError(
                f"neumf: model.args.dim and model.args.hidden must be >= 1 (got {dim}, "
                f"{list(hidden)})",
                hint="e.g. dim: 16, hidden: [64, 32, 16]",
            )
        half = max(hidden[0] // 2, 1)
        self.biases = _Biases(num_users, num_items, global_mean)
        self.gmf_user = _embedding(num_users, dim, init_std)
        self.gmf_item = _embedding(num_items, dim, init_std)
        self.mlp_user = _embedding(num_users, half, init_std)
        self.mlp_item = _embedding(num_items, half, init_std)
        layers: list[nn.Module] = []
        width = 2 * half
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        self.mlp = nn.Sequential(*layers)
        self.head = nn.Linear(dim + width, 1)
        # start as biased MF: the GMF pair's plain dot product (weights 1), the MLP unread
        # (weights 0), so the MLP learns only what the dot product misses
        with torch.no_grad():
            self.head.weight[:, :dim] = 1.0
            self.head.weight[:, dim:] = 0.0
            self.head.bias.zero_()

    def forward(self, user: Tensor, item: Tensor | None = None) -> Tensor:
        user, item = _pairs(user, item)
        gmf = self.gmf_user(user) * self.gmf_item(item)
        mlp = self.mlp(torch.cat([self.mlp_user(user), self.mlp_item(item)], dim=-1))
        return self.biases(user, item) + self.head(torch.cat([gmf, mlp], dim=-1))[:, 0]

    def penalty(self, user: Tensor, item: Tensor) -> Tensor:
        """Mean over the batch of the squared norms of the embedding rows it uses."""
        squares = sum(
            table(index).square().sum(-1)
            for table, index in (
                (self.gmf_user, user),
                (self.gmf_item, item),
                (self.mlp_user, user),
                (self.mlp_item, item),
            )
        )
        return (squares + self.biases.penalty(user, item)).mean()


@MODELS.register("biased_mf")
def biased_mf(
    num_users: int, num_items: int, dim: int = 32, global_mean: float = 0.0, init_std: float = 0.1
) -> BiasedMF:
    """Biased matrix factorisation; `num_users`, `num_items`, `global_mean` come from the data."""
    return BiasedMF(num_users, num_items, dim, global_mean, init_std)


@MODELS.register("neumf")
def neumf(
    num_users: int,
    num_items: int,
    dim: int = 16,
    hidden: Sequence[int] = (64, 32, 16),
    dropout: float = 0.0,
    global_mean: float = 0.0,
    init_std: float = 0.1,
) -> NeuMF:
    """NeuMF (GMF + MLP) predicting ratings; sizes and `global_mean` come from the data."""
    return NeuMF(num_users, num_items, dim, tuple(hidden), dropout, global_mean, init_std)
