"""The packages of layerwise import downwards only, so there is no import cycle between them.

DESIGN.md's order, with the small modules placed where their imports put them:

    errors ← registry, recipe, text ← nn, data, runs ← models ← train ← diagnose ← report ← tasks
           ← experiment ← predict, tune ← serve ← cli, the top-level package

Every `import` and `from … import` counts, including those inside functions (lazy imports are
still dependencies) and under `TYPE_CHECKING` (a type annotation is a dependency too). A unit is
a top-level module (`experiment.py`) or package (`train/`) of `src/layerwise`.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "src" / "layerwise"

LAYERS: list[set[str]] = [
    {"errors", "lazy"},
    {"registry", "recipe", "recipes_bundled", "text"},
    {"nn", "data", "runs"},
    {"models"},
    {"train"},
    {"diagnose"},
    {"report"},
    {"tasks", "transfer", "sklearn"},  # sklearn: the scikit-learn estimators
    {"experiment"},
    {"predict", "tune"},
    {"serve", "explain"},  # export, serving and explanations read inputs as predict does
    {"cli_text"},
    {"cli", "__init__", "__main__"},
]
LEVEL = {unit: level for level, units in enumerate(LAYERS) for unit in units}


def unit_of(path: Path, source: Path = SOURCE) -> str:
    first = path.relative_to(source).parts[0]
    return first.removesuffix(".py")


def imported_units(path: Path) -> dict[str, int]:
    """The layerwise units a file imports, each with the first line that does."""
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            if node.module == "layerwise":  # `from layerwise import experiment`
                names = [f"layerwise.{alias.name}" for alias in node.names]
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names = [node.args[0].value]
        for name in names:
            parts = name.split(".")
            if parts[0] == "layerwise" and len(parts) > 1:
                found.setdefault(parts[1], node.lineno)
    return found


def dependencies(source: Path = SOURCE) -> dict[str, dict[str, str]]:
    """unit -> {imported unit: where}, across every file of the unit."""
    graph: dict[str, dict[str, str]] = defaultdict(dict)
    for path in sorted(source.rglob("*.py")):
        unit = unit_of(path, source)
        for target, line in imported_units(path).items():
            if target != unit:
                graph[unit].setdefault(target, f"{path.relative_to(source.parent)}:{line}")
    return graph


def upward_imports(graph: dict[str, dict[str, str]]) -> list[str]:
    return [
        f"{where}: {unit} (layer {LEVEL[unit]}) imports {target} (layer {LEVEL[target]})"
        for unit, targets in graph.items()
        for target, where in targets.items()
        if LEVEL.get(target, -1) >= LEVEL.get(unit, -1)
    ]


def test_every_unit_has_a_layer():
    units = {unit_of(path) for path in SOURCE.rglob("*.py")}
    assert units <= set(LEVEL), f"give these a layer in LAYERS: {sorted(units - set(LEVEL))}"


def test_units_import_only_layers_below_them():
    upward = upward_imports(dependencies())
    assert not upward, "imports that do not point down:\n" + "\n".join(upward)


def find_cycle(graph: dict[str, dict[str, str]]) -> list[str] | None:
    """One cycle of the graph as a list of units, or None (depth-first search)."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in graph.get(node, {}):
            if state.get(nxt) == "open":
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in list(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_there_is_no_import_cycle_between_packages():
    cycle = find_cycle(dependencies())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_checks_catch_a_lazy_upward_import_and_a_cycle(tmp_path):
    fake = tmp_path / "layerwise"
    (fake / "train").mkdir(parents=True)
    (fake / "train" / "trainer.py").write_text(
        "def fit():\n    from layerwise.diagnose.doctor import Doctor\n"
    )
    (fake / "diagnose.py").write_text("import layerwise.train.trainer\n")
    graph = dependencies(fake)
    assert upward_imports(graph) == [
        "layerwise/train/trainer.py:2: train (layer 4) imports diagnose (layer 5)"
    ]
    assert find_cycle(graph) in (["train", "diagnose", "train"], ["diagnose", "train", "diagnose"])
