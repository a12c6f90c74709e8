"""Helpers that explain and measure the whitening math (chapter 2 of the book).

Nothing here is used by the layers themselves: :mod:`ndlib.layers` holds the layer code.
This module holds the small, testable pieces the book's derivations need:

* :func:`load_photographs` -- real photographs bundled with scikit-image (offline);
* :func:`shift_correlation`, :func:`channel_correlation` -- how correlated natural images are;
* :func:`patch_covariance` -- mean and covariance of all ``C*k*k`` im2col features;
* :func:`inverse_sqrt_eigh` -- the exact ZCA matrix ``Cov^(-1/2)`` by an eigendecomposition;
* :func:`newton_schulz_gain` -- the closed-form per-eigenvalue response of Newton-Schulz;
* :func:`whiteness_error`, :func:`relative_error`, :func:`spd_with_condition` -- convergence
  measurements (the last one builds a *synthetic* matrix and says so);
* :func:`deconv_kernel`, :func:`block_assignment` -- pictures of the whitening;
* :func:`deconv_flops`, :func:`model_deconv_flops` -- the cost model of a deconvolution layer
  beside its convolution (also used by the timing chapter);
* :func:`bf16_whitening_errors` -- how far ndlib's and the public algorithm's whitening move under
  bfloat16 autocast (the timing chapter, ``tools/bf16_whitening_error.py``).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ndlib._validate import positive_int
from ndlib.layers import Delinear, FastDeconv, effective_block
from ndlib.patches import group_features, sample_patches

__all__ = [
    "PHOTOGRAPHS",
    "load_photographs",
    "shift_correlation",
    "channel_correlation",
    "patch_covariance",
    "inverse_sqrt_eigh",
    "newton_schulz_gain",
    "newton_schulz_matmuls",
    "whiteness_error",
    "relative_error",
    "spd_with_condition",
    "deconv_kernel",
    "block_assignment",
    "deconv_flops",
    "model_deconv_flops",
    "one_step_whitening",
    "bf16_whitening_errors",
]

#: Colour photographs bundled with scikit-image (they load without a network).
PHOTOGRAPHS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")


def _check_square(name: str, A: torch.Tensor) -> None:
    if not isinstance(A, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(A).__name__}")
    if A.dim() < 2 or A.shape[-1] != A.shape[-2]:
        raise ValueError(f"{name} must be square (..., n, n), got shape {tuple(A.shape)}")


# --------------------------------------------------------------------------------------
# Photographs and their correlation
# --------------------------------------------------------------------------------------
def load_photographs(names: tuple[str, ...] = PHOTOGRAPHS[:3], size: int = 128) -> torch.Tensor:
    """Bundled scikit-image photographs as a float64 batch ``(N, 3, size, size)`` in ``[0, 1]``.

    Each photo is centre-cropped to a square and resized with antialiasing.  scikit-image
    ships these files inside the package, so no download happens.
    """
    size = positive_int("size", size)
    unknown = [name for name in names if name not in PHOTOGRAPHS]
    if unknown or not names:
        raise ValueError(f"unknown photograph(s) {unknown or names!r}; choose from {PHOTOGRAPHS}")
    try:
        import skimage.data
    except ImportError as error:  # pragma: no cover - dev dependency
        raise ImportError("load_photographs needs scikit-image: pip install -e '.[dev]'") from error
    batch = []
    for name in names:
        image = np.asarray(getattr(skimage.data, name)(), dtype=np.float64) / 255.0
        h, w = image.shape[:2]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        square = torch.from_numpy(image[top : top + side, left : left + side, :3].copy())
        square = square.permute(2, 0, 1).unsqueeze(0)
        batch.append(F.interpolate(square, size=(size, size), mode="bilinear", antialias=True, align_corners=False))
    return torch.cat(batch).clamp_(0.0, 1.0)


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")


def shift_correlation(images: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Pearson correlation of a pixel with the pixel ``d`` columns to its right, per channel.

    ``rho_c(d) = Cov(x_c[i, j], x_c[i, j + d]) / sqrt(Var(x_c[i, j]) Var(x_c[i, j + d]))``,
    pooled over images and rows.  Returns ``(max_shift + 1, C)``; row 0 is 1.
    """
    _check_images(images)
    max_shift = positive_int("max_shift", max_shift)
    if max_shift >= images.shape[-1]:
        raise ValueError(f"max_shift={max_shift} must be smaller than the image width {images.shape[-1]}")
    rows = []
    for d in range(max_shift + 1):
        a = images[..., : images.shape[-1] - d].transpose(0, 1).reshape(images.shape[1], -1)
        b = images[..., d:].transpose(0, 1).reshape(images.shape[1], -1)
        a = a - a.mean(dim=1, keepdim=True)
        b = b - b.mean(dim=1, keepdim=True)
        rows.append((a * b).sum(1) / torch.sqrt((a * a).sum(1) * (b * b).sum(1)))
    return torch.stack(rows)


def channel_correlation(images: torch.Tensor) -> torch.Tensor:
    """``C x C`` Pearson correlation between the colour channels at the same pixel."""
    _check_images(images)
    return torch.corrcoef(images.transpose(0, 1).reshape(images.shape[1], -1))


# --------------------------------------------------------------------------------------
# Covariance, exact inverse square root, Newton-Schulz analysis
# --------------------------------------------------------------------------------------
def patch_covariance(
    x: torch.Tensor, kernel_size: int, sampling_stride: int = 1, eps: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of all ``C*k*k`` features of the ``k x k`` patches (one block).

    Uses the layer's own :func:`ndlib.patches.sample_patches` with zero padding ``k // 2``,
    so the patch grid and the feature order (channel, ky, kx) are exactly the layer's.
    ``Cov = (X - mu)^T (X - mu) / rows + eps I``.
    """
    _check_images(x)
    k = positive_int("kernel_size", kernel_size)
    s = positive_int("sampling_stride", sampling_stride)
    X = sample_patches(x, (k, k), (k // 2, k // 2), (1, 1), s)
    mean = X.mean(dim=0)
    Xc = X - mean
    cov = Xc.T @ Xc / X.shape[0] + eps * torch.eye(X.shape[1], dtype=X.dtype, device=X.device)
    return mean, cov


def inverse_sqrt_eigh(cov: torch.Tensor) -> torch.Tensor:
    """ZCA whitening matrix ``Cov^(-1/2) = U diag(lambda^(-1/2)) U^T`` via ``torch.linalg.eigh``.

    Raises if ``cov`` is not positive definite (an eigenvalue ``<= 0``): add a ridge ``eps I``.
    """
    _check_square("cov", cov)
    eigenvalues, U = torch.linalg.eigh(cov)
    if not bool((eigenvalues > 0).all()):
        raise ValueError(
            f"cov is not positive definite (smallest eigenvalue {float(eigenvalues.min()):.3g}); "
            "add a ridge eps * I before taking the inverse square root"
        )
    return (U * eigenvalues.rsqrt().unsqueeze(-2)) @ U.transpose(-1, -2)


def newton_schulz_gain(normalized_eigenvalue, n_iter: int):
    """Closed-form response of coupled Newton-Schulz to one eigenvalue.

    All iterates are polynomials in ``A``, so they share its eigenvectors and the iteration
    acts on each normalised eigenvalue ``l = lambda / ||A||_F`` separately: ``y = l z`` and
    ``p = z y`` obeys ``p <- p (3 - p)^2 / 4`` from ``p0 = l``.  After ``n_iter`` steps
    ``z = sqrt(p / l)`` while the exact value is ``1 / sqrt(l)``, so ``p`` is both the squared
    ratio ``(z / z_exact)^2`` and the variance that direction has after whitening (1 is
    perfect).  For small ``l``, ``p`` grows only by ``9/4`` per step.
    Accepts a float, a NumPy array or a tensor; returns the same kind.
    """
    n_iter = positive_int("n_iter", n_iter)
    p = normalized_eigenvalue
    for _ in range(n_iter):
        p = p * (3 - p) ** 2 / 4
    return p


def newton_schulz_matmuls(n_iter: int) -> int:
    """Matrix products of :func:`ndlib.isqrt.isqrt_newton_schulz` for ``n_iter`` steps.

    The textbook loop takes three per step (``ZY``, ``YT``, ``TZ``); the first step has
    ``Z = I`` (no ``ZY``, no ``TZ``) and the last ``YT`` is unused, so ``3 n - 3`` for
    ``n >= 2`` and 0 for ``n = 1``.
    """
    n_iter = positive_int("n_iter", n_iter)
    return 0 if n_iter == 1 else 3 * n_iter - 3


def whiteness_error(deconv: torch.Tensor, cov: torch.Tensor) -> float:
    """RMS distance of the whitened covariance from the identity: ``||D C D^T - I||_F / sqrt(n)``.

    0 for exact whitening; 1 for a ``D`` that removes all variance (``D = 0``).
    """
    _check_square("deconv", deconv)
    _check_square("cov", cov)
    n = cov.shape[-1]
    eye = torch.eye(n, dtype=cov.dtype, device=cov.device)
    residual = deconv @ cov @ deconv.transpose(-1, -2) - eye
    return float(torch.linalg.matrix_norm(residual) / math.sqrt(n))


def relative_error(approx: torch.Tensor, exact: torch.Tensor) -> float:
    """``||approx - exact||_F / ||exact||_F``."""
    if approx.shape != exact.shape:
        raise ValueError(f"shapes differ: {tuple(approx.shape)} vs {tuple(exact.shape)}")
    return float(torch.linalg.norm(approx - exact) / torch.linalg.norm(exact))


def spd_with_condition(n: int, condition: float, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    """A SYNTHETIC symmetric positive definite ``n x n`` matrix with a given condition number.

    Eigenvalues log-spaced from 1 down to ``1 / condition``, eigenvectors a random rotation
    (QR of a Gaussian matrix from ``seed``).  Used to measure Newton-Schulz convergence
    against a known spectrum; it is not data.
    """
    n = positive_int("n", n)
    condition = float(condition)
    if not (condition >= 1 and math.isfinite(condition)):
        raise ValueError(f"condition must be a finite number >= 1, got {condition}")
    generator = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    eigenvalues = torch.logspace(0, -math.log10(condition), n, dtype=torch.float64)
    A = (Q * eigenvalues) @ Q.T
    return (0.5 * (A + A.T)).to(dtype)


# --------------------------------------------------------------------------------------
# Pictures
# --------------------------------------------------------------------------------------
def deconv_kernel(deconv: torch.Tensor, channels: int, kernel_size: int) -> torch.Tensor:
    """The deconvolution kernel: how the centre feature of each channel is built from the patch.

    The whitened value of feature ``f`` is ``sum_g D[f, g] (x_g - mu_g)``.  For the centre
    pixel of channel ``c`` the row ``D[c*k*k + centre]`` reshaped to ``(C, k, k)`` is a
    convolution kernel; applying it everywhere whitens the image.  Returns
    ``(C_out=C, C_in=C, k, k)``, a conv2d weight.
    """
    _check_square("deconv", deconv)
    channels = positive_int("channels", channels)
    k = positive_int("kernel_size", kernel_size)
    if deconv.shape[-1] != channels * k * k:
        raise ValueError(
            f"deconv is {deconv.shape[-1]}x{deconv.shape[-1]} but channels * kernel_size^2 = {channels * k * k}"
        )
    centre = (k // 2) * k + k // 2
    rows = deconv[[c * k * k + centre for c in range(channels)]]
    return rows.reshape(channels, channels, k, k)


def block_assignment(channels: int, kernel_size: int, block: int, grouping: str = "interleaved") -> torch.Tensor:
    """Which whitening block each patch feature belongs to: ``(C, k*k)`` integer map.

    Built by running the layer's own :func:`ndlib.patches.group_features` on the feature
    indices, with the block size from :func:`ndlib.layers.effective_block`.
    """
    k = positive_int("kernel_size", kernel_size)
    B = effective_block(channels, block)
    G = channels // B
    index = torch.arange(channels * k * k)
    grouped = group_features(index.unsqueeze(0), G, grouping)[0]  # (G, B*k*k): feature ids per block
    owner = torch.empty_like(index)
    for g in range(G):
        owner[grouped[g]] = g
    return owner.reshape(channels, k * k)


# --------------------------------------------------------------------------------------
# Cost model
# --------------------------------------------------------------------------------------
def deconv_flops(
    C_in: int,
    C_out: int,
    k: int,
    H: int,
    W: int,
    batch: int,
    block: int = 64,
    sampling_stride: int = 3,
    n_iter: int = 5,
    conv_stride: int = 1,
    groups: int = 1,
) -> dict[str, float]:
    """FLOPs of one training step's forward pass of a deconvolution layer, stage by stage.

    The layer is a ``k x k`` conv with zero padding ``k // 2`` on an ``H x W`` input of
    ``batch`` images.  A multiply-add counts 2 FLOPs, and a product ``(m x n)(n x p)``
    costs ``2 m n p`` (what ``torch.utils.flop_counter`` counts too).  With
    ``B = effective_block(C_in, block, groups)``, ``F = B k^2`` features per covariance and
    ``P = batch * ceil(H / t) * ceil(W / t)`` sampled positions at ``t = sampling_stride *
    conv_stride`` (for ``k = 1``: ``ceil(batch H W / t^2)`` pixel vectors):

    * ``conv``: ``2 * batch * H_out * W_out * C_out * (C_in / groups) * k^2``;
    * ``center``: ``2 R F`` per covariance (column sums and subtraction), ``R`` rows;
    * ``covariance``: ``2 R F^2`` per covariance (``X^T X``);
    * ``newton_schulz``: ``(3 n_iter - 3) * 2 F^3`` per covariance (see
      :func:`newton_schulz_matmuls`);
    * ``fold``: ``W' = W D``: ``2 C_out (C_in / B) F^2`` for ``groups == 1`` (one covariance,
      ``R = P * C_in / B`` stacked rows), else ``2 (C_out / groups) F^2`` per group;
    * ``bias_shift``: ``b' = b - W' mu``, the same with ``F`` for ``F^2``.

    Returned keys: those six stages, ``overhead`` (the five whitening stages, training),
    ``eval_overhead`` (fold and bias shift: evaluation uses running statistics) and
    ``overhead_ratio`` (``overhead / conv``).
    """
    C_in = positive_int("C_in", C_in)
    C_out = positive_int("C_out", C_out)
    k = positive_int("k", k)
    H, W = positive_int("H", H), positive_int("W", W)
    batch = positive_int("batch", batch)
    sampling_stride = positive_int("sampling_stride", sampling_stride)
    n_iter = positive_int("n_iter", n_iter)
    conv_stride = positive_int("conv_stride", conv_stride)
    groups = positive_int("groups", groups)
    if C_in % groups or C_out % groups:
        raise ValueError(f"C_in={C_in} and C_out={C_out} must both be divisible by groups={groups}")
    B = effective_block(C_in, block, groups)
    features = B * k * k
    t = sampling_stride * conv_stride
    if k == 1:  # pixel vectors: every t^2-th of all batch*H*W pixels, in (N, H, W) order
        positions = math.ceil(batch * H * W / t**2)
    else:  # the k x k patches on a grid of stride t
        positions = batch * math.ceil(H / t) * math.ceil(W / t)
    if groups == 1:
        num_cov, rows, out_rows = 1, positions * (C_in // B), C_out * (C_in // B)
    else:
        num_cov, rows, out_rows = groups, positions, C_out // groups
    H_out, W_out = math.ceil(H / conv_stride), math.ceil(W / conv_stride)
    stages = {
        "conv": 2.0 * batch * H_out * W_out * C_out * (C_in // groups) * k * k,
        "center": 2.0 * num_cov * rows * features,
        "covariance": 2.0 * num_cov * rows * features**2,
        "newton_schulz": 2.0 * num_cov * newton_schulz_matmuls(n_iter) * features**3,
        "fold": 2.0 * num_cov * out_rows * features**2,
        "bias_shift": 2.0 * num_cov * out_rows * features,
    }
    whitening = ("center", "covariance", "newton_schulz", "fold", "bias_shift")
    stages["overhead"] = sum(stages[stage] for stage in whitening)
    stages["eval_overhead"] = stages["fold"] + stages["bias_shift"]
    stages["overhead_ratio"] = stages["overhead"] / stages["conv"]
    return stages


def model_deconv_flops(model: nn.Module, input_shape: tuple[int, ...], include_linear: bool = False) -> pd.DataFrame:
    """:func:`deconv_flops` for every :class:`FastDeconv` layer of ``model``, one row each.

    The input size of each layer is read with forward hooks during one evaluation-mode pass
    of one image of zeros of size ``input_shape[1:]``, so the model's buffers are not touched;
    the FLOPs are those of a batch of ``input_shape[0]`` images.  Only convs with padding
    ``k // 2`` and dilation 1 are modelled; others raise.

    ``include_linear=True`` adds a row (``kind == "linear"``) for every :class:`Delinear`: a
    decorrelated linear layer is the ``k = 1``, ``H = W = 1`` case with every row sampled
    (``sampling_stride = 1``), and its ``conv`` entry is the matrix product of the layer.
    The FLOPs are those of the matmul route of Newton-Schulz (what a GPU runs); a CPU may
    evaluate the same polynomial through an eigendecomposition instead (``isqrt_method``).
    """
    if len(input_shape) != 4:
        raise ValueError(f"input_shape must be (batch, C, H, W), got {input_shape}")
    batch = positive_int("batch (input_shape[0])", input_shape[0])
    kinds = (FastDeconv, Delinear) if include_linear else (FastDeconv,)
    seen: list[tuple[str, nn.Module, tuple[int, ...]]] = []
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, kinds):
            hooks.append(module.register_forward_pre_hook(
                lambda mod, args, name=name: seen.append((name, mod, tuple(args[0].shape)))
            ))
    if not any(isinstance(module, FastDeconv) for module in model.modules()):
        for hook in hooks:
            hook.remove()
        raise ValueError("the model has no FastDeconv layer (build it with norm='nd')")
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *input_shape[1:])))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    rows = []
    for name, layer, shape in seen:
        if isinstance(layer, Delinear):
            stages = deconv_flops(layer.in_features, layer.out_features, 1, 1, 1, batch, block=layer.requested_block,
                                  sampling_stride=1, n_iter=layer.n_iter)
            rows.append({"layer": name, "kind": "linear", "C_in": layer.in_features, "C_out": layer.out_features,
                         "k": 1, "H": 1, "W": 1, "groups": 1, "block": layer.block, **stages})
            continue
        k = layer.kernel_size[0]
        if layer.padding != (k // 2, k // 2) or layer.dilation != (1, 1):
            raise ValueError(
                f"{name}: only padding k//2 and dilation 1 are modelled, got {layer.padding}, {layer.dilation}"
            )
        stages = deconv_flops(
            layer.in_channels, layer.out_channels, k, shape[2], shape[3], batch, block=layer.requested_block,
            sampling_stride=layer.sampling_stride, n_iter=layer.n_iter, conv_stride=layer.stride[0],
            groups=layer.groups,
        )
        rows.append({"layer": name, "kind": "conv", "C_in": layer.in_channels, "C_out": layer.out_channels, "k": k,
                     "H": shape[2], "W": shape[3], "groups": layer.groups, "block": layer.block, **stages})
    return pd.DataFrame(rows)


def one_step_whitening(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The batch whitening matrix a deconvolution layer estimates in one training step, in float64.

    The running buffer starts at ``I`` and moves ``momentum`` of the way to the batch estimate,
    so the estimate is read back from it: ``(running - (1 - momentum) I) / momentum``."""
    layer.train()
    layer(x)
    eye = torch.eye(layer.running_deconv.shape[-1], dtype=torch.float64)
    return (layer.running_deconv.double() - (1 - layer.momentum) * eye) / layer.momentum


def bf16_whitening_errors(batch_size: int = 128, channels: int = 64, size: int = 32, seed: int = 0) -> dict[str, float]:
    """The relative error (Frobenius) of the whitening matrix one bf16-autocast training step
    estimates, against the same step in float64, for the public algorithm (``"public"``,
    :class:`ndlib._reference.ReferenceFastDeconv`) and ndlib (``"ndlib"``), on one 3x3 layer.

    The public code has no autocast handling, so its covariance and Newton-Schulz products are
    autocast ops and run in bf16 (8 mantissa bits); ndlib turns autocast off for its statistics
    and computes them in float32.  The input is SYNTHETIC: Gaussian channels of unequal scale
    (0.2 to 3), each mixed with its neighbour, so the covariance is neither white nor diagonal."""
    from ndlib._reference import ReferenceFastDeconv

    positive_int("batch_size", batch_size)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, channels, size, size, generator=generator)
    x = x * torch.linspace(0.2, 3.0, channels).view(1, channels, 1, 1)
    x = x + 0.5 * x.roll(1, dims=1)
    errors = {}
    for name, cls in (("public", ReferenceFastDeconv), ("ndlib", FastDeconv)):
        torch.manual_seed(seed + 1)
        exact = one_step_whitening(cls(channels, channels, 3, padding=1).double(), x.double())
        torch.manual_seed(seed + 1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast = one_step_whitening(cls(channels, channels, 3, padding=1), x.to(torch.bfloat16))
        errors[name] = relative_error(fast, exact)
    return errors
