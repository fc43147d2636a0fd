"""Callbacks, one per file: subscribe to the Trainer's named events."""

from layerwise.train.callbacks.base import EVENTS, Callback
from layerwise.train.callbacks.checkpoint import ModelCheckpoint
from layerwise.train.callbacks.csv_logger import CSVLogger
from layerwise.train.callbacks.early_stopping import EarlyStopping
from layerwise.train.callbacks.lr_scheduler import LRScheduler
from layerwise.train.callbacks.metrics_logger import MetricsLogger, split_logs
from layerwise.train.callbacks.progress import ProgressBar

__all__ = [
    "EVENTS",
    "CSVLogger",
    "Callback",
    "EarlyStopping",
    "LRScheduler",
    "MetricsLogger",
    "ModelCheckpoint",
    "ProgressBar",
    "split_logs",
]
