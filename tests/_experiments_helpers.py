"""Shared helpers for the Experiments tests: tiny models and tiny synthetic configurations."""
from __future__ import annotations

import torch
from torch import nn

from ndlib.layers import Delinear, FastDeconv
from ndlib.train import TrainConfig


def tiny_model(nd: bool = False, num_classes: int = 10, seed: int = 0) -> nn.Module:
    """A 2-layer conv net (BN or ND flavour) that trains in milliseconds on 8x8 images."""
    torch.manual_seed(seed)
    if nd:
        return nn.Sequential(
            FastDeconv(3, 8, 3, padding=1, block=3, sampling_stride=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(), Delinear(32, num_classes, block=16),
        )
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, num_classes),
    )


def tiny_config(tmp_path, **overrides) -> TrainConfig:
    """Synthetic 8x8 CIFAR-shaped data, 64 train / 32 test images, batch 16, CPU, files under tmp_path."""
    values = dict(arch="vgg16", norm="bn", dataset="cifar10", epochs=1, seed=0, batch_size=16, synthetic=True,
                  synthetic_train_size=64, synthetic_test_size=32, synthetic_image_size=8, device="cpu",
                  num_threads=1, runs_dir=str(tmp_path / "runs"), checkpoint_dir=str(tmp_path / "checkpoints"))
    values.update(overrides)
    return TrainConfig(**values)


class CallAt(nn.Module):
    """Wraps a model; at its ``call``-th training forward (1-based; 0: never) it runs ``action()``
    (raise an exception, send a signal, ...), so a test can stop a run at a chosen step."""

    def __init__(self, model: nn.Module, call: int = 0, action=None) -> None:
        super().__init__()
        self.model, self.call, self.action, self.calls = model, call, action, 0

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.calls == self.call:
                self.action()
        return self.model(x)


def raising(error: BaseException):
    """An action for :class:`CallAt` that raises ``error``."""
    def action():
        raise error
    return action
