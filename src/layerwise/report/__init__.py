"""Plots (matplotlib, no pyplot) and the single-file HTML report of a run."""

from layerwise.report.doctor_plots import write_doctor_plots
from layerwise.report.findings import findings_html
from layerwise.report.html import write_report
from layerwise.report.plots import plot_confusion_matrix, plot_curves, plot_lr, plot_samples

__all__ = [
    "findings_html",
    "plot_confusion_matrix",
    "plot_curves",
    "plot_lr",
    "plot_samples",
    "write_doctor_plots",
    "write_report",
]
