"""The doctor's rules on hand-made logs: every broken setup raises its finding with the right
numbers and patch, and healthy setups (one-cycle, label smoothing, dropout, batch norm, small
data with a modest gap, MNIST/digits profiles with constant border pixels) raise nothing, neither
after training nor live at any epoch.

The healthy curves are taken from real runs where we have them (digits_cnn's metrics.jsonl, the
MNIST benchmark) and the probe numbers from probing LeNet, an MLP and a deep sigmoid MLP on digits.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from layerwise.diagnose.findings import CODES, Finding, apply_patch
from layerwise.diagnose.rules import (
    EXPLAINED_BY,
    RULES,
    RuleContext,
    curves,
    gradients,
    ordered_rules,
    rule,
    run_rules,
)
from layerwise.diagnose.rules import activations as act_rules
from layerwise.diagnose.rules import data as data_rules
from layerwise.models import create_model
from layerwise.nn.activations import ACTIVATIONS
from layerwise.recipe import Recipe, validate_recipe

ROOT = Path(__file__).resolve().parents[1]
DOCTOR_MD = ROOT / "docs" / "doctor.md"

ALLOWED_PATCH_KEYS = {
    "train.optimizer.lr",
    "train.optimizer.weight_decay",
    "train.grad_clip",
    "train.epochs",
    "train.early_stopping",
    "train.schedule",
    "train.loss.class_weights",
    "train.loss.label_smoothing",
    "model.args.activation",
    "model.init",
    "model.args.batchnorm",
    "model.args.dropout",
    "model.args.hidden",
    "model.args.spectral_norm",
    "train.optimizer.args.discriminator_lr",
    "data.augment",
    "data.standardize",
    "data.impute",
    "data.drop_duplicates",
    "data.drop_leaked",
    "data.drop_constant",
    "data.balance",
    "data.drop_noisy",
    "data.args.min_freq",
    "data.args.max_size",
    "data.args.max_length",
}
# Recipe fields being added to the schema this round: stripped before validating a patched recipe.
NEW_DATA_KEYS = (
    "standardize",
    "impute",
    "drop_duplicates",
    "drop_constant",
    "balance",
    "drop_noisy",
)
LN10 = math.log(10)


# ------------------------------------------------------------------------------------ builders
def recipe(name: str = "digits_cnn", **overrides: Any) -> dict[str, Any]:
    """A fully resolved raw recipe (as stored in a run), with `a.b.c=value` style overrides."""
    raw = yaml.safe_load((ROOT / "recipes" / f"{name}.yaml").read_text())
    resolved = Recipe.model_validate(raw).model_dump(mode="json")
    return apply_patch(resolved, {k.replace("__", "."): v for k, v in overrides.items()})


def mlp_recipe(**overrides: Any) -> dict[str, Any]:
    base = recipe("digits_cnn")
    base["model"] = {"name": "mlp", "args": {"hidden": [256, 128]}, "init": "default"}
    base["train"]["schedule"] = None
    return apply_patch(base, {k.replace("__", "."): v for k, v in overrides.items()})


def history(
    loss: list[float],
    val_loss: list[float] | None = None,
    acc: list[float] | None = None,
    val_acc: list[float] | None = None,
    lr: list[float] | float | None = None,
) -> list[dict[str, Any]]:
    rows = []
    for i, value in enumerate(loss):
        row: dict[str, Any] = {"epoch": i + 1, "step": 41 * (i + 1), "loss": value}
        if acc is not None:
            row["accuracy"] = acc[i]
        if lr is not None:
            row["lr"] = lr[i] if isinstance(lr, list) else lr
        if val_loss is not None:
            row["val_loss"] = val_loss[i]
        if val_acc is not None:
            row["val_accuracy"] = val_acc[i]
        row["time"] = 1.0
        rows.append(row)
    return rows


def ctx(
    hist: list[dict[str, Any]] | None = None,
    probes: Any = None,
    data: dict[str, Any] | None = None,
    rec: dict[str, Any] | None = None,
    final: bool = True,
    num_classes: int | None = 10,
    task: str = "classification",
) -> RuleContext:
    return RuleContext(
        history=hist or [],
        probes=probes,
        data=data,
        recipe=rec,
        task=task,
        num_classes=num_classes,
        final=final,
    )


def param(kind: str, grad: float, weight: float, update: float = 1e-3) -> dict[str, Any]:
    return {
        "type": kind,
        "role": "param",
        "act_mean": 0.0,
        "act_std": 1.0,
        "weight_norm": weight,
        "grad_norm": grad,
        "update_ratio": update,
    }


def relu(dead: float, zero: float | None = None) -> dict[str, Any]:
    return {
        "type": "ReLU",
        "role": "activation",
        "act_mean": 0.3,
        "act_std": 0.5,
        "zero_frac": zero if zero is not None else 0.5 + dead / 2,
        "dead_frac": dead,
    }


def squash(kind: str, sat: float) -> dict[str, Any]:
    return {
        "type": kind,
        "role": "activation",
        "act_mean": 0.5,
        "act_std": 0.2,
        "zero_frac": 0.0,
        "sat_frac": sat,
    }


def probe_log(
    epochs: int,
    per_epoch: int,
    layers_at: Any,
    loss_at: Any = lambda i, e: 2.3 * 0.9**i,
    grad_at: Any = lambda i, e: 1.5,
    steps_per_epoch: int = 41,
) -> SimpleNamespace:
    """A ProbeLog stand-in: `per_epoch` sampled steps per epoch built by the callables, which get
    the sample index i (0-based over the run) and the epoch."""
    records = []
    every = steps_per_epoch // per_epoch
    i = 0
    for epoch in range(1, epochs + 1):
        for k in range(per_epoch):
            step = (epoch - 1) * steps_per_epoch + k * every
            records.append(
                {
                    "kind": "step",
                    "step": step,
                    "epoch": epoch,
                    "loss": loss_at(i, epoch),
                    "grad_norm": grad_at(i, epoch),
                    "layers": layers_at(i, epoch),
                }
            )
            i += 1
    return SimpleNamespace(steps=records, hists=[])


def wiggle(i: int, amount: float = 0.15) -> float:
    """A deterministic +-15% jitter, so medians are computed on varying numbers."""
    return 1.0 + amount * math.sin(1.7 * i + 0.3)


# ------------------------------------------------------------------------------ healthy fixtures
# digits_cnn (LeNet, Adam 2e-3, one-cycle, 30 epochs): the real metrics.jsonl of a quick-start run.
DIGITS_LOSS = [2.297, 2.170, 1.873, 1.114, 0.5428, 0.2897, 0.1808, 0.1363, 0.1119, 0.0815,
               0.04685, 0.04763, 0.02123, 0.01803, 0.01162, 0.007846, 0.005387, 0.005003,
               0.003881, 0.003341, 0.002971, 0.002784, 0.002564, 0.002443, 0.002337, 0.00228,
               0.002225, 0.002197, 0.00218, 0.002175]  # fmt: skip
DIGITS_VAL = [2.2367, 2.0610, 1.5533, 0.6775, 0.4153, 0.2699, 0.1927, 0.2994, 0.1603, 0.1314,
              0.1382, 0.1220, 0.1130, 0.08344, 0.1130, 0.08458, 0.1190, 0.09762, 0.09882,
              0.08911, 0.09629, 0.09757, 0.08953, 0.09369, 0.09355, 0.09456, 0.09279, 0.09306,
              0.09309, 0.09318]  # fmt: skip
DIGITS_ACC = [0.171, 0.333, 0.569, 0.740, 0.834, 0.918, 0.950, 0.963, 0.966, 0.976, 0.988,
              0.988, 0.996, 0.997, 0.999] + [1.0] * 15  # fmt: skip
DIGITS_VAL_ACC = [0.222, 0.451, 0.694, 0.826, 0.910, 0.938, 0.965, 0.903, 0.958, 0.951, 0.965,
                  0.958, 0.972, 0.986, 0.972, 0.986, 0.972, 0.972, 0.972, 0.972, 0.972, 0.972,
                  0.979, 0.979, 0.979, 0.979, 0.979, 0.979, 0.979, 0.979]  # fmt: skip
DIGITS_LR = [1.38e-4, 3.06e-4, 5.62e-4, 8.77e-4, 1.21e-3, 1.52e-3, 1.78e-3, 1.94e-3, 2.0e-3,
             1.99e-3, 1.95e-3, 1.90e-3, 1.82e-3, 1.73e-3, 1.62e-3, 1.50e-3, 1.36e-3, 1.22e-3,
             1.07e-3, 9.2e-4, 7.7e-4, 6.3e-4, 5.0e-4, 3.7e-4, 2.6e-4, 1.7e-4, 9.7e-5, 4.3e-5,
             1.1e-5, 8e-9]  # fmt: skip


def digits_history() -> list[dict[str, Any]]:
    return history(DIGITS_LOSS, DIGITS_VAL, DIGITS_ACC, DIGITS_VAL_ACC, DIGITS_LR)


def mnist_mlp_history() -> list[dict[str, Any]]:
    """mnist_mlp: dropout 0.2 (train loss above val loss), label smoothing 0.05, one-cycle."""
    loss = [0.80, 0.50, 0.43, 0.41, 0.40, 0.39, 0.38, 0.37, 0.36, 0.355, 0.35, 0.345, 0.34,
            0.335, 0.333]  # fmt: skip
    val = [0.45, 0.40, 0.39, 0.38, 0.37, 0.36, 0.36, 0.35, 0.35, 0.345, 0.34, 0.34, 0.335, 0.333,
           0.332]  # fmt: skip
    acc = [0.86, 0.94, 0.955, 0.962, 0.966, 0.97, 0.973, 0.976, 0.979, 0.981, 0.983, 0.985,
           0.987, 0.988, 0.989]  # fmt: skip
    val_acc = [0.938, 0.961, 0.972, 0.974, 0.978, 0.978, 0.977, 0.980, 0.981, 0.982, 0.983,
               0.984, 0.984, 0.985, 0.985]  # fmt: skip
    lr = [3.0e-4, 8.7e-4, 1.5e-3, 1.94e-3, 1.99e-3, 1.9e-3, 1.73e-3, 1.5e-3, 1.2e-3, 9e-4,
          6.2e-4, 3.7e-4, 1.7e-4, 4e-5, 8e-9]  # fmt: skip
    return history(loss, val, acc, val_acc, lr)


def mnist_cnn_history() -> list[dict[str, Any]]:
    """mnist_cnn: VGG with batch norm, label smoothing 0.05, one-cycle, 4 epochs (benchmark)."""
    return history(
        [0.75, 0.36, 0.32, 0.30],
        [0.43, 0.335, 0.304, 0.300],
        [0.87, 0.975, 0.99, 0.995],
        [0.958, 0.987, 0.995, 0.9957],
        [2.8e-3, 2.4e-3, 8.5e-4, 1.2e-8],
    )


def small_data_gap_history() -> list[dict[str, Any]]:
    """An MLP on digits at a constant rate: 100% train accuracy, ~96.5% val, val loss 20% above
    its minimum at the end. A small gap on small data, not overfitting."""
    loss = [1.2, 0.35, 0.2, 0.13, 0.09, 0.065, 0.048, 0.036, 0.028, 0.022, 0.018, 0.015, 0.012,
            0.010, 0.0085, 0.0072, 0.0062, 0.0054, 0.0047, 0.0041]  # fmt: skip
    val = [0.45, 0.22, 0.16, 0.13, 0.118, 0.108, 0.103, 0.100, 0.101, 0.104, 0.103, 0.107, 0.108,
           0.110, 0.112, 0.114, 0.115, 0.117, 0.118, 0.120]  # fmt: skip
    acc = [0.72, 0.90, 0.94, 0.965, 0.978, 0.985, 0.99, 0.994, 0.997, 0.998] + [1.0] * 10
    val_acc = [0.88, 0.93, 0.95, 0.958, 0.962, 0.965, 0.965, 0.97, 0.965, 0.965] + [0.965] * 10
    return history(loss, val, acc, val_acc, 1e-3)


def heavy_dropout_history() -> list[dict[str, Any]]:
    """Dropout 0.5: train loss and accuracy worse than validation all along."""
    loss = [1.6, 0.9, 0.7, 0.6, 0.55, 0.52, 0.5, 0.49, 0.48, 0.47]
    val = [0.8, 0.45, 0.35, 0.3, 0.27, 0.25, 0.24, 0.235, 0.23, 0.228]
    acc = [0.5, 0.72, 0.78, 0.81, 0.83, 0.84, 0.85, 0.855, 0.86, 0.862]
    val_acc = [0.8, 0.88, 0.91, 0.925, 0.93, 0.935, 0.94, 0.94, 0.942, 0.943]
    return history(loss, val, acc, val_acc, 1e-3)


def warmup_bump_history() -> list[dict[str, Any]]:
    """One-cycle at its peak: the loss rises a little for two epochs, then anneals."""
    loss = [1.9, 1.1, 1.16, 1.2, 0.9, 0.6, 0.42, 0.33, 0.29, 0.27]
    val = [1.5, 1.0, 1.1, 1.05, 0.8, 0.55, 0.42, 0.36, 0.34, 0.335]
    lr = [4e-4, 1.6e-3, 3e-3, 2.9e-3, 2.4e-3, 1.7e-3, 1e-3, 4.5e-4, 1.1e-4, 1e-8]
    return history(loss, val, lr=lr)


def converged_noisy_history() -> list[dict[str, Any]]:
    """Adam at a constant rate long after convergence: tiny losses jumping by 30-60%."""
    loss = [1.5, 0.4, 0.15, 0.07, 0.035, 0.02, 0.012, 0.015, 0.009, 0.013, 0.008, 0.011, 0.007]
    return history(loss, lr=1e-3)


HEALTHY_HISTORIES = {
    "digits_onecycle": (digits_history, "digits_cnn"),
    "mnist_mlp_dropout_smoothing": (mnist_mlp_history, "mnist_mlp"),
    "mnist_cnn_batchnorm_smoothing": (mnist_cnn_history, "mnist_cnn"),
    "small_data_modest_gap": (small_data_gap_history, None),
    "heavy_dropout": (heavy_dropout_history, None),
    "one_cycle_bump": (warmup_bump_history, None),
    "converged_noisy": (converged_noisy_history, None),
}


def lenet_probes(epochs: int = 8) -> SimpleNamespace:
    """LeNet on digits, batch 32 (measured): dense ReLUs idle on 17-27% of units per batch,
    gradients 0.3-2 in every layer, relative gradients within 10x of the head's."""

    def layers(i: int, epoch: int) -> dict[str, Any]:
        w = wiggle(i)
        return {
            "block1.conv": param("Conv2d", 0.6 * w, 3.4, 2e-3),
            "block1.act": relu(0.0),
            "block2.conv": param("Conv2d", 1.5 * w, 6.3, 4e-3),
            "block2.act": relu(0.03 * w),
            "fc1.dense": param("Linear", 0.7 * w, 15.5, 2e-3),
            "fc1.act": relu(0.27 * w),
            "fc2.dense": param("Linear", 0.8 * w, 13.0, 3e-3),
            "fc2.act": relu(0.24 * w),
            "head": param("Linear", 0.7 * w, 4.5, 3e-3),
        }

    return probe_log(
        epochs,
        4,
        layers,
        loss_at=lambda i, e: 2.31 if i == 0 else 2.3 * 0.75**i * wiggle(i, 0.4),
        grad_at=lambda i, e: (1.5 + 0.15 * i) * wiggle(i) if e < 5 else 0.9 * wiggle(i),
    )


def vgg_bn_probes(epochs: int = 4) -> SimpleNamespace:
    """VGG with batch norm: BN weights get gradients on their own scale (excluded from the
    first/last comparison), and the global norm grows ~20x from a quiet start (under 100x)."""

    def layers(i: int, epoch: int) -> dict[str, Any]:
        w = wiggle(i)
        return {
            "stem.conv": param("Conv2d", 0.02 * w, 4.0, 3e-3),
            "stem.bn": param("BatchNorm2d", 1e-5 * w, 5.6, 1e-3),
            "stem.act": relu(0.0),
            "block1.conv1": param("Conv2d", 0.03 * w, 5.7),
            "block1.bn1": param("BatchNorm2d", 2e-5 * w, 5.6),
            "block1.act1": relu(0.02 * w),
            "head": param("Linear", 0.5 * w, 3.0),
        }

    return probe_log(
        epochs,
        5,
        layers,
        loss_at=lambda i, e: 2.35 if i == 0 else 2.3 * 0.6**i + 0.28,
        grad_at=lambda i, e: 0.05 if i == 0 else min(1.0, 0.05 * 1.6**i) * wiggle(i),
    )


def tanh_probes(epochs: int = 5) -> SimpleNamespace:
    """A tanh MLP on standardised inputs: a few percent of outputs near +-1."""

    def layers(i: int, epoch: int) -> dict[str, Any]:
        w = wiggle(i)
        return {
            "fc1": param("Linear", 0.6 * w, 10.0),
            "act1": squash("Tanh", 0.05 * w),
            "fc2": param("Linear", 0.3 * w, 5.0),
            "act2": squash("Tanh", 0.12 * w),
            "head": param("Linear", 0.3 * w, 4.0),
        }

    return probe_log(epochs, 4, layers, loss_at=lambda i, e: 2.31 if i == 0 else 1.0 / (i + 1))


HEALTHY_PROBES = {"lenet": lenet_probes, "vgg_bn": vgg_bn_probes, "tanh_mlp": tanh_probes}


def digits_profile(**changes: Any) -> dict[str, Any]:
    """profile_data for digits (1,293 train rows, LeNet): images in [0, 1] with 3 always-blank
    pixels, a few natural near-duplicates across splits, a label-noise estimate of 3%."""
    profile = {
        "task": "classification",
        "num_classes": 10,
        "input_shape": [1, 8, 8],
        "image": True,
        "sizes": {"train": 1293, "val": 144, "test": 360},
        "num_params": 21_690,
        "class_counts": {"train": [127, 131, 127, 132, 130, 130, 131, 129, 125, 131]},
        "duplicates": {"rows": 0, "fraction": 0.0, "conflicting_labels": 0},
        "overlap": {
            "val": {"exact": 0, "near": 2, "fraction": 2 / 144},
            "test": {"exact": 1, "near": 6, "fraction": 6 / 360},
        },
        "nonfinite": {
            s: {"nan": 0, "inf": 0, "rows": 0, "columns": 0} for s in ("train", "val", "test")
        },
        "scale": {
            "min": 0.0,
            "max": 1.0,
            "mean": 0.305,
            "std": 0.38,
            "max_abs_feature_mean": 0.87,
            "feature_std_ratio": 60.0,
        },
        "constant_features": {"count": 3, "fraction": 3 / 64, "indices": [0, 32, 39]},
        "label_noise": {
            "estimated_fraction": 0.03,
            "flagged": 39,
            "indices": [5, 77],
            "cv_accuracy": 0.965,
            "method": "confident_learning",
        },
    }
    profile.update(changes)
    return profile


def mnist_profile(**changes: Any) -> dict[str, Any]:
    """MNIST standardised ((p/255 - 0.1307) / 0.3081) for the MLP: 67 constant border pixels,
    feature spreads 3,500x apart (border vs centre), classes 1.24x apart."""
    profile = digits_profile(
        input_shape=[1, 28, 28],
        sizes={"train": 57_000, "val": 3_000, "test": 10_000},
        num_params=535_818,
        class_counts={"train": [5623, 6405, 5660, 5824, 5550, 5150, 5622, 5952, 5558, 5656]},
        duplicates={"rows": 0, "fraction": 0.0, "conflicting_labels": 0},
        overlap={
            "val": {"exact": 0, "near": 3, "fraction": 0.001},
            "test": {"exact": 1, "near": 21, "fraction": 0.0021},
        },
        scale={
            "min": -0.4242,
            "max": 2.8215,
            "mean": -0.0001,
            "std": 1.0,
            "max_abs_feature_mean": 1.352,
            "feature_std_ratio": 3458.0,
        },
        constant_features={"count": 67, "fraction": 67 / 784, "indices": list(range(12))},
        label_noise={
            "estimated_fraction": 0.045,
            "flagged": 2565,
            "indices": [],
            "cv_accuracy": 0.92,
        },
    )
    profile.update(changes)
    return profile


def tabular_profile(**changes: Any) -> dict[str, Any]:
    """A standardised tabular set (breast-cancer-like): 30 features, 2 classes 1.7x apart."""
    profile = digits_profile(
        num_classes=2,
        input_shape=[30],
        image=False,
        sizes={"train": 364, "val": 91, "test": 114},
        num_params=41_090,
        class_counts={"train": [170, 285]},
        overlap={"val": {"exact": 0, "near": 0, "fraction": 0.0}},
        scale={
            "min": -3.1,
            "max": 11.9,
            "mean": 0.0,
            "std": 1.0,
            "max_abs_feature_mean": 1e-8,
            "feature_std_ratio": 1.0,
        },
        constant_features={"count": 0, "fraction": 0.0, "indices": []},
        label_noise={"estimated_fraction": 0.04, "flagged": 15, "indices": [], "cv_accuracy": 0.97},
    )
    profile.update(changes)
    return profile


HEALTHY_PROFILES = {
    "digits": (digits_profile, 10),
    "mnist_standardised": (mnist_profile, 10),
    "mnist_unit_range": (
        lambda: mnist_profile(
            scale={
                "min": 0.0,
                "max": 1.0,
                "mean": 0.1307,
                "std": 0.3081,
                "max_abs_feature_mean": 0.55,
                "feature_std_ratio": 1.0e4,
            }
        ),
        10,
    ),
    "tabular_standardised": (tabular_profile, 2),
}


# ------------------------------------------------------------------------------ registry, order
def test_every_code_has_exactly_one_rule() -> None:
    assert set(RULES) == set(CODES)
    assert len(ordered_rules()) == len(CODES)
    with pytest.raises(ValueError, match="already has a rule"):
        rule("overfitting", "training")(lambda c: None)
    with pytest.raises(ValueError, match="unknown finding code"):
        rule("overfiting", "training")
    with pytest.raises(ValueError, match="stage"):
        rule("overfitting", "model")  # type: ignore[arg-type]


def test_data_rules_come_first_and_read_only_data() -> None:
    stages = [r.stage for r in ordered_rules()]
    assert stages == sorted(stages, key=("data", "training").index)
    data_codes = {r.code for r in ordered_rules("data")}
    assert data_codes == {
        "class_imbalance", "label_noise", "train_test_leakage", "duplicate_samples",
        "missing_values", "unscaled_inputs", "constant_feature", "data_too_small",
        "high_unknown_rate", "heavy_truncation",
    }  # fmt: skip
    # A data rule never fires without a profile, whatever the history says.
    broken = ctx(history([float("nan")]))
    assert all(r(broken) is None for r in ordered_rules("data"))


def test_run_rules_orders_by_severity_then_stage_then_code() -> None:
    profile = digits_profile(
        nonfinite={"train": {"nan": 12, "inf": 0, "rows": 4, "columns": 2}},
        duplicates={"rows": 200, "fraction": 200 / 1293, "conflicting_labels": 0},
        constant_features={"count": 2, "fraction": 2 / 64, "indices": [1, 2]},
        image=False,
        input_shape=[64],
    )
    findings = run_rules(ctx(history([2.3, float("nan")]), data=profile))
    codes = [f.code for f in findings]
    assert codes == ["missing_values", "loss_nan", "duplicate_samples", "constant_feature"]
    assert [f.severity for f in findings] == ["fatal", "fatal", "warning", "info"]
    assert [f.code for f in run_rules(ctx(history([2.3, float("nan")]), data=profile), "data")] == [
        "missing_values", "duplicate_samples", "constant_feature"
    ]  # fmt: skip
    assert [f.code for f in run_rules(ctx(history([2.3, math.nan]), data=profile), "training")] == [
        "loss_nan"
    ]
    with pytest.raises(ValueError, match="stage"):
        run_rules(ctx(), "everything")  # type: ignore[arg-type]


def test_a_symptom_is_dropped_when_its_cause_is_raised() -> None:
    # Deep sigmoid MLP (measured): stuck at chance level because nothing reaches fc1.
    hist = history([2.3295, 2.3133, 2.3131, 2.3130, 2.3131, 2.3130], lr=0.05)
    alone = ctx(hist, rec=mlp_recipe())
    assert {f.code for f in run_rules(alone)} == {"loss_plateau", "underfitting"}
    with_probes = ctx(hist, probes=sigmoid_deep_probes(6), rec=mlp_recipe())
    assert [f.code for f in run_rules(with_probes)] == ["vanishing_gradients"]
    assert set(EXPLAINED_BY["loss_plateau"]) <= set(CODES)


# ------------------------------------------------------------------------------ healthy: nothing
@pytest.mark.parametrize("name", sorted(HEALTHY_HISTORIES))
def test_healthy_curves_raise_nothing_live_or_final(name: str) -> None:
    make, recipe_name = HEALTHY_HISTORIES[name]
    hist = make()
    for rec in (recipe(recipe_name) if recipe_name else None, None):
        for n in range(1, len(hist) + 1):
            live = run_rules(ctx(hist[:n], rec=rec, final=False))
            assert live == [], f"epoch {n}: {[f.headline() for f in live]}"
        final = run_rules(ctx(hist, rec=rec, final=True))
        assert final == [], [f.headline() for f in final]


@pytest.mark.parametrize("name", sorted(HEALTHY_PROBES))
def test_healthy_probe_logs_raise_nothing(name: str) -> None:
    probes = HEALTHY_PROBES[name]()
    epochs = max(s["epoch"] for s in probes.steps)
    hist = history([2.0 * 0.55**e + 0.05 for e in range(epochs)], lr=1e-3)
    for n in range(1, epochs + 1):
        steps = [s for s in probes.steps if s["epoch"] <= n]
        live = SimpleNamespace(steps=steps, hists=[])
        found = run_rules(ctx(hist[:n], probes=live, rec=recipe(), final=False))
        assert found == [], f"epoch {n}: {[f.headline() for f in found]}"
    assert run_rules(ctx(hist, probes=probes, rec=recipe())) == []


@pytest.mark.parametrize("name", sorted(HEALTHY_PROFILES))
def test_healthy_data_profiles_raise_nothing(name: str) -> None:
    make, k = HEALTHY_PROFILES[name]
    assert run_rules(ctx(data=make(), rec=recipe(), num_classes=k), "data") == []
    assert run_rules(ctx(data=make(), num_classes=k), "data") == []


def test_probes_may_be_a_plain_list_of_records() -> None:
    probes = sigmoid_deep_probes(2)
    records = [*probes.steps, {"kind": "hist", "epoch": 1, "layers": {}}]
    assert gradients.vanishing_gradients(ctx(probes=records)) is not None
    assert gradients.vanishing_gradients(ctx(probes=lenet_probes().steps)) is None


def test_empty_and_partial_logs_raise_nothing_and_do_not_crash() -> None:
    partial = [{"epoch": 1}, {"epoch": 2, "loss": None, "val_loss": "oops"}]
    odd_probes = [{"kind": "step", "step": 0, "epoch": 1, "layers": {"x": {}}}]
    for c in (
        ctx(),
        ctx(partial, probes=odd_probes, data={"sizes": {}}, rec={}),
        ctx(history([1.0, 0.5]), num_classes=None, task="regression"),
        ctx(history([3.0, 5.0, 2.0, 9.0, 1.0, 7.0, 1.0]), task="generative"),
    ):
        assert run_rules(c) == []


# ------------------------------------------------------------------------------ overfitting
def overfit_history() -> list[dict[str, Any]]:
    """An unregularised MLP on digits for 14 epochs: val loss doubles from epoch 5."""
    loss = [
        1.0,
        0.3,
        0.15,
        0.08,
        0.05,
        0.03,
        0.02,
        0.012,
        0.008,
        0.005,
        0.003,
        0.002,
        0.0015,
        0.001,
    ]
    val = [0.5, 0.25, 0.16, 0.13, 0.12, 0.13, 0.15, 0.17, 0.19, 0.21, 0.22, 0.24, 0.25, 0.26]
    return history(loss, val, lr=1e-3)


def test_overfitting_from_a_rising_val_loss() -> None:
    rec = mlp_recipe()
    finding = curves.overfitting(ctx(overfit_history(), rec=rec))
    assert finding is not None and finding.code == "overfitting"
    # Running medians of 3: lowest 0.13 centred on epoch 4, latest 0.25 centred on epoch 13.
    assert finding.epoch == 5
    assert finding.evidence["val_loss_min"] == 0.13
    assert finding.evidence["val_loss_min_epoch"] == 4
    assert finding.evidence["val_loss_recent"] == 0.25
    assert finding.evidence["train_loss_last"] == 0.001
    assert finding.message == (
        "val loss rose from 0.13 (epoch 4) to 0.25 (epoch 13; medians of 3 epochs) while the "
        "train loss fell from 0.08 to 0.001"
    )
    assert finding.patch == {
        "train.early_stopping": {"monitor": "val_loss", "patience": 5},
        "train.optimizer.weight_decay": 5e-4,
        "model.args.dropout": 0.2,
        "data.augment": {"random_affine": {"degrees": 10, "translate": [0.1, 0.1]}},
    }
    # Live, it waits until the latest median is 25% above the lowest (0.13 -> 0.1625).
    hist = overfit_history()
    assert curves.overfitting(ctx(hist[:8], rec=rec, final=False)) is None  # median 0.15
    assert curves.overfitting(ctx(hist[:9], rec=rec, final=False)).epoch == 5  # median 0.17


def test_overfitting_from_an_accuracy_gap_and_patch_respects_the_recipe() -> None:
    loss = [1.5, 0.8, 0.4, 0.2, 0.1, 0.06, 0.04, 0.03]
    # Up 5% from its lowest median (no 25% rise), so only the gap speaks; held-out progress
    # stopped at epoch 5, and the val loss climbs steadily since (no noise to hide in).
    val = [1.4, 1.0, 0.9, 0.85, 0.83, 0.86, 0.89, 0.92]
    acc = [0.5, 0.75, 0.88, 0.95, 0.98, 0.99, 1.0, 1.0]
    val_acc = [0.5, 0.66, 0.72, 0.74, 0.77, 0.76, 0.76, 0.76]
    rec = recipe("mnist_cnn")  # adamw 5e-4, vgg (dropout 0.2 by default), image data
    tabular = tabular_profile(num_classes=10, sizes={"train": 50_000, "val": 10_000})
    finding = curves.overfitting(ctx(history(loss, val, acc, val_acc), data=tabular, rec=rec))
    assert finding is not None
    assert finding.epoch == 3  # the gap has been >= 0.15 since epoch 3 (0.88 vs 0.72)
    assert finding.evidence["accuracy_gap"] == pytest.approx(0.24)
    assert finding.evidence["val_loss_recent"] == 0.89  # held-out results got worse
    # The same curves on 91 val rows: a rise of 0.04 is 0.2 of the val loss's standard error
    # there, held-out results are flat within their noise, and a gap alone is not named.
    # (No recipe: the recipe's label smoothing puts the floor above these synthetic losses.)
    few = tabular_profile(num_classes=10)
    assert curves.overfitting(ctx(history(loss, val, acc, val_acc), data=few)) is None
    assert finding.patch == {
        "train.early_stopping": {"monitor": "val_loss", "patience": 5},
        "train.optimizer.weight_decay": 2.5e-3,
        "model.args.dropout": 0.4,
    }  # no augmentation: the profile says these are not images


def test_an_accuracy_gap_is_not_overfitting_while_held_out_results_still_improve() -> None:
    # A bag-of-embeddings text model: 99% train accuracy, while val loss and accuracy still
    # reach new bests (IMDB in the field set); stopping now would lose held-out accuracy.
    loss = [0.68, 0.64, 0.55, 0.44, 0.34, 0.26, 0.20, 0.16]
    val = [0.67, 0.63, 0.57, 0.51, 0.47, 0.45, 0.44, 0.436]
    acc = [0.6, 0.72, 0.85, 0.9, 0.94, 0.95, 0.97, 0.99]
    val_acc = [0.62, 0.68, 0.72, 0.76, 0.78, 0.79, 0.79, 0.80]
    assert curves.overfitting(ctx(history(loss, val, acc, val_acc))) is None
    # The same gap once val accuracy and loss have not improved for three epochs and the val
    # loss has turned up, steadily: overfitting.
    val_stalled = [*val[:5], 0.49, 0.51, 0.53]
    acc_stalled = [*val_acc[:5], 0.78, 0.77, 0.78]
    finding = curves.overfitting(ctx(history(loss, val_stalled, acc, acc_stalled)))
    assert finding is not None and finding.evidence["rests_on"] == ["accuracy_gap"]


def test_overfitting_needs_train_loss_to_keep_falling() -> None:
    hist = overfit_history()
    for row in hist[5:]:
        row["loss"] = 0.5 + 0.1 * row["epoch"]  # train rising too: divergence, not overfitting
    assert curves.overfitting(ctx(hist)) is None


# ------------------------------------------------------------------------------ underfitting
def test_underfitting_abstains_for_next_token_targets() -> None:
    # A character GRU after 4 epochs: 2.2 nats is 53% of ln 65, but text's own entropy is the
    # floor (Shakespeare's character frequencies alone: 3.3 nats), so no verdict is possible.
    hist = history([3.18, 2.54, 2.33, 2.21])
    language_model = {"num_classes": 65, "per_position_targets": True}
    assert curves.underfitting(ctx(hist, num_classes=65)) is not None
    assert curves.underfitting(ctx(hist, data=language_model, num_classes=65)) is None


def test_underfitting_only_after_training_with_patch() -> None:
    # An MLP with 8 hidden units on MNIST: slowly improving at a high loss after 8 epochs.
    hist = history([2.1, 1.8, 1.65, 1.58, 1.55, 1.53, 1.52, 1.50], acc=[0.3, 0.4, 0.45, 0.48,
                   0.49, 0.5, 0.505, 0.51], lr=1e-3)  # fmt: skip
    rec = mlp_recipe(model__args__hidden=[8], model__args__dropout=0.5)
    assert curves.underfitting(ctx(hist, rec=rec, final=False)) is None
    finding = curves.underfitting(ctx(hist, rec=rec))
    assert finding is not None and finding.epoch == 8
    assert finding.evidence["level"] == pytest.approx(1.5 / LN10)
    assert finding.evidence["final_accuracy"] == 0.51
    assert "1.5, 65% of the chance level 2.3" in finding.message
    assert finding.patch == {
        "model.args.hidden": [64],
        "train.epochs": 60,
        "model.args.dropout": 0.25,
    }
    # The same curve is not underfitting for a regression task (no chance level to judge by).
    assert curves.underfitting(ctx(hist, task="regression", num_classes=None)) is None
    # Nor is a well-fitted run.
    assert curves.underfitting(ctx(history([2.0, 0.6, 0.3]))) is None


# ------------------------------------------------------------------------------ loss_nan
def test_loss_nan_from_a_probe_step_points_at_the_step() -> None:
    probes = probe_log(
        2,
        4,
        lambda i, e: {"fc1": param("Linear", 1.0, 5.0)},
        loss_at=lambda i, e: [2.3, 1.9, 6.0, 80.0, math.nan, math.nan, math.nan, math.nan][i],
        grad_at=lambda i, e: [1.0, 2.0, 30.0, 900.0, math.nan, math.nan, math.nan, math.nan][i],
    )
    rec = mlp_recipe(train__optimizer__lr=0.5)
    finding = curves.loss_nan(ctx(history([9.1]), probes=probes, rec=rec, final=False))
    assert finding is not None and finding.severity == "fatal"
    assert finding.epoch == 2 and finding.evidence["step"] == 41
    assert finding.evidence["last_finite_loss"] == 80.0
    assert finding.evidence["last_finite_grad_norm"] == 900.0
    assert "became nan at step 41 (epoch 2)" in finding.message
    assert finding.patch == {"train.optimizer.lr": 0.05, "train.grad_clip": 1.0}


def test_loss_nan_from_the_history_and_blames_nan_inputs() -> None:
    hist = history([2.1, 1.2, math.inf], val_loss=[2.0, 1.1, math.nan])
    finding = curves.loss_nan(ctx(hist, rec=recipe()))
    assert finding is not None and finding.epoch == 3
    assert finding.evidence["value"] == "inf" and finding.evidence["last_finite_loss"] == 1.2
    assert finding.patch == {"train.optimizer.lr": 2e-4, "train.grad_clip": 1.0}
    nan_data = digits_profile(nonfinite={"train": {"nan": 5, "inf": 0, "rows": 5, "columns": 1}})
    blamed = curves.loss_nan(ctx(hist, data=nan_data, rec=recipe()))
    assert blamed is not None and blamed.patch == {"data.impute": "median"}
    assert blamed.causes[0].startswith("the train inputs contain NaN")
    # Strict JSON writers store NaN as a string; the rule still reads it.
    assert curves.loss_nan(ctx([{"epoch": 1, "loss": "NaN"}])) is not None
    assert curves.loss_nan(ctx(history([2.0, 1.0]))) is None


# ------------------------------------------------------------------------------ lr_too_high
def test_lr_too_high_when_epoch_one_is_worse_than_the_start() -> None:
    # Adam lr=0.1 on a digits MLP (measured): the loss starts at 2.67, epoch 1 averages 3.19.
    probes = probe_log(
        3, 4, lambda i, e: {}, loss_at=lambda i, e: 2.67 if i == 0 else 1.5 * wiggle(i)
    )
    hist = history([3.19, 0.97, 0.92], lr=0.1)
    rec = mlp_recipe(train__optimizer__lr=0.1)
    finding = curves.lr_too_high(ctx(hist[:1], probes=probes, rec=rec, final=False))
    assert finding is not None and finding.severity == "error" and finding.epoch == 1
    assert finding.evidence["first_epoch_loss"] == 3.19
    assert finding.evidence["baseline"] == 2.67
    assert "1.19x the loss before training (2.67)" in finding.message
    assert finding.patch == {"train.optimizer.lr": 0.01}
    # Without probes the bar is 1.5x the chance level: 3.19 is not enough, SGD lr=1 (18.8) is.
    assert curves.lr_too_high(ctx(hist, rec=rec)) is None
    sgd = curves.lr_too_high(ctx(history([18.8, 2.71, 2.37]), rec=rec))
    assert sgd is not None and sgd.evidence["baseline"] == pytest.approx(LN10)
    # Regression has no chance level: 1.5x the first sampled batch's loss.
    start = probe_log(1, 4, lambda i, e: {}, loss_at=lambda i, e: 1.0 if i == 0 else 0.9)
    for first, fires in ((1.3, False), (1.6, True)):
        c = ctx(history([first]), probes=start, task="regression", num_classes=None)
        assert (curves.lr_too_high(c) is not None) is fires


def test_lr_too_high_from_weights_that_blow_up_while_nothing_is_learnt() -> None:
    # SGD lr 1.5 + momentum 0.9 on a small CNN (the field set, measured): the loss never spikes,
    # it sits at chance while the units die, but the head's weight norm goes 1.86 -> 6.5 -> 25.
    norms = [1.86, 1.9, 2.6, 6.5, 13.0, 25.0, 25.2, 25.3]

    def layers(i: int, e: int) -> dict:
        return {"head.3": {"role": "param", "weight_norm": norms[i], "update_ratio": 0.2}}

    probes = probe_log(2, 4, layers, loss_at=lambda i, e: 2.30 if i == 0 else 2.4)
    finding = curves.lr_too_high(ctx(history([2.39, 2.43]), probes=probes))
    assert finding is not None and finding.epoch == 1
    assert finding.evidence["weight_layer"] == "head.3"
    assert finding.evidence["weight_norm"] == 6.5 and finding.evidence["baseline"] == 2.30
    assert "head.3's weight norm grew from 1.86 to 6.5" in finding.message
    # The same growth while the loss falls is learning, not overshooting.
    learning = probe_log(2, 4, layers, loss_at=lambda i, e: 2.30 if i == 0 else 1.0)
    assert curves.lr_too_high(ctx(history([1.2, 0.6]), probes=learning)) is None


def test_lr_too_high_from_a_spike_and_from_a_climbing_loss() -> None:
    spiky = probe_log(
        2, 4, lambda i, e: {}, loss_at=lambda i, e: [2.6, 2.2, 470.0, 3.7, 2.3, 2.2, 2.1, 2.0][i]
    )
    finding = curves.lr_too_high(ctx(history([2.0, 2.0]), probes=spiky))
    assert finding is not None and finding.evidence["spike_step"] == 20
    assert finding.evidence["spike_loss"] == 470.0
    climbing = history([2.0, 1.0, 0.6, 0.5, 0.9, 1.6], lr=0.01)
    finding = curves.lr_too_high(ctx(climbing, rec=mlp_recipe(train__optimizer__lr=0.01)))
    assert finding is not None and finding.epoch == 5
    assert finding.evidence == {
        "best_loss": 0.5,
        "best_epoch": 4,
        "risen_loss": 0.9,
        "lr": 0.01,
        "rests_on": ["rising_loss"],  # a later rise: it can be one climb of an oscillation
    }
    assert finding.patch == {"train.optimizer.lr": 0.001}


# ------------------------------------------------------------------------------ lr_too_low
def test_lr_too_low_on_a_slow_steady_curve() -> None:
    # Adam lr=1e-6 on a digits MLP (measured), with update ratios ~1e-6.
    probes = probe_log(
        4,
        2,
        lambda i, e: {
            "fc1": param("Linear", 1.0, 23.0, 2e-6),
            "head": param("Linear", 1.4, 4.5, 5e-6),
        },
        loss_at=lambda i, e: 2.59,
    )
    hist = history([2.5843, 2.5783, 2.5723, 2.5665], lr=1e-6)
    rec = mlp_recipe(train__optimizer__lr=1e-6)
    assert curves.lr_too_low(ctx(hist[:3], probes=probes, rec=rec, final=False)) is None
    finding = curves.lr_too_low(ctx(hist, probes=probes, rec=rec, final=False))
    assert finding is not None and finding.epoch == 4
    assert finding.evidence["progress"] == pytest.approx(0.0178 / 2.5843, rel=1e-3)
    assert finding.evidence["median_update_ratio"] == pytest.approx(3.5e-6)
    assert finding.patch == {"train.optimizer.lr": 1e-5}
    assert curves.lr_too_high(ctx(hist, probes=probes, rec=rec)) is None


def test_lr_too_low_waits_for_the_warm_up_and_ignores_converging_curves() -> None:
    warming = history([2.3, 2.25, 2.2, 2.15, 2.1], lr=[1e-4, 2e-4, 4e-4, 8e-4, 1.6e-3])
    assert curves.lr_too_low(ctx(warming)) is None
    assert curves.lr_too_low(ctx(history([2.3, 2.25, 2.2, 2.15, 2.1], lr=1.6e-3))) is not None
    decelerating = history([2.1, 1.8, 1.65, 1.58, 1.55, 1.53, 1.52, 1.50])
    assert curves.lr_too_low(ctx(decelerating)) is None


# ------------------------------------------------------------------------------ loss_plateau
def test_a_regression_plateau_is_judged_against_the_targets_variance() -> None:
    # A linear model on 309 diabetes rows (standardised targets) converges within epoch 1:
    # flat at 0.48, which is 84% of its first epoch but only 48% of the targets' variance.
    hist = history([0.571, 0.493, 0.482, 0.48, 0.491, 0.484, 0.492, 0.477, 0.484, 0.484])
    regression = {"task": "regression", "target_variance": 1.0}
    assert curves.loss_plateau(ctx(hist, task="regression", num_classes=1)) is not None
    judged = ctx(hist, data=regression, task="regression", num_classes=1)
    assert curves.loss_plateau(judged) is None
    # A model stuck near the variance is still a plateau.
    stuck = history([1.02, 0.97, 0.96, 0.96, 0.962, 0.961, 0.96, 0.96])
    assert curves.loss_plateau(ctx(stuck, data=regression, task="regression", num_classes=1))
    # With another loss (L1) the variance is no yardstick: the first epoch decides, as before.
    l1 = mlp_recipe(train__loss__name="l1")
    assert (
        curves.loss_plateau(ctx(hist, data=regression, rec=l1, task="regression", num_classes=1))
        is not None
    )


def test_loss_plateau_at_a_high_level() -> None:
    hist = history([2.0, 1.4, 1.25, 1.24, 1.245, 1.242, 1.243], val_loss=[1.9] * 7, lr=1e-3)
    finding = curves.loss_plateau(ctx(hist, rec=mlp_recipe(), final=False))
    assert finding is not None and finding.epoch == 3  # 1.25 is within 1% of the lowest, 1.24
    assert finding.evidence["best_before_window"] == 1.25
    assert finding.evidence["best_in_window"] == 1.24
    assert finding.evidence["gain"] == pytest.approx(0.008)
    assert finding.message == (
        "the loss has stayed within 1% of 1.24 since epoch 3 (5 epochs) and is still 54% of "
        "the chance level 2.3"
    )
    assert finding.patch == {
        "train.schedule": {"name": "plateau", "args": {"monitor": "val_loss", "patience": 2}}
    }
    assert curves.loss_plateau(ctx(hist[:4])) is None  # too early to call
    no_val = history([2.0, 1.4, 1.25, 1.24, 1.245, 1.242, 1.243])
    found = curves.loss_plateau(ctx(no_val, rec=mlp_recipe()))
    assert found is not None and found.patch["train.schedule"]["args"]["monitor"] == "loss"
    with_onecycle = curves.loss_plateau(ctx(hist, rec=recipe()))
    assert with_onecycle is not None and with_onecycle.patch == {}  # already one-cycle
    # Strong weight decay holding the weights back is lifted too.
    decayed = mlp_recipe(train__optimizer__name="sgd", train__optimizer__weight_decay=0.1)
    assert curves.loss_plateau(ctx(hist, rec=decayed)).patch == {
        "train.schedule": {"name": "plateau", "args": {"monitor": "val_loss", "patience": 2}},
        "train.optimizer.weight_decay": 0.01,
    }


# ------------------------------------------------------------------------------ oscillating_loss
def test_oscillating_loss() -> None:
    hist = history([1.0, 0.8, 0.7, 0.9, 0.65, 0.85, 0.6, 0.82, 0.58], lr=0.3)
    finding = curves.oscillating_loss(ctx(hist, rec=mlp_recipe(train__optimizer__lr=0.3)))
    assert finding is not None and finding.epoch == 4
    # The first window that swings: epochs 1-6, two rises, three changes of direction.
    assert finding.evidence["epochs"] == [1, 2, 3, 4, 5, 6]
    assert finding.evidence["rises"] == 2 and finding.evidence["reversals"] == 3
    assert finding.message == (
        "the training loss went up 2 times in 6 epochs (epochs 1-6: 1, 0.8, 0.7, 0.9, 0.65, "
        "0.85); lr 0.3"
    )
    assert finding.patch == {
        "train.optimizer.lr": 0.09,
        "train.schedule": {"name": "cosine", "args": {}},
    }
    assert curves.oscillating_loss(ctx(hist[:5])) is None
    assert curves.lr_too_high(ctx(hist)) is None  # bounded swings: not a divergence
    # A run that swung and then calmed down still oscillated.
    calmed = history([1.0, 0.8, 0.7, 0.9, 0.65, 0.85, 0.6, 0.5, 0.45, 0.42, 0.4, 0.39, 0.38])
    assert curves.oscillating_loss(ctx(calmed)) is not None


def test_noisy_small_data_epochs_are_not_oscillation() -> None:
    # breast_cancer_mlp (measured; 13 batches per epoch with dropout): +29% and +34% blips.
    loss = [0.632, 0.286, 0.200, 0.156, 0.153, 0.140, 0.121, 0.0995, 0.129, 0.0977, 0.0784,
            0.105, 0.0752, 0.0681, 0.0628, 0.0743]  # fmt: skip
    assert curves.oscillating_loss(ctx(history(loss), num_classes=2)) is None


# ------------------------------------------------------------------------------ gradients
def test_exploding_gradients_names_the_layer_that_grew_most() -> None:
    norms = [1.0, 1.2, 0.9, 1.1, 3.0, 40.0, 150.0, 2.0e3, 5.0e4, 3.0e5]

    def layers(i: int, e: int) -> dict[str, Any]:
        g = norms[i]
        return {
            "fc1": param("Linear", 0.5 * g, 10.0),
            "fc2": param("Linear", 0.8 * g**1.1, 10.0),
            "head": param("Linear", 0.3, 3.0),
        }

    probes = probe_log(2, 5, layers, loss_at=lambda i, e: 2.3, grad_at=lambda i, e: norms[i])
    rec = mlp_recipe(train__optimizer__lr=0.05)
    finding = gradients.exploding_gradients(ctx(probes=probes, rec=rec, final=False))
    assert finding is not None and finding.severity == "error"
    assert finding.layer == "fc2" and finding.epoch == 2
    assert finding.evidence["baseline"] == 1.0 and finding.evidence["grad_norm"] == 3.0e5
    assert finding.evidence["steps_above"] == 4 and finding.evidence["first_step_above"] == 49
    assert finding.evidence["ratio"] == 3.0e5
    assert finding.message == (
        "gradient norm 3e+05 at step 73, 3e+05x its 1 at the start of training; "
        "4 sampled steps at 100x or more"
    )
    assert finding.patch == {"train.grad_clip": 1.0, "train.optimizer.lr": 0.015}
    # One spike 100x the start is not a trend; an infinite norm with a finite loss is.
    one = probe_log(2, 3, lambda i, e: {}, grad_at=lambda i, e: [1, 1, 1, 1, 200, 1][i])
    assert gradients.exploding_gradients(ctx(probes=one)) is None
    inf = probe_log(2, 3, lambda i, e: {}, grad_at=lambda i, e: [1, 1, 1, 1, math.inf, 1][i])
    found = gradients.exploding_gradients(ctx(probes=inf))
    assert found is not None and found.evidence["grad_norm"] == "inf"
    assert found.message.startswith("gradient norm overflowed to inf at step 54 (it was 1 at")


def sigmoid_deep_probes(epochs: int) -> SimpleNamespace:
    """An 8-layer sigmoid MLP on digits (measured): each layer's gradient ~4x smaller than the
    next; fc1's relative gradient ~6e-6 of the head's."""
    grads = [9.2e-6, 3.3e-5, 1.7e-4, 6.9e-4, 3.3e-3, 1.4e-2, 5.1e-2, 2.2e-1, 8.0e-1]
    weights = [8.0] * 8 + [4.2]

    def layers(i: int, e: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, (g, w) in enumerate(zip(grads, weights, strict=True)):
            name = f"fc{k + 1}" if k < 8 else "head"
            out[name] = param("Linear", g * wiggle(i + k), w)
            if k < 8:
                out[f"act{k + 1}"] = squash("Sigmoid", 0.0)
        return out

    return probe_log(epochs, 3, layers, loss_at=lambda i, e: 2.31)


def test_vanishing_gradients_in_a_deep_sigmoid_mlp() -> None:
    rec = mlp_recipe(model__args__activation="sigmoid", model__args__hidden=[64] * 8)
    live_one_epoch = ctx(probes=sigmoid_deep_probes(1), rec=rec, final=False)
    assert gradients.vanishing_gradients(live_one_epoch) is None  # one epoch is not a trend yet
    finding = gradients.vanishing_gradients(ctx(probes=sigmoid_deep_probes(3), rec=rec))
    assert finding is not None and finding.severity == "error"
    assert finding.layer == "fc1" and finding.epoch == 1
    assert finding.evidence["reference_layer"] == "head"
    assert finding.evidence["ratio"] == pytest.approx((9.2e-6 / 8) / (0.8 / 4.2), rel=0.3)
    assert finding.evidence["layers_below"] == ["fc1", "fc2", "fc3", "fc4"]
    assert "4 of 8 earlier layers are below 0.001x" in finding.message
    assert finding.patch == {"model.args.activation": "relu", "model.args.batchnorm": True}
    # After training, a one-epoch run counts.
    assert gradients.vanishing_gradients(ctx(probes=sigmoid_deep_probes(1), rec=rec)) is not None


def test_vanishing_ignores_norm_layers_and_raw_norms_work_without_weights() -> None:
    assert gradients.vanishing_gradients(ctx(probes=vgg_bn_probes())) is None
    bare = probe_log(
        2,
        2,
        lambda i, e: {
            "a": {"role": "param", "grad_norm": 1e-7},
            "b": {"role": "param", "grad_norm": 1.0},
        },
    )
    assert gradients.vanishing_gradients(ctx(probes=bare)) is not None


# ------------------------------------------------------------------------------ activations
def test_dead_units_after_a_too_high_rate() -> None:
    # Adam lr=0.1 on a digits MLP (measured): 98% of act1 and ~68% of act2 dead from epoch 1.
    probes = probe_log(
        4,
        4,
        lambda i, e: {
            "fc1": param("Linear", 1.0, 45.0),
            "act1": relu(0.98 if e > 0 else 0.1),
            "fc2": param("Linear", 0.5, 90.0),
            "act2": relu(0.68 * wiggle(i, 0.05)),
            "head": param("Linear", 0.4, 20.0),
        },
    )
    rec = mlp_recipe(train__optimizer__lr=0.1)
    finding = act_rules.dead_units(ctx(probes=probes, rec=rec))
    assert finding is not None and finding.severity == "error"
    assert finding.layer == "act1" and finding.epoch == 1
    assert finding.evidence["dead_frac"] == 0.98
    assert set(finding.evidence["layer_dead_frac"]) == {"act1", "act2"}
    assert "98% of act1's units" in finding.message and "also act2 6" in finding.message
    assert finding.patch == {"train.optimizer.lr": 0.03, "model.args.activation": "leaky_relu"}
    assert finding.patch["model.args.activation"] in ACTIVATIONS
    # Live, one bad epoch is not enough; a moderate share is a warning.
    first = SimpleNamespace(steps=[s for s in probes.steps if s["epoch"] == 1], hists=[])
    assert act_rules.dead_units(ctx(probes=first, final=False)) is None
    moderate = probe_log(2, 3, lambda i, e: {"act1": relu(0.6)})
    assert act_rules.dead_units(ctx(probes=moderate)).severity == "warning"


def test_dead_units_ignores_records_after_the_loss_went_nan() -> None:
    probes = probe_log(
        3,
        3,
        lambda i, e: {"act1": relu(1.0 if e == 3 else 0.1)},
        loss_at=lambda i, e: math.nan if e == 3 else 1.0,
    )
    assert act_rules.dead_units(ctx(probes=probes)) is None


def test_saturated_activations_with_unscaled_inputs() -> None:
    probes = probe_log(
        3,
        3,
        lambda i, e: {
            "fc1": param("Linear", 0.2, 30.0),
            "act1": squash("Sigmoid", 0.72 * wiggle(i, 0.05)),
            "fc2": param("Linear", 0.2, 30.0),
            "act2": squash("Sigmoid", 0.45),
            "head": param("Linear", 0.5, 3.0),
        },
    )
    raw_pixels = mnist_profile(
        scale={
            "min": 0.0,
            "max": 255.0,
            "mean": 33.3,
            "std": 78.6,
            "max_abs_feature_mean": 139.0,
            "feature_std_ratio": 1e4,
        }
    )
    rec = mlp_recipe(model__args__activation="sigmoid")
    finding = act_rules.saturated_activations(ctx(probes=probes, data=raw_pixels, rec=rec))
    assert finding is not None and finding.layer == "act1" and finding.epoch == 1
    assert finding.evidence["sat_frac"] == pytest.approx(0.72, rel=0.06)
    assert "values span [0, 255]" in finding.evidence["inputs_unscaled"]
    assert finding.patch == {"data.standardize": True, "model.args.batchnorm": True}
    # Inputs already fine and batch norm already on: switch the activation instead.
    bn = mlp_recipe(model__args__activation="tanh", model__args__batchnorm=True)
    found = act_rules.saturated_activations(ctx(probes=probes, data=mnist_profile(), rec=bn))
    assert found is not None and found.patch == {"model.args.activation": "relu"}


# ------------------------------------------------------------------------------ data rules
def test_class_imbalance() -> None:
    counts = [900, 880, 45, 910, 870, 905, 890, 860, 899, 902]
    profile = digits_profile(class_counts={"train": counts})
    finding = data_rules.class_imbalance(ctx(data=profile, rec=recipe()))
    assert finding is not None and finding.severity == "warning"
    assert finding.evidence["rarest_class"] == 2 and finding.evidence["largest_class"] == 3
    assert finding.evidence["ratio"] == pytest.approx(910 / 45)
    assert finding.message == "class 2 has 45 training rows, class 3 has 910 (20.2x as many)"
    assert finding.patch == {"train.loss.class_weights": "balanced"}
    bce = recipe(train__loss__name="bce")
    assert data_rules.class_imbalance(ctx(data=profile, rec=bce)).patch == {
        "data.balance": "oversample"
    }
    # Already compensated, or mild: nothing.
    weighted = recipe(train__loss__class_weights="balanced")
    assert data_rules.class_imbalance(ctx(data=profile, rec=weighted)) is None
    mild = digits_profile(class_counts={"train": [500, 120, 400]})
    assert data_rules.class_imbalance(ctx(data=mild, num_classes=3)) is None
    # Judged by harm when the quick model has learnt the data: a rare class recalled as well as
    # the rest ("is it a zero?" on digits, 9:1) is no problem; one recalled far worse is.
    zero_vs_rest = digits_profile(
        num_classes=2,
        class_counts={"train": [1132, 125]},
        label_noise={"abstained": None, "class_recall": [1.0, 0.99]},
    )
    assert data_rules.class_imbalance(ctx(data=zero_vs_rest, num_classes=2)) is None
    overlapping = digits_profile(
        num_classes=2,
        class_counts={"train": [2660, 140]},
        label_noise={"abstained": None, "class_recall": [1.0, 0.48]},
    )
    harm = data_rules.class_imbalance(ctx(data=overlapping, num_classes=2))
    assert harm is not None
    assert harm.evidence["quick_model_recall"] == {"rare": 0.48, "common": 1.0}
    # The worst rare class counts; a quick model that learnt too little leaves it to the ratio.
    several = digits_profile(
        class_counts={"train": counts},
        label_noise={"abstained": None, "class_recall": [0.95] * 2 + [0.6] + [0.95] * 7},
    )
    assert data_rules.class_imbalance(ctx(data=several)) is not None
    abstained = digits_profile(
        num_classes=2,
        class_counts={"train": [1132, 125]},
        label_noise={"abstained": "learnt too little", "class_recall": [1.0, 0.99]},
    )
    assert data_rules.class_imbalance(ctx(data=abstained, num_classes=2)) is not None
    # Next-token targets follow the language's own distribution: never an imbalance finding.
    language_model = digits_profile(
        num_classes=65, class_counts={"train": [0] * 5 + [40] * 60}, per_position_targets=True
    )
    assert data_rules.class_imbalance(ctx(data=language_model, num_classes=65)) is None
    empty = digits_profile(class_counts={"train": [500, 0, 400]})
    missing = data_rules.class_imbalance(ctx(data=empty, num_classes=3))
    assert (
        missing is not None and missing.message == "class 1 has no training rows (class 0 has 500)"
    )


def test_label_noise() -> None:
    noisy = digits_profile(
        label_noise={
            "estimated_fraction": 0.21,
            "flagged": 272,
            "indices": list(range(30)),
            "cv_accuracy": 0.78,
            "method": "confident_learning",
        }
    )
    finding = data_rules.label_noise(ctx(data=noisy, rec=recipe()))
    assert finding is not None and finding.evidence["estimated_fraction"] == 0.21
    assert finding.evidence["example_indices"] == list(range(20))
    assert finding.message == (
        "about 21% of the training labels look wrong (272 of 1,293 rows flagged; the quick "
        "model's cross-validated accuracy is 0.780)"
    )
    assert finding.patch == {"data.drop_noisy": True, "train.loss.label_smoothing": 0.1}
    # A large training set is judged on a sample: the finding says so, and counts within it.
    info = {"estimated_fraction": 0.25, "flagged": 150, "cv_accuracy": 0.7, "rows_examined": 600}
    sampled = data_rules.label_noise(ctx(data=digits_profile(label_noise=info)))
    assert sampled.evidence["rows_examined"] == 600
    assert "(150 of 600 rows flagged; judged on a sample of 600 of the 1,293 rows;" in (
        sampled.message
    )
    # Rows left out for an invalid label are not a sample.
    invalid = digits_profile(label_noise=info, invalid_labels={"train": 693})
    assert "sample" not in data_rules.label_noise(ctx(data=invalid)).message
    borderline = digits_profile(label_noise={"estimated_fraction": 0.10})
    assert data_rules.label_noise(ctx(data=borderline)) is None
    assert data_rules.label_noise(ctx(data=digits_profile(label_noise=None))) is None
    # Still noisy after the recipe's own fix (the profile is taken after it): only the rest.
    dropped = recipe(data__drop_noisy=True)
    assert data_rules.label_noise(ctx(data=noisy, rec=dropped)).patch == {
        "train.loss.label_smoothing": 0.1
    }


def test_train_test_leakage() -> None:
    leaky = digits_profile(
        overlap={
            "val": {"exact": 2, "near": 3, "fraction": 3 / 144},  # near includes exact
            "test": {"exact": 70, "near": 78, "fraction": 78 / 360},
        }
    )
    finding = data_rules.train_test_leakage(ctx(data=leaky, rec=recipe()))
    assert finding is not None and finding.severity == "error"
    assert finding.evidence["split"] == "test"
    assert finding.evidence["splits"]["test"]["rows"] == 78
    assert "val" not in finding.evidence["splits"]  # 3 rows, 2% of val: under both bars
    assert finding.message == (
        "78 of 360 test rows (21.7%) also appear in the training data (70 as exact copies)"
    )
    assert finding.patch == {"data.drop_leaked": True}  # near copies too, not only exact ones
    assert (
        data_rules.train_test_leakage(ctx(data=leaky, rec=recipe(data__drop_leaked=True))).patch
        == {}
    )
    exact_only = digits_profile(overlap={"test": {"exact": 5, "near": 0}})  # 1.4% exact
    assert data_rules.train_test_leakage(ctx(data=exact_only)) is not None


def test_duplicate_samples() -> None:
    dup = digits_profile(duplicates={"rows": 150, "fraction": 150 / 1293, "conflicting_labels": 7})
    finding = data_rules.duplicate_samples(ctx(data=dup, rec=recipe()))
    assert finding is not None and finding.evidence["rows"] == 150
    assert finding.message == (
        "150 of 1,293 training rows (11.6%) repeat an earlier row; 7 of them with a different label"
    )
    assert finding.patch == {"data.drop_duplicates": True}
    few = digits_profile(duplicates={"rows": 20, "conflicting_labels": 0})  # 1.5%
    assert data_rules.duplicate_samples(ctx(data=few)) is None


def test_missing_values_is_fatal() -> None:
    profile = tabular_profile(
        nonfinite={
            "train": {"nan": 120, "inf": 3, "rows": 110, "columns": [2, 5]},
            "test": {"nan": 0, "inf": 0, "rows": 0, "columns": []},
        }
    )
    finding = data_rules.missing_values(ctx(data=profile, rec=recipe(), num_classes=2))
    assert finding is not None and finding.severity == "fatal"
    assert finding.message == (
        "inputs contain NaN or infinite values (train: 120 NaN and 3 inf in 110 rows, 2 columns)"
    )
    assert list(finding.evidence["splits"]) == ["train"]
    assert finding.patch == {"data.impute": "median"}
    imputed = recipe(data__impute="mean")  # yet NaN remain: report them, nothing left to patch
    assert data_rules.missing_values(ctx(data=profile, rec=imputed, num_classes=2)).patch == {}


def test_unscaled_inputs() -> None:
    raw = digits_profile(
        scale={
            "min": 0.0,
            "max": 16.0,
            "mean": 4.88,
            "std": 6.02,
            "max_abs_feature_mean": 13.0,
            "feature_std_ratio": 60.0,
        }
    )
    finding = data_rules.unscaled_inputs(ctx(data=raw, rec=recipe()))
    assert finding is not None
    assert finding.evidence["reason"] == "values span [0, 16]; one feature averages 13"
    assert finding.patch == {"data.standardize": True}
    tabular = tabular_profile(
        scale={
            "min": 0.0,
            "max": 4254.0,
            "mean": 61.9,
            "std": 228.3,
            "max_abs_feature_mean": 654.9,
            "feature_std_ratio": 1.8e5,
        }
    )
    assert data_rules.unscaled_inputs(ctx(data=tabular, num_classes=2)) is not None
    spread = tabular_profile(
        scale={
            "min": -2.0,
            "max": 3.0,
            "mean": 0.1,
            "std": 0.6,
            "max_abs_feature_mean": 1.0,
            "feature_std_ratio": 500.0,
            "feature_range_ratio": 500.0,
        }
    )
    found = data_rules.unscaled_inputs(ctx(data=spread, num_classes=2))
    assert found is not None and found.evidence["reason"] == "feature ranges differ 500-fold"
    # Flattened 8x8 digits in [0, 1] as a table: near-empty border columns make the stds differ
    # 277-fold, but every column spans a sixteenth or more of the same [0, 1] range.
    bounded = tabular_profile(
        scale={
            "min": 0.0,
            "max": 1.0,
            "mean": 0.3,
            "std": 0.38,
            "max_abs_feature_mean": 0.8,
            "feature_std_ratio": 277.0,
            "feature_range_ratio": 16.0,
        }
    )
    assert data_rules.unscaled_inputs(ctx(data=bounded, num_classes=10)) is None
    # Within [-1, 1] even a rare tf-idf term's small range is no unit problem.
    tfidf = tabular_profile(scale={**bounded["scale"], "feature_range_ratio": 300.0})
    assert data_rules.unscaled_inputs(ctx(data=tfidf, num_classes=10)) is None
    tiny = digits_profile(
        scale={
            "min": 0.0,
            "max": 0.0039,
            "mean": 5e-4,
            "std": 1e-3,
            "max_abs_feature_mean": 2e-3,
            "feature_std_ratio": 60.0,
        }
    )
    assert data_rules.unscaled_inputs(ctx(data=tiny)).evidence["reason"] == (
        "all values lie within ±0.0039"
    )
    text = tabular_profile(modality="text", scale={"min": 0, "max": 20000, "mean": 900, "std": 2e3})
    assert data_rules.unscaled_inputs(ctx(data=text, num_classes=2)) is None
    standardized = recipe(data__standardize=True)
    assert data_rules.unscaled_inputs(ctx(data=raw, rec=standardized)).patch == {}


def test_constant_feature_on_tables_only() -> None:
    table = tabular_profile(constant_features={"count": 2, "fraction": 2 / 30, "indices": [4, 17]})
    finding = data_rules.constant_feature(ctx(data=table, rec=mlp_recipe(), num_classes=2))
    assert finding is not None and finding.severity == "info"
    assert (
        finding.message
        == "2 of 30 input features (7%) never change in the training data (columns 4, 17)"
    )
    assert finding.patch == {"data.drop_constant": True}
    # MNIST's 67 blank border pixels are not a finding.
    assert data_rules.constant_feature(ctx(data=mnist_profile())) is None


def test_data_too_small() -> None:
    tiny_images = digits_profile(sizes={"train": 60, "val": 20, "test": 20})
    finding = data_rules.data_too_small(ctx(data=tiny_images, rec=recipe()))
    assert finding is not None
    assert finding.message == "only 60 training rows; 6 rows per class"
    assert finding.patch == {
        "data.augment": {"random_affine": {"degrees": 10, "translate": [0.1, 0.1]}}
    }
    huge_model = tabular_profile(num_params=4_400_000)
    found = data_rules.data_too_small(ctx(data=huge_model, rec=mlp_recipe(), num_classes=2))
    assert found is not None
    assert (
        found.message == "364 rows for a model with 4,400,000 trainable parameters (12,088 per row)"
    )
    assert found.evidence["params_per_row"] == pytest.approx(4_400_000 / 364)
    assert found.patch == {
        "train.optimizer.weight_decay": 5e-4,
        "model.args.dropout": 0.2,
        "train.early_stopping": {"monitor": "loss", "patience": 5},
    }
    pretrained = mlp_recipe(model__args__pretrained=True)
    assert data_rules.data_too_small(ctx(data=huge_model, rec=pretrained, num_classes=2)) is None
    colour = digits_profile(input_shape=[3, 32, 32], sizes={"train": 80})
    assert data_rules.data_too_small(ctx(data=colour, rec=recipe())).patch == {
        "data.augment": {"random_crop": {"size": 32, "padding": 4}, "horizontal_flip": 0.5}
    }


# ------------------------------------------------------------------------------ real profiles
@pytest.mark.parametrize(
    ("faults", "expected"),
    [
        ({}, []),
        ({"label_noise": 0.3}, ["label_noise"]),
        ({"duplicates": 0.3, "leakage": 0.2}, ["train_test_leakage", "duplicate_samples"]),
        ({"imbalance": 0.05, "scale": 100.0}, ["class_imbalance", "unscaled_inputs"]),
        ({"missing": 0.01}, ["missing_values"]),
        ({"train_size": 60}, ["data_too_small"]),
    ],
)
def test_data_rules_on_profiles_of_real_faulty_data(faults: dict, expected: list[str]) -> None:
    """The rules read what `profile_data` really writes: digits with known faults injected."""
    from layerwise.data import load_dataset
    from layerwise.diagnose.data_checks import profile_data

    bundle = load_dataset("faulty", dataset="digits", **faults)
    profile = profile_data(bundle, num_params=21_690, label_noise="label_noise" in faults)
    c = ctx(data=profile, num_classes=bundle.num_classes, task=bundle.task, rec=recipe())
    assert [f.code for f in run_rules(c, "data")] == expected


# ------------------------------------------------------------------------------ patches
def broken_contexts() -> dict[str, RuleContext]:
    """One broken setup per code, each with a recipe, for the patch checks below."""
    mlp = mlp_recipe()
    return {
        "overfitting": ctx(overfit_history(), rec=mlp),
        "underfitting": ctx(history([2.1, 1.9, 1.8, 1.75, 1.72]), rec=mlp),
        "exploding_gradients": ctx(
            probes=probe_log(2, 3, lambda i, e: {}, grad_at=lambda i, e: 1.0 if i < 3 else 1e4),
            rec=mlp,
        ),
        "vanishing_gradients": ctx(
            probes=sigmoid_deep_probes(2), rec=mlp_recipe(model__args__activation="sigmoid")
        ),
        "dead_units": ctx(probes=probe_log(2, 3, lambda i, e: {"a": relu(0.95)}), rec=mlp),
        "saturated_activations": ctx(
            probes=probe_log(2, 3, lambda i, e: {"a": squash("Tanh", 0.9)}),
            rec=mlp_recipe(model__args__activation="tanh"),
        ),
        "loss_nan": ctx(history([2.0, math.nan]), rec=mlp),
        "lr_too_high": ctx(history([18.8, 2.7, 2.4]), rec=mlp),
        "lr_too_low": ctx(history([2.58, 2.575, 2.57, 2.565]), rec=mlp),
        "loss_plateau": ctx(history([2.0, 1.4, 1.25, 1.24, 1.245, 1.242, 1.243]), rec=mlp),
        "oscillating_loss": ctx(history([1.0, 0.8, 0.7, 0.9, 0.65, 0.85, 0.6, 0.82]), rec=mlp),
        "class_imbalance": ctx(
            data=digits_profile(class_counts={"train": [900, 30, 900]}), rec=mlp, num_classes=3
        ),
        "label_noise": ctx(data=digits_profile(label_noise={"estimated_fraction": 0.3}), rec=mlp),
        "train_test_leakage": ctx(
            data=digits_profile(overlap={"val": {"exact": 30, "near": 0}}), rec=mlp
        ),
        "duplicate_samples": ctx(data=digits_profile(duplicates={"rows": 300}), rec=mlp),
        "missing_values": ctx(
            data=digits_profile(nonfinite={"train": {"nan": 1, "inf": 0, "rows": 1}}), rec=mlp
        ),
        "unscaled_inputs": ctx(data=digits_profile(scale={"mean": 100.0, "std": 50.0}), rec=mlp),
        "constant_feature": ctx(
            data=tabular_profile(constant_features={"count": 1, "fraction": 1 / 30}),
            rec=mlp,
            num_classes=2,
        ),
        "data_too_small": ctx(data=digits_profile(sizes={"train": 50}), rec=mlp),
        **token_broken_contexts(),
        **gan_broken_contexts(),
    }


def token_broken_contexts() -> dict[str, RuleContext]:
    """IMDB-like token figures: most tokens <unk> (min_freq 500), most reviews cut at 20."""
    rec = mlp_recipe(data={"name": "imdb", "args": {"min_freq": 500, "max_length": 20}})

    def stream(unknown: float, cut_rows: float, cut_tokens: float) -> dict[str, Any]:
        split = {
            "rows": 2000,
            "tokens": 540_000,
            "unknown_rate": unknown,
            "type_coverage": 0.01,
            "length": {"median": 200.0, "p90": 520.0},
            "max_length": 20,
            "truncation_share": cut_rows,
            "tokens_cut_share": cut_tokens,
        }
        return {"text": {"vocab_size": 120, "min_freq": 500, "splits": {"train": split}}}

    return {
        "high_unknown_rate": ctx(data=digits_profile(tokens=stream(0.6, 0.0, 0.0)), rec=rec),
        "heavy_truncation": ctx(data=digits_profile(tokens=stream(0.0, 1.0, 0.92)), rec=rec),
    }


def gan_broken_contexts() -> dict[str, RuleContext]:
    """GAN logs (see layerwise.tasks.gan) of a collapsed, an overpowered and a diverging game."""
    gan = mlp_recipe(model={"name": "cgan", "args": {"spectral_norm": False}, "init": "default"})

    def logs(d, g, fid, spread):
        keys = ("d_loss", "g_loss", "fid", "gen_spread_ratio", "gen_class_entropy_ratio")
        rows = zip(d, g, fid, spread, [0.9] * len(d), strict=True)
        return [{"epoch": e, **dict(zip(keys, row, strict=True))} for e, row in enumerate(rows, 1)]

    flat = [0.6] * 6
    return {
        "mode_collapse": ctx(
            logs(flat, [2.0] * 6, [90] * 6, [0.6, 0.3, 0.2, 0.1, 0.1, 0.1]), rec=gan, task="gan"
        ),
        "discriminator_overpowering": ctx(
            logs([0.4, 0.1, 0.03, 0.01, 0.01, 0.0], [2, 3, 4, 5, 6, 7], [90] * 6, [0.6] * 6),
            rec=gan,
            task="gan",
        ),
        "gan_divergence": ctx(
            logs(flat, [1.0, 4.0, 0.8, 5.0, 0.7, 4.5], [200, 210, 190, 230, 205, 220], [0.6] * 6),
            rec=gan,
            task="gan",
        ),
    }


def test_every_code_has_a_broken_setup_whose_patch_is_valid() -> None:
    contexts = broken_contexts()
    assert set(contexts) == set(CODES)
    for code, c in contexts.items():
        finding = RULES[code](c)
        assert isinstance(finding, Finding), code
        assert finding.code == code and finding.message and finding.causes and finding.remedies
        assert finding.patch, f"{code} has no patch"
        assert set(finding.patch) <= ALLOWED_PATCH_KEYS, (code, finding.patch)
        if finding.epoch is not None:
            assert finding.epoch >= 1
        patched = apply_patch(c.recipe, finding.patch)
        for key in NEW_DATA_KEYS:
            patched["data"].pop(key, None)
        validate_recipe(patched, source=code)  # every other key exists in the schema
        args = dict(patched["model"]["args"])
        create_model(patched["model"]["name"], num_classes=10, **args)  # the family accepts them
        # Findings are plain data: a diagnosis.json round trip keeps them equal.
        assert Finding.from_dict(finding.to_dict()) == finding


def test_no_recipe_means_no_patch() -> None:
    for code, c in broken_contexts().items():
        finding = RULES[code](dataclasses.replace(c, recipe=None))
        assert finding is not None and finding.patch == {}, code


def _built(name: str, args: dict[str, Any]) -> dict[str, Any]:
    """What a family really builds with `args`: hidden widths, dropout, batch norm, activation."""
    import torch

    model = create_model(name, num_classes=10, input_shape=(1, 8, 8), **args)
    layers = list(model.modules())
    dropouts = {m.p for m in layers if isinstance(m, torch.nn.Dropout)}
    acts = {type(m).__name__ for m in layers if type(m).__name__ in ("ReLU", "GELU", "Tanh")}
    return {
        "hidden": [m.out_features for m in layers if isinstance(m, torch.nn.Linear)][:-1],
        "dropout": dropouts.pop() if dropouts else 0.0,
        "batchnorm": any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in layers),
        "activation": acts.pop().lower() if len(acts) == 1 else acts,
    }


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("mlp", {}),
        ("mlp", {"hidden": [32], "dropout": 0.3}),
        ("cnn", {}),
        ("cnn", {"variant": "vgg"}),
        ("cnn", {"variant": "VGG", "dropout": 0.4, "hidden": [16]}),
        ("cnn", {"variant": "lenet", "batchnorm": True}),
    ],
)
def test_patches_see_the_model_defaults_the_family_really_builds(name: str, args: dict) -> None:
    """The doctor reads a family's defaults from the family; if they drift, this fails."""
    from layerwise.diagnose.rules import fixes as fx

    rec = mlp_recipe()
    rec["model"] = {"name": name, "args": dict(args), "init": "default"}
    c = ctx(rec=rec)
    built = _built(name, args)
    for key in ("hidden", "dropout", "batchnorm", "activation"):
        value = fx.model_arg(c, key)
        value = list(value) if key == "hidden" else value
        assert value == built[key], (name, args, key)
    assert fx.he_init(c) == {}  # every built-in family uses He init by default
    wider = fx.wider(c)
    assert wider == (
        {"model.args.hidden": [max(4 * w, 64) for w in built["hidden"]]} if built["hidden"] else {}
    )


def test_which_families_take_which_model_args_is_read_from_the_registry() -> None:
    from layerwise.diagnose.rules import fixes as fx
    from layerwise.models import MODELS

    patched = ("dropout", "batchnorm", "activation", "hidden")
    takers = {n for n in MODELS.names() if set(patched) <= set(fx.family_parameters(n))}
    assert takers == {"mlp", "tabular_mlp", "cnn"}  # as docs/doctor.md says under "Patches"
    resnet = recipe(model={"name": "resnet20", "args": {}, "init": "default"})
    c = ctx(rec=resnet)
    assert fx.more_dropout(c) == fx.batchnorm(c) == fx.wider(c) == {}
    assert fx.activation(c, "leaky_relu") == {}
    assert fx.he_init(c) == {}  # its `init` defaults to he: nothing to patch
    unknown = ctx(rec=recipe(model={"name": "my_net", "args": {}, "init": "default"}))
    assert fx.model_arg(unknown, "dropout") is None and fx.more_dropout(unknown) == {}
    assert fx.he_init(unknown) == {"model.init": "he"}


def test_patches_only_hold_what_changes() -> None:
    clipped = mlp_recipe(train__grad_clip=0.5)
    c = ctx(history([2.0, math.nan]), rec=clipped)
    assert curves.loss_nan(c).patch == {"train.optimizer.lr": 2e-4}  # clip 0.5 stays
    stopped = mlp_recipe(train__early_stopping={"monitor": "val_loss", "patience": 3})
    patch = curves.overfitting(ctx(overfit_history(), rec=stopped)).patch
    assert "train.early_stopping" not in patch


# ------------------------------------------------------------------------------ docs
def test_doctor_docs_have_a_section_per_code_with_its_thresholds() -> None:
    text = DOCTOR_MD.read_text(encoding="utf-8")
    headings = re.findall(r"^## (\S+)\s*$", text, flags=re.MULTILINE)
    assert [h for h in headings if h in CODES] == list(CODES)
    for name in ("layerwise doctor", "--auto-fix", "layerwise lr-find"):
        assert name in text
    # Every threshold constant is named in the docs, so they cannot drift apart silently.
    for module in (curves, gradients, act_rules, data_rules):
        for constant in (n for n in vars(module) if n.isupper() and n != "NOT_A_WEIGHT_LAYER"):
            if isinstance(getattr(module, constant), int | float):
                assert f"`{constant}`" in text, f"{module.__name__}.{constant} is not documented"


# ------------------------------------------------------------------- the wider field set (issue 9)
def test_a_model_that_fits_train_better_than_val_is_not_underfitting() -> None:
    # An LSTM over 1,600 synthetic token sequences, 8 epochs (measured): the train loss is still
    # half of ln 2 and falling, but val stopped improving at ~0.6: it memorises, it has capacity.
    gap = history(
        [0.700, 0.685, 0.627, 0.566, 0.487, 0.440, 0.412, 0.365],
        val_loss=[0.691, 0.688, 0.674, 0.632, 0.639, 0.667, 0.661, 0.701],
    )
    assert curves.underfitting(ctx(gap, num_classes=2)) is None
    # Another seed: val only 25% above train, but it bottomed out at epoch 4 while train fell.
    growing = history(
        [0.695, 0.686, 0.627, 0.559, 0.537, 0.498, 0.490, 0.435],
        val_loss=[0.694, 0.690, 0.632, 0.572, 0.585, 0.613, 0.611, 0.611],
    )
    assert curves.underfitting(ctx(growing, num_classes=2)) is None
    # Too small a model: train and val stay together above half the chance level.
    small = history(
        [2.2, 1.9, 1.7, 1.6, 1.55, 1.52, 1.5, 1.49],
        val_loss=[2.1, 1.85, 1.7, 1.62, 1.57, 1.55, 1.53, 1.52],
    )
    finding = curves.underfitting(ctx(small))
    assert finding is not None and finding.evidence["level"] == pytest.approx(1.49 / LN10)


def test_a_spike_won_back_on_a_converged_model_is_neither_oscillation_nor_a_high_rate() -> None:
    # An MLP on 2-D circles, Adam at 1e-2 (measured): 99.9% accuracy by epoch 6, one epoch's
    # spike 0.0038 -> 0.0436 (6% of the way back to ln 2), won back two epochs later.
    loss = [0.3461, 0.021, 0.01, 0.0111, 0.0083, 0.0038, 0.0057, 0.0042, 0.0436, 0.0235, 0.0043,
            0.0021, 0.0018, 0.0028, 0.0033, 0.002, 0.0034, 0.0038, 0.004, 0.0105, 0.0101,
            0.0025, 0.0048, 0.0039, 0.006]  # fmt: skip
    circles = ctx(history(loss), num_classes=2)
    assert curves.oscillating_loss(circles) is None
    assert curves.lr_too_high(circles) is None
    # A LeNet under Adam at 0.02 on digits (measured): the loss rises late and stays up.
    lenet = [1.2289, 0.3871, 0.2033, 0.1874, 0.1738, 0.1196, 0.2022, 0.1538, 0.1646, 0.0949,
             0.1359, 0.1734, 0.0914, 0.0363, 0.0961, 0.0868, 0.0946, 0.0733, 0.1837,
             0.191]  # fmt: skip
    finding = curves.lr_too_high(ctx(history(lenet)))
    assert finding is not None and finding.evidence["best_loss"] == 0.0363
    assert finding.evidence["risen_loss"] == 0.1837


def test_a_regressor_as_good_as_a_least_squares_line_is_not_on_a_plateau() -> None:
    # A linear model on diabetes (measured): flat at 0.51 of the targets' variance, where the
    # least-squares line through the same rows has an error of 0.49.
    flat = history([0.797, 0.532, 0.520, 0.523, 0.513, 0.519, 0.513, 0.520, 0.516, 0.513])
    data = {"task": "regression", "target_variance": 1.0, "linear_fit_mse": 0.49}
    assert curves.loss_plateau(ctx(flat, data=data, task="regression", num_classes=1)) is None
    # The same curve where a line explains 80% of the variance: the network is stuck.
    explained = {**data, "linear_fit_mse": 0.2}
    finding = curves.loss_plateau(ctx(flat, data=explained, task="regression", num_classes=1))
    assert finding is not None and finding.evidence["linear_shortfall"] == pytest.approx(0.313)


def test_every_finding_says_how_sure_and_what_decided_it() -> None:
    """A finding from a threshold names the measurement, its value and the threshold; only
    facts (a NaN loss, missing values, a constant column) have nothing to be unsure about."""
    from layerwise.diagnose.rules import DECIDERS

    facts = {"loss_nan", "missing_values", "constant_feature"}
    assert set(RULES) - set(DECIDERS) == facts
    # A loss that swings from 0.1 to 0.6 (+500%, where +10% counts as a move): strong.
    swings = history([2.3, 0.5, 0.2, 0.9, 0.3, 0.1, 0.6, 0.15, 0.05, 0.4, 0.1])
    found = RULES["oscillating_loss"](ctx(swings))
    assert found.confidence == "strong"
    assert found.decided_by == "largest rise in the window 5 (>= 0.1)"
    # A train loss at 55% of chance, train and val alike: possible (just past 50%).
    close = history([0.70, 0.60, 0.50, 0.45, 0.42, 0.40, 0.39, 0.38], val_loss=[0.40] * 8)
    found = RULES["underfitting"](ctx(close, num_classes=2))
    assert found.confidence == "possible"
    assert found.decided_by == "train loss as a share of chance 0.548 (>= 0.5)"


# ------------------------------------------- overfitting: a rise must stand out of the val noise
# Measured (issue 9, field seeds 101): an MLP on 2,500 noisy 2-D circles at 99.5% val accuracy,
# Adam at 1e-2, 25 epochs; its val loss jumps between epochs and "rises" 0.010 -> 0.021.
CIRCLES_LOSS = [0.33, 0.019, 0.011, 0.034, 0.0089, 0.0093, 0.0101, 0.0052, 0.0049, 0.0187]
CIRCLES_LOSS += [0.0222, 0.0074, 0.0059, 0.0037, 0.0057, 0.0106, 0.0107, 0.0244, 0.0118, 0.0028]
CIRCLES_LOSS += [0.0037, 0.0125, 0.0093, 0.0092, 0.0127]
CIRCLES_VAL = [0.0315, 0.0127, 0.0075, 0.0148, 0.0102, 0.0051, 0.0139, 0.0204, 0.0096, 0.0401]
CIRCLES_VAL += [0.021, 0.0149, 0.0105, 0.0115, 0.0214, 0.0214, 0.0075, 0.0158, 0.0104, 0.0134]
CIRCLES_VAL += [0.0127, 0.0273, 0.0099, 0.0764, 0.0214]


def test_a_val_loss_rise_within_its_epoch_to_epoch_noise_is_not_overfitting() -> None:
    noisy = curves.overfitting(ctx(history(CIRCLES_LOSS, CIRCLES_VAL), num_classes=2))
    assert noisy is None
    # The same low and the same end reached by a steady climb is a trend, and is named.
    low, end = 0.0102, 0.0214
    steady = CIRCLES_VAL[:5] + [low + (end - low) * k / 19 for k in range(20)]
    found = curves.overfitting(ctx(history(CIRCLES_LOSS, steady), num_classes=2))
    assert found is not None and found.evidence["rests_on"] == ["val_loss_rise"]
    assert found.evidence["epoch_spread"] < (end - low) / curves.OVERFIT_NOISE_Z


def iris_like(val_rows: int, val_acc: float) -> RuleContext:
    """Iris with an MLP (Adam 1e-2, 60 epochs; measured): the val loss climbs 0.12 -> 0.16 from
    epoch 33 while the val accuracy stays 93.3% (the same 3 of 45 rows wrong throughout)."""
    loss = [0.9 * 0.93**i + 0.02 for i in range(60)]
    val = [max(0.75 * 0.88**i, 0.12) for i in range(33)]
    val += [0.12 + 0.04 * k / 26 + 0.004 * (-1) ** k for k in range(27)]
    hist = history(loss, val, acc=[0.99] * 60, val_acc=[val_acc] * 60, lr=1e-2)
    return ctx(hist, data=tabular_profile(sizes={"train": 105, "val": val_rows}), num_classes=3)


def test_a_val_loss_rise_carried_by_a_few_wrong_rows_is_not_overfitting() -> None:
    # 45 rows at 93.3%: the rise (0.04) is 0.45 standard errors of the val loss.
    assert curves.overfitting(iris_like(45, 14 / 15)) is None
    # The same curves on 4,500 rows (300 wrong) measure the loss 10x more precisely: named.
    found = curves.overfitting(iris_like(4500, 14 / 15))
    assert found is not None
    assert found.evidence["val_error_rate"] == pytest.approx(1 / 15)
    assert found.evidence["sampling_error"] == pytest.approx(0.16 * math.sqrt(14) / 67.08, rel=0.1)
    # No val errors at all: nothing carries the rise.
    assert curves.overfitting(iris_like(4500, 1.0)) is None


# ------------------------------------------- vanishing gradients: towers are judged one by one
def actor_critic_probes(actor_first: float = 1.0e-3) -> SimpleNamespace:
    """PPO's actor and critic on CartPole (relative gradients measured on the bundled recipe,
    epoch medians): the policy's gradient is ~1e-3 of the value head's by design."""
    grads = {
        "actor.fc1": actor_first,
        "actor.fc2": 2.2e-3,
        "actor.head": 0.64,
        "critic.fc1": 5.2e-2,
        "critic.fc2": 0.59,
        "critic.head": 4.5,
    }

    def layers(i: int, e: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, g in grads.items():
            out[name] = param("Linear", g * wiggle(i), 1.0)
            if not name.endswith("head"):
                out[name.replace("fc", "act")] = squash("Tanh", 0.0)
        return out

    return probe_log(3, 3, layers, loss_at=lambda i, e: 3.0)


def test_vanishing_gradients_judges_parallel_towers_each_against_its_own_head() -> None:
    probes = actor_critic_probes()
    assert gradients.parallel_towers(ctx(probes=probes), list(probes.steps[0]["layers"]))
    assert gradients.vanishing_gradients(ctx(probes=probes, task="rl")) is None
    # The same numbers read as one chain (no towers in the names) would be "vanishing".
    chain = SimpleNamespace(
        steps=[
            {**r, "layers": {n.replace(".", "_"): s for n, s in r["layers"].items()}}
            for r in probes.steps
        ],
        hists=[],
    )
    assert gradients.vanishing_gradients(ctx(probes=chain, task="rl")) is not None
    # A tower whose own first layer gets under 1e-3 of its own head's gradient still vanishes.
    found = gradients.vanishing_gradients(ctx(probes=actor_critic_probes(4e-4), task="rl"))
    assert found is not None and found.layer == "actor.fc1"
    assert found.evidence["reference_layer"] == "actor.head"
    assert found.evidence["towers"] == ["actor", "critic"]


def test_underfitting_is_judged_by_the_final_model_not_the_epochs_mean() -> None:
    """A BiGRU on sine sequences, 10 epochs (measured, field seed 102): the last epoch's mean
    train loss is 51% of ln 3 while the model it ends with scores 0.43 (39%) on val rows."""
    loss = [1.101, 1.097, 1.039, 0.854, 1.057, 1.081, 1.048, 0.984, 0.816, 0.562]
    val = [1.097, 1.092, 0.928, 0.891, 1.111, 1.066, 1.023, 0.914, 0.69, 0.432]
    assert curves.underfitting(ctx(history(loss, val), num_classes=3)) is None
    # The same train curve with a val loss just as high is a model that cannot fit: named.
    stuck = [*val[:-1], 0.6]
    assert curves.underfitting(ctx(history(loss, stuck), num_classes=3)) is not None


def test_a_rise_on_few_val_rows_counts_while_the_model_memorises_its_training_rows() -> None:
    """recipes/broken/overfitting.yaml (measured): 3 of 144 val rows wrong throughout, val loss
    0.089 -> 0.126 (0.5 standard errors) while the train loss falls 0.015 -> 2e-5."""
    val = [0.159, 0.129, 0.089, 0.107, 0.084] + [0.089 + 0.037 * k / 24 for k in range(25)]
    loss = [0.53, 0.085, 0.039, 0.046, 0.015] + [0.015 * 0.77**k for k in range(25)]
    hist = history(loss, val, acc=[1.0] * 30, val_acc=[0.979] * 30, lr=1e-3)
    data = digits_profile(sizes={"train": 1293, "val": 144, "test": 360})
    found = curves.overfitting(ctx(hist, data=data))
    assert found is not None and "sampling_error" not in found.evidence
    # The same val curve while the train loss only halves: a few rows, not named.
    slow = [*loss[:5], *(0.015 * 0.97**k for k in range(25))]
    assert curves.overfitting(ctx(history(slow, val, val_acc=[0.979] * 30), data=data)) is None


def fpn_detector_probes(fpn_level: float = 2.1e-4, stem: float = 0.05) -> SimpleNamespace:
    """FCOS on MNIST scenes (`recipes/detect_mnist_scenes.yaml`): every digit is assigned to the
    stride-8 level, so the stride-16 output conv learns only from easy background cells and its
    relative gradient is ~2e-4 of the head's (measured), while the backbone learns normally."""
    grads = {
        "backbone.body.stem": stem,
        "backbone.body.stage1": 0.04,
        "backbone.body.stage2": 0.03,
        "backbone.body.stage3": 0.03,
        "backbone.fpn.inner_blocks.0": 0.05,
        "backbone.fpn.inner_blocks.1": 0.01,
        "backbone.fpn.layer_blocks.0": 0.2,
        "backbone.fpn.layer_blocks.1": fpn_level,
        "head.classification_head.conv": 0.3,
        "head.classification_head.cls_logits": 0.5,
        "head.regression_head.bbox_ctrness": 1.0,
    }

    def layers(i: int, e: int) -> dict[str, Any]:
        return {name: param("Conv2d", g * wiggle(i), 1.0) for name, g in grads.items()}

    return probe_log(3, 3, layers, loss_at=lambda i, e: 1.0 / e)


def test_a_small_gradient_in_the_middle_is_not_vanishing_when_the_input_end_learns() -> None:
    """Vanishing with depth is smallest at the input end, where the gradient arrives last; an
    FPN level no target reaches has a tiny gradient while the stem before it learns normally."""
    assert gradients.vanishing_gradients(ctx(probes=fpn_detector_probes())) is None
    # The stem itself starved as well: that is the gradient dying on its way back.
    found = gradients.vanishing_gradients(ctx(probes=fpn_detector_probes(stem=1e-4)))
    assert found is not None and found.layer == "backbone.body.stem"
    assert found.evidence["reference_layer"] == "head.regression_head.bbox_ctrness"
    assert "backbone.fpn.layer_blocks.1" in found.evidence["layers_below"]


def test_wider_scales_a_single_hidden_width() -> None:
    """`lstm_lm` takes one `hidden` width, not a list: an underfitting finding on a language model
    crashed the run's end with "'int' object is not iterable" while building this patch."""
    from layerwise.diagnose.rules import fixes as fx

    lm = recipe(model={"name": "lstm_lm", "args": {"hidden": 32}, "init": "default"})
    assert fx.wider(ctx(rec=lm)) == {"model.args.hidden": 128}
    wide = recipe(model={"name": "lstm_lm", "args": {"hidden": 256}, "init": "default"})
    assert fx.wider(ctx(rec=wide)) == {"model.args.hidden": 1024}
