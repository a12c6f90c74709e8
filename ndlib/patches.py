"""Which rows and features a deconvolution layer's statistics see: its sampled input patches.

A :class:`~ndlib.layers.FastDeconv` layer whitens the ``k x k`` patches its convolution reads.
Its statistics use the patches at stride ``sampling_stride * stride`` (every
``sampling_stride**2``-th pixel for a 1x1 kernel), their features ordered ``(channel, ky, kx)``
as ``conv2d``'s weight orders them, split into blocks of ``B*k*k`` features
(:func:`group_features`; a grouped conv: one block per group).  :func:`sample_patches` and
:func:`group_features` say what the matrix is, in the plainest way; :func:`stacked_patches`
builds the same matrix the way the layer does, in as few copies as the input's kernel, grouping
and memory layout allow (each route measured in its docstring), and :func:`_layer_patches` is
what the layer itself uses (the matrix, transposed or with its features permuted where that is
cheaper, and how to read it).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from ndlib.layers import FastDeconv

__all__ = ["GROUPINGS", "sample_patches", "group_features", "ungroup_features", "stacked_patches"]

#: How the features of a patch are split into whitening blocks (:func:`group_features`).
GROUPINGS = ("interleaved", "contiguous")


def sample_patches(
    x: torch.Tensor,
    kernel_size: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    sampling_stride: int,
) -> torch.Tensor:
    """im2col on a sub-grid: the ``k x k`` patches of ``x`` at stride ``sampling_stride``.

    Returns ``(rows, C*k*k)`` with features ordered ``(channel, ky, kx)``, as ``F.unfold``
    and ``conv2d``'s weight order them.  For a 1x1 kernel the patch is a pixel's channel
    vector and every ``sampling_stride**2``-th pixel (in ``N, H, W`` order) is kept, as in the
    public code.
    """
    N, C, H, W = x.shape
    if kernel_size == (1, 1):
        return x.permute(0, 2, 3, 1).reshape(-1, C)[:: sampling_stride**2]
    cols = F.unfold(x, kernel_size, dilation=dilation, padding=padding, stride=sampling_stride)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def group_features(X: torch.Tensor, num_groups: int, grouping: str = "interleaved") -> torch.Tensor:
    """Split the feature axis of ``X`` (``..., F``) into ``num_groups`` blocks: ``(..., G, F/G)``.

    ``interleaved`` (the public code): block ``g`` holds features ``g, g+G, g+2G, ...``.
    ``contiguous``: block ``g`` holds features ``[g*F/G, (g+1)*F/G)``.
    The same function groups the conv weight's input axis, so data and weight always agree.
    """
    *lead, F_ = X.shape
    per_group = F_ // num_groups
    if grouping == "interleaved":
        return X.reshape(*lead, per_group, num_groups).transpose(-1, -2)
    if grouping == "contiguous":
        return X.reshape(*lead, num_groups, per_group)
    raise ValueError(f"grouping must be one of {GROUPINGS}, got {grouping!r}")


def ungroup_features(Xg: torch.Tensor, grouping: str = "interleaved") -> torch.Tensor:
    """Inverse of :func:`group_features`: ``(..., G, F/G)`` back to ``(..., F)``."""
    *lead, G, per_group = Xg.shape
    if grouping == "interleaved":
        return Xg.transpose(-1, -2).reshape(*lead, G * per_group)
    if grouping == "contiguous":
        return Xg.reshape(*lead, G * per_group)
    raise ValueError(f"grouping must be one of {GROUPINGS}, got {grouping!r}")


def stacked_patches(layer: "FastDeconv", x: torch.Tensor) -> torch.Tensor:
    """The matrix the statistics of ``layer`` are computed from, in as few copies as possible.

    Same rows and features as :func:`sample_patches` followed by :func:`group_features`
    (``groups == 1``: ``(rows * G, B*k*k)``, the blocks stacked; ``groups > 1``:
    ``(groups, rows, B*k*k)``), but
    * k x k kernels: ``F.unfold`` gives ``(N, C*k*k, L)`` and ONE permuting copy puts it in
      the stacked layout (instead of a transpose copy and a grouping copy).  For grouped convs
      the copy writes ``(groups, B*k*k, rows)`` ("feature-major": the copy runs along ``L``,
      contiguous in both tensors, instead of along the ``k*k`` features) and the matrix
      returned is its transposed view (same values; see :func:`_patch_matrix`);
    * 1x1 kernels: every ``s^2``-th pixel (in ``N, H, W`` order) is picked by indexing BEFORE
      any permute, so only ``1/s^2`` of the feature map is touched; from a channels-last input
      the picked pixels are rows of its memory, so the matrix is a strided view and its
      gradient a strided copy into a channels-last zero tensor (the gather's backward, an
      accumulating scatter into a contiguous tensor, was 0.27 s against 0.03 s for a
      ``(128, 256, 32, 32)`` channels-last input, forward + backward, 1 thread, under load), and
      the gradient keeps the input's layout;
    * kernels at least twice as wide as the sampling stride (7x7 at stride 3: each pixel lies
      in ~5 sampled patches): the patches are a strided VIEW of the padded input
      (``Tensor.unfold`` twice) and ONE copy writes them in the stacked layout (two for the
      interleaved grouping with several blocks), instead of ``F.unfold`` materialising the
      ``(N, C*k*k, L)`` columns first; the gradient goes through ``unfold``'s own backward.
      Measured on PNASNet's 7x7 depthwise layers (batch 128, 1 thread): forward + backward
      0.53x (32x32 maps) and 0.69x (16x16) of the ``F.unfold`` route; for 3x3 and 5x5 kernels
      the view route was not faster (1.2x and 1.0x), so they keep ``F.unfold``;
    * one-block, ungrouped k x k layers fed a channels-last input: the same kind of window view,
      of the input's own channels-last memory, copied with the features in ``(ky, kx, channel)``
      order (runs of ``C`` contiguous values), which the layer's statistics permute back
      (:func:`_patches_channels_last`); here the columns are gathered into the standard order.
    """
    X, features_first = _patch_matrix(layer, x)
    return X.mT if features_first else X


def _patch_matrix(layer: "FastDeconv", x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """:func:`_layer_patches` with the features in the standard order (a column gather where the
    layer's own matrix has them in another)."""
    X, features_first, order = _layer_patches(layer, x)
    return (X if order is None else X[:, order]), features_first


def _channels_last_order(channels: int, kernel_positions: int, device: torch.device) -> torch.Tensor:
    """``order`` with ``X[:, order]`` the ``(channel, ky, kx)`` features of a matrix ``X`` whose
    features run ``(ky, kx, channel)``: feature ``c * k*k + t`` is column ``t * C + c``."""
    c = torch.arange(channels, device=device).unsqueeze(1)
    t = torch.arange(kernel_positions, device=device).unsqueeze(0)
    return (t * channels + c).reshape(-1)


def _patches_channels_last(layer: "FastDeconv", x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(X', order)``: the patch matrix of a one-block, ungrouped k x k layer from a channels-last
    ``x`` with its features in ``(ky, kx, channel)`` order, and the :func:`_channels_last_order`
    that puts them in the standard ``(channel, ky, kx)`` order.

    In channels-last memory a pixel's channels are adjacent, so the copy that writes ``X'`` from
    the strided window view moves runs of ``C`` values, where ``F.unfold`` first makes the input
    contiguous (a copy of the whole map) and its ``col2im`` backward hands a contiguous gradient
    to a channels-last graph.  Rows are in the ``F.unfold`` route's ``(n, l)`` order, so the
    covariance of ``X'`` is the standard one with rows and columns permuted by ``order``, and so
    is its inverse square root (the caller permutes both back).  Measured (patches forward +
    backward, batch 128, 1 thread, beside two training lanes): 64 channels at 32x32 0.10-0.13 s
    against 0.19-0.24 s for ``F.unfold``."""
    N, C = x.shape[:2]
    kh, kw = layer.kernel_size
    (ph, pw), (dh, dw), s = layer.padding, layer.dilation, layer.statistics_stride
    if ph or pw:
        x = F.pad(x, (pw, pw, ph, ph))
    pixels = x.permute(0, 2, 3, 1)  # (N, H, W, C): a view of channels-last memory, channels contiguous
    windows = pixels.unfold(1, dh * (kh - 1) + 1, s).unfold(2, dw * (kw - 1) + 1, s)  # (N, Lh, Lw, C, sy, sx)
    if dh > 1 or dw > 1:
        windows = windows[..., ::dh, ::dw]
    X = windows.permute(0, 1, 2, 4, 5, 3).reshape(-1, kh * kw * C)  # ONE copy, runs of C values
    return X, _channels_last_order(C, kh * kw, x.device)


def _layer_patches(layer: "FastDeconv", x: torch.Tensor) -> tuple[torch.Tensor, bool, torch.Tensor | None]:
    """The patch matrix of :func:`stacked_patches` as the layer computes with it:
    ``(X, False, order)`` with ``X`` the ``(..., rows, F)`` matrix, or ``(Xt, True, None)`` with
    ``Xt`` its transpose ``(..., F, rows)``, contiguous ("feature-major", grouped k x k convs on
    the ``F.unfold`` route).  ``order`` is None when the features are in the standard order, else
    the permutation that puts them there (``X[:, order]``; one-block k x k layers fed a
    channels-last input, :func:`_patches_channels_last`).  Feature-major, the covariance is
    ``Xt Xt^T`` and its backward ``S Xt``, and the permuting copies (forward and backward) move
    runs of ``L`` contiguous values.  Measured
    (patches + covariance, forward + backward, batch 128, 1 / 2 threads): 3x3 depthwise 144
    channels at 32x32 0.80 / 0.92, 480 channels at 4x4 0.66 / 0.84; ResNeXt's grouped 3x3
    (32 groups) 0.94 / 0.97 at 32x32 and 1.03 / 1.01 at 16x16.  For ``groups == 1`` it was
    not faster (0.95 to 1.04), so those keep the row-major matrix.
    """
    N, C, H, W = x.shape
    s = layer.statistics_stride
    nf, G = layer.num_features, layer.num_blocks
    if layer.kernel_size == (1, 1):
        if _is_channels_last(x):  # the pixels are rows of x's own memory: a strided view, no gather
            X = x.permute(0, 2, 3, 1).reshape(N * H * W, C)[:: s * s]
        else:
            picked = torch.arange(0, N * H * W, s * s, device=x.device)
            image, pixel = picked // (H * W), picked % (H * W)
            X = x[image, :, pixel // W, pixel % W]  # (rows, C)
        if layer.groups > 1:
            return X.reshape(-1, layer.groups, nf).transpose(0, 1).contiguous(), False, None
        return group_features(X, G, layer.grouping).reshape(-1, nf), False, None
    if layer.kernel_size[0] >= 2 * s:
        return _stacked_patches_from_windows(layer, x), False, None
    if layer.groups == 1 and G == 1 and _is_channels_last(x):
        X, order = _patches_channels_last(layer, x)  # features (ky, kx, channel)
        return X, False, order
    cols = F.unfold(x, layer.kernel_size, dilation=layer.dilation, padding=layer.padding, stride=s)
    L = cols.shape[-1]
    if layer.groups > 1:  # feature-major (groups, nf, N*L), rows in (n, l) order as stacked_patches
        return cols.view(N, layer.groups, nf, L).permute(1, 2, 0, 3).reshape(layer.groups, nf, N * L), True, None
    if layer.grouping == "interleaved":  # feature f = j * G + g
        return cols.view(N, nf, G, L).permute(0, 3, 2, 1).reshape(-1, nf), False, None
    return cols.view(N, G, nf, L).permute(0, 3, 1, 2).reshape(-1, nf), False, None  # f = g * nf + j


def _is_channels_last(x: torch.Tensor) -> bool:
    """Whether ``x`` (N, C, H, W) is stored channels-last (and is not also plain contiguous, as
    a tensor with one channel or one pixel is)."""
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def _stacked_patches_from_windows(layer: "FastDeconv", x: torch.Tensor) -> torch.Tensor:
    """:func:`stacked_patches` for a k x k kernel from a strided view of the padded input."""
    N, C = x.shape[:2]
    k = layer.kernel_size[0]
    (ph, pw), (dh, dw), s = layer.padding, layer.dilation, layer.statistics_stride
    if ph or pw:
        x = F.pad(x, (pw, pw, ph, ph))
    windows = x.unfold(2, dh * (k - 1) + 1, s).unfold(3, dw * (k - 1) + 1, s)  # (N, C, Lh, Lw, span, span)
    if dh > 1 or dw > 1:
        windows = windows[..., ::dh, ::dw]
    L = windows.shape[2] * windows.shape[3]
    nf, G = layer.num_features, layer.num_blocks
    if layer.groups > 1:
        g = layer.groups
        per_group = windows.reshape(N, g, C // g, *windows.shape[2:])  # a view: splits the channel axis
        return per_group.permute(1, 0, 3, 4, 2, 5, 6).reshape(g, N * L, nf)
    X = windows.permute(0, 2, 3, 1, 4, 5).reshape(N * L, C * k * k)  # features (channel, ky, kx)
    if G == 1:
        return X
    return group_features(X, G, layer.grouping).reshape(-1, nf)
