"""A tiny name -> factory registry shared by models, datasets, losses, optimizers and schedules.

Families register with a decorator (as timm does) and are created by name through one function,
so a recipe can say `model: {name: resnet20}` and an unknown name gets a did-you-mean hint.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from pydantic import ConfigDict, TypeAdapter, ValidationError

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
        """Create the thing registered as `name` with keyword arguments.

        Arguments that are plain data (as read from a recipe) are first checked against the
        factory's type hints, so `hidden: abc` is reported here, naming the argument, instead of
        as a TypeError from deep inside PyTorch. The values themselves are passed on unchanged.
        """
        factory = self.get(name)
        self._check_names(name, factory, kwargs)
        for key, value in kwargs.items():
            self._check_argument(name, factory, key, value)
        try:
            return factory(**kwargs)
        except TypeError as exc:
            if "unexpected keyword argument" in str(exc) or "missing" in str(exc):
                raise self.error(
                    f"bad arguments for {self.kind} '{name}': {exc}",
                    hint=f"check the arguments of {self.kind} '{name}' in docs/recipes.md",
                ) from exc
            raise

    def _check_names(self, name: str, factory: Callable[..., T], kwargs: dict[str, Any]) -> None:
        """Refuse arguments the factory does not take, all at once and with a did-you-mean
        (`hiden` -> `hidden`), instead of Python's TypeError about the first one."""
        try:
            parameters = inspect.signature(factory).parameters.values()
        except (TypeError, ValueError):
            return
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
            return
        accepted = [p.name for p in parameters if p.kind is not inspect.Parameter.VAR_POSITIONAL]
        unknown = [key for key in kwargs if key not in accepted]
        if not unknown:
            return
        hints = {key: did_you_mean(key, accepted).partition("? ")[0] for key in unknown}
        close = [
            (f"{hint}?" if len(unknown) == 1 else f"'{key}': {hint}?")
            for key, hint in hints.items()
            if hint.startswith("did you mean")
        ]
        listed = ", ".join(f"'{key}'" for key in unknown)
        plural = "s" if len(unknown) > 1 else ""
        raise self.error(
            f"bad arguments for {self.kind} '{name}': it has no argument{plural} {listed}"
            + (f" ({'; '.join(close)})" if close else ""),
            hint=f"{self.kind} '{name}' takes: {', '.join(accepted) or 'no arguments'}",
        )

    def _check_argument(self, name: str, factory: Callable[..., T], key: str, value: Any) -> None:
        if not _is_plain(value):
            return  # tensors, modules, optimizers…: passed by code, not typed in a recipe
        adapter, annotation = _adapter(factory, key)
        if adapter is None:
            return
        try:
            adapter.validate_python(value)
        except ValidationError as exc:
            problem = exc.errors()[0]["msg"].lower()
            raise self.error(
                f"bad argument '{key}' for {self.kind} '{name}': {problem} (got {value!r})",
                hint=f"'{key}' takes {annotation}; see docs/recipes.md",
            ) from exc


_PLAIN_LEAVES = (str, int, float, bool, type(None))
_LENIENT = ConfigDict(arbitrary_types_allowed=True)


def _is_plain(value: Any) -> bool:
    """Whether `value` is YAML-like data: scalars, lists and string-keyed dicts of them."""
    if isinstance(value, _PLAIN_LEAVES):
        return type(value) in _PLAIN_LEAVES  # not numpy scalars or enum members
    if type(value) in (list, tuple):
        return all(_is_plain(v) for v in value)
    if type(value) is dict:
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


@functools.cache
def _adapter(factory: Callable[..., Any], key: str) -> tuple[TypeAdapter | None, str]:
    """A validator for parameter `key` of `factory`; None when it has no usable annotation."""
    try:
        parameter = inspect.signature(factory).parameters.get(key)
    except (TypeError, ValueError):
        return None, ""
    if parameter is None or parameter.annotation is inspect.Parameter.empty:
        return None, ""
    annotation = parameter.annotation
    if isinstance(annotation, str):
        if annotation == "Any":
            return None, ""
        namespace = vars(sys.modules[factory.__module__])
        try:
            resolved = eval(annotation, namespace)  # the library's own annotation text
        except Exception:  # a name imported only for type checkers
            return None, ""
    else:
        resolved, annotation = annotation, _type_text(annotation)
    try:
        return TypeAdapter(resolved, config=_LENIENT), annotation
    except Exception:  # a type pydantic cannot validate: leave it to the factory
        return None, ""


def _type_text(annotation: Any) -> str:
    """`int`, `Sequence[int] | None`: an annotation as it was written."""
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("collections.abc.", "").replace("typing.", "")
