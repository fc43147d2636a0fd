"""The diagnosis section of the report: numbers people can read, patches they can paste."""

from __future__ import annotations

import re

import pytest
import yaml

from layerwise.diagnose.findings import Diagnosis, Finding, apply_patch
from layerwise.report.findings import (
    MAX_EVIDENCE_ROWS,
    evidence_rows,
    findings_html,
    format_number,
    patch_yaml,
)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (131.55616666985026, "132"),
        (109.24076080322266, "109"),
        (62.38730049902491, "62.4"),
        (0.0023214200984832, "0.00232"),
        (0.001, "0.001"),
        (0.5, "0.5"),
        (1.0, "1"),
        (9.996, "10"),
        (-0.0722, "-0.0722"),
        (4254.0, "4,250"),
        (99999.9, "100,000"),
        (257537.9779664742, "2.58e5"),
        (0.0001, "1e-4"),
        (0.000999, "9.99e-4"),
        (0.0, "0"),
        (1939, "1,939"),  # ints are counts: exact
        (True, "true"),
        (float("nan"), "nan"),
        (float("-inf"), "-inf"),
    ],
)
def test_numbers_have_three_significant_figures(value: float, text: str) -> None:
    assert format_number(value) == text


def test_evidence_is_flattened_shortened_and_capped() -> None:
    evidence = {
        "scale": {
            "min": 0.0,
            "max": 4254.0,
            "mean": 62.38730049902491,
            "feature_std": {"p10": 0.0069502324586792645, "median": 0.07220022447673874},
            "features": 30,
        },
        "reason": "values span [0, 4.25e+03]",
    }
    rows = evidence_rows(evidence, message="values span [0, 4.25e+03] with mean 62.4")
    assert rows == [
        ("min", "0"),
        ("max", "4,250"),
        ("mean", "62.4"),
        ("features", "30"),
        ("feature_std › p10", "0.00695"),
        ("feature_std › median", "0.0722"),
    ]  # the lone outer key dropped, the message's own words left out, details last

    many = {f"layer{i}": {"ratio": i / 7, "lr": 0.001} for i in range(10)}
    rows = evidence_rows(many)
    assert len(rows) == MAX_EVIDENCE_ROWS
    assert rows[0] == ("layer0 › ratio", "0")
    assert rows[1] == ("layer0 › lr", "0.001")
    assert rows[-1] == ("…", f"{20 - MAX_EVIDENCE_ROWS + 1} more in diagnosis.json")

    listed = evidence_rows({"losses": [0.123456, 2.5, 3, 4, 5, 6, 7, 8], "layer": None})
    assert listed == [("losses", "[0.123, 2.5, 3, 4, 5, 6, … (8 in all)]"), ("layer", "—")]


def test_a_patch_is_the_yaml_that_goes_into_the_recipe() -> None:
    patch = {
        "train.optimizer.lr": 0.0001,
        "train.schedule": {"name": "onecycle"},
        "data.standardize": True,
        "train.grad_clip": 1.0,
    }
    text = patch_yaml(patch)
    assert text.splitlines()[:3] == ["train:", "  optimizer:", "    lr: 0.0001"]
    assert "{" not in text and "'" not in text
    assert yaml.safe_load(text) == apply_patch({}, patch)


def _finding(**changes: object) -> Finding:
    fields = {
        "code": "lr_too_high",
        "severity": "error",
        "message": "epoch 1 averaged a loss of 132, 1.2x the loss before training (109)",
        "evidence": {"first_epoch_loss": 131.55616666985026, "baseline": 109.24076080322266},
        "epoch": 1,
        "causes": ["updates overshoot"],
        "remedies": ["lower the learning rate <10x>"],
        "patch": {"train.optimizer.lr": 0.0001},
    }
    return Finding(**(fields | changes))


def test_findings_are_cards_with_a_readable_table_and_a_yaml_patch() -> None:
    warning = _finding(
        code="unscaled_inputs", severity="warning", message="values span [0, 4.25e+03]",
        evidence={"std": 233.087784451996}, epoch=None, patch={"data.standardize": True},
    )  # fmt: skip
    page = findings_html(Diagnosis([warning, _finding()]))

    assert page.startswith('<p class="verdict">The doctor found 2 problems (1 error, 1 warning).')
    assert page.index("lr_too_high") < page.index("unscaled_inputs")  # most severe first
    assert "<tr><td>first_epoch_loss</td><td>132</td></tr>" in page
    assert "<tr><td>baseline</td><td>109</td></tr>" in page
    assert "<tr><td>std</td><td>233</td></tr>" in page
    assert not re.search(r"\d\.\d{5,}", page), "no raw floats"
    assert "{" not in page, "no Python dicts"
    assert '<pre class="patch">train:\n  optimizer:\n    lr: 0.0001</pre>' in page
    assert '<pre class="patch">data:\n  standardize: true</pre>' in page
    assert "lower the learning rate &lt;10x&gt;" in page
    assert '<span class="where">epoch 1</span>' in page


def test_healthy_unexamined_and_resolved_diagnoses_say_so() -> None:
    assert "found no problems" in findings_html(Diagnosis())
    assert "has not examined" in findings_html(None)
    diagnosis = Diagnosis()
    diagnosis.resolved = [_finding(code="overfitting", severity="warning", epoch=25)]
    page = findings_html(diagnosis)
    assert "found no problems" in page
    assert "no longer true at the end" in page and "overfitting" in page
    assert 'class="finding' not in page
