"""Tabular MLP: an embedding per categorical column, concatenated with the numeric columns, then
the `mlp` family's blocks.

It reads rows as `layerwise.data.mixed_table.TableEncoder` lays them out: first one column of
category codes per categorical column (0 = a category not seen in training), then the scaled
numbers and missing-value flags. A recipe on a `csv_table` or `fair` dataset fills
`cardinalities` and `num_numeric` from the data.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from layerwise.errors import RecipeError
from layerwise.models.mlp import mlp
from layerwise.models.registry import MODELS


def embedding_width(cardinality: int, cap: int = 16) -> int:
    """Columns of a category's embedding: about half its number of values, at most `cap` (a
    two-valued column needs one number; a 50-valued one does not need 25)."""
    return max(1, min(cap, (cardinality + 1) // 2))


class TabularMLP(nn.Module):
    """Embeddings for the categorical columns, then an MLP on [embeddings, numbers].

    Args:
        num_classes: output units (1 for regression).
        cardinalities: rows of each categorical column's embedding (its categories + 1).
        num_numeric: numeric columns (scaled numbers and missing flags) after the codes.
        hidden, activation, dropout, batchnorm: as for `mlp`.
        embedding_cap: the widest embedding.
    """

    def __init__(
        self,
        num_classes: int,
        cardinalities: Sequence[int] = (),
        num_numeric: int = 0,
        hidden: Sequence[int] = (128, 64),
        activation: str = "relu",
        dropout: float = 0.1,
        batchnorm: bool = False,
        embedding_cap: int = 16,
    ) -> None:
        super().__init__()
        for position, cardinality in enumerate(cardinalities):
            if not isinstance(cardinality, int) or cardinality < 1:
                raise RecipeError(
                    f"model.args.cardinalities[{position}] is {cardinality!r}: it must be a "
                    "positive integer",
                    hint="leave cardinalities out to take them from the dataset",
                )
        self.cardinalities = list(cardinalities)
        self.num_numeric = int(num_numeric)
        self.embeddings = nn.ModuleList(
            nn.Embedding(c, embedding_width(c, embedding_cap)) for c in self.cardinalities
        )
        self.body = mlp(num_classes, hidden, activation, dropout, batchnorm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n_cat = len(self.embeddings)
        parts = []
        for column, (embedding, cardinality) in enumerate(
            zip(self.embeddings, self.cardinalities, strict=True)
        ):
            codes = x[:, column].long()
            codes = torch.where((codes >= 0) & (codes < cardinality), codes, 0)  # unknown slot
            parts.append(embedding(codes))
        parts.append(x[:, n_cat:])
        return self.body(torch.cat(parts, dim=1))


@MODELS.register("tabular_mlp")
def tabular_mlp(
    num_classes: int,
    cardinalities: Sequence[int] = (),
    num_numeric: int = 0,
    hidden: Sequence[int] = (128, 64),
    activation: str = "relu",
    dropout: float = 0.1,
    batchnorm: bool = False,
    embedding_cap: int = 16,
) -> TabularMLP:
    """A `TabularMLP` (see its Args).

    Example:
        >>> model = tabular_mlp(2, cardinalities=[4, 7], num_numeric=3, hidden=(32,))
        >>> model(torch.tensor([[1.0, 6.0, 0.1, -0.2, 0.0]])).shape
        torch.Size([1, 2])
    """
    return TabularMLP(
        num_classes,
        list(cardinalities),
        num_numeric,
        hidden,
        activation,
        dropout,
        batchnorm,
        embedding_cap,
    )
