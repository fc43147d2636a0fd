"""Default callbacks that packages above `train/` attach to every Trainer, such as the doctor.

The Trainer must not import the doctor (it is built on top of the Trainer), yet
`Trainer(model).fit(...)` should have the doctor watching, the way Keras adds its progress bar and
Lightning its checkpoint callback. So packages declare their defaults as entry points in the
`layerwise.default_callbacks` group (layerwise's own are in pyproject.toml); Lightning discovers
external callbacks the same way. The entry point's name is the Trainer's switch for it
(`Trainer(doctor=False)`), its value a function `(trainer) -> list[Callback]`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from importlib.metadata import EntryPoint, distributions
from typing import TYPE_CHECKING

from layerwise.errors import LayerwiseError

if TYPE_CHECKING:
    from layerwise.train.callbacks.base import Callback
    from layerwise.train.trainer import Trainer

GROUP = "layerwise.default_callbacks"

CallbackFactory = Callable[["Trainer"], "list[Callback]"]


@functools.cache
def _entry_points() -> dict[str, EntryPoint]:
    """Every installed distribution's entry points in `GROUP`, the first of each name winning.

    All distributions are read, not only the first of each name as `entry_points()` does, so a
    stale `*.egg-info` left in a source folder on `sys.path` cannot hide the installed ones.
    """
    found: dict[str, EntryPoint] = {}
    for distribution in distributions():
        for point in distribution.entry_points:
            if point.group == GROUP:
                found.setdefault(point.name, point)
    return found


def default_callbacks(name: str, trainer: Trainer) -> list[Callback]:
    """The callbacks the `name` entry point makes for `trainer`."""
    point = _entry_points().get(name)
    if point is None:
        raise LayerwiseError(
            f"no default callbacks named '{name}' are installed (entry point group '{GROUP}')",
            hint=f"install layerwise with pip (pip install -e . in a checkout), or pass "
            f"{name}=False to the Trainer",
        )
    factory: CallbackFactory = point.load()
    return list(factory(trainer))
