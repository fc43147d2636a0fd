"""Use an export made by `layerwise export`: raw inputs in, the same answers as `layerwise predict`.

The model file takes model inputs; the metadata JSON beside it carries the run's preprocessing, so
raw rows (as in the training file) and image files go through exactly the reading and fixes that
`layerwise predict` applies (`layerwise.predict.read_inputs`) before the exported model runs.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from layerwise.data.preprocess import Preprocess
from layerwise.predict import read_inputs, top_predictions
from layerwise.serve.export import ExportError


class ExportedModel:
    """An exported model and its metadata, read from the model file's path.

    Example:
        >>> model = ExportedModel("runs/wine_mlp/export/model.onnx")  # doctest: +SKIP
        >>> names, ranked, notes = model.predict(["new_wines.csv"])
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        meta_path = self.path.with_name(self.path.name + ".json")
        try:
            self.metadata: dict[str, Any] = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ExportError(
                f"cannot read the export's metadata '{meta_path}': {exc}",
                hint="export again with `layerwise export RUN`; the .json beside the model "
                "holds its preprocessing",
            ) from exc
        self.format = self.metadata["format"]
        self.preprocess = Preprocess.from_dict(self.metadata["preprocess"])
        self.class_names: list[str] = self.metadata.get("class_names") or []
        if self.format == "onnx":
            import onnxruntime

            self._session = onnxruntime.InferenceSession(
                str(self.path), providers=["CPUExecutionProvider"]
            )
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                self._module = torch.jit.load(str(self.path)).eval()

    def __call__(self, x: Tensor) -> Tensor:
        """Model inputs (preprocessed) -> outputs (logits)."""
        if self.format == "onnx":
            name = self.metadata["input_name"]
            (out,) = self._session.run(None, {name: x.float().numpy()})
            return torch.from_numpy(np.asarray(out))
        with torch.no_grad():
            return self._module(x.float())

    def predict(
        self, inputs: Sequence[Any], top_k: int = 3
    ) -> tuple[list[str], list[list[tuple[str, float]]], list[str]]:
        """Raw inputs (files, arrays, PIL images) -> a name per row, its `top_k` classes with
        probabilities, and notes on how the inputs were read: what `predict_run` returns."""
        batch = read_inputs(list(inputs), self.preprocess)
        logits = self(batch.x)
        return batch.names, top_predictions(logits, self.class_names, top_k), batch.notes
