"""Plots and the HTML report."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text

from layerwise.diagnose.findings import Diagnosis, Finding
from layerwise.diagnose.probe_log import ProbeLog
from layerwise.errors import DataError, ShapeError
from layerwise.report import (
    CurveMarks,
    curve_marks,
    doctor_plots,
    plot_confusion_matrix,
    plot_curves,
    plot_lr,
    plot_run_curves,
    plot_samples,
    plots,
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


# ---------------------------------------------------------------------------- the page
FINDING = Finding(
    code="lr_too_high",
    severity="error",
    message="epoch 1 averaged a loss of 132",
    evidence={"first_epoch_loss": 131.55616666985026},
    epoch=1,
    patch={"train.optimizer.lr": 0.0001},
)


def _sections(page: str) -> list[str]:
    return re.findall(r'<section id="([^"]+)">', page)


def test_the_diagnosis_leads_and_the_description_heads_the_page(tmp_path: Path) -> None:
    recipe = "name: demo\ndescription: A <tiny> MLP on digits\ntrain: {epochs: 4}\n"
    run = Run.create(tmp_path, "demo", recipe)
    for record in _records():
        run.append_metrics(record)
    plot_curves(run.read_metrics(), run.plots_dir / "curves.png")
    plot_confusion_matrix(np.eye(2), None, run.plots_dir / "confusion_matrix.png")
    (run.plots_dir / "zz_custom.png").write_bytes((run.plots_dir / "curves.png").read_bytes())
    run.set_status("finished", epochs_done=4, model="mlp", dataset="digits")

    page = write_report(
        run, summary_text="Linear", diagnosis=Diagnosis([FINDING]), extra_sections=[("X", "x")]
    ).read_text()

    assert _sections(page) == ["diagnosis", "metrics", "plots", "extra-0", "model", "recipe"]
    nav = re.search(r"<nav>(.*)</nav>", page)[1]
    assert re.findall(r'href="#([^"]+)"', nav) == _sections(page)
    header = page[: page.index("<nav>")]
    assert '<p class="description">A &lt;tiny&gt; MLP on digits</p>' in header
    assert "mlp on digits · 4 of 4 epochs · test loss 0.4000 · test accuracy 0.8000" not in header
    assert "mlp on digits · 4 of 4 epochs" in header
    diagnosis = page[page.index('<section id="diagnosis">') : page.index('<section id="metrics">')]
    assert "<td>first_epoch_loss</td><td>132</td>" in diagnosis
    assert "lr: 0.0001" in diagnosis
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", page)
    assert len(captions) == 3
    assert all("How to read it: " in c for c in captions[:2]), "every built-in plot says how"
    assert captions[2] == "Zz custom."  # an unknown plot gets its name, and no made-up advice


def test_the_report_reads_the_saved_diagnosis_when_none_is_given(tmp_path: Path) -> None:
    run = Run.create(tmp_path, "saved", "name: saved\n")
    assert "has not examined" in write_report(run).read_text()
    run.write_diagnosis(Diagnosis([FINDING]).to_dict())
    page = write_report(run).read_text()
    assert _sections(page)[0] == "diagnosis"
    assert "lr_too_high" in page and "<td>132</td>" in page


# ---------------------------------------------------------------------------- curve marks
STOPPED = """name: es
train:
  epochs: 10
  early_stopping: {monitor: val_loss, patience: 2, min_delta: 0.05}
"""


def _losses(run: Run, val_losses: list[float]) -> None:
    for epoch, loss in enumerate(val_losses, start=1):
        run.append_metrics({"epoch": epoch, "split": "train", "loss": 1.0 / epoch})
        run.append_metrics({"epoch": epoch, "split": "val", "loss": loss, "accuracy": 0.5})
    run.append_metrics({"epoch": len(val_losses), "split": "test", "loss": 0.3})


def test_early_stopping_marks_the_kept_epoch_and_the_stop(tmp_path: Path) -> None:
    run = Run.create(tmp_path, "es", STOPPED)
    # 0.58 at epoch 3 beats 0.6 by less than min_delta: early stopping kept epoch 2
    _losses(run, [0.9, 0.6, 0.58, 0.7, 0.8])
    run.set_status("finished", epochs_done=5)

    marks = curve_marks(run)

    assert marks == CurveMarks(
        best_epoch=2, monitor="val_loss", best_value=0.6, stopped_epoch=5, planned_epochs=10,
        kept=True,
    )  # fmt: skip
    assert marks.stop_sentence() == (
        "Early stopping ended training at epoch 5 of 10; the model keeps epoch 2's weights "
        "(best val_loss 0.6)."
    )
    page = write_report(run).read_text()
    assert "Early stopping ended training at epoch 5 of 10" in page
    assert "train and val are epoch 5's; the model, and so the test column, has epoch 2's" in page
    assert _png_ok(plot_run_curves(run))


def test_without_an_early_stop_the_best_checkpoint_is_marked(tmp_path: Path) -> None:
    run = Run.create(tmp_path, "plain", "name: plain\ntrain: {epochs: 5}\n")
    _losses(run, [0.9, 0.6, 0.58, 0.7, 0.8])
    run.set_status("finished", epochs_done=5, best_metric={"val_loss": 0.58, "epoch": 3})
    assert curve_marks(run) == CurveMarks(
        best_epoch=3, monitor="val_loss", best_value=0.58, planned_epochs=5
    )
    assert curve_marks(run).stop_sentence() is None
    # a run that stopped early without early stopping configured (e.g. halted) is not "stopped"
    halted = Run.create(tmp_path, "halted", STOPPED)
    _losses(halted, [0.9, 0.6])
    halted.set_status("halted", epochs_done=2)
    assert curve_marks(halted).stopped_epoch is None


def _png_ok(path: Path) -> bool:
    return path.read_bytes()[:8] == PNG_SIGNATURE


# ---------------------------------------------------------------------------- legibility
def _capture(monkeypatch: pytest.MonkeyPatch, module: object) -> list:
    """Figures the module saves, kept for inspection."""
    figures = []
    real = module._save

    def keep(fig, path):
        figures.append(fig)
        return real(fig, path)

    monkeypatch.setattr(module, "_save", keep)
    return figures


def _clipped_texts(fig) -> list[str]:
    """Texts drawn (partly) outside the figure, i.e. cut off in the PNG. Tick labels count only
    where a tick is drawn (matplotlib keeps labels for ticks outside the view, undrawn)."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    box = fig.bbox
    drawn = [t for ax in fig.axes for t in _drawn_tick_labels(ax)]
    ticks = {id(t) for ax in fig.axes for t in ax.get_xticklabels() + ax.get_yticklabels()}
    ticks |= {
        id(t) for ax in fig.axes for t in ax.get_xminorticklabels() + ax.get_yminorticklabels()
    }
    texts = [t for t in fig.findobj(Text) if id(t) not in ticks] + drawn
    clipped = []
    for text in texts:
        if not (text.get_visible() and text.get_text().strip()):
            continue
        extent = text.get_window_extent(renderer)
        if (
            extent.x0 < box.x0 - 1
            or extent.y0 < box.y0 - 1
            or extent.x1 > box.x1 + 1
            or extent.y1 > box.y1 + 1
        ):
            clipped.append(text.get_text())
    return clipped


def _drawn_tick_labels(ax) -> list[Text]:
    labels = []
    for axis in (ax.xaxis, ax.yaxis):
        low, high = sorted(axis.get_view_interval())
        for tick in axis.get_major_ticks() + axis.get_minor_ticks():
            if tick.get_loc() is not None and low - 1e-9 <= tick.get_loc() <= high + 1e-9:
                labels += [tick.label1, tick.label2]
    return labels


def _probe_log(layers: int, steps: int = 12) -> ProbeLog:
    records = []
    for step in range(steps):
        stats = {
            f"fc{i}": {
                "type": "Linear",
                "grad_norm": 10.0 ** (-i / 2) * (1 + step / 10),
                "update_ratio": 1e-3 * (1 + i) / (1 + step / 5),
            }
            for i in range(layers)
        }
        records.append({"kind": "step", "step": step, "epoch": 1, "loss": 1.0, "layers": stats})
    records[0]["grad_norm"] = 1.0
    return ProbeLog(records, [])


def test_no_label_of_the_doctor_plots_is_cut_off(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    figures = _capture(monkeypatch, doctor_plots)
    for layers in (3, 9):
        log = _probe_log(layers)
        doctor_plots.plot_gradient_flow(log, tmp_path / f"flow{layers}.png")
        doctor_plots.plot_update_ratios(log, tmp_path / f"ratios{layers}.png")
    assert len(figures) == 4
    for fig in figures:
        assert _clipped_texts(fig) == []
    flow = figures[0]
    labels = [t.get_text() for t in flow.findobj(lambda a: hasattr(a, "get_text"))]
    assert "log10 ‖∇W‖" in labels
    assert {"zero gradient", "inf / NaN", "not recorded"} <= set(labels)


def _luminance(rgb: tuple[float, ...]) -> float:
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb[:3]]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def test_update_ratio_lines_can_be_told_apart(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Every line stands out from the white background (contrast >= 2:1), and any two lines
    differ in dash pattern or clearly in colour; a legend names each layer."""
    from matplotlib.colors import to_rgb

    figures = _capture(monkeypatch, doctor_plots)
    counts = (3, 9, 20)
    for layers in counts:
        doctor_plots.plot_update_ratios(_probe_log(layers), tmp_path / "ratios.png")
    for fig, layers in zip(figures, counts, strict=True):
        lines = [line for line in fig.axes[0].get_lines() if line.get_label().startswith("fc")]
        assert len(lines) == layers
        looks = [(np.array(to_rgb(line.get_color())), line.get_linestyle()) for line in lines]
        for i, (color, style) in enumerate(looks):
            assert 1.05 / (_luminance(tuple(color)) + 0.05) >= 2.0, f"line {i} is faint"
            for j, (other, other_style) in enumerate(looks[:i]):
                apart = style != other_style or np.linalg.norm(color - other) >= 0.3
                assert apart, f"layers {j} and {i} look alike"
        legend = fig.axes[0].get_legend() or fig.legends[0]
        assert [t.get_text() for t in legend.get_texts()] == [
            f"fc{i} (Linear)" for i in range(layers)
        ]


def test_curves_mark_the_best_epoch_and_the_stop(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    figures = _capture(monkeypatch, plots)
    marks = CurveMarks(best_epoch=2, monitor="val_loss", best_value=0.5, stopped_epoch=4, kept=True)
    plot_curves(_records(), tmp_path / "curves.png", marks=marks)
    fig = figures[0]
    assert _clipped_texts(fig) == []
    loss, accuracy = fig.axes[:2]
    for ax in (loss, accuracy):
        vertical = {
            line.get_label(): line.get_xdata()[0]
            for line in ax.get_lines()
            if len(set(line.get_xdata())) == 1 and len(line.get_xdata()) == 2
        }
        assert vertical == {
            "best val_loss (epoch 2), weights kept": 2,
            "early stop (epoch 4)": 4,
        }
    rings = [line for line in loss.get_lines() if line.get_markersize() == 13]
    assert len(rings) == 1, "one ring, on the monitored curve only"
    assert (rings[0].get_xdata(), rings[0].get_ydata()) == (2, pytest.approx(1 / 2 + 0.1))
    test = next(line for line in loss.get_lines() if line.get_label().startswith("test"))
    assert list(test.get_xdata()) == [2], "the test score belongs to the kept weights' epoch"
    assert [t.get_text() for t in fig.legends[0].get_texts()][:2] == ["train", "val"]
