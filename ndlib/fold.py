"""Fold a BatchNorm into the conv before it, for ``deconvolve(model, fold_bn=True)``.

In eval mode a BatchNorm after a conv is an affine map per output channel,
``y = gamma (W x + b - mu) / sqrt(var + eps) + beta``, so the pair is one conv with

    W' = W * s,   b' = (b - mu) * s + beta,   s = gamma / sqrt(var + eps)

(``torch.nn.utils.fusion.fuse_conv_bn_weights``).  A freshly converted ND layer in eval mode
(running mean 0, running whitening ``I``) computes its conv exactly, so converting the folded
model keeps a trained BN model's eval function.

Which BatchNorm belongs to which conv is a fact about the forward pass, not about module
names or registration order (a pre-activation block registers ``bn2`` after ``conv1`` and
applies it to ``conv1``'s output, but ``bn1`` to the block's input), so the pairs come from a
``torch.fx`` trace: a BatchNorm is folded when its input is a conv's output that nothing else
reads, and each of the two modules is called exactly once.
"""
from __future__ import annotations

import torch
from torch import fx, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_weights
from torchvision.ops.misc import FrozenBatchNorm2d

__all__ = ["conv_bn_pairs", "fold_into"]


class _LeafTracer(fx.Tracer):
    """Keeps convs and every BatchNorm kind (torchvision's ``FrozenBatchNorm2d`` too) as calls."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        if isinstance(module, (nn.Conv2d, _BatchNorm, FrozenBatchNorm2d)):
            return True
        return super().is_leaf_module(module, qualified_name)


def conv_bn_pairs(model: nn.Module, convs: set[str], norms: set[str]) -> list[tuple[str, str]]:
    """``(conv name, BatchNorm name)`` for every BatchNorm in ``norms`` applied directly, and
    only, to the output of a conv in ``convs``; raises ``ValueError`` when ``torch.fx`` cannot
    trace ``model``."""
    try:
        graph = _LeafTracer().trace(model)
    except Exception as error:  # fx raises many types (TraceError, TypeError, NotImplementedError, ...)
        raise ValueError(
            f"deconvolve: fold_bn needs to trace the model with torch.fx to find which conv each BatchNorm "
            f"follows, and tracing failed ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}). "
            "Fold them yourself with torch.nn.utils.fusion.fuse_conv_bn_eval, or convert without fold_bn."
        ) from error
    calls: dict[str, list[fx.Node]] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls.setdefault(node.target, []).append(node)
    pairs = []
    for name in norms:
        if len(calls.get(name, [])) != 1:
            continue
        source = calls[name][0].args[0] if calls[name][0].args else None
        if not isinstance(source, fx.Node) or source.op != "call_module" or source.target not in convs:
            continue
        if len(calls[source.target]) == 1 and len(source.users) == 1 and _foldable(model.get_submodule(name)):
            pairs.append((source.target, name))
    return sorted(pairs)


def _foldable(norm: nn.Module) -> bool:
    return isinstance(norm, FrozenBatchNorm2d) or (isinstance(norm, _BatchNorm) and norm.running_mean is not None)


def fold_into(layer: nn.Module, norm: nn.Module) -> None:
    """Give ``layer`` (a conv or ``FastDeconv`` with a bias) the weight and bias of itself
    followed by ``norm`` in eval mode, as new Parameters."""
    with torch.no_grad():
        weight, bias = fuse_conv_bn_weights(
            layer.weight, layer.bias, norm.running_mean, norm.running_var, norm.eps, norm.weight, norm.bias)
    layer.weight = nn.Parameter(weight.detach().clone(), requires_grad=layer.weight.requires_grad)
    layer.bias = nn.Parameter(bias.detach().clone(), requires_grad=layer.weight.requires_grad)
