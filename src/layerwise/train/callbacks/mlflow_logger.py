"""Log a run's recipe and per-epoch numbers to MLflow (when the `mlflow` package is installed)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from layerwise.train.callbacks.base import Callback

if TYPE_CHECKING:
    from layerwise.train.trainer import Trainer


class MLflowLogger(Callback):
    """One MLflow run per layerwise run: the recipe's fields as params, the epoch logs as metrics.

    Args:
        tracking_uri: where MLflow stores runs (e.g. `file:runs/mlruns`).
        run_name: the layerwise run's name.
        params: flat `{dotted.key: value}` logged once (the recipe).
        experiment: the MLflow experiment's name.
    """

    order = 12

    def __init__(
        self,
        tracking_uri: str,
        run_name: str,
        params: dict[str, Any] | None = None,
        experiment: str = "layerwise",
    ) -> None:
        self.tracking_uri = tracking_uri
        self.run_name = run_name
        self.params = params or {}
        self.experiment = experiment
        self._active = False

    def on_fit_start(self, trainer: Trainer) -> None:
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_experiment(self.experiment)
        mlflow.start_run(run_name=self.run_name)
        self._active = True
        mlflow.log_params({k: str(v)[:500] for k, v in self.params.items()})

    def on_epoch_end(self, trainer: Trainer) -> None:
        import mlflow

        numbers = {
            k: float(v)
            for k, v in trainer.logs.items()
            if isinstance(v, int | float) and k != "epoch"
        }
        mlflow.log_metrics(numbers, step=trainer.state.epoch)

    def on_fit_end(self, trainer: Trainer) -> None:
        if self._active:
            import mlflow

            mlflow.end_run()
            self._active = False
