"""The HTTP app of `layerwise serve`: a run's model behind FastAPI.

    GET  /health          {"status": "ok"} once the model is loaded
    GET  /metadata        the run, classes, input shape, preprocessing and the server's limits
    POST /predict         JSON {"rows": [[raw values of one input], ...], "top_k": 3}
    POST /predict/file    a .npy, .csv or image file (multipart field "file")
    GET  /openapi.json    the schema of all of the above (/docs renders it)

Inputs are raw, as `layerwise predict` takes them (table rows as in the training file, image
pixels 0-255 or 0-1, image files as people make them); they go through the same reading and
preprocessing (`layerwise.predict.read_inputs`), so the answers are the same. Bad input gets a
4xx with a message naming the problem and a hint (422 for a wrong shape, type or value or an
unknown field, 413 for an oversize body or too many rows, 415 for a file type the model cannot
read), never a 500. Concurrent requests share forward passes (`MicroBatcher`).
"""

# No `from __future__ import annotations`: FastAPI reads the /predict body type, made in
# create_app, from the function's annotations at run time.
import asyncio
import contextlib
import math
import re
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import torch
from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from torch import Tensor

from layerwise import __version__
from layerwise.data.preprocess import Preprocess
from layerwise.errors import LayerwiseError
from layerwise.experiment import load_experiment, run_preprocess
from layerwise.predict import IMAGE_SUFFIXES, read_inputs, top_predictions
from layerwise.runs import Run
from layerwise.serve.batching import MicroBatcher
from layerwise.serve.export import _refuse_unsupported_runs
from layerwise.train.device import forward_macs

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_ROWS = 1024
MAX_TOP_K = 100
LARGEST = 1e30  # inputs beyond this are refused: float32 holds 3.4e38, and layers multiply


class ServeError(LayerwiseError):
    """A run cannot be served as asked (a text run, a port in use, a limit out of range)."""


# ------------------------------------------------------------------------------ the model
@dataclass
class ServedModel:
    """A run's model loaded once for serving: inputs -> logits on the CPU, under no_grad."""

    run: Run
    weights: str
    preprocess: Preprocess
    class_names: list[str]
    task: str
    forward: Any
    macs_per_row: int = 0  # multiply-adds of one row's forward, to choose CPU threads by

    @classmethod
    def load(cls, run_ref: str | Path, which: str = "last", runs_root: str | Path = "runs"):
        run = Run.open(run_ref, root=runs_root)
        _refuse_unsupported_runs(run)
        experiment = load_experiment(run, which)
        weights = which if which == "last" or run.has_checkpoint("best") else "last"
        model, trainer = experiment.model.eval(), experiment.trainer

        def forward(x: Tensor) -> Tensor:
            with torch.no_grad(), trainer.autocast:
                return model(x.to(trainer.device)).float().cpu()

        data, preprocess = experiment.data, run_preprocess(run)
        one_row = torch.zeros(1, *preprocess.input_shape, device=trainer.device)
        macs = forward_macs(model, lambda: model(one_row))
        return cls(run, weights, preprocess, data.class_names, data.task, forward, macs)

    @property
    def row_width(self) -> int:
        return math.prod(self.preprocess.raw_shape)


# ------------------------------------------------------------------------------ the schema
class Ranked(BaseModel):
    label: str
    probability: float


class Prediction(BaseModel):
    name: str = Field(description="Row number, or the file name and row of an upload.")
    top: list[Ranked] = Field(description="The most likely classes, most likely first.")


class PredictResponse(BaseModel):
    predictions: list[Prediction]
    notes: list[str] = Field(
        description="How the inputs were read; warnings when they do not look like the "
        "training data (e.g. values far outside the training range)."
    )


class ErrorBody(BaseModel):
    detail: str = Field(description="What is wrong, naming the field, row or file.")
    hint: str | None = Field(None, description="What to do about it.")
    errors: list[dict[str, Any]] | None = Field(None, description="Each validation error.")


class Health(BaseModel):
    status: str
    run: str


ERRORS: dict[int | str, dict[str, Any]] = {
    413: {"model": ErrorBody, "description": "Body too large or too many rows."},
    415: {"model": ErrorBody, "description": "A file type the model cannot read."},
    422: {"model": ErrorBody, "description": "Wrong shape, type or value, or unknown field."},
}


def _request_model(width: int, max_rows: int, missing: bool) -> type[BaseModel]:
    """The /predict body, with the model's row width, the server's row limit and whether
    missing values (null) are filled (the run imputes) in the schema."""
    finite = Field(allow_inf_nan=False, ge=-LARGEST, le=LARGEST)
    Value = Annotated[float | None, finite] if missing else Annotated[float, finite]
    blank = " null marks a missing value, filled as in training." if missing else ""

    class PredictRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        rows: list[Annotated[list[Value], Field(min_length=width, max_length=width)]] = Field(
            min_length=1,
            max_length=max_rows,
            description=f"Raw inputs, one row of {width} values each, as in the training data "
            f"(pixels 0-255 or 0-1 for an image model).{blank}",
        )
        top_k: int = Field(3, ge=1, le=MAX_TOP_K, description="Classes to return per row.")

    return PredictRequest


# ------------------------------------------------------------------------------ the app
def create_app(
    served: ServedModel,
    max_batch: int = 32,
    max_wait_ms: float = 5.0,
    max_rows: int = MAX_ROWS,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
) -> FastAPI:
    """The FastAPI app answering for `served`; `max_batch` 1 turns micro-batching off."""
    batcher = MicroBatcher(served.forward, max_batch, max_wait_ms)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(
        title=f"layerwise: {served.run.name}",
        version=__version__,
        description=f"Predictions of run '{served.run.name}' ({served.weights} weights).",
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimit, max_bytes=max_upload_bytes)
    PredictRequest = _request_model(
        served.row_width, max_rows, served.preprocess.impute is not None
    )
    suffixes = {".npy", ".csv"} | (IMAGE_SUFFIXES if served.preprocess.image else set())

    @app.exception_handler(LayerwiseError)
    async def _bad_input(_: Request, exc: LayerwiseError) -> JSONResponse:
        status = getattr(exc, "status", 422)
        return JSONResponse({"detail": exc.message, "hint": exc.hint}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [_plain_error(e) for e in exc.errors()]
        where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors[:3])
        return JSONResponse(
            {"detail": where, "hint": "see GET /metadata or /docs for the input", "errors": errors},
            status_code=422,
        )

    @app.get("/health")
    async def health() -> Health:
        return Health(status="ok", run=served.run.name)

    @app.get("/metadata")
    async def metadata() -> dict[str, Any]:
        """What the model takes and gives, and the server's limits."""
        return {
            "run": served.run.name,
            "weights": served.weights,
            "task": served.task,
            "class_names": served.class_names,
            "row_width": served.row_width,
            "raw_shape": served.preprocess.raw_shape,
            "input_shape": served.preprocess.input_shape,
            "feature_names": served.preprocess.feature_names,
            "image": served.preprocess.image is not None,
            "file_types": sorted(suffixes),
            "limits": {
                "max_batch": max_batch,
                "max_wait_ms": max_wait_ms,
                "max_rows": max_rows,
                "max_upload_bytes": max_upload_bytes,
            },
            "batches": {"forward_calls": batcher.batches, "rows": batcher.rows},
            "preprocess": served.preprocess.to_dict(),
            "version": __version__,
        }

    @app.post("/predict", response_model=PredictResponse, responses=ERRORS)
    async def predict(body: PredictRequest) -> JSONResponse:  # type: ignore[valid-type]
        """Predict for raw rows given as JSON."""
        rows = torch.tensor([[math.nan if v is None else v for v in r] for r in body.rows])
        batch = read_inputs([rows], served.preprocess)
        names = [f"row {i}" for i in range(len(rows))]
        return await _answer(batch.x, names, batch.notes, body.top_k)

    @app.post("/predict/file", response_model=PredictResponse, responses=ERRORS)
    async def predict_file(
        file: Annotated[UploadFile, File(description="A .npy, .csv or image file.")],
        top_k: Annotated[int, Query(ge=1, le=MAX_TOP_K)] = 3,
    ) -> JSONResponse:
        """Predict for the inputs in an uploaded file, read as `layerwise predict` reads it."""
        name = _safe_name(file.filename or "upload")
        suffix = Path(name).suffix.lower()
        if suffix not in suffixes:
            raise _status(
                ServeError(
                    f"cannot read '{name}': file type '{suffix or '(none)'}' is not one this "
                    "model takes",
                    hint=f"upload one of: {', '.join(sorted(suffixes))}",
                ),
                415,
            )
        data = await file.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise _status(_too_big(max_upload_bytes), 413)
        batch = await asyncio.to_thread(_read_upload, name, data, served.preprocess)
        if len(batch.x) > max_rows:
            raise _status(
                ServeError(
                    f"'{name}' holds {len(batch.x)} rows; this server takes at most {max_rows}",
                    hint="split the file, or start the server with a larger --max-rows",
                ),
                413,
            )
        return await _answer(batch.x, batch.names, batch.notes, top_k)

    async def _answer(x: Tensor, names: list[str], notes: list[str], top_k: int):
        logits = await batcher.submit(x)
        if not bool(torch.isfinite(logits).all()):
            row = int((~torch.isfinite(logits)).reshape(len(logits), -1).any(1).nonzero()[0])
            raise ServeError(
                f"the model's output for {names[row]} is not finite (inputs far too large?)",
                hint="give raw values as in the training data",
            )
        ranked = top_predictions(logits, served.class_names, top_k)
        predictions = [
            {"name": n, "top": [{"label": label, "probability": p} for label, p in r]}
            for n, r in zip(names, ranked, strict=True)
        ]
        # Built as plain JSON: a returned Response skips a second validation of what this
        # code made (the schema still comes from response_model).
        return JSONResponse({"predictions": predictions, "notes": notes})

    app.state.batcher = batcher
    app.state.served = served
    return app


def _read_upload(name: str, data: bytes, preprocess: Preprocess):
    """The uploaded bytes read as `layerwise predict` reads a file of that name."""
    if not data:
        raise ServeError(f"'{name}' is empty", hint="upload the file's contents")
    with tempfile.TemporaryDirectory(prefix="layerwise-upload-") as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        try:
            return read_inputs([path], preprocess)
        except LayerwiseError as exc:  # name the upload, not the temporary file
            exc.message = exc.message.replace(str(path), name)
            exc.args = (exc.message,)
            raise
        except Exception as exc:  # a decoder's own error (a decompression bomb, a torn file)
            raise ServeError(
                f"cannot read '{name}': {type(exc).__name__}: {str(exc)[:200]}",
                hint="check the file is complete and of the type its name says",
            ) from exc


def _safe_name(filename: str) -> str:
    """The file's base name with anything but letters, digits, dot, dash and underscore
    replaced (it names a temporary file and appears in answers)."""
    base = re.sub(r"[^A-Za-z0-9._-]", "_", Path(filename.replace("\\", "/")).name)[-100:]
    return base.lstrip(".") or "upload"


def _status(exc: LayerwiseError, status: int) -> LayerwiseError:
    exc.status = status  # type: ignore[attr-defined]
    return exc


def _too_big(limit: int) -> ServeError:
    return ServeError(
        f"request body larger than this server's limit of {limit:,} bytes",
        hint="send fewer rows per request, or start the server with a larger --max-upload-mb",
    )


def _plain_error(error: dict[str, Any]) -> dict[str, Any]:
    """A validation error as JSON-safe values (pydantic puts exceptions in 'ctx')."""
    keep = {k: error[k] for k in ("type", "loc", "msg") if k in error}
    keep["loc"] = [str(part) for part in keep.get("loc", [])]
    return keep


class BodyLimit:
    """Refuse a request body over `max_bytes` with 413 before the app reads it all: by its
    Content-Length when given, else by counting the bytes as they arrive."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self._refuse(send)
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooBig
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked_send)
        except _TooBig:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        error = _too_big(self.max_bytes)
        response = JSONResponse({"detail": error.message, "hint": error.hint}, status_code=413)
        await response({"type": "http"}, _no_body, send)


class _TooBig(Exception):
    pass


async def _no_body() -> Message:
    return {"type": "http.disconnect"}
