"""`layerwise serve`: check the arguments, load the run's model, run the app under uvicorn."""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from pathlib import Path

from layerwise.serve.app import MAX_ROWS, MAX_UPLOAD_BYTES, ServeError


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
    from layerwise.serve.app import ServedModel, create_app

    served = ServedModel.load(run_ref, which, runs_root)
    app = create_app(served, max_batch, max_wait_ms, max_rows, max_upload_bytes)
    shown = f"[{host}]" if ":" in host else host
    batching = f"micro-batches of up to {max_batch} rows, {max_wait_ms:g} ms wait"
    echo(
        f"serving {served.run.name} ({served.weights} weights) on http://{shown}:{port} "
        f"({batching if max_batch > 1 else 'no micro-batching'}); schema: /docs, stop: Ctrl+C"
    )
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
