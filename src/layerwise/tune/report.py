"""The table `layerwise tune` prints: every trial, how it ended, and the best point."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table

from layerwise.tune.search import TuneResult


def print_tune_result(result: TuneResult, console: Any) -> None:
    """Trials in order (state, score, epochs trained, why pruned, params, run), then the best."""
    keys = list(result.rows[0].params) if result.rows else []
    table = Table("trial", "state", result.metric, "epochs", "pruned by", *keys, "run")
    for row in result.rows:
        table.add_row(
            str(row.number),
            row.state,
            "" if row.value is None else f"{row.value:.4f}",
            str(row.epochs),
            row.pruned_by or "",
            *(escape(_show(row.params.get(key))) for key in keys),
            escape(row.run or ""),
        )
    console.print(table)
    epochs = sum(row.epochs for row in result.rows)
    pruned = sum(row.state == "pruned" for row in result.rows)
    console.print(f"{len(result.rows)} trials, {pruned} pruned, {epochs} epochs trained")
    if result.best is None:
        console.print("no trial completed yet; nothing written", markup=False)
    else:
        best = result.best
        console.print(
            f"best: trial {best.number}, {result.metric} {best.value:.4f} ({result.direction})",
            markup=False,
        )
        for key, value in best.params.items():
            console.print(f"  {key}: {_show(value)}", markup=False)
        console.print(f"best recipe: {result.best_recipe}", markup=False)
    console.print(f"study: {result.storage}", markup=False)


def _show(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)
