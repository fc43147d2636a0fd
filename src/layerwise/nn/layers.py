"""Layers whose input size is inferred on the first call, as in Keras.

`Dense(128)` needs no `in_features`, `Conv2d(32, 3)` no `in_channels`: they are thin subclasses of
`torch.nn.Lazy*`, so after the first forward (or `materialize`) each one *becomes* the plain
PyTorch class (`nn.Linear`, `nn.Conv2d`, ...). Code that inspects a built model therefore only ever
sees ordinary PyTorch modules. Layers whose shape never depends on the input (pooling, `Flatten`,
`Dropout`, `Embedding`) are the PyTorch classes themselves.

`BatchNorm` picks its flavour from the rank of its first input: (N, C) and (N, C, L) become
`nn.BatchNorm1d`, (N, C, H, W) becomes `nn.BatchNorm2d`, (N, C, D, H, W) `nn.BatchNorm3d`.
`BatchNorm1d` and `BatchNorm2d` are the fixed-rank lazy versions for when you want the rank checked.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedParameter

from layerwise.errors import RecipeError

# Shape-independent layers are PyTorch's own classes.
MaxPool1d = nn.MaxPool1d
MaxPool2d = nn.MaxPool2d
AvgPool1d = nn.AvgPool1d
AvgPool2d = nn.AvgPool2d
AdaptiveAvgPool2d = nn.AdaptiveAvgPool2d
Flatten = nn.Flatten
Dropout = nn.Dropout
Embedding = nn.Embedding


class Dense(nn.LazyLinear):
    """A fully connected layer; `in_features` is taken from the last input dim at the first call.

    Becomes a plain `nn.Linear` once built.

    Example:
        >>> layer = Dense(10)
        >>> layer(torch.zeros(4, 64)).shape
        torch.Size([4, 10])
    """

    def __init__(self, out_features: int, bias: bool = True) -> None:
        super().__init__(out_features, bias=bias)


Linear = Dense


def _same_padding(
    kernel_size: int | Sequence[int], stride: int | Sequence[int], dilation: int | Sequence[int]
) -> str | tuple[int, ...]:
    """Turn padding="same" into explicit symmetric padding whenever the kernel allows it.

    With odd (dilated) kernels, padding (k - 1) // 2 keeps the size at stride 1 and gives
    ceil(size / stride) at larger strides, as Keras does; PyTorch's own "same" refuses strides.
    """
    ks = (kernel_size,) if isinstance(kernel_size, int) else tuple(kernel_size)
    ds = (dilation,) * len(ks) if isinstance(dilation, int) else tuple(dilation)
    effective = [d * (k - 1) + 1 for k, d in zip(ks, ds, strict=True)]
    if all(e % 2 == 1 for e in effective):
        return tuple((e - 1) // 2 for e in effective)
    strides = (stride,) if isinstance(stride, int) else tuple(stride)
    if any(s != 1 for s in strides):
        raise RecipeError(
            f"padding='same' with an even kernel {kernel_size} needs stride 1, got {stride}",
            hint="use an odd kernel size (e.g. 3) or explicit integer padding",
        )
    return "same"


def _resolve_padding(
    padding: int | Sequence[int] | str,
    kernel_size: int | Sequence[int],
    stride: int | Sequence[int],
    dilation: int | Sequence[int],
    ndim: int,
) -> int | tuple[int, ...] | str:
    if padding == "same":
        pad = _same_padding(kernel_size, stride, dilation)
        if isinstance(pad, tuple) and len(pad) == 1:
            return pad * ndim
        return pad
    if isinstance(padding, str) and padding != "valid":
        raise RecipeError(f"unknown padding '{padding}'", hint="use an integer, 'same' or 'valid'")
    return padding


class Conv1d(nn.LazyConv1d):
    """1-D convolution over (N, C, L); `in_channels` is inferred at the first call.

    `padding="same"` keeps the length (or gives ceil(L / stride) for strided odd kernels).
    Becomes a plain `nn.Conv1d` once built.
    """

    def __init__(
        self,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int | str = 0,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
    ) -> None:
        pad = _resolve_padding(padding, kernel_size, stride, dilation, 1)
        super().__init__(
            out_channels, kernel_size, stride, pad, dilation, groups, bias, padding_mode
        )


class Conv2d(nn.LazyConv2d):
    """2-D convolution over (N, C, H, W); `in_channels` is inferred at the first call.

    `padding="same"` keeps H and W (or gives ceil(size / stride) for strided odd kernels).
    Becomes a plain `nn.Conv2d` once built.

    Example:
        >>> Conv2d(8, 3, stride=2, padding="same")(torch.zeros(1, 3, 28, 28)).shape
        torch.Size([1, 8, 14, 14])
    """

    def __init__(
        self,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
    ) -> None:
        pad = _resolve_padding(padding, kernel_size, stride, dilation, 2)
        super().__init__(
            out_channels, kernel_size, stride, pad, dilation, groups, bias, padding_mode
        )


class GlobalAvgPool(nn.Module):
    """Average over every spatial dim: (N, C, *spatial) -> (N, C), for 1-D, 2-D and 3-D maps."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=tuple(range(2, x.dim())))


class BatchNorm1d(nn.LazyBatchNorm1d):
    """Lazy batch norm over (N, C) or (N, C, L); becomes `nn.BatchNorm1d`."""

    def __init__(
        self, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True
    ) -> None:
        super().__init__(eps=eps, momentum=momentum, affine=affine)


class BatchNorm2d(nn.LazyBatchNorm2d):
    """Lazy batch norm over (N, C, H, W); becomes `nn.BatchNorm2d`."""

    def __init__(
        self, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True
    ) -> None:
        super().__init__(eps=eps, momentum=momentum, affine=affine)


_BATCHNORM_BY_RANK: dict[int, type[nn.Module]] = {
    2: nn.BatchNorm1d,
    3: nn.BatchNorm1d,
    4: nn.BatchNorm2d,
    5: nn.BatchNorm3d,
}


class BatchNorm(nn.LazyBatchNorm1d):
    """Lazy batch norm that picks 1d/2d/3d from the rank of its first input (channels at dim 1).

    One layer name for dense and convolutional stacks alike; it becomes `nn.BatchNorm1d`,
    `nn.BatchNorm2d` or `nn.BatchNorm3d` once built.
    """

    def __init__(
        self, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True
    ) -> None:
        super().__init__(eps=eps, momentum=momentum, affine=affine)

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() not in _BATCHNORM_BY_RANK:
            raise ValueError(f"expected 2D, 3D, 4D or 5D input (got {input.dim()}D input)")

    def initialize_parameters(self, input: Tensor) -> None:  # type: ignore[override]
        self._check_input_dim(input)
        # The lazy machinery swaps the class to `cls_to_become` right after this call.
        self.cls_to_become = _BATCHNORM_BY_RANK[input.dim()]
        super().initialize_parameters(input)


class LayerNorm(LazyModuleMixin, nn.LayerNorm):
    """Layer norm over the last dim, sized from the first input; becomes `nn.LayerNorm`."""

    cls_to_become = nn.LayerNorm

    def __init__(
        self, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True
    ) -> None:
        super().__init__(0, eps, elementwise_affine=False, bias=False)
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            self.weight = UninitializedParameter()
            if bias:
                self.bias = UninitializedParameter()

    def reset_parameters(self) -> None:
        if not self.has_uninitialized_params() and self.normalized_shape != (0,):
            super().reset_parameters()

    def initialize_parameters(self, input: Tensor) -> None:  # type: ignore[override]
        if self.normalized_shape == (0,):
            self.normalized_shape = (input.shape[-1],)
        if self.has_uninitialized_params():
            self.weight.materialize(self.normalized_shape)
            if self.bias is not None:
                self.bias.materialize(self.normalized_shape)
            self.reset_parameters()
