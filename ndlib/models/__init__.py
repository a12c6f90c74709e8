"""The paper's architectures (Tables 1 and 2) in BN, ND and (VGG-11 ImageNet) plain variants.

    >>> from ndlib import models
    >>> net = models.create("vgg16", num_classes=10, norm="nd", block=64)
    >>> models.available(table=2)
    ['vgg11_imagenet', 'resnet18_imagenet', 'densenet121_imagenet']

Every family module registers its builders on import (below); the layers come from one
:class:`~ndlib.models.factory.LayerFactory`.
"""
from ndlib.models import resnet, vgg  # noqa: F401  (registration side effects)
from ndlib.models.factory import FIRST_LAYER_DECONV, FIRST_LAYER_DECONV_10, NORMS, LayerFactory
from ndlib.models.registry import available, create, get_spec

__all__ = [
    "create",
    "available",
    "get_spec",
    "NORMS",
    "FIRST_LAYER_DECONV",
    "FIRST_LAYER_DECONV_10",
    "LayerFactory",
]
