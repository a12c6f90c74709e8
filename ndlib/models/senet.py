"""SENet-18 (Hu et al., 2018, Squeeze-and-Excitation Networks), CIFAR form (Table 1).

A pre-activation ResNet-18 (see :mod:`ndlib.models.resnet`) whose residual branch is
rescaled channel-wise before the addition: ``s = sigmoid(W2 relu(W1 avgpool(h)))`` with a
reduction of 16 (``W1``: C -> C/16, ``W2``: C/16 -> C, both 1x1 convs with a bias), and
``y = h * s + shortcut``.  As in the CIFAR code the paper builds on, the stem is
``conv3x3 -> norm -> relu`` and the blocks are pre-activation blocks without a final
norm.  With ``norm="nd"`` the two gate convs are deconvolution layers too (they whiten the
pooled channel vector), as in the public code.  The gate, :class:`SqueezeExcitation`, lives in
:mod:`ndlib.models.blocks` (EfficientNet-B0 uses it too).
"""
from __future__ import annotations

import torch
from torch import nn

from ndlib.models.blocks import SqueezeExcitation, conv_norm_relu
from ndlib.models.factory import FIRST_LAYER_DECONV, LayerFactory
from ndlib.models.registry import register
from ndlib.models.resnet import STAGE_WIDTHS, PreActBlock

__all__ = ["SqueezeExcitation", "SEPreActBlock", "SENet"]


class SEPreActBlock(PreActBlock):
    """Pre-activation basic block with a squeeze-excitation gate on the residual branch."""

    def __init__(self, f: LayerFactory, in_channels: int, channels: int, stride: int = 1, reduction: int = 16):
        super().__init__(f, in_channels, channels, stride)
        self.gate = SqueezeExcitation(f, channels, channels // reduction)

    def rescale(self, out: torch.Tensor) -> torch.Tensor:
        return self.gate(out)


class SENet(nn.Module):
    """CIFAR SENet: 3x3 stem (conv, norm, relu), four SE pre-activation stages, pool, classifier."""

    def __init__(self, f: LayerFactory, blocks_per_stage=(2, 2, 2, 2), num_classes: int = 10):
        super().__init__()
        self.stem = conv_norm_relu(f, 3, 64, 3, padding=1, first_layer=True)
        blocks: list[nn.Module] = []
        channels = 64
        for index, (width, count) in enumerate(zip(STAGE_WIDTHS, blocks_per_stage)):
            for i in range(count):
                stride = 2 if (index > 0 and i == 0) else 1
                blocks.append(SEPreActBlock(f, channels, width, stride))
                channels = width
        self.stages = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = f.linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.stages(self.stem(x))), 1))


@register("senet18", table=1, paper_name="SENet-18", first_layer=FIRST_LAYER_DECONV)
def senet18(f: LayerFactory, num_classes: int) -> nn.Module:
    return SENet(f, num_classes=num_classes)
