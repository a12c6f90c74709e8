"""DPN-92 (Chen et al., 2017, Dual Path Networks), CIFAR form (Table 1).

A dual-path block is a grouped-conv bottleneck (1x1 -> grouped 3x3 with 32 groups -> 1x1)
whose ``out + dense`` output channels are split in two paths: the first ``out`` channels
are *added* to the residual path (ResNet-like feature re-use) and the last ``dense``
channels are *concatenated* to the densely connected path (DenseNet-like new features):

    y = relu(cat(r[:, :out] + h[:, :out], r[:, out:], h[:, out:]))

with ``r`` the block input (through a 1x1 projection + norm in a stage's first block) and
``h`` the bottleneck output.  DPN-92 has stages of 3, 4, 20 and 3 blocks with bottleneck
widths 96/192/384/768, residual widths 256/512/1024/2048 and dense increments 16/32/24/128;
the CIFAR form uses a 3x3 stride-1 stem with 64 channels and no max-pool, and classifies
the ``2048 + 4 * 128 = 2560`` pooled channels.
"""
from __future__ import annotations

import torch
from torch import nn

from ndlib.models.blocks import conv_norm, conv_norm_relu
from ndlib.models.factory import FIRST_LAYER_DECONV_10, LayerFactory
from ndlib.models.registry import register

__all__ = ["DualPathBlock", "DPN", "DPN92_PLAN"]

#: per stage: (bottleneck width, residual width, blocks, dense increment)
DPN92_PLAN = ((96, 256, 3, 16), (192, 512, 4, 32), (384, 1024, 20, 24), (768, 2048, 3, 128))

GROUPS = 32


class DualPathBlock(nn.Module):
    """Bottleneck with a residual path (``out_channels``) and a dense path (``+ dense_depth``)."""

    def __init__(
        self, f: LayerFactory, in_channels: int, width: int, out_channels: int, dense_depth: int, stride: int,
        project: bool,
    ):
        super().__init__()
        self.out_channels = out_channels
        total = out_channels + dense_depth
        self.conv1 = f.conv(in_channels, width, 1)
        self.norm1 = f.norm(width)
        self.conv2 = f.conv(width, width, 3, stride=stride, padding=1, groups=GROUPS)
        self.norm2 = f.norm(width)
        self.conv3 = f.conv(width, total, 1)
        self.norm3 = f.norm(total)
        if project:
            self.shortcut = conv_norm(f, in_channels, total, 1, stride=stride)
        else:
            self.shortcut = nn.Identity()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.norm1(self.conv1(x)))
        h = self.relu(self.norm2(self.conv2(h)))
        h = self.norm3(self.conv3(h))
        r = self.shortcut(x)
        d = self.out_channels
        return self.relu(torch.cat([r[:, :d] + h[:, :d], r[:, d:], h[:, d:]], dim=1))


class DPN(nn.Module):
    """CIFAR DPN: 3x3 stem, four dual-path stages (strides 1, 2, 2, 2), pool, classifier."""

    def __init__(self, f: LayerFactory, plan=DPN92_PLAN, num_classes: int = 10):
        super().__init__()
        self.stem = conv_norm_relu(f, 3, 64, 3, padding=1, first_layer=True)
        blocks: list[nn.Module] = []
        channels = 64
        for index, (width, out_channels, count, dense_depth) in enumerate(plan):
            for i in range(count):
                stride = 2 if (index > 0 and i == 0) else 1
                blocks.append(DualPathBlock(f, channels, width, out_channels, dense_depth, stride, project=(i == 0)))
                # the projection starts the dense path with one increment; each block adds one more
                channels = out_channels + (i + 2) * dense_depth
        self.stages = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = f.linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.stages(self.stem(x))), 1))


@register("dpn92", table=1, paper_name="DPN-92", first_layer=FIRST_LAYER_DECONV_10)
def dpn92(f: LayerFactory, num_classes: int) -> nn.Module:
    return DPN(f, num_classes=num_classes)
