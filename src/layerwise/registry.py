"""A tiny name -> factory registry shared by models, datasets, losses, optimizers and schedules.

Families register with a decorator (as timm does) and are created by name through one function,
so a recipe can say `model: {name: resnet20}` and an unknown name gets a did-you-mean hint.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from layerwise.errors import LayerwiseError, RecipeError, did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories for one kind of thing (e.g. "model")."""

    def __init__(self, kind: str, error: type[LayerwiseError] = RecipeError) -> None:
        self.kind = kind
        self.error = error
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str | None = None) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: register `fn` under `name` (default: the function's name)."""

        def decorate(fn: Callable[..., T]) -> Callable[..., T]:
            key = (name or fn.__name__).lower()
            if key in self._factories:
                raise ValueError(f"{self.kind} '{key}' is registered twice")
            self._factories[key] = fn
            return fn

        return decorate

    def names(self) -> list[str]:
        return sorted(self._factories)

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._factories

    def get(self, name: str) -> Callable[..., T]:
        """Return the factory for `name`, or raise with a did-you-mean hint."""
        key = str(name).lower()
        if key not in self._factories:
            raise self.error(
                f"unknown {self.kind} '{name}'", hint=did_you_mean(key, self._factories)
            )
        return self._factories[key]

    def create(self, name: str, **kwargs: Any) -> T:
        """Create the thing registered as `name` with keyword arguments."""
        factory = self.get(name)
        try:
            return factory(**kwargs)
        except TypeError as exc:
            if "unexpected keyword argument" in str(exc) or "missing" in str(exc):
                raise self.error(
                    f"bad arguments for {self.kind} '{name}': {exc}",
                    hint=f"check the arguments of {self.kind} '{name}' in docs/recipes.md",
                ) from exc
            raise
