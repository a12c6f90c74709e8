"""A faithful re-implementation of the PUBLIC code's deconvolution algorithm (internal).

Written by us from the method description (``spec/network-deconvolution.md``), step for step
as the public code computes it, so that the tests can check :mod:`ndlib.layers` against it and
the benchmark can time it (``python -m ndlib bench --implementation reference``).  It is kept
out of the public API on purpose (underscore module, nothing exported from ``ndlib``): it is a
yardstick, not a layer to train with.

What "faithful" means here -- the public code's sequence of operations, including the parts
that :mod:`ndlib.layers` later makes cheaper without changing the result:

* patches: ``F.unfold`` -> ``transpose(1, 2)`` -> ``contiguous()`` (a full copy), then for
  ``groups == 1`` the interleaved view ``(rows, B*k*k, G) -> transpose -> contiguous`` (a second
  copy); 1x1 convs permute and copy the WHOLE feature map and only then keep every ``s^2``-th
  pixel;
* mean by ``X.mean(0)``, an explicit centred copy ``X - mu``, the covariance by
  ``addmm(eps * I, X^T, X, alpha=1/M)`` (``baddbmm`` per conv group);
* the textbook coupled Newton-Schulz loop with ALL products: ``Z = I`` at the start (so the
  first iteration multiplies by the identity) and the final, unused update of ``Y``;
* running statistics by ``mul_(1 - m).add_(m * value)``;
* freezing by a Python counter: ``frozen = counter > freeze_iter`` is read BEFORE
  ``counter = (counter + 1) % (10 * freeze_iter)``;
* the fold ``W' = W D``, ``b' = b - sum_g W'_g mu`` through the same interleaved copy of the
  weight.

One deliberate difference: the public code cannot run a conv with ``bias=False`` (it
subtracts from ``None``; its ``Delinear`` handles the case).  Here ``bias=False`` gives
``b' = -sum_g W'_g mu`` in both layers, the same affine map as with a zero bias (what
:mod:`ndlib.layers` does).

:func:`to_reference` swaps every :class:`ndlib.layers.FastDeconv` / :class:`~ndlib.layers.Delinear`
of a model for these classes with the same weights and buffers; :func:`from_reference` swaps back.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from ndlib import layers as nd_layers

__all__ = [
    "reference_isqrt_newton_schulz",
    "reference_isqrt_newton_schulz_batch",
    "ReferenceFastDeconv",
    "ReferenceDelinear",
    "to_reference",
    "from_reference",
    "count_reference_layers",
]


def reference_isqrt_newton_schulz(A: torch.Tensor, n_iter: int) -> torch.Tensor:
    """Textbook coupled Newton-Schulz for one ``(n, n)`` matrix: every product, identity included.

    ``Y = A/||A||_F``, ``Z = I``; ``n_iter`` times ``T = (3I - ZY)/2, Y = YT, Z = TZ``;
    return ``Z / sqrt(||A||_F)``.
    """
    dim = A.shape[0]
    norm = A.norm()
    Y = A.div(norm)
    eye = torch.eye(dim, dtype=A.dtype, device=A.device)
    Z = torch.eye(dim, dtype=A.dtype, device=A.device)
    for _ in range(n_iter):
        T = 0.5 * (3.0 * eye - Z @ Y)
        Y = Y @ T
        Z = T @ Z
    return Z / torch.sqrt(norm)


def reference_isqrt_newton_schulz_batch(A: torch.Tensor, n_iter: int) -> torch.Tensor:
    """The batched loop (``(batch, n, n)``, one matrix per conv group) with ``bmm``."""
    batch, dim, _ = A.shape
    norm = A.reshape(batch, -1).norm(2, 1).reshape(batch, 1, 1)
    Y = A.div(norm)
    eye = torch.eye(dim, dtype=A.dtype, device=A.device).unsqueeze(0).expand_as(A)
    Z = torch.eye(dim, dtype=A.dtype, device=A.device).unsqueeze(0).expand_as(A)
    for _ in range(n_iter):
        T = 0.5 * (3.0 * eye - Z.bmm(Y))
        Y = Y.bmm(T)
        Z = T.bmm(Z)
    return Z / torch.sqrt(norm)


class ReferenceFastDeconv(nn.Conv2d):
    """The public code's conv deconvolution, same constructor as :class:`ndlib.layers.FastDeconv`.

    Only ``grouping="interleaved"`` exists in the public code, so only that one is accepted.
    Buffers ``running_mean`` and ``running_deconv`` have the shapes of ``FastDeconv``; the
    freezing counter is a plain Python attribute (``counter``), as in the public code.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        bias: bool = True,
        *,
        block: int = 64,
        eps: float = 1e-5,
        n_iter: int = 5,
        momentum: float = 0.1,
        sampling_stride: int = 3,
        freeze: bool = False,
        freeze_iter: int = 100,
        grouping: str = "interleaved",
        device=None,
        dtype=None,
    ) -> None:
        if grouping != "interleaved":
            raise ValueError(f"the public code has only grouping='interleaved', got {grouping!r}")
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
            device=device, dtype=dtype,
        )
        # block rule, in the public code's order
        if block > in_channels:
            block = in_channels
        elif in_channels % block != 0:
            block = math.gcd(block, in_channels)
        if groups > 1:
            block = in_channels // groups
        self.block = block
        self.eps = float(eps)
        self.n_iter = n_iter
        self.momentum = float(momentum)
        self.num_features = self.kernel_size[0] * self.kernel_size[1] * block
        self.sampling_stride = sampling_stride * self.stride[0]
        self.freeze = bool(freeze)
        self.freeze_iter = freeze_iter
        self.counter = 0
        factory = {"device": device, "dtype": dtype}
        if groups == 1:
            self.register_buffer("running_mean", torch.zeros(self.num_features, **factory))
            self.register_buffer("running_deconv", torch.eye(self.num_features, **factory))
        else:
            k2 = self.kernel_size[0] * self.kernel_size[1]
            self.register_buffer("running_mean", torch.zeros(k2 * in_channels, **factory))
            eye = torch.eye(self.num_features, **factory)
            self.register_buffer("running_deconv", eye.repeat(in_channels // block, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, C, H, W = x.shape
        B = self.block
        frozen = self.freeze and self.counter > self.freeze_iter
        if self.training:
            self.counter = (self.counter + 1) % (self.freeze_iter * 10)

        if self.training and not frozen:
            # 1. im2col: (N, C*k*k, L) -> (N*L, C*k*k), a full copy
            if self.kernel_size[0] > 1:
                X = F.unfold(x, self.kernel_size, self.dilation, self.padding, self.sampling_stride)
                X = X.transpose(1, 2).contiguous()
            else:
                X = x.permute(0, 2, 3, 1).contiguous().view(-1, C)[:: self.sampling_stride**2, :]
            if self.groups == 1:
                # interleaved blocks, stacked: (rows * G, B*k*k), a second copy
                X = X.reshape(-1, self.num_features, C // B).transpose(1, 2).contiguous().view(-1, self.num_features)
            else:
                X = X.reshape(-1, X.shape[-1])
            # 2. centre
            X_mean = X.mean(0)
            X = X - X_mean.unsqueeze(0)
            # 3. covariance and its inverse square root
            if self.groups == 1:
                eye = torch.eye(X.shape[1], dtype=X.dtype, device=X.device)
                cov = torch.addmm(eye, X.t(), X, beta=self.eps, alpha=1.0 / X.shape[0])
                deconv = reference_isqrt_newton_schulz(cov, self.n_iter)
            else:
                X = X.view(-1, self.groups, self.num_features).transpose(0, 1)
                eye = torch.eye(self.num_features, dtype=X.dtype, device=X.device)
                eye = eye.expand(self.groups, self.num_features, self.num_features)
                cov = torch.baddbmm(eye, X.transpose(1, 2), X, beta=self.eps, alpha=1.0 / X.shape[1])
                deconv = reference_isqrt_newton_schulz_batch(cov, self.n_iter)
            with torch.no_grad():
                self.running_mean.mul_(1 - self.momentum).add_(X_mean.detach() * self.momentum)
                self.running_deconv.mul_(1 - self.momentum).add_(deconv.detach() * self.momentum)
        else:
            X_mean = self.running_mean
            deconv = self.running_deconv

        # 4. fold the whitening into the weight: X D W == X (D W)
        if self.groups == 1:
            w = self.weight.reshape(-1, self.num_features, C // B).transpose(1, 2).contiguous()
            w = w.view(-1, self.num_features) @ deconv
            shift = (w @ X_mean.unsqueeze(1)).view(self.weight.shape[0], -1).sum(1)
            w = w.view(-1, C // B, self.num_features).transpose(1, 2).contiguous()
        else:
            w = self.weight.view(C // B, -1, self.num_features) @ deconv
            shift = (w @ X_mean.view(-1, self.num_features, 1)).view(self.out_channels)
        b = -shift if self.bias is None else self.bias - shift
        return F.conv2d(x, w.view(self.weight.shape), b, self.stride, self.padding, self.dilation, self.groups)


class ReferenceDelinear(nn.Linear):
    """The public code's decorrelated linear layer, same constructor as :class:`ndlib.layers.Delinear`."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        block: int = 512,
        eps: float = 1e-5,
        n_iter: int = 5,
        momentum: float = 0.1,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        if block > in_features:
            block = in_features
        elif in_features % block != 0:
            block = math.gcd(block, in_features)
        self.block = block
        self.eps = float(eps)
        self.n_iter = n_iter
        self.momentum = float(momentum)
        factory = {"device": device, "dtype": dtype}
        self.register_buffer("running_mean", torch.zeros(block, **factory))
        self.register_buffer("running_deconv", torch.eye(block, **factory))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            X = x.reshape(-1, self.block)
            X_mean = X.mean(0)
            X = X - X_mean.unsqueeze(0)
            eye = torch.eye(X.shape[1], dtype=X.dtype, device=X.device)
            cov = torch.addmm(eye, X.t(), X, beta=self.eps, alpha=1.0 / X.shape[0])
            deconv = reference_isqrt_newton_schulz(cov, self.n_iter)
            with torch.no_grad():
                self.running_mean.mul_(1 - self.momentum).add_(X_mean.detach() * self.momentum)
                self.running_deconv.mul_(1 - self.momentum).add_(deconv.detach() * self.momentum)
        else:
            X_mean = self.running_mean
            deconv = self.running_deconv
        w = self.weight.reshape(-1, self.block) @ deconv
        shift = (w @ X_mean.unsqueeze(1)).view(self.out_features, -1).sum(1)
        b = -shift if self.bias is None else self.bias - shift
        return F.linear(x, w.view(self.weight.shape), b)


# --------------------------------------------------------------------------------------
# Swapping layers of a model
# --------------------------------------------------------------------------------------
def _conv_to_reference(layer: nd_layers.FastDeconv) -> ReferenceFastDeconv:
    if layer.grouping != "interleaved":
        raise ValueError(f"{layer}: the public code has only grouping='interleaved'; cannot make a reference copy")
    ref = ReferenceFastDeconv(
        layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
        layer.dilation, layer.groups, layer.bias is not None,
        block=layer.requested_block, eps=layer.eps, n_iter=layer.n_iter, momentum=layer.momentum,
        sampling_stride=layer.sampling_stride, freeze=layer.freeze, freeze_iter=layer.freeze_iter,
        device=layer.weight.device, dtype=layer.weight.dtype,
    )
    _copy_common(layer, ref)
    ref.counter = int(layer.num_batches_tracked) % (10 * layer.freeze_iter)
    ref.train(layer.training)
    return ref


def _conv_from_reference(ref: ReferenceFastDeconv) -> nd_layers.FastDeconv:
    layer = nd_layers.FastDeconv(
        ref.in_channels, ref.out_channels, ref.kernel_size, ref.stride, ref.padding,
        ref.dilation, ref.groups, ref.bias is not None,
        block=ref.block, eps=ref.eps, n_iter=ref.n_iter, momentum=ref.momentum,
        sampling_stride=ref.sampling_stride // ref.stride[0], freeze=ref.freeze,
        freeze_iter=ref.freeze_iter, device=ref.weight.device, dtype=ref.weight.dtype,
    )
    _copy_common(ref, layer)
    layer.num_batches_tracked.fill_(ref.counter)
    layer.train(ref.training)
    return layer


def _linear_to_reference(layer: nd_layers.Delinear) -> ReferenceDelinear:
    ref = ReferenceDelinear(
        layer.in_features, layer.out_features, layer.bias is not None,
        block=layer.requested_block, eps=layer.eps, n_iter=layer.n_iter, momentum=layer.momentum,
        device=layer.weight.device, dtype=layer.weight.dtype,
    )
    _copy_common(layer, ref)
    ref.train(layer.training)
    return ref


def _linear_from_reference(ref: ReferenceDelinear) -> nd_layers.Delinear:
    layer = nd_layers.Delinear(
        ref.in_features, ref.out_features, ref.bias is not None,
        block=ref.block, eps=ref.eps, n_iter=ref.n_iter, momentum=ref.momentum,
        device=ref.weight.device, dtype=ref.weight.dtype,
    )
    _copy_common(ref, layer)
    layer.train(ref.training)
    return layer


def _copy_common(src: nn.Module, dst: nn.Module) -> None:
    """Copy weight, bias, running mean and running D (same shapes in both implementations)."""
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean", "running_deconv"):
            source = getattr(src, name)
            if source is None:
                continue
            target = getattr(dst, name)
            if target.shape != source.shape:
                raise ValueError(f"cannot copy {name}: shape {tuple(source.shape)} != {tuple(target.shape)}")
            target.copy_(source)
    dst.weight.requires_grad_(src.weight.requires_grad)


# exact type -> converter (subclasses are not converted silently)
_TO_REFERENCE = {nd_layers.FastDeconv: _conv_to_reference, nd_layers.Delinear: _linear_to_reference}
_FROM_REFERENCE = {ReferenceFastDeconv: _conv_from_reference, ReferenceDelinear: _linear_from_reference}


def _swap(model: nn.Module, converters: dict, inplace: bool) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module, got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    if type(model) in converters:
        return converters[type(model)](model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            convert = converters.get(type(child))
            if convert is not None:
                setattr(parent, name, convert(child))
    return model


def to_reference(model: nn.Module, inplace: bool = False) -> nn.Module:
    """``model`` with every ``FastDeconv``/``Delinear`` replaced by the reference layer.

    Weights, biases, ``running_mean`` and ``running_deconv`` are copied, the freezing counter
    is set from ``num_batches_tracked``; a copy is made unless ``inplace``.
    """
    return _swap(model, _TO_REFERENCE, inplace)


def from_reference(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Inverse of :func:`to_reference`: reference layers back to :mod:`ndlib.layers` ones."""
    return _swap(model, _FROM_REFERENCE, inplace)


def count_reference_layers(model: nn.Module) -> int:
    """How many reference layers ``model`` holds (the benchmark records it)."""
    return sum(isinstance(m, (ReferenceFastDeconv, ReferenceDelinear)) for m in model.modules())
