"""Data for layerwise: conversion, splits, batchers, augmentation and the dataset registry.

Importing this package registers the built-in datasets (`digits`, `mnist`, `breast_cancer`,
`wine`, `npz`, `csv`, `imdb`, `text`, the spoken digits `fsdd`, the series `sunspots`, `co2`
and `macrodata`, `multi30k`, `tinyshakespeare`, the ratings `movielens` and `synthetic_ratings`,
and `faulty`, which injects known faults into any of them).
"""

from layerwise.data import audio as _audio  # noqa: F401  (registers "fsdd")
from layerwise.data import digits as _digits  # noqa: F401  (registers "digits")
from layerwise.data import faces as _faces  # noqa: F401  (orl_people, fsdd_speakers)
from layerwise.data import faulty as _faulty  # noqa: F401  (registers "faulty")
from layerwise.data import files as _files  # noqa: F401  (registers "npz", "csv")
from layerwise.data import forecast as _forecast  # noqa: F401  (sunspots, co2, macrodata)
from layerwise.data import mixed_table as _mixed_table  # noqa: F401  (csv_table, fair)
from layerwise.data import mnist as _mnist  # noqa: F401  (registers "mnist")
from layerwise.data import multi30k as _multi30k  # noqa: F401  (registers "multi30k")
from layerwise.data import ratings as _ratings  # noqa: F401  (movielens, synthetic_ratings)
from layerwise.data import scenes as _scenes  # noqa: F401  (registers "mnist_scenes")
from layerwise.data import shakespeare as _shakespeare  # noqa: F401  (tinyshakespeare)
from layerwise.data import tabular as _tabular  # noqa: F401  (registers "breast_cancer", "wine")
from layerwise.data import text as _text  # noqa: F401  (registers "imdb", "text")
from layerwise.data.augment import augmentations
from layerwise.data.batcher import (
    Batcher,
    InMemoryBatcher,
    LoaderBatcher,
    epoch_generator,
    make_batcher,
    materialise,
)
from layerwise.data.bundle import DatasetBundle
from layerwise.data.clean import check_finite, clean_bundle
from layerwise.data.convert import to_tensors
from layerwise.data.registry import DATASETS, data_root, load_dataset
from layerwise.data.split import split

__all__ = [
    "DATASETS",
    "Batcher",
    "DatasetBundle",
    "InMemoryBatcher",
    "LoaderBatcher",
    "augmentations",
    "check_finite",
    "clean_bundle",
    "data_root",
    "epoch_generator",
    "load_dataset",
    "make_batcher",
    "materialise",
    "split",
    "to_tensors",
]
