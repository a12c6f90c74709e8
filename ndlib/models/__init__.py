"""The paper's architectures (Tables 1 and 2) in BN, ND and (VGG-11 ImageNet) plain variants.

    >>> from ndlib import models
    >>> net = models.create("vgg16", num_classes=10, norm="nd", block=64)
    >>> models.available(table=2)
    ['vgg11_imagenet', 'resnet18_imagenet', 'densenet121_imagenet']

Every family module registers its builders on import (below, in Table 1's order, then
Table 2's); the layers come from one :class:`~ndlib.models.factory.LayerFactory`.
"""
# Registration side effects; the import order is the order of ``available()``.
from ndlib.models import vgg  # noqa: F401  isort: skip
from ndlib.models import resnet  # noqa: F401  isort: skip
from ndlib.models import densenet  # noqa: F401  isort: skip
from ndlib.models import resnext  # noqa: F401  isort: skip
from ndlib.models import mobilenetv2  # noqa: F401  isort: skip
from ndlib.models import dpn  # noqa: F401  isort: skip
from ndlib.models import pnasnet  # noqa: F401  isort: skip
from ndlib.models import senet  # noqa: F401  isort: skip
from ndlib.models import efficientnet  # noqa: F401  isort: skip
from ndlib.models.factory import FIRST_LAYER_DECONV, FIRST_LAYER_DECONV_10, NORMS, LayerFactory
from ndlib.models.params import count_parameters, parameter_table
from ndlib.models.registry import available, create, get_spec

__all__ = [
    "create",
    "available",
    "get_spec",
    "count_parameters",
    "parameter_table",
    "NORMS",
    "FIRST_LAYER_DECONV",
    "FIRST_LAYER_DECONV_10",
    "LayerFactory",
]
