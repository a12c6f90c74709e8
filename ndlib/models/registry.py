"""A small name -> builder registry for the paper's architectures.

Each family module decorates its builders with :func:`register`; a builder takes a
:class:`~ndlib.models.factory.LayerFactory` and ``num_classes`` and returns the model.
:func:`create` validates the request (name, norm, options) with errors that list the valid
choices, builds the factory and calls the builder.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from torch import nn

from ndlib.models.factory import NORMS, LayerFactory, make_factory

__all__ = ["ModelSpec", "register", "create", "available", "get_spec"]

Builder = Callable[[LayerFactory, int], nn.Module]

#: Default block of the ND classifier (spec: 512 in the Table 1 runs, 64 on ImageNet).
BLOCK_FC_BY_TABLE = {1: 512, 2: 64}


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about one architecture.

    ``input_size`` is the image side the model is meant for (32 for CIFAR, 224 for
    ImageNet); ``test_input_size`` the smallest side our tests feed it (the ImageNet models
    pool adaptively, so 64 works); ``first_layer`` the ND first-layer settings (``None``: an
    ordinary deconvolution layer; see :mod:`ndlib.models.factory`).  ``extra`` marks a
    variant of ours that is not a cell of the paper's tables (e.g. ``efficientnetb0_allnd``):
    it can be built and trained by name, but :func:`available` lists it only on request.
    """

    name: str
    builder: Builder
    table: int
    paper_name: str
    input_size: int
    test_input_size: int
    norms: tuple[str, ...]
    first_layer: Mapping[str, Any] | None
    extra: bool = False

    @property
    def default_block_fc(self) -> int:
        return BLOCK_FC_BY_TABLE[self.table]


_REGISTRY: dict[str, ModelSpec] = {}


def register(
    name: str,
    *,
    table: int,
    paper_name: str,
    first_layer: Mapping[str, Any] | None,
    norms: tuple[str, ...] = ("bn", "nd"),
    input_size: int | None = None,
    test_input_size: int | None = None,
    extra: bool = False,
) -> Callable[[Builder], Builder]:
    """Decorator: register ``builder(factory, num_classes)`` under ``name``."""
    if table not in BLOCK_FC_BY_TABLE:
        raise ValueError(f"table must be one of {sorted(BLOCK_FC_BY_TABLE)}, got {table!r}")
    bad_norms = [n for n in norms if n not in NORMS]
    if bad_norms:
        raise ValueError(f"unknown norms {bad_norms} for {name!r}; valid: {NORMS}")
    default_size = 32 if table == 1 else 224

    def decorator(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelSpec(
            name=name,
            builder=builder,
            table=table,
            paper_name=paper_name,
            input_size=input_size or default_size,
            test_input_size=test_input_size or input_size or default_size,
            norms=tuple(norms),
            first_layer=first_layer,
            extra=extra,
        )
        return builder

    return decorator


def available(table: int | None = None, *, extras: bool = False) -> list[str]:
    """Registered model names (all, or those of paper Table ``1`` or ``2``): Table 1 first, each in
    registration order.  The paper's architectures only, unless ``extras=True`` adds our extra
    variants (``ModelSpec.extra``)."""
    if table is not None and table not in BLOCK_FC_BY_TABLE:
        raise ValueError(f"table must be None or one of {sorted(BLOCK_FC_BY_TABLE)}, got {table!r}")
    names = [name for name, spec in _REGISTRY.items()
             if (table is None or spec.table == table) and (extras or not spec.extra)]
    return sorted(names, key=lambda name: _REGISTRY[name].table)  # stable: Table 1, then Table 2


def get_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of ``name``; unknown names raise ``ValueError`` listing the valid ones."""
    if not isinstance(name, str):
        raise TypeError(f"model name must be a str, got {type(name).__name__}")
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(available(extras=True))}") from None


def create(name: str, num_classes: int = 10, norm: str = "bn", **deconv_options: Any) -> nn.Module:
    """Build model ``name`` with ``num_classes`` outputs and normalization ``norm``.

    Args:
        name: one of :func:`available`.
        num_classes: size of the classifier output.
        norm: ``"bn"`` (batch normalization), ``"nd"`` (network deconvolution: every conv a
            :class:`~ndlib.layers.FastDeconv`, the classifier a :class:`~ndlib.layers.Delinear`,
            no BatchNorm) or ``"none"`` (where the paper has it: ``vgg11_imagenet``).
        **deconv_options: ``nd`` only. The keyword options of :class:`~ndlib.layers.FastDeconv`
            (``block``, ``eps``, ``n_iter``, ``momentum``, ``sampling_stride``, ``freeze``,
            ``freeze_iter``, ``grouping``, ...; see ``factory.DECONV_OPTIONS``) for every
            deconvolution layer, and ``block_fc`` for the classifier (default 512 for Table 1
            models, 64 for Table 2 models).  The classifier's :class:`~ndlib.layers.Delinear`
            shares ``eps``, ``n_iter``, ``momentum`` (and any other option both layers take).
            Unknown names raise ``TypeError``; options with ``norm != "nd"`` raise ``ValueError``.
    """
    spec = get_spec(name)
    if not isinstance(norm, str) or norm not in spec.norms:
        raise ValueError(f"norm {norm!r} is not available for {name!r}; valid norms for it: {spec.norms}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes <= 0:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    factory = make_factory(
        norm, deconv_options, default_block_fc=spec.default_block_fc, first_layer_options=spec.first_layer
    )
    return spec.builder(factory, num_classes)
