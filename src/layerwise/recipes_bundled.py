"""The recipes that ship with layerwise: list them, find one by name, resolve a CLI argument.

The repository's `recipes/` folder is installed as the package `layerwise.recipes` (pyproject.toml
maps it), so the same files are found through `importlib.resources` in a checkout installed with
`pip install -e .` and in an installed wheel. A recipe's name is its path inside that folder
without the suffix: `digits_cnn`, `broken/lr_too_high`.

Example:
    >>> from layerwise.recipes_bundled import bundled_recipe, bundled_recipe_names
    >>> "digits_cnn" in bundled_recipe_names()
    True
    >>> bundled_recipe("digits_cnn").name
    'digits_cnn.yaml'
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path, PurePosixPath

from layerwise.errors import RecipeError, did_you_mean

PACKAGE = "layerwise.recipes"
SUFFIXES = (".yaml", ".yml")


def bundled_recipe_names() -> list[str]:
    """Every bundled recipe's name (`digits_cnn`, `broken/lr_too_high`), sorted."""
    names: list[str] = []

    def walk(folder: Traversable, prefix: str) -> None:
        for entry in folder.iterdir():
            if entry.is_dir():
                walk(entry, f"{prefix}{entry.name}/")
            elif entry.name.endswith(SUFFIXES):
                names.append(prefix + entry.name.rsplit(".", 1)[0])

    walk(_root(), "")
    return sorted(names)


def find_bundled_recipe(name: str) -> Path | None:
    """The bundled recipe called `name`, or None.

    `name` may carry the suffix and the folder's own name: `digits_cnn`, `digits_cnn.yaml` and
    `recipes/digits_cnn.yaml` are the same recipe, so the README's commands also work outside a
    checkout.
    """
    parts = _name_parts(name)
    if not parts:
        return None
    root = _root()
    last = parts[-1]
    for file_name in [last] if last.endswith(SUFFIXES) else [last + s for s in SUFFIXES]:
        entry = root.joinpath(*parts[:-1], file_name)
        if entry.is_file():
            return Path(str(entry))  # pip installs packages as plain files: a Traversable is a Path
    return None


def bundled_recipe(name: str) -> Path:
    """The bundled recipe called `name`; a RecipeError naming the bundled ones if there is none."""
    found = find_bundled_recipe(name)
    if found is None:
        raise RecipeError(f"no bundled recipe '{name}'", hint=_choices_hint(name))
    return found


def resolve_recipe(target: str | Path) -> Path:
    """A recipe argument as a file: the file itself if it exists, else the bundled recipe so named.

    Example: `layerwise train digits_cnn` trains the bundled digits_cnn.yaml unless a file called
    `digits_cnn` is in the current folder.
    """
    if Path(target).is_file():
        return Path(target)
    found = find_bundled_recipe(str(target))
    if found is None:
        raise RecipeError(
            f"recipe '{target}' not found: no such file, and no bundled recipe of that name",
            hint=f"give a recipe file or a bundled recipe's name; {_choices_hint(str(target))}",
        )
    return found


def _root() -> Traversable:
    try:
        return resources.files(PACKAGE)
    except ModuleNotFoundError as exc:
        raise RecipeError(
            f"the bundled recipes are not installed (no package {PACKAGE})",
            hint="reinstall layerwise: pip install -e . in a checkout, else pip install layerwise",
        ) from exc


def _name_parts(name: str) -> tuple[str, ...]:
    """`recipes/broken/x.yaml` -> ("broken", "x.yaml"); () for anything outside the folder."""
    path = PurePosixPath(name.replace("\\", "/"))
    parts = path.parts[1:] if path.parts[:1] == ("recipes",) else path.parts
    if path.is_absolute() or any(part in ("", ".", "..") for part in parts):
        return ()
    return parts


def _choices_hint(name: str) -> str:
    parts = _name_parts(name)
    wanted = "/".join(parts) if parts else name
    for suffix in SUFFIXES:
        wanted = wanted.removesuffix(suffix)
    return did_you_mean(wanted, bundled_recipe_names())
