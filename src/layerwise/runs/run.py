"""A run is a folder: everything needed to reproduce, resume, compare and report one training.

    runs/<name>/
      run.json         status (running/finished/failed/stopped), times, best and final metrics
      recipe.yaml      the fully resolved recipe
      metrics.jsonl    one JSON line per epoch and per evaluation
      checkpoints/last-NNNNNN/   weights + state + checksums: what `--resume` continues from
      checkpoints/best-NNNNNN/   the weights that scored best (two of each kind are kept)
      diagnosis.json  plots/*.png  report.html

Every whole-file write is atomic; metrics are appended line by line and fsynced, so a run killed at
any moment keeps everything it had written. The run index (`<root>/index.sqlite`) is updated on
creation and on every status change, but it is only a summary: failing to update it warns instead
of stopping a training.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml

from layerwise.errors import CheckpointError, LayerwiseError, RunError, did_you_mean
from layerwise.runs.atomic import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    json_default,
)
from layerwise.runs.index import RunIndex
from layerwise.runs.liveness import owner, release_room, reserve_room
from layerwise.runs.store import CheckpointStore

if TYPE_CHECKING:
    from layerwise.recipe import Recipe

__all__ = ["NOT_METRICS", "STATUSES", "CheckpointFallbackWarning", "Run"]

STATUSES = ("running", "finished", "halted", "failed", "stopped")
NOT_METRICS = frozenset({"epoch", "step", "split", "lr", "time", "eval"})
"""Keys of a metrics record that describe it rather than measure the model."""
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_ROOT_HINT = "check the folder's permissions, or set --runs-dir to a writable folder"


class CheckpointFallbackWarning(UserWarning):
    """The newest checkpoint was damaged, so an older intact one was loaded instead."""


class Run:
    """One run folder. Make one with `Run.create`, reopen it with `Run.open`.

    Example:
        >>> run = Run.create("runs", "digits_mlp", recipe_text)  # doctest: +SKIP
        >>> run.append_metrics({"epoch": 1, "step": 30, "split": "train", "loss": 0.41})
        >>> run.save_checkpoint(model.state_dict(), trainer.state_dict())
        >>> run.set_status("finished", final_metrics={"val": {"accuracy": 0.97}})
    """

    def __init__(self, path: str | Path) -> None:
        self._path = Path(path)
        self._metrics_tail_checked = False

    # ------------------------------------------------------------------ create / open
    @classmethod
    def create(cls, root: str | Path, name: str, recipe_text: str, **fields: Any) -> Run:
        """Make `root/<name>` (or `<name>-2`, `-3`… if taken), write the recipe, index it.

        `fields` (e.g. `model=`, `dataset=`, `epochs=`) go into `run.json` and the index; the ones
        not given are read from the recipe when it names them.
        """
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise RunError(
                f"run name {name!r} is not a valid folder name",
                hint="use letters, digits, '.', '_' and '-' (no slashes or spaces)",
            )
        root = Path(root)
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunError(
                f"cannot create runs folder '{root}': {_reason(exc)}", _ROOT_HINT
            ) from exc
        for n in itertools.count(1):
            path = root / (name if n == 1 else f"{name}-{n}")
            try:
                path.mkdir()  # atomic: two processes racing for a name get different folders
                break
            except FileExistsError:
                continue
            except OSError as exc:
                raise RunError(
                    f"cannot create run folder '{path}': {_reason(exc)}", _ROOT_HINT
                ) from exc
        run = cls(path)
        now = _now()
        info = {
            "name": path.name,
            "path": str(path.resolve()),
            "status": "running",
            "created": now,
            "updated": now,
            "best_metric": None,
            "final_metrics": {},
            **_recipe_summary(recipe_text),
            **owner(),
            **fields,
        }
        run.write_recipe(recipe_text)
        atomic_write_json(run.info_path, info)
        run.checkpoints_dir.mkdir(exist_ok=True)
        run.plots_dir.mkdir(exist_ok=True)
        run._index(info)
        return run

    @classmethod
    def open(cls, path_or_name: str | Path, root: str | Path = "runs") -> Run:
        """Open an existing run from its folder path or from its bare name under `root`."""
        given = Path(path_or_name)
        for candidate in (given, Path(root) / given):
            if _is_run_dir(candidate):
                return cls(candidate)
        if given.is_dir():
            raise RunError(
                f"'{given}' is not a run folder (it has no run.json or recipe.yaml)",
                hint="pass the folder that `layerwise train` created, e.g. runs/<name>",
            )
        names = sorted(p.name for p in Path(root).glob("*") if _is_run_dir(p))
        if names:
            hint = did_you_mean(Path(path_or_name).name, names)
        else:
            hint = f"there are no runs in '{root}' yet; set --runs-dir if they are elsewhere"
        raise RunError(f"no run '{path_or_name}' (looked in '{root}')", hint=hint)

    @classmethod
    def reopen(
        cls, path_or_name: str | Path, root: str | Path, recipe: Recipe | None
    ) -> tuple[Run, Recipe]:
        """The run to resume and the recipe it was started with. A `recipe` that differs is
        refused: a resumed run continues bit for bit only on the settings it started with."""
        run = cls.open(path_or_name, root=root)
        saved = run.recipe()
        if recipe is not None and recipe.model_dump() != saved.model_dump():
            raise CheckpointError(
                f"the recipe differs from the one run '{run.name}' was started with",
                hint="resume without changing the recipe (omit it), or start a new run",
            )
        return run, saved

    # ------------------------------------------------------------------ paths
    @property
    def path(self) -> Path:
        return self._path

    @property
    def name(self) -> str:
        return self._path.name

    @property
    def info_path(self) -> Path:
        return self._path / "run.json"

    @property
    def recipe_path(self) -> Path:
        return self._path / "recipe.yaml"

    @property
    def metrics_path(self) -> Path:
        return self._path / "metrics.jsonl"

    @property
    def checkpoints_dir(self) -> Path:
        return self._path / "checkpoints"

    @property
    def diagnosis_path(self) -> Path:
        return self._path / "diagnosis.json"

    @property
    def plots_dir(self) -> Path:
        return self._path / "plots"

    @property
    def report_path(self) -> Path:
        return self._path / "report.html"

    def __repr__(self) -> str:
        return f"Run('{self._path}')"

    # ------------------------------------------------------------------ recipe and status
    def write_recipe(self, text: str) -> Path:
        """Store the fully resolved recipe as `recipe.yaml`."""
        return atomic_write_text(self.recipe_path, text)

    def read_recipe(self) -> str:
        """The recipe text this run was created with."""
        try:
            return self.recipe_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise RunError(
                f"cannot read '{self.recipe_path}': {_reason(exc)}",
                hint="the run folder is incomplete or damaged; start a new run from the recipe "
                "file",
            ) from exc

    def recipe(self, overrides: list[str] | None = None) -> Recipe:
        """The validated recipe this run was created with (with `key.path=value` overrides)."""
        from layerwise.recipe import parse_recipe

        return parse_recipe(self.read_recipe(), source=str(self.recipe_path), overrides=overrides)

    def info(self) -> dict[str, Any]:
        """The contents of `run.json` (name, path, status, times, best and final metrics…)."""
        if not self.info_path.exists():
            return {"name": self.name, "path": str(self._path.resolve()), "status": "unknown"}
        try:
            return json.loads(self.info_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RunError(
                f"cannot read '{self.info_path}': {exc}",
                hint="delete run.json; the other files of the run are not affected",
            ) from exc

    def set_status(self, status: str, **fields: Any) -> dict[str, Any]:
        """Set the status (see `STATUSES`) and any other `run.json` fields.

        `halted` means the doctor stopped training (e.g. a NaN loss); the last good checkpoint
        is kept. `running` records this process (see `liveness.shown_status`) and preallocates
        a small reserve file, which any other status deletes: on a disk that filled up, a
        refused status write is retried once after the reserve is freed.
        """
        if status not in STATUSES:
            raise RunError(f"unknown run status '{status}'", hint=did_you_mean(status, STATUSES))
        if status != "running" and "final_metrics" not in fields:
            fields["final_metrics"] = {
                f"{split}_{key}": value
                for split, numbers in self.final_metrics().items()
                for key, value in numbers.items()
            }
        info = {**self.info(), **fields, "status": status, "updated": _now()}
        if status == "running":
            info.update(owner())
            reserve_room(self._path)
        try:
            atomic_write_json(self.info_path, info)
        except RunError:
            if not release_room(self._path):
                raise
            atomic_write_json(self.info_path, info)
        if status != "running":
            release_room(self._path)
        self._index(info)
        return info

    def write_diagnosis(self, diagnosis: Any) -> Path:
        """Store the doctor's findings as `diagnosis.json`."""
        return atomic_write_json(self.diagnosis_path, diagnosis)

    def read_diagnosis(self) -> Any:
        """The doctor's findings, or None when the run has not been diagnosed."""
        if not self.diagnosis_path.exists():
            return None
        try:
            return json.loads(self.diagnosis_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RunError(
                f"cannot read '{self.diagnosis_path}': {exc}",
                hint=f"delete it and run `layerwise doctor {self.name}` to write it again",
            ) from exc

    # ------------------------------------------------------------------ metrics
    def append_metrics(self, record: dict[str, Any]) -> None:
        """Append one record as a JSON line, fsynced so a kill cannot lose it once this returns."""
        line = json.dumps(record, default=json_default) + "\n"
        if not self._metrics_tail_checked:
            self._drop_partial_tail()
        try:
            with open(self.metrics_path, "a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise RunError(
                f"cannot write '{self.metrics_path}': {_reason(exc)}", _ROOT_HINT
            ) from exc

    def read_metrics(self) -> list[dict[str, Any]]:
        """Every metrics record in order; a half-written last line (from a kill) is skipped."""
        if not self.metrics_path.exists():
            return []
        try:
            lines = self.metrics_path.read_text(encoding="utf-8").split("\n")
        except UnicodeDecodeError as exc:
            raise RunError(
                f"'{self.metrics_path}' is damaged: not UTF-8 text (byte {exc.start})",
                hint="fix or delete the damaged line",
            ) from exc
        records = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("not a JSON object")
            except ValueError as exc:
                if number == len(lines):  # no newline after it: the write was cut short
                    break
                raise RunError(
                    f"'{self.metrics_path}' line {number} is not a metrics record ({exc})",
                    hint="fix or delete that line",
                ) from exc
            records.append(record)
        return records

    def final_metrics(self) -> dict[str, dict[str, float]]:
        """The latest number of every metric per split, e.g. `{"val": {"loss": 0.2, ...}}`."""
        final: dict[str, dict[str, float]] = {}
        for record in self.read_metrics():
            numbers = final.setdefault(str(record.get("split", "train")), {})
            for key, value in record.items():
                if key not in NOT_METRICS and _is_number(value):
                    numbers[key] = value
        return {split: numbers for split, numbers in final.items() if numbers}

    def truncate_metrics_after(self, step: int) -> int:
        """Keep records with `step <= step` (and those without a step); returns how many are kept.

        Used on resume: the epochs after the last checkpoint are trained again, so their old lines
        must go or they would appear twice.
        """
        kept = [r for r in self.read_metrics() if r.get("step") is None or r["step"] <= step]
        text = "".join(json.dumps(r, default=json_default) + "\n" for r in kept)
        atomic_write_text(self.metrics_path, text)
        self._metrics_tail_checked = True
        return len(kept)

    def _drop_partial_tail(self) -> None:
        """Cut a line a kill left half-written, so the next record does not glue onto it."""
        self._metrics_tail_checked = True
        with contextlib.suppress(FileNotFoundError):
            data = self.metrics_path.read_bytes()
            if data and not data.endswith(b"\n"):
                atomic_write_bytes(self.metrics_path, data[: data.rfind(b"\n") + 1])

    # ------------------------------------------------------------------ checkpoints
    @property
    def checkpoints(self) -> CheckpointStore:
        """The run's checkpoint folders (see `layerwise.runs.store`)."""
        return CheckpointStore(self.checkpoints_dir)

    def save_checkpoint(
        self, weights: dict[str, torch.Tensor], state: dict[str, Any], best: bool = False
    ) -> Path:
        """Save a `last` checkpoint (weights + state as one atomic unit), and a `best` one before
        it when `best`; returns the `last` folder.

        `state` must hold only types `torch.load(weights_only=True)` accepts (see
        `layerwise.runs.checkpoint`); it is checked before anything is written.
        """
        if best:  # first: a kill before `last` is written replays the epoch and saves both again
            self.checkpoints.save("best", weights)
        return self.checkpoints.save("last", weights, state)

    def save_best(self, weights: dict[str, torch.Tensor]) -> Path:
        """Save a `best` checkpoint alone (e.g. when the monitored metric improves)."""
        return self.checkpoints.save("best", weights)

    def has_checkpoint(self, which: str = "last") -> bool:
        """Whether a `which` checkpoint folder exists (it is verified only when loaded)."""
        return self.checkpoints.latest(which) is not None

    def load_checkpoint(
        self, which: str = "last", device: str | torch.device = "cpu", quarantine: bool = False
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Return `(weights, state)` of the newest intact `which` checkpoint; `state` is `{}`
        for `best` (only weights are kept).

        Every file is checked against its SHA-256 first. A damaged newest checkpoint is skipped
        with a warning naming it and the one used instead; `quarantine=True` (resume) also renames
        it `damaged-*` so it is never counted among the checkpoints kept. Raises
        `CheckpointError` when none is intact.
        """
        loaded = self.checkpoints.load(which, device, quarantine=quarantine)
        for path, reason in loaded.skipped:
            warnings.warn(
                f"skipped damaged checkpoint '{path.name}' ({reason}); using '{loaded.path.name}'",
                CheckpointFallbackWarning,
                stacklevel=2,
            )
        return loaded.weights, loaded.state

    # ------------------------------------------------------------------ index
    def _index(self, info: dict[str, Any]) -> None:
        try:
            RunIndex(self._path.parent).upsert(info)
        except LayerwiseError as exc:
            warnings.warn(f"run index not updated: {exc}", RuntimeWarning, stacklevel=3)


def _is_run_dir(path: Path) -> bool:
    return (path / "run.json").is_file() or (path / "recipe.yaml").is_file()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _reason(exc: OSError | UnicodeDecodeError) -> str:
    return getattr(exc, "strerror", None) or str(exc)


def _recipe_summary(recipe_text: str) -> dict[str, Any]:
    """Name, model, dataset and epochs for the index, read leniently from the recipe YAML."""
    try:
        recipe = yaml.safe_load(recipe_text)
    except yaml.YAMLError:
        return {}
    if not isinstance(recipe, dict):
        return {}

    def name_of(value: Any) -> Any:
        return value.get("name") if isinstance(value, dict) else value

    train = recipe.get("train") if isinstance(recipe.get("train"), dict) else {}
    summary = {
        "recipe_name": recipe.get("name"),
        "model": name_of(recipe.get("model")),
        "dataset": name_of(recipe.get("data", recipe.get("dataset"))),
        "epochs": train.get("epochs", recipe.get("epochs")),
    }
    return {k: v for k, v in summary.items() if isinstance(v, str | int | float)}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
