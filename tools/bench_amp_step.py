"""Float32 against bfloat16 autocast: the train step of one model in both precisions, interleaved.

``bench --amp`` times a whole sweep in bf16 and the float32 sweep is another record, taken minutes
apart; this puts the two precisions of the SAME model (one set of weights, one optimizer) side by
side in every round, so the bf16-over-float32 ratio holds even on a machine with other work on
it.  It answers a campaign question: does an architecture gain from bf16 in the setting the lanes
train in (1 thread, batch 128, freed memory kept; ``ndlib.cpu_memory``)?  SYNTHETIC input (timing
only), BN and ND (ndlib's exact layer) per architecture, the order of the precisions alternating
every round.  Usage::

    python tools/bench_amp_step.py --arch efficientnetb0,pnasneta --threads 1 --rounds 5
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from _common import machine_line, rounds_parser, start_timing

from ndlib import models as model_zoo
from ndlib.bench import _train_step
from ndlib.cpu_memory import keep_freed_memory

PRECISIONS = {"fp32": False, "bf16": True}


def _arch_list(text: str) -> list[str]:
    """``argparse`` type: comma-separated architectures of the model registry."""
    archs = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in archs if name not in model_zoo.available()]
    if not archs or unknown:
        raise argparse.ArgumentTypeError(f"unknown architecture(s) {unknown or text!r}; "
                                         f"choose from {', '.join(model_zoo.available())}")
    return archs


def time_precisions(arch: str, norm: str, images, labels, num_classes: int, rounds: int) -> dict[str, list[float]]:
    """Step seconds per precision: one warm-up step each, then ``rounds`` interleaved pairs."""
    torch.manual_seed(0)
    model = model_zoo.create(arch, num_classes=num_classes, norm=norm).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-3)
    for amp in PRECISIONS.values():
        _train_step(model, optimizer, images, labels, amp)
    times: dict[str, list[float]] = {name: [] for name in PRECISIONS}
    order = list(PRECISIONS)
    for r in range(rounds):
        for name in (order if r % 2 == 0 else order[::-1]):
            start = time.perf_counter()
            _train_step(model, optimizer, images, labels, PRECISIONS[name])
            times[name].append(time.perf_counter() - start)
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise SystemExit(f"{arch} {norm}: non-finite parameters after the timed steps; the timing is void")
    return times


def main() -> None:
    parser = rounds_parser(__doc__, rounds=5)
    parser.add_argument("--arch", type=_arch_list, default=["efficientnetb0"])
    parser.add_argument("--num-classes", type=int, default=100, choices=[10, 100])
    args = parser.parse_args()
    start_timing(args)
    kept = keep_freed_memory()
    images = torch.randn(args.batch_size, 3, 32, 32)
    labels = torch.arange(args.batch_size) % args.num_classes
    print(machine_line(args.threads, args.batch_size, f"{args.rounds} interleaved rounds (SYNTHETIC input), "
                       f"freed memory {'kept' if kept else 'NOT kept'}"))
    print("arch            norm   fp32 s   bf16 s   bf16 / fp32 [min, max]")
    for arch in args.arch:
        for norm in ("bn", "nd"):
            times = time_precisions(arch, norm, images, labels, args.num_classes, args.rounds)
            ratios = [b / f for f, b in zip(times["fp32"], times["bf16"])]
            fp32_s, bf16_s = statistics.median(times["fp32"]), statistics.median(times["bf16"])
            print(f"{arch:15s} {norm:4s} {fp32_s:8.3f} {bf16_s:8.3f}"
                  f"   {statistics.median(ratios):.2f} [{min(ratios):.2f}, {max(ratios):.2f}]", flush=True)


if __name__ == "__main__":
    main()
