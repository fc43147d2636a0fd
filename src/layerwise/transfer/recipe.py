"""A recipe's `backbone:` section turned into a model, an optimizer, callbacks and data.

`layerwise.experiment` calls these four functions; each returns None (or its input) when the
recipe has no backbone, so a recipe without one builds exactly as before.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from layerwise.data import DatasetBundle
from layerwise.errors import RecipeError
from layerwise.recipe import Recipe
from layerwise.train import Callback
from layerwise.transfer.backbone import load_backbone
from layerwise.transfer.features import FeatureExtractor, FeatureModel
from layerwise.transfer.groups import freeze, layer_groups
from layerwise.transfer.minilm import MiniLMFeatureModel, minilm_for_pipeline
from layerwise.transfer.optim import discriminative_optimizer
from layerwise.transfer.unfreeze import GradualUnfreezing

FEATURES_DIR = "features"  # inside the run folder


def build_backbone_model(recipe: Recipe, data: DatasetBundle) -> nn.Module:
    """The pretrained model with a new head for the data's classes, frozen as the recipe says
    (in `features` mode: a `FeatureModel` with its whole backbone frozen)."""
    spec = recipe.backbone
    if spec.source == "minilm":  # the sentence encoder, on the text pipeline's token ids
        model = minilm_for_pipeline(
            getattr(data, "pipeline", None), data.num_classes, seed=recipe.seed
        )
    elif not spec.path:
        raise RecipeError(
            f"backbone source {spec.source} needs backbone.path",
            hint="the run folder (or its name), or the weights file",
        )
    else:
        model = load_backbone(
            spec.source,
            spec.path,
            num_classes=data.num_classes,
            arch=spec.arch,
            checkpoint=spec.checkpoint,
            strict=spec.strict,
            seed=recipe.seed,
        )
    if spec.mode == "features":
        freeze(model, "backbone")
        wrapper = MiniLMFeatureModel if spec.source == "minilm" else FeatureModel
        return wrapper(model, data.input_shape)
    if spec.unfreeze_every is not None:
        freeze(model, "backbone")  # GradualUnfreezing takes it from here
    else:
        freeze(model, spec.freeze)
    return model


def backbone_optimizer(recipe: Recipe, model: nn.Module) -> Callable[[Any], Any] | None:
    """Discriminative learning rates when the recipe asks for them (lr_factor < 1 or lrs)."""
    spec = recipe.backbone
    if spec is None or (spec.lr_factor == 1.0 and spec.lrs is None):
        return None
    opt = recipe.train.optimizer
    kwargs = dict(opt.args)
    if opt.momentum:
        kwargs["momentum"] = opt.momentum
    if opt.nesterov:
        kwargs["nesterov"] = True
    return discriminative_optimizer(
        model, opt.name, opt.lr, spec.lr_factor, spec.lrs, opt.weight_decay, **kwargs
    )


def backbone_callbacks(recipe: Recipe) -> list[Callback]:
    spec = recipe.backbone
    if spec is None or spec.unfreeze_every is None or spec.mode == "features":
        return []
    return [GradualUnfreezing(every=spec.unfreeze_every)]


def backbone_features(
    recipe: Recipe, model: nn.Module, data: DatasetBundle, run_path: Path | None
) -> DatasetBundle:
    """In `features` mode, the data with every split's inputs replaced by the backbone's
    embeddings, computed once and cached in the run's `features/` folder; else `data`."""
    spec = recipe.backbone
    if spec is None or spec.mode != "features" or not isinstance(model, FeatureModel):
        return data
    cache = run_path / FEATURES_DIR if run_path is not None else None
    extractor = FeatureExtractor(model.model, cache_dir=cache)

    def embed(part: tuple[torch.Tensor, torch.Tensor] | None):
        return None if part is None else (extractor.transform(part[0]), part[1])

    return dataclasses.replace(
        data,
        train=embed(data.train),
        val=embed(data.val),
        test=embed(data.test),
        input_shape=(model.feature_dim,),
    )


def describe_groups(model: nn.Module) -> str:
    """One line per layer group: name, parameters, trainable or frozen."""
    lines = []
    for group in layer_groups(model):
        params = group.parameters()
        count = sum(p.numel() for p in params)
        state = "trainable" if any(p.requires_grad for p in params) else "frozen"
        lines.append(f"{group.name:<20} {count:>10,} params  {state}")
    return "\n".join(lines)
