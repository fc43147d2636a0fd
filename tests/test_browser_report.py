"""The run report of a real training run, opened in headless Chromium (see tests/browser.py).

The run: a small CNN on digits with duplicated training rows (so the doctor has a real finding to
show) and early stopping. The page must load with no console error and nothing fetched from
outside, lead with the diagnosis, carry every section, and decode every plot; its screenshot is
kept in test-artifacts/.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from browser import open_page, require_browser
from layerwise.experiment import train
from layerwise.recipe import parse_recipe

pytestmark = pytest.mark.slow

RECIPE = {
    "name": "browser_report",
    "description": "A small CNN on digits with duplicated rows, for the report's browser test",
    "data": {"name": "faulty", "batch_size": 64, "args": {"dataset": "digits", "duplicates": 0.5}},
    "model": {"name": "cnn", "args": {"variant": "lenet"}},
    "train": {
        "epochs": 4,
        "optimizer": {"name": "adam", "lr": 0.003},
        "early_stopping": {"monitor": "val_loss", "patience": 2},
    },
    "doctor": {"label_noise": False},
}
SECTIONS = ["diagnosis", "metrics", "plots", "model", "recipe"]
PLOTS = [
    "curves",
    "confusion matrix",
    "samples",
    "gradient flow",
    "update ratios",
    "activation histograms",
]


# The rendered lines of each plot's "how to read" note (an inline span has one box per line).
_HOW_TO_READ_JS = """() => Object.fromEntries(Array.from(document.querySelectorAll('figure')).map(
    (fig) => [fig.id, Array.from(fig.querySelectorAll('.how')).map(
        (span) => span.getClientRects().length).reduce((a, b) => a + b, 0)]))"""


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_browser()
    root = tmp_path_factory.mktemp("runs")
    run, _ = train(parse_recipe(yaml.safe_dump(RECIPE)), root, progress=False, echo=None)
    return run.report_path


def test_the_report_renders_in_chromium_with_the_diagnosis_first(
    report: Path, tmp_path: Path
) -> None:
    check = open_page(report, tmp_path / "report_in_chromium.png", script=_HOW_TO_READ_JS)

    assert check.problems() == []
    assert check.title == "browser_report · layerwise report"
    assert check.section_ids == SECTIONS
    assert sorted(image["alt"] for image in check.images) == sorted(PLOTS)
    assert all(image["width"] >= 300 and image["height"] >= 150 for image in check.images)
    assert check.screenshot.stat().st_size > 50_000  # a full page, not a blank one
    assert len(check.measured) == len(PLOTS), "a 'how to read this' under every plot"
    assert all(lines == 1 for lines in check.measured.values()), check.measured
    page = report.read_text()
    diagnosis = page[page.index('<section id="diagnosis">') : page.index('<section id="metrics">')]
    assert "duplicate_samples" in diagnosis
    assert '<table class="evidence">' in diagnosis
    assert "A small CNN on digits with duplicated rows" in page.split("<nav>")[0]


def test_the_browser_check_catches_what_a_broken_page_does(tmp_path: Path) -> None:
    require_browser()
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><head><title>broken</title></head><body>"
        '<section id="only"><img alt="not a png" src="data:image/png;base64,AAAA">'
        '<img alt="remote" src="https://example.invalid/x.png"></section>'
        "<script>console.error('boom'); missing_function();</script></body></html>"
    )

    check = open_page(page, tmp_path / "broken.png")

    assert "boom" in check.console_errors
    assert any("missing_function" in error for error in check.page_errors)
    assert check.external_requests == ["https://example.invalid/x.png"]
    assert {image["alt"]: image["decoded"] for image in check.images} == {
        "not a png": False,
        "remote": False,
    }
    assert check.section_ids == ["only"]
    assert len(check.problems()) >= 5
