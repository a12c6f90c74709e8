"""Recalibrate the running whitening of a network-deconvolution model: ``recalibrate(model, batches)``.

Why it is needed.  A deconvolution layer's running mean starts at 0 and its running whitening
``D`` at the identity, and each training step moves them by ``momentum`` (0.1) toward the
batch estimate.  Right after :func:`ndlib.deconvolve`, or after a few training steps, the
running values are still mostly the identity while the training-mode forward whitens with the
batch's ``D``: the eval-mode network then computes something else, and its outputs can be huge
(logits of 1e4 and more after 5 steps on torchvision's GoogLeNet, ShuffleNet, RegNet and
Wide-ResNet).  The same happens to a BatchNorm model, and the cure is the same as BN's
statistics recalibration (``torch.optim.swa_utils.update_bn``): forward passes in training
mode under ``no_grad`` that reset the running values to the average over a few batches.

What it changes.  Only the running buffers of the deconvolution layers (``running_mean``,
``running_deconv``, and ``last_mean``/``last_deconv`` where present).  During the passes each
layer estimates the batch statistics on every batch (whatever its ``freeze`` and
``refresh_every`` say) and averages them with weights ``1/(i+1)``, so the result is the plain
mean over the batches, not a momentum average that still remembers the identity.  Weights,
other modules (dropout and BatchNorms stay in eval mode), the step counters that drive
freezing and refreshing, and every train/eval flag are as they were before.

When to use it: before evaluating a model converted by ``deconvolve`` that has trained for
fewer than a few hundred steps, after loading weights without their running statistics, or
after changing the data (fine-tuning on other images).  A fully trained model does not need
it: its running statistics already average hundreds of steps.
"""
from __future__ import annotations

from itertools import islice
from typing import Iterable

import torch
from torch import nn

from ndlib.layers import Delinear, FastDeconv

__all__ = ["recalibrate"]


def recalibrate(model: nn.Module, batches: Iterable, *, steps: int | None = None) -> nn.Module:
    """Set the running statistics of ``model``'s deconvolution layers to their mean over batches.

    Args:
        model: a model holding :class:`~ndlib.layers.FastDeconv` / :class:`~ndlib.layers.Delinear`
            layers (e.g. from :func:`ndlib.deconvolve`).
        batches: an iterable of inputs, or of ``(input, target, ...)`` tuples (a ``DataLoader``
            works); the inputs must be on the model's device.  Training images are the usual choice.
        steps: use at most this many batches (default: all of ``batches``).  Fifty batches of
            128 are plenty for CIFAR-sized models.

    Returns ``model`` (changed in place).  Raises ``ValueError`` when the model has no
    deconvolution layer or ``batches`` is empty.
    """
    layers = [m for m in model.modules() if isinstance(m, (FastDeconv, Delinear))]
    if not layers:
        raise ValueError(
            "recalibrate: the model has no FastDeconv or Delinear layer (convert it with ndlib.deconvolve)"
        )
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0):
        raise ValueError(f"recalibrate: steps must be a positive int or None, got {steps!r}")
    modes = {m: m.training for m in model.modules()}
    settings = {m: (m.momentum, m.refresh_every, getattr(m, "freeze", False), m.num_batches_tracked.clone())
                for m in layers}
    used = 0
    try:
        model.eval()
        for layer in layers:
            layer.train()
            layer.refresh_every = 1
            if isinstance(layer, FastDeconv):
                layer.freeze = False
        with torch.no_grad():
            for used, batch in enumerate(islice(batches, steps), start=1):
                inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
                for layer in layers:
                    layer.momentum = 1.0 / used  # running value = mean of the batch estimates so far
                model(inputs)
        if used == 0:
            raise ValueError("recalibrate: batches gave no batch; pass a few batches of training inputs")
    finally:
        for layer, (momentum, refresh_every, freeze, counter) in settings.items():
            layer.momentum, layer.refresh_every = momentum, refresh_every
            if isinstance(layer, FastDeconv):
                layer.freeze = freeze
            layer.num_batches_tracked.copy_(counter)
        for module, training in modes.items():
            module.training = training
    with torch.no_grad():
        for layer in layers:
            if used and layer.uses_last_statistics():
                layer.last_mean.copy_(layer.running_mean)
                layer.last_deconv.copy_(layer.running_deconv)
    return model
