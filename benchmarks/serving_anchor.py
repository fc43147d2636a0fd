"""The anchor for benchmarks/serving.py: the same model behind a hand-written FastAPI endpoint.

What a practitioner would write in ten minutes: load the weights, one POST route that turns JSON
rows into a tensor, applies the run's preprocessing and runs the model under no_grad, one request
at a time (no batching, no upload route, no schema beyond the body's type).

usage: python benchmarks/serving_anchor.py RUN_FOLDER PORT
"""

from __future__ import annotations

import sys

import torch
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

from layerwise.experiment import load_experiment, run_preprocess
from layerwise.runs import Run


class Rows(BaseModel):
    rows: list[list[float]]


def make_app(run_folder: str) -> FastAPI:
    run = Run.open(run_folder)
    experiment = load_experiment(run, "last")  # as layerwise serve and predict
    model, preprocess = experiment.model.eval(), run_preprocess(run)
    names = experiment.data.class_names
    app = FastAPI()

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/predict")
    def predict(body: Rows) -> dict[str, list[dict[str, float | str]]]:
        x, _ = preprocess.rows(torch.tensor(body.rows))
        with torch.no_grad():
            probabilities = torch.softmax(model(x), dim=1)
        best, index = probabilities.max(dim=1)
        return {
            "predictions": [
                {"label": names[i], "probability": p}
                for p, i in zip(best.tolist(), index.tolist(), strict=True)
            ]
        }

    return app


if __name__ == "__main__":
    uvicorn.run(make_app(sys.argv[1]), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
