"""Where the p99 of `layerwise serve` went: garbage-collector pauses and intra-op threads.

The same `digits_cnn` run is served by four processes of the app `layerwise serve` builds
(micro-batching 32, 5 ms), differing only in how the process is prepared before it listens
(`layerwise.serve.server.settle_process`):

- `unsettled`: as before the fix: torch's default threads, the collector untouched;
- `heap frozen`: `gc.collect(); gc.freeze()` once loaded, torch's default threads;
- `threads chosen`: the intra-op threads `serving_threads` chooses (one for this model);
- `settled`: both, which is what `layerwise serve` does now.

Each process records, besides what `wrk` sees, its own time per /predict request (from the
first byte read to the answer), each forward pass of a micro-batch, and every garbage collection
with its pause (`gc.callbacks`). Rounds of `wrk` (one thread, 32 connections) interleave the four
servers in alternating order, as benchmarks/serving.py does; the load average is kept per round.

usage: python benchmarks/serving_tail.py [--reuse FOLDER] [--rounds 2] [--seconds 10]
FOLDER: one holding runs/digits_cnn (benchmarks/serving.py's folder, or this script's own).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, OutsideLoad, machine, table, write_json
from serving import RUNS, SERVED, free_port, layerwise, load_wrk, wait_healthy

CONFIGS = {
    "unsettled": {"freeze": False, "threads": False},
    "heap frozen": {"freeze": True, "threads": False},
    "threads chosen": {"freeze": False, "threads": True},
    "settled": {"freeze": True, "threads": True},
}


def child(run_folder: str, port: int, config: str) -> None:
    """One server process, instrumented; GET /tail gives (and resets) what it recorded."""
    import torch
    import uvicorn

    from layerwise.serve.app import ServedModel, create_app
    from layerwise.serve.server import serving_threads

    served = ServedModel.load(run_folder)
    app = create_app(served, 32, 5.0)
    record: dict[str, list] = {"gc": [], "forward_ms": [], "request_ms": []}
    gc_started = [0.0]

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            gc_started[0] = time.perf_counter()
        else:
            pause = 1e3 * (time.perf_counter() - gc_started[0])
            record["gc"].append((info["generation"], pause))

    batcher = app.state.batcher
    forward = batcher._forward

    def timed_forward(x):
        started = time.perf_counter()
        out = forward(x)
        record["forward_ms"].append(1e3 * (time.perf_counter() - started))
        return out

    batcher._forward = timed_forward

    @app.middleware("http")
    async def clock(request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        if request.url.path == "/predict":
            record["request_ms"].append(1e3 * (time.perf_counter() - started))
        return response

    @app.get("/tail")
    async def tail() -> dict:
        requests = np.array(record["request_ms"] or [0.0])
        forwards = np.array(record["forward_ms"] or [0.0])
        out = {
            "server_p50_ms": float(np.percentile(requests, 50)),
            "server_p99_ms": float(np.percentile(requests, 99)),
            "server_max_ms": float(requests.max()),
            "forward_p99_ms": float(np.percentile(forwards, 99)),
            "forward_max_ms": float(forwards.max()),
            "torch_threads": torch.get_num_threads(),
            "tracked_objects": len(gc.get_objects()),
        }
        for generation in (0, 1, 2):
            pauses = [ms for g, ms in record["gc"] if g == generation]
            out[f"gc{generation}_count"] = len(pauses)
            out[f"gc{generation}_max_ms"] = max(pauses, default=0.0)
            out[f"gc{generation}_total_ms"] = sum(pauses)
        for values in record.values():
            values.clear()
        return out

    settings = CONFIGS[config]
    if settings["threads"]:
        torch.set_num_threads(serving_threads(served.macs_per_row, 32))
    if settings["freeze"]:
        gc.collect()
        gc.freeze()
    gc.callbacks.append(on_gc)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def fetch(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=60) as answer:
        return json.loads(answer.read())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reuse", type=Path, help="a folder holding runs/digits_cnn")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "serving_tail.json")
    parser.add_argument(
        "--child", nargs=3, metavar=("RUN", "PORT", "CONFIG"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.child[2])
        return
    about = machine()
    root = args.reuse or Path(tempfile.mkdtemp(prefix="layerwise-serving-tail-"))
    if args.reuse is None:
        sets = [part for o in RUNS[SERVED] for part in ("--set", o)]
        layerwise("train", SERVED, *sets, "--quiet", "--runs-dir", "runs", cwd=root)
    from layerwise.data import load_dataset

    pixels = (load_dataset("digits").test[0].reshape(-1, 64) * 255 / 16).tolist()
    outside = OutsideLoad()
    time.sleep(5)
    outside_before = outside.sample()
    processes, urls = {}, {}
    for config in CONFIGS:
        port = free_port()
        command = [sys.executable, __file__, "--child", str(root / "runs" / SERVED), str(port)]
        processes[config] = subprocess.Popen(
            [*command, config], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        urls[config] = f"http://127.0.0.1:{port}"
    rounds: dict[str, list[dict]] = {config: [] for config in CONFIGS}
    try:
        for config, url in urls.items():
            wait_healthy(url, processes[config])
            load_wrk(url, pixels, 2, 32)  # warm-up, not recorded
            fetch(f"{url}/tail")
        for number in range(args.rounds):
            order = list(CONFIGS) if number % 2 == 0 else list(reversed(CONFIGS))
            for config in order:
                seen = load_wrk(urls[config], pixels, args.seconds, 32)
                inside = fetch(f"{urls[config]}/tail")
                entry = {
                    "requests_per_s": seen["requests"] / seen["seconds"],
                    "errors": seen["errors"],
                    "p50_ms": seen["p50_ms"],
                    "p99_ms": seen["p99_ms"],
                    "load_1min": os.getloadavg()[0],
                    **inside,
                }
                rounds[config].append(entry)
                print(
                    f"round {number + 1} {config}: {entry['requests_per_s']:.0f} req/s, p99 "
                    f"{entry['p99_ms']:.0f} ms, worst gen-2 pause {entry['gc2_max_ms']:.0f} ms, "
                    f"load {entry['load_1min']:.1f}",
                    flush=True,
                )
    finally:
        for process in processes.values():
            process.terminate()
            process.wait(timeout=30)

    def per_round(config: str, key: str) -> str:
        return " / ".join(f"{r[key]:.0f}" for r in rounds[config])

    keys = ["requests_per_s", "p99_ms", "server_max_ms", "gc2_max_ms", "gc2_total_ms"]
    keys += ["forward_p99_ms", "torch_threads", "tracked_objects"]
    print(table(["process", *keys], [[c, *(per_round(c, k) for k in keys)] for c in CONFIGS]))
    write_json(
        args.out,
        {
            "machine": about,
            "model": f"{SERVED}, micro-batching 32 rows / 5 ms, one row of 64 pixels per request",
            "load": {"client": "wrk -t1 -c32", "seconds_per_round": args.seconds},
            "outside_cores_busy_before": round(outside_before, 2),
            "configs": CONFIGS,
            "rounds": rounds,
            "command": "python benchmarks/serving_tail.py " + " ".join(sys.argv[1:]),
        },
    )


if __name__ == "__main__":
    main()
