"""ndlib against the public algorithm in one memory layout: is a lead of the public algorithm
the algorithm, or the layout its convolutions happen to run in?

The public algorithm folds a one-block 1x1 layer (e.g. a 3-channel stem) through a weight view
whose strides PyTorch reads as channels-last; oneDNN then runs that convolution channels-last,
and every later convolution follows its input's layout.  ndlib's models stay contiguous.  Where
grouped convolutions are much faster channels-last (ResNeXt-29 and DPN-92 on some CPUs), the two
implementations are then timed in different layouts.  ``bench`` records how many convolutions
ran channels-last (the share ``nd_convs_channels_last``, :func:`ndlib.bench.conv_layouts`), and ``bench
--channels-last`` puts both in the channels-last layout: comparing the two settings separates
the layout from the algorithm.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ndlib.report.benchmarks import bench_sweep, ndlib_over_public

__all__ = ["layout_comparison", "layout_sentences"]

_COLUMNS = ["arch", "public_channels_last_share", "ndlib_channels_last_share", "ndlib_over_public",
            "ndlib_over_public_channels_last", "bn_channels_last_speedup", "bench_id", "channels_last_bench_id",
            "machine_type"]


def layout_comparison(bench: pd.DataFrame, archs: Sequence[str], **setting) -> pd.DataFrame:
    """One row per architecture in ``archs``: the share of each implementation's convolutions that
    ran channels-last in the newest default-layout benchmark of the setting (``setting``: as
    :func:`bench_sweep`, e.g. ``keep_freed_memory=True``), ndlib's ND step over the public
    algorithm's there and in the newest ``--channels-last`` benchmark, and BN's step in the
    default layout over BN's channels-last step (above 1: channels-last is faster for BN too).
    Both benchmarks must come from one machine (``machine_type``), or the channels-last columns
    stay NaN."""
    if bench.empty:
        return pd.DataFrame({"arch": list(archs)}).reindex(columns=_COLUMNS)
    plain = {impl: bench_sweep(bench, archs, implementation=impl, **setting).set_index("arch")
             for impl in ("ndlib", "reference")}
    # The channels-last benchmark's id and BN step: one record holds both implementations.
    reference_last = bench_sweep(bench, archs, implementation="reference", channels_last=True,
                                 **setting).set_index("arch")
    out = pd.DataFrame({"arch": list(archs)})
    reference = plain["reference"]
    same_machine = out["arch"].map(reference["machine_type"]) == out["arch"].map(reference_last["machine_type"])
    out["public_channels_last_share"] = out["arch"].map(reference["nd_convs_channels_last"])
    out["ndlib_channels_last_share"] = out["arch"].map(plain["ndlib"]["nd_convs_channels_last"])
    out["bench_id"] = out["arch"].map(reference["bench_id"])
    out["channels_last_bench_id"] = out["arch"].map(reference_last["bench_id"]).where(same_machine)
    out["ndlib_over_public"] = ndlib_over_public(bench, out["bench_id"])
    out["ndlib_over_public_channels_last"] = ndlib_over_public(bench, out["channels_last_bench_id"])
    bn_plain, bn_last = out["arch"].map(reference["bn_step_s"]), out["arch"].map(reference_last["bn_step_s"])
    out["bn_channels_last_speedup"] = (bn_plain / bn_last).where(same_machine)
    out["machine_type"] = out["arch"].map(reference["machine_type"])
    return out[_COLUMNS]


def layout_sentences(comparison: pd.DataFrame) -> list[str]:
    """What :func:`layout_comparison` says, per architecture where the public algorithm's ND step
    is faster than ndlib's in the default layout."""
    lines = []
    for row in comparison.itertuples():
        if not (row.ndlib_over_public > 1):  # NaN or ndlib faster: nothing to explain
            continue
        counts = (f"the public algorithm ran {row.public_channels_last_share:.0%} of its convolutions "
                  f"channels-last, ndlib {row.ndlib_channels_last_share:.0%}") \
            if not (np.isnan(row.public_channels_last_share) or np.isnan(row.ndlib_channels_last_share)) \
            else "the benchmark did not record the layouts"
        line = (f"{row.arch}: in the default layout ndlib's ND step is {row.ndlib_over_public:.2f}x the public "
                f"algorithm's ({counts}).")
        if np.isnan(row.ndlib_over_public_channels_last):
            line += " No channels-last benchmark of both on the same machine yet."
        elif row.ndlib_over_public_channels_last < 1:
            line += (f" With both channels-last, ndlib's is {row.ndlib_over_public_channels_last:.2f}x the public "
                     "algorithm's: the public algorithm's lead is its layout, not its algorithm.")
        else:
            line += (f" With both channels-last, ndlib's is still {row.ndlib_over_public_channels_last:.2f}x "
                     "the public algorithm's: the layout does not explain the lead.")
        lines.append(line)
    return lines
