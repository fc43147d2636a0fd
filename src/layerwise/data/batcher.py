"""Batchers: what the trainer iterates over.

Data that fits in memory is moved to the device once and batched by indexing with a permutation,
which is several times faster than a worker `DataLoader` for small samples. Map-style Datasets
too big for memory go through a real `DataLoader`. Both share one contract: the shuffle order is
a pure function of `(seed, epoch)` and `iter_from(k)` starts at batch `k`, so a run killed halfway
through an epoch resumes on exactly the batch it would have seen next.

Example:
    >>> batcher = make_batcher((x, y), batch_size=64, shuffle=True, seed=0)
    >>> for epoch in range(3):
    ...     batcher.set_epoch(epoch)  # without this every epoch replays the same order
    ...     for xb, yb in batcher:
    ...         ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sized
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    IterableDataset,
    RandomSampler,
    Sampler,
    SequentialSampler,
    TensorDataset,
)

from layerwise.data.batch import tensors_of, tree_map
from layerwise.data.convert import to_tensors
from layerwise.errors import DataError, RecipeError

Batch = tuple[Tensor, Tensor | None]
Transform = Callable[[Tensor], Tensor]


class Batcher(Protocol):
    """What the trainer needs from a source of batches."""

    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Batch]: ...
    def set_epoch(self, epoch: int) -> None: ...
    def iter_from(self, batch_index: int) -> Iterator[Batch]: ...


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator whose state depends only on `(seed, epoch)`, well mixed across both."""
    words = np.random.SeedSequence([seed & (2**64 - 1), epoch]).generate_state(2)
    return torch.Generator().manual_seed(int(words[0]) << 32 | int(words[1]))


class InMemoryBatcher:
    """Batches tensors already in memory by slicing (no shuffle) or permutation indexing.

    Args:
        x: the inputs, a tensor; or a nested structure of tensors with the same first dimension
            (e.g. `{"tokens": ids, "lengths": lengths, "label": labels}`), whose batches then
            have that structure.
        y: labels for a tensor `x`, or `None` (batches yield `(x, None)`).
        batch_size: rows per batch; the last batch is smaller unless `drop_last`.
        shuffle: draw a new permutation per epoch from `(seed, epoch)`.
        device: where batches are yielded. Without a transform the data is moved there once.
        transform: a per-sample callable (e.g. from `augmentations`) on a tensor `x`, run on CPU
            for every sample of a batch before the batch is moved (through pinned memory on CUDA).
    """

    def __init__(
        self,
        x: Any,
        y: Tensor | None = None,
        batch_size: int = 32,
        shuffle: bool = True,
        seed: int = 0,
        device: str | torch.device = "cpu",
        drop_last: bool = False,
        transform: Transform | None = None,
    ) -> None:
        self.structured = not isinstance(x, Tensor)
        if self.structured and (y is not None or transform is not None):
            raise DataError(
                f"structured inputs ({type(x).__name__}) take neither separate labels nor a "
                "per-sample transform",
                hint="put the labels inside the structure (e.g. a 'label' key)",
            )
        rows = _rows(x) if self.structured else len(x)
        if y is not None and len(y) != rows:
            raise DataError(
                f"inputs have {rows} rows but labels have {len(y)}",
                hint="give one label per input row",
            )
        self.batch_size = _check_batch_size(batch_size)
        self.shuffle = shuffle
        self.seed = seed
        self.device = torch.device(device)
        self.drop_last = drop_last
        self.transform = transform
        self.epoch = 0
        self.rank, self.world_size = 0, 1  # see `shard`
        self._rows = rows
        home = torch.device("cpu") if transform is not None else self.device
        self.x = tree_map(lambda t: t.to(home), x)
        self.y = None if y is None else y.to(home)

    @property
    def num_samples(self) -> int:
        return self._rows

    def __len__(self) -> int:
        return _num_batches(self.num_samples, self.batch_size, self.drop_last)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose shuffle order the next iteration uses."""
        self.epoch = int(epoch)

    def shard(self, rank: int, world_size: int) -> InMemoryBatcher:
        """Yield only part `rank` of `world_size` of every batch (data-parallel training): the
        same epoch order and number of batches on every rank, disjoint rows (`shard_rows`)."""
        self.rank, self.world_size = rank, world_size
        return self

    def order(self) -> Tensor | None:
        """The row permutation of the current epoch (on CPU), or `None` when not shuffling."""
        if not self.shuffle:
            return None
        return torch.randperm(self.num_samples, generator=epoch_generator(self.seed, self.epoch))

    def __iter__(self) -> Iterator[Any]:
        return self.iter_from(0)

    def iter_from(self, batch_index: int) -> Iterator[Any]:
        """Yield the current epoch's batches starting at `batch_index` (0 = the whole epoch)."""
        _check_batch_index(batch_index, len(self))
        perm = self.order()
        if perm is not None and self.transform is None:
            perm = perm.to(self.device)
        if self.structured:
            return self._structured_batches(perm, batch_index)
        return self._batches(perm, batch_index)

    def _batches(self, perm: Tensor | None, start: int) -> Iterator[Batch]:
        size, n = self.batch_size, self.num_samples
        for b in range(start, len(self)):
            lo, hi = b * size, min((b + 1) * size, n)
            if perm is None and self.transform is None and self.world_size == 1:
                yield self.x[lo:hi], None if self.y is None else self.y[lo:hi]
                continue
            index = self._index(perm, lo, hi)
            xb = self.x.index_select(0, index)
            yb = None if self.y is None else self.y.index_select(0, index)
            if self.transform is not None:
                xb = torch.stack([self.transform(sample) for sample in xb])
                xb, yb = _to_device(xb, self.device), _to_device(yb, self.device)
            yield xb, yb

    def _structured_batches(self, perm: Tensor | None, start: int) -> Iterator[Any]:
        size, n = self.batch_size, self.num_samples
        for b in range(start, len(self)):
            lo, hi = b * size, min((b + 1) * size, n)
            if perm is None and self.world_size == 1:
                yield tree_map(lambda t, lo=lo, hi=hi: t[lo:hi], self.x)
            else:
                index = self._index(perm, lo, hi)
                yield tree_map(lambda t, index=index: t.index_select(0, index), self.x)

    def _index(self, perm: Tensor | None, lo: int, hi: int) -> Tensor:
        """The rows of the batch covering positions lo..hi of the epoch order (this shard's)."""
        if perm is None:
            index = torch.arange(lo, hi, device=tensors_of(self.x)[0].device)
        else:
            index = perm[lo:hi]
        return index if self.world_size == 1 else shard_rows(index, self.rank, self.world_size)


def shard_rows(index: Tensor, rank: int, world_size: int) -> Tensor:
    """Part `rank` of `world_size` near-equal, disjoint, contiguous parts of a batch's rows.

    A batch of fewer rows than parts (an epoch's last) is first repeated up to `world_size`
    rows, as PyTorch's `DistributedSampler` pads, so that no rank gets an empty batch."""
    if len(index) < world_size:
        index = index[torch.arange(world_size, device=index.device) % len(index)]
    return index.tensor_split(world_size)[rank]


def _rows(tree: Any) -> int:
    """The common first dimension of every tensor in a structure (a `DataError` if they differ)."""
    tensors = tensors_of(tree)
    if not tensors:
        raise DataError(
            f"the data ({type(tree).__name__}) holds no tensors",
            hint="give tensors or arrays, e.g. {'tokens': ids, 'label': labels}",
        )
    rows = {len(t) if t.dim() else 0 for t in tensors}
    if len(rows) > 1:
        raise DataError(
            f"the tensors of the data have different numbers of rows: {sorted(rows)}",
            hint="every entry needs one row per sample (pad variable-length parts first)",
        )
    return rows.pop()


class _EpochSampler(Sampler[int]):
    """Yields row indices in the order fixed by `(seed, epoch)`, starting at row `start`."""

    def __init__(self, n: int, shuffle: bool, seed: int, epoch: int, start: int) -> None:
        self.n, self.shuffle, self.seed, self.epoch, self.start = n, shuffle, seed, epoch, start

    def __len__(self) -> int:
        return max(self.n - self.start, 0)

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            order = torch.randperm(self.n, generator=epoch_generator(self.seed, self.epoch))
            return iter(order[self.start :].tolist())
        return iter(range(self.start, self.n))


class _Transformed(Dataset):
    """Applies a per-sample transform to the input of each item (inside the workers)."""

    def __init__(self, dataset: Dataset, transform: Transform) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> Any:
        x, y = _parts(self.dataset[i])
        x = self.transform(torch.as_tensor(x))
        return x if y is None else (x, y)


class LoaderBatcher:
    """The `InMemoryBatcher` contract around a `torch.utils.data.DataLoader`.

    For map-style Datasets too big to hold in memory. The sampler is seeded from
    `(seed, epoch)` and can start mid-epoch, so `iter_from(k)` skips straight to batch `k`
    without loading the batches before it. Inputs arrive as float32 (int64 kept), labels as
    int64 or float32, like `to_tensors` produces.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int = 32,
        shuffle: bool = True,
        seed: int = 0,
        device: str | torch.device = "cpu",
        drop_last: bool = False,
        transform: Transform | None = None,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        collate_fn: Callable[[list[Any]], Any] | None = None,
    ) -> None:
        self.dataset = dataset if transform is None else _Transformed(dataset, transform)
        self.batch_size = _check_batch_size(batch_size)
        self.shuffle = shuffle
        self.seed = seed
        self.device = torch.device(device)
        self.drop_last = drop_last
        self.num_workers = num_workers
        self.pin_memory = self.device.type == "cuda" if pin_memory is None else pin_memory
        self.collate_fn = collate_fn
        self.epoch = 0

    @property
    def num_samples(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return _num_batches(self.num_samples, self.batch_size, self.drop_last)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose shuffle order the next iteration uses."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[Batch]:
        return self.iter_from(0)

    def iter_from(self, batch_index: int) -> Iterator[Batch]:
        """Yield the current epoch's batches starting at `batch_index`."""
        _check_batch_index(batch_index, len(self))
        sampler = _EpochSampler(
            self.num_samples, self.shuffle, self.seed, self.epoch, batch_index * self.batch_size
        )
        loader = DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=self.drop_last,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            collate_fn=self.collate_fn,
            # Seeds the workers' RNGs, so random augmentations also replay per (seed, epoch).
            generator=epoch_generator(self.seed, self.epoch),
        )
        return (self._finish(batch) for batch in loader)

    def _finish(self, batch: Any) -> Any:
        if not _is_pair(batch):
            return batch  # a structure of its own (dicts, lists of boxes): moved by the Trainer
        xb, yb = _parts(batch)
        xb = _to_device(torch.as_tensor(xb), self.device)
        if xb.dtype != torch.int64:
            xb = xb.float()
        if yb is None:
            return xb, None
        yb = _to_device(torch.as_tensor(yb), self.device)
        return xb, yb.float() if yb.is_floating_point() else yb.long()


def make_batcher(
    data: Any,
    batch_size: int = 32,
    shuffle: bool = True,
    seed: int = 0,
    device: str | torch.device = "cpu",
    drop_last: bool = False,
    transform: Transform | None = None,
    max_in_memory_bytes: int = 2**31,
) -> InMemoryBatcher | LoaderBatcher:
    """Pick the fastest batcher for `data`.

    `data` is `x`, `(x,)` or `(x, y)` in any form `to_tensors` accepts; a dict of equally long
    tensors or arrays (batches are dicts); a map-style torch `Dataset`; a `DataLoader` (its
    dataset, batch size, sampling and `collate_fn` are kept, in a replayable order); or a batcher
    (returned as is). A Dataset of `(x, y)` items is read into tensors once when its estimated
    float32 size (one sample times its length) is at most `max_in_memory_bytes`; larger ones, and
    Datasets of other items (dicts, variable-size tensors), are streamed through a
    `LoaderBatcher`.
    """
    if isinstance(data, InMemoryBatcher | LoaderBatcher):
        return data
    if isinstance(data, DataLoader):
        return _from_loader(data, seed=seed, device=device, transform=transform)
    if isinstance(data, Mapping):
        if transform is not None:
            raise DataError(
                "a per-sample transform needs (x, y) data, not a dict",
                hint="apply the transform in a Dataset's __getitem__",
            )
        tree = {key: _leaf_tensor(value, str(key)) for key, value in data.items()}
        return InMemoryBatcher(tree, None, **options_of(batch_size, shuffle, seed, device))
    options = dict(
        **options_of(batch_size, shuffle, seed, device), drop_last=drop_last, transform=transform
    )
    if isinstance(data, IterableDataset):
        raise DataError(
            f"cannot batch an IterableDataset ({type(data).__name__}): its order cannot be "
            "replayed from a seed",
            hint="use a map-style Dataset (with __len__ and __getitem__) or tensors",
        )
    if isinstance(data, Dataset):
        tensors = materialise(data, max_in_memory_bytes)
        if tensors is None:
            return LoaderBatcher(data, **options)
        x, y = tensors
    elif isinstance(data, tuple) and len(data) in (1, 2):
        x, y = to_tensors(*data)
    else:
        x, y = to_tensors(data)
    return InMemoryBatcher(x, y, **options)


def materialise(dataset: Dataset, max_bytes: int = 2**31) -> Batch | None:
    """Read a map-style Dataset into `(x, y)` tensors, or return `None` when it is too big."""
    if isinstance(dataset, TensorDataset):
        return to_tensors(*dataset.tensors[:2])
    if not isinstance(dataset, Sized) or len(dataset) == 0:
        raise DataError(
            f"dataset {type(dataset).__name__} is empty or has no length",
            hint="a map-style Dataset needs __len__ and __getitem__",
        )
    first = dataset[0]
    if not _is_pair(first) and not isinstance(first, Tensor | np.ndarray):
        return None  # dicts or ragged items: the DataLoader collates them batch by batch
    x0, y0 = _parts(first)
    per_sample = 4 * torch.as_tensor(np.asarray(x0)).numel() + (0 if y0 is None else 8)
    if per_sample * len(dataset) > max_bytes:
        return None
    try:
        batches = list(DataLoader(dataset, batch_size=1024, shuffle=False))
    except TypeError as exc:
        raise DataError(
            f"cannot stack the items of {type(dataset).__name__}: {exc}",
            hint="make __getitem__ return tensors or arrays (e.g. add torchvision's "
            "v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]) as transform)",
        ) from exc
    parts = [_parts(b) for b in batches]
    x = torch.cat([torch.as_tensor(p[0]) for p in parts])
    y = None if y0 is None else torch.cat([torch.as_tensor(p[1]) for p in parts])
    return to_tensors(x, y)


def options_of(batch_size: int, shuffle: bool, seed: int, device: Any) -> dict[str, Any]:
    return {"batch_size": batch_size, "shuffle": shuffle, "seed": seed, "device": device}


def _from_loader(
    loader: DataLoader, *, seed: int, device: Any, transform: Transform | None
) -> LoaderBatcher:
    """A `LoaderBatcher` doing what `loader` does, in an order replayable from `(seed, epoch)`."""
    sampler, batches = loader.sampler, loader.batch_sampler
    plain = isinstance(sampler, SequentialSampler | RandomSampler) and (
        type(batches) is BatchSampler
    )
    if not plain or loader.batch_size is None:
        raise DataError(
            f"this DataLoader samples with {type(batches or sampler).__name__}, whose order "
            "cannot be replayed, so a resumed run could not continue where it stopped",
            hint="pass the Dataset (with batch_size and collate_fn to make_batcher/LoaderBatcher), "
            "or a batcher with set_epoch and iter_from",
        )
    return LoaderBatcher(
        loader.dataset,
        batch_size=loader.batch_size,
        shuffle=isinstance(sampler, RandomSampler),
        seed=seed,
        device=device,
        drop_last=loader.drop_last,
        transform=transform,
        num_workers=loader.num_workers,
        pin_memory=loader.pin_memory,
        collate_fn=loader.collate_fn,
    )


def _leaf_tensor(value: Any, name: str) -> Tensor:
    """One entry of dict data as a tensor: integers int64 (token ids), floats float32."""
    tensor = value.detach() if isinstance(value, Tensor) else torch.as_tensor(np.asarray(value))
    if tensor.is_floating_point():
        tensor = tensor.float()
        if not bool(torch.isfinite(tensor).all()):
            raise DataError(f"'{name}' holds NaN or inf values", hint="clean or impute them first")
    elif tensor.dtype != torch.bool:
        tensor = tensor.long()
    return tensor


def _is_pair(item: Any) -> bool:
    """`x`-or-`(x, y)` data whose parts are tensors or arrays, not structures of their own."""
    if not isinstance(item, tuple | list) or len(item) not in (1, 2):
        return False
    return all(isinstance(part, Tensor | np.ndarray | int | float) for part in item)


def _parts(item: Any) -> tuple[Any, Any]:
    """Split a dataset item or collated batch into (x, y-or-None)."""
    if isinstance(item, tuple | list):
        if len(item) == 2:
            return item[0], item[1]
        if len(item) == 1:
            return item[0], None
        raise DataError(
            f"dataset items must be x or (x, y), got a {type(item).__name__} of {len(item)}",
            hint="wrap the Dataset so __getitem__ returns (input, label)",
        )
    return item, None


def _to_device(t: Tensor | None, device: torch.device) -> Tensor | None:
    if t is None or t.device == device:
        return t
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _num_batches(n: int, batch_size: int, drop_last: bool) -> int:
    return n // batch_size if drop_last else -(-n // batch_size)


def _check_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise RecipeError(
            f"batch_size must be a positive integer, got {batch_size!r}",
            hint="e.g. batch_size: 64",
        )
    return batch_size


def _check_batch_index(batch_index: int, num_batches: int) -> None:
    if not 0 <= batch_index <= num_batches:
        raise ValueError(f"batch_index {batch_index} is outside 0..{num_batches}")
