"""Where a whole ND training step spends its time, ndlib against the public algorithm: the
torch profiler's self CPU time per operator, summed over a few steps of each, side by side.

`python -m ndlib bench` says which step is faster; `tools/bench_layers_vs_reference.py` times
the layers alone; this looks inside the whole steps, where layers overlap with the rest of the
model.  ``--against bn`` sets ndlib's ND step beside the BN step instead (where ND's extra time
goes); ``--amp`` profiles both under bfloat16 autocast, as ``train --amp``, and
``--channels-last`` both in the channels_last memory format (weights and batch), as
``train --channels-last``.  SYNTHETIC batch,
freed memory kept (as training runs).  Usage::

    python tools/profile_step.py --arch resnext29 --threads 2 --steps 2
    python tools/profile_step.py --arch vgg16 --threads 1 --against bn --amp
    python tools/profile_step.py --arch resnet18 --threads 1 --against bn --amp --channels-last
"""
from __future__ import annotations

import argparse
from collections import defaultdict

import torch
from _common import machine_line, positive_int
from torch.profiler import ProfilerActivity, profile

from ndlib import cpu_memory, models
from ndlib.bench import BenchConfig, _build_models, _train_step


def _self_cpu_seconds(model, images, labels, steps: int, amp: bool = False) -> tuple[dict[str, float], float]:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-3)
    _train_step(model, optimizer, images, labels, amp)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            _train_step(model, optimizer, images, labels, amp)
    totals: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        totals[event.key] += event.self_cpu_time_total / 1e6 / steps
    return totals, sum(totals.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", required=True, choices=models.available(table=1))
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.add_argument("--steps", type=positive_int, default=2)
    parser.add_argument("--batch-size", type=positive_int, default=128)
    parser.add_argument("--top", type=positive_int, default=25)
    parser.add_argument("--against", choices=["reference", "bn"], default="reference",
                        help="the step set beside ndlib's ND step: the public algorithm's ND (default) or BN")
    parser.add_argument("--amp", action="store_true", help="both steps under bfloat16 autocast")
    parser.add_argument("--channels-last", action="store_true",
                        help="both models and the batch in the channels_last memory format")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cpu_memory.keep_freed_memory()
    config = BenchConfig(arch=args.arch, batch_size=args.batch_size, implementations=("ndlib", "reference"),
                         channels_last=args.channels_last)
    built = _build_models(config, torch.device("cpu"))
    torch.manual_seed(0)
    images = torch.randn(args.batch_size, 3, 32, 32)
    if args.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (args.batch_size,))
    precision = ("bf16 autocast" if args.amp else "float32") + (", channels_last" if args.channels_last else "")
    print(f"{args.arch}: " + machine_line(args.threads, args.batch_size,
                                          f"{args.steps} profiled steps each after a warm-up (SYNTHETIC input), "
                                          f"freed memory kept, {precision}"))
    other = "nd_reference" if args.against == "reference" else "bn"
    ours, ours_total = _self_cpu_seconds(built["nd"], images, labels, args.steps, args.amp)
    theirs, theirs_total = _self_cpu_seconds(built[other], images, labels, args.steps, args.amp)
    print(f"self CPU seconds per step: ndlib {ours_total:.3f}, {args.against} {theirs_total:.3f}")
    print(f"{'operator':40s} {'ndlib s':>9s} {args.against + ' s':>12s} {'difference':>11s}")
    keys = sorted(set(ours) | set(theirs), key=lambda k: -abs(ours.get(k, 0.0) - theirs.get(k, 0.0)))
    for key in keys[:args.top]:
        a, b = ours.get(key, 0.0), theirs.get(key, 0.0)
        print(f"{key[:40]:40s} {a:9.3f} {b:12.3f} {a - b:+11.3f}")


if __name__ == "__main__":
    main()
