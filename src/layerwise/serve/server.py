"""`layerwise serve`: check the arguments, load the run's model, run the app under uvicorn."""

from __future__ import annotations

import errno
import gc
import socket
from collections.abc import Callable
from pathlib import Path

from layerwise.serve.app import MAX_ROWS, MAX_UPLOAD_BYTES, ServedModel, ServeError


def check_options(
    host: str, port: int, max_batch: int, max_wait_ms: float, max_rows: int, max_upload_bytes: int
) -> None:
    """Refuse limits out of range and a port that is taken, before the model is loaded."""
    if max_rows < 1:
        raise ServeError(f"--max-rows {max_rows} is out of range", hint="give 1 or more")
    if max_upload_bytes < 1024:
        raise ServeError(
            f"--max-upload-mb allows {max_upload_bytes} bytes, too few for a request",
            hint="give 0.001 (1 kB) or more; the default is 10",
        )
    if not 1 <= max_batch <= 65536:
        raise ServeError(
            f"--max-batch {max_batch} is out of range",
            hint="give 1 (no micro-batching) up to 65536; 32 suits a CPU",
        )
    if not 0 <= max_wait_ms <= 10_000:
        raise ServeError(
            f"--max-wait-ms {max_wait_ms:g} is out of range", hint="give 0 to 10000 (default 5)"
        )
    if not 0 < port < 65536:
        raise ServeError(f"--port {port} is not a TCP port", hint="give 1 to 65535, e.g. 8000")
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ServeError(
                f"port {port} on {host} is already in use",
                hint="stop what listens there, or choose another --port",
            ) from exc
        raise ServeError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            hint="check --host (127.0.0.1 for this machine only, 0.0.0.0 for all interfaces)",
        ) from exc


def settle_process(served: ServedModel, max_batch: int) -> dict[str, int]:
    """Make the serving process steady before the first request: its CPU threads and its heap.

    Threads: one intra-op thread per `MACS_PER_THREAD` of forward work in a full micro-batch,
    leaving one core to the event loop that reads requests and writes answers (a small model's
    batch of 32 on two intra-op threads spends more at their barrier than it saves, and on a
    busy machine a preempted thread stalls the whole batch). LAYERWISE_THREADS, OMP_NUM_THREADS
    or MKL_NUM_THREADS, when set, win.

    Heap: every object alive once the model and app are loaded (torch, FastAPI, the model;
    some 360,000) is moved out of the garbage collector's sight with `gc.freeze()`. Without
    it each full collection walks all of them while holding the GIL, and under load the
    answers waiting behind it took up to 1.5-2 s (measured: the p99 of micro-batched serving
    was such pauses, not the batching). Objects made per request are still collected.
    """
    import torch

    threads = serving_threads(served.macs_per_row, max_batch)
    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    gc.collect()
    gc.freeze()
    return {"threads": threads, "frozen_objects": gc.get_freeze_count()}


def serving_threads(macs_per_row: int, max_batch: int) -> int:
    """Intra-op threads for a model doing `macs_per_row` multiply-adds per row in batches of up
    to `max_batch` rows (see `settle_process`)."""
    from layerwise.train.device import MACS_PER_THREAD, CpuThreads, usable_cores

    explicit = CpuThreads("auto").explicit()
    if explicit is not None:
        return explicit
    work = macs_per_row * max_batch
    return max(1, min(usable_cores() - 1, int(work // MACS_PER_THREAD)))


def serve(
    run_ref: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_batch: int = 32,
    max_wait_ms: float = 5.0,
    which: str = "last",
    runs_root: str | Path = "runs",
    max_rows: int = MAX_ROWS,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    echo: Callable[[str], None] = print,
) -> None:
    """Serve a run's model over HTTP until interrupted."""
    check_options(host, port, max_batch, max_wait_ms, max_rows, max_upload_bytes)
    try:
        import uvicorn
    except ImportError as exc:
        raise ServeError(
            "serving needs fastapi and uvicorn", hint="pip install 'layerwise[serve]'"
        ) from exc
    from layerwise.serve.app import create_app

    served = ServedModel.load(run_ref, which, runs_root)
    app = create_app(served, max_batch, max_wait_ms, max_rows, max_upload_bytes)
    settled = settle_process(served, max_batch)
    shown = f"[{host}]" if ":" in host else host
    batching = f"micro-batches of up to {max_batch} rows, {max_wait_ms:g} ms wait"
    threads = f"{settled['threads']} torch thread{'s' * (settled['threads'] > 1)}"
    echo(
        f"serving {served.run.name} ({served.weights} weights) on http://{shown}:{port} "
        f"({batching if max_batch > 1 else 'no micro-batching'}, {threads}); "
        "schema: /docs, stop: Ctrl+C"
    )
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
