"""Patch extraction of 3x3 FastDeconv layers sampled at stride 3: ``F.unfold`` (the layer's
route for kernels smaller than twice the sampling stride) against the strided-window view
(its route for larger kernels), forward + backward, interleaved rounds.

At stride 3 a 3x3 kernel's sampled patches do not overlap, so the patch matrix is a strided
view of the padded input and one permuting copy; this times whether that beats im2col.  Both
routes give the same matrix (checked before timing).  Input is SYNTHETIC random tensors: a
timing only.  Usage::

    python tools/bench_patch_routes.py --threads 2 --rounds 7
"""
from __future__ import annotations

import statistics
import time

import torch
from _common import machine_line, rounds_parser, start_timing

from ndlib.layers import FastDeconv
from ndlib.patches import _patch_matrix, _stacked_patches_from_windows

#: VGG-16's 3x3 layers at batch 128 on CIFAR (input channels, map size), ResNet-18's first block.
SHAPES = [(64, 32), (128, 16), (256, 8), (512, 4), (512, 2)]


def _time(route, layer: FastDeconv, x: torch.Tensor, grad: torch.Tensor) -> float:
    t0 = time.perf_counter()
    X = route(layer, x)
    (dx,) = torch.autograd.grad(X, x, grad)
    del X, dx
    return time.perf_counter() - t0


def main() -> None:
    parser = rounds_parser(__doc__, rounds=7)
    args = parser.parse_args()
    start_timing(args)
    routes = {"unfold": lambda layer, x: _patch_matrix(layer, x)[0], "windows": _stacked_patches_from_windows}
    print(machine_line(args.threads, args.batch_size, f"{args.rounds} interleaved rounds (SYNTHETIC input)"))
    print("channels  map  rows x features   unfold s   windows s   windows / unfold [min, max]")
    for channels, size in SHAPES:
        layer = FastDeconv(channels, channels, 3, padding=1)
        x = torch.randn(args.batch_size, channels, size, size, requires_grad=True)
        X_unfold, X_windows = (route(layer, x) for route in routes.values())
        if not torch.equal(X_unfold, X_windows):
            raise SystemExit(f"routes disagree for {channels} channels at {size}x{size}")
        grad = torch.randn_like(X_unfold)
        del X_unfold, X_windows
        for route in routes.values():  # warm-up
            _time(route, layer, x, grad)
        times = {name: [] for name in routes}
        order = list(routes)
        for r in range(args.rounds):
            for name in (order if r % 2 == 0 else order[::-1]):
                times[name].append(_time(routes[name], layer, x, grad))
        ratios = [w / u for u, w in zip(times["unfold"], times["windows"])]
        print(f"{channels:8d} {size:4d}  {grad.shape[0]:6d} x {grad.shape[1]:<6d}  "
              f"{statistics.median(times['unfold']):9.4f}  {statistics.median(times['windows']):10.4f}   "
              f"{statistics.median(ratios):.2f} [{min(ratios):.2f}, {max(ratios):.2f}]")


if __name__ == "__main__":
    main()
