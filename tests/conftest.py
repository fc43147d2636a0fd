"""Shared fixtures. Tests that need ../shared/data skip outside CI and fail inside it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _small_and_deterministic(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts from the same seed on one thread: tiny models run faster without
    thread hand-offs, and the suite shares two cores with whatever else is running."""
    torch.manual_seed(0)
    torch.set_num_threads(1)


@pytest.fixture
def shared_data() -> Path:
    """Path to ../shared/data; skip when absent, fail when CI requires it."""
    if SHARED_DATA.is_dir():
        return SHARED_DATA
    if os.environ.get("LAYERWISE_REQUIRE_SHARED") == "1":
        pytest.fail(f"LAYERWISE_REQUIRE_SHARED=1 but {SHARED_DATA} is missing")
    pytest.skip(f"{SHARED_DATA} not present")
