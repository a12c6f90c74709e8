"""Weight initialization shared by the ImageNet models (Table 2)."""
from __future__ import annotations

from torch import nn

__all__ = ["imagenet_init"]


def imagenet_init(model: nn.Module, linear_std: float | None = None) -> None:
    """torchvision's ImageNet scheme: He (fan-out) convs with zero bias, BN weight 1 and bias 0,
    and, when ``linear_std`` is given (VGG), ``N(0, linear_std^2)`` linears with zero bias.

    ``FastDeconv`` is a ``Conv2d`` and ``Delinear`` a ``Linear``, so ND models get the same scheme.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear_std is not None:
            nn.init.normal_(m.weight, 0.0, linear_std)
            nn.init.zeros_(m.bias)
