"""DenseNet-121 (Huang et al., 2017), DenseNet-BC form, for CIFAR (Table 1) and ImageNet (Table 2).

A dense layer appends ``growth_rate`` new channels to its input,
``x -> cat(x, conv3x3(relu(norm(conv1x1(relu(norm(x)))))))`` with a 1x1 bottleneck of
``4 * growth_rate`` channels; a transition halves the channels with
``conv1x1(relu(norm(x)))`` and the resolution with a 2x2 average pool.  DenseNet-121 has
dense blocks of 6, 12, 24 and 16 layers, growth rate 32 and 64 stem channels, and ends with
``norm -> relu -> global average pool -> classifier`` on 1024 channels.

* CIFAR form (``densenet121``): a 3x3 stem conv at stride 1 (no pooling), blocks at
  32/16/8/4 pixels.
* ImageNet form (``densenet121_imagenet``): 7x7 stride-2 stem conv, norm, ReLU and a 3x3
  stride-2 max-pool.

With ``norm="nd"`` all norms (the final one too) are identities and all convs
deconvolution layers; that drops 2 x (channels) BN parameters per norm and adds one bias
per conv output channel, which is why the ND CIFAR model is smaller (6.88M vs 6.96M).

Channel order of the concatenation (:data:`CIFAR_NEW_FEATURES_FIRST`): the public CIFAR
code puts a dense layer's new channels *in front of* its input, ``cat(new, x)``, while its
ImageNet code (like torchvision) appends them, ``cat(x, new)``.  For a BN model the order
is only a relabelling of channels, but a deconvolution layer whitens its input in channel
blocks (and the ``Delinear`` classifier in contiguous blocks of ``block_fc`` features), so
the order decides which channels are whitened together; each form follows its public code.
"""
from __future__ import annotations

import torch
from torch import nn

from ndlib.models.factory import FIRST_LAYER_DECONV, LayerFactory
from ndlib.models.registry import register

__all__ = ["CIFAR_NEW_FEATURES_FIRST", "DenseLayer", "Transition", "DenseNet"]

#: Public CIFAR DenseNet: a dense layer returns ``cat(new, x)`` (new channels first); the
#: public ImageNet DenseNet returns ``cat(x, new)``.  See the module docstring.
CIFAR_NEW_FEATURES_FIRST = True


class DenseLayer(nn.Module):
    """``cat(x, new)`` with ``new = conv3x3(relu(norm(conv1x1(relu(norm(x))))))``: adds
    ``growth_rate`` channels; ``new_features_first=True`` gives ``cat(new, x)``."""

    def __init__(
        self,
        f: LayerFactory,
        in_channels: int,
        growth_rate: int,
        bottleneck_factor: int = 4,
        new_features_first: bool = False,
    ):
        super().__init__()
        width = bottleneck_factor * growth_rate
        self.new_features_first = new_features_first
        self.norm1 = f.norm(in_channels)
        self.conv1 = f.conv(in_channels, width, 1)
        self.norm2 = f.norm(width)
        self.conv2 = f.conv(width, growth_rate, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.relu(self.norm1(x)))
        out = self.conv2(self.relu(self.norm2(out)))
        return torch.cat([out, x] if self.new_features_first else [x, out], dim=1)


class Transition(nn.Module):
    """``avg_pool2x2(conv1x1(relu(norm(x))))``: fewer channels, half the resolution."""

    def __init__(self, f: LayerFactory, in_channels: int, out_channels: int):
        super().__init__()
        self.norm = f.norm(in_channels)
        self.conv = f.conv(in_channels, out_channels, 1)
        self.relu = nn.ReLU()
        self.pool = nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv(self.relu(self.norm(x))))


class DenseNet(nn.Module):
    """DenseNet-BC with compression 0.5 (``imagenet_stem`` picks the 7x7 + max-pool stem;
    ``new_features_first`` the concatenation order of every dense layer, see :class:`DenseLayer`)."""

    def __init__(
        self,
        f: LayerFactory,
        layers_per_block=(6, 12, 24, 16),
        growth_rate: int = 32,
        num_classes: int = 10,
        imagenet_stem: bool = False,
        new_features_first: bool = False,
    ):
        super().__init__()
        channels = 2 * growth_rate
        if imagenet_stem:
            stem = [
                f.conv(3, channels, 7, stride=2, padding=3, first_layer=True),
                f.norm(channels),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            ]
        else:
            stem = [f.conv(3, channels, 3, padding=1, first_layer=True)]
        body: list[nn.Module] = []
        for index, count in enumerate(layers_per_block):
            for _ in range(count):
                body.append(DenseLayer(f, channels, growth_rate, new_features_first=new_features_first))
                channels += growth_rate
            if index < len(layers_per_block) - 1:
                body.append(Transition(f, channels, channels // 2))
                channels //= 2
        self.features = nn.Sequential(*stem, *body, f.norm(channels), nn.ReLU(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = f.linear(channels, num_classes)
        if imagenet_stem:
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight)
                elif isinstance(m, nn.Linear):
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


@register("densenet121", table=1, paper_name="DenseNet-121", first_layer=None)
def densenet121(f: LayerFactory, num_classes: int) -> nn.Module:
    return DenseNet(f, num_classes=num_classes, new_features_first=CIFAR_NEW_FEATURES_FIRST)


@register(
    "densenet121_imagenet", table=2, paper_name="DenseNet-121", first_layer=FIRST_LAYER_DECONV, test_input_size=64
)
def densenet121_imagenet(f: LayerFactory, num_classes: int) -> nn.Module:
    return DenseNet(f, num_classes=num_classes, imagenet_stem=True)
