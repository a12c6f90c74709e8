"""MobileNetV2 (Sandler et al., 2018), CIFAR form (Table 1).

An inverted residual block expands the channels ``t``-fold with a 1x1 conv, filters each
channel with a 3x3 depthwise conv, and projects back with a linear 1x1 conv (no ReLU
after the projection).  The CIFAR form keeps 32x32 longer than the ImageNet network: the
stem conv and the second stage use stride 1, so the strides are 1, 1, 1, 2, 2, 1, 2, 1
and the final 4x4 map is average-pooled.  As in the CIFAR code the paper builds on, a
stride-1 block whose channel count changes adds a 1x1 conv (+ norm) shortcut; stride-2
blocks have no shortcut.  After the blocks a 1x1 conv lifts 320 to 1280 channels.

ND specifics of the public code (named constants here): the depthwise conv uses
:data:`DEPTHWISE_DECONV` (1 Newton-Schulz iteration on the per-channel 9x9 patch
covariance) and the projection conv uses one iteration with a block equal to the block's
*input* width (:func:`projection_overrides`).  These per-layer settings win over the
options given to ``create``.

The block is the shared :class:`ndlib.models.blocks.InvertedResidual` (no squeeze-excitation
gate here; EfficientNet-B0's block is the same one with a gate); :class:`MobileNetV2` passes it
the two per-layer settings above.
"""
from __future__ import annotations

from types import MappingProxyType

import torch
from torch import nn

from ndlib.models.blocks import InvertedResidual, conv_norm_relu
from ndlib.models.factory import FIRST_LAYER_DECONV_10, LayerFactory
from ndlib.models.registry import register

__all__ = ["DEPTHWISE_DECONV", "projection_overrides", "InvertedResidual", "MobileNetV2", "CIFAR_PLAN"]

#: (expansion t, output channels, blocks, first stride), CIFAR strides.
CIFAR_PLAN = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))

#: FastDeconv settings of the depthwise conv in the ND model (public code: n_iter=1).
DEPTHWISE_DECONV = MappingProxyType({"n_iter": 1})


def projection_overrides(in_channels: int) -> dict:
    """FastDeconv settings of the ND projection conv (public code: block = block input width, n_iter=1)."""
    return {"block": in_channels, "n_iter": 1}


class MobileNetV2(nn.Module):
    """CIFAR MobileNetV2: stride-1 3x3 stem (32 ch), inverted residuals, 1x1 to 1280, pool, classifier."""

    def __init__(self, f: LayerFactory, num_classes: int, plan=CIFAR_PLAN):
        super().__init__()
        self.stem = conv_norm_relu(f, 3, 32, 3, padding=1, first_layer=True)
        blocks: list[nn.Module] = []
        channels = 32
        for expansion, out_channels, count, stride in plan:
            for i in range(count):
                blocks.append(InvertedResidual(f, channels, out_channels, expansion, stride if i == 0 else 1,
                                               depthwise_overrides=DEPTHWISE_DECONV,
                                               project_overrides=projection_overrides(channels)))
                channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.head = conv_norm_relu(f, channels, 1280, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = f.linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pool(self.head(self.blocks(self.stem(x))))
        return self.classifier(torch.flatten(out, 1))


@register("mobilenetv2", table=1, paper_name="MobileNet v2", first_layer=FIRST_LAYER_DECONV_10)
def mobilenetv2(f: LayerFactory, num_classes: int) -> nn.Module:
    return MobileNetV2(f, num_classes)
