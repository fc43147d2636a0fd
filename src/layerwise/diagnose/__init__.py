"""The troubleshooting doctor: probes, data checks, rules → findings, auto-fix, LR finder.

Names are imported on first use: `layerwise.data` registers the `faulty` dataset from this
package, and an eager import of the probes here would import the Trainer in the middle of that.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Diagnosis": "findings",
    "Finding": "findings",
    "CODES": "findings",
    "apply_patch": "findings",
    "Probes": "probes",
    "ProbeLog": "probes",
    "Doctor": "doctor",
    "check_data": "doctor",
    "diagnose_run": "doctor",
    "profile_data": "data_checks",
    "RULES": "rules",
    "RuleContext": "rules",
    "run_rules": "rules",
    "auto_fix": "autofix",
    "lr_find": "lr_finder",
    "plot_lr_find": "lr_finder",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'layerwise.diagnose' has no attribute '{name}'")
    return getattr(importlib.import_module(f"layerwise.diagnose.{_EXPORTS[name]}"), name)
