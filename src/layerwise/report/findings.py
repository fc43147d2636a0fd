"""The doctor's findings as the first section of the run report.

A reader opens the report to learn what went wrong, so each finding is a card that reads top to
bottom: what (headline and severity), the numbers behind it (a short table, 3 significant
figures), why (likely causes), what to do (remedies), and the recipe patch as the YAML one would
paste into the recipe, which is also what `layerwise doctor RECIPE --auto-fix` applies.
"""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from layerwise.diagnose.findings import Diagnosis, Finding

__all__ = ["evidence_rows", "findings_html", "format_number", "patch_yaml"]

MAX_EVIDENCE_ROWS = 8  # more than this and the table stops being read; diagnosis.json has all
_MAX_LIST_ITEMS = 6


def findings_html(diagnosis: Diagnosis | None) -> str:
    """A summary line, then one card per finding (most severe first), then the findings shown
    during training that no longer held at the end."""
    if diagnosis is None:
        return '<p class="empty">The doctor has not examined this run.</p>'
    resolved = list(getattr(diagnosis, "resolved", []) or [])
    parts = [f'<p class="verdict">{html.escape(_verdict(diagnosis))}</p>']
    parts += [_card(finding) for finding in diagnosis.findings]
    if resolved:
        rows = "".join(f"<li>{html.escape(_resolved_line(f))}</li>" for f in resolved)
        parts.append(
            '<div class="resolved"><p>Shown during training, no longer true at the end:</p>'
            f"<ul>{rows}</ul></div>"
        )
    return "\n".join(parts)


def evidence_rows(evidence: dict[str, Any], message: str = "") -> list[tuple[str, str]]:
    """(name, value) pairs of a finding's evidence: nested dicts flattened to `scale › std`
    (a single outer key dropped), shallow entries first, numbers to 3 significant figures, long
    lists shortened, strings the message already says left out; at most `MAX_EVIDENCE_ROWS`
    rows, the last one saying how many more diagnosis.json holds."""
    pairs = [
        (path, value)
        for path, value in _flatten(evidence)
        if not (isinstance(value, str) and value and value in message)
    ]
    if len({path[0] for path, _ in pairs}) == 1 and all(len(path) > 1 for path, _ in pairs):
        pairs = [
            (path[1:], value) for path, value in pairs
        ]  # {"scale": {...}}: say "min", not "scale › min"
    pairs.sort(key=lambda pair: len(pair[0]))  # stable: the headline numbers before the details
    rows = [(" › ".join(path), _format_value(value)) for path, value in pairs]
    if len(rows) > MAX_EVIDENCE_ROWS:
        hidden = len(rows) - (MAX_EVIDENCE_ROWS - 1)
        rows = [*rows[: MAX_EVIDENCE_ROWS - 1], ("…", f"{hidden} more in diagnosis.json")]
    return rows


def format_number(value: float | int, digits: int = 3) -> str:
    """`131.556 -> '132'`, `0.0023214 -> '0.00232'`, `4254.0 -> '4,250'`, `257537.9 -> '2.58e5'`:
    at most `digits` significant figures (no trailing zeros), plain notation from 0.001 to
    100,000, an exponent outside it; ints are counts and stay exact."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if not math.isfinite(value):
        return str(value)  # nan, inf, -inf
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    if magnitude < -3 or magnitude >= 5:
        mantissa, exponent = f"{value:.{digits - 1}e}".split("e")
        return f"{_strip_zeros(mantissa)}e{int(exponent)}"
    decimals = max(digits - 1 - magnitude, 0)
    rounded = round(value, digits - 1 - magnitude)
    if rounded != 0 and math.floor(math.log10(abs(rounded))) > magnitude:  # 9.996 -> 10.0
        decimals = max(decimals - 1, 0)
    return _strip_zeros(f"{rounded:,.{decimals}f}")


def patch_yaml(patch: dict[str, Any]) -> str:
    """A dotted-key recipe patch as nested YAML, in the recipe's own shape:
    `{"train.optimizer.lr": 1e-4}` becomes `train:\\n  optimizer:\\n    lr: 0.0001`."""
    nested: dict[str, Any] = {}
    for dotted, value in patch.items():
        *parents, leaf = dotted.split(".")
        node = nested
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return yaml.safe_dump(nested, sort_keys=False, default_flow_style=False).rstrip()


# ---------------------------------------------------------------------------- helpers
def _verdict(diagnosis: Diagnosis) -> str:
    if diagnosis.healthy:
        return "The doctor found no problems in this run."
    counts: dict[str, int] = {}
    for finding in diagnosis.findings:
        counts[finding.severity] = counts.get(finding.severity, 0) + 1
    total = len(diagnosis.findings)
    by_severity = ", ".join(f"{n} {severity}" for severity, n in counts.items())
    return f"The doctor found {total} problem{'s' if total > 1 else ''} ({by_severity})."


def _card(finding: Finding) -> str:
    where = []
    if finding.epoch is not None:
        where.append(f"epoch {finding.epoch}")
    if finding.layer:
        where.append(f"layer {finding.layer}")
    parts = [
        f'<div class="finding sev-{html.escape(finding.severity)}">',
        f'<h3><span class="sev">{html.escape(finding.severity)}</span> '
        f'<span class="code">{html.escape(finding.code)}</span>'
        + (f' <span class="where">{html.escape(" · ".join(where))}</span>' if where else "")
        + "</h3>",
        f'<p class="message">{html.escape(finding.message)}</p>',
    ]
    rows = evidence_rows(finding.evidence, finding.message)
    if rows:
        cells = "".join(
            f"<tr><td>{html.escape(name)}</td><td>{html.escape(value)}</td></tr>"
            for name, value in rows
        )
        parts.append(
            f'<table class="evidence"><tr><th>evidence</th><th>value</th></tr>{cells}</table>'
        )
    for title, items in (("Likely causes", finding.causes), ("What to do", finding.remedies)):
        if items:
            listed = "".join(f"<li>{html.escape(item)}</li>" for item in items)
            parts.append(f'<p class="label">{title}</p><ul>{listed}</ul>')
    if finding.patch:
        parts.append(
            '<p class="label">Recipe patch (what <code>--auto-fix</code> applies)</p>'
            f'<pre class="patch">{html.escape(patch_yaml(finding.patch))}</pre>'
        )
    parts.append("</div>")
    return "\n".join(parts)


def _resolved_line(finding: Finding) -> str:
    headline = getattr(finding, "resolved_headline", None)
    return headline() if callable(headline) else f"{finding.headline()} (resolved by the end)"


def _strip_zeros(number: str) -> str:
    return number.rstrip("0").rstrip(".") if "." in number else number


def _flatten(value: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    if isinstance(value, dict) and value:
        pairs = []
        for key, inner in value.items():
            pairs += _flatten(inner, (*path, str(key)))
        return pairs
    return [(path, value)]


def _format_value(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, int | float):
        return format_number(value)
    if isinstance(value, list | tuple):
        shown = ", ".join(_format_value(v) for v in value[:_MAX_LIST_ITEMS])
        more = f", … ({len(value)} in all)" if len(value) > _MAX_LIST_ITEMS else ""
        return f"[{shown}{more}]"
    return str(value)
