"""VGG (Simonyan & Zisserman, 2015): VGG-16 for CIFAR (Table 1), VGG-11 for ImageNet (Table 2).

A VGG is a stack of 3x3 convs (padding 1) with a 2x2 max-pool after each stage; the
layer plan is a list of widths with ``"M"`` for the pools.

* CIFAR VGG-16 (plan "D"): five pools take 32x32 to 1x1, so the classifier is a single
  linear layer on the 512 features (the common CIFAR form, as in the paper's code).  The
  public code's BN VGG-16 keeps a bias in every conv in front of BN (4,224 parameters more
  than ours, which has none: BN's shift makes it redundant); the ND models agree.
* ImageNet VGG-11 (plan "A"): adaptive average pooling to 7x7 and the original
  classifier 25088 -> 4096 -> 4096 -> classes with ReLU and dropout.  With ``norm="nd"``
  all three classifier layers are :class:`~ndlib.layers.Delinear` (as in the public code).
  The three Table 2 variants are ``norm="none"`` (biased convs, no normalization), ``"bn"``
  and ``"nd"``.  Our BN variant drops the conv bias in front of BN (torchvision's keeps
  it; it is redundant with BN's shift), so it has 2,752 parameters (one per conv channel)
  fewer than ``torchvision.models.vgg11_bn``; the ``none`` variant has exactly
  ``torchvision.models.vgg11``'s shapes.
"""
from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import nn

from ndlib.models.factory import FIRST_LAYER_DECONV, LayerFactory
from ndlib.models.init import imagenet_init
from ndlib.models.registry import register

__all__ = ["VGG_PLANS", "vgg_features", "CifarVGG", "ImageNetVGG"]

Plan = Sequence[Union[int, str]]

#: Layer plans of the VGG paper: conv widths, "M" = 2x2 max-pool.
VGG_PLANS: dict[str, tuple] = {
    "A": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),  # VGG-11
    "D": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),  # VGG-16
}


def vgg_features(f: LayerFactory, plan: Plan, in_channels: int = 3) -> nn.Sequential:
    """conv3x3 -> norm -> ReLU for each width, MaxPool2d(2) for each "M"."""
    layers: list[nn.Module] = []
    channels = in_channels
    for item in plan:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        layers += [
            f.conv(channels, item, 3, padding=1, first_layer=not layers),
            f.norm(item),
            nn.ReLU(inplace=True),
        ]
        channels = item
    return nn.Sequential(*layers)


class CifarVGG(nn.Module):
    """VGG for 32x32 inputs: features down to 1x1x512, then one classifier layer."""

    def __init__(self, f: LayerFactory, plan: Plan, num_classes: int):
        super().__init__()
        self.features = vgg_features(f, plan)
        self.classifier = f.linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class ImageNetVGG(nn.Module):
    """VGG for 224x224 inputs with the original three-layer classifier (dropout 0.5)."""

    def __init__(self, f: LayerFactory, plan: Plan, num_classes: int, dropout: float = 0.5):
        super().__init__()
        self.features = vgg_features(f, plan)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            f.linear(512 * 7 * 7, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            f.linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            f.linear(4096, num_classes),
        )
        imagenet_init(self, linear_std=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


@register("vgg16", table=1, paper_name="VGG-16", first_layer=FIRST_LAYER_DECONV)
def vgg16(f: LayerFactory, num_classes: int) -> nn.Module:
    return CifarVGG(f, VGG_PLANS["D"], num_classes)


@register(
    "vgg11_imagenet", table=2, paper_name="VGG-11", first_layer=FIRST_LAYER_DECONV,
    norms=("none", "bn", "nd"), test_input_size=64,
)
def vgg11_imagenet(f: LayerFactory, num_classes: int) -> nn.Module:
    return ImageNetVGG(f, VGG_PLANS["A"], num_classes)
