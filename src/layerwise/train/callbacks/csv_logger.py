"""Write each epoch's logs as a row of a CSV file."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

from layerwise.train.callbacks.base import Callback

if TYPE_CHECKING:
    from layerwise.train.trainer import Trainer


class CSVLogger(Callback):
    """Append one row per epoch to `path`; the header is the first epoch's log keys.

    Example:
        >>> trainer = Trainer(model, callbacks=[CSVLogger("history.csv")])  # doctest: +SKIP
    """

    order = 10

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fields: list[str] | None = None

    def on_epoch_end(self, trainer: Trainer) -> None:
        new_file = not self.path.exists() or self.path.stat().st_size == 0
        if self._fields is None:
            self._fields = list(trainer.logs)
        with self.path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self._fields, extrasaction="ignore")
            if new_file:
                writer.writeheader()
            writer.writerow(trainer.logs)
