"""Training: the Trainer, its callbacks, and losses, optimizers, schedules and metrics by name."""

from layerwise.train.callbacks import (
    EVENTS,
    Callback,
    CSVLogger,
    EarlyStopping,
    LRScheduler,
    MetricsLogger,
    ModelCheckpoint,
    ProgressBar,
)
from layerwise.train.device import resolve_device, seed_everything
from layerwise.train.logs import StepLogs
from layerwise.train.losses import LOSSES, create_loss
from layerwise.train.metrics import METRICS, MeanMetric, Metric, create_metric
from layerwise.train.monitor import monitor_mode
from layerwise.train.optimizers import OPTIMIZERS, create_optimizer
from layerwise.train.regularization import Regularizer
from layerwise.train.schedules import SCHEDULES, Schedule, create_schedule
from layerwise.train.trainer import StopReason, Trainer, TrainState

__all__ = [
    "EVENTS",
    "LOSSES",
    "METRICS",
    "OPTIMIZERS",
    "SCHEDULES",
    "CSVLogger",
    "Callback",
    "EarlyStopping",
    "LRScheduler",
    "MeanMetric",
    "Metric",
    "MetricsLogger",
    "ModelCheckpoint",
    "ProgressBar",
    "Regularizer",
    "Schedule",
    "StepLogs",
    "StopReason",
    "TrainState",
    "Trainer",
    "create_loss",
    "create_metric",
    "create_optimizer",
    "create_schedule",
    "monitor_mode",
    "resolve_device",
    "seed_everything",
]
