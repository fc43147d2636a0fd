"""A small FCOS detector for small grey images, trained from scratch (no weights downloaded).

torchvision's `FCOS` (Tian et al. 2019: anchor-free, one box per feature-map cell, focal loss,
GIoU box loss, centre-ness) around a backbone sized for CPU training on 128x128 scenes: four
stride-2 stages of two 3x3 conv-BN-ReLU each (strides 2, 4, 8, 16), and a feature pyramid on the
last two (strides 8 and 16, `fpn_channels` wide). Two levels are enough for objects of 10 to 60
pixels: FCOS sends a box to the level whose scale range holds its largest centre-to-side distance
(the stride-8 level takes everything up to 64 pixels). The head has `head_convs` convolutions per
branch instead of FCOS's four. `min_size`/`max_size` equal the canvas, so torchvision's transform
never rescales an image.

Called as torchvision detectors are: in training, `model(images, targets)` returns the loss dict
(`classification`, `bbox_regression`, `bbox_ctrness`); in eval, `model(images)` returns one
`{"boxes", "scores", "labels"}` per image. `images` is a `(N, C, H, W)` float tensor in [0, 1] or a
list of `(C, H, W)` tensors.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import Tensor, nn


class SceneBackbone(nn.Module):
    """Four stride-2 conv stages and a two-level feature pyramid (strides 8 and 16)."""

    def __init__(
        self, in_channels: int = 1, widths: Sequence[int] = (16, 32, 64, 96), fpn_channels: int = 64
    ) -> None:
        from torchvision.ops import FeaturePyramidNetwork

        super().__init__()
        stages, previous = [_conv(in_channels, widths[0], stride=2)], widths[0]  # the stem
        for width in widths[1:]:
            stages.append(
                nn.Sequential(_conv(previous, width, stride=2), _conv(width, width, stride=1))
            )
            previous = width
        self.stages = nn.ModuleList(stages)
        self.fpn = FeaturePyramidNetwork(list(widths[-2:]), fpn_channels)
        self.out_channels = fpn_channels  # what FCOS reads to size its head

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return self.fpn(OrderedDict((("p3", features[-2]), ("p4", features[-1]))))


def _conv(inputs: int, outputs: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(outputs),
        nn.ReLU(inplace=True),
    )


def scene_fcos(
    num_classes: int = 10,
    in_channels: int = 1,
    canvas: int = 128,
    widths: Sequence[int] = (16, 32, 64, 96),
    fpn_channels: int = 64,
    head_convs: int = 2,
    score_thresh: float = 0.05,
    nms_thresh: float = 0.5,
    detections_per_img: int = 20,
    pixel_mean: float = 0.1,
    pixel_std: float = 0.25,
) -> nn.Module:
    """A torchvision `FCOS` with `SceneBackbone` for `canvas`-sized images (see the module
    docstring); every weight is initialised from scratch.

    `score_thresh` is low on purpose: mAP ranks every detection, so a high threshold only costs
    recall; `layerwise predict` shows the confident ones. Pixels are standardised with
    `pixel_mean`/`pixel_std` (near a scene's: mostly black, some ink).
    """
    from torchvision.models.detection import FCOS
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.fcos import FCOSHead

    backbone = SceneBackbone(in_channels, widths, fpn_channels)
    anchors = AnchorGenerator(sizes=((8,), (16,)), aspect_ratios=((1.0,), (1.0,)))
    head = FCOSHead(fpn_channels, num_anchors=1, num_classes=num_classes, num_convs=head_convs)
    return FCOS(
        backbone,
        num_classes=num_classes,
        min_size=canvas,
        max_size=canvas,
        image_mean=[pixel_mean] * in_channels,
        image_std=[pixel_std] * in_channels,
        anchor_generator=anchors,
        head=head,
        score_thresh=score_thresh,
        nms_thresh=nms_thresh,
        detections_per_img=detections_per_img,
        topk_candidates=200,
    )
