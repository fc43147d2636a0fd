"""The doctor's rules: one function per finding code, each reading recorded logs only.

A rule takes a `RuleContext` (the epoch history, the probe log, the data profile, the recipe) and
returns one `Finding` or None. Rules never see the model, so each can be tested on a hand-made
log. `run_rules` runs them in a fixed order: data rules before training rules (bad data explains
bad training), then the order of `CODES`; a symptom (a plateau, underfitting, an oscillating loss,
a slow loss) is dropped when a finding that accounts for what it rests on was raised too
(`RESTS_ON`, `ACCOUNTS_FOR`), so the report names causes first and `--auto-fix` applies the fix
for the cause. The thresholds live as constants in the modules that
use them and are documented in docs/doctor.md.

Example:
    >>> ctx = RuleContext(history=[{"epoch": 1, "loss": float("nan")}], probes=None, data=None,
    ...                   recipe=None, num_classes=10)
    >>> [f.code for f in run_rules(ctx)]
    ['loss_nan']
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from layerwise.diagnose.findings import CODES, SEVERITY_ORDER, Finding, get_path

Stage = Literal["data", "training"]
STAGES: tuple[Stage, ...] = ("data", "training")

# Symptoms give way to causes. A symptom rule's finding rests on observations of the loss curve
# (RESTS_ON); a finding accounts for observations it produces (ACCOUNTS_FOR). A finding is kept
# out of the report, and listed as explained by its cause, when another finding raised in the
# same run accounts for everything it rests on: units that never fire leave the weights still,
# so the slow loss `lr_too_low` reads is theirs; a NaN loss accounts for every curve symptom.
# The table is data, so a new rule joins by naming its observations, not by editing pairs.
RESTS_ON: dict[str, frozenset[str]] = {
    "loss_plateau": frozenset({"flat_loss"}),
    "underfitting": frozenset({"poor_fit"}),
    "oscillating_loss": frozenset({"swinging_loss"}),
    # A rate too high shows either as an overshoot at the start (the first epoch worse than the
    # untrained model, a spike) or as the loss rising above its best later; a finding names which
    # in `evidence["rests_on"]`, and only the later rise can be one climb of an oscillation.
    "lr_too_high": frozenset({"rising_loss", "overshoot"}),
    "lr_too_low": frozenset({"slow_loss"}),
    # The validation loss climbing while the training loss falls, or an accuracy gap.
    "overfitting": frozenset({"val_loss_rise", "accuracy_gap"}),
    # Layer-wise (the first layers' gradients tiny) or through time (the first steps').
    "vanishing_gradients": frozenset({"small_first_layer_gradient", "small_early_step_gradient"}),
    # Probe readings, not curves: units silent on whole batches, a gradient norm grown 100-fold.
    # Only a finding's `evidence["accounts_for"]` explains these (huge inputs, below).
    "dead_units": frozenset({"silent_units"}),
    "exploding_gradients": frozenset({"growing_gradient"}),
}
_CURVE = frozenset(
    {"flat_loss", "poor_fit", "swinging_loss", "rising_loss", "overshoot", "slow_loss"}
)
ACCOUNTS_FOR: dict[str, frozenset[str]] = {
    "loss_nan": _CURVE,
    "exploding_gradients": frozenset({"flat_loss", "poor_fit", "swinging_loss"}),
    "lr_too_high": frozenset({"flat_loss", "poor_fit"}),
    "lr_too_low": frozenset({"flat_loss", "poor_fit"}),
    # Overshooting updates throw the weights around: the validation loss swings up with them.
    "oscillating_loss": frozenset({"rising_loss", "val_loss_rise"}),
    "vanishing_gradients": frozenset({"flat_loss", "poor_fit", "slow_loss"}),
    # A model too small to fit also shows dead or saturated units: they do not explain poor_fit.
    "dead_units": frozenset({"flat_loss", "slow_loss"}),
    "saturated_activations": frozenset({"flat_loss", "slow_loss"}),
}


def explainers(code: str, rests_on: frozenset[str] | None = None) -> tuple[str, ...]:
    """The codes whose findings account for everything a `code` finding rests on (`rests_on`
    when the finding names it, else all of `RESTS_ON[code]`)."""
    needs = rests_on if rests_on is not None else RESTS_ON.get(code)
    if not needs:
        return ()
    return tuple(c for c in CODES if c != code and needs <= ACCOUNTS_FOR.get(c, frozenset()))


# code -> the codes that explain any finding of it (derived from the two tables above); a finding
# that rests on part of its code's observations may have more explainers (`explainers`).
EXPLAINED_BY: dict[str, tuple[str, ...]] = {c: e for c in CODES if (e := explainers(c))}

# Tasks whose loss curve is not a supervised loss (a GAN's or an RL agent's), so curve rules skip.
UNSUPERVISED_TASKS = ("generative", "gan", "rl", "reinforcement")


def number(value: Any) -> float | None:
    """A logged value as a float (NaN and inf kept), or None when it is missing or not a number."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):  # "NaN"/"Infinity" from a strict JSON writer
        try:
            return float(value)
        except ValueError:
            return None
    return None


def finite(value: Any) -> bool:
    x = number(value)
    return x is not None and math.isfinite(x)


def fmt(x: float) -> str:
    """A number for a message: 3 significant digits (0.0834, 3.1e+06)."""
    return f"{x:.3g}"


def median(values: Iterable[float]) -> float | None:
    ordered = sorted(values)
    if not ordered:
        return None
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


STRONG_MARGIN = 1.5  # a measurement 1.5x past its threshold or more makes a strong finding


def sureness(
    finding: Finding, what: str, value: float, threshold: float, *, higher: bool = True
) -> Finding:
    """Set how sure `finding` is from the measurement that decided it: `strong` when `value` is
    `STRONG_MARGIN` times past `threshold` (above it when `higher`, else below), `possible`
    when it is just past it. Thresholds sit above what healthy runs show, so a value just past
    one is where a healthy run would be misread, if anywhere."""
    margin = value / threshold if higher else threshold / value if value else math.inf
    finding.confidence = "strong" if margin >= STRONG_MARGIN else "possible"
    finding.decided_by = f"{what} {fmt(value)} ({'>=' if higher else '<='} {fmt(threshold)})"
    return finding


def trailing(by_epoch: dict[int, Any], condition: Callable[[Any], bool]) -> list[int]:
    """The epochs, oldest first, of the unbroken run at the end of training where `condition`
    holds for `by_epoch[epoch]` (empty when the latest epoch does not satisfy it)."""
    streak: list[int] = []
    for epoch in sorted(by_epoch, reverse=True):
        if not condition(by_epoch[epoch]):
            break
        streak.insert(0, epoch)
    return streak


PERSIST_EPOCHS = 2  # a probe-based condition must hold for the last 2 probed epochs ...


def persistent(streak: list[int], epochs_seen: int, final: bool) -> bool:
    """... or, after training, for the only epoch there is: one bad epoch is not a trend."""
    return len(streak) >= PERSIST_EPOCHS or (final and epochs_seen == 1 and len(streak) == 1)


@dataclass
class RuleContext:
    """Everything a rule may read, as plain data.

    Args:
        history: per-epoch flat logs as the Trainer keeps them, oldest first:
            `{"epoch": 1, "step": 45, "loss": .., "accuracy": .., "lr": .., "val_loss": ..}`.
        probes: a `ProbeLog` (anything with a `.steps` list of step records), a list of probe
            records (other kinds are skipped), or None.
        data: the `profile_data` dict, or None.
        recipe: the raw recipe dict (`Recipe.model_dump(mode="json")`), or None; findings compute
            their patches from it.
        task: "classification", "regression", …; curve rules skip unsupervised tasks.
        num_classes: output classes (taken from `data` when None).
        final: True after training; False for live checks on a growing history.
    """

    history: list[dict[str, Any]] = field(default_factory=list)
    probes: Any = None
    data: dict[str, Any] | None = None
    recipe: dict[str, Any] | None = None
    task: str = "classification"
    num_classes: int | None = None
    final: bool = True

    # ------------------------------------------------------------------ history
    def series(self, key: str) -> list[tuple[int, float]]:
        """(epoch, value) for every epoch that logged a finite `key`, in epoch order."""
        out = []
        for i, record in enumerate(self.history, start=1):
            value = number(record.get(key))
            if value is not None and math.isfinite(value):
                out.append((int(record.get("epoch", i)), value))
        return out

    def values(self, key: str) -> list[float]:
        return [v for _, v in self.series(key)]

    @property
    def has_val(self) -> bool:
        return any("val_loss" in record for record in self.history)

    @property
    def supervised(self) -> bool:
        return str(self.task).lower() not in UNSUPERVISED_TASKS

    # ------------------------------------------------------------------ probes
    @cached_property
    def steps(self) -> list[dict[str, Any]]:
        """Sampled-step probe records, oldest first (empty without probes)."""
        return _records(self.probes, "steps", "step")

    @cached_property
    def finite_steps(self) -> list[dict[str, Any]]:
        """Step records whose loss is finite: statistics of a diverged network mean nothing."""
        return [s for s in self.steps if number(s.get("loss")) is None or finite(s.get("loss"))]

    @cached_property
    def regular_steps(self) -> list[dict[str, Any]]:
        """`finite_steps` without the dense early samples (`"early": True`) of any epoch that has
        regular ones: per-epoch medians then weigh the first moments of training as they did
        before early steps were sampled, while a run that dies within its first steps still
        has its records."""
        regular_epochs = {s.get("epoch") for s in self.finite_steps if not s.get("early")}
        return [
            s
            for s in self.finite_steps
            if not (s.get("early") and s.get("epoch") in regular_epochs)
        ]

    def layer_names(self, role: str | None = None) -> list[str]:
        """Probed layer names in model order (first seen), optionally of one role."""
        names: dict[str, None] = {}
        for record in self.steps:
            for name, stats in (record.get("layers") or {}).items():
                if role is None or stats.get("role") == role:
                    names.setdefault(name, None)
        return list(names)

    def layer_epoch_medians(self, key: str, role: str | None = None) -> dict[int, dict[str, float]]:
        """{epoch: {layer: median of `key` over that epoch's sampled steps}}, finite values only."""
        per_epoch: dict[int, dict[str, list[float]]] = {}
        for record in self.regular_steps:
            epoch = int(record.get("epoch", 0))
            for name, stats in (record.get("layers") or {}).items():
                if role is not None and stats.get("role") != role:
                    continue
                value = number(stats.get(key))
                if value is not None and math.isfinite(value):
                    per_epoch.setdefault(epoch, {}).setdefault(name, []).append(value)
        return {
            epoch: {name: median(vals) for name, vals in layers.items()}
            for epoch, layers in sorted(per_epoch.items())
        }

    def layer_type(self, name: str) -> str:
        for record in self.steps:
            stats = (record.get("layers") or {}).get(name)
            if stats and stats.get("type"):
                return str(stats["type"])
        return ""

    # ------------------------------------------------------------------ task facts
    @property
    def classes(self) -> int | None:
        k = (
            self.num_classes
            if self.num_classes is not None
            else (self.data or {}).get("num_classes")
        )
        return int(k) if isinstance(k, int | float) and not isinstance(k, bool) else None

    @property
    def classification(self) -> bool:
        return str(self.task).lower() == "classification" and (self.classes or 0) >= 2

    @property
    def chance_loss(self) -> float | None:
        """Cross-entropy of a uniform guess, ln(K): where an untrained classifier starts."""
        k = self.classes
        return math.log(k) if k is not None and self.classification else None

    @property
    def loss_floor(self) -> float:
        """The lowest reachable loss: the entropy of label-smoothed targets (else 0)."""
        eps = number(self.get("train.loss.label_smoothing", 0.0)) or 0.0
        k = self.classes
        if not self.classification or eps <= 0 or k is None:
            return 0.0
        p, q = 1.0 - eps + eps / k, eps / k
        return -(p * math.log(p)) - (k - 1) * q * math.log(q)

    def get(self, dotted: str, default: Any = None) -> Any:
        """A recipe value by dotted key (`train.optimizer.lr`), or `default` without a recipe."""
        return get_path(self.recipe, dotted, default) if self.recipe else default


def _records(probes: Any, attr: str, kind: str) -> list[dict[str, Any]]:
    """The `kind` records of a ProbeLog-like object, or of a plain list of records."""
    if probes is None:
        return []
    if hasattr(probes, attr):
        return list(getattr(probes, attr))
    return [r for r in probes if isinstance(r, dict) and r.get("kind", kind) == kind]


# ---------------------------------------------------------------------- registry
RuleFn = Callable[[RuleContext], Finding | None]


@dataclass(frozen=True)
class Rule:
    """One rule: the code it reports, its stage, and the function that decides."""

    code: str
    stage: Stage
    fn: RuleFn

    def __call__(self, ctx: RuleContext) -> Finding | None:
        if self.stage == "data" and not ctx.data:
            return None
        finding = self.fn(ctx)
        if finding is not None and finding.code != self.code:
            raise ValueError(f"rule '{self.code}' returned a finding coded '{finding.code}'")
        decide = DECIDERS.get(self.code)
        measured = decide(finding) if finding is not None and decide is not None else None
        if finding is not None and measured is not None:
            what, value, threshold, higher = measured
            sureness(finding, what, value, threshold, higher=higher)
        return finding


RULES: dict[str, Rule] = {}
# code -> what decided a finding: (measurement, value, threshold, higher is worse), or None.
Decider = Callable[[Finding], tuple[str, float, float, bool] | None]
DECIDERS: dict[str, Decider] = {}


def decided_by(code: str) -> Callable[[Decider], Decider]:
    """Register how sure a `code` finding is: the measurement that decided it (see `sureness`)."""

    def register(fn: Decider) -> Decider:
        DECIDERS[code] = fn
        return fn

    return register


def rule(code: str, stage: Stage) -> Callable[[RuleFn], RuleFn]:
    """Register the decorated function as the one rule for `code`."""
    if code not in CODES:
        raise ValueError(f"unknown finding code '{code}' (add it to CODES first)")
    if stage not in STAGES:
        raise ValueError(f"rule stage must be one of {STAGES}, got '{stage}'")

    def register(fn: RuleFn) -> RuleFn:
        if code in RULES:
            raise ValueError(f"finding code '{code}' already has a rule")
        RULES[code] = Rule(code, stage, fn)
        return fn

    return register


def ordered_rules(stage: Stage | None = None) -> list[Rule]:
    """Rules in run order: data before training, then the order of `CODES`."""
    position = {code: i for i, code in enumerate(CODES)}
    chosen = [r for r in RULES.values() if stage is None or r.stage == stage]
    return sorted(chosen, key=lambda r: (STAGES.index(r.stage), position[r.code]))


def run_rules(ctx: RuleContext, stage: Stage | None = None) -> list[Finding]:
    """Every finding for `ctx`, most severe first (ties: data first, then `CODES` order).

    `stage="data"` runs only the data rules (before training), `"training"` only the others.
    """
    if stage is not None and stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES} or None, got '{stage}'")
    return evaluate(ctx, stage)[0]


def evaluate(ctx: RuleContext, stage: Stage | None = None) -> tuple[list[Finding], list[Finding]]:
    """(findings, explained symptoms) for `ctx`: `run_rules` plus what gave way (see `explain`)."""
    if stage is not None and stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES} or None, got '{stage}'")
    return explain([f for r in ordered_rules(stage) if (f := r(ctx)) is not None])


def explain(findings: list[Finding]) -> tuple[list[Finding], list[Finding]]:
    """(causes, symptoms): findings split by `EXPLAINED_BY`, each sorted most severe first.

    A symptom's evidence names its explainers (`explained_by`), and each cause lists the symptoms
    it accounts for (`explains`), so a report can say "true, but not the root cause"."""
    raised = {f.code for f in findings}
    # A finding may account for more than its code does (`evidence["accounts_for"]`): inputs
    # that are tiny, not huge, make the first layer's gradient tiny.
    extra = {f.code: frozenset(f.evidence.get("accounts_for") or ()) for f in findings}
    kept, explained = [], []
    for finding in findings:
        named = finding.evidence.get("rests_on")
        rests_on = frozenset(named) & RESTS_ON.get(finding.code, frozenset()) if named else None
        needs = rests_on if rests_on is not None else RESTS_ON.get(finding.code, frozenset())
        by = [c for c in explainers(finding.code, rests_on) if c in raised]
        by += [
            c
            for c, more in extra.items()
            if c != finding.code
            and c not in by
            and needs
            and needs <= ACCOUNTS_FOR.get(c, frozenset()) | more
        ]
        if by:
            finding.evidence["explained_by"] = by
            explained.append(finding)
        else:
            kept.append(finding)
    for cause in kept:
        symptoms = [f for f in explained if cause.code in f.evidence["explained_by"]]
        if symptoms:
            cause.evidence["explains"] = [f.code for f in symptoms]
            _as_severe_as(cause, symptoms)
    order = lambda f: -SEVERITY_ORDER[f.severity]  # noqa: E731
    return sorted(kept, key=order), sorted(explained, key=order)


def _as_severe_as(cause: Finding, symptoms: list[Finding]) -> None:
    """Raise a cause to the severity of the worst symptom it explains (at most `error`; a fatal
    finding explains, it is never explained): explaining a run's errors must not make the run
    read as milder, and the cause then leads the report. Inputs at 0-255 (a warning on their
    own) that killed the units and blew the loss up (errors) are an error of that run;
    `evidence["severity_raised_from"]` keeps what the cause's rule said alone."""
    worst = max(symptoms, key=lambda f: SEVERITY_ORDER[f.severity]).severity
    rank = SEVERITY_ORDER[worst]
    if SEVERITY_ORDER[cause.severity] < rank <= SEVERITY_ORDER["error"]:
        cause.evidence["severity_raised_from"] = cause.severity
        cause.severity = worst


# The rule modules register themselves on import.
from layerwise.diagnose.rules import (  # noqa: E402
    activations,
    curves,
    data,
    gan,
    gradients,
    tokens,
)

__all__ = [
    "ACCOUNTS_FOR",
    "DECIDERS",
    "EXPLAINED_BY",
    "RESTS_ON",
    "RULES",
    "Rule",
    "RuleContext",
    "activations",
    "curves",
    "data",
    "decided_by",
    "evaluate",
    "explain",
    "explainers",
    "fmt",
    "gan",
    "gradients",
    "ordered_rules",
    "persistent",
    "rule",
    "run_rules",
    "sureness",
    "tokens",
    "trailing",
]
