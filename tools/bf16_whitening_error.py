"""How far each implementation's whitening matrix moves under CPU bfloat16 autocast.

The public algorithm (``ndlib._reference``) has no autocast handling: its covariance (``addmm``)
and Newton-Schulz products are autocast ops, so under bf16 autocast they run in bf16 (8 mantissa
bits).  ndlib turns autocast off for its statistics and computes them in float32.  This trains
one step of one 3x3 layer (64 channels, correlated channels of unequal scale, SYNTHETIC input)
in bf16 autocast with each implementation and compares the whitening matrix it estimated (read
back from its running buffer) with the same step in float64.  A precision check, not a timing.
Usage::

    python tools/bf16_whitening_error.py --batch-size 128
"""
from __future__ import annotations

import argparse

import torch
from _common import positive_int

from ndlib._reference import ReferenceFastDeconv
from ndlib.layers import FastDeconv


def whitening_from_one_step(layer: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The batch whitening matrix of one training step: the running buffer starts at I and moves
    ``momentum`` of the way to the batch estimate."""
    layer.train()
    layer(x)
    eye = torch.eye(layer.running_deconv.shape[-1], dtype=torch.float64)
    return (layer.running_deconv.double() - (1 - layer.momentum) * eye) / layer.momentum


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=positive_int, default=128)
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.randn(args.batch_size, 64, 32, 32) * torch.linspace(0.2, 3.0, 64).view(1, 64, 1, 1)
    x = x + 0.5 * x.roll(1, dims=1)  # correlated channels
    print(f"one 3x3 layer, 64 channels, batch {args.batch_size} at 32x32, one training step (SYNTHETIC input)")
    for name, cls in (("public", ReferenceFastDeconv), ("ndlib", FastDeconv)):
        torch.manual_seed(1)
        exact = whitening_from_one_step(cls(64, 64, 3, padding=1).double(), x.double())
        torch.manual_seed(1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast = whitening_from_one_step(cls(64, 64, 3, padding=1), x.to(torch.bfloat16))
        error = ((fast - exact).norm() / exact.norm()).item()
        print(f"{name:7s} whitening matrix under bf16 autocast: relative error {error:.1e} against float64")


if __name__ == "__main__":
    main()
