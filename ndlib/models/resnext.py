"""ResNeXt-29 (32x4d) for CIFAR (Xie et al., 2017), the Table 1 form.

A ResNeXt block is a bottleneck whose 3x3 conv is split into ``cardinality`` groups:
``relu(norm(conv1x1(relu(norm(gconv3x3(relu(norm(conv1x1(x)))))))) + shortcut(x))`` with
``cardinality * width`` channels inside and twice that at the output.  ResNeXt-29 has
three stages of three blocks (9 blocks x 3 convs + stem + classifier = 29 layers); the
width per group doubles at each stage (4, 8, 16) and the resolution halves at stages 2
and 3.  The stem is a 1x1 conv from RGB to 64 channels, as in the CIFAR code the paper
builds on.

ND specifics of the public code, kept here as named constants: the grouped 3x3 conv uses
:data:`GROUPED_CONV_DECONV` (3 Newton-Schulz iterations; one small covariance per group,
``B = C / groups``).
"""
from __future__ import annotations

from types import MappingProxyType

import torch
from torch import nn

from ndlib.models.blocks import conv_norm_relu, projection
from ndlib.models.factory import FIRST_LAYER_DECONV_10, LayerFactory
from ndlib.models.registry import register

__all__ = ["GROUPED_CONV_DECONV", "ResNeXtBlock", "ResNeXt"]

#: FastDeconv settings of the grouped 3x3 conv in the ND model (public code: n_iter=3).
GROUPED_CONV_DECONV = MappingProxyType({"n_iter": 3})


class ResNeXtBlock(nn.Module):
    """Grouped-conv bottleneck; output channels ``2 * cardinality * width``."""

    expansion = 2

    def __init__(self, f: LayerFactory, in_channels: int, cardinality: int, width: int, stride: int):
        super().__init__()
        inner = cardinality * width
        out_channels = self.expansion * inner
        self.conv1 = f.conv(in_channels, inner, 1)
        self.norm1 = f.norm(inner)
        self.conv2 = f.conv(
            inner, inner, 3, stride=stride, padding=1, groups=cardinality, deconv_overrides=GROUPED_CONV_DECONV
        )
        self.norm2 = f.norm(inner)
        self.conv3 = f.conv(inner, out_channels, 1)
        self.norm3 = f.norm(out_channels)
        self.shortcut = projection(f, in_channels, out_channels, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.relu(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


class ResNeXt(nn.Module):
    """CIFAR ResNeXt: 1x1 stem, three stages (strides 1, 2, 2), pool, classifier."""

    def __init__(self, f: LayerFactory, blocks_per_stage=(3, 3, 3), cardinality: int = 32, width: int = 4,
                 num_classes: int = 10):
        super().__init__()
        self.stem = conv_norm_relu(f, 3, 64, 1, first_layer=True)
        blocks: list[nn.Module] = []
        channels = 64
        for index, count in enumerate(blocks_per_stage):
            for i in range(count):
                stride = 2 if (index > 0 and i == 0) else 1
                blocks.append(ResNeXtBlock(f, channels, cardinality, width, stride))
                channels = ResNeXtBlock.expansion * cardinality * width
            width *= 2
        self.stages = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = f.linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.stages(self.stem(x))), 1))


@register("resnext29", table=1, paper_name="ResNeXt-29", first_layer=FIRST_LAYER_DECONV_10)
def resnext29(f: LayerFactory, num_classes: int) -> nn.Module:
    return ResNeXt(f, num_classes=num_classes)
