"""What the doctor says: findings with a stable code, the numbers behind them and a fix.

A `Finding` is plain data (JSON in `diagnosis.json`), so rules can be tested on recorded logs and
a diagnosis can be read back without the model. The `patch` is a recipe patch: dotted key paths
into the recipe (`train.optimizer.lr`) and the values `--auto-fix` sets them to.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Severity = Literal["info", "warning", "error", "fatal"]
SEVERITY_ORDER: dict[str, int] = {"info": 0, "warning": 1, "error": 2, "fatal": 3}
Confidence = Literal["strong", "possible"]
CONFIDENCES: tuple[str, ...] = ("strong", "possible")

# Stable codes (extend, never rename): code -> one-line title shown in reports.
CODES: dict[str, str] = {
    "overfitting": "the model fits training data much better than validation data",
    "underfitting": "the model does not fit even its training data",
    "exploding_gradients": "gradient norms grow by orders of magnitude",
    "vanishing_gradients": "gradients shrink to nothing before they reach the first layers",
    "dead_units": "ReLU-like units that never activate",
    "saturated_activations": "sigmoid/tanh units stuck at their limits",
    "loss_nan": "the loss became NaN or infinite",
    "lr_too_high": "the learning rate is too high",
    "lr_too_low": "the learning rate is too low",
    "loss_plateau": "the loss stopped improving early",
    "oscillating_loss": "the loss goes up and down instead of down",
    "class_imbalance": "some classes are much rarer than others",
    "label_noise": "a share of the training labels look wrong",
    "train_test_leakage": "validation/test samples also appear in training data",
    "duplicate_samples": "the training data repeats samples",
    "missing_values": "inputs contain NaN or infinite values",
    "unscaled_inputs": "input ranges are far from what the first layer expects",
    "constant_feature": "some input features never change",
    "data_too_small": "too little training data for the model's size",
    "high_unknown_rate": "many tokens are unknown to the vocabulary (<unk>)",
    "heavy_truncation": "most sequences are cut at max_length, dropping much of their text",
    "mode_collapse": "the generator makes only a few kinds of image",
    "discriminator_overpowering": "the discriminator wins outright; the generator stops learning",
    "gan_divergence": "the GAN's losses or sample quality swing without the samples improving",
}


@dataclass
class Finding:
    """One problem the doctor found.

    Args:
        code: a key of `CODES`.
        severity: `info`, `warning`, `error` (the run will not give a useful model) or `fatal`
            (training must stop now, e.g. a NaN loss).
        message: one line with the numbers, e.g. "gradient norm 3.1e6, 40x the previous epoch".
        evidence: the numbers behind the message (JSON-able), for reports and tests.
        epoch: the epoch (1-based) where the problem shows, or None for data findings.
        layer: the layer it concerns, or None.
        causes: likely causes, most likely first.
        remedies: what to do, as text, most effective first.
        patch: the recipe patch `--auto-fix` applies: {"train.optimizer.lr": 1e-4, ...}.
        confidence: how sure the doctor is: `strong`, or `possible` when the deciding measurement
            is only just past its threshold; `decided_by` names that measurement, its value and
            the threshold (see `layerwise.diagnose.rules.sureness`).
    """

    code: str
    severity: Severity
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)
    epoch: int | None = None
    layer: str | None = None
    causes: list[str] = field(default_factory=list)
    remedies: list[str] = field(default_factory=list)
    patch: dict[str, Any] = field(default_factory=dict)
    confidence: Confidence = "strong"
    decided_by: str = ""

    def __post_init__(self) -> None:
        if self.code not in CODES:
            raise ValueError(f"unknown finding code '{self.code}' (add it to CODES first)")
        if self.severity not in SEVERITY_ORDER:
            raise ValueError(f"unknown severity '{self.severity}'")
        if self.confidence not in CONFIDENCES:
            raise ValueError(f"unknown confidence '{self.confidence}'")

    @property
    def possible(self) -> bool:
        return self.confidence == "possible"

    def headline(self) -> str:
        """`epoch 3: exploding_gradients in conv2: gradient norm 3.1e6, 40x the previous epoch`."""
        where = f"epoch {self.epoch}: " if self.epoch is not None else ""
        layer = f" in {self.layer}" if self.layer else ""
        maybe = " (possible)" if self.possible else ""
        return f"{where}{self.code}{maybe}{layer}: {self.message}"

    def resolved_headline(self) -> str:
        """`overfitting at epoch 25 — resolved by the end`: a live finding the whole run no
        longer shows."""
        where = f" at epoch {self.epoch}" if self.epoch is not None else ""
        layer = f" in {self.layer}" if self.layer else ""
        return f"{self.code}{layer}{where} — resolved by the end"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Finding:
        return cls(**data)


@dataclass
class Diagnosis:
    """All findings of one run (or one data set), most severe first, plus the data profile.

    `resolved` holds findings shown live during training that no longer hold at the end (an
    overfitting spell that later recovered): kept so that they are reported as withdrawn rather
    than silently vanishing; they do not make the run unhealthy.

    `explained` holds findings that are true but not the root cause: symptoms another finding
    accounts for (their `evidence["explained_by"]` names it). They are not in `codes` either.

    `notes` say what the doctor left unjudged and why (an RL agent's loss is not a supervised
    loss, so the loss-curve rules stay silent on it): a healthy diagnosis of a run the rules
    could only partly read must not pass for a full check.
    """

    findings: list[Finding] = field(default_factory=list)
    data_profile: dict[str, Any] | None = None
    resolved: list[Finding] = field(default_factory=list)
    explained: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.findings = sorted(self.findings, key=lambda f: -SEVERITY_ORDER[f.severity])

    @property
    def codes(self) -> list[str]:
        return [f.code for f in self.findings]

    @property
    def healthy(self) -> bool:
        return not self.findings

    def worst(self) -> str | None:
        return self.findings[0].severity if self.findings else None

    def patch(self) -> dict[str, Any]:
        """Every finding's patch merged, the most severe finding winning a conflict."""
        merged: dict[str, Any] = {}
        for finding in reversed(self.findings):  # least severe first, so severe ones overwrite
            merged.update(finding.patch)
        return merged

    def to_dict(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "codes": self.codes,
            "findings": [f.to_dict() for f in self.findings],
            "data_profile": self.data_profile,
            "resolved": [f.to_dict() for f in self.resolved],
            "explained": [f.to_dict() for f in self.explained],
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Diagnosis:
        findings = [Finding.from_dict(f) for f in data.get("findings", [])]
        resolved = [Finding.from_dict(f) for f in data.get("resolved", [])]
        explained = [Finding.from_dict(f) for f in data.get("explained", [])]
        notes = [str(n) for n in data.get("notes") or []]
        return cls(
            findings, data.get("data_profile"), resolved=resolved, explained=explained, notes=notes
        )

    def render(self, verbose: bool = False) -> str:
        """Plain text for the terminal: one block per finding with evidence, causes, remedies.

        Possible findings and explained symptoms are listed only with `verbose`; otherwise one
        line says how many possible findings were left out."""
        withdrawn = [f"[resolved] {f.resolved_headline()}" for f in self.resolved]
        withdrawn += [f"[note] {note}" for note in self.notes]
        if self.healthy:
            return "\n".join(
                ["No problems found" + (" at the end." if self.resolved else "."), *withdrawn]
            )
        shown = [f for f in self.findings if verbose or not f.possible]
        blocks = []
        for f in shown:
            lines = [f"[{f.severity}] {f.headline()}"]
            if verbose and f.decided_by:
                lines.append(f"    decided by: {f.decided_by}")
            lines += [f"    cause: {c}" for c in f.causes[:3]]
            lines += [f"    fix:   {r}" for r in f.remedies[:3]]
            if f.patch:
                lines.append("    patch: " + ", ".join(f"{k}={v!r}" for k, v in f.patch.items()))
            blocks.append("\n".join(lines))
        if verbose:
            blocks += [
                f"[explained] {f.headline()} (explained by "
                f"{', '.join(f.evidence.get('explained_by', []))})"
                for f in self.explained
            ]
        hidden = len(self.findings) - len(shown)
        if hidden:
            plural = "s" if hidden > 1 else ""
            blocks.append(f"{hidden} possible finding{plural} not shown (verbose)")
        return "\n".join(blocks + withdrawn)


def apply_patch(recipe: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of a raw recipe dict with each dotted key set (None deletes the key)."""
    patched = copy.deepcopy(recipe)
    for dotted, value in patch.items():
        *parents, leaf = dotted.split(".")
        node = patched
        for key in parents:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = copy.deepcopy(value)
    return patched


def get_path(recipe: dict[str, Any], dotted: str, default: Any = None) -> Any:
    """The value at a dotted key path of a raw recipe dict, or `default`."""
    node: Any = recipe
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return default
        node = node[key]
    return node
