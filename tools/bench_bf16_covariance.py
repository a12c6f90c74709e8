"""The covariance product of ND's bf16 step: what it costs in float32 and what a bf16 product would.

Under bfloat16 autocast the ND layers keep their statistics in float32 (``ndlib.layers``): the
sampled patches, already bf16 values, are cast to float32 and ``XᵀX`` runs as a float32 GEMM.
Products of two bf16 numbers are exact in float32, so a bf16 GEMM that accumulated and returned
float32 would give the same covariance (up to summation order) at bf16 speed; PyTorch's CPU
``mm`` has no bf16-in / float32-out form (``aten::mm.dtype`` is CUDA-only), and a bf16 GEMM
rounds its output to bf16, 8 mantissa bits, which the statistics must not take.  This times,
on the patch matrices of VGG-16's 3x3 layers at batch 128 (sampling stride 3, SYNTHETIC
input), interleaved: the layer's route (cast + float32 GEMM), the float32 GEMM alone, and the
bf16 GEMM (bf16 output: the speed such a product could reach, not a usable route), with the
bf16 output's largest error relative to the covariance's largest entry.  Then the covariance's
backward product ``dX = Xc S``: it also runs in float32, but its result is cast to bf16 at once
(the patches it flows back into are bf16), so there a bf16 product is a candidate; it is timed
against the float32 one, with both results' errors.  Usage::

    python tools/bench_bf16_covariance.py --threads 2 --rounds 5
"""
from __future__ import annotations

import statistics
import time

import torch
from _common import machine_line, rounds_parser, start_timing

from ndlib.layers import FastDeconv
from ndlib.patches import _patch_matrix
from ndlib.whitening import relative_error

#: VGG-16's 3x3 layers at batch 128 on CIFAR (input channels, map size).
SHAPES = [(64, 32), (128, 16), (256, 8), (512, 4)]


def _seconds(product, X: torch.Tensor) -> float:
    t0 = time.perf_counter()
    product(X)
    return time.perf_counter() - t0


def _interleaved(products: dict, argument, rounds: int) -> dict[str, list[float]]:
    """Seconds of each product on ``argument``: one warm-up each, then ``rounds`` alternating rounds."""
    for product in products.values():
        _seconds(product, argument)
    times: dict[str, list[float]] = {name: [] for name in products}
    order = list(products)
    for r in range(rounds):
        for name in (order if r % 2 == 0 else order[::-1]):
            times[name].append(_seconds(products[name], argument))
    return times


def main() -> None:
    parser = rounds_parser(__doc__, rounds=5)
    args = parser.parse_args()
    start_timing(args)
    products = {"cast+fp32": lambda X: X.float().t() @ X.float(), "fp32": None, "bf16": lambda X: X.t() @ X}
    print(machine_line(args.threads, args.batch_size, f"{args.rounds} interleaved rounds (SYNTHETIC input)"))
    print("channels  map  rows x features   cast+fp32 s   fp32 s    bf16 s   bf16 / cast+fp32 [min, max]"
          "   bf16 rel. error")
    backward_rows = []
    for channels, size in SHAPES:
        layer = FastDeconv(channels, channels, 3, padding=1)
        x = torch.randn(args.batch_size, channels, size, size).to(torch.bfloat16)
        X = _patch_matrix(layer, x)[0].reshape(-1, layer.num_features).contiguous()  # bf16 values
        X32 = X.float()
        products["fp32"] = lambda _, X32=X32: X32.t() @ X32
        exact = X32.t() @ X32
        error = ((X.t() @ X).float() - exact).abs().max().item() / exact.abs().max().item()
        times = _interleaved(products, X, args.rounds)
        ratios = [b / c for c, b in zip(times["cast+fp32"], times["bf16"])]
        median = {name: statistics.median(values) for name, values in times.items()}
        print(f"{channels:8d} {size:4d}  {X.shape[0]:6d} x {X.shape[1]:<6d}  {median['cast+fp32']:11.4f}  "
              f"{median['fp32']:7.4f}  {median['bf16']:7.4f}   {statistics.median(ratios):.2f} "
              f"[{min(ratios):.2f}, {max(ratios):.2f}]{'':14s}{error:.1e}")
        backward_rows.append((channels, size, *_backward_product(X32, args.rounds)))
    print("\nThe covariance's backward, dX = Xc S (S = (G + G^T) / rows, a symmetric n x n upstream gradient): "
          "float32 now, its result then cast to bf16 for the bf16 patches; against a bf16 product. Errors: "
          "norm-wise, relative to float64")
    print("channels  map             fp32 s    bf16 s   bf16 / fp32 [min, max]   fp32 cast to bf16   bf16 product")
    for channels, size, fp32_s, bf16_s, ratios, cast_error, bf16_error in backward_rows:
        print(f"{channels:8d} {size:4d}  backward  {fp32_s:7.4f}   {bf16_s:7.4f}   {statistics.median(ratios):.2f} "
              f"[{min(ratios):.2f}, {max(ratios):.2f}]{'':13s}{cast_error:.1e}            {bf16_error:.1e}")


def _backward_product(X32: torch.Tensor, rounds: int) -> tuple:
    """Times and errors of the backward product on one patch matrix, float32 against bf16."""
    Xc = X32 - X32.mean(0)
    G = torch.randn(X32.shape[1], X32.shape[1])
    S = (G + G.t()) / X32.shape[0]
    Xc16, S16 = Xc.bfloat16(), S.bfloat16()
    times = _interleaved({"fp32": lambda _: Xc @ S, "bf16": lambda _: Xc16 @ S16}, None, rounds)
    exact = Xc.double() @ S.double()
    return (statistics.median(times["fp32"]), statistics.median(times["bf16"]),
            [b / f for f, b in zip(times["fp32"], times["bf16"])],
            relative_error((Xc @ S).bfloat16().double(), exact), relative_error((Xc16 @ S16).double(), exact))


if __name__ == "__main__":
    main()
