"""Data-parallel training over several processes (torch.distributed), started by torchrun.

Every process (a *rank*) holds the whole model and trains on its own shard of each global batch:
all ranks draw the same permutation of the epoch from the recipe's seed (`data.batcher`), each
global batch of `batch_size` rows is cut into `world_size` disjoint parts, and rank `r` trains on
part `r`. After each backward pass the gradients are averaged across ranks, weighted by the rows
each rank saw, so every rank applies the same update that one process would have applied to the
whole batch: the loss curve and the final weights match a single-process run up to float
rounding (measured in `benchmarks/distributed.py`).

Why by hand and not `DistributedDataParallel`: the Trainer's `backward` reduces the gradients in
one collective (one flat buffer), before `after_backward`, so the doctor's gradient probes read
the averaged gradients; steps that backpropagate into a subset of the parameters (a GAN's two
optimizers), parameters that unfreeze mid-training and unused parameters need no special case;
and the model a checkpoint saves is the user's module, never a wrapper. DDP's overlap of
communication with the backward pass is what this gives up, which matters for big models on
GPUs, not for the CPU models here (the benchmark compares both).

What the Trainer calls (`Trainer.dist` is None in a single process, so no collective runs then):
`shard` the batchers, `broadcast_model` at the start of a fit, `reduce_gradients` after each
backward, `agree_to_stop` after each step (so every rank stops at the same step), and
`merge_epoch` / `average_buffers` at the end of an epoch and of validation.

Example (what `layerwise train RECIPE --nproc 2` runs):
    python -m torch.distributed.run --standalone --nproc-per-node 2 -m layerwise.cli train RECIPE
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from layerwise.data.batch import tree_map
from layerwise.data.batcher import InMemoryBatcher, shard_rows
from layerwise.errors import LayerwiseError

if TYPE_CHECKING:
    from layerwise.train.logs import StepLogs
    from layerwise.train.metrics import Metric
    from layerwise.train.trainer import Trainer

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")  # set by torchrun for every process it starts
JOINED_METRIC_STATES = ("scores", "targets")  # per-row states (ROC-AUC): joined, not summed


@dataclass(frozen=True)
class Distributed:
    """This process's place in a data-parallel group of `world_size` > 1 processes."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        """Rank 0, the only process that writes (run folder, checkpoints, logs, progress)."""
        return self.rank == 0

    # ------------------------------------------------------------------ data
    def shard(self, batcher: Any) -> Any:
        """`batcher` yielding this rank's part of every global batch (same number of batches).

        An in-memory batcher indexes only its own rows; any other batcher's batches are loaded
        whole and cut (simple, but every rank then loads every row)."""
        if batcher is None:
            return None
        if isinstance(batcher, InMemoryBatcher):
            return batcher.shard(self.rank, self.world_size)
        return _SplitBatcher(batcher, self.rank, self.world_size)

    # ------------------------------------------------------------- the model
    def broadcast_model(self, model: nn.Module) -> None:
        """Give every rank rank 0's weights and buffers (as DDP does when it wraps a model)."""
        with torch.no_grad():
            for tensor in [*model.parameters(), *model.buffers()]:
                dist.broadcast(tensor.data, src=0)

    def reduce_gradients(self, params: Iterable[Tensor], rows: int) -> None:
        """Average the gradients of `params` across ranks, weighted by each rank's `rows`.

        One collective on one flat buffer: every gradient times `rows`, a 0/1 flag per parameter
        (did it get a gradient here), and `rows` itself. A parameter that got no gradient on
        any rank keeps `grad=None`, so the optimizer skips it as it would in one process.
        Gradients accumulated by an earlier backward (already averaged, hence equal on all ranks)
        stay exact, since the weights sum to one.
        """
        params = [p for p in params if p.requires_grad]
        if not params:
            return
        template = next((p.grad for p in params if p.grad is not None), params[0])
        parts = [
            (p.grad.detach() if p.grad is not None else torch.zeros_like(p)).reshape(-1)
            for p in params
        ]
        options = {"dtype": template.dtype, "device": template.device}
        flags = torch.tensor([p.grad is not None for p in params], **options)
        count = torch.tensor([float(rows)], **options)
        flat = torch.cat([torch.cat(parts).to(template.dtype).mul_(rows), flags, count])
        dist.all_reduce(flat)
        total_rows = flat[-1]
        offset = 0
        for p, got in zip(params, flat[-1 - len(params) : -1].tolist(), strict=True):
            n = p.numel()
            if got:
                averaged = (flat[offset : offset + n] / total_rows).view_as(p)
                if p.grad is None:
                    p.grad = averaged.to(p.dtype).clone()
                else:
                    p.grad.copy_(averaged)
            offset += n

    def average_buffers(self, model: nn.Module) -> None:
        """Average floating-point buffers (batch-norm running statistics) across ranks.

        Each rank's batch norm sees only its shard of a batch, so the running statistics drift
        apart; averaging them before validation (and before a checkpoint) keeps every rank
        evaluating the same model."""
        buffers = [b for b in model.buffers() if b.is_floating_point()]
        if not buffers:
            return
        flat = torch.cat([b.detach().reshape(-1).double() for b in buffers])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for b in buffers:
            b.copy_(flat[offset : offset + b.numel()].view_as(b))
            offset += b.numel()

    # ----------------------------------------------------------------- logs
    def agree_to_stop(self, trainer: Trainer) -> None:
        """Stop every rank when any rank stops (early stopping, the doctor, a signal), so that no
        rank waits forever in the next collective; a fatal stop anywhere is fatal everywhere."""
        reason = trainer.stop_reason
        wants = [trainer.stop_training, reason is not None and reason.fatal]
        flags = torch.tensor(wants, dtype=torch.int32, device=trainer.device)  # NCCL: on the GPU
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        stop, fatal = bool(flags[0]), bool(flags[1])
        if stop and (not trainer.stop_training or (fatal and not reason.fatal)):
            trainer.stop("another process stopped training", source="distributed", fatal=fatal)

    def merge_epoch(self, step_logs: StepLogs, metrics: Sequence[Metric]) -> None:
        """Replace this rank's epoch sums (step logs and metric counts) with those of all ranks.

        Once per epoch and per validation, so a pickled gather of the small states is cheap.
        Counts and sums add up; per-row states (ROC-AUC's scores) are joined in rank order."""
        mine = (step_logs.state_dict(), [m.state_dict() for m in metrics])
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, _cpu(mine))
        step_logs.load_state_dict(_merge_step_logs([g[0] for g in gathered]))
        for i, metric in enumerate(metrics):
            states = [g[1][i] for g in gathered if g[1][i]]
            if states:
                metric.load_state_dict(_merge_metric_states(states))

    def maximum(self, values: Tensor) -> Tensor:
        """The elementwise maximum of `values` over the ranks (a new tensor)."""
        top = values.detach().clone()
        dist.all_reduce(top, op=dist.ReduceOp.MAX)
        return top

    def average(self, values: Tensor) -> Tensor:
        """The mean of `values` over the ranks (a new tensor; `values` is left as it was)."""
        total = values.detach().clone()
        dist.all_reduce(total)
        return total / self.world_size


# ---------------------------------------------------------------------- process group
def setup() -> Distributed | None:
    """Join the process group torchrun describes in RANK/WORLD_SIZE/LOCAL_RANK, once.

    None in a single process (no such variables, or WORLD_SIZE 1): then nothing here runs. The
    backend is chosen as PyTorch documents it: NCCL for GPUs, Gloo for CPUs; with CUDA each
    process takes the GPU of its LOCAL_RANK.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world_size <= 1 or not dist.is_available():
        return None
    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return current()


def current() -> Distributed | None:
    """This process's `Distributed`, when it belongs to a group of more than one process."""
    if not dist.is_available() or not dist.is_initialized() or dist.get_world_size() <= 1:
        return None
    local_rank = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    return Distributed(dist.get_rank(), dist.get_world_size(), local_rank)


def is_main_process() -> bool:
    """True unless this is a rank other than 0 of a distributed run (which must not write).

    Read from the environment torchrun sets, so it answers before the group is joined."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0") or 0) == 0


def launched_by_torchrun() -> bool:
    """Whether this process is one of several that torchrun started."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def teardown() -> None:
    """Leave the process group (at the end of a run), if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def stop_on_signal(trainer: Trainer) -> Iterator[None]:
    """On a rank other than 0, SIGINT or SIGTERM (Ctrl-C reaches every process) stops the fit
    after the current step instead of killing the process between two collectives: every rank
    then stops at the same step (`agree_to_stop`), where rank 0 checkpoints (`StopOnSignal`)."""

    def handle(number: int, frame: object) -> None:
        trainer.stop(f"stopped by {signal.Signals(number).name}", source="signal")

    previous = {number: signal.signal(number, handle) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def torchrun_command(args: Sequence[str], nproc: int) -> list[str]:
    """The command that runs `layerwise ARGS` in `nproc` processes on this machine."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "layerwise.cli",
        *args,
    ]


def launch(args: Sequence[str], nproc: int) -> int:
    """Run `layerwise ARGS` in `nproc` processes through torchrun; returns its exit code.

    torchrun sets OMP_NUM_THREADS=1 per process unless it is set, so N processes on N cores do
    not oversubscribe them. A Ctrl-C reaches torchrun and every process too: this one waits for
    them, while rank 0 checkpoints at the next step and every rank stops there.
    """
    check_nproc(nproc)
    # torchrun's own default, set here so that it does not print a banner about it
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    with subprocess.Popen(torchrun_command(args, nproc), env=env) as torchrun:
        while True:
            try:
                return torchrun.wait()
            except KeyboardInterrupt:
                continue


def check_nproc(nproc: int) -> None:
    """Refuse a process count that is not a positive integer, or --nproc inside torchrun."""
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise LayerwiseError(
            f"--nproc must be a positive number of processes, got {nproc!r}",
            hint="e.g. --nproc 2 (one process per CPU core or GPU)",
        )
    if launched_by_torchrun():
        raise LayerwiseError(
            "--nproc was given inside a process torchrun started",
            hint="use either torchrun --nproc-per-node N or layerwise train --nproc N, not both",
        )


# ---------------------------------------------------------------------------- helpers
class _SplitBatcher:
    """Any batcher, yielding only this rank's rows of each batch it yields."""

    def __init__(self, batcher: Any, rank: int, world_size: int) -> None:
        self.batcher, self.rank, self.world_size = batcher, rank, world_size

    def __len__(self) -> int:
        return len(self.batcher)

    def set_epoch(self, epoch: int) -> None:
        self.batcher.set_epoch(epoch)

    def __iter__(self) -> Iterator[Any]:
        return self.iter_from(0)

    def iter_from(self, batch_index: int) -> Iterator[Any]:
        for batch in self.batcher.iter_from(batch_index):
            rows = _rows(batch)
            index = shard_rows(torch.arange(rows), self.rank, self.world_size)
            yield tree_map(lambda t, i=index: t[i.to(t.device)] if t.dim() else t, batch)


def _rows(batch: Any) -> int:
    found: list[int] = []
    tree_map(lambda t: found.append(len(t)) if t.dim() else None, batch)
    return found[0]


def _cpu(tree: Any) -> Any:
    """Tensors moved to the CPU, so a gather can pickle them whatever the device."""
    if isinstance(tree, Tensor):
        return tree.detach().cpu()
    if isinstance(tree, dict):
        return {k: _cpu(v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return type(tree)(_cpu(v) for v in tree)
    return tree


def _merge_step_logs(states: list[dict[str, Any]]) -> dict[str, Any]:
    totals: dict[str, Any] = {}
    weights: dict[str, float] = {}
    for state in states:
        for key, value in state["totals"].items():
            totals[key] = totals[key] + value if key in totals else value
        for key, value in state["weights"].items():
            weights[key] = weights.get(key, 0.0) + value
    return {"totals": totals, "weights": weights}


def _merge_metric_states(states: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    merged: dict[str, Tensor] = {}
    for key, first in states[0].items():
        values = [state[key] for state in states]
        if key in JOINED_METRIC_STATES:
            merged[key] = torch.cat(values)
        elif first.dtype == torch.bool:  # a flag (binary task): the same on every rank
            merged[key] = first
        else:
            merged[key] = torch.stack(values).sum(0).to(first.dtype)
    return merged
