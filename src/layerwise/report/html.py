"""The run report: one static `report.html` that opens anywhere, offline, with nothing beside it.

The page leads with the doctor's diagnosis: that is what a reader opens it for. Plots are
embedded as base64 PNGs and the CSS is inline, so the file can be mailed or archived on its own.
Everything that comes from the user or the run (run name, recipe, description, findings, metric
names, summary text, plot file names, section titles) is HTML-escaped; only the bodies of
`extra_sections` are inserted as HTML, because their callers build them as HTML on purpose.
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

import yaml

from layerwise.diagnose.findings import Diagnosis
from layerwise.report.curve_marks import CurveMarks, curve_marks
from layerwise.report.findings import findings_html
from layerwise.runs.atomic import atomic_write_text
from layerwise.runs.run import STATUSES, Run

__all__ = ["write_report"]

# What each plot shows, and one line (at most HOW_TO_READ_CHARS) on how to read it.
HOW_TO_READ_CHARS = 140
_CAPTIONS = {
    "curves": (
        "Loss and metrics per epoch, for each split.",
        "Loss falling and accuracy rising is learning; validation turning away from train is "
        "overfitting. Green: best epoch; dashed: early stop.",
    ),
    "lr": (
        "Learning rate over training.",
        "The rate each step used: flat when constant, a rise and fall for one-cycle.",
    ),
    "confusion_matrix": (
        "Confusion matrix on the test split: rows are true classes.",
        "A dark diagonal is right; a dark cell off it is a pair of classes the model mixes up.",
    ),
    "samples": (
        "Test samples with their label; wrong predictions in red as label → prediction.",
        "Look for a pattern in the red ones: one class, faint or odd inputs, or labels you would "
        "call wrong too.",
    ),
    "gradient_flow": (
        "Gradient flow: the weight-gradient norm of every layer at every sampled step.",
        "Even colour is healthy; rows darkening towards the top (first layer) are vanishing "
        "gradients; a bright band or red, exploding.",
    ),
    "update_ratios": (
        "Update ratios: how much each step changes a layer's weights, relative to their size.",
        "Near the dashed 1e-3 line is healthy; far above it the learning rate is too high for "
        "that layer, far below too low.",
    ),
    "activation_histograms": (
        "Activation histograms: each activation layer's outputs, first and last epoch.",
        "A tall spike at 0 with a high dead share is dying ReLUs; piles at the ends (±1, or 0 and "
        "1) are saturated units.",
    ),
}
_SPLITS = ("train", "val", "test")


def write_report(
    run: Run,
    *,
    summary_text: str | None = None,
    diagnosis: Diagnosis | None = None,
    extra_sections: Sequence[tuple[str, str]] | None = None,
) -> Path:
    """Write `run.report_path` from the run's folder and return the path.

    The page leads with the doctor's diagnosis, then the final metrics, the plots (each with a
    line on how to read it), any extra sections, the model and the recipe.

    Args:
        run: the run whose `run.json`, `metrics.jsonl`, `recipe.yaml`, `diagnosis.json` and
            `plots/*.png` are shown.
        summary_text: the model summary table (`str(summary(model, shape))`), shown verbatim.
        diagnosis: the doctor's diagnosis; by default the one in the run's `diagnosis.json`.
        extra_sections: `(title, html)` pairs shown after the plots. The title is escaped; the
            html is trusted and inserted as it is.
    """
    info = run.info()
    if diagnosis is None:
        diagnosis = _saved_diagnosis(run)
    plots = _plots(run.plots_dir)
    marks = curve_marks(run)
    sections = [
        ("Diagnosis", "diagnosis", findings_html(diagnosis)),
        ("Final metrics", "metrics", _metrics_table(run) + _kept_note(marks)),
        ("Plots", "plots", plots or '<p class="empty">No plots yet.</p>'),
    ]
    if (run.path / "explain").is_dir():  # written by `layerwise explain`
        sections.append(("Explanations", "explanations", _explanations(run.path / "explain")))
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
        summary=_header_lines(run, info, marks),
        created=html.escape(_time(info.get("created"))),
        updated=html.escape(_time(info.get("updated"))),
        path=html.escape(str(run.path)),
        nav=" ".join(f'<a href="#{anchor}">{title}</a>' for title, anchor, _ in sections),
        body="\n".join(
            f'<section id="{a}">\n<h2>{t}</h2>\n{body}\n</section>' for t, a, body in sections
        ),
        generated=_time(datetime.now(UTC).isoformat()),
    )
    return atomic_write_text(run.report_path, page)


def _header_lines(run: Run, info: dict, marks: CurveMarks) -> str:
    """The recipe's description, what was trained on what for how long, and how it ended."""
    recipe = _raw_recipe(run)
    lines = []
    description = recipe.get("description")
    if isinstance(description, str) and description.strip():
        lines.append(f'<p class="description">{html.escape(description.strip())}</p>')
    facts = []
    model, dataset = info.get("model"), info.get("dataset")
    if model and dataset:
        facts.append(f"{model} on {dataset}")
    done = info.get("epochs_done")
    if isinstance(done, int):
        planned = f" of {marks.planned_epochs}" if marks.planned_epochs else ""
        facts.append(f"{done}{planned} epochs")
    for name, value in (info.get("test_metrics") or {}).items():
        if isinstance(value, int | float):
            facts.append(f"test {name} {_number(value)}")
    if facts:
        lines.append(f'<p class="facts">{html.escape(" · ".join(facts))}</p>')
    stop = marks.stop_sentence()
    if stop:
        lines.append(f'<p class="facts">{html.escape(stop)}</p>')
    return "\n".join(lines)


def _saved_diagnosis(run: Run) -> Diagnosis | None:
    saved = run.read_diagnosis()
    return Diagnosis.from_dict(saved) if isinstance(saved, dict) else None


def _kept_note(marks: CurveMarks) -> str:
    """Train and val are the last epoch's numbers; say so when the model is another epoch's."""
    if not (marks.kept and marks.stopped_epoch and marks.best_epoch != marks.stopped_epoch):
        return ""
    return (
        f'<p class="note">train and val are epoch {marks.stopped_epoch}\'s; the model, and so '
        f"the test column, has epoch {marks.best_epoch}'s weights.</p>"
    )


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
        caption, how = _CAPTIONS.get(png.stem, (png.stem.replace("_", " ").capitalize() + ".", ""))
        alt = html.escape(png.stem.replace("_", " "), quote=True)
        reading = f'<br><span class="how">How to read it: {html.escape(how)}</span>' if how else ""
        figures.append(
            f'<figure id="plot-{html.escape(png.stem, quote=True)}">'
            f'<img src="data:image/png;base64,{data}" alt="{alt}">'
            f"<figcaption>{html.escape(caption)}{reading}</figcaption></figure>"
        )
    return "\n".join(figures)


_EXPLAIN_CAPTIONS = {
    "filters": "First-layer filters: the patterns the first layer responds to (red +, blue −).",
    "panel": "Saliency, integrated gradients and Grad-CAM over the input, as the model saw it.",
    "feature_maps": "Each conv layer's feature maps (first 16 channels) for this input.",
    "tokens": "Integrated gradients per token: red pushes towards the class, blue away from it.",
}


def _explanations(folder: Path) -> str:
    """The PNGs `layerwise explain` wrote: the filters, then per input its panel, feature maps
    or coloured tokens (the single-method PNGs repeat the panel and are left out)."""
    files = [folder / "filters.png"] if (folder / "filters.png").is_file() else []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        files += [sub / f"{stem}.png" for stem in ("panel", "feature_maps", "tokens")]
    figures = []
    for png in (p for p in files if p.is_file()):
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        where = png.stem if png.parent == folder else f"{png.parent.name}: {png.stem}"
        alt = html.escape(where.replace("_", " "), quote=True)
        figures.append(
            f'<figure><img src="data:image/png;base64,{data}" alt="explanation {alt}">'
            f"<figcaption>{html.escape(where)}. {html.escape(_EXPLAIN_CAPTIONS[png.stem])}"
            "</figcaption></figure>"
        )
    return "\n".join(figures) or '<p class="empty">No explanations yet.</p>'


def _raw_recipe(run: Run) -> dict:
    try:
        data = yaml.safe_load(_recipe(run))
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


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
