"""Network deconvolution layers (Ye et al., ICLR 2020), written from the method's equations.

A deconvolution layer whitens the input of a convolution (or linear) layer before the layer
multiplies it by its weight.  For a conv with kernel ``k x k`` the "features" are the
``C*k*k`` entries of an im2col patch.  In training mode the layer

1. samples patches ``X`` (one row per patch) at a stride ``sampling_stride * conv_stride``
   (:mod:`ndlib.patches`);
2. splits the features into channel blocks that share one covariance (block-diagonal whitening);
3. centres them, ``mu = mean(X)``, and forms ``Cov = Xc^T Xc / M + eps * I``;
4. approximates ``D = Cov^(-1/2)`` with coupled Newton-Schulz iterations;
5. folds the whitening into the weight, ``W' = W D`` and ``b' = b - W' mu``, so that
   ``conv(x, W', b') == conv_of((patches(x) - mu) D, W)`` and the activations are convolved
   exactly once.

Running averages of ``mu`` and of the matrix ``D`` (not of the covariance) are kept with
momentum ``0.1``; evaluation mode uses them and computes no statistics.

Two choices of the public code are kept on purpose and named here:

* **Interleaved grouping** (``grouping="interleaved"``, the default of :class:`FastDeconv`):
  the public code views the ``C*k*k`` patch axis as ``(B*k*k, G)``, so block ``g`` holds the
  features ``g, g+G, g+2G, ...`` -- a strided subset that mixes channels and kernel positions,
  not a contiguous run of channels.  ``grouping="contiguous"`` takes whole channels
  ``[g*B, (g+1)*B)`` instead.  Both are valid block-diagonal whitenings.
* **Block-size rules** (:func:`effective_block`): ``B = C`` if ``block > C``; otherwise
  ``B = gcd(block, C)`` if ``C % block != 0``; for grouped convs ``B = C / groups`` whatever
  ``block`` says (one covariance per conv group).
* **Periodic freezing** (``freeze=True``, used for the first layer): the public code counts
  training iterations modulo ``10 * freeze_iter`` and uses the running statistics (no new
  estimate, no gradient through them) whenever the count exceeds ``freeze_iter``.  So the
  statistics are estimated for the first ``freeze_iter + 1`` iterations and then re-estimated
  for ``freeze_iter + 1`` iterations out of every ``10 * freeze_iter``.

One option is ours, off by default:

* **Periodic refresh** (``refresh_every=k``, :class:`FastDeconv` and :class:`Delinear`; ``k = 1``,
  the default, is the paper's layer, bit for bit).  With ``k > 1`` the layer estimates the batch
  statistics only on the training steps ``t = 0, k, 2k, ...`` of its own counter
  ``num_batches_tracked``; on every other training step it whitens with its running mean and
  running ``D`` as constants (no gradient through them), exactly as a frozen layer does::

      t % k == 0:  (mu_t, D_t) from the batch;  running <- (1 - m) running + m (mu_t, D_t);
                   conv(x, W D_t, b - W D_t mu_t), differentiated through mu_t and D_t
      otherwise:   conv(x, W D_run, b - W D_run mu_run), D_run and mu_run constants

  Why: the covariance (one ``M x F x F`` product over the sampled patches) and the
  Newton-Schulz iterations (and their backward) are most of what ND adds to a plain conv; with
  ``k > 1`` they run once every ``k`` steps, while the other steps cost the conv plus the fold
  ``W' = W D`` (one small matmul on the weight).  The price: the whitening lags the weights
  (and so the activations it whitens) by up to ``k - 1`` steps, and the running averages move
  on refresh steps only, so with momentum ``m`` they average over about ``k / m`` steps instead
  of ``1 / m`` (the first ``k - 1`` steps after step 0 use ``0.9 I + 0.1 D_0`` with the default
  ``m = 0.1``).  With ``freeze=True`` freezing takes precedence: a frozen step uses the running
  statistics whatever ``k`` says, and inside the estimation windows of the freeze counter only
  the steps with ``t % k == 0`` estimate.

  ``refresh_stats`` chooses what the steps between refreshes whiten with: ``"running"`` (the
  default, as above) or ``"last"``, the estimate of the last refresh step, kept as constants in
  two more buffers (``last_mean``, ``last_deconv``; registered for ``k > 1`` only)::

      otherwise:   conv(x, W D_r, b - W D_r mu_r), r = k * (t // k), D_r and mu_r constants

  The running averages (used in evaluation) are updated on refresh steps in both modes.  Why a
  second mode: measured on CIFAR-10, VGG-16 at the paper's learning rate 0.1 diverged within
  the first epoch with ``"running"`` and ``k = 4`` or ``16`` (the running ``D`` starts at the
  identity and, moving on refresh steps only, is still mostly identity when the weights have
  grown); ``"last"`` never whitens with a matrix older than ``k - 1`` steps.

  ``refresh_warmup=w`` makes the first ``w`` training steps all refresh steps (then ``t % k ==
  0`` as before), the way the public code's frozen first layer estimates for its first
  ``freeze_iter + 1`` iterations before it uses constants: early in training, at the paper's
  learning rate, the weights (and so the statistics of the activations) move fastest, and
  ``"last"`` without a warm-up diverged VGG-16 within 3 steps.

  The step count is the ``num_batches_tracked`` buffer that freezing already uses, so a resumed
  run refreshes on the same steps and, with ``"running"``, the state dict has no new key (old
  checkpoints load); ``refresh_every``, ``refresh_stats`` and ``refresh_warmup`` are constructor
  options, like ``freeze_iter``.

Mixed precision: under ``torch.autocast`` the statistics (covariance, Newton-Schulz, running
averages) and the fold ``W' = W D`` run with autocast off, in the dtype of the layer's buffers
(float32 for a float32 model; a bfloat16 input is cast after the patches are sampled); only the
final convolution / linear map runs in the autocast dtype.  Newton-Schulz in bfloat16 would not
give an inverse square root worth the name (8 mantissa bits), and the running buffers keep their
dtype.  Without autocast nothing changes.

One more option of ours concerns mixed precision only, off by default:

* **The covariance's backward in the input's dtype** (``covariance_grad="input"``,
  :class:`FastDeconv` and :class:`Delinear`).  The gradient that reaches the patches through the
  covariance, ``dX = Xc S`` with ``S = (G + G^T) / M``, is one ``M x F x F`` product, as large as
  the covariance itself.  By default (``"statistics"``) it runs in the statistics' dtype (float32)
  on the float32 copy of the patches, and its result is then cast to the patches' own dtype
  (bfloat16 under autocast) at once, so most of its precision is rounded away.  With ``"input"``
  the product runs in that dtype (``Xc`` and ``S`` rounded to it, float32 accumulation, as every
  autocast product does): the statistics (covariance, Newton-Schulz, buffers, fold) and their
  backward stay float32.  Measured (ResNet-18 ND, bf16 autocast, channels-last, 1 thread): 0.91x
  the step's time.  It changes the rounding of that gradient (about 2.9e-3 relative instead of
  1.7e-3), so it is a computation of its own, with its own run ids and its own fidelity test
  (:mod:`ndlib.fidelity`).  Without autocast the two are the same computation.
"""
from __future__ import annotations

import contextlib
import math
import warnings
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from ndlib import _validate
from ndlib.isqrt import (
    ISQRT_METHODS,
    isqrt_newton_schulz,
    isqrt_newton_schulz_lowrank,
    isqrt_newton_schulz_spectral,
    isqrt_of_rows,
)
from ndlib.patches import GROUPINGS, _layer_patches, group_features, ungroup_features

# The inverse square root lives in ndlib.isqrt; its public names are re-exported here, beside the
# layers that take ``isqrt_method``.
__all__ = [
    "isqrt_newton_schulz",
    "effective_block",
    "centered_covariance",
    "isqrt_newton_schulz_spectral",
    "isqrt_newton_schulz_lowrank",
    "ISQRT_METHODS",
    "FastDeconv",
    "Delinear",
    "ChannelDeconv",
    "finite_checks",
    "RankDeficientWarning",
]

#: What a layer with ``refresh_every > 1`` whitens with between refreshes (module docstring).
REFRESH_STATS = ("running", "last")
#: The dtype of the covariance's backward product (module docstring): the statistics' (the
#: default, float32) or the layer input's (bfloat16 under autocast).
COVARIANCE_GRADS = ("statistics", "input")


_CHECK_FINITE = True


@contextlib.contextmanager
def finite_checks(enabled: bool) -> Iterator[None]:
    """Turn the training-mode check for non-finite statistics on or off inside a block.

    The check reads one boolean back from the device per layer and step; on a GPU that is a
    synchronisation, so a training loop that already checks its loss may switch it off.
    """
    global _CHECK_FINITE
    previous, _CHECK_FINITE = _CHECK_FINITE, bool(enabled)
    try:
        yield
    finally:
        _CHECK_FINITE = previous


class _StepCounter:
    """Host-side reading of a layer's ``num_batches_tracked`` without a device sync per step.

    ``int(buffer)`` of a CUDA buffer waits for the GPU; deciding every step whether to refresh
    or freeze that way would stall the launch queue at every layer.  The value is cached with
    the buffer's identity and version counter (every in-place change -- ``add_``, ``fill_``,
    ``load_state_dict``'s ``copy_`` -- bumps the version, and ``.to()`` makes a new tensor), and
    the layer's own ``add_(1)`` advances the cache, so the buffer is read once and then only
    after someone else changed it.  Layers that never ask (``refresh_every == 1`` without
    ``freeze``) never create the cache and run exactly the operations they always did.

    It also holds what the two layers share about which statistics a step uses
    (:meth:`step_statistics`: batch, last refresh's, or running).
    """

    num_batches_tracked: torch.Tensor
    #: The layer's qualified name in its model, for messages (set by ``ndlib.deconvolve``).
    qualified_name: str | None = None
    #: Warn once when a training step samples fewer rows than features (``ndlib.deconvolve``
    #: turns it on for the layers it builds; the paper's own models are rank-deficient by design
    #: in a few layers, e.g. VGG-16's 2x2 maps and the 512-feature classifier at batch 128).
    warn_rank_deficient: bool = False

    def _counter_key(self):
        buffer = self.num_batches_tracked
        try:
            return id(buffer), buffer.data_ptr(), buffer._version
        except RuntimeError:  # e.g. inference tensors keep no version counter
            return None

    def training_step(self) -> int:
        """The layer's training-step counter (``num_batches_tracked``) as a Python int."""
        key = self._counter_key()
        cache = self.__dict__.get("_step_cache")
        if key is None or cache is None or cache[0] != key:
            value = int(self.num_batches_tracked)
            self.__dict__["_step_cache"] = None if key is None else (key, value)
            return value
        return cache[1]

    def _register_last_statistics(self) -> None:
        """The ``last_mean`` / ``last_deconv`` buffers of ``refresh_stats="last"`` (``k > 1`` only,
        so the paper's layer keeps its state-dict keys); persistent, so a resumed run whitens
        its first steps with the same statistics as the uninterrupted run."""
        if self.uses_last_statistics():
            self.register_buffer("last_mean", self.running_mean.detach().clone())
            self.register_buffer("last_deconv", self.running_deconv.detach().clone())

    def uses_last_statistics(self) -> bool:
        return self.refresh_every > 1 and self.refresh_stats == "last"

    def step_statistics(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, D)`` for this forward pass; in training mode it also updates the buffers and
        advances the step counter.

        * training, refresh step (and not frozen): the batch estimate, differentiated through;
          the running averages (and, for ``refresh_stats="last"``, the last estimate) are updated;
        * training, between refreshes, ``refresh_stats="last"``: the last estimate, a constant;
        * otherwise (frozen step, ``refresh_stats="running"`` between refreshes, evaluation):
          the running averages, constants.
        """
        if not self.training:
            return self.running_mean, self.running_deconv
        self._check_counter_is_real()
        if _recomputing():
            return self._recomputed_statistics(x)
        self._warn_if_rank_deficient(x)
        if self.estimates_statistics():
            mean, deconv = self.batch_statistics(x)
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach(), self.momentum)
                self.running_deconv.lerp_(deconv.detach(), self.momentum)
                if self.uses_last_statistics():
                    self.last_mean.copy_(mean.detach())
                    self.last_deconv.copy_(deconv.detach())
        elif self.uses_last_statistics() and not self.is_frozen():
            mean, deconv = self.last_mean, self.last_deconv
        else:
            mean, deconv = self.running_mean, self.running_deconv
        self._advance_step()
        return mean, deconv

    def _recomputed_statistics(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The statistics of the step being recomputed by activation checkpointing
        (``torch.utils.checkpoint`` runs the forward again inside the backward pass).

        The first forward of that step already updated the running buffers and advanced the
        counter; doing either again would update the statistics twice per step and shift the
        freeze and refresh schedules (and a different choice of statistics would save a
        different number of tensors, which the checkpoint refuses).  So the recomputation
        repeats the decision of step ``num_batches_tracked - 1`` with the same values and
        changes nothing: the batch estimate again on a refresh step, else the constants that
        step used (the running and last statistics change on refresh steps only).  It assumes
        the backward belongs to the layer's latest training forward, as in an ordinary step.
        """
        step = self.training_step() - 1
        if self.estimates_statistics(step):
            return self.batch_statistics(x)
        if self.uses_last_statistics() and not self.is_frozen(step):
            return self.last_mean, self.last_deconv
        return self.running_mean, self.running_deconv

    def _check_counter_is_real(self) -> None:
        if self.num_batches_tracked.is_meta:
            raise RuntimeError(
                f"{self._described()}: a training-mode forward needs real buffers, and this layer is on the "
                "meta device (shapes only). Materialise the model first, e.g. model.to_empty(device='cpu') "
                "and then load_state_dict or re-initialise it, or run it in eval mode."
            )

    def _described(self) -> str:
        return f"{type(self).__name__} {self.qualified_name!r}" if self.qualified_name else type(self).__name__

    def _warn_if_rank_deficient(self, x: torch.Tensor) -> None:
        """Warn once (layers that opted in: ``warn_rank_deficient``, set by ``ndlib.deconvolve``)
        when a training step samples fewer rows per covariance than it has features: the batch
        covariance then has rank below its size and the whitening of the missing directions is
        set by the ridge ``eps`` alone (still invertible, but no longer a whitening there)."""
        if not self.warn_rank_deficient or self.__dict__.get("_rank_warned"):
            return
        rows, features = self.sampled_rows(x)
        if rows >= features:
            return
        self.__dict__["_rank_warned"] = True
        needed = math.ceil(features * x.shape[0] / max(rows, 1))
        warnings.warn(
            f"{self._described()}: {rows} sampled rows per covariance for {features} features at batch "
            f"{x.shape[0]}: the statistics are rank-deficient (eps alone fills the missing directions). "
            f"A batch of at least {needed} would fill them; or use a smaller block for this layer.",
            RankDeficientWarning,
            stacklevel=4,
        )

    def is_refresh_step(self, step: int) -> bool:
        """Whether training step ``step`` estimates the statistics as far as ``refresh_every``
        and ``refresh_warmup`` go: every step of the warm-up, then steps ``0, k, 2k, ...``."""
        return self.refresh_every == 1 or step < self.refresh_warmup or step % self.refresh_every == 0

    def is_frozen(self, step: int | None = None) -> bool:  # overridden by FastDeconv (Delinear never freezes)
        return False

    def _schedule_repr(self) -> str:
        """The ``extra_repr`` part both layers share: the refresh schedule and the covariance
        backward, printed only where they differ from the paper's defaults."""
        s = ""
        if self.refresh_every != 1:
            s += f", refresh_every={self.refresh_every}, refresh_stats={self.refresh_stats!r}"
            if self.refresh_warmup:
                s += f", refresh_warmup={self.refresh_warmup}"
        if self.covariance_grad != "statistics":
            s += f", covariance_grad={self.covariance_grad!r}"
        return s

    def _advance_step(self) -> None:
        """``num_batches_tracked += 1``, keeping the cache of :meth:`training_step` valid."""
        cache = self.__dict__.get("_step_cache")
        known = cache is not None and cache[0] == self._counter_key()
        self.num_batches_tracked.add_(1)
        if cache is not None:
            key = self._counter_key() if known else None
            self.__dict__["_step_cache"] = None if key is None else (key, cache[1] + 1)


class RankDeficientWarning(UserWarning):
    """A deconvolution layer's batch covariance has fewer sampled rows than features."""


def _recomputing() -> bool:
    """Whether this forward runs inside a backward pass: activation checkpointing
    (``torch.utils.checkpoint``, reentrant or not) recomputes the forward there."""
    return torch._C._current_graph_task_id() != -1


def _autocast_active(device_type: str) -> bool:
    """Whether autocast is on for ``device_type`` (False for devices autocast does not know)."""
    try:
        return torch.is_autocast_enabled(device_type)
    except (TypeError, RuntimeError):
        return False


def _without_autocast(device_type: str):
    """A context that turns autocast off while the statistics, the inverse square root and the
    fold are computed (they need full precision); nothing at all when autocast is off."""
    if _autocast_active(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def _raise_if_not_finite(stat: torch.Tensor, layer: str) -> None:
    if _CHECK_FINITE and not bool(torch.isfinite(stat).all()):
        raise ValueError(
            f"{layer}: the batch statistics are not finite (the input contains NaN or Inf). "
            "Check the data and the loss; a diverging run usually shows here first."
        )


# --------------------------------------------------------------------------------------
# Functional pieces
# --------------------------------------------------------------------------------------
def effective_block(channels: int, block: int, groups: int = 1) -> int:
    """The public code's block-size rule: how many channels share one covariance.

    ``block`` larger than ``channels`` -> ``channels``; ``channels % block != 0`` ->
    ``gcd(block, channels)``; a grouped conv (``groups > 1``) -> ``channels // groups``.
    """
    _validate.positive_int("channels", channels)
    _validate.positive_int("block", block)
    _validate.positive_int("groups", groups)
    if groups > 1:
        return channels // groups
    if block > channels:
        return channels
    if channels % block:
        return math.gcd(block, channels)
    return block


class _CenteredCovariance(torch.autograd.Function):
    """``(mu, Xc^T Xc / M + eps I)`` with ``Xc = X - mu``, and a hand-written backward.

    Autograd through ``Xc^T @ Xc`` would do two ``M x F x F`` products; with the symmetry of
    the output one suffices: ``dX = Xc (G + G^T) / M + 1 dmu^T / M``.  (The centering's own
    correction, ``- mean_rows(Xc (G + G^T)) / M``, is zero because the rows of ``Xc`` sum to 0.)

    With ``in_place=True`` the centring overwrites ``X`` (returned first, marked dirty and not
    differentiable) instead of allocating a second patch-sized matrix; only for an ``X`` that
    nothing else reads (see :func:`_owned_by_layer`).  Same values and gradients bit for bit.
    With ``features_first=True`` the argument is the transpose ``Xt`` (``..., F, M``): the mean
    runs over the last axis, ``Cov = Xct Xct^T / M + eps I`` and ``dXt = (G + G^T) Xct / M + dmu 1^T / M``.
    With ``grad_dtype`` (``covariance_grad="input"``, module docstring) the backward product runs in
    that dtype and returns the gradient in it (autograd casts it to ``X``'s dtype on its way back to
    the patches, which are in ``grad_dtype`` themselves).
    """

    @staticmethod
    def forward(ctx, X: torch.Tensor, eps: float, in_place: bool = False, features_first: bool = False,
                grad_dtype: torch.dtype | None = None):
        ctx.set_materialize_grads(False)
        ctx.features_first = features_first
        ctx.grad_dtype = grad_dtype if grad_dtype != X.dtype else None
        row_dim = -1 if features_first else -2
        rows = X.shape[row_dim]
        mean = X.mean(dim=row_dim)
        if in_place:
            Xc = X.sub_(mean.unsqueeze(row_dim))
            ctx.mark_dirty(Xc)
            ctx.mark_non_differentiable(Xc)
        else:
            Xc = X - mean.unsqueeze(row_dim)
        cov = Xc @ Xc.mT if features_first else Xc.mT @ Xc
        cov.div_(rows)
        cov.diagonal(dim1=-2, dim2=-1).add_(eps)
        ctx.save_for_backward(Xc)
        return (Xc, mean, cov) if in_place else (mean, cov)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):
        grad_mean, grad_cov = grads[-2:]  # (grad of the in-place Xc, which is not differentiable)
        (Xc,) = ctx.saved_tensors
        row_dim = -1 if ctx.features_first else -2
        rows = Xc.shape[row_dim]
        grad = None
        if grad_cov is not None:
            sym = (grad_cov + grad_cov.mT) / rows
            if ctx.grad_dtype is not None:
                Xc, sym = Xc.to(ctx.grad_dtype), sym.to(ctx.grad_dtype)
            grad = sym @ Xc if ctx.features_first else Xc @ sym
        if grad_mean is not None:
            share = (grad_mean / rows).unsqueeze(row_dim)
            grad = share.expand_as(Xc).clone() if grad is None else grad.add_(share)
        return grad, None, None, None, None


def centered_covariance(X: torch.Tensor, eps: float, grad_dtype: torch.dtype | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Column mean and ``Cov = (X - mu)^T (X - mu) / rows + eps I`` of ``X`` (``..., rows, F``).

    Differentiable (first order) with the cheap backward of :class:`_CenteredCovariance`, whose
    product runs in ``grad_dtype`` when given (default: ``X``'s dtype).
    """
    if X.dim() < 2:
        raise ValueError(f"centered_covariance expects (..., rows, features), got shape {tuple(X.shape)}")
    return _CenteredCovariance.apply(X, float(eps), False, False, grad_dtype)


def _covariance_grad_dtype(layer: nn.Module, X: torch.Tensor) -> torch.dtype | None:
    """The dtype the covariance's backward product runs in for ``layer`` and its patch matrix
    ``X`` (before the cast to the statistics' dtype): ``X``'s own with ``covariance_grad="input"``,
    None (the statistics' dtype) otherwise."""
    return X.dtype if layer.covariance_grad == "input" else None


def _owned_by_layer(X: torch.Tensor, x: torch.Tensor) -> bool:
    """Whether the patch matrix ``X`` made from ``x`` is a fresh tensor that nothing else reads.

    True when ``X`` is not a view (its own storage, not ``x``'s): :func:`ndlib.patches.stacked_patches`
    then wrote it in its final copy, and the ops that made it (``F.unfold``, ``Tensor.unfold``,
    indexing, permuting copies) keep no reference to their output for their backward.  A view
    (e.g. a reshape that needed no copy, possibly of ``x`` itself) is never centred in place.
    """
    return X._base is None and X.untyped_storage().data_ptr() != x.untyped_storage().data_ptr()


def _centered_covariance_of_patches(
    X: torch.Tensor, eps: float, in_place: bool, features_first: bool = False, grad_dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`centered_covariance` of the layer's own patch matrix (from :func:`ndlib.patches._layer_patches`;
    ``features_first``: ``X`` is the transpose), centred in place when ``in_place`` (the caller's
    :func:`_owned_by_layer`: safe only for a fresh matrix nothing else reads; ``X`` then holds the
    centred rows afterwards).

    Measured (batch 128, patches + covariance forward and backward, 1 thread): 0.86x on
    PNASNet's 7x7 depthwise layer at 32x32, 0.90x ResNeXt's grouped 3x3 at 32x32, 0.93x a 3x3
    depthwise at 32x32, 0.95x VGG's 64-channel 3x3 at 32x32: one patch-sized allocation (and
    its page faults) fewer per step.  ``grad_dtype``: as :func:`centered_covariance`.
    """
    if X.dim() < 2:
        raise ValueError(f"centered_covariance expects (..., rows, features), got shape {tuple(X.shape)}")
    return _CenteredCovariance.apply(X, float(eps), in_place, features_first, grad_dtype)[-2:]


# --------------------------------------------------------------------------------------
# Conv layer
# --------------------------------------------------------------------------------------
class FastDeconv(_StepCounter, nn.Conv2d):
    """A drop-in for :class:`torch.nn.Conv2d` whose input patches are whitened first.

    Same arguments as ``nn.Conv2d`` (zero padding only) plus:

    Args:
        block: channels per whitening block (``B``); see :func:`effective_block`.
        eps: ridge added to the covariance diagonal.
        n_iter: Newton-Schulz iterations.
        momentum: weight of the new batch in the running mean and running ``D``.
        sampling_stride: statistics use patches at stride ``sampling_stride * stride``.
        freeze: use the public code's periodic freezing (see the module docstring).
        freeze_iter: iterations after which the statistics freeze.
        grouping: ``"interleaved"`` (public code) or ``"contiguous"``; ``groups == 1`` only.
        isqrt_method: how ``Cov^(-1/2)`` is evaluated: ``"matmul"`` (the Newton-Schulz loop),
            ``"spectral"`` (the same Newton-Schulz polynomial through an eigendecomposition,
            :func:`isqrt_newton_schulz_spectral`) or ``"auto"`` (spectral on the CPU for
            covariances of at least :data:`ndlib.isqrt.SPECTRAL_MIN_SIZE` features when ``n_iter >= 2``,
            matmul otherwise).  On the spectral route a covariance with few sampled rows (at
            most :data:`ndlib.isqrt.LOWRANK_MAX_ROW_FRACTION` of its features, :meth:`sampled_rows`) takes
            its eigenvectors from the centred rows
            (:func:`isqrt_newton_schulz_lowrank`, no ``n x n`` eigendecomposition).
            All give the same values and gradients up to float rounding.
        refresh_every: estimate the statistics (covariance + Newton-Schulz) only on every
            ``refresh_every``-th training step (steps ``0, k, 2k, ...`` of ``num_batches_tracked``)
            and whiten with constant statistics on the others; ``1`` (default) is the paper's
            layer.  Freezing takes precedence (see the module docstring).
        refresh_stats: with ``refresh_every > 1``, what the steps between refreshes whiten with:
            ``"running"`` (the running mean and ``D``) or ``"last"`` (the last refresh's estimate).
        refresh_warmup: with ``refresh_every > 1``, the first ``refresh_warmup`` training steps
            all estimate (as the frozen first layer does for its first ``freeze_iter + 1``).
        covariance_grad: the dtype of the covariance's backward product, ``"statistics"``
            (float32, the default) or ``"input"`` (the input's: bfloat16 under autocast); see the
            module docstring.

    Buffers: ``running_mean`` (``B*k*k`` for ``groups == 1``, else ``C*k*k``),
    ``running_deconv`` (``(B*k*k)^2``, or ``(groups, B*k*k, B*k*k)``) and
    ``num_batches_tracked`` (training iterations seen, which drives freezing and refreshing and
    survives a checkpoint round trip); with ``refresh_every > 1`` and ``refresh_stats="last"``
    also ``last_mean`` and ``last_deconv``; with ``groups == 1`` and more than one block,
    ``grouping_code`` (the index of ``grouping`` in ``GROUPINGS``: the running statistics mean
    different channels under each grouping, so a mismatching ``load_state_dict`` is refused).
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
        isqrt_method: str = "auto",
        refresh_every: int = 1,
        refresh_stats: str = "running",
        refresh_warmup: int = 0,
        covariance_grad: str = "statistics",
        padding_mode: str = "zeros",
        device=None,
        dtype=None,
    ) -> None:
        if padding_mode != "zeros":
            raise ValueError(f"FastDeconv supports padding_mode='zeros' only, got {padding_mode!r}")
        if isinstance(padding, str):
            raise ValueError("FastDeconv needs explicit integer padding (string padding like 'same' is not supported)")
        _validate.positive_int("in_channels", in_channels)
        _validate.positive_int("out_channels", out_channels)
        _validate.positive_int("groups", groups)
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
            padding_mode, device=device, dtype=dtype,
        )
        _validate.positive_int("block", block)
        _validate.positive_int("n_iter", n_iter)
        _validate.positive_int("sampling_stride", sampling_stride)
        _validate.positive_int("freeze_iter", freeze_iter)
        self.refresh_every = _validate.positive_int("refresh_every", refresh_every)
        self.refresh_stats = _validate.choice("refresh_stats", refresh_stats, REFRESH_STATS)
        self.refresh_warmup = _validate.non_negative_int("refresh_warmup", refresh_warmup)
        self.covariance_grad = _validate.choice("covariance_grad", covariance_grad, COVARIANCE_GRADS)
        if grouping not in GROUPINGS:
            raise ValueError(f"grouping must be one of {GROUPINGS}, got {grouping!r}")
        if self.kernel_size[0] != self.kernel_size[1]:
            raise ValueError(f"FastDeconv needs a square kernel, got {self.kernel_size}")
        self.eps = _validate.positive_float("eps", eps)
        self.momentum = _validate.unit_interval("momentum", momentum)
        self.n_iter = n_iter
        self.requested_block = block
        self.block = effective_block(in_channels, block, groups)
        self.sampling_stride = sampling_stride
        self.freeze = bool(freeze)
        self.freeze_iter = freeze_iter
        self.grouping = grouping
        self.isqrt_method = _validate.choice("isqrt_method", isqrt_method, ISQRT_METHODS)
        k2 = self.kernel_size[0] * self.kernel_size[1]
        self.num_features = self.block * k2  # size of one covariance
        self.num_blocks = in_channels // self.block  # G (groups == 1) or `groups`
        factory = {"device": device, "dtype": dtype}
        if groups == 1:
            self.register_buffer("running_mean", torch.zeros(self.num_features, **factory))
            self.register_buffer("running_deconv", torch.eye(self.num_features, **factory))
        else:
            self.register_buffer("running_mean", torch.zeros(in_channels * k2, **factory))
            eye = torch.eye(self.num_features, **factory)
            self.register_buffer("running_deconv", eye.repeat(groups, 1, 1))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))
        if self.groups == 1 and self.num_blocks > 1:  # only then does the grouping change what D means
            self.register_buffer("grouping_code", torch.tensor(GROUPINGS.index(grouping), device=device))
        self._register_last_statistics()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        """Refuse running statistics saved under the other grouping (same shapes, other meaning:
        ``running_deconv`` would whiten the wrong features); accept state dicts written before
        ``grouping_code`` existed, whose layers all used their constructor's grouping."""
        key = prefix + "grouping_code"
        if hasattr(self, "grouping_code") and key in state_dict:
            saved = int(state_dict[key])
            if saved != GROUPINGS.index(self.grouping):
                saved_name = repr(GROUPINGS[saved]) if 0 <= saved < len(GROUPINGS) else f"<unknown code {saved}>"
                error_msgs.append(
                    f"{prefix.rstrip('.') or type(self).__name__}: its running statistics were saved with "
                    f"grouping={saved_name} but this layer uses grouping={self.grouping!r}; build the model "
                    f"with the grouping it was trained with"
                )
                return
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        if key in missing_keys:  # a state dict from before the code was stored: nothing to check
            missing_keys.remove(key)

    # ----------------------------------------------------------------------------------
    @property
    def statistics_stride(self) -> int:
        """The stride of the sampled patch grid: ``sampling_stride * conv stride``."""
        return self.sampling_stride * self.stride[0]

    def sampled_rows(self, x: torch.Tensor) -> tuple[int, int]:
        """``(rows, features)`` of each covariance this layer estimates from input ``x``: the
        patches sampled at stride ``statistics_stride`` over the batch (1x1 kernels: every
        ``s^2``-th pixel), times the blocks stacked into one covariance when ``groups == 1``."""
        N, _, H, W = x.shape
        s = self.statistics_stride
        if self.kernel_size == (1, 1):
            rows = -(-N * H * W // (s * s))
        else:
            spans = [d * (self.kernel_size[0] - 1) + 1 for d in self.dilation]
            grid = [max(0, (size + 2 * p - span) // s + 1) for size, p, span in zip((H, W), self.padding, spans)]
            rows = N * grid[0] * grid[1]
        return rows * (self.num_blocks if self.groups == 1 else 1), self.num_features

    def is_frozen(self, step: int | None = None) -> bool:
        """Whether training step ``step`` (default: the next) uses the running statistics
        (public-code freezing)."""
        if not self.freeze:
            return False
        step = self.training_step() if step is None else step
        return step % (10 * self.freeze_iter) > self.freeze_iter

    def estimates_statistics(self, step: int | None = None) -> bool:
        """Whether training step ``step`` (default: the next) estimates the batch statistics
        (not frozen, and a refresh step: ``step % refresh_every == 0``); otherwise it whitens
        with the running statistics as constants."""
        step = self.training_step() if step is None else step
        if self.is_frozen(step):
            return False
        return self.is_refresh_step(step)

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"FastDeconv expects a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(f"FastDeconv expects a 4-D input (N, C, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"FastDeconv was built for {self.in_channels} input channels, got {x.shape[1]} "
                f"(input shape {tuple(x.shape)})"
            )

    def batch_statistics(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and whitening matrix ``D`` of the sampled patches of ``x`` (no buffer update)."""
        X, features_first, order = _layer_patches(self, x)
        grad_dtype = _covariance_grad_dtype(self, X)
        if X.dtype != self.running_deconv.dtype:  # autocast: statistics in the buffers' dtype
            X = X.to(self.running_deconv.dtype)
        in_place = _owned_by_layer(X, x)
        mean, cov = _centered_covariance_of_patches(X, self.eps, in_place, features_first, grad_dtype)
        _raise_if_not_finite(cov, type(self).__name__)
        deconv = isqrt_of_rows(cov, X, mean, self.eps, self.n_iter, self.isqrt_method, in_place, features_first)
        if order is not None:  # X's features were permuted: so are its mean, covariance and Cov^(-1/2)
            mean, deconv = mean[..., order], deconv[..., order, :][..., order]
        return mean.reshape(self.running_mean.shape), deconv

    def folded_weight_and_bias(
        self, mean: torch.Tensor, deconv: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``W' = W D`` and ``b' = b - sum over blocks of W'_g mu`` (same grouping as the data)."""
        C_out = self.out_channels
        if self.groups == 1:
            w = group_features(self.weight.reshape(C_out, -1), self.num_blocks, self.grouping)
            w = w @ deconv  # (C_out, G, B*k*k)
            shift = (w @ mean).sum(dim=1)  # sum over blocks of W'_g mu
            w = ungroup_features(w, self.grouping)
        else:
            w = self.weight.reshape(self.groups, C_out // self.groups, self.num_features) @ deconv
            shift = (w @ mean.reshape(self.groups, self.num_features, 1)).reshape(C_out)
        bias = -shift if self.bias is None else self.bias - shift
        return w.reshape(self.weight.shape), bias

    def whitened_weight_and_bias(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The step's statistics (batch or running; updates the buffers and the counter in
        training mode) folded into ``(W', b')``."""
        mean, deconv = self.step_statistics(x)
        return self.folded_weight_and_bias(mean, deconv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        with _without_autocast(x.device.type):
            w, b = self.whitened_weight_and_bias(x)
        return F.conv2d(x, w, b, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        s += (
            f", block={self.block}, eps={self.eps}, n_iter={self.n_iter}, momentum={self.momentum}, "
            f"sampling_stride={self.sampling_stride}"
        )
        if self.groups == 1 and self.num_blocks > 1:
            s += f", grouping={self.grouping}"
        if self.freeze:
            s += f", freeze=True, freeze_iter={self.freeze_iter}"
        return s + self._schedule_repr()


# --------------------------------------------------------------------------------------
# Linear layer
# --------------------------------------------------------------------------------------
class Delinear(_StepCounter, nn.Linear):
    """A drop-in for :class:`torch.nn.Linear` whose input features are whitened in blocks.

    The ``in_features`` are cut into contiguous blocks of ``block`` features (block rule as in
    :func:`effective_block`); all blocks share one covariance.  Mean, covariance,
    Newton-Schulz, running averages and the fold into the weight follow :class:`FastDeconv`,
    and so do ``refresh_every`` (statistics on training steps ``0, k, 2k, ...`` of
    ``num_batches_tracked`` only) and ``refresh_stats`` (the running values or the last
    estimate as constants on the other steps).  A batch with few rows for its ``block`` features
    (VGG-16's 512-feature classifier at batch 128) takes its eigenvectors from the rows on the
    spectral route (:func:`isqrt_newton_schulz_lowrank`).
    """

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
        isqrt_method: str = "auto",
        refresh_every: int = 1,
        refresh_stats: str = "running",
        refresh_warmup: int = 0,
        covariance_grad: str = "statistics",
        device=None,
        dtype=None,
    ) -> None:
        _validate.positive_int("in_features", in_features)
        _validate.positive_int("out_features", out_features)
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        _validate.positive_int("block", block)
        _validate.positive_int("n_iter", n_iter)
        self.eps = _validate.positive_float("eps", eps)
        self.momentum = _validate.unit_interval("momentum", momentum)
        self.n_iter = n_iter
        self.isqrt_method = _validate.choice("isqrt_method", isqrt_method, ISQRT_METHODS)
        self.refresh_every = _validate.positive_int("refresh_every", refresh_every)
        self.refresh_stats = _validate.choice("refresh_stats", refresh_stats, REFRESH_STATS)
        self.refresh_warmup = _validate.non_negative_int("refresh_warmup", refresh_warmup)
        self.covariance_grad = _validate.choice("covariance_grad", covariance_grad, COVARIANCE_GRADS)
        self.requested_block = block
        self.block = effective_block(in_features, block)
        factory = {"device": device, "dtype": dtype}
        self.register_buffer("running_mean", torch.zeros(self.block, **factory))
        self.register_buffer("running_deconv", torch.eye(self.block, **factory))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))
        self._register_last_statistics()

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"Delinear expects a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 2:
            raise ValueError(f"Delinear expects a 2-D input (N, features), got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_features:
            raise ValueError(f"Delinear was built for {self.in_features} input features, got {x.shape[1]}")

    def estimates_statistics(self, step: int | None = None) -> bool:
        """Whether training step ``step`` (default: the next) estimates the batch statistics
        (a refresh step)."""
        return self.is_refresh_step(self.training_step() if step is None else step)

    def sampled_rows(self, x: torch.Tensor) -> tuple[int, int]:
        """``(rows, features)`` of the covariance estimated from input ``x`` (the blocks of
        every sample stacked)."""
        return x.shape[0] * (self.in_features // self.block), self.block

    def batch_statistics(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        X = x.reshape(-1, self.block)
        grad_dtype = _covariance_grad_dtype(self, X)
        if X.dtype != self.running_deconv.dtype:  # autocast: statistics in the buffers' dtype
            X = X.to(self.running_deconv.dtype)
        mean, cov = centered_covariance(X, self.eps, grad_dtype)
        _raise_if_not_finite(cov, type(self).__name__)
        return mean, isqrt_of_rows(cov, X, mean, self.eps, self.n_iter, self.isqrt_method)

    def whitened_weight_and_bias(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The step's statistics (batch or running; updates the buffers and the counter in
        training mode) folded into ``(W', b')``."""
        mean, deconv = self.step_statistics(x)
        w = self.weight.reshape(self.out_features, -1, self.block) @ deconv
        shift = (w @ mean).sum(dim=1)
        bias = -shift if self.bias is None else self.bias - shift
        return w.reshape(self.weight.shape), bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        with _without_autocast(x.device.type):
            w, b = self.whitened_weight_and_bias(x)
        return F.linear(x, w, b)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        s += f", block={self.block}, eps={self.eps}, n_iter={self.n_iter}, momentum={self.momentum}"
        return s + self._schedule_repr()


# --------------------------------------------------------------------------------------
# Channel deconvolution
# --------------------------------------------------------------------------------------
class ChannelDeconv(nn.Module):
    """Whitens the channels of a feature map (or the features of a vector) in one block.

    The first ``c = (C // block) * block`` channels are cut into ``block`` interleaved
    groups (as the public code does, channel ``j + i*(c/block)`` goes to row ``i``) that share
    one ``block x block`` covariance; their centred values are multiplied by its inverse
    square root.  The leftover ``C - c`` channels are standardised with one scalar mean and
    variance.  Statistics use every ``sampling_stride**2``-th value when the map is at least
    ``sampling_stride`` wide.  On the very first training batch the running buffers are set
    to the batch values (not averaged towards their initial values), as in the public code.
    The public code uses this layer only when the decorrelated linear classifier is off.
    """

    def __init__(self, block: int, eps: float = 1e-2, n_iter: int = 5, momentum: float = 0.1, sampling_stride: int = 3):
        super().__init__()
        self.block = _validate.positive_int("block", block)
        self.n_iter = _validate.positive_int("n_iter", n_iter)
        self.sampling_stride = _validate.positive_int("sampling_stride", sampling_stride)
        self.eps = _validate.positive_float("eps", eps)
        self.momentum = _validate.unit_interval("momentum", momentum)
        self.register_buffer("running_mean1", torch.zeros(block, 1))
        self.register_buffer("running_deconv", torch.eye(block))
        self.register_buffer("running_mean2", torch.zeros(1, 1))
        self.register_buffer("running_var", torch.ones(1, 1))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def _track(self, buffer: torch.Tensor, value: torch.Tensor) -> None:
        with torch.no_grad():
            if int(self.num_batches_tracked) == 0:
                buffer.copy_(value.detach())
            else:
                buffer.lerp_(value.detach(), self.momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"ChannelDeconv expects a torch.Tensor, got {type(x).__name__}")
        if x.dim() not in (2, 4):
            raise ValueError(f"ChannelDeconv expects (N, C) or (N, C, H, W), got shape {tuple(x.shape)}")
        shape = x.shape
        if x.dim() == 2:
            x = x[:, :, None, None]
        N, C, H, W = x.shape
        B = self.block
        c = (C // B) * B
        if c == 0:
            raise ValueError(f"ChannelDeconv block={B} is larger than the {C} channels; use block <= {C}")
        subsample = self.sampling_stride > 1 and H >= self.sampling_stride and W >= self.sampling_stride
        step = self.sampling_stride**2 if subsample else 1

        x1 = x[:, :c].permute(1, 0, 2, 3).reshape(B, -1)
        if self.training:
            x1_s = x1[:, ::step]
            mean1 = x1_s.mean(dim=-1, keepdim=True)
            xs_c = x1_s - mean1
            eye = torch.eye(B, dtype=x.dtype, device=x.device)
            cov = xs_c @ xs_c.t() / xs_c.shape[1] + self.eps * eye
            _raise_if_not_finite(cov, type(self).__name__)
            deconv = isqrt_newton_schulz(cov, self.n_iter)
            self._track(self.running_mean1, mean1)
            self._track(self.running_deconv, deconv)
        else:
            mean1, deconv = self.running_mean1, self.running_deconv
        out = (deconv @ (x1 - mean1)).reshape(c, N, H, W).permute(1, 0, 2, 3)

        if c != C:
            rest = x[:, c:]
            if self.training:
                rest_s = rest.reshape(N, -1)[:, ::step]
                mean2, var = rest_s.mean(), rest_s.var()
                self._track(self.running_mean2, mean2.reshape(1, 1))
                self._track(self.running_var, var.reshape(1, 1))
            else:
                mean2, var = self.running_mean2, self.running_var
            out = torch.cat([out, (rest - mean2) / (var + self.eps).sqrt()], dim=1)
        if self.training:
            self.num_batches_tracked.add_(1)
        return out.reshape(shape)

    def extra_repr(self) -> str:
        return (
            f"block={self.block}, eps={self.eps}, n_iter={self.n_iter}, momentum={self.momentum}, "
            f"sampling_stride={self.sampling_stride}"
        )
