"""Residual networks: ResNet-18 (He et al., 2016a) and PreAct-ResNet-18 (He et al., 2016b).

A basic block computes ``relu(F(x) + shortcut(x))`` with ``F = conv3x3 -> norm -> relu ->
conv3x3 -> norm``; the shortcut is the identity, or a strided 1x1 conv (+ norm) when the
shape changes.  The pre-activation block moves the norm and ReLU in front of the convs,
``x + F(relu(norm(x)))``, and its projection shortcut reads the pre-activated input.

Forms:

* CIFAR (``resnet18``, ``preact18``): 3x3 stem conv at stride 1, no max-pool, stages of
  64/128/256/512 channels at 32/16/8/4 pixels, global average pool, one classifier layer.
  The CIFAR PreAct-ResNet has no norm/ReLU after the last block (the common CIFAR form
  the paper's code uses); its stem conv is followed directly by the first block.
* ImageNet (``resnet18_imagenet``): 7x7 stride-2 stem, 3x3 stride-2 max-pool, the same
  stages, adaptive average pool (so any input of at least 32 pixels works).

With ``norm="nd"`` every norm is an identity, every conv (shortcuts included) a
deconvolution layer.  (The public ImageNet code keeps a BatchNorm after the downsampling
shortcut of its ND ResNet; ours has no BatchNorm anywhere, as the paper describes.)
"""
from __future__ import annotations

import torch
from torch import nn

from ndlib.models.blocks import conv_norm_relu, projection
from ndlib.models.factory import FIRST_LAYER_DECONV, FIRST_LAYER_DECONV_10, LayerFactory
from ndlib.models.init import imagenet_init
from ndlib.models.registry import register

__all__ = ["BasicBlock", "PreActBlock", "ResNet", "PreActResNet"]

STAGE_WIDTHS = (64, 128, 256, 512)


class BasicBlock(nn.Module):
    """``relu(norm(conv(relu(norm(conv(x))))) + shortcut(x))``."""

    def __init__(self, f: LayerFactory, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = f.conv(in_channels, channels, 3, stride=stride, padding=1)
        self.norm1 = f.norm(channels)
        self.conv2 = f.conv(channels, channels, 3, padding=1)
        self.norm2 = f.norm(channels)
        self.shortcut = projection(f, in_channels, channels, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class PreActBlock(nn.Module):
    """``x + conv(relu(norm(conv(relu(norm(x))))))``; a projection shortcut reads ``relu(norm(x))``."""

    def __init__(self, f: LayerFactory, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        self.norm1 = f.norm(in_channels)
        self.conv1 = f.conv(in_channels, channels, 3, stride=stride, padding=1)
        self.norm2 = f.norm(channels)
        self.conv2 = f.conv(channels, channels, 3, padding=1)
        self.has_projection = stride != 1 or in_channels != channels
        self.shortcut = f.conv(in_channels, channels, 1, stride=stride) if self.has_projection else nn.Identity()
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.relu(self.norm1(x))
        shortcut = self.shortcut(pre) if self.has_projection else x
        out = self.conv1(pre)
        out = self.conv2(self.relu(self.norm2(out)))
        return self.rescale(out) + shortcut

    def rescale(self, out: torch.Tensor) -> torch.Tensor:
        """The residual branch before the addition (identity here; SENet gates it)."""
        return out


def make_stages(f: LayerFactory, block: type, blocks_per_stage, in_channels: int = 64) -> nn.Sequential:
    """Four stages of ``block``; every stage but the first halves the resolution."""
    stages = []
    for index, (width, count) in enumerate(zip(STAGE_WIDTHS, blocks_per_stage)):
        first_stride = 1 if index == 0 else 2
        blocks = []
        for i in range(count):
            blocks.append(block(f, in_channels, width, first_stride if i == 0 else 1))
            in_channels = width
        stages.append(nn.Sequential(*blocks))
    return nn.Sequential(*stages)


class ResNet(nn.Module):
    """ResNet with basic blocks; ``imagenet_stem`` picks the 7x7/stride-2 + max-pool stem."""

    def __init__(self, f: LayerFactory, blocks_per_stage, num_classes: int, imagenet_stem: bool = False):
        super().__init__()
        if imagenet_stem:
            self.stem = nn.Sequential(
                f.conv(3, 64, 7, stride=2, padding=3, first_layer=True),
                f.norm(64),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            )
        else:
            self.stem = conv_norm_relu(f, 3, 64, 3, padding=1, first_layer=True)
        self.stages = make_stages(f, BasicBlock, blocks_per_stage)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = f.linear(STAGE_WIDTHS[-1], num_classes)
        if imagenet_stem:
            imagenet_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pool(self.stages(self.stem(x)))
        return self.classifier(torch.flatten(out, 1))


class PreActResNet(nn.Module):
    """CIFAR pre-activation ResNet: 3x3 stem conv, pre-activation stages, pool, classifier."""

    def __init__(self, f: LayerFactory, blocks_per_stage, num_classes: int):
        super().__init__()
        self.stem = f.conv(3, 64, 3, padding=1, first_layer=True)
        self.stages = make_stages(f, PreActBlock, blocks_per_stage)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = f.linear(STAGE_WIDTHS[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pool(self.stages(self.stem(x)))
        return self.classifier(torch.flatten(out, 1))


@register("resnet18", table=1, paper_name="ResNet-18", first_layer=None)
def resnet18(f: LayerFactory, num_classes: int) -> nn.Module:
    return ResNet(f, (2, 2, 2, 2), num_classes)


@register("preact18", table=1, paper_name="PreAct-18", first_layer=FIRST_LAYER_DECONV_10)
def preact18(f: LayerFactory, num_classes: int) -> nn.Module:
    return PreActResNet(f, (2, 2, 2, 2), num_classes)


@register("resnet18_imagenet", table=2, paper_name="ResNet-18", first_layer=FIRST_LAYER_DECONV, test_input_size=64)
def resnet18_imagenet(f: LayerFactory, num_classes: int) -> nn.Module:
    return ResNet(f, (2, 2, 2, 2), num_classes, imagenet_stem=True)
