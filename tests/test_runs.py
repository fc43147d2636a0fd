"""Run folders: atomic writes, creation and naming, status, metrics lines."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from layerwise.errors import CheckpointError, RunError
from layerwise.recipe import parse_recipe
from layerwise.runs import (
    Run,
    RunIndex,
    atomic_save_safetensors,
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
)
from layerwise.runs import atomic as atomic_module

RECIPE = "name: digits_mlp\nmodel: {name: mlp}\ndata: {name: digits}\ntrain: {epochs: 3}\n"


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def _unwritable_root(tmp_path: Path) -> Path:
    """A folder nobody may create runs in: chmod for normal users, a path under a file for root."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if not os.access(locked, os.W_OK):
        return locked / "runs"
    locked.chmod(0o700)  # root ignores permissions; a path under a regular file fails for anyone
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    return blocker / "runs"


# ---------------------------------------------------------------------------- atomic writes
def test_atomic_write_replaces_content_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "note.txt"
    atomic_write_text(target, "first")
    atomic_write_text(target, "second")
    assert target.read_text() == "second"
    assert _leftovers(target.parent) == []
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_failing_json_serializer_keeps_old_content(tmp_path: Path) -> None:
    target = atomic_write_json(tmp_path / "info.json", {"status": "running"})
    with pytest.raises(TypeError):
        atomic_write_json(target, {"status": "finished", "bad": object()})
    assert json.loads(target.read_text()) == {"status": "running"}
    assert _leftovers(tmp_path) == []


class _ExplodesWhilePickled:
    def __reduce__(self) -> tuple:
        raise RuntimeError("serializer died midway")


def test_failing_torch_save_midway_keeps_old_checkpoint(tmp_path: Path) -> None:
    target = atomic_torch_save({"step": 1, "w": torch.ones(3)}, tmp_path / "state.pt")
    big_then_boom = {"w": torch.zeros(10_000), "z": _ExplodesWhilePickled()}
    with pytest.raises(RuntimeError, match="midway"):
        atomic_torch_save(big_then_boom, target)
    assert torch.load(target, weights_only=True)["step"] == 1
    assert _leftovers(tmp_path) == []


def test_safetensors_writer_dying_after_partial_bytes_keeps_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = atomic_save_safetensors({"w": torch.ones(2)}, tmp_path / "last.safetensors")
    before = target.read_bytes()

    def half_write(tensors: dict, filename: str, metadata: dict | None = None) -> None:
        Path(filename).write_bytes(b"\x00" * 50)
        raise KeyboardInterrupt  # as if the process were interrupted mid-write

    monkeypatch.setattr(atomic_module, "save_file", half_write)
    with pytest.raises(KeyboardInterrupt):
        atomic_save_safetensors({"w": torch.zeros(2)}, target)
    assert target.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_write_under_a_regular_file_is_a_run_error_naming_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    with pytest.raises(RunError) as info:
        atomic_write_text(blocker / "report.html", "<html>")
    assert "blocker" in info.value.message
    assert info.value.hint and "writable" in info.value.hint


# ---------------------------------------------------------------------------- create / open
def test_create_lays_out_the_folder_and_indexes_it(tmp_path: Path) -> None:
    run = Run.create(tmp_path, "digits_mlp", RECIPE)
    assert run.path == tmp_path / "digits_mlp"
    assert run.read_recipe() == RECIPE
    assert run.checkpoints_dir.is_dir() and run.plots_dir.is_dir()
    info = run.info()
    assert info["status"] == "running"
    assert info["created"] == info["updated"]
    assert (info["model"], info["dataset"], info["epochs"]) == ("mlp", "digits", 3)
    row = RunIndex(tmp_path).get("digits_mlp")
    assert row is not None and row["status"] == "running" and row["model"] == "mlp"


def test_name_collision_gets_a_suffix_and_never_overwrites(tmp_path: Path) -> None:
    first = Run.create(tmp_path, "exp", "a: 1\n")
    second = Run.create(tmp_path, "exp", "a: 2\n")
    third = Run.create(tmp_path, "exp", "a: 3\n")
    assert [first.name, second.name, third.name] == ["exp", "exp-2", "exp-3"]
    assert first.read_recipe() == "a: 1\n"
    assert second.read_recipe() == "a: 2\n"


@pytest.mark.parametrize("name", ["", "../escape", "a/b", "with space", ".hidden"])
def test_bad_run_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(RunError, match="not a valid folder name"):
        Run.create(tmp_path, name, RECIPE)


def test_unwritable_root_is_a_run_error_with_a_hint(tmp_path: Path) -> None:
    root = _unwritable_root(tmp_path)
    with pytest.raises(RunError) as info:
        Run.create(root, "exp", RECIPE)
    assert str(root) in info.value.message
    assert "--runs-dir" in (info.value.hint or "")


def test_open_by_name_or_path(tmp_path: Path) -> None:
    run = Run.create(tmp_path, "digits_cnn", RECIPE)
    assert Run.open("digits_cnn", root=tmp_path).path == run.path
    assert Run.open(run.path).path == run.path


def test_reopen_gives_the_saved_recipe_and_refuses_a_changed_one(tmp_path: Path) -> None:
    Run.create(tmp_path, "digits_mlp", RECIPE)
    run, recipe = Run.reopen("digits_mlp", tmp_path, None)
    assert recipe.train.epochs == 3 and run.name == "digits_mlp"
    assert Run.reopen("digits_mlp", tmp_path, recipe)[1] == recipe
    changed = parse_recipe(RECIPE.replace("epochs: 3", "epochs: 4"))
    with pytest.raises(CheckpointError, match="differs from the one run 'digits_mlp'"):
        Run.reopen("digits_mlp", tmp_path, changed)


def test_open_missing_run_suggests_the_closest_name(tmp_path: Path) -> None:
    Run.create(tmp_path, "digits_cnn", RECIPE)
    Run.create(tmp_path, "mnist_resnet", RECIPE)
    with pytest.raises(RunError) as info:
        Run.open("digits_cn", root=tmp_path)
    assert "digits_cn" in info.value.message
    assert "did you mean 'digits_cnn'" in (info.value.hint or "")


def test_open_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    with pytest.raises(RunError, match="not a run folder"):
        Run.open(tmp_path / "photos")


# ---------------------------------------------------------------------------- status
def test_set_status_updates_run_json_index_and_final_metrics(tmp_path: Path) -> None:
    run = Run.create(tmp_path, "exp", RECIPE)
    run.append_metrics({"epoch": 1, "step": 10, "split": "train", "loss": 0.9, "lr": 0.1})
    run.append_metrics({"epoch": 1, "step": 10, "split": "val", "loss": 1.1, "accuracy": 0.5})
    run.append_metrics({"epoch": 2, "step": 20, "split": "val", "loss": 0.7, "accuracy": 0.75})
    info = run.set_status("finished", best_metric=0.7)
    assert info["status"] == "finished" and info["best_metric"] == 0.7
    assert info["final_metrics"] == {"train_loss": 0.9, "val_loss": 0.7, "val_accuracy": 0.75}
    assert run.info() == info
    row = RunIndex(tmp_path).get("exp")
    assert row["status"] == "finished" and row["final_metrics"]["val_accuracy"] == 0.75
    with pytest.raises(RunError, match="unknown run status"):
        run.set_status("done")


# ---------------------------------------------------------------------------- metrics
def test_metrics_append_and_read_round_trip(tmp_path: Path) -> None:
    run = Run.create(tmp_path, "exp", RECIPE)
    run.append_metrics({"epoch": 1, "step": 5, "split": "train", "loss": torch.tensor(0.5)})
    run.append_metrics({"epoch": 1, "step": 5, "split": "val", "loss": float("nan")})
    records = run.read_metrics()
    assert records[0] == {"epoch": 1, "step": 5, "split": "train", "loss": 0.5}
    assert records[1]["loss"] != records[1]["loss"]  # NaN survives the round trip


def test_truncated_trailing_line_is_skipped_and_repaired_on_next_append(tmp_path: Path) -> None:
    run = Run.create(tmp_path, "exp", RECIPE)
    run.append_metrics({"epoch": 1, "step": 5, "loss": 0.5})
    with open(run.metrics_path, "a") as f:
        f.write('{"epoch": 2, "step": 10, "lo')  # what a SIGKILL mid-write leaves
    assert run.read_metrics() == [{"epoch": 1, "step": 5, "loss": 0.5}]
    reopened = Run.open(run.path)
    reopened.append_metrics({"epoch": 2, "step": 10, "loss": 0.4})
    assert reopened.read_metrics() == [
        {"epoch": 1, "step": 5, "loss": 0.5},
        {"epoch": 2, "step": 10, "loss": 0.4},
    ]


def test_corrupt_line_in_the_middle_is_an_error_naming_the_line(tmp_path: Path) -> None:
    run = Run.create(tmp_path, "exp", RECIPE)
    run.metrics_path.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(RunError, match="line 2"):
        run.read_metrics()


def test_truncate_metrics_after_keeps_earlier_steps_and_stepless_records(tmp_path: Path) -> None:
    run = Run.create(tmp_path, "exp", RECIPE)
    for step in (10, 20, 30):
        run.append_metrics({"step": step, "split": "train", "loss": 1 / step})
    run.append_metrics({"split": "test", "accuracy": 0.9})
    assert run.truncate_metrics_after(20) == 3
    assert [r.get("step") for r in run.read_metrics()] == [10, 20, None]
    run.append_metrics({"step": 30, "split": "train", "loss": 0.01})
    assert [r.get("step") for r in run.read_metrics()] == [10, 20, None, 30]
    assert run.truncate_metrics_after(-1) == 1
