"""Gate saturation of LSTM/GRU layers as the probes log it: healthy and broken runs, and its cost.

Two parts, on synthetic sequences whose label is the sign of the mean of one input feature over
40 steps (an LSTM/GRU learns it to > 95% in a few epochs):

1. **What it reads.** An LSTM and a GRU classifier trained as written (standardised inputs,
   PyTorch's init), then the same with inputs x100 (unscaled measurements) and with the
   recurrent layer's weights drawn from N(0, 1) (a "huge init"): the median `gate_sat_frac` of
   the probed steps per epoch, the training loss and the validation accuracy at the end.
2. **What it costs.** Seconds per epoch of the healthy LSTM with the probes sampling every step
   (the worst case), with and without the gate recomputation, interleaved epoch by epoch so the
   machine's load cancels out; and with the probes' default sampling (`every="auto"`).

    .venv/bin/python benchmarks/gate_saturation.py [--output PATH]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, machine, table, write_json
from layerwise.diagnose import probes as probes_module
from layerwise.diagnose.probes import Probes
from layerwise.train import Trainer

STEPS, FEATURES, HIDDEN = 40, 4, 32


def sequences(rows: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, STEPS, FEATURES, generator=g)
    return x, (x[:, :, 0].mean(1) > 0).long()


class Classifier(nn.Module):
    def __init__(self, cell: str, scale: float, huge_init: bool) -> None:
        super().__init__()
        self.scale = scale
        self.rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[cell](FEATURES, HIDDEN, batch_first=True)
        self.head = nn.Linear(HIDDEN, 2)
        if huge_init:
            for name, p in self.rnn.named_parameters():
                if name.startswith("weight"):
                    nn.init.normal_(p, 0.0, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x * self.scale)[0][:, -1])


CASES = {
    "healthy": {"scale": 1.0, "huge_init": False},
    "inputs x100": {"scale": 100.0, "huge_init": False},
    "weights N(0, 1)": {"scale": 1.0, "huge_init": True},
}


def read(cell: str, case: str, epochs: int = 8, seed: int = 0) -> dict[str, Any]:
    torch.manual_seed(seed)
    model = Classifier(cell, **CASES[case])
    probes = Probes(every=5)
    trainer = Trainer(model, optimizer="adam", lr=3e-3, doctor=False, callbacks=[probes], seed=0)
    train, val = sequences(2000, seed), sequences(500, seed + 1)
    trainer.fit(train, val, epochs=epochs, batch_size=32)
    per_epoch: dict[int, list[float]] = {}
    for step in probes.log.steps:
        stats = step["layers"].get("rnn", {})
        if "gate_sat_frac" in stats:
            per_epoch.setdefault(step["epoch"], []).append(stats["gate_sat_frac"])
    last = trainer.history[-1]
    return {
        "cell": cell,
        "case": case,
        "gate_sat_frac_by_epoch": {e: statistics.median(v) for e, v in sorted(per_epoch.items())},
        "gate_keys": sorted(k for k in probes.log.steps[0]["layers"]["rnn"] if "gate" in k),
        "loss": last.get("loss"),
        "val_accuracy": last.get("val_accuracy"),
        "load_average": list(os.getloadavg()),
    }


def cost(epochs: int = 6) -> dict[str, Any]:
    """Seconds per epoch with the gate recomputation on and off (probes every step), and with
    the default sampling, interleaved."""
    data = sequences(2000, 0)
    times: dict[str, list[float]] = {"every step, gates on": [], "every step, gates off": []}
    times["auto sampling, gates on"] = []
    gated = probes_module.GATED_TYPES
    for _ in range(epochs):
        for label in times:
            probes_module.GATED_TYPES = gated if "gates on" in label else ()
            every = 1 if "every step" in label else "auto"
            torch.manual_seed(0)
            trainer = Trainer(
                Classifier("lstm", 1.0, False), doctor=False, callbacks=[Probes(every=every)]
            )
            start = time.perf_counter()
            trainer.fit(data, epochs=1, batch_size=32)
            times[label].append(time.perf_counter() - start)
    probes_module.GATED_TYPES = gated
    medians = {label: statistics.median(t) for label, t in times.items()}
    return {
        "seconds_per_epoch": times,
        "median": medians,
        "gates_on_over_off_every_step": medians["every step, gates on"]
        / medians["every step, gates off"],
        "load_average": list(os.getloadavg()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "gate_saturation.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    payload: dict[str, Any] = {"machine": machine(), "runs": [], "cost": None}
    for cell in ("lstm", "gru"):
        for case in CASES:
            payload["runs"].append(read(cell, case))
            write_json(args.output, payload)
    rows = [
        [
            r["cell"],
            r["case"],
            " ".join(f"{v:.2f}" for v in r["gate_sat_frac_by_epoch"].values()),
            f"{r['loss']:.3f}",
            f"{r['val_accuracy']:.3f}",
        ]
        for r in payload["runs"]
    ]
    print(table(["cell", "case", "gate_sat_frac per epoch", "train loss", "val acc"], rows))
    payload["cost"] = cost()
    print({k: round(v, 3) for k, v in payload["cost"]["median"].items()})
    print(
        f"gates on / off, probes every step: {payload['cost']['gates_on_over_off_every_step']:.3f}"
    )
    payload["machine"]["load_average_at_end"] = list(os.getloadavg())
    write_json(args.output, payload)


if __name__ == "__main__":
    main()
