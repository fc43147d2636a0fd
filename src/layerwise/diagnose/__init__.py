"""The troubleshooting doctor: probes and their log, data checks, rules → findings.

What trains whole experiments on top of the doctor (auto-fix, the LR range test) lives in
`layerwise.tune`; the doctor's plots in `layerwise.report`. Names are imported on first use, so
`import layerwise.diagnose` costs nothing until one is needed (the probes import torch).
"""

from __future__ import annotations

from layerwise.lazy import lazy_exports

_EXPORTS = {
    "Diagnosis": "findings",
    "Finding": "findings",
    "CODES": "findings",
    "apply_patch": "findings",
    "Probes": "probes",
    "ProbeLog": "probe_log",
    "Doctor": "doctor",
    "check_data": "doctor",
    "diagnose_run": "doctor",
    "doctor_callbacks": "doctor",
    "profile_data": "data_checks",
    "RULES": "rules",
    "RuleContext": "rules",
    "run_rules": "rules",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
