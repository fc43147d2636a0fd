"""Checkpoints: bitwise round trip of weights and a realistic training state, and every way the
files can be damaged."""

from __future__ import annotations

import random
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from layerwise.errors import CheckpointError
from layerwise.runs import Run, check_state


class TiedLM(nn.Module):
    """Embedding and output projection share one weight, as language models often do."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(11, 6)
        self.norm = nn.BatchNorm1d(6)
        self.out = nn.Linear(6, 11, bias=False)
        self.out.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.out(self.norm(self.embed(tokens)))


def _trained_model_and_state() -> tuple[nn.Module, dict[str, Any]]:
    model = TiedLM()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=10)
    for _ in range(2):
        tokens = torch.randint(0, 11, (8,))
        nn.functional.cross_entropy(model(tokens), tokens).backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
    version, internal, gauss = random.getstate()
    np_name, np_keys, *np_rest = np.random.get_state()
    state = {
        "train_state": {"epoch": 1, "step": 2, "batch_in_epoch": 0},
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "rng": {
            "torch": torch.get_rng_state(),
            "python": [version, list(internal), gauss],
            "numpy": [np_name, torch.from_numpy(np_keys.astype(np.int64)), *np_rest],
            "numpy_list": [np_name, np_keys.tolist(), *np_rest],
        },
        "metrics": [{"sum": torch.tensor(3.5, dtype=torch.float64), "count": 7}],
        "callbacks": [{"best": None}, {"wait": 2, "mode": "min", "best": float("inf")}],
        "history": [{"epoch": 1, "loss": 0.5, "val_loss": float("nan")}],
        "dtype": torch.bfloat16,
        "ordered": OrderedDict(a=torch.Size([2, 3])),
    }
    return model, state


def _assert_same(a: Any, b: Any, where: str = "state") -> None:
    """Recursive bitwise equality (NaN equals NaN, tensors compared with dtype and bytes)."""
    assert type(a) is type(b), f"{where}: {type(a)} != {type(b)}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8)), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and a != a:
        assert b != b, where
    else:
        assert a == b, where


@pytest.fixture
def run(tmp_path: Path) -> Run:
    return Run.create(tmp_path, "ckpt", "model: {name: tied}\n")


def test_round_trip_is_bitwise_for_weights_and_a_realistic_state(run: Run) -> None:
    model, state = _trained_model_and_state()
    weights = model.state_dict()
    weights["odd.transposed"] = torch.randn(3, 4).t()  # non-contiguous
    weights["odd.half"] = torch.randn(5).to(torch.bfloat16)
    run.save_checkpoint(weights, state)

    loaded_weights, loaded_state = run.load_checkpoint()

    assert set(loaded_weights) == set(weights)
    for name, tensor in weights.items():
        _assert_same(tensor.contiguous(), loaded_weights[name], name)
    _assert_same(state, loaded_state)
    tied = loaded_weights["out.weight"].data_ptr() == loaded_weights["embed.weight"].data_ptr()
    assert tied, "tied weights are restored as one tensor"


def test_loaded_state_restores_the_model_optimizer_and_rng(run: Run) -> None:
    model, state = _trained_model_and_state()
    run.save_checkpoint(model.state_dict(), state)
    expected = torch.rand(4)  # what the generator produces right after the saved state

    weights, loaded = run.load_checkpoint()
    fresh = TiedLM()
    fresh.load_state_dict(weights)
    optimizer = torch.optim.Adam(fresh.parameters(), lr=1e-2)
    optimizer.load_state_dict(loaded["optimizer"])
    torch.set_rng_state(loaded["rng"]["torch"])
    random.setstate((loaded["rng"]["python"][0], tuple(loaded["rng"]["python"][1]), None))

    assert torch.equal(torch.rand(4), expected)
    assert optimizer.state_dict()["state"][0]["step"] == 2
    assert torch.equal(fresh.norm.running_mean, model.norm.running_mean)


def test_best_is_written_on_request_and_loads_without_state(run: Run) -> None:
    model, state = _trained_model_and_state()
    run.save_checkpoint(model.state_dict(), state)
    assert not run.has_checkpoint("best")
    run.save_checkpoint(model.state_dict(), state, best=True)
    weights, best_state = run.load_checkpoint("best")
    assert best_state == {}
    assert torch.equal(weights["embed.weight"], model.embed.weight)
    with pytest.raises(CheckpointError, match="unknown checkpoint"):
        run.load_checkpoint("latest")


def test_state_with_numpy_is_refused_before_anything_is_written(run: Run) -> None:
    model, state = _trained_model_and_state()
    run.save_checkpoint(model.state_dict(), state)
    before = sorted(p.name for p in run.checkpoints_dir.rglob("*"))
    bad = {**state, "rng": {"numpy": np.random.get_state()}}
    with pytest.raises(CheckpointError, match=r"state\['rng'\]\['numpy'\]\[1\] is a numpy"):
        run.save_checkpoint({"w": torch.zeros(2)}, bad)
    assert sorted(p.name for p in run.checkpoints_dir.rglob("*")) == before


@pytest.mark.parametrize(
    "value",
    [np.float32(1.0), {"a": 1}.keys(), frozenset([1]), object()],
    ids=[
        "numpy-float32",
        "dict-keys",
        "frozenset",
        "object",
    ],  # stable ids: the same in every process
)
def test_check_state_names_types_weights_only_cannot_load(value: Any) -> None:
    with pytest.raises(CheckpointError, match=r"state\['x'\]"):
        check_state({"x": value})


def test_missing_checkpoint_says_so(run: Run) -> None:
    assert not run.has_checkpoint()
    with pytest.raises(CheckpointError, match="no 'last' checkpoint") as info:
        run.load_checkpoint()
    assert "without --resume" in (info.value.hint or "")
