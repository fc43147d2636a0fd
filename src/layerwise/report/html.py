"""The run report: one static `report.html` that opens anywhere, offline, with nothing beside it.

Plots are embedded as base64 PNGs and the CSS is inline, so the file can be mailed or archived on
its own. Everything that comes from the user (run name, recipe, metric names, summary text, plot
file names, section titles) is HTML-escaped; only the bodies of `extra_sections` are inserted as
HTML, because the doctor builds them as HTML on purpose.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from string import Template

from layerwise.runs.atomic import atomic_write_text
from layerwise.runs.run import STATUSES, Run

__all__ = ["write_report"]

_CAPTIONS = {
    "curves": "Loss and metrics per epoch, for each split.",
    "lr": "Learning rate over training.",
    "confusion_matrix": "Confusion matrix on the test split: rows are true classes.",
    "samples": "Test samples with their label; wrong predictions in red as label → prediction.",
}
_SPLITS = ("train", "val", "test")


def write_report(
    run: Run,
    *,
    summary_text: str | None = None,
    extra_sections: Sequence[tuple[str, str]] | None = None,
) -> Path:
    """Write `run.report_path` from the run's folder and return the path.

    Args:
        run: the run whose `run.json`, `metrics.jsonl`, `recipe.yaml` and `plots/*.png` are shown.
        summary_text: the model summary table (`str(summary(model, shape))`), shown verbatim.
        extra_sections: `(title, html)` pairs appended after the plots, e.g. the doctor's findings.
            The title is escaped; the html is trusted and inserted as it is.
    """
    info = run.info()
    sections = [("Final metrics", "metrics", _metrics_table(run))]
    plots = _plots(run.plots_dir)
    sections.append(("Plots", "plots", plots or '<p class="empty">No plots yet.</p>'))
    for i, (title, body) in enumerate(extra_sections or []):
        sections.append((html.escape(title), f"extra-{i}", body))
    if summary_text:
        sections.append(("Model", "model", f"<pre>{html.escape(summary_text)}</pre>"))
    sections.append(("Recipe", "recipe", f"<pre>{html.escape(_recipe(run))}</pre>"))

    status = str(info.get("status", "unknown"))
    page = _template().substitute(
        title=html.escape(f"{run.name} · layerwise report"),
        name=html.escape(run.name),
        status=html.escape(status),
        status_class=status if status in STATUSES else "unknown",
        created=html.escape(_time(info.get("created"))),
        updated=html.escape(_time(info.get("updated"))),
        path=html.escape(str(run.path)),
        nav=" ".join(f'<a href="#{anchor}">{title}</a>' for title, anchor, _ in sections),
        body="\n".join(f'<h2 id="{a}">{t}</h2>\n{body}' for t, a, body in sections),
        generated=_time(datetime.now(UTC).isoformat()),
    )
    return atomic_write_text(run.report_path, page)


def _metrics_table(run: Run) -> str:
    final = run.final_metrics()
    if not final:
        return '<p class="empty">No metrics recorded yet.</p>'
    splits = [s for s in _SPLITS if s in final] + sorted(s for s in final if s not in _SPLITS)
    names = sorted(
        {n for numbers in final.values() for n in numbers}, key=lambda n: (n != "loss", n)
    )
    head = "".join(f"<th>{html.escape(s)}</th>" for s in splits)
    rows = []
    for name in names:
        cells = "".join(f"<td>{_number(final[s].get(name))}</td>" for s in splits)
        rows.append(f"<tr><td>{html.escape(name)}</td>{cells}</tr>")
    return f"<table><tr><th>metric</th>{head}</tr>{''.join(rows)}</table>"


def _plots(folder: Path) -> str:
    order = list(_CAPTIONS)
    files = sorted(
        folder.glob("*.png"),
        key=lambda p: (order.index(p.stem) if p.stem in order else len(order), p.name),
    )
    figures = []
    for png in files:
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        caption = _CAPTIONS.get(png.stem) or png.stem.replace("_", " ").capitalize() + "."
        alt = html.escape(png.stem.replace("_", " "), quote=True)
        figures.append(
            f'<figure><img src="data:image/png;base64,{data}" alt="{alt}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    return "\n".join(figures)


def _recipe(run: Run) -> str:
    return run.read_recipe() if run.recipe_path.exists() else "(no recipe.yaml in this run)"


def _number(value: float | None) -> str:
    if value is None:
        return ""
    if isinstance(value, int):
        return str(value)
    return f"{value:.4g}" if 0 < abs(value) < 1e-3 or abs(value) >= 1e4 else f"{value:.4f}"


def _time(stamp: object) -> str:
    """An ISO time as `2024-05-01 13:02:11 UTC`, or '?' when unknown."""
    if not isinstance(stamp, str):
        return "?"
    match = re.match(r"(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)", stamp)
    return f"{match[1]} {match[2]} UTC" if match else stamp


def _template() -> Template:
    text = resources.files("layerwise.report").joinpath("template.html").read_text("utf-8")
    return Template(text)
