"""Datasets for transfer experiments: a class subset of any dataset with few labels per class,
and the ORL faces shaped for a CIFAR backbone.

Both register in `DATASETS` when `layerwise.transfer` is imported (the experiment module does),
so recipes can name them: `class_subset` (e.g. MNIST digits 5-9 with 50 labels each, relabelled
0-4) and `faces_orl` (40 people x 10 photos, resized, grey copied to 3 channels).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from layerwise.data import DATASETS, DatasetBundle, data_root, load_dataset
from layerwise.errors import DataError

# The statistics the CIFAR ResNet checkpoints were trained with (see models/resnet.py).
from layerwise.models.resnet import CIFAR_RESNET_MEAN, CIFAR_RESNET_STD


@DATASETS.register("class_subset")
def class_subset(
    dataset: str = "mnist",
    classes: list[int] | None = None,
    per_class: int | None = None,
    seed: int = 0,
    args: dict[str, Any] | None = None,
) -> DatasetBundle:
    """`dataset` restricted to `classes` (relabelled 0..k-1 in the order given), with at most
    `per_class` training rows of each class (drawn by `seed`); val and test keep every row of
    those classes."""
    bundle = load_dataset(dataset, **(args or {}))
    keep = list(range(bundle.num_classes)) if classes is None else [int(c) for c in classes]
    bad = [c for c in keep if not 0 <= c < bundle.num_classes]
    if bad or not keep:
        raise DataError(
            f"class_subset: classes {bad or keep} are not among dataset '{dataset}''s "
            f"{bundle.num_classes} classes",
            hint=f"choose from 0..{bundle.num_classes - 1}",
        )
    generator = torch.Generator().manual_seed(seed)

    def select(part: tuple[Tensor, Tensor] | None, limit: int | None):
        if part is None:
            return None
        x, y = part
        rows = []
        for c in keep:
            idx = torch.nonzero(y == c).flatten()
            if limit is not None:
                if len(idx) < limit:
                    raise DataError(
                        f"class_subset: class {c} of '{dataset}' has only {len(idx)} rows, "
                        f"fewer than per_class={limit}"
                    )
                idx = idx[torch.randperm(len(idx), generator=generator)[:limit]]
            rows.append(idx)
        order = torch.cat(rows).sort().values
        relabel = torch.full((bundle.num_classes,), -1, dtype=torch.long)
        relabel[torch.tensor(keep)] = torch.arange(len(keep))
        return x[order], relabel[y[order]]

    names = bundle.class_names or [str(c) for c in range(bundle.num_classes)]
    return DatasetBundle(
        name=f"{bundle.name}[{','.join(map(str, keep))}]",
        train=select(bundle.train, per_class),
        val=select(bundle.val, None),
        test=select(bundle.test, None),
        num_classes=len(keep),
        input_shape=bundle.input_shape,
        class_names=[names[c] for c in keep],
        pixel_stats=bundle.pixel_stats,
    )


@DATASETS.register("faces_orl")
def faces_orl(
    size: int = 32,
    channels: int = 3,
    train_per_person: int = 5,
    val_per_person: int = 0,
    normalize: str = "cifar",
    root: str | Path | None = None,
) -> DatasetBundle:
    """The AT&T/ORL faces: 40 people x 10 photos (92x112 grey), resized to `size` x `size`.

    The first `train_per_person` photos of each person train, the next `val_per_person` validate,
    the rest test. Grey is repeated to `channels`; `normalize="cifar"` applies the CIFAR ResNet
    checkpoints' per-channel statistics, `"none"` leaves pixels in [0, 1].
    """
    from PIL import Image

    folder = Path(root if root is not None else data_root()) / "faces_orl"
    if not (folder / "s1" / "1.pgm").is_file():
        raise DataError(
            f"ORL faces not found in {folder}",
            hint="put the s1..s40 folders of the AT&T face database there (sX/Y.pgm)",
        )
    if train_per_person < 1 or train_per_person + val_per_person >= 10:
        raise DataError("faces_orl: train_per_person + val_per_person must leave test photos")
    images, people, shots = [], [], []
    for person in range(40):
        for shot in range(10):
            path = folder / f"s{person + 1}" / f"{shot + 1}.pgm"
            with Image.open(path) as image:
                grey = image.convert("L").resize((size, size), Image.BILINEAR)
            images.append(np.asarray(grey, dtype=np.float32) / 255.0)
            people.append(person)
            shots.append(shot)
    x = torch.from_numpy(np.stack(images))[:, None].repeat(1, channels, 1, 1)
    if normalize == "cifar" and channels == 3:
        mean = torch.tensor(CIFAR_RESNET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(CIFAR_RESNET_STD).view(1, 3, 1, 1)
        x = (x - mean) / std
    y = torch.tensor(people)
    shot = torch.tensor(shots)
    train = shot < train_per_person
    val = (shot >= train_per_person) & (shot < train_per_person + val_per_person)
    test = shot >= train_per_person + val_per_person
    return DatasetBundle(
        name="faces_orl",
        train=(x[train], y[train]),
        val=(x[val], y[val]) if val_per_person else None,
        test=(x[test], y[test]),
        num_classes=40,
        input_shape=(channels, size, size),
        class_names=[f"s{p + 1}" for p in range(40)],
    )
