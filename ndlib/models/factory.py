"""The one place where a model's normalization choice turns into layers (timm-style factory).

Every block in ``ndlib.models`` asks a :class:`LayerFactory` for its layers instead of
branching on the normalization itself, so no block carries a duplicated BN branch and ND
branch.  A block calls

* ``f.conv(in_channels, out_channels, kernel_size, stride, padding, groups)``,
* ``f.norm(channels)`` right after a conv that the standard model normalizes, and
* ``f.linear(in_features, out_features)`` for a classifier layer,

and the factory answers according to ``kind``:

========  =====================================  ==================  ============================
kind      conv                                   norm                linear
========  =====================================  ==================  ============================
``bn``    ``nn.Conv2d(bias=False)``              ``nn.BatchNorm2d``  ``nn.Linear``
``nd``    ``FastDeconv(bias=True, **options)``   ``nn.Identity``     ``Delinear(block=block_fc)``
``none``  ``nn.Conv2d(bias=True)``               ``nn.Identity``     ``nn.Linear``
========  =====================================  ==================  ============================

Why the biases differ: a conv followed by BN needs no bias (BN's shift replaces it), while a
deconvolution layer folds the whitening's mean into its bias, ``b' = b - W' mu``, and the
paper's ND runs keep the learnable bias on ("bias on" in the Table 1 settings); the plain
model ("none", VGG-11 on ImageNet) is the original VGG with biased convs.  A conv that is
*not* followed by a normalization in the standard model (the squeeze-excitation gates) asks
for ``bias=True`` explicitly and gets it in every kind.

The ND first layer
------------------
The conv that sees the RGB input is special in the paper's public code for most
architectures: more Newton-Schulz iterations (whitening raw pixels needs a closer inverse
square root, the pixel covariance is badly conditioned) and *frozen* statistics after
``freeze_iter`` training iterations (see :class:`ndlib.layers.FastDeconv`).  Blocks mark
that conv with ``f.conv(..., first_layer=True)``; whether and how it is special is a
property of the *architecture*, recorded in the model registry (``first_layer=`` of
:func:`ndlib.models.registry.register`) with the two constants below.  Reading the public
code (github.com/yechengxi/deconvolution, ``models/*.py``) gives:

* ``n_iter=15`` and ``freeze=True`` (:data:`FIRST_LAYER_DECONV`): CIFAR VGG, SENet-18 and
  all three ImageNet models (VGG-11, ResNet-18, DenseNet-121);
* ``n_iter=10`` and ``freeze=True`` (:data:`FIRST_LAYER_DECONV_10`): PreAct-ResNet-18,
  ResNeXt-29, MobileNetV2, DPN-92, PNASNet-A, EfficientNet-B0;
* nothing special: the CIFAR ResNet-18 and DenseNet-121.

``freeze_iter`` is never set there, so the layer default (100) applies; we write it out.
As in the public code (where these are explicit keyword arguments that override the shared
``partial``), the first-layer settings win over user-supplied ``deconv_options`` of the
same name.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from torch import nn

from ndlib.layers import Delinear, FastDeconv

__all__ = [
    "NORMS",
    "DECONV_OPTIONS",
    "LINEAR_OPTIONS",
    "FIRST_LAYER_DECONV",
    "FIRST_LAYER_DECONV_10",
    "LayerFactory",
    "make_factory",
    "keyword_options",
]

#: The normalization kinds a model can be built with.
NORMS = ("bn", "nd", "none")

#: Construction details that are not deconvolution settings (never passed through ``create``).
_NOT_OPTIONS = frozenset({"padding_mode", "device", "dtype"})


def keyword_options(layer: type) -> tuple[str, ...]:
    """The keyword-only options of a layer's constructor, read from its signature so that an
    option added to :mod:`ndlib.layers` passes through ``create`` without a change here."""
    parameters = inspect.signature(layer.__init__).parameters.values()
    return tuple(p.name for p in parameters if p.kind is p.KEYWORD_ONLY and p.name not in _NOT_OPTIONS)


#: Keyword options of :class:`ndlib.layers.FastDeconv` that ``create(..., **options)`` passes on
#: (``block``, ``eps``, ``n_iter``, ``momentum``, ``sampling_stride``, ``freeze``, ...).
DECONV_OPTIONS: tuple[str, ...] = keyword_options(FastDeconv)

#: The options the classifier's :class:`ndlib.layers.Delinear` shares with the convs (its
#: ``block`` is ``block_fc``, set separately).
LINEAR_OPTIONS: tuple[str, ...] = tuple(o for o in keyword_options(Delinear) if o in DECONV_OPTIONS and o != "block")

#: ND first layer, 15 Newton-Schulz iterations and frozen statistics after 100 iterations
#: (public code: CIFAR VGG and SENet-18, ImageNet VGG-11 / ResNet-18 / DenseNet-121).
FIRST_LAYER_DECONV: Mapping[str, Any] = MappingProxyType({"n_iter": 15, "freeze": True, "freeze_iter": 100})

#: ND first layer with 10 iterations (public code: PreAct-ResNet-18, ResNeXt-29, MobileNetV2,
#: DPN-92, PNASNet-A, EfficientNet-B0).
FIRST_LAYER_DECONV_10: Mapping[str, Any] = MappingProxyType({"n_iter": 10, "freeze": True, "freeze_iter": 100})


@dataclass(frozen=True)
class LayerFactory:
    """Builds the conv / norm / linear layers of one model for one normalization ``kind``.

    Args:
        kind: ``"bn"``, ``"nd"`` or ``"none"``.
        deconv_options: keyword options for every :class:`FastDeconv` (``nd`` only).
        block_fc: block size of the :class:`Delinear` classifier (``nd`` only).
        first_layer_options: extra FastDeconv options for the conv on the RGB input, or
            ``None`` when the architecture's first layer is an ordinary deconvolution.
    """

    kind: str
    deconv_options: Mapping[str, Any] = field(default_factory=dict)
    block_fc: int = 512
    first_layer_options: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.kind not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.kind!r}")
        unknown = sorted(set(self.deconv_options) - set(DECONV_OPTIONS))
        if unknown:
            raise TypeError(f"unknown deconvolution option(s) {unknown}; valid: {DECONV_OPTIONS} and block_fc")
        if self.kind != "nd" and self.deconv_options:
            raise ValueError(
                f"deconvolution options {sorted(self.deconv_options)} were given with norm={self.kind!r}; "
                "they configure FastDeconv/Delinear layers, which only norm='nd' builds. "
                "Drop the options or use norm='nd'."
            )
        # freeze the mapping so a factory cannot be changed after the model was built
        object.__setattr__(self, "deconv_options", MappingProxyType(dict(self.deconv_options)))

    @property
    def uses_deconv(self) -> bool:
        return self.kind == "nd"

    def conv(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        *,
        bias: bool | None = None,
        first_layer: bool = False,
        deconv_overrides: Mapping[str, Any] | None = None,
    ) -> nn.Module:
        """A conv layer for this kind (see the module table).

        ``bias=None`` takes the kind's default (no bias before BN, a bias otherwise);
        ``bias=True`` forces one (convs with no norm after them).  ``first_layer=True``
        marks the conv on the RGB input; ``deconv_overrides`` are per-layer FastDeconv
        settings of the public code (ignored unless ``kind == "nd"``).
        """
        if self.kind == "nd":
            options = dict(self.deconv_options)
            if deconv_overrides:
                options.update(deconv_overrides)
            if first_layer and self.first_layer_options:
                options.update(self.first_layer_options)
            return FastDeconv(
                in_channels, out_channels, kernel_size, stride=stride, padding=padding, groups=groups,
                bias=True if bias is None else bias, **options,
            )
        if bias is None:
            bias = self.kind == "none"
        return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, groups=groups,
                         bias=bias)

    def norm(self, channels: int) -> nn.Module:
        """``BatchNorm2d(channels)`` for ``bn``; an identity for ``nd`` and ``none``."""
        if self.kind == "bn":
            return nn.BatchNorm2d(channels)
        return nn.Identity()

    def linear(self, in_features: int, out_features: int) -> nn.Module:
        """A classifier layer: :class:`Delinear` (block ``block_fc``) for ``nd``, else ``nn.Linear``."""
        if self.kind == "nd":
            shared = {k: v for k, v in self.deconv_options.items() if k in LINEAR_OPTIONS}
            return Delinear(in_features, out_features, block=self.block_fc, **shared)
        return nn.Linear(in_features, out_features)


def make_factory(
    norm: str,
    deconv_options: Mapping[str, Any],
    *,
    default_block_fc: int,
    first_layer_options: Mapping[str, Any] | None,
) -> LayerFactory:
    """Split ``block_fc`` off the user's options and build the :class:`LayerFactory`."""
    options = dict(deconv_options)
    block_fc = options.pop("block_fc", None)
    if block_fc is not None and norm != "nd":
        raise ValueError(
            f"block_fc={block_fc!r} was given with norm={norm!r}; it sets the Delinear classifier's block, "
            "which only norm='nd' builds. Drop it or use norm='nd'."
        )
    if block_fc is None:
        block_fc = default_block_fc
    if isinstance(block_fc, bool) or not isinstance(block_fc, int) or block_fc <= 0:
        raise ValueError(f"block_fc must be a positive int, got {block_fc!r}")
    return LayerFactory(norm, options, block_fc, first_layer_options)
