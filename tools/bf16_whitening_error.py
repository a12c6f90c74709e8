"""How far each implementation's whitening matrix moves under CPU bfloat16 autocast.

The public algorithm (``ndlib._reference``) has no autocast handling: its covariance (``addmm``)
and Newton-Schulz products are autocast ops, so under bf16 autocast they run in bf16 (8 mantissa
bits).  ndlib turns autocast off for its statistics and computes them in float32.  This trains
one step of one 3x3 layer (64 channels, correlated channels of unequal scale, SYNTHETIC input)
in bf16 autocast with each implementation and compares the whitening matrix it estimated (read
back from its running buffer) with the same step in float64
(:func:`ndlib.whitening.bf16_whitening_errors`, which the timing chapter also calls).  A
precision check, not a timing.  Usage::

    python tools/bf16_whitening_error.py --batch-size 128
"""
from __future__ import annotations

import argparse

from _common import positive_int

from ndlib.whitening import bf16_whitening_errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=positive_int, default=128)
    args = parser.parse_args()
    print(f"one 3x3 layer, 64 channels, batch {args.batch_size} at 32x32, one training step (SYNTHETIC input)")
    for name, error in bf16_whitening_errors(batch_size=args.batch_size).items():
        print(f"{name:7s} whitening matrix under bf16 autocast: relative error {error:.1e} against float64")


if __name__ == "__main__":
    main()
