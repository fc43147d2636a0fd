"""Where a pretrained backbone comes from: an earlier layerwise run, a CIFAR ResNet checkpoint,
or a torchvision architecture with a weights file the user supplies. Nothing is downloaded.

Each loader rebuilds the architecture first, loads the weights through `load_weights` (all keys
checked, one `load_state_dict`, nothing half-loaded), then, with `num_classes`, replaces the head.

Example:
    >>> model = load_backbone("cifar_resnet", "resnet20-12fca82f.th", num_classes=40)
    >>> freeze(model, "backbone")                  # train only the new head
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch
from torch import nn

from layerwise.data import data_root
from layerwise.errors import CheckpointError, RecipeError, did_you_mean
from layerwise.models import MODELS, CifarResNet, create_model
from layerwise.runs import Run
from layerwise.transfer.checkpoint import load_weights, read_state_dict
from layerwise.transfer.groups import find_head, replace_head

SOURCES = ("run", "cifar_resnet", "torchvision")


def load_backbone(
    source: str,
    path: str | Path,
    *,
    num_classes: int | None = None,
    arch: str | None = None,
    checkpoint: str = "best",
    strict: bool = True,
    seed: int | None = 0,
    runs_root: str | Path = "runs",
) -> nn.Module:
    """A pretrained model from `source`, its head replaced for `num_classes` when given.

    Args:
        source: `run` (a layerwise run folder or name), `cifar_resnet` (a CIFAR ResNet-20/32/44/56
            checkpoint) or `torchvision` (architecture `arch`, e.g. `resnet18`, and a weights file).
        path: the run, or the weights file.
        arch: the torchvision architecture (source `torchvision`) or the CIFAR ResNet depth name
            (`resnet32`; else read from the file).
        checkpoint: `best` or `last`, for a run (`best` falls back to `last` when absent).
        strict: refuse weights with missing or unexpected keys.
        seed: seeds the new head's initialisation.
    """
    if source != "run":
        path = resolve_weights_path(path)
    if source == "run":
        model = from_run(path, checkpoint=checkpoint, strict=strict, runs_root=runs_root)
    elif source == "cifar_resnet":
        model = from_cifar_resnet(path, arch=arch, strict=strict)
    elif source == "torchvision":
        if not arch:
            raise RecipeError(
                "a torchvision backbone needs its architecture",
                hint="set backbone.arch, e.g. resnet18, mobilenet_v3_small",
            )
        model = from_torchvision(arch, path, strict=strict)
    else:
        raise RecipeError(f"unknown backbone source '{source}'", hint=did_you_mean(source, SOURCES))
    if num_classes is not None:
        replace_head(model, num_classes, seed=seed)
    return model


def from_run(
    path: str | Path,
    *,
    checkpoint: str = "best",
    strict: bool = True,
    runs_root: str | Path = "runs",
) -> nn.Module:
    """The model of an earlier layerwise run, rebuilt from its recipe, with its checkpoint."""
    if checkpoint not in ("best", "last"):
        raise RecipeError(
            f"backbone.checkpoint must be 'best' or 'last', got {checkpoint!r}",
            hint="best: the epoch with the best monitored metric",
        )
    run = Run.open(path, root=runs_root)
    recipe = run.recipe()
    which = checkpoint if run.has_checkpoint(checkpoint) else "last"
    if not run.has_checkpoint(which):
        raise CheckpointError(
            f"run '{run.name}' has no checkpoint to take a backbone from",
            hint="train it first (a run writes checkpoints at every epoch end)",
        )
    weights, _ = run.load_checkpoint(which)
    args = dict(recipe.model.args)
    accepts = inspect.signature(MODELS.get(recipe.model.name)).parameters
    head_weight = _head_weight(weights)
    if "num_classes" in accepts and head_weight is not None:
        args["num_classes"] = int(head_weight.shape[0])
    model = create_model(recipe.model.name, **args)
    # lazy layers take their shapes from the weights as they load
    return load_weights(model, weights, source=f"run '{run.name}' ({which})", strict=strict)


def from_cifar_resnet(
    path: str | Path, *, arch: str | None = None, strict: bool = True
) -> nn.Module:
    """A CIFAR ResNet (`models/resnet.py`) with the weights of a pretrained checkpoint."""
    path = Path(path)
    state = read_state_dict(path)
    depth = _depth(arch, state, path)
    head = state.get("linear.weight")
    num_classes = int(head.shape[0]) if head is not None and head.dim() == 2 else 10
    model = CifarResNet(depth, num_classes, in_channels=3)
    return load_weights(model, state, source=f"'{path}'", strict=strict)


def from_torchvision(arch: str, path: str | Path, *, strict: bool = True) -> nn.Module:
    """A torchvision classification architecture with the user's weights file (no download)."""
    import torchvision.models as tvm

    names = tvm.list_models(module=tvm)
    if arch not in names:
        raise RecipeError(
            f"unknown torchvision architecture '{arch}'", hint=did_you_mean(arch, names)
        )
    state = read_state_dict(path)
    head = _head_weight(state)
    kwargs: dict[str, Any] = {"weights": None}
    if head is not None:
        kwargs["num_classes"] = int(head.shape[0])
    if arch.startswith(("inception", "googlenet")):
        kwargs["aux_logits"] = any(k.startswith(("AuxLogits", "aux1")) for k in state)
        kwargs["init_weights"] = False
    model = tvm.get_model(arch, **kwargs)
    return load_weights(model, state, source=f"'{path}' ({arch})", strict=strict)


def resolve_weights_path(path: str | Path) -> Path:
    """`path` as given when it exists, else relative to the data root (where the CIFAR ResNet
    checkpoints are staged: `pretrained/cifar_resnet/`)."""
    path = Path(path).expanduser()
    if path.exists() or path.is_absolute():
        return path
    staged = data_root() / path
    return staged if staged.exists() else path


def _head_weight(state: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """The last 2-D weight in the file: the head of a classifier saved in module order."""
    matrices = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 2]
    return matrices[-1] if matrices else None


def _depth(arch: str | None, state: dict[str, torch.Tensor], path: Path) -> int:
    if arch:
        if not arch.startswith("resnet") or not arch[6:].isdigit():
            raise RecipeError(
                f"backbone.arch for a CIFAR ResNet is resnet20/32/44/56, got '{arch}'",
                hint="or leave it out: the depth is read from the file",
            )
        return int(arch[6:])
    blocks = sum(1 for k in state if k.startswith("layer") and k.endswith(".conv1.weight"))
    if blocks and blocks % 3 == 0:
        return 2 * blocks + 2
    raise CheckpointError(
        f"'{path}' is not a CIFAR ResNet checkpoint: it has no layerN.M.conv1 weights "
        f"(its first keys: {', '.join(list(state)[:4])})",
        hint="give a resnet20/32/44/56 checkpoint, or use source: torchvision with arch",
    )


def head_of(model: nn.Module) -> nn.Linear:
    """The model's current head."""
    return find_head(model)[1]
