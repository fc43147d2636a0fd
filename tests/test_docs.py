"""The user docs stay true to the code: every field, name and verb is documented, and the
examples they show (Python snippets, recipes, `--set` overrides) actually run or validate."""

from __future__ import annotations

import inspect
import math
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import torch
import typer
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from layerwise.cli import app
from layerwise.data import DATASETS, augmentations
from layerwise.data.augment import TRANSFORMS, transform_class
from layerwise.experiment import build
from layerwise.models import MODELS
from layerwise.recipe import Recipe, load_recipe, parse_recipe
from layerwise.train import LOSSES, METRICS, OPTIMIZERS, SCHEDULES

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
RECIPES_MD = (DOCS / "recipes.md").read_text(encoding="utf-8")
CLI_MD = (DOCS / "cli.md").read_text(encoding="utf-8")
GETTING_STARTED_MD = (DOCS / "getting-started.md").read_text(encoding="utf-8")
BASE_RECIPE = ROOT / "recipes" / "digits_cnn.yaml"

# Registry -> (heading that starts its section in recipes.md, arguments the library fills in).
REGISTRIES = {
    "datasets": (DATASETS, "## Datasets", set()),
    "models": (MODELS, "## Models", set()),
    "losses": (LOSSES, "## Losses", {"targets", "num_classes"}),
    "optimizers": (OPTIMIZERS, "## Optimizers", {"params"}),
    "schedules": (SCHEDULES, "## Schedules", {"optimizer", "epochs", "steps_per_epoch"}),
    "metrics": (METRICS, "## Metrics", {"num_classes"}),
}


def field_paths(model: type[BaseModel] = Recipe, prefix: str = "") -> list[str]:
    """Every dotted field path of a pydantic model, descending into nested models."""
    paths = []
    for name, field in model.model_fields.items():
        path = prefix + name
        paths.append(path)
        for arg in getattr(field.annotation, "__args__", (field.annotation,)):
            if _is_model(arg):
                paths += field_paths(arg, path + ".")
    return paths


def section(text: str, heading: str) -> str:
    """The text from the `##` heading starting with `heading` up to the next `##` heading."""
    start = text.index("\n" + heading)
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def fenced(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def raw_paths(tree: dict[str, Any], prefix: str = "") -> set[str]:
    """Dotted paths of every key in a raw recipe mapping (free-form `args` are not descended)."""
    paths = set()
    for key, value in tree.items():
        paths.add(prefix + key)
        if isinstance(value, dict) and key not in ("args", "augment"):
            paths |= raw_paths(value, f"{prefix}{key}.")
    return paths


def full_recipes(text: str) -> list[dict[str, Any]]:
    """YAML blocks that are whole recipes (they name a model), as raw mappings."""
    blocks = [yaml.safe_load(block) for block in fenced(text, "yaml")]
    return [b for b in blocks if isinstance(b, dict) and "model" in b]


def field_rows() -> dict[str, list[str]]:
    """Rows of the field tables in recipes.md: field path -> the other cells."""
    rows = {}
    for line in section(RECIPES_MD, "## Fields").splitlines():
        match = re.match(r"\| `([^`]+)` \|(.*)\|$", line)
        if match:
            rows[match.group(1)] = [cell.strip() for cell in match.group(2).split(" | ")]
    return rows


def field_info(path: str) -> FieldInfo:
    """The pydantic field at a dotted recipe path."""
    model: type[BaseModel] = Recipe
    *parents, name = path.split(".")
    for part in parents:
        annotation = model.model_fields[part].annotation
        model = next(a for a in getattr(annotation, "__args__", (annotation,)) if _is_model(a))
    return model.model_fields[name]


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


@pytest.fixture(autouse=True)
def _one_thread():
    """These nets are tiny; on a shared 2-core machine a second thread only adds contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------ recipes.md
def test_field_walker_reaches_nested_sections():
    paths = field_paths()
    assert {"name", "data.augment", "train.optimizer.lr", "train.schedule.args"} <= set(paths)
    assert "train.early_stopping.restore_best_weights" in paths
    assert len(paths) == len(set(paths)) > 40


@pytest.mark.parametrize("path", field_paths())
def test_every_recipe_field_is_documented_with_its_default(path):
    rows = field_rows()
    assert path in rows, f"recipe field {path} has no row in docs/recipes.md"
    documented = rows[path][1]  # columns: type, default, meaning
    field = field_info(path)
    if field.is_required():
        assert documented == "—", f"{path} is required"
    elif not _is_model(field.default_factory):  # sections say "see below"
        value = field.get_default(call_default_factory=True)
        assert yaml.safe_load(documented.strip("`")) == value, f"default of {path}"


@pytest.mark.parametrize("kind", REGISTRIES)
def test_every_registered_name_and_argument_is_documented(kind):
    registry, heading, filled_in = REGISTRIES[kind]
    text = section(RECIPES_MD, heading)
    assert registry.names(), f"the {kind} registry is empty"
    for name in registry.names():
        assert f"| `{name}` |" in text, f"{kind} '{name}' has no row under '{heading}'"
        for parameter in inspect.signature(registry.get(name)).parameters:
            if parameter not in filled_in:
                assert f"`{parameter}`" in text, f"argument {parameter} of {kind} '{name}'"


def test_every_augmentation_is_documented():
    text = section(RECIPES_MD, "## Augmentations")
    for name, (class_name, main) in TRANSFORMS.items():
        assert transform_class(name).__name__ == class_name
        row = f"| `{name}` | `{class_name}` |"
        assert row in text, f"augmentation {name} has no row naming {class_name}"
        if main is not None:
            assert f"{row} `{main}` |" in text, f"augmentation {name}: main argument {main}"


def test_annotated_example_sets_every_field_and_trains():
    """The 'complete' example names every field, validates, builds and trains (2 epochs)."""
    (example,) = full_recipes(section(RECIPES_MD, "## A complete annotated example"))
    # a backbone needs a pretrained file; docs/transfer.md shows complete recipes with one
    missing = {p for p in field_paths() if not p.startswith("backbone")} - raw_paths(example)
    assert not missing, f"the annotated example leaves out {sorted(missing)}"
    recipe = parse_recipe(yaml.safe_dump(example))
    experiment = build(recipe)
    history = experiment.trainer.fit(
        experiment.data.train,
        experiment.data.val,
        epochs=2,  # the cosine warm-up of 1 epoch needs a run of 2 or more
        batch_size=recipe.data.batch_size,
        transform=augmentations(recipe.data.augment),
    )
    assert len(history) == 2 and all(math.isfinite(epoch["val_loss"]) for epoch in history)
    assert {"val_accuracy", "val_f1", "val_top3_accuracy"} <= set(history[-1])


def test_recipes_shown_in_the_docs_build():
    recipes = full_recipes(RECIPES_MD) + full_recipes(GETTING_STARTED_MD)
    assert len(recipes) >= 2
    for raw in recipes:
        experiment = build(parse_recipe(yaml.safe_dump(raw)))
        assert experiment.data.num_classes == 10


def test_data_examples_name_real_loader_arguments():
    """Each one-line `data:` example in recipes.md passes only arguments its loader takes."""
    block = fenced(section(RECIPES_MD, "## Datasets"), "yaml")[0]
    examples = [yaml.safe_load(line) for line in block.splitlines()]
    assert len(examples) == 3
    for example in examples:
        loader = DATASETS.get(example["data"]["name"])
        assert set(example["data"]["args"]) <= set(inspect.signature(loader).parameters)


def train_commands() -> list[list[str]]:
    """`layerwise train ...` command lines from the ```bash blocks of every page."""
    commands = []
    for text in (RECIPES_MD, CLI_MD, GETTING_STARTED_MD):
        for block in fenced(text, "bash"):
            for line in block.splitlines():
                line = line.split("  #")[0].strip()
                if line.startswith("layerwise train"):
                    commands.append(shlex.split(line)[2:])
    return commands


def test_set_overrides_shown_in_the_docs_validate():
    commands = train_commands()
    assert sum("--set" in c for c in commands) >= 5
    for args in commands:
        overrides = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
        files = [a for a in args if a.endswith(".yaml")]
        if not files:
            continue  # --resume without a recipe
        path = ROOT / files[0] if (ROOT / files[0]).is_file() else BASE_RECIPE
        load_recipe(path, overrides)


# ----------------------------------------------------------------------------------- cli.md
def cli_commands() -> dict[str, Any]:
    """Leaf commands by their full verb (`train`, `runs ls`), from the typer app itself."""
    leaves = {}
    for name, command in typer.main.get_command(app).commands.items():
        children = getattr(command, "commands", None)
        if children:
            leaves.update({f"{name} {child}": sub for child, sub in children.items()})
        else:
            leaves[name] = command
    return leaves


def test_cli_has_the_documented_verbs():
    verbs = set(cli_commands())
    assert {"train", "evaluate", "predict", "summary", "quickstart"} <= verbs
    assert {"runs ls", "runs show", "runs compare"} <= verbs


@pytest.mark.parametrize("verb", sorted(cli_commands()))
def test_every_cli_verb_and_option_is_documented(verb):
    assert f"\n## `{verb}`\n" in CLI_MD, f"verb '{verb}' has no section in docs/cli.md"
    text = section(CLI_MD, f"## `{verb}`")
    assert f"layerwise {verb}" in text, f"no example for '{verb}'"
    shared = CLI_MD[: CLI_MD.index("\n## ")]
    for param in cli_commands()[verb].params:
        for option in (o for o in param.opts if o.startswith("-")):
            assert f"`{option}" in text or f"`{option}" in shared, f"{verb} {option}"


# ----------------------------------------------------------------------- getting-started.md
SNIPPETS = fenced(GETTING_STARTED_MD, "python")


def shrink(code: str) -> str:
    """The same snippet, run for 2 epochs on part of the digits, so the test stays quick."""
    code = re.sub(r"epochs=\d+", "epochs=2", code)
    return code.replace('load_dataset("digits")', 'load_dataset("digits", subset=600)')


def test_getting_started_opens_with_the_five_line_api():
    first = [line for line in SNIPPETS[0].splitlines() if line and not line.startswith("#")]
    assert len(first) == 5
    for call in ("load_dataset(", "Trainer(", "create_model(", ".fit(", ".evaluate("):
        assert call in SNIPPETS[0]
    assert (
        len(SNIPPETS) >= 7
    )  # five lines, raw module, steps (mixup, text, GAN), callbacks, recipes


@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_getting_started_snippet_runs(index, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "recipes").symlink_to(ROOT / "recipes")
    namespace: dict[str, Any] = {"__name__": f"snippet{index}"}
    exec(compile(shrink(SNIPPETS[index]), f"getting-started.md[{index}]", "exec"), namespace)
    printed = capsys.readouterr().out
    assert printed.strip(), "every snippet prints its result"
    trainer = namespace.get("trainer")
    if trainer is not None:
        assert 1 <= len(trainer.history) <= 2
        for epoch in trainer.history:  # `loss`, or a GAN's `d_loss` and `g_loss`
            losses = [value for key, value in epoch.items() if key.endswith("loss")]
            assert losses and all(math.isfinite(value) for value in losses)
    if "run" in namespace:
        assert (namespace["run"].path / "report.html").is_file()
