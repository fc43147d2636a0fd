"""The run index: one SQLite table under the runs root, listing every run for `layerwise runs`.

The run folders are the truth; the index is a fast summary of their `run.json` files that can be
rebuilt from them at any time (`RunIndex.rebuild`). Each call opens its own short connection with a
busy timeout, so several training processes can update it at once, and `list()` flags runs whose
folder has since been deleted instead of failing on them. The database is in WAL mode: readers
(`layerwise runs ls` during a training) never wait for a writer, and writers wait for each other
up to `timeout` seconds instead of failing with "database is locked".
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from layerwise.errors import RunError

__all__ = ["RunIndex"]

COLUMNS = (
    "name",
    "path",
    "created",
    "updated",
    "status",
    "recipe_name",
    "model",
    "dataset",
    "epochs",
    "best_metric",
    "final_metrics_json",
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    name TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    created TEXT,
    updated TEXT,
    status TEXT,
    recipe_name TEXT,
    model TEXT,
    dataset TEXT,
    epochs INTEGER,
    best_metric,
    final_metrics_json TEXT
)
"""


class RunIndex:
    """`root/index.sqlite`: `upsert` a run's info, `list` runs newest first, `get` one by name.

    Example:
        >>> index = RunIndex("runs")
        >>> [(r["name"], r["status"], r["missing"]) for r in index.list()]  # doctest: +SKIP
    """

    def __init__(self, root: str | Path, timeout: float = 30.0) -> None:
        self.root = Path(root)
        self.path = self.root / "index.sqlite"
        self.timeout = timeout

    def upsert(self, run_info: dict[str, Any]) -> None:
        """Insert or update the row for `run_info["name"]` from a `run.json`-style dict."""
        if not run_info.get("name"):
            raise ValueError("run_info needs a 'name'")
        row = {column: run_info.get(column) for column in COLUMNS}
        row["path"] = str(Path(run_info.get("path") or self.root / row["name"]).resolve())
        row["final_metrics_json"] = json.dumps(run_info.get("final_metrics") or {}, default=str)
        if isinstance(row["best_metric"], dict | list):
            row["best_metric"] = json.dumps(row["best_metric"])
        updates = ", ".join(f"{c} = excluded.{c}" for c in COLUMNS if c != "name")
        sql = (
            f"INSERT INTO runs ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))}) "
            f"ON CONFLICT(name) DO UPDATE SET {updates}"
        )
        with self._connect() as conn:
            conn.execute(sql, [row[c] for c in COLUMNS])

    def list(self) -> list[dict[str, Any]]:
        """Every indexed run, newest first; `missing` is True when its folder no longer exists."""
        if not self.path.exists():
            return []
        with self._reading() as conn:
            rows = conn.execute("SELECT * FROM runs ORDER BY created DESC, rowid DESC").fetchall()
        return [self._to_dict(row) for row in rows]

    def get(self, name: str) -> dict[str, Any] | None:
        """The row for run `name`, or None when it is not indexed."""
        if not self.path.exists():
            return None
        with self._reading() as conn:
            row = conn.execute("SELECT * FROM runs WHERE name = ?", (name,)).fetchone()
        return None if row is None else self._to_dict(row)

    def remove(self, name: str) -> None:
        """Forget run `name` (its folder is left alone)."""
        with self._connect() as conn:
            conn.execute("DELETE FROM runs WHERE name = ?", (name,))

    def rebuild(self) -> int:
        """Re-read every `root/*/run.json` into the index; returns how many runs were found."""
        found = 0
        for info_path in sorted(self.root.glob("*/run.json")):
            try:
                info = json.loads(info_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # a damaged run.json should not hide the other runs
            self.upsert(
                {
                    **info,
                    "name": info.get("name") or info_path.parent.name,
                    "path": str(info_path.parent),
                }
            )
            found += 1
        return found

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A short-lived connection in one transaction; SQLite errors become `RunError`."""
        try:
            conn = sqlite3.connect(self.path, timeout=self.timeout)
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        conn.row_factory = sqlite3.Row
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            _use_wal(conn)
            with conn:
                conn.execute(_SCHEMA)
                yield conn
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        finally:
            conn.close()

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """A connection for reading. On a read-only disk SQLite cannot make the WAL's shared
        memory file, so the database is opened as immutable there (nobody can be writing it)."""
        if os.access(self.root, os.W_OK):
            with self._connect() as conn:
                yield conn
            return
        uri = f"{self.path.resolve().as_uri()}?mode=ro&immutable=1"
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=self.timeout)
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        conn.row_factory = sqlite3.Row
        try:
            yield conn
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        finally:
            conn.close()

    def _error(self, exc: sqlite3.Error) -> RunError:
        if "locked" in str(exc) or "busy" in str(exc):
            hint = "another process holds the index; try again in a moment"
        else:
            hint = (
                f"check that '{self.root}' is writable; if the file is damaged, delete it: "
                "RunIndex(root).rebuild() recreates it from the run folders"
            )
        return RunError(f"cannot use the run index '{self.path}': {exc}", hint=hint)

    @staticmethod
    def _to_dict(row: sqlite3.Row) -> dict[str, Any]:
        info = dict(row)
        info["final_metrics"] = json.loads(info["final_metrics_json"] or "{}")
        info["missing"] = not Path(info["path"]).is_dir()
        return info


def _use_wal(conn: sqlite3.Connection) -> None:
    """Switch the database to write-ahead logging (persistent, so a no-op once done).

    A filesystem without shared memory (some network mounts) or a read-only folder refuses WAL and
    keeps the rollback journal, which is still safe, only slower under concurrent readers.
    """
    (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
    if str(mode).lower() != "wal":
        with contextlib.suppress(sqlite3.OperationalError):  # e.g. a read-only folder
            conn.execute("PRAGMA journal_mode = WAL")
