"""PNASNet-A (Liu et al., 2018, Progressive Neural Architecture Search), small CIFAR form (Table 1).

The "A" cell is the simplest searched cell: ``relu(sep7x7(x) + maxpool3x3(x))``, where
the separable conv is a 7x7 grouped conv with one group per input channel (a depthwise
conv, or a channel-multiplier-2 one when a reduction cell doubles the width) followed by a
norm.  In a reduction cell both branches use stride 2 and the pooled branch gets a
1x1 conv + norm to the new width.  The network: a 3x3 stem to 44 channels, 6 cells at 44
channels, a reduction to 88, 6 cells, a reduction to 176, 6 cells, global average pool and
a classifier on 176 features (0.13M parameters, the smallest model of Table 1).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ndlib.models.blocks import conv_norm, conv_norm_relu
from ndlib.models.factory import FIRST_LAYER_DECONV_10, LayerFactory
from ndlib.models.registry import register

__all__ = ["SeparableConv", "CellA", "PNASNet"]


class SeparableConv(nn.Module):
    """``norm(conv_kxk(x, groups=in_channels))``."""

    def __init__(self, f: LayerFactory, in_channels: int, out_channels: int, kernel_size: int, stride: int):
        super().__init__()
        self.conv = f.conv(
            in_channels, out_channels, kernel_size, stride=stride, padding=(kernel_size - 1) // 2, groups=in_channels
        )
        self.norm = f.norm(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


class CellA(nn.Module):
    """``relu(sep7x7(x) + pool(x))``; a stride-2 cell projects the pooled branch with 1x1 conv + norm."""

    def __init__(self, f: LayerFactory, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.stride = stride
        self.separable = SeparableConv(f, in_channels, out_channels, 7, stride)
        if stride == 2:
            self.pool_projection = conv_norm(f, in_channels, out_channels, 1)
        else:
            self.pool_projection = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.max_pool2d(x, kernel_size=3, stride=self.stride, padding=1)
        return F.relu(self.separable(x) + self.pool_projection(pooled))


class PNASNet(nn.Module):
    """Stem, then [cells x 6, reduction] x 2, cells x 6, pool, classifier."""

    def __init__(self, f: LayerFactory, width: int = 44, cells_per_stage: int = 6, num_classes: int = 10):
        super().__init__()
        self.stem = conv_norm_relu(f, 3, width, 3, padding=1, first_layer=True)
        cells: list[nn.Module] = []
        channels = width
        for stage in range(3):
            if stage > 0:
                cells.append(CellA(f, channels, 2 * channels, stride=2))
                channels *= 2
            cells += [CellA(f, channels, channels) for _ in range(cells_per_stage)]
        self.cells = nn.Sequential(*cells)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = f.linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.cells(self.stem(x))), 1))


@register("pnasneta", table=1, paper_name="PNASNetA", first_layer=FIRST_LAYER_DECONV_10)
def pnasneta(f: LayerFactory, num_classes: int) -> nn.Module:
    return PNASNet(f, num_classes=num_classes)
