"""CIFAR-style ResNets (He et al. 2016, section 4.2): 6n+2 layers, 16/32/64 channels.

A 3x3 stem conv, three stages of n basic blocks (the 2nd and 3rd start with stride 2), global
average pooling and a linear head. Shortcuts are "option A": where a block halves the resolution
and doubles the channels, the shortcut subsamples by 2 and pads the new channels with zeros, half
before and half after the existing ones, so shortcuts carry no parameters.

Parameter and buffer names match the public pretrained CIFAR-10 checkpoints
(`shared/data/pretrained/cifar_resnet/resnet{20,32,44,56}-*.th`), which `load_cifar_resnet`
reads. Those models expect 32x32 RGB images scaled to [0, 1] and then normalised with
`CIFAR_RESNET_MEAN` / `CIFAR_RESNET_STD` (the ImageNet statistics they were trained with).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from layerwise.errors import CheckpointError, RecipeError
from layerwise.models.registry import MODELS
from layerwise.nn.build import init_weights
from layerwise.nn.layers import Conv2d, GlobalAvgPool

CIFAR_RESNET_MEAN = (0.485, 0.456, 0.406)
CIFAR_RESNET_STD = (0.229, 0.224, 0.225)
STAGE_CHANNELS = (16, 32, 64)


class PadShortcut(nn.Module):
    """Option-A shortcut: subsample by `stride`, zero-pad `extra` channels around the input."""

    def __init__(self, stride: int, extra: int) -> None:
        super().__init__()
        self.stride = stride
        self.before, self.after = extra // 2, extra - extra // 2

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.before, self.after))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, pad_channels=({self.before}, {self.after})"


class BasicBlock(nn.Module):
    """conv3x3 -> BN -> ReLU -> conv3x3 -> BN, plus the shortcut, then ReLU."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        if stride == 1 and in_channels == channels:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = PadShortcut(stride, channels - in_channels)
        self.relu2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for small images; `in_channels=None` infers the input channels lazily."""

    def __init__(self, depth: int = 20, num_classes: int = 10, in_channels: int | None = 3) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise RecipeError(
                f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110, ...), got {depth}",
                hint="use one of resnet20, resnet32, resnet44, resnet56",
            )
        blocks = (depth - 2) // 6
        self.depth = depth
        first = STAGE_CHANNELS[0]
        if in_channels is None:
            self.conv1: nn.Module = Conv2d(first, 3, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_channels, first, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(first)
        self.relu = nn.ReLU()
        width = first
        for stage, channels in enumerate(STAGE_CHANNELS, start=1):
            layers = []
            for i in range(blocks):
                stride = 2 if stage > 1 and i == 0 else 1
                layers.append(BasicBlock(width, channels, stride))
                width = channels
            self.add_module(f"layer{stage}", nn.Sequential(*layers))
        self.pool = GlobalAvgPool()
        self.linear = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(self.pool(x))


@MODELS.register("resnet")
def resnet(
    depth: int = 20, num_classes: int = 10, in_channels: int | None = None, init: str = "he"
) -> CifarResNet:
    """A CIFAR ResNet of `depth` = 6n+2 layers; input channels are inferred unless given.

    Example:
        >>> resnet(20)(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """
    return init_weights(CifarResNet(depth, num_classes, in_channels), init)


@MODELS.register("resnet20")
def resnet20(
    num_classes: int = 10, in_channels: int | None = None, init: str = "he"
) -> CifarResNet:
    """ResNet-20 (0.27M parameters with 10 classes)."""
    return resnet(20, num_classes, in_channels, init)


@MODELS.register("resnet32")
def resnet32(
    num_classes: int = 10, in_channels: int | None = None, init: str = "he"
) -> CifarResNet:
    """ResNet-32 (0.46M parameters with 10 classes)."""
    return resnet(32, num_classes, in_channels, init)


@MODELS.register("resnet44")
def resnet44(
    num_classes: int = 10, in_channels: int | None = None, init: str = "he"
) -> CifarResNet:
    """ResNet-44 (0.66M parameters with 10 classes)."""
    return resnet(44, num_classes, in_channels, init)


@MODELS.register("resnet56")
def resnet56(
    num_classes: int = 10, in_channels: int | None = None, init: str = "he"
) -> CifarResNet:
    """ResNet-56 (0.85M parameters with 10 classes)."""
    return resnet(56, num_classes, in_channels, init)


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} not found",
            hint="the CIFAR ResNet checkpoints live in shared/data/pretrained/cifar_resnet/",
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any failure to unpickle means the file is not a usable checkpoint
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({type(exc).__name__}: {exc})",
            hint="copy the file again; its sha256 prefix is part of its name",
        ) from exc
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(
            f"checkpoint {path} holds no state dict of tensors",
            hint="expected a torch.save'd {'state_dict': ...} or a plain state dict",
        )
    return {key.removeprefix("module."): value for key, value in state.items()}


def _infer_depth(state: dict[str, Tensor], path: Path) -> int:
    blocks = sum(1 for key in state if re.fullmatch(r"layer\d+\.\d+\.conv1\.weight", key))
    if blocks and blocks % 3 == 0:
        return 2 * blocks + 2  # 3 stages x n blocks x 2 convs + stem + head
    named = re.search(r"resnet(\d+)", path.name)
    if named:
        return int(named.group(1))
    raise CheckpointError(
        f"cannot tell the depth of the ResNet in {path}: it has no layerN.M.conv1 weights",
        hint="pass depth=20/32/44/56 or check that this is a CIFAR ResNet checkpoint",
    )


def load_cifar_resnet(path: str | Path, depth: int | None = None) -> CifarResNet:
    """Load a pretrained CIFAR ResNet checkpoint (keys may carry DataParallel's `module.` prefix).

    The depth comes from `depth`, else from the number of blocks in the file, else from its name
    (`resnet20-*.th`); classes and input channels from the weights. Loading is strict. Raises
    `CheckpointError` for a missing, corrupt or truncated file or keys that do not fit. The model
    is returned in train mode, as PyTorch creates modules; call `.eval()` to predict.
    """
    path = Path(path)
    state = _read_state_dict(path)
    if depth is None:
        depth = _infer_depth(state, path)
    try:
        num_classes, in_channels = state["linear.weight"].shape[0], state["conv1.weight"].shape[1]
    except (KeyError, IndexError) as exc:
        raise CheckpointError(
            f"checkpoint {path} lacks a CIFAR ResNet's conv1/linear weights ({exc})",
            hint="check that this is a CIFAR ResNet checkpoint",
        ) from exc
    model = CifarResNet(depth, num_classes, in_channels)
    problems = _mismatches(model.state_dict(), state)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        problems = problems or str(exc).splitlines()[0]
    if problems:
        raise CheckpointError(
            f"checkpoint {path} does not fit a ResNet-{depth}: {problems}",
            hint="pass the right depth= or check that the file is a CIFAR ResNet checkpoint",
        )
    return model


def _mismatches(expected: dict[str, Tensor], found: dict[str, Tensor]) -> str:
    """Describe missing, unexpected and wrongly shaped keys in a few words ('' if none)."""
    # checkpoints from before PyTorch 0.4 lack num_batches_tracked; BatchNorm fills it in
    missing = [k for k in expected if k not in found and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in found if k not in expected]
    reshaped = [
        f"{k} {tuple(found[k].shape)} instead of {tuple(expected[k].shape)}"
        for k in found
        if k in expected and found[k].shape != expected[k].shape
    ]
    parts = [
        f"{len(keys)} {what} (e.g. {', '.join(keys[:3])})"
        for what, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("wrong shapes", reshaped),
        )
        if keys
    ]
    return "; ".join(parts)
