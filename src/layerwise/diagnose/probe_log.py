"""The probe log: what `Probes` recorded, as plain records that the rules and plots read.

`probes.jsonl` in a run folder holds one JSON object per line: a `step` record per sampled step and
a `hist` record per epoch (the fields are listed under "Probes" in docs/architecture.md). It is
kept apart from the `Probes` callback so that what reads a log (the rules, `diagnose_run`, the
doctor's plots in `report/`) needs neither hooks nor the Trainer.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from layerwise.errors import LayerwiseError, RunError, did_you_mean
from layerwise.runs.atomic import atomic_write_text, json_default

__all__ = ["PROBES_FILE", "REDUCERS", "ProbeLog"]

PROBES_FILE = "probes.jsonl"  # the log's name in a run folder
REDUCERS: dict[str, Callable[[list[float]], float]] = {
    "median": lambda v: float(np.median(v)),
    "mean": lambda v: float(np.mean(v)),
    "max": lambda v: float(np.max(v)),
    "min": lambda v: float(np.min(v)),
    "first": lambda v: v[0],
    "last": lambda v: v[-1],
}


@dataclass
class ProbeLog:
    """Probe records: `steps` (one per sampled step) and `hists` (one per epoch), plain dicts.

    Values are floats (NaN and inf included: they are evidence), or None where a number could
    not be taken (a layer that was not called, a train_step that returned no loss).
    """

    steps: list[dict[str, Any]] = field(default_factory=list)
    hists: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, path: str | Path) -> ProbeLog:
        """Read a `probes.jsonl`; a missing or damaged file is a `RunError` naming it."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise RunError(
                f"probe log '{path}' does not exist",
                hint="it is written by training with probes on (Probes(path=...) or the "
                "recipe's doctor section); check the run folder",
            ) from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise RunError(
                f"cannot read probe log '{path}': {exc}",
                hint="check the file's permissions, or delete it and train again",
            ) from exc
        log = cls()
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise _corrupt(path, number, exc.msg) from exc
            if not isinstance(record, dict):
                raise _corrupt(path, number, "not a JSON object")
            if record.get("kind") == "step":
                if not isinstance(record.get("step"), int) or not isinstance(
                    record.get("layers"), dict
                ):
                    raise _corrupt(path, number, "a step record needs 'step' and 'layers'")
                log.steps.append(record)
            elif record.get("kind") == "hist":
                if not isinstance(record.get("layers"), dict):
                    raise _corrupt(path, number, "a hist record needs 'layers'")
                log.hists.append(record)
        return log

    def save(self, path: str | Path) -> Path:
        """Write the log as JSON lines in step order, atomically."""
        records = sorted(
            [*self.steps, *self.hists],
            key=lambda r: (r.get("step", math.inf), r.get("kind") != "step"),
        )
        text = "".join(json.dumps(r, default=json_default) + "\n" for r in records)
        return atomic_write_text(path, text)

    def truncate(self, step: int) -> ProbeLog:
        """Drop records taken at or after `step` (a resumed run takes them again)."""
        self.steps = [r for r in self.steps if r["step"] < step]
        self.hists = [r for r in self.hists if r.get("step", -1) < step]
        return self

    def layers(self) -> list[str]:
        """Layer names in model order (a layer missing from early records keeps its place)."""
        order: list[str] = []
        for record in [*self.steps, *self.hists]:
            previous = -1
            for name in record.get("layers", {}):
                if name in order:
                    previous = order.index(name)
                else:
                    previous += 1
                    order.insert(previous, name)
        return order

    def series(self, layer: str | None, key: str) -> tuple[list[int], list[float]]:
        """(steps, values) of one statistic; `layer=None` reads step-level keys (`loss`,
        `grad_norm`). Steps where the value is missing are left out."""
        steps, values = [], []
        for record in self.steps:
            source = record if layer is None else record.get("layers", {}).get(layer)
            value = source.get(key) if isinstance(source, dict) else None
            if isinstance(value, int | float) and not isinstance(value, bool):
                steps.append(record["step"])
                values.append(float(value))
        return steps, values

    def epoch_values(self, layer: str | None, key: str, reduce: str = "median") -> dict[int, float]:
        """One value per epoch: `reduce` (median, mean, max, min, first, last) of its samples.

        NaN propagates (except through first/last), so a NaN anywhere in an epoch shows."""
        if reduce not in REDUCERS:
            raise LayerwiseError(
                f"unknown reduction '{reduce}'", hint=did_you_mean(reduce, REDUCERS)
            )
        by_epoch: dict[int, list[float]] = {}
        epochs = {r["step"]: r.get("epoch") for r in self.steps}
        for step, value in zip(*self.series(layer, key), strict=True):
            by_epoch.setdefault(epochs[step], []).append(value)
        return {epoch: REDUCERS[reduce](values) for epoch, values in by_epoch.items()}


def _corrupt(path: Path, line: int, why: str) -> RunError:
    return RunError(
        f"probe log '{path}' is damaged at line {line}: {why}",
        hint="delete the file; the next training run with probes writes a new one",
    )
