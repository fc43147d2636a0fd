"""Attributions of one image input through captum: saliency, integrated gradients, Grad-CAM.

Each takes the model, one model input `x` (batch of 1, as the run's preprocessing made it) and
the class whose logit is explained, and returns a map shaped like `x` (Grad-CAM: like the last
conv layer's output, upsampled to the input's height and width). Integrated gradients also
returns its completeness gap: the attributions of a path from `baseline` to `x` must add up to
f(x) − f(baseline), and how far they miss says how far the map can be trusted (too few steps,
or a model whose output jumps along the path).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from layerwise.errors import LayerwiseError

INSTALL = "pip install 'layerwise[interpret]'"
IG_STEPS = 64  # Gauss-Legendre points: the gap is < 1% of f(x) − f(baseline) on a digits CNN


class ExplainError(LayerwiseError):
    """An explanation was asked for that the run cannot give (unknown method, no conv layer,
    a class out of range, a missing captum)."""


def captum_attr() -> Any:
    """`captum.attr`, or an `ExplainError` naming the pip command when captum is missing."""
    try:
        return importlib.import_module("captum.attr")
    except ImportError as exc:
        raise ExplainError(
            "explanations need captum, which is not installed",
            hint=f"install it with: {INSTALL}",
        ) from exc


class ClassScores(nn.Module):
    """The model's logits with at least two columns: a one-logit binary model z gets (−z, z),
    so class 0 and class 1 can both be explained by index."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *inputs: Tensor) -> Tensor:
        logits = self.model(*inputs)
        if logits.dim() == 1:
            logits = logits[:, None]
        return torch.cat([-logits, logits], dim=1) if logits.shape[1] == 1 else logits


@dataclass
class IntegratedGradients:
    """Integrated-gradient attributions and their completeness check."""

    attributions: Tensor
    total: float  # sum of the attributions
    difference: float  # f(x) − f(baseline) for the explained class
    steps: int

    @property
    def gap(self) -> float:
        """|sum of attributions − (f(x) − f(baseline))|: 0 for an exact path integral."""
        return abs(self.total - self.difference)

    @property
    def relative_gap(self) -> float:
        return self.gap / max(abs(self.difference), 1e-12)


def saliency(model: nn.Module, x: Tensor, target: int) -> Tensor:
    """|∂ logit_target / ∂ x|: which input values the score is most sensitive to, here."""
    attr = captum_attr()
    x = x.detach().clone().requires_grad_(True)  # as captum wants it (else it warns)
    return attr.Saliency(ClassScores(model)).attribute(x, target=target, abs=True).detach()


def integrated_gradients(
    model: nn.Module, x: Tensor, target: int, baseline: Tensor, steps: int = IG_STEPS
) -> IntegratedGradients:
    """Sundararajan et al. (2017): gradients averaged along the straight path from `baseline`
    (a blank input) to `x`, times `x − baseline`."""
    attr = captum_attr()
    scores = ClassScores(model)
    values = attr.IntegratedGradients(scores).attribute(
        x, baselines=baseline, target=target, n_steps=steps, internal_batch_size=steps
    )
    with torch.no_grad():
        ends = scores(torch.cat([x, baseline]))[:, target]
    return IntegratedGradients(
        values.detach(), float(values.sum()), float(ends[0] - ends[1]), steps
    )


def last_conv_layer(model: nn.Module, x: Tensor) -> tuple[str, nn.Module] | None:
    """Where Grad-CAM looks: the feature maps of the last 2-D convolution run on `x`, taken
    after the layers that keep their shape (batch norm, the activation), as Selvaraju et al.
    take the rectified maps; None for a model that runs no convolution.

    The raw convolution output is not used: it is negative wherever the bias wins (the
    background of a digit), and Grad-CAM's ReLU then erases the map (on a LeNet trained one
    epoch on MNIST, the map was zero everywhere for 29 of 30 digits).
    """
    ran: list[tuple[str, nn.Module, tuple[int, ...]]] = []
    leaves = [(n, m) for n, m in model.named_modules() if not list(m.children())]
    hooks = [
        m.register_forward_hook(
            lambda mod, _i, out, name=n: (
                ran.append((name, mod, tuple(out.shape))) if isinstance(out, Tensor) else None
            )
        )
        for n, m in leaves
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    convs = [i for i, (_, m, _) in enumerate(ran) if isinstance(m, nn.Conv2d)]
    if not convs:
        return None
    end = convs[-1]
    while end + 1 < len(ran) and ran[end + 1][2] == ran[convs[-1]][2]:
        end += 1
    return ran[end][0], ran[end][1]


def gradcam(model: nn.Module, x: Tensor, target: int, layer: nn.Module) -> Tensor:
    """Selvaraju et al. (2017): the layer's channels weighted by their mean gradient, summed,
    ReLU'd, and upsampled (bilinear) to the input's size; shape (1, 1, H, W)."""
    attr = captum_attr()
    cam = attr.LayerGradCam(ClassScores(model), layer).attribute(
        x, target=target, relu_attributions=True
    )
    return attr.LayerAttribution.interpolate(cam.detach(), x.shape[-2:], "bilinear")


def stroke_ratio(cam: Tensor, pixels: Tensor, background: float, ink: float = 0.1) -> float | None:
    """Mean Grad-CAM on the drawn pixels over its mean on the background (> 1: the map sits on
    the strokes). `pixels` in [0, 1], shaped like the image; None when one side is empty."""
    drawn = (pixels - background).abs().amax(dim=-3) > ink  # any channel differs
    heat = cam.reshape(drawn.shape)
    if not bool(drawn.any()) or bool(drawn.all()):
        return None
    inside, outside = float(heat[drawn].mean()), float(heat[~drawn].mean())
    return inside / max(outside, inside * 1e-6, 1e-30)  # at most 1e6: finite in JSON
