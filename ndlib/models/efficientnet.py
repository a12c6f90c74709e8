"""EfficientNet-B0 (Tan & Le, 2019) in the simplified CIFAR form used for Table 1.

The building block is the MobileNetV2 inverted residual (expand 1x1 -> depthwise 3x3 ->
linear project 1x1) with a squeeze-excitation gate on its output,
``y = h * sigmoid(W2 relu(W1 avgpool(h))) (+ shortcut at stride 1)``.

The network follows B0's stage plan (expansion, channels, repeats: 1/16/1, 6/24/2,
6/40/2, 6/80/3, 6/112/3, 6/192/4, 6/320/1) in the form of the CIFAR code the paper's
public code builds on, whose 2.91M "Net Size" is the figure of Table 1.  That form differs
from the ImageNet B0 on purpose, and we keep its shapes so the parameter counts compare:

* all depthwise kernels are 3x3 (B0 has 5x5 in four stages), ReLU instead of swish;
* the SE gate reads the projected output with reduction 16 (B0: the expanded features,
  ratio 0.25 of the block input);
* a stride-1 block that changes the width has a 1x1 conv (+ norm) shortcut; stride-2
  blocks have none; the first block keeps a 1x1 "expansion" conv even at expansion 1;
* strides 2, 1, 2, 2, 1, 2, 2 after a stride-1 3x3 stem, so 32x32 ends at 1x1 with 320
  channels, classified directly (no 1x1 conv to 1280, no dropout).

With ``norm="nd"`` every conv in every block is a deconvolution layer.  (The public code
passes ``deconv=None`` to its blocks, so *its* ND EfficientNet deconvolves only the stem
and keeps BatchNorm in every block; see ``ndlib.models.parameter_table`` for the effect on
the parameter count.)
"""
from __future__ import annotations

import torch
from torch import nn

from ndlib.models.factory import FIRST_LAYER_DECONV_10, LayerFactory
from ndlib.models.registry import register
from ndlib.models.senet import SqueezeExcitation

__all__ = ["MBConvSE", "EfficientNet", "B0_CIFAR_PLAN"]

#: (expansion, output channels, repeats, first stride) of the CIFAR B0.
B0_CIFAR_PLAN = ((1, 16, 1, 2), (6, 24, 2, 1), (6, 40, 2, 2), (6, 80, 3, 2), (6, 112, 3, 1), (6, 192, 4, 2), (6, 320, 1, 2))


class MBConvSE(nn.Module):
    """Inverted residual with a squeeze-excitation gate (reduction 16) on the projected output."""

    def __init__(self, f: LayerFactory, in_channels: int, out_channels: int, expansion: int, stride: int):
        super().__init__()
        hidden = expansion * in_channels
        self.stride = stride
        self.expand = nn.Sequential(f.conv(in_channels, hidden, 1), f.norm(hidden), nn.ReLU(inplace=True))
        self.depthwise = nn.Sequential(
            f.conv(hidden, hidden, 3, stride=stride, padding=1, groups=hidden), f.norm(hidden), nn.ReLU(inplace=True)
        )
        self.project = nn.Sequential(f.conv(hidden, out_channels, 1), f.norm(out_channels))
        self.gate = SqueezeExcitation(f, out_channels, out_channels // 16)
        if stride == 1 and in_channels != out_channels:
            self.shortcut = nn.Sequential(f.conv(in_channels, out_channels, 1), f.norm(out_channels))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.gate(self.project(self.depthwise(self.expand(x))))
        return out + self.shortcut(x) if self.stride == 1 else out


class EfficientNet(nn.Module):
    """CIFAR EfficientNet: 3x3 stem (32 ch), MBConv-SE stages, pool, classifier on 320 features."""

    def __init__(self, f: LayerFactory, plan=B0_CIFAR_PLAN, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(f.conv(3, 32, 3, padding=1, first_layer=True), f.norm(32), nn.ReLU(inplace=True))
        blocks: list[nn.Module] = []
        channels = 32
        for expansion, out_channels, count, stride in plan:
            for i in range(count):
                blocks.append(MBConvSE(f, channels, out_channels, expansion, stride if i == 0 else 1))
                channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = f.linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


@register("efficientnetb0", table=1, paper_name="EfficientNet", first_layer=FIRST_LAYER_DECONV_10)
def efficientnetb0(f: LayerFactory, num_classes: int) -> nn.Module:
    return EfficientNet(f, num_classes=num_classes)
