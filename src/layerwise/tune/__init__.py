"""What trains whole experiments on top of the rest: auto-fix and the learning-rate range test.

`tune/` sits above `layerwise.experiment` (it builds and trains recipes) and below the CLI;
nothing under it is imported by `diagnose/`, `report/` or `experiment`. Names are imported on
first use, so importing the package costs nothing until one is needed.
"""

from __future__ import annotations

from layerwise.lazy import lazy_exports

_EXPORTS = {
    "AutoFixResult": "autofix",
    "FixRound": "autofix",
    "auto_fix": "autofix",
    "LRFindResult": "lr_finder",
    "LRRangeTest": "lr_finder",
    "lr_find": "lr_finder",
    "plot_lr_find": "lr_finder",
    "suggest_lr": "lr_finder",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
