"""Stop training cleanly on SIGINT or SIGTERM: checkpoint at the next step boundary, then stop.

A Ctrl-C (or the SIGTERM a scheduler or `docker stop` sends) would otherwise land anywhere in a
step and leave only the last epoch's checkpoint. Here the signal only raises a flag; the step in
progress finishes, and at its end the run's `last` checkpoint is written and `trainer.stop` ends
`fit` as any other stop does (`on_fit_end` runs, so the doctor's logs are flushed). A second
signal while the first is pending gives up at once with `KeyboardInterrupt`: every write of a run
is atomic, so that leaves the previous checkpoint as it was.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

from layerwise.errors import LayerwiseError
from layerwise.train.callbacks.base import Callback

if TYPE_CHECKING:
    from layerwise.runs import Run
    from layerwise.train.trainer import Trainer

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopOnSignal(Callback):
    """Turn SIGINT/SIGTERM into a checkpoint and a clean stop (see the module docstring).

    Args:
        run: the `layerwise.runs.Run` whose `last` checkpoint is written on the signal.

    Example:
        >>> stopper = StopOnSignal(run)
        >>> trainer.callbacks.append(stopper)
        >>> with stopper.listening():  # doctest: +SKIP
        ...     trainer.fit(train, epochs=30)
        >>> stopper.received  # signal.SIGINT after a Ctrl-C, else None
    """

    order = 25  # after MetricsLogger and ModelCheckpoint: the checkpoint holds what they did

    def __init__(self, run: Run) -> None:
        self.run = run
        self.received: signal.Signals | None = None
        self.saved_step: int | None = None

    @contextlib.contextmanager
    def listening(self) -> Iterator[StopOnSignal]:
        """Handle SIGINT and SIGTERM inside the block (main thread only; elsewhere a no-op)."""
        self.received, self.saved_step = None, None
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {number: signal.signal(number, self._handle) for number in SIGNALS}
        try:
            yield self
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    def _handle(self, number: int, frame: object) -> None:
        if self.received is not None:
            raise KeyboardInterrupt(f"second {signal.Signals(number).name}: stopped at once")
        self.received = signal.Signals(number)

    def on_batch_end(self, trainer: Trainer) -> None:
        if self.received is not None:
            self._checkpoint_and_stop(trainer)

    def on_epoch_end(self, trainer: Trainer) -> None:  # a signal during validation
        if self.received is not None:
            self._checkpoint_and_stop(trainer)

    def _checkpoint_and_stop(self, trainer: Trainer) -> None:
        if self.saved_step != trainer.state.step:
            weights = {k: v.detach() for k, v in trainer.model.state_dict().items()}
            stopped = trainer.stop_reason
            fatal = stopped is not None and stopped.fatal
            if not fatal and all(bool(torch.isfinite(w).all()) for w in _floats(weights)):
                self.run.save_checkpoint(weights, trainer.state_dict())
                self.saved_step = trainer.state.step
        trainer.stop(f"stopped by {self.received.name}", source="signal")


@contextlib.contextmanager
def guarded_fit(run: Run, trainer: Trainer) -> Iterator[StopOnSignal]:
    """Keep `run`'s status true to what happens to the `trainer.fit` inside the block.

    The run is `running` inside; SIGINT or SIGTERM checkpoints at the next step boundary and
    stops (`StopOnSignal`). Then, as after a second signal or any other interrupt, the run is
    marked `stopped` and a `KeyboardInterrupt` carrying the run (and the signal) goes up, so the
    CLI can say how to resume. Any other error marks it `failed` when run.json can still be
    written (a full disk may refuse that too; the original error is what is raised).

    Example:
        >>> with guarded_fit(run, trainer):  # doctest: +SKIP
        ...     trainer.fit(train, epochs=30)
    """
    run.set_status("running")
    stopper = StopOnSignal(run)
    trainer.callbacks.append(stopper)
    try:
        with stopper.listening():
            yield stopper
        if stopper.received is not None:
            raise _interrupted(stopper, trainer)
    except KeyboardInterrupt as interrupt:
        run.set_status("stopped")
        interrupt.run = run  # lets the CLI say how to resume
        raise
    except BaseException:
        with contextlib.suppress(LayerwiseError):
            run.set_status("failed")
        raise
    finally:
        trainer.callbacks.remove(stopper)


def _interrupted(stopper: StopOnSignal, trainer: Trainer) -> KeyboardInterrupt:
    """The interrupt a clean stop on a signal ends with, saying where it stopped."""
    where = f"step {trainer.state.step} ({trainer.state.epoch} epoch(s) complete)"
    saved = "checkpoint saved" if stopper.saved_step is not None else "no checkpoint written"
    interrupt = KeyboardInterrupt(f"stopped by {stopper.received.name} at {where}; {saved}")
    interrupt.signal = stopper.received
    return interrupt


def _floats(weights: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    return [w for w in weights.values() if w.is_floating_point()]
