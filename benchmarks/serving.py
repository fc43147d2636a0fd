"""Export parity and serving throughput, measured on real processes over loopback.

1. Trains a digits CNN and a standardised wine MLP (bundled data, seconds each), exports both to
   ONNX and TorchScript with `layerwise export`, and records each export's max abs difference to
   the PyTorch model (results/export.json).
2. Starts three HTTP servers for the digits CNN, each a real process on a free loopback port:
   `layerwise serve` with micro-batching (--max-batch 32 --max-wait-ms 5), `layerwise serve`
   without it (--max-batch 1), and the anchor: the same model behind a hand-written minimal
   FastAPI endpoint (benchmarks/serving_anchor.py). Each gets the same bounded load: N requests of
   one row each from 32 concurrent httpx clients, in rounds interleaved across the three servers
   (the machine's speed wanders; interleaving makes the ratios fair). Records requests/s,
   p50/p99 latency and errors (results/serving.json) for every round, with the machine's load
   during each round and the cores other processes kept busy just before the servers started.
   p99 is reported per round and summarised as the median round's and the worst round's: one
   round caught by another process's burst shows as one bad round, not as the server's p99.

usage: python benchmarks/serving.py [--rounds 3] [--seconds 10] [--concurrency 32]
The load generator shares the CPU with the server (2 cores here): the figures are for this
machine as a whole, and the ratios between servers are what transfers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, RESULTS_DIR, OutsideLoad, machine, table, write_json

RUNS = {
    "digits_cnn": ["train.epochs=8", "doctor.label_noise=false"],
    "wine_mlp": ["train.epochs=30", "doctor.label_noise=false"],
}
SERVED = "digits_cnn"


def layerwise(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "layerwise.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"layerwise {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout


def train_and_export(root: Path) -> dict:
    exports = {}
    for name, overrides in RUNS.items():
        sets = [part for o in overrides for part in ("--set", o)]
        layerwise("train", name, *sets, "--quiet", "--runs-dir", "runs", cwd=root)
        for format in ("onnx", "torchscript"):
            started = time.perf_counter()
            layerwise("export", name, "--format", format, "--runs-dir", "runs", cwd=root)
            seconds = time.perf_counter() - started
            suffix = ".onnx" if format == "onnx" else ".pt"
            meta_path = root / "runs" / name / "export" / f"model{suffix}.json"
            parity = json.loads(meta_path.read_text())["parity"]
            exports[f"{name}/{format}"] = {
                "run": name,
                "format": format,
                "max_abs_diff": parity["max_abs_diff"],
                "samples": parity["samples"],
                "batch_sizes": parity["batch_sizes"],
                "export_seconds_incl_cli_start": round(seconds, 2),
            }
            print(f"export {name} {format}: max abs diff {parity['max_abs_diff']:.3g}")
    return exports


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(command: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_healthy(url: str, process: subprocess.Popen) -> None:
    for _ in range(1200):
        if process.poll() is not None:
            raise SystemExit(f"server at {url} died:\n{process.stderr.read().decode()}")
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit(f"server at {url} did not come up")


async def load(url: str, rows: list[list[float]], requests: int, concurrency: int) -> dict:
    """`requests` POSTs of one row each from `concurrency` clients; latencies in ms."""
    latencies: list[float] = []
    errors = 0
    next_index = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def worker() -> None:
            nonlocal errors, next_index
            while next_index < requests:
                row = rows[next_index % len(rows)]
                next_index += 1
                started = time.perf_counter()
                try:
                    response = await client.post("/predict", json={"rows": [row]})
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append((time.perf_counter() - started) * 1000)
                errors += not ok

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return {
        "requests": requests,
        "seconds": wall,
        "errors": errors,
        "p50_ms": float(np.percentile(latencies, 50)),
        "p99_ms": float(np.percentile(latencies, 99)),
    }


WRK_SCRIPT = """
bodies = {%s}
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("POST", "/predict", {["Content-Type"] = "application/json"},
                    bodies[(counter %% #bodies) + 1])
end
"""


def load_wrk(url: str, rows: list[list[float]], seconds: float, concurrency: int) -> dict:
    """wrk (C, one thread) as the client: it costs the machine far less CPU than a Python
    client, so the server, not the client, is what is measured. Percentiles are wrk's."""
    # Lua long strings of level 1 ([=[ ... ]=]): the JSON itself ends in "]]"
    bodies = ", ".join("[=[" + json.dumps({"rows": [row]}) + "]=]" for row in rows[:100])
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT % bodies)
    command = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds:g}s", "--latency", "-s"]
    done = subprocess.run([*command, script.name, url], capture_output=True, text=True, check=True)
    text = done.stdout
    requests = int(re.search(r"(\d+) requests in ([\d.]+)(\w+)", text).group(1))
    wall = float(re.search(r"requests in ([\d.]+)s", text).group(1))
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", text))
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    if socket_errors:
        errors += sum(map(int, socket_errors.groups()))

    def percentile(p: str) -> float:
        value, unit = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", text).groups()
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1000.0}[unit]

    return {
        "requests": requests,
        "seconds": wall,
        "errors": errors,
        "p50_ms": percentile("50"),
        "p99_ms": percentile("99"),
        "raw": text,
    }


def summary(parts: list[dict]) -> dict:
    """Totals, and each round's requests/s, p50, p99 and load: the median round's p50 and p99
    stand for the server, the worst round's p99 is kept beside them."""
    p99 = [round(p["p99_ms"], 1) for p in parts]
    return {
        "requests": int(sum(p["requests"] for p in parts)),
        "errors": int(sum(p["errors"] for p in parts)),
        "requests_per_s": round(
            sum(p["requests"] for p in parts) / sum(p["seconds"] for p in parts), 1
        ),
        "requests_per_s_per_round": [round(p["requests"] / p["seconds"], 1) for p in parts],
        "p50_ms": round(float(np.median([p["p50_ms"] for p in parts])), 2),
        "p99_ms": round(float(np.median(p99)), 2),
        "p99_ms_worst_round": max(p99),
        "p50_ms_per_round": [round(p["p50_ms"], 1) for p in parts],
        "p99_ms_per_round": p99,
        "load_1min_per_round": [round(p["load_1min"], 1) for p in parts],
        "percentiles": "per round (wrk's own, or from the httpx client's latencies); p50_ms and "
        "p99_ms are the median round's",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="per server per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10, help="per server per round, with wrk")
    parser.add_argument(
        "--client",
        choices=["auto", "wrk", "httpx"],
        default="auto",
        help="auto: wrk when installed (apt-get install wrk), else httpx",
    )
    parser.add_argument(
        "--reuse", type=Path, help="folder of an earlier call (its runs/): skip training, export"
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "serving.json")
    parser.add_argument("--export-out", type=Path, default=RESULTS_DIR / "export.json")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run (1 short round); writes no JSON"
    )
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds, args.requests = 1, 2, 100
        args.out = args.export_out = None
    about = machine()
    client = args.client if args.client != "auto" else ("wrk" if shutil.which("wrk") else "httpx")
    if args.reuse is not None:  # the runs of an earlier call: serving only
        root = args.reuse
    else:
        root = Path(tempfile.mkdtemp(prefix="layerwise-serving-"))
        exports = train_and_export(root)
        write_json(args.export_out, {"machine": about, "exports": exports, "tolerance": 1e-4})

    from layerwise.data import load_dataset

    # raw rows as a client has them: pixels 0-255 (scikit-learn's digits are 0-16)
    pixels = (load_dataset("digits").test[0].reshape(-1, 64) * 255 / 16).tolist()
    run_folder = str(root / "runs" / SERVED)
    servers = {
        "layerwise serve (micro-batching 32, 5 ms)": [
            *("serve", SERVED, "--max-batch", "32", "--max-wait-ms", "5"),
        ],
        "layerwise serve (no batching)": ["serve", SERVED, "--max-batch", "1"],
        "anchor: hand-written FastAPI, no batching": None,
    }
    outside = OutsideLoad()
    time.sleep(5)
    outside_before = outside.sample()  # cores other processes kept busy, before ours start
    print(f"other processes kept {outside_before:.1f} cores busy before the servers started")
    processes, urls = {}, {}
    for label, cli_args in servers.items():
        port = free_port()
        if cli_args is None:
            command = [sys.executable, str(REPO / "benchmarks" / "serving_anchor.py"), run_folder]
            command.append(str(port))
        else:
            command = [sys.executable, "-m", "layerwise.cli", *cli_args, "--port", str(port)]
            command += ["--runs-dir", "runs"]
        processes[label] = start(command, root)
        urls[label] = f"http://127.0.0.1:{port}"
    try:
        for label, url in urls.items():
            wait_healthy(url, processes[label])
            asyncio.run(load(url, pixels, 200, args.concurrency))  # warm-up, not recorded
        parts: dict[str, list[dict]] = {label: [] for label in servers}
        load_during = []
        for round_number in range(args.rounds):
            order = list(servers) if round_number % 2 == 0 else list(reversed(servers))
            for label in order:
                if client == "wrk":
                    part = load_wrk(urls[label], pixels, args.seconds, args.concurrency)
                else:
                    part = asyncio.run(load(urls[label], pixels, args.requests, args.concurrency))
                part["load_1min"] = os.getloadavg()[0]
                parts[label].append(part)
                load_during.append(list(os.getloadavg()))
                print(
                    f"round {round_number + 1} {label}: "
                    f"{part['requests'] / part['seconds']:.0f} req/s, p50 {part['p50_ms']:.0f} "
                    f"ms, p99 {part['p99_ms']:.0f} ms, {part['errors']} errors, "
                    f"load {part['load_1min']:.1f}"
                )
    finally:
        for process in processes.values():
            process.terminate()
            process.wait(timeout=30)
    results = {label: summary(p) for label, p in parts.items()}
    anchor = results["anchor: hand-written FastAPI, no batching"]["requests_per_s"]
    for result in results.values():
        result["requests_per_s_vs_anchor"] = round(result["requests_per_s"] / anchor, 2)
    rows = [
        [
            label,
            r["requests"],
            r["errors"],
            r["requests_per_s"],
            r["p50_ms"],
            r["p99_ms"],
            " / ".join(f"{v:.0f}" for v in r["p99_ms_per_round"]),
            r["requests_per_s_vs_anchor"],
        ]
        for label, r in results.items()
    ]
    headers = ["server", "requests", "errors", "req/s", "p50 ms", "p99 ms", "p99 per round"]
    print(table([*headers, "vs anchor"], rows))
    write_json(
        args.out,
        {
            "machine": about,
            "model": f"{SERVED} (bundled recipe, 8 epochs), one row of 64 raw pixels per request",
            "load": {
                "client": client,
                "seconds_per_server_per_round": args.seconds if client == "wrk" else None,
                "requests_per_server_per_round": args.requests if client == "httpx" else None,
                "rounds": args.rounds,
                "concurrency": args.concurrency,
                "where": "client and servers on the same 2-core machine, loopback",
            },
            "outside_cores_busy_before": round(outside_before, 2),
            "load_average_during": load_during,
            "load_average_at_end": list(os.getloadavg()),
            "servers": results,
            "command": "python benchmarks/serving.py " + " ".join(sys.argv[1:]),
        },
    )


if __name__ == "__main__":
    main()
