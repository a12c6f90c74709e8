"""Two settings of one model's train step, interleaved: float32 against bf16, NCHW against channels_last, or
ND's covariance backward in float32 against bf16.

``bench`` times a whole sweep in one setting, and another setting is another record taken minutes
apart; this puts two settings of the SAME model (one set of initial weights) side by side in every
round, so their ratio holds even on a machine with other work on it.  It answers the campaign's
questions in the setting the lanes train in (1 thread, batch 128, freed memory kept;
``ndlib.cpu_memory``):

* ``--compare precision``: does an architecture gain from bfloat16 autocast?  One model, stepped
  in float32 and in bf16 in turn (``--channels-last``: both in that layout).
* ``--compare layout``: does it gain from the channels_last memory format (``TrainConfig.
  channels_last``)?  Two copies of one model, one converted to channels_last and fed a
  channels_last batch, each with its own optimizer; ``--amp`` runs both in bf16.
* ``--compare covariance-grad``: does ND's step gain from ``covariance_grad="input"``
  (``TrainConfig.deconv_covariance_grad``, the covariance's backward product in bf16)?  Two
  copies of one ND model in bf16, the second with the option (``--channels-last``: both in that
  layout); BN has no covariance, so ND only.

SYNTHETIC input (timing only), BN and ND (ndlib's exact layer) per architecture, the order of the
two settings alternating every round.  Usage::

    python tools/bench_step_settings.py --arch efficientnetb0,pnasneta --threads 1 --rounds 5
    python tools/bench_step_settings.py --compare layout --amp --arch resnet18 --threads 1
    python tools/bench_step_settings.py --compare precision --channels-last --arch pnasneta --threads 1
    python tools/bench_step_settings.py --compare covariance-grad --channels-last --arch resnet18 --threads 1
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from _common import machine_line, rounds_parser, start_timing

from ndlib import models as model_zoo
from ndlib.bench import _train_step
from ndlib.cpu_memory import keep_freed_memory


def _arch_list(text: str) -> list[str]:
    """``argparse`` type: comma-separated architectures of the model registry."""
    archs = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in archs if name not in model_zoo.available()]
    if not archs or unknown:
        raise argparse.ArgumentTypeError(f"unknown architecture(s) {unknown or text!r}; "
                                         f"choose from {', '.join(model_zoo.available())}")
    return archs


def settings(compare: str, amp: bool = False, channels_last: bool = False) -> dict[str, dict]:
    """The two settings compared, baseline first: ``{name: {"amp": bool, "channels_last": bool,
    "covariance_grad": str}}``; ``amp`` fixes the precision of a layout comparison, ``channels_last``
    the layout of a precision or covariance-grad one."""
    if compare == "precision":
        return {"fp32": {"amp": False, "channels_last": channels_last, "covariance_grad": "statistics"},
                "bf16": {"amp": True, "channels_last": channels_last, "covariance_grad": "statistics"}}
    if compare == "covariance-grad":
        return {"fp32-grad": {"amp": True, "channels_last": channels_last, "covariance_grad": "statistics"},
                "bf16-grad": {"amp": True, "channels_last": channels_last, "covariance_grad": "input"}}
    return {"nchw": {"amp": amp, "channels_last": False, "covariance_grad": "statistics"},
            "channels_last": {"amp": amp, "channels_last": True, "covariance_grad": "statistics"}}


def _with_covariance_grad(model: torch.nn.Module, covariance_grad: str) -> torch.nn.Module:
    """``model`` with every ND layer's ``covariance_grad`` set (a constructor option, read per step)."""
    for module in model.modules():
        if hasattr(module, "covariance_grad"):
            module.covariance_grad = covariance_grad
    return model


def time_settings(arch: str, norm: str, images, labels, num_classes: int, rounds: int,
                  variants: dict[str, dict]) -> dict[str, list[float]]:
    """Step seconds per setting: one warm-up step each, then ``rounds`` interleaved pairs."""
    torch.manual_seed(0)
    model = model_zoo.create(arch, num_classes=num_classes, norm=norm).train()
    steps = {}
    for name, setting in variants.items():
        layout = torch.channels_last if setting["channels_last"] else torch.contiguous_format
        shared = [step for other, step in steps.items() if step[2].is_contiguous(memory_format=layout)
                  and variants[other]["covariance_grad"] == setting["covariance_grad"]]
        if shared:  # settings that differ in precision only share the model (and its optimizer)
            steps[name] = (*shared[0][:3], setting["amp"])
            continue
        # its own copy: the conversion changes the parameters' layout, the option the ND layers
        converted = _with_covariance_grad(copy.deepcopy(model).to(memory_format=layout), setting["covariance_grad"])
        optimizer = torch.optim.SGD(converted.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-3)
        steps[name] = (converted, optimizer, images.contiguous(memory_format=layout), setting["amp"])
    for step in steps.values():
        _train_step(*step[:3], labels, step[3])
    times: dict[str, list[float]] = {name: [] for name in steps}
    order = list(steps)
    for r in range(rounds):
        for name in (order if r % 2 == 0 else order[::-1]):
            net, optimizer, batch, amp = steps[name]
            start = time.perf_counter()
            _train_step(net, optimizer, batch, labels, amp)
            times[name].append(time.perf_counter() - start)
    if not all(torch.isfinite(p).all() for net, *_ in steps.values() for p in net.parameters()):
        raise SystemExit(f"{arch} {norm}: non-finite parameters after the timed steps; the timing is void")
    return times


def main() -> None:
    parser = rounds_parser(__doc__, rounds=5)
    parser.add_argument("--arch", type=_arch_list, default=["efficientnetb0"])
    parser.add_argument("--num-classes", type=int, default=100, choices=[10, 100])
    parser.add_argument("--compare", choices=["precision", "layout", "covariance-grad"], default="precision")
    parser.add_argument("--amp", action="store_true", help="with --compare layout: both layouts in bf16")
    parser.add_argument("--channels-last", action="store_true",
                        help="with --compare precision or covariance-grad: both settings channels_last")
    args = parser.parse_args()
    if args.amp and args.compare != "layout":
        parser.error("--amp applies to --compare layout only (--compare precision times both precisions)")
    if args.channels_last and args.compare == "layout":
        parser.error("--channels-last applies to --compare precision and covariance-grad (--compare layout times "
                     "both layouts)")
    start_timing(args)
    kept = keep_freed_memory()
    images = torch.randn(args.batch_size, 3, 32, 32)
    labels = torch.arange(args.batch_size) % args.num_classes
    variants = settings(args.compare, args.amp, args.channels_last)
    base, other = variants
    if args.compare in ("precision", "covariance-grad"):
        precision = ", channels_last" if args.channels_last else ", contiguous layout"
        precision = (", bf16 autocast" if args.compare == "covariance-grad" else "") + precision
    else:
        precision = ", bf16 autocast" if args.amp else ", float32"
    print(machine_line(args.threads, args.batch_size, f"{args.rounds} interleaved rounds (SYNTHETIC input){precision}, "
                       f"freed memory {'kept' if kept else 'NOT kept'}"))
    print(f"arch            norm {base:>8s} s {other:>8s} s   {other} / {base} [min, max]")
    for arch in args.arch:
        for norm in (("nd",) if args.compare == "covariance-grad" else ("bn", "nd")):
            times = time_settings(arch, norm, images, labels, args.num_classes, args.rounds, variants)
            ratios = [b / a for a, b in zip(times[base], times[other])]
            print(f"{arch:15s} {norm:4s} {statistics.median(times[base]):10.3f} {statistics.median(times[other]):10.3f}"
                  f"   {statistics.median(ratios):.2f} [{min(ratios):.2f}, {max(ratios):.2f}]", flush=True)


if __name__ == "__main__":
    main()
