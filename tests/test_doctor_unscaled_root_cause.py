"""Inputs left at 0-255 are the root cause of what they do to training (an outside tester's case).

MNIST pixels at 0-255 into a 3-layer ReLU MLP under SGD + momentum: the first epoch's loss blew
up, the units died and the early layers' gradients were exactly 0. The doctor listed
`vanishing_gradients` (advising ReLU and He initialisation on a ReLU net), `dead_units` and
`lr_too_high` as errors above a `unscaled_inputs` warning, nothing saying the scale caused them.
"""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from torch import nn

from layerwise.diagnose.findings import Diagnosis, Finding
from layerwise.diagnose.rules import RuleContext, explain
from layerwise.diagnose.rules import data as data_rules
from layerwise.train import Trainer


def scale(mean: float, std: float, lo: float = 0.0, hi: float = 255.0, **more) -> dict:
    return {"scale": {"min": lo, "max": hi, "mean": mean, "std": std, "features": 64, **more}}


def unscaled(mean: float, std: float, **kw) -> Finding:
    finding = data_rules.unscaled_inputs(RuleContext(data=scale(mean, std, **kw)))
    assert finding is not None
    return finding


def dead(share: float) -> Finding:
    return Finding(
        code="dead_units",
        severity="error" if share >= 0.9 else "warning",
        message="m",
        evidence={
            "dead_frac": share,
            **({"accounts_for": ["small_first_layer_gradient"]} if share >= 0.9 else {}),
        },
    )


def symptom(code: str, rests_on: str, severity: str = "error") -> Finding:
    return Finding(code=code, severity=severity, message="m", evidence={"rests_on": [rests_on]})


def test_huge_inputs_explain_the_blow_up_they_cause_and_lead_the_report():
    cause = unscaled(33.3, 78.6)  # raw MNIST: root mean square 85
    assert cause.severity == "warning"
    kept, explained = explain(
        [
            symptom("vanishing_gradients", "small_first_layer_gradient"),
            dead(1.0),
            symptom("lr_too_high", "overshoot"),
            Finding(code="exploding_gradients", severity="error", message="m"),
            cause,
        ]
    )
    assert [f.code for f in kept] == ["unscaled_inputs"]
    by = {f.code: f.evidence["explained_by"] for f in explained}
    assert by == {
        # The gradient is 0 because the units died, not because it shrank with depth.
        "vanishing_gradients": ["dead_units"],
        "dead_units": ["unscaled_inputs"],
        "lr_too_high": ["unscaled_inputs"],
        "exploding_gradients": ["unscaled_inputs"],
    }
    # The cause is as severe as the errors it explains, and comes first.
    assert cause.severity == "error" and cause.evidence["severity_raised_from"] == "warning"
    assert Diagnosis(kept, explained=explained).render().startswith("[error] unscaled_inputs")


def test_what_does_not_account_for_a_symptom_leaves_it_standing():
    # A layer 70% silent still passes gradient back: depth stays the explanation.
    kept, _ = explain([symptom("vanishing_gradients", "small_first_layer_gradient"), dead(0.7)])
    assert sorted(f.code for f in kept) == ["dead_units", "vanishing_gradients"]
    # Feature ranges 100-fold apart within a small root mean square are no runaway rate.
    mild = unscaled(0.5, 2.0, lo=-0.5, hi=30.0, feature_range_ratio=300.0)
    assert mild.evidence["reason"] == "feature ranges differ 300-fold"
    assert "accounts_for" not in mild.evidence
    kept, _ = explain([symptom("lr_too_high", "overshoot"), dead(1.0), mild])
    assert {f.code for f in kept} == {"lr_too_high", "dead_units", "unscaled_inputs"}
    assert mild.severity == "warning"
    # A learning rate too high with well-scaled inputs is its own root cause.
    kept, explained = explain([symptom("lr_too_high", "overshoot"), dead(1.0)])
    assert {f.code for f in kept} == {"lr_too_high", "dead_units"} and not explained


def test_tiny_inputs_account_for_the_first_layer_gradient_only():
    tiny = unscaled(0.001, 0.002, lo=-0.009, hi=0.009)
    assert tiny.evidence["accounts_for"] == ["small_first_layer_gradient"]
    kept, _ = explain([symptom("lr_too_high", "overshoot"), tiny])
    assert {f.code for f in kept} == {"lr_too_high", "unscaled_inputs"}


def test_digits_at_0_255_name_the_scale_first():
    """sklearn digits (0-16) times 16, the tester's network and optimiser, 4 epochs."""
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x * 16, dtype=torch.float32).clamp(max=255)
    y = torch.tensor(y)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10)
    )
    trainer = Trainer(
        model,
        optimizer="sgd",
        lr=0.01,
        optimizer_args={"momentum": 0.9},
        threads=1,
        progress=False,
        seed=0,
    )
    trainer.fit((x[:1400], y[:1400]), (x[1400:], y[1400:]), epochs=4, batch_size=64)
    diagnosis = trainer.diagnose()
    assert diagnosis.codes[0] == "unscaled_inputs", diagnosis.render(verbose=True)
    assert diagnosis.findings[0].severity == "error"
    symptoms = {f.code: f.evidence["explained_by"] for f in diagnosis.explained}
    assert symptoms["dead_units"] == ["unscaled_inputs"]
    assert symptoms["lr_too_high"] == ["unscaled_inputs"]
    assert not {"dead_units", "lr_too_high", "vanishing_gradients", "exploding_gradients"} & set(
        diagnosis.codes
    )
    if "vanishing_gradients" in symptoms:
        assert symptoms["vanishing_gradients"] == ["dead_units"]
    assert diagnosis.render().startswith("[error] unscaled_inputs")
