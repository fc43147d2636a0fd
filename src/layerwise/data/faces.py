"""People (or voices) as identities for metric learning: the ORL faces split by person, the FSDD
clips split by speaker, and a P x K batcher.

A verification model must work on people it never saw, so these datasets split by identity, not
by photo: `orl_people` keeps `fold`'s 10 people (of 40) for the test set, `val_people` more for
validation (choosing the checkpoint and the accept threshold), and trains on the rest. Labels
are the identities (ORL person 0..39, or the FSDD speaker's index); a model trained on them never
predicts a label, it only maps inputs to embeddings where one person's inputs lie close.

Images: the 92x112 grey photos are downscaled (by default by two, to 46x56: the faces stay
recognisable and a step costs four times less) and each photo is standardised on its own (its
mean and std), which removes global lighting; `read_face` applies the same to a new photo.

`PKBatcher` draws each batch as P identities x K inputs each, which batch-hard triplet mining
needs (every anchor has K-1 positives and (P-1)K negatives in the batch). The draw is a pure
function of `(seed, epoch)`, and `iter_from(k)` starts at batch k, as every batcher here does,
so a resumed run continues bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from layerwise.data.audio import FSDD_SPEAKERS, AudioFeatures, _waves, fsdd_recordings
from layerwise.data.batcher import epoch_generator
from layerwise.data.bundle import DatasetBundle
from layerwise.data.registry import DATASETS, data_root
from layerwise.errors import DataError, RecipeError

ORL_PEOPLE, ORL_SHOTS = 40, 10
ORL_SIZE = (112, 92)  # (height, width) of an ORL photo
IMAGE_SUFFIXES = {".pgm", ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def read_face(path: str | Path, size: tuple[int, int]) -> Tensor:
    """One image file -> a standardised grey input `(1, height, width)`; a file that is not an
    image is a `DataError` naming it."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"image '{path}' not found", hint="check the path")
    try:
        with Image.open(path) as image:
            grey = image.convert("L").resize((size[1], size[0]), Image.BILINEAR)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(
            f"cannot read '{path}' as an image: {exc}",
            hint=f"give a face photo ({', '.join(sorted(IMAGE_SUFFIXES))})",
        ) from exc
    return standardise_faces(torch.from_numpy(np.asarray(grey, dtype=np.float32) / 255.0)[None])


def standardise_faces(x: Tensor) -> Tensor:
    """Each image `(..., C, H, W)` minus its own mean, over its own std (lighting removed)."""
    dims = (-3, -2, -1)
    mean = x.mean(dim=dims, keepdim=True)
    return (x - mean) / x.std(dim=dims, keepdim=True).clamp(min=1e-5)


def orl_images(
    size: tuple[int, int] = (56, 46), root: str | Path | None = None, people: int = ORL_PEOPLE
) -> tuple[Tensor, Tensor]:
    """The ORL photos of the first `people` people (all 400 by default) as pixels in [0, 1]
    `(N, 1, height, width)` and the person of each (0..39; person p is folder s{p+1}), in
    person then shot order."""
    from PIL import Image

    folder = Path(root if root is not None else data_root()) / "faces_orl"
    if not (folder / "s1" / "1.pgm").is_file():
        raise DataError(
            f"ORL faces not found in {folder}",
            hint="put the s1..s40 folders of the AT&T face database there (sX/Y.pgm)",
        )
    images = []
    for person in range(people):
        for shot in range(ORL_SHOTS):
            with Image.open(folder / f"s{person + 1}" / f"{shot + 1}.pgm") as image:
                grey = image.convert("L").resize((size[1], size[0]), Image.BILINEAR)
            images.append(np.asarray(grey, dtype=np.float32) / 255.0)
    x = torch.from_numpy(np.stack(images))[:, None]
    return x, torch.arange(people).repeat_interleave(ORL_SHOTS)


def split_people(
    identities: int, fold: int, folds: int, val_people: int
) -> tuple[list[int], list[int], list[int]]:
    """(train, val, test) identities: fold `fold` of `folds` equal consecutive blocks tests;
    the last `val_people` of the others validate."""
    if not 0 <= fold < folds or folds < 2:
        raise RecipeError(
            f"data.args.fold is {fold} with folds={folds}",
            hint=f"use folds >= 2 and fold in 0..{max(folds, 2) - 1}",
        )
    block = identities // folds
    test = list(range(fold * block, (fold + 1) * block))
    rest = [i for i in range(identities) if i not in test]
    if not 0 <= val_people <= len(rest) - 2:
        raise RecipeError(
            f"data.args.val_people is {val_people}, but only {len(rest)} identities are left "
            "for training and validation",
            hint=f"use 0..{len(rest) - 2} (training needs at least two identities)",
        )
    cut = len(rest) - val_people
    return rest[:cut], rest[cut:], test


@dataclass(repr=False)
class IdentityBundle(DatasetBundle):
    """A `DatasetBundle` whose labels are identities, split by identity (see the module
    docstring); `images_per_person` is the K of the P x K batches, `identity_names` names every
    label (`class_names` too), and `pipeline` holds the audio features of a speaker set."""

    images_per_person: int = 4
    modality: str = "image"
    pipeline: AudioFeatures | None = None
    people: dict[str, list[int]] = field(default_factory=dict)


def _rows(x: Tensor, y: Tensor, keep: list[int]) -> tuple[Tensor, Tensor] | None:
    if not keep:
        return None
    mask = torch.isin(y, torch.tensor(keep))
    return x[mask], y[mask]


@DATASETS.register("orl_people")
def orl_people(
    fold: int = 0,
    folds: int = 4,
    val_people: int = 4,
    size: list[int] | tuple[int, int] = (56, 46),
    images_per_person: int = 4,
    people: int | None = None,
    root: str | Path | None = None,
) -> IdentityBundle:
    """The ORL faces split by person for metric learning (see the module docstring).

    `size` is (height, width) after downscaling; `people` keeps only the first N people (a small
    set for tests).
    """
    height, width = (int(v) for v in size)
    count = ORL_PEOPLE if people is None else int(people)
    if not 4 <= count <= ORL_PEOPLE:
        raise RecipeError(f"data.args.people is {people}", hint=f"use 4..{ORL_PEOPLE}")
    x, y = orl_images((height, width), root, count)
    x = standardise_faces(x)
    train, val, test = split_people(count, fold, folds, val_people)
    return IdentityBundle(
        name="orl_people",
        train=_rows(x, y, train),
        val=_rows(x, y, val),
        test=_rows(x, y, test),
        num_classes=count,
        input_shape=(1, height, width),
        class_names=[f"s{p + 1}" for p in range(count)],
        images_per_person=_check_k(images_per_person),
        modality="image",
        people={"train": train, "val": val, "test": test},
    )


@DATASETS.register("fsdd_speakers")
def fsdd_speakers(
    test_speakers: list[str] | None = None,
    val_speakers: list[str] | None = None,
    subset: int | None = None,
    n_mels: int = 40,
    images_per_person: int = 8,
    root: str | None = None,
) -> IdentityBundle:
    """FSDD clips labelled by speaker, split by speaker: the log-mel inputs of the `fsdd`
    dataset (mel statistics fitted on the training speakers only). Defaults: test on `theo`
    and `yweweler`, no validation speakers. `subset` keeps recordings 0..subset-1."""
    test_names = list(test_speakers or ["theo", "yweweler"])
    val_names = list(val_speakers or [])
    unknown = [s for s in test_names + val_names if s not in FSDD_SPEAKERS]
    if unknown:
        raise RecipeError(
            f"unknown FSDD speaker(s) {unknown}", hint=f"choose from {', '.join(FSDD_SPEAKERS)}"
        )
    train_names = [s for s in FSDD_SPEAKERS if s not in test_names + val_names]
    if len(train_names) < 2:
        raise RecipeError(
            f"only {len(train_names)} FSDD speaker(s) left to train on",
            hint="hold out at most 4 of the 6 speakers",
        )
    recordings = fsdd_recordings(root)
    if subset is not None:
        recordings = [r for r in recordings if r.index < subset]
    features = AudioFeatures(n_mels=n_mels)
    features.class_names = list(FSDD_SPEAKERS)
    speaker_of = {name: i for i, name in enumerate(FSDD_SPEAKERS)}
    parts = {}
    for split, names in (("train", train_names), ("val", val_names), ("test", test_names)):
        chosen = [r for r in recordings if r.speaker in names]
        if not chosen:
            parts[split] = None
            continue
        waves = _waves(chosen, features)
        x = features.fit(waves) if split == "train" else features.transform(waves)
        parts[split] = (x, torch.tensor([speaker_of[r.speaker] for r in chosen]))
    return IdentityBundle(
        name="fsdd_speakers",
        train=parts["train"],
        val=parts["val"],
        test=parts["test"],
        num_classes=len(FSDD_SPEAKERS),
        input_shape=features.input_shape,
        class_names=list(FSDD_SPEAKERS),
        images_per_person=_check_k(images_per_person),
        modality="audio",
        pipeline=features,
        people={
            split: [speaker_of[s] for s in names]
            for split, names in (("train", train_names), ("val", val_names), ("test", test_names))
        },
    )


def _check_k(k: int) -> int:
    if int(k) < 2:
        raise RecipeError(
            f"data.args.images_per_person is {k}",
            hint="use at least 2: every anchor needs a positive in its batch",
        )
    return int(k)


class PKBatcher:
    """Batches of `people` identities x `per_person` inputs each, drawn from `(seed, epoch)`.

    Each batch picks `people` distinct identities at random, then `per_person` of each one's
    inputs without replacement (with replacement when it has fewer). An epoch has as many
    batches as the data fills: `len(x) // (people * per_person)`, at least one.
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        people: int,
        per_person: int,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        self.identities = sorted(set(y.tolist()))
        if len(self.identities) < 2:
            raise DataError(
                f"P x K batches need at least two identities, the data has {len(self.identities)}",
                hint="train on more people",
            )
        self.people = max(2, min(int(people), len(self.identities)))
        self.per_person = int(per_person)
        self.seed = seed
        self.device = torch.device(device)
        # Not named x/y: the doctor profiles such a batcher as classification data, and identity
        # labels are no classes (counts per person, rows per class do not apply).
        self.inputs, self.identities_of = x.to(self.device), y.to(self.device)
        self.rows = [torch.nonzero(y == i).flatten() for i in self.identities]
        self.batch_size = self.people * self.per_person
        self.num_samples = len(y)
        self.epoch = 0

    def __len__(self) -> int:
        return max(1, self.num_samples // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return self.iter_from(0)

    def batch_rows(self) -> list[Tensor]:
        """The row indices of every batch of the current epoch."""
        generator = epoch_generator(self.seed, self.epoch)
        batches = []
        for _ in range(len(self)):
            chosen = torch.randperm(len(self.identities), generator=generator)[: self.people]
            picks = []
            for i in chosen.tolist():
                rows = self.rows[i]
                if len(rows) >= self.per_person:
                    at = torch.randperm(len(rows), generator=generator)[: self.per_person]
                else:
                    at = torch.randint(len(rows), (self.per_person,), generator=generator)
                picks.append(rows[at])
            batches.append(torch.cat(picks))
        return batches

    def iter_from(self, batch_index: int) -> Iterator[tuple[Tensor, Tensor]]:
        for rows in self.batch_rows()[batch_index:]:
            rows = rows.to(self.device)
            yield self.inputs[rows], self.identities_of[rows]
