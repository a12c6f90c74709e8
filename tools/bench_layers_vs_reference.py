"""Each deconvolution layer of a model, ndlib against the public algorithm
(``ndlib._reference``), forward + backward on the layer's own input, interleaved rounds.

`python -m ndlib bench` compares whole train steps; this says which layers make the
difference.  Each layer's input is captured from one training-mode forward of the ND model on
a SYNTHETIC batch; both versions of the layer (same weights, ``to_reference``) then run alone
on it, forward and backward (input, weight and bias gradients), in alternating order.  The
table groups the layers by kind (k x k, groups) and prints the totals.  Usage::

    python tools/bench_layers_vs_reference.py --arch resnext29 --threads 2 --rounds 5
"""
from __future__ import annotations

import statistics
import time
from collections import defaultdict

import torch
from _common import machine_line, rounds_parser, start_timing
from torch import nn

from ndlib import models
from ndlib._reference import to_reference
from ndlib.bench import layer_inputs
from ndlib.layers import Delinear, FastDeconv


def _time(layer: nn.Module, x: torch.Tensor) -> float:
    leaf = x.detach().requires_grad_()
    t0 = time.perf_counter()
    out = layer(leaf)
    torch.autograd.grad(out, [leaf, *layer.parameters()], torch.ones_like(out))
    return time.perf_counter() - t0


def _kind(layer: nn.Module) -> str:
    if isinstance(layer, Delinear):
        return f"linear {layer.in_features}"
    return f"{layer.kernel_size[0]}x{layer.kernel_size[0]}" + (f" groups {layer.groups}" if layer.groups > 1 else "")


def main() -> None:
    parser = rounds_parser(__doc__, rounds=5)
    parser.add_argument("--arch", required=True, choices=models.available(table=1))
    parser.add_argument("--layers", action="store_true", help="also print every layer")
    args = parser.parse_args()
    start_timing(args)
    ours = models.create(args.arch, num_classes=10, norm="nd")
    public = to_reference(ours)
    inputs = layer_inputs(ours, torch.randn(args.batch_size, 3, 32, 32),
                          lambda module: isinstance(module, (FastDeconv, Delinear)))
    layers = dict(ours.named_modules())
    reference_layers = dict(public.named_modules())
    print(f"{args.arch}: " + machine_line(args.threads, args.batch_size,
                                          f"{args.rounds} interleaved rounds after a warm-up (SYNTHETIC input)"))
    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    for name, x in inputs.items():
        pair = {"ndlib": layers[name], "reference": reference_layers[name]}
        for layer in pair.values():
            _time(layer, x)
        times = {impl: [] for impl in pair}
        order = list(pair)
        for r in range(args.rounds):
            for impl in (order if r % 2 == 0 else order[::-1]):
                times[impl].append(_time(pair[impl], x))
        ndlib_s, reference_s = statistics.median(times["ndlib"]), statistics.median(times["reference"])
        kind = _kind(layers[name])
        totals[kind][0] += ndlib_s
        totals[kind][1] += reference_s
        totals[kind][2] += 1
        if args.layers:
            print(f"  {name:40s} {kind:18s} in {tuple(x.shape)}  ndlib {ndlib_s:.4f} s  reference {reference_s:.4f} s"
                  f"  {ndlib_s / reference_s:.2f}")
    print("kind                layers   ndlib s   reference s   ndlib / reference")
    for kind, (ndlib_s, reference_s, count) in sorted(totals.items(), key=lambda item: -item[1][1]):
        print(f"{kind:20s} {count:5d} {ndlib_s:9.3f} {reference_s:12.3f}   {ndlib_s / reference_s:.2f}")
    ndlib_s = sum(t[0] for t in totals.values())
    reference_s = sum(t[1] for t in totals.values())
    print(f"{'all':20s} {sum(t[2] for t in totals.values()):5d} {ndlib_s:9.3f} {reference_s:12.3f}   "
          f"{ndlib_s / reference_s:.2f}")


if __name__ == "__main__":
    main()
