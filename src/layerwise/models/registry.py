"""The model registry: families register with `@MODELS.register("name")` and are built by name."""

from __future__ import annotations

from typing import Any

from torch import nn

from layerwise.registry import Registry

MODELS: Registry[nn.Module] = Registry("model")


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the model registered as `name`, e.g. `create_model("resnet20", num_classes=10)`.

    An unknown name or argument raises `RecipeError` with a did-you-mean hint.
    """
    return MODELS.create(name, **kwargs)


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    return MODELS.names()
