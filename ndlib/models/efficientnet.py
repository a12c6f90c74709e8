"""EfficientNet-B0 (Tan & Le, 2019) in the simplified CIFAR form used for Table 1.

The building block is the MobileNetV2 inverted residual (expand 1x1 -> depthwise 3x3 ->
linear project 1x1) with a squeeze-excitation gate on its output,
``y = h * sigmoid(W2 relu(W1 avgpool(h))) (+ shortcut at stride 1)``: the shared
:class:`ndlib.models.blocks.InvertedResidual` with its gate on (:class:`MBConvSE`).

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
  channels, classified directly (no 1x1 conv to 1280, no dropout);
* a stride-2 block adds its *un-gated* output back, ``y = h * s + h``
  (:data:`STRIDE2_ADDS_UNGATED`; at stride 1 it is ``y = h * s + shortcut(x)``).  This is the
  public code's wiring, so both variants of the paper's cell have it.

Two ND networks, registered under two names:

``efficientnetb0`` with ``norm="nd"`` -- **the paper's network.**  The public code builds
its ND EfficientNet's blocks with ``deconv=None``, so only the stem is a deconvolution
(10 Newton-Schulz iterations, frozen statistics) and the classifier a ``Delinear``; every
block keeps its bias-free convs and BatchNorm.  2,912,057 parameters: the paper's "Net Size"
of 2.91M.  This is the Table 1 cell.

``efficientnetb0_allnd`` with ``norm="nd"`` -- **ours, an extra variant** (not a Table 1
cell): every conv of every block is a deconvolution layer too, including the depthwise convs
and the squeeze-excitation gate, and no BatchNorm is left (2,892,193 parameters).  It asks
whether whitening inside depthwise/SE blocks helps or hurts.  Its ``norm="bn"`` model is the
same network as ``efficientnetb0``'s.
"""
from __future__ import annotations

import torch
from torch import nn

from ndlib.models.blocks import InvertedResidual, conv_norm_relu
from ndlib.models.factory import FIRST_LAYER_DECONV_10, LayerFactory
from ndlib.models.registry import register

__all__ = ["MBConvSE", "EfficientNet", "B0_CIFAR_PLAN", "STRIDE2_ADDS_UNGATED", "paper_block_factory"]

#: Public-code quirk: a stride-2 block returns ``h * s + h`` (its gated output plus the
#: un-gated one) instead of just ``h * s``.
STRIDE2_ADDS_UNGATED = True

#: (expansion, output channels, repeats, first stride) of the CIFAR B0.
B0_CIFAR_PLAN = ((1, 16, 1, 2), (6, 24, 2, 1), (6, 40, 2, 2), (6, 80, 3, 2), (6, 112, 3, 1), (6, 192, 4, 2),
                 (6, 320, 1, 2))


class MBConvSE(InvertedResidual):
    """EfficientNet-B0's block: the shared :class:`~ndlib.models.blocks.InvertedResidual` with a
    squeeze-excitation gate (reduction 16) on the projected output and the public code's stride-2
    wiring (:data:`STRIDE2_ADDS_UNGATED`); no per-layer deconvolution settings."""

    def __init__(self, f: LayerFactory, in_channels: int, out_channels: int, expansion: int, stride: int):
        super().__init__(f, in_channels, out_channels, expansion, stride, se_reduction=16,
                         stride2_adds_ungated=STRIDE2_ADDS_UNGATED)


def paper_block_factory(f: LayerFactory) -> LayerFactory:
    """The factory the paper's EfficientNet builds its blocks with: BN even in the ND model
    (the public code passes ``deconv=None`` to the blocks)."""
    return LayerFactory("bn") if f.kind == "nd" else f


class EfficientNet(nn.Module):
    """CIFAR EfficientNet: 3x3 stem (32 ch), MBConv-SE stages, pool, classifier on 320 features.

    ``block_factory`` builds the blocks (default: ``f``, the stem's and classifier's).
    """

    def __init__(self, f: LayerFactory, plan=B0_CIFAR_PLAN, num_classes: int = 10,
                 block_factory: LayerFactory | None = None):
        super().__init__()
        block_factory = block_factory or f
        self.stem = conv_norm_relu(f, 3, 32, 3, padding=1, first_layer=True)
        blocks: list[nn.Module] = []
        channels = 32
        for expansion, out_channels, count, stride in plan:
            for i in range(count):
                blocks.append(MBConvSE(block_factory, channels, out_channels, expansion, stride if i == 0 else 1))
                channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = f.linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


@register("efficientnetb0", table=1, paper_name="EfficientNet", first_layer=FIRST_LAYER_DECONV_10)
def efficientnetb0(f: LayerFactory, num_classes: int) -> nn.Module:
    """The paper's network: in the ND model only the stem and the classifier deconvolve."""
    return EfficientNet(f, num_classes=num_classes, block_factory=paper_block_factory(f))


@register("efficientnetb0_allnd", table=1, paper_name="EfficientNet, ND in every block (ours, extra)",
          first_layer=FIRST_LAYER_DECONV_10, extra=True)
def efficientnetb0_allnd(f: LayerFactory, num_classes: int) -> nn.Module:
    """Our extra variant: in the ND model every conv of every block deconvolves too."""
    return EfficientNet(f, num_classes=num_classes)
