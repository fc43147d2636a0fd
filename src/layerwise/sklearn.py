"""scikit-learn estimators backed by a layerwise MLP and the Trainer.

`LayerwiseClassifier` and `LayerwiseRegressor` follow scikit-learn's contract, so they drop into
`Pipeline`, `GridSearchCV`, `cross_val_score` and `clone`: the constructor only stores its
arguments, `fit` learns (attributes ending in `_`), inputs are checked by scikit-learn's own
validation (so NaN, sparse or wrongly shaped inputs fail as they would for any estimator), and
`fit` is reproducible by `seed` without touching the caller's global random state.

Both pass `sklearn.utils.estimator_checks.check_estimator` (see `tests/test_sklearn.py`).

Example:
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from layerwise.sklearn import LayerwiseClassifier
    >>> model = make_pipeline(StandardScaler(), LayerwiseClassifier(hidden=(32,), epochs=30))
    >>> model.fit(x_train, y_train).score(x_test, y_test)  # doctest: +SKIP
    0.97
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from layerwise.errors import DataError
from layerwise.models import create_model
from layerwise.train import EarlyStopping, Trainer
from layerwise.train.device import rng_state, set_rng_state


class EstimatorInputError(DataError, ValueError):
    """Data a scikit-learn estimator cannot learn from. A `ValueError` too, as scikit-learn's
    contract (and its checks) expect of bad input."""


class _LayerwiseMLP(BaseEstimator):
    """What the classifier and the regressor share: the parameters, the MLP and the fit.

    Args:
        hidden: widths of the hidden layers.
        activation: an activation name (`relu`, `gelu`, `tanh`, …).
        dropout: dropout after each hidden activation (0 disables it).
        epochs: passes over the training rows.
        batch_size: rows per step (at most the number of rows).
        lr: the optimizer's learning rate.
        optimizer: a registered optimizer name (`adam`, `adamw`, `sgd`, `rmsprop`).
        weight_decay: L2 penalty through the optimizer.
        seed: fixes the initial weights and the shuffle order; equal seeds, equal models.
        threads: CPU threads while fitting (1 suits small tables and parallel grid searches;
            `auto` lets the Trainer choose).
        verbose: print one line per epoch.
        early_stopping: hold out `validation_fraction` of the rows (stratified for classes,
            fixed by `seed`), stop when their loss has not improved for `patience` epochs and
            keep the best epoch's weights.
        validation_fraction, patience: see `early_stopping`.
    """

    _loss = "mse"

    def __init__(
        self,
        hidden: Sequence[int] = (64, 32),
        activation: str = "relu",
        dropout: float = 0.0,
        epochs: int = 100,
        batch_size: int = 32,
        lr: float = 1e-3,
        optimizer: str = "adam",
        weight_decay: float = 0.0,
        seed: int = 0,
        threads: int | str = 1,
        verbose: bool = False,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        patience: int = 10,
    ) -> None:
        self.hidden = hidden
        self.activation = activation
        self.dropout = dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.seed = seed
        self.threads = threads
        self.verbose = verbose
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.patience = patience

    def _fit_network(self, x: np.ndarray, target: torch.Tensor, outputs: int) -> None:
        """Train a fresh MLP with `outputs` units on (x, target); the global RNGs are restored
        afterwards, so fitting does not change what the caller's random numbers will be."""
        train, val, callbacks = (_as_tensor(x), target), None, []
        if self.early_stopping:
            train, val = self._hold_out(x, target)
            callbacks = [EarlyStopping("val_loss", patience=self.patience)]
        saved = rng_state()
        try:
            torch.manual_seed(self.seed)
            model = create_model(
                "mlp",
                num_classes=outputs,
                hidden=list(self.hidden),
                activation=self.activation,
                dropout=self.dropout,
                input_shape=(x.shape[1],),
            )
            trainer = Trainer(
                model,
                loss=self._loss,
                optimizer=self.optimizer,
                lr=self.lr,
                weight_decay=self.weight_decay,
                metrics=(),
                device="cpu",
                seed=self.seed,
                doctor=False,
                threads=self.threads,
                progress=self.verbose,
                callbacks=callbacks,
            )
            trainer.fit(
                train,
                val,
                epochs=self.epochs,
                batch_size=max(1, min(self.batch_size, len(train[0]))),
            )
        finally:
            set_rng_state(saved)
        # Predictions in float64: float32 results shift in the last digits with the batch's
        # size (the matrix kernels differ), and a row's prediction should not depend on its batch.
        self.model_ = model.eval().double()
        self.loss_curve_ = [float(epoch["loss"]) for epoch in trainer.history]
        if val is not None:
            self.validation_loss_curve_ = [float(e["val_loss"]) for e in trainer.history]

    def _hold_out(self, x: np.ndarray, target: torch.Tensor) -> tuple[tuple, tuple]:
        """(train, validation) pairs for early stopping, stratified for classes when every
        class has at least two rows."""
        from sklearn.model_selection import train_test_split

        if not 0.0 < self.validation_fraction < 1.0:
            raise EstimatorInputError(
                f"validation_fraction is {self.validation_fraction}: it must lie in (0, 1)",
                hint="e.g. validation_fraction=0.1",
            )
        rows = np.arange(len(x))
        labels = target.numpy() if not target.is_floating_point() else None
        if labels is not None and np.bincount(labels).min() < 2:
            labels = None
        try:
            fit_rows, val_rows = train_test_split(
                rows, test_size=self.validation_fraction, random_state=self.seed, stratify=labels
            )
        except ValueError as exc:
            raise EstimatorInputError(
                f"cannot hold out {self.validation_fraction:.0%} of {len(x)} rows for early "
                f"stopping: {exc}",
                hint="give more rows, or early_stopping=False",
            ) from exc
        tensor = _as_tensor(x)
        return (tensor[fit_rows], target[fit_rows]), (tensor[val_rows], target[val_rows])

    def _outputs(self, x: Any) -> np.ndarray:
        """The network's raw outputs (logits or scaled values) for validated rows."""
        check_is_fitted(self, "model_")
        x = validate_data(self, x, reset=False, dtype=(np.float64, np.float32))
        with torch.no_grad():
            return self.model_(torch.tensor(np.asarray(x, dtype=np.float64))).numpy()


class LayerwiseClassifier(ClassifierMixin, _LayerwiseMLP):
    """An MLP classifier trained by layerwise (cross-entropy on the logits).

    Learned attributes: `classes_` (the labels, sorted), `n_features_in_`, `feature_names_in_`
    (for frames with string column names), `model_` (the trained `nn.Module`, usable as plain
    PyTorch), `loss_curve_` (the mean training loss per epoch) and, with early stopping,
    `validation_loss_curve_`.

    Example:
        >>> from sklearn.datasets import load_iris
        >>> x, y = load_iris(return_X_y=True)
        >>> LayerwiseClassifier(hidden=(16,), epochs=50, lr=0.01).fit(x, y).score(x, y) > 0.9
        True
    """

    _loss = "cross_entropy"

    def fit(self, X: Any, y: Any) -> LayerwiseClassifier:
        """Learn the classes of `y` from the rows of `X`; returns self."""
        x, y = validate_data(self, X, y, dtype=(np.float64, np.float32))
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise EstimatorInputError(
                f"y holds 1 class ({self.classes_[0]!r}); a classifier needs at least 2 classes",
                hint="give rows of every class you want predicted",
            )
        self._fit_network(x, torch.as_tensor(codes, dtype=torch.long), len(self.classes_))
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, one column per entry of `classes_`."""
        logits = self._outputs(X)
        logits -= logits.max(axis=1, keepdims=True)
        weights = np.exp(logits)
        return weights / weights.sum(axis=1, keepdims=True)

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """Log of `predict_proba`, computed stably from the logits."""
        logits = self._outputs(X)
        logits -= logits.max(axis=1, keepdims=True)
        return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))

    def predict(self, X: Any) -> np.ndarray:
        """The most likely class of each row."""
        best = self._outputs(X).argmax(axis=1)
        return self.classes_[best]


class LayerwiseRegressor(RegressorMixin, _LayerwiseMLP):
    """An MLP regressor trained by layerwise (mean squared error).

    The target is standardised with the training rows' mean and spread before training and
    scaled back in `predict`, so the learning rate does not depend on the target's units.
    Learned attributes: `n_features_in_`, `feature_names_in_`, `model_`, `loss_curve_` (on the
    standardised target), `target_mean_`, `target_scale_`.

    Example:
        >>> from sklearn.datasets import load_diabetes
        >>> x, y = load_diabetes(return_X_y=True)
        >>> LayerwiseRegressor(hidden=(32,), epochs=100, lr=0.01).fit(x, y).score(x, y) > 0.4
        True
    """

    def fit(self, X: Any, y: Any) -> LayerwiseRegressor:
        """Learn to predict `y` (one number per row) from the rows of `X`; returns self."""
        x, y = validate_data(self, X, y, dtype=(np.float64, np.float32), y_numeric=True)
        y = np.asarray(y, dtype=np.float64)
        self.target_mean_ = float(y.mean())
        spread = float(y.std())
        self.target_scale_ = spread if spread > 0 else 1.0
        target = torch.as_tensor((y - self.target_mean_) / self.target_scale_, dtype=torch.float32)
        self._fit_network(x, target.reshape(-1, 1), 1)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """The predicted value of each row, in the units of the training target."""
        return self._outputs(X)[:, 0] * self.target_scale_ + self.target_mean_


def _as_tensor(x: np.ndarray) -> torch.Tensor:
    """float32 rows as a tensor of their own (copied, so read-only or memory-mapped arrays
    are fine)."""
    return torch.tensor(np.asarray(x, dtype=np.float32))
