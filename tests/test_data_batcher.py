"""InMemoryBatcher, LoaderBatcher and make_batcher: order, coverage, resume, materialising."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, IterableDataset, TensorDataset

from layerwise.data import InMemoryBatcher, LoaderBatcher, make_batcher
from layerwise.errors import DataError, RecipeError

N = 23


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    """Row i of x holds i, and its label is i too, so order and alignment are visible."""
    x = torch.arange(N, dtype=torch.float32).unsqueeze(1).repeat(1, 2)
    return x, torch.arange(N)


def _rows(batches) -> list[int]:
    return [int(v) for xb, _ in batches for v in xb[:, 0]]


class _Pairs(Dataset):
    """A map-style dataset returning (numpy row, int label), like many user datasets."""

    def __init__(self, n: int = N) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return np.full(2, i, dtype=np.uint8), i


def test_every_row_exactly_once_per_epoch_with_labels_aligned() -> None:
    batcher = InMemoryBatcher(*_data(), batch_size=5, shuffle=True, seed=1)
    assert len(batcher) == 5
    batches = list(batcher)
    assert [len(xb) for xb, _ in batches] == [5, 5, 5, 5, 3]
    assert sorted(_rows(batches)) == list(range(N))
    for xb, yb in batches:
        assert torch.equal(xb[:, 0].long(), yb)


def test_order_is_a_pure_function_of_seed_and_epoch() -> None:
    batcher = InMemoryBatcher(*_data(), batch_size=4, seed=7)
    batcher.set_epoch(0)
    epoch0 = _rows(batcher)
    batcher.set_epoch(1)
    epoch1 = _rows(batcher)
    assert epoch0 != epoch1
    assert epoch0 != list(range(N))
    again = InMemoryBatcher(*_data(), batch_size=4, seed=7)
    again.set_epoch(1)
    assert _rows(again) == epoch1
    other_seed = InMemoryBatcher(*_data(), batch_size=4, seed=8)
    other_seed.set_epoch(1)
    assert _rows(other_seed) != epoch1


def test_iter_from_equals_the_tail_of_a_full_epoch() -> None:
    batcher = InMemoryBatcher(*_data(), batch_size=4, seed=3)
    batcher.set_epoch(2)
    full = list(batcher)
    for k in (0, 2, len(full) - 1, len(full)):
        tail = list(batcher.iter_from(k))
        assert len(tail) == len(full) - k
        for (xa, ya), (xb, yb) in zip(tail, full[k:], strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    with pytest.raises(ValueError):
        batcher.iter_from(len(full) + 1)


def test_drop_last_and_no_labels() -> None:
    x, _ = _data()
    batcher = InMemoryBatcher(x, None, batch_size=5, shuffle=True, drop_last=True)
    batches = list(batcher)
    assert len(batcher) == len(batches) == 4
    assert all(len(xb) == 5 and yb is None for xb, yb in batches)
    assert len(set(_rows(batches))) == 20


def test_no_shuffle_slices_in_order_without_copying() -> None:
    x, y = _data()
    batcher = InMemoryBatcher(x, y, batch_size=10, shuffle=False)
    batches = list(batcher)
    assert _rows(batches) == list(range(N))
    xb, _ = batches[1]
    assert xb.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()
    assert torch.equal(xb, x[10:20])


def test_transform_runs_per_sample_and_keeps_labels_aligned() -> None:
    seen_shapes = []

    def shift(sample: torch.Tensor) -> torch.Tensor:
        seen_shapes.append(tuple(sample.shape))
        return sample + 1000

    batcher = InMemoryBatcher(*_data(), batch_size=6, seed=0, transform=shift)
    batches = list(batcher)
    assert seen_shapes == [(2,)] * N
    for xb, yb in batches:
        assert torch.equal(xb[:, 0].long() - 1000, yb)
    assert torch.equal(_data()[0], batcher.x)  # the stored data is untouched


def test_bad_batch_size_is_a_recipe_error() -> None:
    with pytest.raises(RecipeError, match="batch_size must be a positive integer, got 0"):
        InMemoryBatcher(*_data(), batch_size=0)


def test_make_batcher_accepts_tuples_arrays_and_single_inputs() -> None:
    x, y = _data()
    from_tuple = make_batcher((x.numpy(), y.numpy()), batch_size=8, shuffle=False)
    assert isinstance(from_tuple, InMemoryBatcher)
    xb, yb = next(iter(from_tuple))
    assert xb.dtype == torch.float32 and yb.dtype == torch.int64 and yb.tolist() == list(range(8))
    xb, yb = next(iter(make_batcher(x, batch_size=8, shuffle=False)))
    assert yb is None and xb.shape == (8, 2)
    assert make_batcher(from_tuple, batch_size=99) is from_tuple


def test_small_dataset_is_materialised_into_memory() -> None:
    batcher = make_batcher(_Pairs(), batch_size=4, shuffle=True, seed=5)
    assert isinstance(batcher, InMemoryBatcher)
    assert batcher.x.dtype == torch.float32 and batcher.x.shape == (N, 2)
    assert torch.equal(batcher.y, torch.arange(N))
    assert torch.equal(batcher.x[:, 0].long(), torch.arange(N))
    tensors = make_batcher(TensorDataset(*_data()), batch_size=4)
    assert isinstance(tensors, InMemoryBatcher) and torch.equal(tensors.y, torch.arange(N))


def test_big_dataset_streams_through_a_loader_and_iterables_are_refused() -> None:
    batcher = make_batcher(_Pairs(), batch_size=4, shuffle=True, max_in_memory_bytes=10)
    assert isinstance(batcher, LoaderBatcher)

    class Stream(IterableDataset):
        def __iter__(self):
            return iter(range(3))

    with pytest.raises(DataError, match="IterableDataset"):
        make_batcher(Stream(), batch_size=2, shuffle=False)


def test_loader_batcher_replays_seed_and_epoch_and_matches_in_memory_order() -> None:
    loader = LoaderBatcher(_Pairs(), batch_size=5, shuffle=True, seed=11)
    loader.set_epoch(3)
    first = list(loader)
    assert len(loader) == len(first) == 5
    assert sorted(_rows(first)) == list(range(N))
    assert all(xb.dtype == torch.float32 and yb.dtype == torch.int64 for xb, yb in first)
    for xb, yb in first:
        assert torch.equal(xb[:, 0].long(), yb)
    assert _rows(loader) == _rows(first)
    loader.set_epoch(4)
    assert _rows(loader) != _rows(first)

    memory = InMemoryBatcher(*_data(), batch_size=5, seed=11)
    memory.set_epoch(3)
    assert _rows(memory) == _rows(first)


def test_loader_batcher_iter_from_drop_last_and_transform() -> None:
    loader = LoaderBatcher(_Pairs(), batch_size=4, seed=2, drop_last=True)
    full = list(loader)
    assert len(loader) == len(full) == 5
    tail = list(loader.iter_from(3))
    assert _rows(tail) == _rows(full[3:])

    shifted = LoaderBatcher(_Pairs(), batch_size=4, seed=2, transform=lambda s: s.float() + 1000)
    for xb, yb in shifted:
        assert torch.equal(xb[:, 0].long() - 1000, yb)


def test_loader_batcher_without_labels() -> None:
    x, _ = _data()
    loader = LoaderBatcher(TensorDataset(x), batch_size=10, shuffle=False)
    batches = list(loader)
    assert [yb for _, yb in batches] == [None, None, None]
    assert _rows(batches) == list(range(N))
