"""Plots and the HTML report."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from layerwise.errors import DataError, ShapeError
from layerwise.report import (
    plot_confusion_matrix,
    plot_curves,
    plot_lr,
    plot_samples,
    write_report,
)
from layerwise.runs import Run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _records(epochs: int = 4) -> list[dict]:
    records = []
    for epoch in range(1, epochs + 1):
        for split, offset in (("train", 0.0), ("val", 0.1)):
            loss, accuracy = 1 / epoch + offset, 1 - 0.5 / epoch - offset
            records.append(
                {"epoch": epoch, "step": 10 * epoch, "split": split, "loss": loss}
                | {"accuracy": accuracy, "lr": 0.1 / epoch, "time": 0.2}
            )
    records.append({"epoch": epochs, "split": "test", "loss": 0.4, "accuracy": 0.8})
    return records


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 1024


def test_plots_write_real_pngs_without_pyplot_figures(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    records = _records()
    _assert_png(plot_curves(records, tmp_path / "curves.png"))
    _assert_png(plot_lr(records, tmp_path / "lr.png"))
    cm = np.array([[5, 1, 0], [2, 7, 1], [0, 0, 9]])
    _assert_png(plot_confusion_matrix(cm, ["cat", "dog", "eel"], tmp_path / "cm.png"))
    _assert_png(plot_confusion_matrix(torch.tensor(cm), None, tmp_path / "cm_raw.png", False))
    images = torch.randn(10, 3, 8, 8)
    labels = torch.arange(10) % 3
    preds = labels.clone()
    preds[0] = 2
    path = tmp_path / "samples.png"
    _assert_png(plot_samples(images, labels, preds, ["cat", "dog", "eel"], path))
    _assert_png(plot_samples(torch.rand(4, 6, 6), [0, 1, 0, 1], path=tmp_path / "gray.png"))
    assert plt.get_fignums() == []


def test_keras_style_records_plot_too(tmp_path: Path) -> None:
    flat = [{"epoch": e, "loss": 1 / e, "val_loss": 1.2 / e} for e in (1, 2, 3)]
    _assert_png(plot_curves(flat, tmp_path / "curves.png"))


def test_plot_inputs_are_checked(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no per-epoch metrics"):
        plot_curves([{"split": "test", "accuracy": 0.9}], tmp_path / "c.png")
    with pytest.raises(DataError, match="'lr'"):
        plot_lr([{"epoch": 1, "loss": 0.3}], tmp_path / "lr.png")
    with pytest.raises(ShapeError, match=r"square"):
        plot_confusion_matrix(np.zeros((2, 3)), None, tmp_path / "cm.png")
    with pytest.raises(ShapeError, match="2 class names for a 3x3"):
        plot_confusion_matrix(np.eye(3), ["a", "b"], tmp_path / "cm.png")
    with pytest.raises(ShapeError, match=r"\(N, C, H, W\)"):
        plot_samples(torch.zeros(4, 5), [0, 1, 2, 3], path=tmp_path / "s.png")
    assert not list(tmp_path.iterdir())


def test_report_embeds_plots_and_escapes_user_text(tmp_path: Path) -> None:
    recipe = "name: evil\nnote: </pre><script>alert('x')</script>\n"
    run = Run.create(tmp_path, "exp", recipe)
    for record in _records():
        run.append_metrics(record)
    plot_curves(run.read_metrics(), run.plots_dir / "curves.png")
    plot_confusion_matrix(np.eye(3) * 4, ["a", "b", "c"], run.plots_dir / "confusion_matrix.png")
    run.set_status("finished")

    path = write_report(
        run,
        summary_text="Linear <in=64>",
        extra_sections=[("Doctor <findings>", "<ul><li><b>overfitting</b></li></ul>")],
    )

    page = path.read_text()
    assert path == run.report_path
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 2
    assert base64.b64decode(images[0]) == (run.plots_dir / "curves.png").read_bytes()
    assert "<script>" not in page
    assert "&lt;/pre&gt;&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "Linear &lt;in=64&gt;" in page
    assert "Doctor &lt;findings&gt;" in page
    assert "<ul><li><b>overfitting</b></li></ul>" in page
    assert re.search(r"<td>accuracy</td><td>0\.8750</td><td>0\.7750</td><td>0\.8000</td>", page)
    assert "finished" in page
    assert not re.search(r'(src|href)="(https?:)?//', page), "no external resources"


def test_report_of_a_fresh_run_says_there_is_nothing_yet(tmp_path: Path) -> None:
    run = Run.create(tmp_path, "fresh", "a: 1\n")
    page = write_report(run).read_text()
    assert "No metrics recorded yet." in page
    assert "No plots yet." in page
