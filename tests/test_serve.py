"""Export and serving: an exported or served model given raw inputs answers as `layerwise predict`.

Two tiny runs (a standardised wine MLP and a digits CNN, a few seconds each) are exported to ONNX
and TorchScript and served through the FastAPI app in this process; one test starts a real
`layerwise serve` process on a free loopback port and talks HTTP to it, bad requests included;
schemathesis tries the app against its own OpenAPI schema.
"""

from __future__ import annotations

import asyncio
import gc
import io
import json
import os
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pandas as pd
import pytest
import schemathesis
import torch
import uvicorn
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from PIL import Image
from schemathesis.specs.openapi.checks import positive_data_acceptance
from sklearn.datasets import load_wine
from torch import nn

from layerwise import experiment
from layerwise.data import load_dataset
from layerwise.predict import predict_run
from layerwise.recipe import load_recipe
from layerwise.recipes_bundled import bundled_recipe
from layerwise.serve.app import ServedModel, create_app
from layerwise.serve.batching import MicroBatcher
from layerwise.serve.export import TOLERANCE, ExportError, export_model, export_run
from layerwise.serve.exported import ExportedModel
from layerwise.serve.server import serve, serving_threads
from layerwise.train import device

QUICK = ["doctor.probes=false", "doctor.label_noise=false"]


def train(root, name: str, overrides: list[str]):
    recipe = load_recipe(bundled_recipe(name), [*overrides, *QUICK])
    run, _ = experiment.train(recipe, root / "runs", progress=False, echo=None)
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A standardised table run and an image run, with raw inputs for each."""
    root = tmp_path_factory.mktemp("serve")
    wine = train(root, "wine_mlp", ["train.epochs=4"])
    digits = train(root, "digits_cnn", ["train.epochs=2", "data.args.subset=400"])
    raw = load_dataset("wine").test[0].numpy()  # before standardising
    np.save(root / "wine.npy", raw)
    pd.DataFrame(raw, columns=load_wine().feature_names).to_csv(root / "wine.csv", index=False)
    pixels = load_dataset("digits").test[0][:6].numpy()  # 0-16 in scikit-learn's digits
    for i, image in enumerate(pixels):  # drawn images as people save them: 0-255 PNGs, bigger
        picture = Image.fromarray(np.uint8(image[0] * 255 / 16)).resize((32, 32))
        picture.save(root / f"digit{i}.png")
    np.save(root / "digits.npy", pixels.reshape(6, 64) * 255 / 16)
    return root, wine, digits


def same_answers(got, want) -> None:
    """Same names, same ranked classes, probabilities equal to float precision."""
    assert got[0] == want[0]
    assert [[label for label, _ in row] for row in got[1]] == [
        [label for label, _ in row] for row in want[1]
    ]
    for row_got, row_want in zip(got[1], want[1], strict=True):
        for (_, p_got), (_, p_want) in zip(row_got, row_want, strict=True):
            assert p_got == pytest.approx(p_want, abs=1e-5)


# ---------------------------------------------------------------------------------- export
@pytest.mark.slow
@pytest.mark.parametrize("format", ["onnx", "torchscript"])
def test_exported_models_answer_raw_inputs_as_predict_does(runs, format):
    root, wine, digits = runs
    cases = [
        (wine, [root / "wine.npy"]),
        (wine, [root / "wine.csv"]),
        (digits, [root / f"digit{i}.png" for i in range(6)]),
        (digits, [root / "digits.npy"]),
    ]
    for run in (wine, digits):
        out = root / f"{run.name}-{format}" / ("model.onnx" if format == "onnx" else "model.pt")
        result = export_run(run.path, format, out)
        metadata = json.loads(result.metadata_path.read_text())
        assert result.max_abs_diff <= TOLERANCE
        assert metadata["parity"]["max_abs_diff"] == result.max_abs_diff
        assert metadata["input_shape"][0] == "batch"
        saved = json.loads((run.path / "preprocess.json").read_text())
        assert metadata["preprocess"] == saved  # the run's preprocessing travels with the model
        exported = ExportedModel(out)
        for case_run, inputs in cases:
            if case_run is run:
                same_answers(exported.predict(inputs), predict_run(run.path, inputs))
        x = torch.zeros(5, *metadata["input_shape"][1:])  # another batch size than exported with
        assert exported(x).shape[0] == 5


class Gate(nn.Module):
    """A layer that branches in Python on its input's values: neither format can keep that."""

    def forward(self, x):
        return x if x.sum() > 0 else -x


@pytest.mark.parametrize("format", [pytest.param("onnx", marks=pytest.mark.slow), "torchscript"])
def test_a_layer_that_cannot_be_exported_is_named(format):
    model = nn.Sequential(nn.Linear(4, 3), Gate(), nn.Linear(3, 2)).eval()
    with pytest.raises(ExportError) as raised:
        export_model(model, torch.randn(8, 4), format)
    if format == "onnx":
        assert "layer '1' (Gate)" in raised.value.message
        assert "--format torchscript" in raised.value.hint
    else:
        assert "value-dependent" in raised.value.message
        assert "--format onnx" in raised.value.hint


# --------------------------------------------------------------------------------- serving
@pytest.fixture(scope="module")
def wine_client(runs):
    root, wine, _ = runs
    app = create_app(ServedModel.load(wine.path), max_upload_bytes=16000, max_rows=40)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, root, wine


def npy_bytes(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.mark.slow
def test_served_predictions_equal_predict(wine_client, runs):
    client, root, wine = wine_client
    want = predict_run(wine.path, [root / "wine.npy"])
    raw = np.load(root / "wine.npy")
    response = client.post("/predict", json={"rows": raw.tolist(), "top_k": 3})
    assert response.status_code == 200
    body = response.json()
    got = (
        [p["name"] for p in body["predictions"]],
        [[(r["label"], r["probability"]) for r in p["top"]] for p in body["predictions"]],
    )
    same_answers((want[0], got[1]), want)
    assert got[0] == [f"row {i}" for i in range(len(raw))]
    assert body["notes"] == []
    upload = client.post(
        "/predict/file", files={"file": ("wine.csv", (root / "wine.csv").read_bytes())}
    )
    assert upload.status_code == 200
    predictions = upload.json()["predictions"]
    assert [p["name"] for p in predictions] == [f"wine.csv[{i}]" for i in range(len(raw))]
    ranked = [[(r["label"], r["probability"]) for r in p["top"]] for p in predictions]
    same_answers((want[0], ranked), want)
    # an image run through a file upload, as `layerwise predict digit0.png` answers
    _, digits = runs[0], runs[2]
    with TestClient(create_app(ServedModel.load(digits.path))) as images:
        png = images.post(
            "/predict/file", files={"file": ("d.png", (root / "digit0.png").read_bytes())}
        )
    want = predict_run(digits.path, [root / "digit0.png"])
    assert png.status_code == 200
    top = [(r["label"], r["probability"]) for r in png.json()["predictions"][0]["top"]]
    same_answers((["digit0.png"], [top]), want)


BAD_REQUESTS = [
    # (what, request kwargs, status, words in the detail)
    ("wrong width", {"json": {"rows": [[1.0, 2.0]]}}, 422, ["rows.0", "at least 13"]),
    ("wrong type", {"json": {"rows": [["a"] * 13]}}, 422, ["rows.0.0", "valid number"]),
    ("unknown field", {"json": {"rows": [[1.0] * 13], "colour": 1}}, 422, ["colour", "Extra"]),
    ("no rows", {"json": {"rows": []}}, 422, ["rows", "at least 1"]),
    ("too many rows", {"json": {"rows": [[1.0] * 13] * 41}}, 422, ["rows", "at most 40"]),
    ("missing without impute", {"json": {"rows": [[None] * 13]}}, 422, ["rows.0.0", "number"]),
    ("too large", {"json": {"rows": [[1e31] * 13]}}, 422, ["rows.0.0", "less than or equal"]),
    ("not JSON", {"content": b"{rows", "headers": {"content-type": "application/json"}}, 422, []),
    (
        "oversize body",
        {"content": b" " * 20000, "headers": {"content-type": "application/json"}},
        413,
        ["16,000 bytes"],
    ),
    ("bad top_k", {"json": {"rows": [[1.0] * 13], "top_k": 0}}, 422, ["top_k"]),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("what", "request_kwargs", "status", "words"),
    BAD_REQUESTS,
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_bad_json_gets_a_4xx_naming_the_problem(wine_client, what, request_kwargs, status, words):
    client = wine_client[0]
    response = client.post("/predict", **request_kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["hint"]
    for word in words:
        assert word in body["detail"], body["detail"]


BAD_FILES = [
    ("notes.txt", b"hello", 415, ["'.txt'"]),
    ("x.png", b"\x89PNG", 415, ["'.png'"]),  # a table model takes no images
    ("torn.npy", npy_bytes(np.zeros((2, 13)))[:-20], 422, ["torn.npy"]),
    ("wide.npy", npy_bytes(np.zeros((2, 14))), 422, ["14 values", "13 features"]),
    ("words.npy", npy_bytes(np.array(["a", "b"])), 422, ["words.npy"]),
    ("empty.csv", b"", 422, ["empty"]),
    ("big.npy", npy_bytes(np.zeros((200, 13))), 413, ["16,000 bytes"]),
    ("many.npy", npy_bytes(np.zeros((41, 13), np.float32)), 413, ["41 rows", "at most 40"]),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "data", "status", "words"), BAD_FILES, ids=[case[0] for case in BAD_FILES]
)
def test_bad_uploads_get_a_4xx_naming_the_file(wine_client, name, data, status, words):
    response = wine_client[0].post("/predict/file", files={"file": (name, data)})
    assert response.status_code == status, response.text
    for word in words:
        assert word in response.json()["detail"]
    assert "/tmp" not in response.json()["detail"]  # the upload's name, not a temporary path


# ------------------------------------------------------------------------------ batching
def test_concurrent_requests_share_forward_passes():
    calls = []

    def forward(x):
        calls.append(len(x))
        return x * 2

    async def main():
        batcher = MicroBatcher(forward, max_batch=4, max_wait_ms=500)
        await batcher.start()
        requests = [torch.full((1, 3), float(i)) for i in range(10)] + [torch.ones(6, 3)]
        answers = await asyncio.gather(*(batcher.submit(x) for x in requests))
        await batcher.stop()
        return requests, answers

    requests, answers = asyncio.run(main())
    for x, y in zip(requests, answers, strict=True):
        assert torch.equal(y, x * 2)  # each request gets its own rows back
    assert calls == [4, 4, 2, 6]  # gathered up to 4 rows; a bigger request goes alone


def test_a_failing_forward_reaches_every_waiting_request_and_the_worker_goes_on():
    def forward(x):
        if bool((x < 0).any()):
            raise ValueError("negative")
        return x

    async def main():
        batcher = MicroBatcher(forward, max_batch=8, max_wait_ms=50)
        await batcher.start()
        failed = await asyncio.gather(
            batcher.submit(torch.ones(1, 2)),
            batcher.submit(-torch.ones(1, 2)),
            return_exceptions=True,
        )
        later = await batcher.submit(torch.ones(1, 2))
        await batcher.stop()
        return failed, later

    failed, later = asyncio.run(main())
    assert all(isinstance(f, ValueError) for f in failed)
    assert torch.equal(later, torch.ones(1, 2))


# ------------------------------------------------------------------ the serving process
@pytest.fixture
def settled_state(monkeypatch):
    """A 4-core machine with no thread variables set; torch's threads and the collector's
    frozen objects put back afterwards."""
    monkeypatch.setattr(device, "usable_cores", lambda: 4)
    for name in device.THREAD_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    before = torch.get_num_threads()
    yield
    gc.unfreeze()
    torch.set_num_threads(before)


def test_serve_freezes_the_loaded_heap_and_sets_threads_before_listening(
    runs, monkeypatch, settled_state
):
    _, _, digits = runs
    seen, lines = {}, []

    def listen(app, **options):  # instead of uvicorn's loop: what the process is like by then
        seen.update(frozen=gc.get_freeze_count(), threads=torch.get_num_threads(), app=app)

    monkeypatch.setattr(uvicorn, "run", listen)
    serve(digits.path, port=free_port(), echo=lines.append)
    # everything loaded (torch, FastAPI, the model) is out of the collector's full sweeps
    assert seen["frozen"] > 50_000
    assert isinstance(seen["app"].state.batcher, MicroBatcher)
    # the digits CNN's 32-row batch is far below one thread's worth of work
    assert 0 < seen["app"].state.served.macs_per_row * 32 < device.MACS_PER_THREAD
    assert seen["threads"] == 1
    assert "1 torch thread)" in lines[0]


def test_serving_threads_follow_the_work_and_leave_a_core_to_the_event_loop(
    monkeypatch, settled_state
):
    per_thread = device.MACS_PER_THREAD
    assert serving_threads(0, 32) == 1
    assert serving_threads(per_thread // 32 * 2, 32) == 2
    assert serving_threads(per_thread, 32) == 3  # 4 cores, one kept for the event loop
    assert serving_threads(per_thread, 1) == 1
    monkeypatch.setenv("LAYERWISE_THREADS", "2")
    assert serving_threads(0, 32) == 2  # the user's choice wins


# --------------------------------------------------------------------------- the schema
@pytest.mark.slow
def test_the_app_keeps_to_its_own_schema(wine_client):
    """Requests generated from the app's OpenAPI schema, valid and not: never a 5xx, and every
    answer (4xx included) has the status, type and body the schema declares."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", wine_client[0].app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/predict", "/predict/file", "/metadata"}
    for operation in operations:
        examples = 50 if operation.path == "/predict" else 20

        @given(case=operation.as_strategy())
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case):
            # A schema cannot say what a valid .npy or image is: an upload the schema allows
            # may still be refused (422/415). Everything else must hold for the file route too.
            skip = [positive_data_acceptance] if case.operation.path == "/predict/file" else []
            case.call_and_validate(excluded_checks=skip)

        check()


# ------------------------------------------------------------------------ a real server
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_a_real_server_answers_over_http_and_refuses_bad_requests_with_4xx(runs):
    root, wine, _ = runs
    port = free_port()
    command = [sys.executable, "-m", "layerwise.cli", "serve", str(wine.path), "--port", str(port)]
    command += ["--max-upload-mb", "0.01", "--max-wait-ms", "20"]
    server = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            for _ in range(600):  # up to a minute on a busy machine
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
                assert server.poll() is None, server.stderr.read().decode()
            raw = np.load(root / "wine.npy")
            want = predict_run(wine.path, [root / "wine.npy"])
            good = client.post("/predict", json={"rows": raw[:5].tolist()})
            assert good.status_code == 200
            labels = [p["top"][0]["label"] for p in good.json()["predictions"]]
            assert labels == [row[0][0] for row in want[1][:5]]

            async def many():
                async with httpx.AsyncClient(base_url=url, timeout=30) as together:
                    rows = [{"rows": [row]} for row in raw.tolist()]
                    return await asyncio.gather(*(together.post("/predict", json=r) for r in rows))

            answers = asyncio.run(many())
            assert [a.status_code for a in answers] == [200] * len(raw)
            assert [a.json()["predictions"][0]["top"][0]["label"] for a in answers] == [
                row[0][0] for row in want[1]
            ]
            bad = [
                client.post("/predict", json={"rows": [[1, 2]]}),
                client.post("/predict", json={"rows": [[1] * 13], "extra": True}),
                client.post(
                    "/predict", content=b"\xff\xfe", headers={"content-type": "application/json"}
                ),
                client.post("/predict", content=b"rows=1", headers={"content-type": "text/plain"}),
                client.post("/predict", json={"rows": [[0.0] * 13] * 200}),  # > 10 kB
                client.post("/predict/file", files={"file": ("a.txt", b"x")}),
                client.post(
                    "/predict/file",
                    content=b"--x\r\n",
                    headers={"content-type": "multipart/form-data; boundary=x"},
                ),
                client.get("/predict"),
                client.get("/nowhere"),
            ]
            assert [r.status_code for r in bad] == [422, 422, 422, 422, 413, 415, 422, 405, 404]
            metadata = client.get("/metadata").json()
            assert metadata["class_names"] == ["class_0", "class_1", "class_2"]
            assert metadata["batches"]["rows"] == 5 + len(raw)
            assert client.get("/openapi.json").json()["paths"].keys() >= {"/predict", "/health"}
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert "Traceback" not in server.stderr.read().decode()
