"""Building blocks shared by several families, each built from a :class:`~ndlib.models.factory.LayerFactory`.

* :func:`conv_norm` and :func:`conv_norm_relu`: ``conv -> norm (-> ReLU)`` as one
  ``nn.Sequential`` (indices 0, 1, 2), the stems, shortcuts and 1x1 projections of most families;
* :func:`projection`: the ResNet / ResNeXt shortcut (identity, or a strided 1x1 conv + norm);
* :class:`SqueezeExcitation`: the channel gate of SENet-18 and EfficientNet-B0;
* :class:`InvertedResidual`: the MobileNetV2 block (expand 1x1 -> depthwise 3x3 -> linear
  project 1x1), with an optional squeeze-excitation gate on its output (EfficientNet-B0's
  ``MBConvSE``) and optional per-layer deconvolution settings (MobileNetV2's ND model).

Each block builds its layers in the order it registers them, so the parameter names, the
initial weights for a seed and the random stream after construction are those of the family
code these blocks replaced.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ndlib.models.factory import LayerFactory

__all__ = ["conv_norm", "conv_norm_relu", "projection", "SqueezeExcitation", "InvertedResidual"]


def conv_norm(f: LayerFactory, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
              **conv_options: Any) -> nn.Sequential:
    """``nn.Sequential(conv, norm)``; ``conv_options`` go to ``f.conv`` (``padding``, ``groups``,
    ``first_layer``, ``deconv_overrides``)."""
    return nn.Sequential(f.conv(in_channels, out_channels, kernel_size, stride=stride, **conv_options),
                         f.norm(out_channels))


def conv_norm_relu(f: LayerFactory, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                   **conv_options: Any) -> nn.Sequential:
    """``nn.Sequential(conv, norm, ReLU(inplace=True))``; ``conv_options`` as in :func:`conv_norm`."""
    return nn.Sequential(f.conv(in_channels, out_channels, kernel_size, stride=stride, **conv_options),
                         f.norm(out_channels), nn.ReLU(inplace=True))


def projection(f: LayerFactory, in_channels: int, out_channels: int, stride: int) -> nn.Module:
    """The residual shortcut of ResNet and ResNeXt: identity if the shape is kept, else a strided
    1x1 conv followed by a norm."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return conv_norm(f, in_channels, out_channels, 1, stride=stride)


class SqueezeExcitation(nn.Module):
    """Channel gate ``x * sigmoid(conv1x1(relu(conv1x1(avgpool(x)))))``; biased 1x1 convs."""

    def __init__(self, f: LayerFactory, channels: int, squeeze_channels: int):
        super().__init__()
        self.reduce = f.conv(channels, squeeze_channels, 1, bias=True)
        self.expand = f.conv(squeeze_channels, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        s = torch.sigmoid(self.expand(F.relu(self.reduce(s))))
        return x * s


class InvertedResidual(nn.Module):
    """expand (1x1) -> depthwise (3x3) -> project (1x1, linear) [-> squeeze-excitation], plus a shortcut at stride 1.

    The CIFAR form of the paper's public code: the expansion conv is kept even at expansion 1; a
    stride-1 block that changes the width has a 1x1 conv (+ norm) shortcut, a stride-2 block has
    none.  With ``h`` the projected output:

    * no gate (``se_reduction=None``, MobileNetV2): ``y = h + shortcut(x)`` at stride 1, ``y = h``
      at stride 2;
    * a gate ``s`` (``se_reduction=r``: a :class:`SqueezeExcitation` of ``out_channels // r``
      channels on ``h``, EfficientNet-B0): ``y = h * s + shortcut(x)`` at stride 1, and at
      stride 2 ``y = h * s + h`` when ``stride2_adds_ungated`` (the public code's wiring), else
      ``y = h * s``.

    ``depthwise_overrides`` and ``project_overrides`` are per-layer FastDeconv settings of the
    depthwise and projection convs (``f.conv(..., deconv_overrides=...)``; used by ``nd`` only).
    """

    def __init__(
        self,
        f: LayerFactory,
        in_channels: int,
        out_channels: int,
        expansion: int,
        stride: int,
        *,
        se_reduction: int | None = None,
        stride2_adds_ungated: bool = False,
        depthwise_overrides: Mapping[str, Any] | None = None,
        project_overrides: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        hidden = expansion * in_channels
        self.stride = stride
        self.stride2_adds_ungated = stride2_adds_ungated
        self.expand = conv_norm_relu(f, in_channels, hidden, 1)
        self.depthwise = conv_norm_relu(f, hidden, hidden, 3, stride=stride, padding=1, groups=hidden,
                                        deconv_overrides=depthwise_overrides)
        self.project = conv_norm(f, hidden, out_channels, 1, deconv_overrides=project_overrides)
        # Built between the projection and the shortcut: the order of the family code it replaced
        # (same initial weights for a seed).  None, not an Identity, so the module names stay the same.
        self.gate = SqueezeExcitation(f, out_channels, out_channels // se_reduction) if se_reduction else None
        if stride == 1 and in_channels != out_channels:
            self.shortcut = conv_norm(f, in_channels, out_channels, 1)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        gated = out if self.gate is None else self.gate(out)
        if self.stride == 1:
            return gated + self.shortcut(x)
        return gated + out if (self.gate is not None and self.stride2_adds_ungated) else gated
