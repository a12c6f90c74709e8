"""Turn a BatchNorm CNN into a network-deconvolution one, layer by layer: ``deconvolve(model)``.

The math.  A BatchNorm model normalises the *output* of a conv channel by channel,
``y = gamma * (W x - mu_c) / sigma_c + beta``.  Network deconvolution (ND) instead removes the
correlations of the conv's *input*: with ``p`` an im2col patch, ``mu`` its mean and
``D = Cov(p)^(-1/2)`` (block-diagonal, Newton-Schulz; see :mod:`ndlib.layers`) it computes

    y = W D (p - mu) + b,

and the paper's ND networks are the BN networks with every conv replaced by such a layer
(:class:`~ndlib.layers.FastDeconv`), every BN removed and the classifier's linear layer
whitened too (:class:`~ndlib.layers.Delinear`).  That replacement is mechanical, so it is one
function here rather than a second copy of every architecture:

* every ``nn.Conv2d`` becomes a ``FastDeconv`` with the same geometry (channels, kernel,
  stride, padding, dilation, groups), the same weight, and a bias;
* every ``BatchNorm1d/2d/3d`` and ``SyncBatchNorm`` becomes ``nn.Identity``;
* with ``block_fc`` given, the classifier's ``nn.Linear`` layer(s) become ``Delinear``.

Why BN's affine ``(gamma, beta)`` is dropped and the conv gets a bias: the conv after the
whitening has its own weight and bias, and ``gamma * W`` and ``b + beta`` are just another
weight and bias, so an affine after it adds nothing the layer cannot learn; the bias is the
shift that BN's ``beta`` provided (a conv in front of BN needs none, a deconvolution layer does,
and the paper's ND runs have it on).  Hence a converted model has the original's parameters
minus the BN affine ones plus one bias per bias-free conv.

Why ``deconvolve`` draws no random numbers: the converted layers reuse the original weights
and a new bias starts at zero, so converting does not move the global RNG and a fresh
conversion in eval mode (running mean 0, running ``D = I``) computes exactly the original
conv stack without its BatchNorms.  :func:`deconvolve_options` gives the arguments that turn
each BN model of :mod:`ndlib.models` into its ND model (tested layer for layer).
"""
from __future__ import annotations

import copy
import difflib
import inspect
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Union

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.lazy import LazyModuleMixin
from torchvision.ops.misc import FrozenBatchNorm2d

from ndlib.fold import conv_bn_pairs, fold_into
from ndlib.layers import Delinear, FastDeconv
from ndlib.models.factory import DECONV_OPTIONS, FIRST_LAYER_DECONV, keyword_options

__all__ = ["deconvolve", "deconvolve_options", "CONV_OPTIONS", "LINEAR_OPTIONS", "PRESETS", "RemovedNorm"]

#: Options of :class:`~ndlib.layers.FastDeconv` (``block``, ``eps``, ``n_iter``, ``momentum``,
#: ``sampling_stride``, ``freeze``, ``freeze_iter``, ``grouping``, ...).
CONV_OPTIONS: tuple[str, ...] = DECONV_OPTIONS
#: Options of :class:`~ndlib.layers.Delinear`; the shared ones (all but ``block``) reach it from
#: ``deconvolve``'s ``**layer_options``, its ``block`` is ``block_fc``.
LINEAR_OPTIONS: tuple[str, ...] = keyword_options(Delinear)
_DEFAULT_BLOCK: int = inspect.signature(FastDeconv.__init__).parameters["block"].default

#: The BatchNorm types ``deconvolve`` removes.  Subclasses are refused by name, as ``nn.Conv2d``
#: subclasses are: their ``forward`` may add behaviour (timm's ``BatchNormAct2d`` applies an
#: activation) that removing the layer would silently drop.  ``FrozenBatchNorm2d`` (torchvision's
#: detection backbones) is a BatchNorm with fixed statistics and affine: removed like the others.
_BATCH_NORMS: tuple[type, ...] = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, FrozenBatchNorm2d)

#: ``preset=`` values: the paper's ND settings in one word.  ``"paper"`` is Table 1's (CIFAR:
#: classifier blocks of 512), ``"paper-imagenet"`` Table 2's (64); both whiten in blocks of 64
#: channels and give the first conv 15 Newton-Schulz iterations and the public code's periodic
#: freezing after 100 iterations (:data:`~ndlib.models.factory.FIRST_LAYER_DECONV`).  Arguments
#: given explicitly win over the preset's.
PRESETS: Mapping[str, Mapping[str, Any]] = {
    "paper": {"block": 64, "block_fc": 512, "first_layer": dict(FIRST_LAYER_DECONV)},
    "paper-imagenet": {"block": 64, "block_fc": 64, "first_layer": dict(FIRST_LAYER_DECONV)},
}

#: Norm layers that are not BatchNorm: left in place (with a warning) when met.
_OTHER_NORMS: tuple[type, ...] = tuple(
    t for t in (nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm, nn.LocalResponseNorm,
                getattr(nn, "RMSNorm", None)) if t is not None
)

Skip = Union[None, str, Iterable[str], Callable[[str, nn.Module], bool]]
Overrides = Union[None, Mapping[str, Mapping[str, Any]], Callable[[str, nn.Module], Union[Mapping[str, Any], None]]]


# --------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------
def _positive_int(name: str, value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"deconvolve: {name} must be a positive int ({what}), got {value!r} ({type(value).__name__})")
    if value <= 0:
        raise ValueError(f"deconvolve: {name} must be a positive int ({what}), got {value}")
    return value


def _check_names(where: str, options: Mapping[str, Any], valid: tuple[str, ...]) -> dict:
    if not isinstance(options, Mapping):
        raise TypeError(f"deconvolve: {where} must be a dict of layer options, got {type(options).__name__}")
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise TypeError(f"deconvolve: unknown option(s) {unknown} in {where}; valid options: {', '.join(valid)}")
    return dict(options)


def _unknown_name_error(what: str, name, names: list[str]) -> ValueError:
    close = difflib.get_close_matches(str(name), names, n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return ValueError(
        f"deconvolve: {what} names {name!r}, which is not a module of this model.{hint} Names are the "
        "qualified names of model.named_modules(), e.g. 'layer1.0.conv1'."
    )


def _skip_predicate(skip: Skip, names: list[str]) -> Callable[[str, nn.Module], bool]:
    if skip is None:
        return lambda name, module: False
    if callable(skip) and not isinstance(skip, str):
        return lambda name, module: bool(skip(name, module))
    if isinstance(skip, str):
        skip = [skip]
    try:
        wanted = list(skip)
    except TypeError:
        raise TypeError(
            "deconvolve: skip must be a module name, a list of module names or a function "
            f"(name, module) -> bool, got {type(skip).__name__}"
        ) from None
    known = set(names)
    for name in wanted:
        if not isinstance(name, str) or not name:
            raise TypeError(f"deconvolve: skip names must be non-empty str (qualified module names), got {name!r}")
        if name not in known:
            raise _unknown_name_error("skip", name, names)
    wanted_set = set(wanted)
    return lambda name, module: name in wanted_set


def _overrides_for(overrides: Overrides, names: list[str]) -> Callable[[str, nn.Module], dict]:
    if overrides is None:
        return lambda name, module: {}
    if callable(overrides):
        def call(name: str, module: nn.Module) -> dict:
            result = overrides(name, module)
            if result is None:
                return {}
            if not isinstance(result, Mapping):
                raise TypeError(
                    f"deconvolve: overrides({name!r}, ...) returned {type(result).__name__}; "
                    "it must return a dict of layer options or None"
                )
            return dict(result)
        return call
    if not isinstance(overrides, Mapping):
        raise TypeError(
            "deconvolve: overrides must be a dict {module name: {option: value}} or a function "
            f"(name, module) -> dict or None, got {type(overrides).__name__}"
        )
    known = set(names)
    for name, options in overrides.items():
        if name not in known:
            raise _unknown_name_error("overrides", name, names)
        if not isinstance(options, Mapping):
            raise TypeError(
                f"deconvolve: overrides[{name!r}] must be a dict of layer options, got {type(options).__name__}"
            )
    return lambda name, module: dict(overrides.get(name, {}))


# --------------------------------------------------------------------------------------
# What each module becomes
# --------------------------------------------------------------------------------------
def _conv_padding(conv: nn.Conv2d):
    """FastDeconv takes integer padding: ``'valid'`` is 0; ``'same'`` is ``dilation*(k-1)/2`` per
    side when that is a whole number (else PyTorch pads one side more, which FastDeconv cannot)."""
    if not isinstance(conv.padding, str):
        return conv.padding
    if conv.padding == "valid":
        return (0, 0)
    totals = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size)]
    if any(t % 2 for t in totals):
        return None
    return tuple(t // 2 for t in totals)


class RemovedNorm(nn.Identity):
    """What a removed BatchNorm becomes: the identity, returning a **copy** of its input.

    A BatchNorm returns a new tensor, so code after it may change that tensor in place (a
    ``ReLU(inplace=True)``, ``out += shortcut``).  A plain ``nn.Identity`` returns its input
    itself, and the same in-place op would then rewrite the block's input, which a shortcut (or
    the caller) still reads.  One copy costs less than the BatchNorm it replaces.  (BatchNorms
    folded into the conv before them, ``fold_bn=True``, become a plain ``nn.Identity``: the
    conv's output has no other reader.)
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return input.clone()


def _why_not(module: nn.Module) -> str | None:
    """Why a conv-like or norm module cannot be converted (``None``: it can)."""
    if isinstance(module, LazyModuleMixin) and module.has_uninitialized_params():
        return "a lazy module with uninitialised parameters: run one forward pass first to materialise it"
    if module._forward_hooks or module._forward_pre_hooks or module._backward_hooks or module._backward_pre_hooks:
        return "it has hooks (weight norm, user hooks, ...) that a new layer would not carry"
    if type(module) is nn.Conv2d:
        if module.padding_mode != "zeros":
            return f"padding_mode={module.padding_mode!r}: FastDeconv pads with zeros only"
        if module.kernel_size[0] != module.kernel_size[1]:
            return f"kernel {tuple(module.kernel_size)}: FastDeconv needs a square kernel"
        if _conv_padding(module) is None:
            return "padding='same' with an even kernel extent: PyTorch pads asymmetrically, FastDeconv cannot"
        return None
    if isinstance(module, nn.Conv2d):
        return f"a subclass of nn.Conv2d ({type(module).__name__}) whose forward may differ from a plain conv"
    if isinstance(module, _ConvNd):
        return "FastDeconv replaces nn.Conv2d only (no transposed, 1-D or 3-D convs)"
    if _is_norm(module) and type(module) not in _BATCH_NORMS:
        return (f"a subclass of {type(module).__mro__[1].__name__} ({type(module).__name__}) whose forward may add "
                "behaviour, e.g. an activation, that removing it would drop")
    return None


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, (_BatchNorm, FrozenBatchNorm2d))


def _skip_advice(problems: list[str], modules: dict[str, nn.Module]) -> str:
    """Which names to put in ``skip``: a conv's parent when it holds a BatchNorm too (skipping
    the conv alone would keep it plain but still remove that BatchNorm: neither normalised nor
    whitened), else the layer itself."""
    names = []
    for name in problems:
        parent = name.rpartition(".")[0]
        holds_norm = parent and isinstance(modules[name], _ConvNd) and any(
            _is_norm(child) for child in modules[parent].children())
        names.append(parent if holds_norm else name)
    names = list(dict.fromkeys(names))
    shown = ", ".join(repr(n) for n in names[:6]) + (", ..." if len(names) > 6 else "")
    return (f"Leave them as they are with skip=[{shown}] (a skipped module keeps its whole subtree, "
            "BatchNorms included), or change the model.")


def _classifier_names(modules: dict[str, nn.Module]) -> list[str]:
    """The classifier: the last ``nn.Linear`` in module order, plus the other ``nn.Linear`` layers
    in the same ``nn.Sequential`` when it sits in one (a head such as VGG's three linears)."""
    linears = [n for n, m in modules.items() if isinstance(m, nn.Linear) and not isinstance(m, Delinear)]
    if not linears:
        return []
    last = linears[-1]
    parent_name = last.rpartition(".")[0]
    parent = modules.get(parent_name)
    if isinstance(parent, nn.Sequential):
        return [n for n in linears if n.rpartition(".")[0] == parent_name]
    return [last]


def _build(layer_type: type, name: str, original: nn.Module, args: tuple, options: dict) -> nn.Module:
    """The new layer, built on the CPU with a forked RNG (its own init is overwritten, and the
    caller's random stream must not move), then moved to the original's device and dtype; it
    shares the original's weight Parameter and gets its bias, or a zero one."""
    try:
        with torch.random.fork_rng(devices=[]):
            layer = layer_type(*args, **options)
    except (TypeError, ValueError) as error:
        raise type(error)(
            f"deconvolve: cannot build the {layer_type.__name__} for {name!r} with {options}: {error}"
        ) from error
    weight = original.weight
    layer = layer.to(device=weight.device, dtype=weight.dtype)
    layer.weight = weight
    if original.bias is not None:
        layer.bias = original.bias
    else:
        layer.bias = nn.Parameter(torch.zeros(layer.bias.shape, device=weight.device, dtype=weight.dtype),
                                  requires_grad=weight.requires_grad)
    layer.train(original.training)
    return layer


# --------------------------------------------------------------------------------------
# The conversion
# --------------------------------------------------------------------------------------
@dataclass
class _Plan:
    """What :func:`deconvolve` will do, decided on the given model before anything changes."""

    convs: list[str] = field(default_factory=list)
    norms: list[str] = field(default_factory=list)
    linears: list[str] = field(default_factory=list)
    folds: list[tuple[str, str]] = field(default_factory=list)  # (conv, BatchNorm) pairs to fold
    first_conv: str | None = None
    skipped: set[str] = field(default_factory=set)
    other_norms: Counter = field(default_factory=Counter)


def _settings(preset: str | None, block, block_fc, first_layer) -> tuple[int, int | None, dict | None, bool]:
    """``(block, block_fc, first_layer, block_fc_required)`` after the preset: explicit
    arguments win; a preset's classifier and first-layer settings apply where the model has
    such layers, an explicit ``block_fc`` or ``first_layer`` must find them."""
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"deconvolve: unknown preset {preset!r}; presets: {', '.join(PRESETS)}")
    chosen = dict(PRESETS[preset]) if preset else {}
    block_fc_required = block_fc is not None
    block = chosen.get("block", _DEFAULT_BLOCK) if block is None else block
    block_fc = chosen.get("block_fc") if block_fc is None else block_fc
    _positive_int("block", block, "channels per whitening block, e.g. 64")
    if block_fc is not None:
        _positive_int("block_fc", block_fc, "features per block of the classifier's Delinear, e.g. 512; or None")
    if first_layer is not None:
        first_layer = _check_names("first_layer", first_layer, CONV_OPTIONS)
    elif chosen.get("first_layer"):
        first_layer = {**chosen["first_layer"], "_from_preset": True}
    return block, block_fc, first_layer, block_fc_required


def _check_model(model) -> None:
    if isinstance(model, torch.jit.ScriptModule):
        raise TypeError(
            "deconvolve: TorchScript modules are not supported (their layers are compiled code, not nn.Conv2d "
            "and BatchNorm modules); pass the eager nn.Module, before torch.jit.script or torch.jit.trace"
        )
    if not isinstance(model, nn.Module):
        raise TypeError(f"deconvolve expects a torch.nn.Module, got {type(model).__name__}")


def _plan(model: nn.Module, skip: Skip, block_fc: int | None, fold_bn: bool) -> _Plan:
    modules = dict(model.named_modules())
    names = [name for name in modules if name]
    is_skipped_here = _skip_predicate(skip, names)
    plan = _Plan()
    for name, module in modules.items():
        if name and (name.rpartition(".")[0] in plan.skipped or is_skipped_here(name, module)):
            plan.skipped.add(name)
    plan.first_conv = next((n for n, m in modules.items() if isinstance(m, nn.Conv2d)), None)
    classifier = set(_classifier_names(modules)) if block_fc is not None else set()
    problems = []
    for name, module in modules.items():
        if name in plan.skipped or isinstance(module, (FastDeconv, Delinear)):
            continue
        if isinstance(module, _ConvNd) or _is_norm(module) or name in classifier:
            reason = _why_not(module)
            if reason is None and name in classifier and type(module) is not nn.Linear:
                reason = f"a subclass of nn.Linear ({type(module).__name__}) whose forward may differ"
            if reason is not None:
                problems.append((name, f"{name or '<the model itself>'} ({type(module).__name__}: {reason})"))
            elif isinstance(module, nn.Conv2d):
                plan.convs.append(name)
            elif _is_norm(module):
                plan.norms.append(name)
            else:
                plan.linears.append(name)
        elif isinstance(module, _OTHER_NORMS):
            plan.other_norms[type(module).__name__] += 1
    if problems:
        raise ValueError(
            f"deconvolve: {len(problems)} layer(s) cannot be converted: " + "; ".join(p for _, p in problems)
            + ". " + _skip_advice([n for n, _ in problems], modules)
        )
    if fold_bn:
        plan.folds = conv_bn_pairs(model, convs=set(plan.convs), norms=set(plan.norms))
    return plan


def _check_plan(plan: _Plan, model: nn.Module, first_layer, block_fc, block_fc_required, overrides) -> None:
    if not plan.convs and not plan.norms:
        done = sum(isinstance(m, FastDeconv) for m in model.modules())
        raise ValueError(
            f"deconvolve: {type(model).__name__} has no nn.Conv2d and no BatchNorm layer to convert"
            + (f" outside the {len(plan.skipped)} skipped modules" if plan.skipped else "")
            + (f" (it already holds {done} FastDeconv layers: converted before?)" if done else "")
            + ". Network deconvolution whitens conv inputs; for a linear layer alone use ndlib.layers.Delinear."
        )
    if first_layer and not first_layer.get("_from_preset") and plan.first_conv not in plan.convs:
        where = ("the model has no nn.Conv2d" if plan.first_conv is None
                 else f"the first conv {plan.first_conv!r} is not converted (skipped, or already a FastDeconv)")
        raise ValueError(f"deconvolve: first_layer was given but {where}; drop first_layer or the skip")
    if block_fc_required and not plan.linears:
        classifier = _classifier_names(dict(model.named_modules()))
        where = "the model has no nn.Linear" if not classifier else f"its classifier {sorted(classifier)} is skipped"
        raise ValueError(f"deconvolve: block_fc was given but {where}; drop block_fc or the skip")
    if isinstance(overrides, Mapping):
        unused = sorted(set(overrides) - set(plan.convs))
        if unused:
            raise ValueError(
                f"deconvolve: overrides names {unused}, which are not convs converted to FastDeconv "
                "(overrides set per-conv options; the classifier takes block_fc and the shared options)"
            )


def _warn_about(plan: _Plan, model: nn.Module, fold_bn: bool) -> None:
    """The warnings of a conversion: kept norms of other kinds, skipped convs whose BatchNorm
    neighbour is removed, BatchNorms that ``fold_bn`` could not fold."""
    modules = dict(model.named_modules())
    if plan.other_norms:
        kinds = ", ".join(f"{kind} x{count}" for kind, count in sorted(plan.other_norms.items()))
        warnings.warn(
            f"deconvolve: kept {sum(plan.other_norms.values())} norm layers that are not BatchNorm ({kinds}) as they "
            "are; ND replaces BatchNorm only, the convs around them were converted.", UserWarning, stacklevel=3)
    removed = set(plan.norms)
    orphans = set()
    for name in plan.skipped:  # a conv skipped by name while a BatchNorm beside it is removed
        parent = name.rpartition(".")[0]
        if isinstance(modules[name], nn.Conv2d) and parent not in plan.skipped:
            beside = {f"{parent}.{child}" if parent else child for child, _ in modules[parent].named_children()}
            if beside & removed:
                orphans.add(parent or "<the model itself>")
    if orphans:
        warnings.warn(
            "deconvolve: skipped convs keep their plain nn.Conv2d, but the BatchNorms beside them in "
            f"{sorted(orphans)} are removed, which leaves those convs neither normalised nor whitened; "
            "skip the parent module to keep both.", UserWarning, stacklevel=3)
    if fold_bn:
        folded = {bn for _, bn in plan.folds}
        unfolded = [n for n in plan.norms if n not in folded]
        if unfolded:
            shown = ", ".join(unfolded[:4]) + (", ..." if len(unfolded) > 4 else "")
            warnings.warn(
                f"deconvolve: fold_bn folded {len(folded)} BatchNorms; {len(unfolded)} do not directly follow a conv "
                f"({shown}) and are removed without folding, so there the converted model differs from the "
                "original in eval mode.", UserWarning, stacklevel=3)


def _new_layers(plan: _Plan, modules: dict[str, nn.Module], block, block_fc, first_layer, options_for,
                layer_options, rank_warning: bool) -> dict[str, nn.Module]:
    new: dict[str, nn.Module] = {}
    first = {k: v for k, v in (first_layer or {}).items() if k != "_from_preset"}
    for name in plan.convs:
        conv = modules[name]
        options = {"block": block, **layer_options}
        options.update(_check_names(f"overrides for {name!r}", options_for(name, conv), CONV_OPTIONS))
        if name == plan.first_conv and first:
            options.update(first)
        args = (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, _conv_padding(conv),
                conv.dilation, conv.groups, True)
        new[name] = _build(FastDeconv, name, conv, args, options)
    for name in plan.linears:
        linear = modules[name]
        options = {"block": block_fc, **{k: v for k, v in layer_options.items() if k in LINEAR_OPTIONS}}
        new[name] = _build(Delinear, name, linear, (linear.in_features, linear.out_features, True), options)
    for name, layer in new.items():
        layer.qualified_name = name
        layer.warn_rank_deficient = rank_warning
    folded = {bn for _, bn in plan.folds}
    for name in plan.norms:
        new[name] = nn.Identity() if name in folded else RemovedNorm()
    return new


def _install(model: nn.Module, modules: dict[str, nn.Module], new: dict[str, nn.Module]) -> nn.Module:
    """Put each new layer at every place its original is registered (shared modules too)."""
    places: dict[int, list[str]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        places.setdefault(id(module), []).append(name)
    converted = model
    for name, layer in new.items():
        for place in places[id(modules[name])]:
            if not place:
                converted = layer  # the model itself was a conv or a BatchNorm
                continue
            parent, _, attr = place.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, attr, layer)
    return converted


def deconvolve(
    model: nn.Module,
    *,
    preset: str | None = None,
    block: int | None = None,
    block_fc: int | None = None,
    first_layer: Mapping[str, Any] | None = None,
    skip: Skip = None,
    overrides: Overrides = None,
    fold_bn: bool = False,
    rank_warning: bool = True,
    inplace: bool = False,
    **layer_options: Any,
) -> nn.Module:
    """Network deconvolution in place of batch normalization: whitened conv inputs, no BatchNorm.

    ("Deconvolution" here is the paper's name for removing the correlations in a conv's input;
    it is not the transposed convolution, ``nn.ConvTranspose2d``, that the word often means.)

    Every ``nn.Conv2d`` becomes a :class:`~ndlib.layers.FastDeconv` with the same geometry
    (in/out channels, kernel, stride, padding, dilation, groups; ``padding='valid'`` and
    symmetric ``'same'`` become the equal integer padding) and every ``BatchNorm1d/2d/3d``,
    ``SyncBatchNorm`` and torchvision ``FrozenBatchNorm2d`` a :class:`RemovedNorm` (an identity
    that returns a copy, so an in-place op after it cannot rewrite a tensor something else still
    reads); with ``block_fc`` the classifier's ``nn.Linear`` becomes a
    :class:`~ndlib.layers.Delinear`.  Other modules are untouched.  ``preset="paper"`` gives the
    paper's settings in one word (:data:`PRESETS`).

    Weights: a converted layer holds the weight ``Parameter`` of the layer it replaces (with
    ``inplace=True`` the very same object, else the copy's) and its bias; a conv (or linear)
    without a bias gets a **zero** bias, so that a fresh conversion in eval mode (running mean
    0, running whitening ``I``) computes exactly the original layer and the conversion draws no
    random numbers.  BatchNorm's affine ``gamma, beta`` and running statistics are **dropped**:
    after the whitening the conv's own weight and bias can express any per-channel scale and
    shift, so ND has no affine after the conv.  For a *pretrained* model this means the
    converted network does not compute the pretrained function, unless ``fold_bn=True`` first
    folds each BatchNorm into the conv before it.  Build the optimizer after converting (the new
    biases are new Parameters).

    After converting, the running whitening starts at the identity and moves with momentum 0.1,
    so eval-mode outputs are meaningless until it has seen data: train, or call
    :func:`ndlib.recalibrate` with a few batches before evaluating.  A classifier initialised for
    unwhitened features may start with very large logits (torchvision's MNASNet and EfficientNet
    heads); ``classifier.reset_parameters()`` fixes that.

    Which layers:
        * the **first conv** is the first ``nn.Conv2d`` in module registration order
          (``model.modules()``), the input layer in every torchvision and ``ndlib`` model; it
          gets ``first_layer`` on top of the other options;
        * the **classifier** is the last ``nn.Linear`` in module order and, when it sits in an
          ``nn.Sequential``, the other ``nn.Linear`` layers of that ``Sequential`` (VGG's
          three-layer head, MobileNetV3's two).  Linears elsewhere (ConvNeXt's per-pixel MLPs,
          attention) are left alone: :class:`~ndlib.layers.Delinear` whitens ``(N, features)``
          inputs, and the paper whitens only the classifier.

    Args:
        model: the network (any eager ``nn.Module``; a single conv or BN works too).
        preset: ``"paper"`` (Table 1: ``block=64``, ``block_fc=512``, the first conv with 15
            iterations and periodic freezing) or ``"paper-imagenet"`` (``block_fc=64``); the
            classifier and first-layer settings apply where the model has such layers.
        block: channels per whitening block of every ``FastDeconv`` (paper: 64, the default).
        block_fc: the classifier's ``Delinear`` block (paper: 512 on CIFAR, 64 on ImageNet);
            ``None`` (and no preset) leaves the linear layers as they are.
        first_layer: extra ``FastDeconv`` options for the first conv, e.g. the paper's
            ``{"n_iter": 15, "freeze": True}``; they win over every other option.
        skip: layers to leave alone: a qualified module name, a list of them, or a function
            ``(name, module) -> bool``; a skipped module's whole subtree is left as it is (its
            BatchNorms too).  Unknown names raise ``ValueError``.
        overrides: per-conv ``FastDeconv`` options on top of ``block`` and ``**layer_options``:
            a dict ``{qualified name: {option: value}}`` or a function ``(name, conv) -> dict or
            None`` called with every ``nn.Conv2d`` to convert (e.g. the paper's MobileNetV2
            depthwise rule ``lambda name, m: {"n_iter": 1} if m.groups > 1 else None``).
        fold_bn: first fold each BatchNorm that directly follows a conv into that conv
            (``W' = W gamma / sigma``, ``b' = (b - mu) gamma / sigma + beta``, found with
            ``torch.fx``), so the converted model in eval mode computes the original's eval
            function (to float rounding).  Its first training step then whitens with the batch
            statistics, which changes the function: fine-tuning starts from there.  BatchNorms
            that follow no conv are removed as usual, with a warning.
        rank_warning: warn once per layer (:class:`~ndlib.layers.RankDeficientWarning`, with its
            name and the batch size it needs) when a training step samples fewer rows per
            covariance than it has features.
        inplace: convert ``model`` itself (and return it) instead of a deep copy.
        **layer_options: options for every ``FastDeconv`` (:data:`CONV_OPTIONS`: ``eps``,
            ``n_iter``, ``momentum``, ``sampling_stride``, ``freeze``, ``grouping``,
            ``isqrt_method``, ...); the classifier's ``Delinear`` gets those it also takes.

    Raises:
        ValueError: nothing to convert (no ``nn.Conv2d`` and no BatchNorm), layers that cannot
            be converted (``ConvTranspose2d``, ``Conv1d``/``Conv3d``, lazy or hooked modules,
            subclasses of ``nn.Conv2d`` or of a BatchNorm, non-zero padding modes, non-square
            kernels; all named, with the ``skip`` names that leave them and their BatchNorms
            as they are), unknown names in ``skip``/``overrides``, bad option values, a model
            ``fold_bn`` cannot trace.
        TypeError: arguments of the wrong type, unknown option names, a TorchScript model.

    Norms that are not BatchNorm (``LayerNorm``, ``GroupNorm``, ...) are left in place with a
    one-line warning; the convs around them are converted.  Nothing is changed when an error
    is raised, even with ``inplace=True``.
    """
    _check_model(model)
    block, block_fc, first_layer, block_fc_required = _settings(preset, block, block_fc, first_layer)
    for flag, value in (("inplace", inplace), ("fold_bn", fold_bn), ("rank_warning", rank_warning)):
        if not isinstance(value, bool):
            raise TypeError(f"deconvolve: {flag} must be True or False, got {value!r}")
    layer_options = _check_names("the keyword options", layer_options, CONV_OPTIONS)
    options_for = _overrides_for(overrides, [name for name, _ in model.named_modules() if name])

    # ---- plan, on the given model: nothing is changed until every new layer is built ----
    plan = _plan(model, skip, block_fc, fold_bn)
    _check_plan(plan, model, first_layer, block_fc, block_fc_required, overrides)
    if not inplace:
        try:
            model = copy.deepcopy(model)
        except (RuntimeError, ValueError) as error:  # e.g. an uninitialised lazy module, even a skipped one
            raise ValueError(
                f"deconvolve: cannot copy the model ({error}); pass inplace=True to convert it in place"
            ) from error
    modules = dict(model.named_modules())  # the same names in the copy
    new = _new_layers(plan, modules, block, block_fc, first_layer, options_for, layer_options, rank_warning)
    for conv, norm in plan.folds:
        fold_into(new[conv], modules[norm])

    # ---- apply ----
    converted = _install(model, modules, new)
    _warn_about(plan, model, fold_bn)
    return converted


# --------------------------------------------------------------------------------------
# Our architectures: the arguments that turn each BN model into its ND model
# --------------------------------------------------------------------------------------
def _conv_names(bn_model: nn.Module, keep: Callable[[str, nn.Conv2d], bool]) -> list[str]:
    return [n for n, m in bn_model.named_modules() if isinstance(m, nn.Conv2d) and keep(n, m)]


def _resnext_overrides(bn_model: nn.Module) -> dict:
    """ResNeXt-29: the grouped 3x3 convs use ``GROUPED_CONV_DECONV`` (3 iterations)."""
    from ndlib.models.resnext import GROUPED_CONV_DECONV

    return {n: dict(GROUPED_CONV_DECONV) for n in _conv_names(bn_model, lambda n, m: m.groups > 1)}


def _mobilenetv2_overrides(bn_model: nn.Module) -> dict:
    """MobileNetV2: depthwise convs ``DEPTHWISE_DECONV`` (1 iteration); the projection of each
    block ``projection_overrides(block input width)`` (block = that width, 1 iteration)."""
    from ndlib.models.mobilenetv2 import DEPTHWISE_DECONV, projection_overrides

    overrides = {n: dict(DEPTHWISE_DECONV) for n in _conv_names(bn_model, lambda n, m: m.groups > 1)}
    for index, block in enumerate(bn_model.blocks):
        overrides[f"blocks.{index}.project.0"] = projection_overrides(block.expand[0].in_channels)
    return overrides


#: Per architecture, the ONE extra argument its ND model needs beyond the shared options:
#: a function of the BN model (built on the meta device) returning ``{argument: value}``.
_EXCEPTIONS: dict[str, Callable[[nn.Module], dict]] = {
    "resnext29": lambda bn: {"overrides": _resnext_overrides(bn)},
    "mobilenetv2": lambda bn: {"overrides": _mobilenetv2_overrides(bn)},
    # the paper's EfficientNet: only the stem and the classifier deconvolve, the blocks keep BN
    "efficientnetb0": lambda bn: {"skip": ["blocks"]},
}


def deconvolve_options(arch: str, **options: Any) -> dict[str, Any]:
    """The :func:`deconvolve` arguments that turn ``create(arch, norm="bn")`` into
    ``create(arch, norm="nd", **options)`` of :mod:`ndlib.models`, layer for layer.

    ``options`` are ``create``'s ND options (``block``, ``block_fc`` and FastDeconv options);
    the result holds ``block``, ``block_fc`` (the architecture's default unless given),
    ``first_layer`` (the registry's first-layer settings, or ``None``), the options, and where
    the architecture has one, its exception as ONE argument: per-layer ``overrides``
    (ResNeXt-29's grouped convs, MobileNetV2's depthwise and projection convs) or ``skip``
    (the paper's EfficientNet-B0 keeps BN in its ``blocks``).  Usage::

        bn = models.create("mobilenetv2", norm="bn")
        nd = deconvolve(bn, **deconvolve_options("mobilenetv2"))   # == create(..., norm="nd")
    """
    from ndlib.models import create, get_spec

    spec = get_spec(arch)
    if "bn" not in spec.norms or "nd" not in spec.norms:
        raise ValueError(f"{arch!r} has no BN and ND variants (norms: {spec.norms})")
    options = dict(options)
    arguments: dict[str, Any] = {
        "block": options.pop("block", _DEFAULT_BLOCK),
        "block_fc": options.pop("block_fc", spec.default_block_fc),
        "first_layer": dict(spec.first_layer) if spec.first_layer else None,
    }
    _check_names(f"the options for {arch!r}", options, CONV_OPTIONS)
    arguments.update(options)
    if arch in _EXCEPTIONS:
        with torch.device("meta"):
            bn = create(arch, norm="bn")
        arguments.update(_EXCEPTIONS[arch](bn))
    return arguments
