"""``Cov^(-1/2)`` for the deconvolution layers: the coupled Newton-Schulz iteration, and two
exact ways to evaluate the same polynomial faster on a CPU.

After normalising, ``Y0 = A / ||A||_F``, ``n_iter`` Newton-Schulz steps compute ``Z = p(Y0)`` for a
fixed polynomial ``p``; the layers use ``D = Z / sqrt(||A||_F)``.  Three routes give that same
function and its exact gradient, up to rounding:

* :func:`isqrt_newton_schulz`, the loop of matrix products (the paper's; fastest on a GPU);
* :func:`isqrt_newton_schulz_spectral`, through one symmetric eigendecomposition
  ``Y0 = U diag(l) U^T`` and ``p(l)`` (several times cheaper on a CPU for 576-feature blocks);
* :func:`isqrt_newton_schulz_lowrank`, the spectral route for a covariance made from fewer rows
  than features, whose eigenvectors come from the rows without an ``n x n`` ``eigh``.

:data:`ISQRT_METHODS` names the choice a layer offers (``isqrt_method``), and
:func:`isqrt_of_rows` is what a layer calls: it picks the route from the method, the device and
the covariance's size and rows (measured crossovers in :func:`_auto_isqrt_method` and
:func:`_uses_lowrank`).
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch.autograd.function import once_differentiable

from ndlib._validate import positive_int

__all__ = [
    "ISQRT_METHODS",
    "SPECTRAL_MIN_SIZE",
    "LOWRANK_MIN_SIZE",
    "LOWRANK_MAX_ROW_FRACTION",
    "isqrt_newton_schulz",
    "isqrt_newton_schulz_spectral",
    "isqrt_newton_schulz_lowrank",
    "isqrt_by_method",
    "isqrt_of_rows",
]

#: How the layers evaluate ``Cov^(-1/2)`` (the same Newton-Schulz polynomial every way):
#: ``"matmul"``, the coupled Newton-Schulz loop (:func:`isqrt_newton_schulz`); ``"spectral"``, through
#: an eigendecomposition (:func:`isqrt_newton_schulz_spectral`) -- and, for a covariance estimated
#: from few sampled rows (:data:`LOWRANK_MAX_ROW_FRACTION` of its features or fewer), through the
#: rows instead of an ``n x n`` ``eigh`` (:func:`isqrt_newton_schulz_lowrank`); ``"auto"``,
#: spectral on the CPU for covariances of at least :data:`SPECTRAL_MIN_SIZE` features when
#: ``n_iter >= 2``, matmul otherwise (GPUs: matmul).
ISQRT_METHODS = ("auto", "matmul", "spectral")

#: "auto" evaluates the Newton-Schulz polynomial spectrally on the CPU for matrices at least
#: this large (measured: below it the plain matmul loop is as fast), and with matmuls elsewhere.
SPECTRAL_MIN_SIZE = 64

#: The spectral route evaluates a covariance of at least this many features that was estimated
#: from at most ``LOWRANK_MAX_ROW_FRACTION`` times as many rows through the rows
#: (:func:`isqrt_newton_schulz_lowrank`); measured crossovers in :func:`_uses_lowrank`.
LOWRANK_MIN_SIZE = 128
LOWRANK_MAX_ROW_FRACTION = 0.4


def isqrt_newton_schulz(A: torch.Tensor, n_iter: int = 5) -> torch.Tensor:
    """Inverse square root of symmetric positive definite matrices by coupled Newton-Schulz.

    With ``Y0 = A / ||A||_F`` and ``Z0 = I`` the iteration

        T = (3 I - Z Y) / 2,   Y <- Y T,   Z <- T Z

    drives ``Y -> (A/||A||_F)^(1/2)`` and ``Z -> (A/||A||_F)^(-1/2)`` quadratically once the
    spectrum is near 1 (dividing by the Frobenius norm puts every eigenvalue in ``(0, 1]``,
    where the iteration converges).  The result is ``Z / sqrt(||A||_F)``.  Only matrix
    products are used, so it is fast on accelerators and differentiable by autograd.

    Two products of the textbook loop are skipped because their value is known: the first
    iteration has ``Z = I`` (so ``T = (3I - Y)/2`` and ``Z = T``), and the last update of
    ``Y`` is never used.  Multiplying by the identity is exact in floating point, so the
    result is bit-for-bit the one of the plain loop.

    Args:
        A: ``(n, n)`` or batched ``(..., n, n)`` SPD matrices.
        n_iter: number of iterations (the paper uses 5; more gives a closer inverse root).
    """
    positive_int("n_iter", n_iter)
    if A.dim() < 2 or A.shape[-1] != A.shape[-2]:
        raise ValueError(f"isqrt_newton_schulz expects square matrices (..., n, n), got shape {tuple(A.shape)}")
    n = A.shape[-1]
    norm = torch.linalg.matrix_norm(A, keepdim=True)  # Frobenius norm per matrix
    Y = A / norm
    eye = torch.eye(n, dtype=A.dtype, device=A.device)
    T = 0.5 * (3.0 * eye - Y)
    Z = T
    if n_iter > 1:
        Y = Y @ T
    for i in range(1, n_iter):
        T = 0.5 * (3.0 * eye - Z @ Y)
        if i < n_iter - 1:
            Y = Y @ T
        Z = T @ Z
    return Z / torch.sqrt(norm)


def _newton_schulz_polynomial(lam: torch.Tensor, n_iter: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The Newton-Schulz map on eigenvalues, and its divided differences.

    For a scalar ``l`` the coupled iteration reads ``t = (3 - z y)/2, y <- y t, z <- t z`` from
    ``y = l, z = 1``; after ``n_iter`` steps ``z = p(l)`` for a polynomial ``p``.  Every iterate
    is a polynomial in ``l`` and ``y_k = l z_k`` (true of the matrices as well: ``Y_k = Y_0 Z_k``,
    all of them polynomials in ``Y_0``), so one recursion suffices: ``z <- z (3 - l z^2) / 2``.
    Alongside, the divided differences ``P[i, j] = (p(l_i) - p(l_j)) / (l_i - l_j)`` (``p'(l_i)``
    on ties) are propagated with the product rule ``D[f g] = D[f] g(b) + f(a) D[g]``, which never
    divides, so close or equal eigenvalues are exact too::

        D[z'] = D[z] (3/2 - l_a (z_a^2 + z_a z_b + z_b^2) / 2) - z_b^3 / 2

    (``a`` the row, ``b`` the column eigenvalue).  The factor is formed in place from vectors,
    two passes over the ``n x n`` grid, and ``D[z]`` updated in place: four passes per iteration
    and no temporary grids.  Computed in float64 (the grid is only ``n x n``).
    """
    n = lam.shape[-1]
    la = lam.unsqueeze(-1)  # (..., n, 1): the row eigenvalue
    divided = torch.full(lam.shape + (n,), -0.5, dtype=lam.dtype, device=lam.device)  # D[z_1]
    z = 1.5 - 0.5 * la  # z_1, from z_0 = 1
    factor = torch.empty_like(divided) if n_iter > 1 else None
    for _ in range(1, n_iter):
        zb = z.mT  # (..., 1, n): the column values
        torch.addcmul(1.5 - 0.5 * la * z * z, -0.5 * la * z, zb, out=factor)  # 3/2 - l_a (z_a^2 + z_a z_b)/2
        factor.addcmul_(-0.5 * la, zb * zb)  # - l_a z_b^2 / 2
        divided.mul_(factor).sub_(0.5 * zb * zb * zb)
        z = z * (1.5 - 0.5 * la * z * z)
    return z.squeeze(-1), divided


@contextlib.contextmanager
def _single_thread(device: torch.device) -> Iterator[None]:
    """Run the block with one CPU thread (no-op on other devices or when already one).

    Used for ``eigh`` and the elementwise work on its eigenvalues.  LAPACK's reduction to
    tridiagonal form is a sequence of ~n matrix-vector steps, each a fork/join across the
    threads; on a machine whose cores are busy with other processes a thread often waits a
    whole scheduler slice at every join.  Measured on the shared 2-core machine: a 576x576
    ``eigh`` took 2 to 15 s with 2 threads and 0.06 to 0.09 s with one.
    """
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class _SpectralNewtonSchulz(torch.autograd.Function):
    """``Z = p(Y)`` (the Newton-Schulz polynomial) via ``Y = U diag(l) U^T``, with its exact gradient.

    Forward ``Z = U diag(p(l)) U^T``; backward (Daleckii-Krein, exact for a polynomial at a
    symmetric point) ``dY = U (P o (U^T dZ U)) U^T`` with ``P`` the divided differences of ``p``.
    """

    @staticmethod
    def forward(ctx, Y: torch.Tensor, n_iter: int) -> torch.Tensor:
        with _single_thread(Y.device):
            lam, U = torch.linalg.eigh(Y)
            values, divided = _newton_schulz_polynomial(lam.double(), n_iter)
        ctx.save_for_backward(U, divided.to(Y.dtype))
        return (U * values.to(Y.dtype).unsqueeze(-2)) @ U.mT

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        U, divided = ctx.saved_tensors
        return U @ (divided * (U.mT @ grad @ U)) @ U.mT, None


def isqrt_newton_schulz_spectral(A: torch.Tensor, n_iter: int = 5) -> torch.Tensor:
    """The SAME function as :func:`isqrt_newton_schulz`, evaluated through an eigendecomposition.

    After normalising, ``Y0 = A / ||A||_F``, the coupled iteration only ever multiplies
    polynomials of ``Y0``, so ``Z_n = p(Y0)`` for a fixed polynomial ``p`` of degree ``~3^n``.
    For a symmetric ``Y0 = U diag(l) U^T`` that is ``U diag(p(l)) U^T``: one symmetric
    eigendecomposition and one matmul instead of ``3 n_iter - 3`` matmuls, and the gradient is
    the exact derivative of ``p`` (not of a different function such as the true ``A^(-1/2)``):
    ``U (P o (U^T G U)) U^T`` with the divided differences ``P`` of ``p``, four matmuls instead of
    two per forward product.  In exact arithmetic both routes give identical values and
    gradients; in float32 they differ by rounding (checked against the loop in the tests).  On
    a CPU this is several times cheaper for the ``576 x 576`` covariances of 3x3 convs; on a GPU
    the matmul loop is faster (eigendecompositions are slow there), see :data:`ISQRT_METHODS`.
    Falls back to the matmul loop if the eigensolver does not converge.
    """
    positive_int("n_iter", n_iter)
    if A.dim() < 2 or A.shape[-1] != A.shape[-2]:
        raise ValueError(
            f"isqrt_newton_schulz_spectral expects square matrices (..., n, n), got shape {tuple(A.shape)}"
        )
    norm = torch.linalg.matrix_norm(A, keepdim=True)
    try:
        Z = _SpectralNewtonSchulz.apply(A / norm, n_iter)
    except torch.linalg.LinAlgError:
        return isqrt_newton_schulz(A, n_iter)
    return Z / torch.sqrt(norm)


class _LowRankSpectralNewtonSchulz(torch.autograd.Function):
    """``Z = p(Y)`` for ``Y = U diag(l) U^T + l_e (I - U U^T)`` with ``U`` (``n x r``, ``r < n``)
    orthonormal: the spectral route of :class:`_SpectralNewtonSchulz` without an ``n x n`` ``eigh``.

    ``U``, ``l`` and ``l_e`` are constants (found by :func:`isqrt_newton_schulz_lowrank` from the
    centred rows); ``Y`` is the differentiable input, which they must decompose.  Forward
    ``Z = p(l_e) I + U diag(p(l) - p(l_e)) U^T``.  Backward: Daleckii-Krein as in the full spectral
    route, ``[U U_e] (P o ([U U_e]^T G [U U_e])) [U U_e]^T``, written with ``U`` alone (the
    complement ``U_e U_e^T = I - U U^T`` has the single eigenvalue ``l_e``, so ``P`` is constant
    along its rows and columns there)::

        dY = c G + U (diag(a - c) U^T G + (K o U^T G U) U^T) + G U diag(a - c) U^T

    with ``a_i = P(l_i, l_e)``, ``c = p'(l_e)`` and ``K_ij = P(l_i, l_j) - a_i - a_j + c``: products
    of ``n x n`` by ``n x r`` matrices only, ``G`` need not be symmetric.  The coefficients come
    from :func:`_newton_schulz_polynomial` on ``(l, l_e)`` in float64 (it never divides, so
    ``l_i`` equal or close to ``l_e`` are exact too).
    """

    @staticmethod
    def forward(ctx, Y: torch.Tensor, U: torch.Tensor, lam: torch.Tensor, lam_rest: torch.Tensor, n_iter: int):
        r = lam.shape[-1]
        with _single_thread(Y.device):
            values, divided = _newton_schulz_polynomial(torch.cat([lam, lam_rest], dim=-1), n_iter)
            p_rest = values[..., r:]  # p(l_e), (..., 1)
            a = divided[..., :r, r]  # P(l_i, l_e)
            c = divided[..., r:, r:]  # p'(l_e), (..., 1, 1)
            coupling = divided[..., :r, :r] - a.unsqueeze(-1) - a.unsqueeze(-2) + c
            shifted = values[..., :r] - p_rest
        U = U.to(Y.dtype)
        Z = (U * shifted.to(Y.dtype).unsqueeze(-2)) @ U.mT
        Z.diagonal(dim1=-2, dim2=-1).add_(p_rest.to(Y.dtype))
        ctx.save_for_backward(U, (a - c.squeeze(-1)).to(Y.dtype), c.to(Y.dtype), coupling.to(Y.dtype))
        return Z

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        U, a_minus_c, c, coupling = ctx.saved_tensors
        UtG = U.mT @ grad  # (..., r, n)
        left = a_minus_c.unsqueeze(-1) * UtG + (coupling * (UtG @ U)) @ U.mT
        dY = (grad @ U * a_minus_c.unsqueeze(-2)) @ U.mT
        dY += U @ left
        dY += c * grad
        return dY, None, None, None, None


def isqrt_newton_schulz_lowrank(
    A: torch.Tensor, centred: torch.Tensor, eps: float, n_iter: int = 5, features_first: bool = False
) -> torch.Tensor:
    """:func:`isqrt_newton_schulz_spectral` of a covariance estimated from fewer rows than features.

    ``A = Xc^T Xc / M + eps I`` must be the covariance :func:`ndlib.layers.centered_covariance` makes from the
    centred rows ``Xc = centred`` (``(..., M, n)``; with ``features_first`` its transpose
    ``(..., n, M)``), with ``M < n``.  Such an ``A`` is ``eps I`` plus a matrix of rank ``<= M``
    (``M - 1`` after centring), so its eigenvectors follow from the rows, without an ``n x n``
    eigendecomposition: in float64, a QR factorisation ``Xc^T = Q R`` (``Q``: ``n x M``,
    orthonormal to rounding however close or repeated the rows are), the small eigenproblem
    ``R R^T / M = V diag(s) V^T`` and ``U = Q V``; then ``A = U diag(s + eps) U^T + eps (I - U U^T)``.
    All ``M`` directions are kept, including the ones with ``s ~ 0`` (the centring's, duplicate
    rows): their eigenvalue ``s + eps`` is next to ``eps``, which the divided differences handle
    exactly, so there is no rank threshold.  :class:`_LowRankSpectralNewtonSchulz` then evaluates
    the Newton-Schulz polynomial and its exact gradient with ``n x M`` products.

    The gradient flows into ``A`` (through ``Y = A / ||A||_F``) exactly as in the spectral route;
    ``centred`` is only a constant that locates the eigenbasis (no gradient flows into it, and it
    must be the rows ``A`` was made from).  Same values and gradients as
    :func:`isqrt_newton_schulz_spectral` and :func:`isqrt_newton_schulz` up to rounding.  Falls
    back to :func:`isqrt_newton_schulz_spectral` if the small eigensolver does not converge.  The
    layers use it where it is the faster of the two (few rows, see :func:`_uses_lowrank`).
    """
    positive_int("n_iter", n_iter)
    if A.dim() < 2 or A.shape[-1] != A.shape[-2]:
        raise ValueError(
            f"isqrt_newton_schulz_lowrank expects square matrices (..., n, n), got shape {tuple(A.shape)}"
        )
    rows_t = centred.detach() if features_first else centred.detach().mT  # (..., n, M): Xc^T
    if rows_t.shape[-2] != A.shape[-1] or rows_t.shape[:-2] != A.shape[:-2]:
        raise ValueError(
            f"centred rows of shape {tuple(centred.shape)} (features_first={features_first}) do not match "
            f"covariances of shape {tuple(A.shape)}"
        )
    norm = torch.linalg.matrix_norm(A, keepdim=True)
    try:
        with torch.no_grad(), _single_thread(A.device):
            Q, R = torch.linalg.qr(rows_t.double())
            s, V = torch.linalg.eigh(R @ R.mT / rows_t.shape[-1])
            U = Q @ V
            scale = 1.0 / norm.detach().double().squeeze(-1)  # (..., 1)
            lam = (s.clamp_min(0.0) + eps) * scale
        Z = _LowRankSpectralNewtonSchulz.apply(A / norm, U, lam, eps * scale, n_iter)
    except torch.linalg.LinAlgError:
        return isqrt_newton_schulz_spectral(A, n_iter)
    return Z / torch.sqrt(norm)


def _uses_lowrank(A: torch.Tensor, rows: int, n_iter: int, method: str) -> bool:
    """Whether :func:`isqrt_of_rows` evaluates a covariance ``A`` made from ``rows`` centred rows
    with :func:`isqrt_newton_schulz_lowrank`: when the spectral route is in effect (``"spectral"``,
    or ``"auto"`` choosing it), ``A`` has at least :data:`LOWRANK_MIN_SIZE` features and
    ``rows <= LOWRANK_MAX_ROW_FRACTION * features``.

    Measured (forward + backward, 1 thread, 9 interleaved pairs, busy 2-core machine), row route
    over full spectral route: 512 features 0.36 (128 rows), 0.82 (256), 1.44 (384), 2.07 (480);
    576 features 0.31 (128 rows), 2.2 (512); 320 features 0.70 (128 rows); 256 features 0.45 (64
    rows), 1.2 (128); 128 features 0.74 (32 rows); but 64 features 1.07 (15 rows), 1.25 (30) and
    176 features 1.43 (128 rows): the backward's four ``n x n x rows`` products cost as much as
    the full route's ``n x n x n`` ones once the rows approach half the features, and below ~128
    features the full ``eigh`` is too cheap to gain on.
    """
    if method == "auto":
        method = _auto_isqrt_method(A, n_iter)
    n = A.shape[-1]
    return method == "spectral" and n >= LOWRANK_MIN_SIZE and rows <= LOWRANK_MAX_ROW_FRACTION * n


def _auto_isqrt_method(A: torch.Tensor, n_iter: int) -> str:
    """What ``isqrt_method="auto"`` evaluates ``A`` with: ``"spectral"`` on the CPU for matrices
    of at least :data:`SPECTRAL_MIN_SIZE` rows and ``n_iter >= 2``, ``"matmul"`` otherwise.

    With ``n_iter == 1`` the polynomial is linear, ``Z = (3 I - Y) / 2``: the loop does no
    matrix product at all, so an eigendecomposition can only add work (measured, forward +
    backward, 1 thread: 6x to 19x slower for one 64..160 matrix, 25x for 960 9x9 ones --
    MobileNetV2's projection layers use ``n_iter=1``).
    """
    if A.device.type == "cpu" and A.shape[-1] >= SPECTRAL_MIN_SIZE and n_iter >= 2:
        return "spectral"
    return "matmul"


def isqrt_by_method(A: torch.Tensor, n_iter: int, method: str) -> torch.Tensor:
    """Dispatch on ``method`` (see :data:`ISQRT_METHODS`); ``auto``: :func:`_auto_isqrt_method`."""
    if method == "auto":
        method = _auto_isqrt_method(A, n_iter)
    return _ISQRT_BY_METHOD[method](A, n_iter)


_ISQRT_BY_METHOD = {"matmul": isqrt_newton_schulz, "spectral": isqrt_newton_schulz_spectral}


def isqrt_of_rows(
    cov: torch.Tensor,
    X: torch.Tensor,
    mean: torch.Tensor,
    eps: float,
    n_iter: int,
    method: str,
    centred: bool = False,
    features_first: bool = False,
) -> torch.Tensor:
    """:func:`isqrt` of the covariance ``cov`` of the rows ``X`` (``features_first``: ``X`` is the
    transpose) with column mean ``mean``; ``centred``: ``X`` already holds the centred rows (the
    in-place centring of :func:`ndlib.layers._centered_covariance_of_patches`).  Through
    :func:`isqrt_newton_schulz_lowrank` when :func:`_uses_lowrank` (few rows for the features,
    spectral route): the centred rows give the eigenvectors without an ``n x n`` ``eigh``."""
    row_dim = -1 if features_first else -2
    if not _uses_lowrank(cov, X.shape[row_dim], n_iter, method):
        return isqrt_by_method(cov, n_iter, method)
    rows = X.detach() if centred else X.detach() - mean.detach().unsqueeze(row_dim)
    return isqrt_newton_schulz_lowrank(cov, rows, eps, n_iter, features_first)
