"""Device choice, precision, seeding and CPU threads: thin wrappers over what PyTorch documents."""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from layerwise.errors import RecipeError

PRECISIONS = ("fp32", "bf16", "fp16", "auto")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """`auto` picks CUDA, then Apple MPS, then the CPU; anything else is passed to torch.device."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise RecipeError(
            f"unknown device '{device}'", hint="use auto, cpu, cuda, cuda:0 or mps"
        ) from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RecipeError(f"device '{device}' asked for but CUDA is not available", hint="use auto")
    return resolved


def resolve_precision(device: torch.device, precision: str) -> str:
    """`auto` is bf16 where `device` computes in bf16 natively, else fp32; others are kept.

    bf16 autocast halves the memory traffic of convolutions and matrix products: on a CPU with
    AVX512-BF16 it took the MNIST VGG CNN's step to 0.57-0.77 of fp32's at the same accuracy,
    though on a net of 0.8M MACs per image the gain was lost in noise (benchmarks/mnist_fast.py).
    On a CPU without it bf16 is emulated and slower than fp32.
    """
    if precision not in PRECISIONS:
        raise RecipeError(
            f"unknown precision '{precision}'", hint=f"choose one of: {', '.join(PRECISIONS)}"
        )
    if precision != "auto":
        return precision
    return "bf16" if native_bf16(device) else "fp32"


def native_bf16(device: torch.device) -> bool:
    """Whether `device` has bf16 arithmetic in hardware (a CUDA GPU from Ampere on; a CPU with
    AVX512-BF16 or AMX, as oneDNN reports it)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        supported = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
        try:
            return bool(supported()) if supported is not None else False
        except RuntimeError:
            return False
    return False


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed precision as PyTorch documents it; fp32 is a no-op context."""
    precision = resolve_precision(device, precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (all devices) so a run is reproducible."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every RNG state, in types that `torch.load(weights_only=True)` accepts."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------ CPU threads
# Forward multiply-adds per batch that keep one intra-op thread busy enough to be worth a second
# one. Below it, thread start-up and barriers cost more than they save (the quick start's CNN,
# ~2 M per batch, is fastest on one thread even on an idle machine; benchmarks/busy_cpu.py).
MACS_PER_THREAD = 20_000_000
THREAD_ENV_VARS = ("LAYERWISE_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


class CpuThreads:
    """Choose torch's intra-op thread count for one `fit` on the CPU, and keep it right.

    Two intra-op threads spinning on two cores that another process also wants is the worst
    case of all: each parallel region waits at a barrier for the thread the OS preempted, and an
    epoch can take 50 times longer. So a fit uses one thread per `MACS_PER_THREAD` of work per
    batch, at most the cores this process may run on (`os.sched_getaffinity`) minus the cores
    other processes keep busy (from `/proc/stat`, measured before the first epoch and again over
    every epoch, so training follows the load as it comes and goes). The count is restored when
    the fit ends.

    An explicit choice wins: `requested` as a number, or `LAYERWISE_THREADS` / `OMP_NUM_THREADS`
    / `MKL_NUM_THREADS` in the environment (torch reads the last two itself). `requested=None`
    leaves torch's setting alone. Set a number for bit-identical results across machines and
    loads: a larger model trained on a machine whose load changes may switch thread counts
    between epochs, which can change the last bits of a reduction.
    """

    def __init__(self, requested: int | str | None = "auto") -> None:
        if requested not in ("auto", None) and not (isinstance(requested, int) and requested > 0):
            raise RecipeError(
                f"threads must be a positive number, 'auto' or None, got {requested!r}",
                hint="e.g. threads=1 on a busy machine, or 'auto' to choose from model and load",
            )
        self.requested = requested
        self.previous: int | None = None
        self.count: int | None = None
        self.cap = 1  # threads the work per batch can use
        self._load = OutsideLoad()

    def start(self, device: torch.device, macs_per_batch: Callable[[], float]) -> int | None:
        """Set the thread count for a fit; returns it (None when left to torch).

        `macs_per_batch()` estimates the forward work of one batch; it is called only when the
        machine has more than one core to choose from.
        """
        if device.type != "cpu" or self.requested is None:
            return None
        explicit = self.explicit()
        self.previous = torch.get_num_threads()
        if explicit is not None:
            self.cap = explicit
            return self._set(explicit)
        cores = usable_cores()
        work = macs_per_batch() if cores > 1 else 0.0
        self.cap = max(1, min(cores, int(work // MACS_PER_THREAD)))
        if self.cap == 1:
            return self._set(1)
        return self._set(self._free_threads(self._load.measure(0.05)))

    def epoch_end(self) -> int | None:
        """Follow the load: the outside load over the epoch just done decides the next one's."""
        if self.previous is None or self.cap == 1 or self.explicit() is not None:
            return self.count
        return self._set(self._free_threads(self._load.sample()))

    def restore(self) -> None:
        """Put back the thread count the fit started with (`count` keeps the last one used)."""
        if self.previous is not None and self.previous != torch.get_num_threads():
            torch.set_num_threads(self.previous)
        self.previous = None

    def explicit(self) -> int | None:
        if isinstance(self.requested, int):
            return self.requested
        for name in THREAD_ENV_VARS:
            value = os.environ.get(name, "").strip()
            if value.isdigit() and int(value) > 0:
                return int(value)
        return None

    def _free_threads(self, outside: float) -> int:
        busy = round(outside) if math.isfinite(outside) else 0
        return max(1, min(self.cap, usable_cores() - busy))

    def _set(self, count: int) -> int:
        if count != torch.get_num_threads():
            torch.set_num_threads(count)
        self.count = count
        return count


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


class OutsideLoad:
    """Cores kept busy by other processes: all CPU time in /proc/stat minus this process's.

    `sample()` gives the average since the previous sample (0.0 idle, 1.0 when another process
    kept one core busy); NaN where /proc/stat does not exist (then no core is counted busy).
    """

    def __init__(self) -> None:
        self._last = _cpu_times()

    def sample(self) -> float:
        now, last = _cpu_times(), self._last
        self._last = now
        if now is None or last is None or now[2] <= last[2]:
            return math.nan
        return max((now[0] - last[0]) - (now[1] - last[1]), 0.0) / (now[2] - last[2])

    def measure(self, seconds: float) -> float:
        """Sample over the next `seconds` (this process sleeping, so all of it is outside)."""
        self.sample()
        time.sleep(seconds)
        return self.sample()


def _cpu_times() -> tuple[float, float, float] | None:
    """(busy seconds of all CPUs, this process's CPU seconds, wall clock)."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            first = stat.readline().split()
    except OSError:
        return None
    # user nice system idle iowait irq softirq steal (guest time is already in user and nice)
    ticks = [int(v) for v in first[1:9]]
    busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
    return busy, sum(os.times()[:2]), time.perf_counter()


def forward_macs(model: torch.nn.Module, forward: Callable[[], Any]) -> int:
    """Multiply-adds of the linear and convolution layers in one `forward()` of `model`.

    Run in eval mode without gradients, so batch-norm statistics and the RNG are untouched.
    """
    total = 0

    def count(module: torch.nn.Module, args: tuple, output: Any) -> None:
        nonlocal total
        if not isinstance(output, torch.Tensor):
            return
        if isinstance(module, torch.nn.Linear):
            total += output.numel() * module.in_features
        else:
            kernel = math.prod(module.kernel_size) * module.in_channels // module.groups
            total += output.numel() * kernel

    layers = (torch.nn.Linear, torch.nn.modules.conv._ConvNd)
    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, layers)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            forward()
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return total
