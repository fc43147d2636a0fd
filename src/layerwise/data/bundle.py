"""A dataset as the rest of layerwise sees it: three splits plus what a model needs to know."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from torch import Tensor

from layerwise.errors import DataError

Split = tuple[Tensor, Tensor] | None


@dataclass
class DatasetBundle:
    """Train/val/test splits of one dataset, with the facts a recipe fills a model from.

    Args:
        name: the registry name or file the data came from.
        train, val, test: `(x, y)` tuples of CPU tensors, or `None` when the split is absent.
        num_classes: the number of classes; for regression, the number of targets (the width a
            model's output layer needs), so `create_model(..., num_classes=b.num_classes)` fits
            either task.
        input_shape: the shape of one sample, without the batch dimension.
        class_names: one name per class (empty for regression).
        task: "classification" or "regression".
        pixel_stats: `(mean, std)` that pixels in [0, 1] were standardised with, so that new
            images (e.g. files given to `layerwise predict`) get the same preprocessing.
    """

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    input_shape: tuple[int, ...]
    class_names: list[str] = field(default_factory=list)
    task: Literal["classification", "regression"] = "classification"
    pixel_stats: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.task not in ("classification", "regression"):
            raise DataError(
                f"dataset '{self.name}' has unknown task '{self.task}'",
                hint="use 'classification' or 'regression'",
            )

    def sizes(self) -> dict[str, int]:
        """Rows per split (0 for an absent split)."""
        return {
            split: 0 if data is None else len(data[0])
            for split, data in (("train", self.train), ("val", self.val), ("test", self.test))
        }

    def __repr__(self) -> str:
        # The default dataclass repr would print every tensor.
        sizes = ", ".join(f"{k}={v}" for k, v in self.sizes().items())
        return (
            f"DatasetBundle(name={self.name!r}, task={self.task!r}, {sizes}, "
            f"num_classes={self.num_classes}, input_shape={self.input_shape})"
        )
