"""Plots (matplotlib, no pyplot) and the single-file HTML report of a run."""

from layerwise.report.curve_marks import CurveMarks, curve_marks, plot_run_curves
from layerwise.report.doctor_plots import write_doctor_plots
from layerwise.report.findings import findings_html
from layerwise.report.html import write_report
from layerwise.report.plots import plot_confusion_matrix, plot_curves, plot_lr, plot_samples

__all__ = [
    "CurveMarks",
    "curve_marks",
    "findings_html",
    "plot_confusion_matrix",
    "plot_curves",
    "plot_lr",
    "plot_run_curves",
    "plot_samples",
    "write_doctor_plots",
    "write_report",
]
