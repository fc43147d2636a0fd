"""`layerwise runs compare A B ...` as a report: every run's curves on the same axes.

One panel per metric (loss, accuracy, ...), one colour per run, train solid and validation
dashed, so where one run pulls ahead of another shows at a glance; a table of each run's last
numbers and a link to each run's own report follow. Written as `compare.png` and `compare.html`
in the folder given (the CLI uses `runs/compare/<A>_vs_<B>/`).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from layerwise.report.plots import _save, _series
from layerwise.runs import Run
from layerwise.runs.atomic import atomic_write_text

_LINE = {"train": "-", "val": "--"}


def compare_runs(runs: Sequence[Run], folder: str | Path) -> tuple[Path, Path]:
    """Write `compare.png` and `compare.html` for `runs`; returns (html path, png path)."""
    folder = Path(folder)
    curves = {run.name: _series(_epoch_records(run)) for run in runs}
    png = plot_compared(curves, folder / "compare.png")
    page = _page(runs, curves, png.name)
    return atomic_write_text(folder / "compare.html", page), png


def plot_compared(curves: dict[str, dict[str, dict[str, tuple]]], path: Path) -> Path:
    """One panel per metric; each run in its own colour, train solid, validation dashed."""
    metrics = sorted(
        {metric for series in curves.values() for metric in series},
        key=lambda m: (m != "loss", m),
    )
    columns = max(1, min(3, len(metrics)))
    rows = max(1, math.ceil(len(metrics) / columns))
    fig = Figure(figsize=(5.2 * columns, 3.8 * rows))
    colours = [f"C{i}" for i in range(10)]
    for index, metric in enumerate(metrics or ["loss"]):
        ax = fig.add_subplot(rows, columns, index + 1)
        for number, (name, series) in enumerate(curves.items()):
            for split, (epochs, values) in sorted(series.get(metric, {}).items()):
                if split not in _LINE:
                    continue
                ax.plot(
                    epochs,
                    values,
                    _LINE[split],
                    color=colours[number % len(colours)],
                    marker="o" if len(epochs) < 20 else None,
                    markersize=3,
                    label=f"{name} ({split})",
                )
        ax.set_title(metric)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _epoch_records(run: Run) -> list[dict[str, Any]]:
    """The per-epoch train and val records (not the test line or later evaluations)."""
    return [r for r in run.read_metrics() if r.get("split", "train") in _LINE and "eval" not in r]


def _page(runs: Sequence[Run], curves: dict[str, Any], png_name: str) -> str:
    names = [run.name for run in runs]
    last: dict[str, dict[str, float]] = {}
    for run in runs:
        numbers: dict[str, float] = {}
        for record in run.read_metrics():
            split = record.get("split", "train")
            for key, value in record.items():
                if isinstance(value, float) and key not in ("epoch", "step", "time", "lr"):
                    numbers[f"{split}_{key}"] = value
        last[run.name] = numbers
    keys = sorted({key for numbers in last.values() for key in numbers})
    header = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    body = "".join(
        f"<tr><td>{html.escape(key)}</td>"
        + "".join(f"<td>{_cell(last[n].get(key))}</td>" for n in names)
        + "</tr>"
        for key in keys
    )
    links = "".join(
        f'<li><a href="{html.escape(run.report_path.resolve().as_uri())}">'
        f"{html.escape(run.name)}</a> ({html.escape(str(run.path))})</li>"
        for run in runs
    )
    title = html.escape(" vs ".join(names))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Compare: {title}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}
td:first-child{{text-align:left}}img{{max-width:100%}}</style></head>
<body><h1>Compare: {title}</h1>
<h2>Curves</h2><p>Each run in its own colour; train solid, validation dashed.</p>
<img src="{html.escape(png_name)}" alt="curves of {title}">
<h2>Last numbers</h2><table><tr><th>metric</th>{header}</tr>{body}</table>
<h2>Runs</h2><ul>{links}</ul></body></html>
"""


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"
