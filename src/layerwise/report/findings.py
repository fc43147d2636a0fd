"""The doctor's findings as an HTML section of the run report."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from layerwise.diagnose.findings import Diagnosis


def findings_html(diagnosis: Diagnosis) -> str:
    """One block per finding (headline, evidence, causes, remedies, patch), most severe first."""
    if diagnosis.healthy:
        return '<p class="empty">The doctor found no problems in this run.</p>'
    blocks = []
    for finding in diagnosis.findings:
        evidence = ", ".join(
            f"{html.escape(str(k))}={html.escape(_short(v))}" for k, v in finding.evidence.items()
        )
        parts = [
            f'<div class="finding sev-{finding.severity}">',
            f'<p><span class="code">{html.escape(finding.code)}</span> '
            f"[{finding.severity}] {html.escape(finding.headline())}</p>",
        ]
        if evidence:
            parts.append(f"<p>evidence: {evidence}</p>")
        for title, items in (("Likely causes", finding.causes), ("Remedies", finding.remedies)):
            if items:
                rows = "".join(f"<li>{html.escape(item)}</li>" for item in items)
                parts.append(f"<p>{title}:</p><ul>{rows}</ul>")
        if finding.patch:
            patch = "\n".join(f"{k}: {v!r}" for k, v in finding.patch.items())
            parts.append(f"<p>Recipe patch (auto-fix):</p><pre>{html.escape(patch)}</pre>")
        parts.append("</div>")
        blocks.append("\n".join(parts))
    return "\n".join(blocks)


def _short(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list) and len(value) > 8:
        return f"[{', '.join(map(str, value[:8]))}, … {len(value)} items]"
    return str(value)
