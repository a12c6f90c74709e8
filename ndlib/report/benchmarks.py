"""What an ND step costs against a BN step, from our benchmarks (:func:`ndlib.bench.load_bench`,
:func:`ndlib.bench.load_stages`).

* :func:`bench_summary` lists every benchmark; :func:`bench_sweep` picks, per architecture, the
  newest benchmark of the exact layer in one setting (device, threads, batch, at least
  ``min_rounds`` interleaved rounds) and :func:`sweep_verdict` checks the median and the largest
  ND/BN ratio against the targets; :func:`setting_comparison` sets two sweeps side by side:
  without and with freed memory kept (:func:`memory_setting_comparison`, :mod:`ndlib.cpu_memory`)
  or in float32 and bfloat16 (:func:`precision_comparison`); the ``*_sentences`` functions say
  what changed.
* :func:`stage_breakdown` sums a benchmark's per-layer stage times (forward + backward) into
  the stages the layer runs: patch extraction, centring + covariance, Newton-Schulz, the fold
  into the weight, and the convolution itself.
* :func:`flop_overhead` counts ND's FLOPs per stage; :func:`exact_floor` sets the sweep beside a
  FLOP floor of the exact layer: the matrix products it cannot do without, at the convolutions'
  rate, and the measured time of the stages that floor leaves out (:func:`floor_sentences` says
  what that means for the targets).
"""
from __future__ import annotations

from typing import Collection, Sequence

import numpy as np
import pandas as pd

from ndlib import models, whitening
from ndlib.report.frames import require_columns
from ndlib.report.loading import load_average_text

#: Issue 11's targets for the exact layer on the project's CPU (2 threads, batch 128).
MEDIAN_TARGET = 1.5
MAX_TARGET = 2.0

#: Issue 30's targets, re-based on the FLOP floor (:func:`exact_floor`): every architecture's
#: measured ND/BN at most this multiple of its floor ...
FLOOR_MULTIPLE_TARGET = 1.25
#: ... and these architectures' ND/BN at most this ratio (VGG-16 is the furthest above its floor).
RATIO_TARGETS = {"vgg16": 1.80}


#: :func:`floor_sentences` reasons from :func:`exact_floor` only for architectures whose
#: floor plus measured outside stages is within this fraction of the measured ratio.
FLOOR_MODEL_TOLERANCE = 0.15


#: The stages a deconvolution layer runs, as ``--stages`` names them (the unfused "centering"
#: and "covariance" are timed too, for information, but the layer runs the fused stage).
_RUN_STAGES = {
    "patch_extraction": "patches",
    "center_covariance_fused": "centring + covariance",
    "newton_schulz": "Newton-Schulz",
    "weight_folding": "fold",
    "convolution": "convolution",
}


def bench_summary(bench: pd.DataFrame, latest_only: bool = False) -> pd.DataFrame:
    """Our benchmarks, one row per (benchmark, implementation): median step times, the median
    per-round ratio ND / BN and its range when recorded, with the time, commit and note.

    Every benchmark is kept by default: runs of different code versions or machine loads are
    different measurements, and hiding the older ones would hide how the number moved.
    ``latest_only=True`` keeps the newest per (device, threads, implementation, arch, batch,
    ``refresh_every`` when recorded).
    """
    keys = ["device_type", "machine_type", "num_threads", "implementation", "arch", "batch_size"]
    if "refresh_every" in bench.columns:  # refresh_every = k > 1 is another layer: never "the latest" of k = 1
        bench = bench.assign(refresh_every=bench["refresh_every"].fillna(1).astype(int))
        keys.append("refresh_every")
    cols = keys + ["bn_step_s", "nd_step_s", "ratio_nd_bn", "torch_version", "created_at"]
    optional = [c for c in ("ratio_min", "ratio_max", "rounds", "git_commit", "note")
                if c in bench.columns]
    if bench.empty:
        return pd.DataFrame(columns=cols + optional)
    require_columns(bench, cols, "the benchmark records")
    ordered = bench.sort_values(keys + ["created_at"])
    if latest_only:
        ordered = ordered.drop_duplicates(keys, keep="last")
    columns = keys + ["bn_step_s", "nd_step_s", "ratio_nd_bn",
                      *[c for c in optional if c.startswith("ratio_") or c == "rounds"],
                      "torch_version", "created_at",
                      *[c for c in optional if c in ("git_commit", "note")]]
    return ordered[columns].reset_index(drop=True)


def bench_sweep(bench: pd.DataFrame, archs: Sequence[str], *, device_type: str = "cpu", num_threads: int = 2,
                batch_size: int = 128, min_rounds: int = 5, implementation: str = "ndlib",
                refresh_every: int = 1, keep_freed_memory: bool = False, channels_last: bool = False,
                machine_type: str | None = None, with_stages: Collection[str] = ()) -> pd.DataFrame:
    """The newest benchmark per architecture in one setting, one row per arch in ``archs``
    (``NaN`` where none qualifies): ``arch, ratio_nd_bn, ratio_min, ratio_max, bn_step_s,
    nd_step_s, rounds, load_avg_before, load_avg_after, git_commit, created_at, bench_id,
    machine_type, device_type, num_threads, batch_size, nd_convs_channels_last``, ``load`` (the load
    averages before and after, as text) and
    ``stages_bench_id``: the newest benchmark of the same setting among ``with_stages`` (the
    ids that have a stage breakdown, :func:`ndlib.bench.load_stages`), which is the sweep's
    own where that one timed the stages.

    Only records with the default image size, the memory format asked for (``channels_last``:
    the input and the weights, as ``bench --channels-last``) and at least ``min_rounds``
    rounds count: fewer rounds give a ratio too noisy to hold against a target.  The memory
    setting (``keep_freed_memory``, :mod:`ndlib.cpu_memory`) must match too: it changes BN's
    step more than ND's.  ``machine_type`` keeps one machine's benchmarks only (default: any,
    so the newest machine's benchmark of each architecture wins).
    """
    columns = ["arch", "ratio_nd_bn", "ratio_min", "ratio_max", "bn_step_s", "nd_step_s", "rounds",
               "load_avg_before", "load_avg_after", "git_commit", "created_at", "bench_id", "machine_type",
               "device_type", "num_threads", "batch_size", "nd_convs_channels_last"]
    frame = pd.DataFrame({"arch": list(archs)})
    if bench.empty:
        return frame.reindex(columns=columns + ["load", "stages_bench_id"])
    require_columns(bench, ["arch", "device_type", "num_threads", "batch_size", "implementation", "refresh_every",
                     "rounds", "channels_last", "created_at"], "the benchmark records")
    chosen = bench[(bench["device_type"] == device_type) & (bench["num_threads"] == num_threads)
                   & (bench["batch_size"] == batch_size) & (bench["implementation"] == implementation)
                   & (bench["refresh_every"].fillna(1).astype(int) == refresh_every)
                   & (bench["rounds"] >= min_rounds) & (bench["channels_last"].astype(bool) == channels_last)]
    if "keep_freed_memory" in chosen.columns:
        chosen = chosen[chosen["keep_freed_memory"].fillna(False).astype(bool) == keep_freed_memory]
    elif keep_freed_memory:
        chosen = chosen.iloc[0:0]
    if machine_type is not None:
        chosen = chosen[chosen["machine_type"] == machine_type]
    if refresh_every > 1 and "round_statistic" in chosen.columns:  # amortised over whole refresh cycles only
        chosen = chosen[chosen["round_statistic"] == "mean"]
    chosen = chosen.sort_values("created_at")
    newest = chosen.drop_duplicates("arch", keep="last")
    timed = chosen[chosen["bench_id"].isin(list(with_stages))].drop_duplicates("arch", keep="last")
    out = frame.merge(newest, on="arch", how="left").reindex(columns=columns)
    out["stages_bench_id"] = out["arch"].map(timed.set_index("arch")["bench_id"])
    out["load"] = [f"{load_average_text(b)} → {load_average_text(a)}" if isinstance(b, (list, tuple)) else ""
                   for b, a in zip(out["load_avg_before"], out["load_avg_after"])]
    return out


def sweep_verdict(sweep: pd.DataFrame, median_target: float = MEDIAN_TARGET,
                  max_target: float = MAX_TARGET) -> dict:
    """Median and largest ND/BN ratio of :func:`bench_sweep` against the targets.  The median
    is only judged when every architecture has a measurement (``complete``)."""
    measured = sweep.dropna(subset=["ratio_nd_bn"])
    complete = len(measured) == len(sweep) and len(sweep) > 0
    verdict = {"n_measured": len(measured), "n_archs": len(sweep), "complete": complete,
               "missing": [a for a in sweep["arch"] if a not in set(measured["arch"])],
               "median": float(measured["ratio_nd_bn"].median()) if len(measured) else float("nan"),
               "max": float(measured["ratio_nd_bn"].max()) if len(measured) else float("nan"),
               "max_arch": str(measured.loc[measured["ratio_nd_bn"].idxmax(), "arch"]) if len(measured) else "",
               "median_target": median_target, "max_target": max_target,
               "over_max": sorted(measured.loc[measured["ratio_nd_bn"] > max_target, "arch"])}
    verdict["meets_median"] = bool(complete and verdict["median"] <= median_target)
    verdict["meets_max"] = bool(complete and not verdict["over_max"])
    return verdict


def setting_comparison(base: pd.DataFrame, other: pd.DataFrame, names: tuple[str, str]) -> pd.DataFrame:
    """Two :func:`bench_sweep` frames of two settings side by side per architecture: ``arch``,
    ``bn_step_s`` / ``nd_step_s`` / ``ratio_nd_bn`` suffixed ``_<names[0]>`` and ``_<names[1]>``,
    ``load_<names[1]>`` and ``created_at_<names[1]>``, and ``ratio_change`` (the second ratio over
    the first).  Only the architectures of ``base``, in its order.

    Timings compare only within one machine: where the two benchmarks of an architecture name
    different machines (``machine_type``), the second setting's values are left out (NaN) and
    ``machine_<names[1]>`` says which machine it was timed on."""
    first, second = names
    values = ["bn_step_s", "nd_step_s", "ratio_nd_bn"]
    left = base[["arch", *values, "machine_type"]].rename(columns={c: f"{c}_{first}" for c in values})
    right = other[["arch", *values, "load", "created_at", "machine_type"]].rename(
        columns={**{c: f"{c}_{second}" for c in values}, "load": f"load_{second}",
                 "created_at": f"created_at_{second}", "machine_type": f"machine_{second}"})
    out = left.merge(right, on="arch", how="left")
    elsewhere = out["machine_type"].notna() & out[f"machine_{second}"].notna() \
        & (out["machine_type"] != out[f"machine_{second}"])
    out.loc[elsewhere, [f"{c}_{second}" for c in values]] = np.nan
    out = out.drop(columns="machine_type")
    out["ratio_change"] = out[f"ratio_nd_bn_{second}"] / out[f"ratio_nd_bn_{first}"]
    return out


def memory_setting_comparison(default: pd.DataFrame, kept: pd.DataFrame) -> pd.DataFrame:
    """:func:`setting_comparison` of the sweeps without and with freed memory kept
    (:mod:`ndlib.cpu_memory`): suffixes ``_default`` and ``_kept``; a ``ratio_change`` above 1
    means keeping the memory made ND's step dearer relative to BN's."""
    return setting_comparison(default, kept, ("default", "kept"))


def precision_comparison(fp32: pd.DataFrame, bf16: pd.DataFrame) -> pd.DataFrame:
    """:func:`setting_comparison` of a float32 sweep and a bfloat16-autocast one (``bench --amp``;
    :func:`ndlib.bench.load_bench` with ``amp=True``): suffixes ``_fp32`` and ``_bf16``, plus
    ``bn_speedup`` and ``nd_speedup``, the float32 step over the bf16 one (below 1: bf16 is slower)."""
    out = setting_comparison(fp32, bf16, ("fp32", "bf16"))
    for norm in ("bn", "nd"):
        out[f"{norm}_speedup"] = out[f"{norm}_step_s_fp32"] / out[f"{norm}_step_s_bf16"]
    return out


def precision_sentences(comparison: pd.DataFrame) -> list[str]:
    """What :func:`precision_comparison` shows, from the table only."""
    both = comparison.dropna(subset=["ratio_nd_bn_fp32", "ratio_nd_bn_bf16"])
    missing = [a for a in comparison["arch"] if a not in set(both["arch"])]
    if both.empty:
        return [f"No architecture has both a float32 and a bf16 benchmark in this setting yet "
                f"({len(comparison)} to measure)."]
    sentences = [f"Measured in both precisions: {len(both)} of {len(comparison)} architectures"
                 + (f" (not yet: {', '.join(missing)})" if missing else "") + "."]
    for norm, label in (("bn", "BN"), ("nd", "ND")):
        speedup = both[f"{norm}_speedup"]
        sentences.append(f"bf16's {label} step was {speedup.min():.2f}x to {speedup.max():.2f}x as fast as "
                         f"float32's (median {speedup.median():.2f}x).")
    sentences.append(f"Median ND/BN ratio over those {len(both)}: {both['ratio_nd_bn_fp32'].median():.2f} in "
                     f"float32, {both['ratio_nd_bn_bf16'].median():.2f} in bf16.")
    return sentences


def memory_setting_sentences(comparison: pd.DataFrame, median_target: float = MEDIAN_TARGET,
                             max_target: float = MAX_TARGET) -> list[str]:
    """What :func:`memory_setting_comparison` shows, from the table only: how many ratios rose,
    both medians over the architectures measured both ways, and the targets in the kept setting."""
    both = comparison.dropna(subset=["ratio_nd_bn_default", "ratio_nd_bn_kept"])
    if both.empty:
        return []
    rose = both[both["ratio_change"] > 1]
    faster = {column: int((both[f"{column}_kept"] < both[f"{column}_default"]).sum())
              for column in ("bn_step_s", "nd_step_s")}
    sentences = [
        f"Measured both ways: {len(both)} of {len(comparison)} architectures. With freed memory kept, the BN "
        f"step was faster for {faster['bn_step_s']} of them and the ND step for {faster['nd_step_s']}; the "
        f"ND/BN ratio rose for {len(rose)} and fell for {len(both) - len(rose)}.",
        f"Median ND/BN ratio over those {len(both)}: {both['ratio_nd_bn_default'].median():.2f} with the default "
        f"allocator, {both['ratio_nd_bn_kept'].median():.2f} with freed memory kept (target {median_target:g}).",
    ]
    over = both[both["ratio_nd_bn_kept"] > max_target]
    sentences.append(
        f"Above {max_target:g} with freed memory kept: "
        + (", ".join(f"{r.arch} ({r.ratio_nd_bn_kept:.2f})" for r in over.itertuples()) if len(over) else "none")
        + ".")
    return sentences


def stage_breakdown(stages: pd.DataFrame, bench_ids: Sequence[str]) -> pd.DataFrame:
    """Seconds (forward + backward, summed over a model's deconvolution layers) per stage the
    layer runs, one row per benchmark in ``bench_ids`` that has a breakdown, with
    ``whitening_share``: the share of the layer's time that is not the convolution."""
    labels = list(_RUN_STAGES.values())
    columns = ["bench_id", "arch", "layers", *labels, "whitening_share"]
    if stages.empty:
        return pd.DataFrame(columns=columns)
    require_columns(stages, ["bench_id", "arch", "layer", "stage", "forward_s", "backward_s"], "the stage records")
    part = stages[stages["bench_id"].isin(list(bench_ids)) & stages["stage"].isin(list(_RUN_STAGES))]
    if part.empty:
        return pd.DataFrame(columns=columns)
    part = part.assign(seconds=part["forward_s"].fillna(0) + part["backward_s"].fillna(0),
                       label=part["stage"].map(_RUN_STAGES))
    table = part.pivot_table(index=["bench_id", "arch"], columns="label", values="seconds", aggfunc="sum")
    table = table.reindex(columns=labels).fillna(0.0)
    layers = part.groupby(["bench_id", "arch"])["layer"].nunique().rename("layers")
    table = table.join(layers)
    total = table[labels].sum(axis=1)
    table["whitening_share"] = (total - table["convolution"]) / total
    order = {b: i for i, b in enumerate(bench_ids)}
    out = table.reset_index()
    out = out.sort_values("bench_id", key=lambda s: s.map(order)).reset_index(drop=True)
    return out[columns]


def flop_overhead(archs: Sequence[str], num_classes: int = 10, batch_size: int = 128,
                  image_size: int = 32) -> pd.DataFrame:
    """The FLOP model of ND's overhead for one training step's forward pass, per architecture.

    For every deconvolution layer of the ND model (convs and the decorrelated linear
    classifier), the stage-by-stage count of :func:`ndlib.whitening.deconv_flops` at
    ``batch_size`` (via :func:`ndlib.whitening.model_deconv_flops`), summed over layers:
    the layer's own product (``conv``) and the whitening stages (centering, covariance,
    Newton-Schulz, folding, bias shift).  Columns: ``arch, layers, conv_gflop,
    overhead_gflop, eval_overhead_gflop, overhead_ratio`` and one ``<stage>_gflop`` per
    whitening stage.
    """
    stages = ("center", "covariance", "newton_schulz", "fold", "bias_shift")
    rows = []
    for arch in archs:
        model = models.create(arch, num_classes=num_classes, norm="nd")
        layers = whitening.model_deconv_flops(model, (batch_size, 3, image_size, image_size),
                                              include_linear=True)
        totals = layers[["conv", "overhead", "eval_overhead", *stages]].sum()
        row: dict[str, object] = {"arch": arch, "layers": len(layers),
                                  "conv_gflop": totals["conv"] / 1e9,
                                  "overhead_gflop": totals["overhead"] / 1e9,
                                  "eval_overhead_gflop": totals["eval_overhead"] / 1e9,
                                  "overhead_ratio": totals["overhead"] / totals["conv"]}
        row.update({f"{stage}_gflop": totals[stage] / 1e9 for stage in stages})
        rows.append(row)
    return pd.DataFrame(rows)


def _cut_needed(outside: pd.Series, room: pd.Series) -> pd.Series:
    """How many times cheaper ``outside`` would have to become to fit in ``room`` (same unit):
    ``inf`` where there is no room, NaN where it fits already or either is unknown."""
    cut = outside / room.where(room > 0)
    cut[(room <= 0) & outside.notna()] = np.inf
    cut[room >= outside] = np.nan
    return cut


def exact_floor(flops: pd.DataFrame, sweep: pd.DataFrame, breakdown: pd.DataFrame,
                target: float = MEDIAN_TARGET) -> pd.DataFrame:
    """How close the exact layer could come to BN, by a FLOP count, beside what it measures.

    ``flops`` is :func:`flop_overhead` (forward-pass GFLOP per architecture),
    ``sweep`` :func:`bench_sweep` and ``breakdown`` :func:`stage_breakdown` of the same
    benchmarks.  A training step of the exact layer cannot do without these matrix products:

    * the convolutions, forward and the two backward products: ``3 conv``;
    * the covariance ``X^T X``, at best as a symmetric product (half of the forward count, the
      ``R F^2`` of a rank-k update) and its backward ``dX = X_c S`` (a general product,
      ``2 R F^2``): ``1.5 covariance``;
    * the fold ``W D``, forward and both backward products: ``3 fold``.

    ``flop_floor = 1 + (1.5 covariance + 3 fold) / (3 conv)`` is the ND/BN ratio if those ran
    at the convolutions' rate and nothing else cost anything: no Newton-Schulz, no patch
    copies, no elementwise work, and no BN layers in the BN model.  It is a model, not a
    bound: a BN model that spends much of its step outside its convolutions (DenseNet's many
    BN layers, depthwise models) can measure below it.

    ``outside_share`` is what the floor leaves out and the layer must still do, measured:
    the patch extraction and Newton-Schulz stages (seconds, summed over layers) as a share of
    the BN step (``patches_share`` and ``newton_schulz_share`` each).  ``floor_plus_outside``
    adds the two.  ``outside_cut`` is the factor by which those two stages would have to
    shrink for ``flop_floor + outside_share`` to reach ``target`` (``inf`` where the floor
    alone is above it, ``NaN`` where already below or not measured).  ``model_error =
    floor_plus_outside / ratio_nd_bn - 1`` says how well this account describes the
    measurement: far from 0, the architecture's time goes elsewhere (see
    :data:`FLOOR_MODEL_TOLERANCE`).
    """
    columns = ["arch", "ratio_nd_bn", "flop_floor", "outside_share", "patches_share", "newton_schulz_share",
               "floor_plus_outside", "model_error", "outside_cut"]
    frame = pd.DataFrame({"arch": list(sweep["arch"])}) if not sweep.empty else pd.DataFrame(columns=["arch"])
    if "note" in flops.columns or frame.empty:
        return frame.reindex(columns=columns)
    require_columns(flops, ["arch", "conv_gflop", "covariance_gflop", "fold_gflop"], "the FLOP model")
    require_columns(sweep, ["arch", "ratio_nd_bn", "bn_step_s"], "the sweep")
    model = flops.set_index("arch")
    floor = 1.0 + (1.5 * model["covariance_gflop"] + 3.0 * model["fold_gflop"]) / (3.0 * model["conv_gflop"])
    out = frame.merge(sweep[["arch", "ratio_nd_bn", "bn_step_s"]], on="arch", how="left")
    out["flop_floor"] = out["arch"].map(floor)
    patches = newton_schulz = pd.Series(dtype=float)
    if not breakdown.empty:
        require_columns(breakdown, ["arch", "patches", "Newton-Schulz"], "the stage breakdown")
        patches = breakdown.groupby("arch")["patches"].last()
        newton_schulz = breakdown.groupby("arch")["Newton-Schulz"].last()
    out["patches_share"] = out["arch"].map(patches) / out["bn_step_s"]
    out["newton_schulz_share"] = out["arch"].map(newton_schulz) / out["bn_step_s"]
    out["outside_share"] = out["patches_share"] + out["newton_schulz_share"]
    out["floor_plus_outside"] = out["flop_floor"] + out["outside_share"]
    out["outside_cut"] = _cut_needed(out["outside_share"], target - out["flop_floor"])
    out["model_error"] = out["floor_plus_outside"] / out["ratio_nd_bn"] - 1.0
    return out[columns]


def floor_sentences(floor: pd.DataFrame, target: float = MEDIAN_TARGET,
                    tolerance: float = FLOOR_MODEL_TOLERANCE) -> list[str]:
    """What :func:`exact_floor` says about the median target, from the table only.  The
    architectures whose measurement the account misses by more than ``tolerance`` are named
    and left out of the reasoning."""
    known = floor.dropna(subset=["ratio_nd_bn", "flop_floor"])
    if known.empty:
        return []
    sentences = [
        f"Over the {len(known)} measured architectures the median FLOP floor is "
        f"{known['flop_floor'].median():.2f}, against a measured median of {known['ratio_nd_bn'].median():.2f} "
        f"and the target of {target:g}."]
    both = known.dropna(subset=["outside_share"])
    fits = both[both["model_error"].abs() <= tolerance]
    misses = both[both["model_error"].abs() > tolerance]
    if not both.empty:
        sentences.append(
            f"The floor plus the measured patch extraction and Newton-Schulz comes within {tolerance:.0%} of the "
            f"measured ratio for {len(fits)} of the {len(both)} architectures with a stage breakdown"
            + (": " + ", ".join(f"{r.arch} ({r.floor_plus_outside:.2f} against {r.ratio_nd_bn:.2f})"
                               for r in fits.itertuples()) if len(fits) else "")
            + "." + (" It does not describe " + ", ".join(
                f"{r.arch} ({r.floor_plus_outside:.2f} against {r.ratio_nd_bn:.2f})" for r in misses.itertuples())
                + ", whose time goes elsewhere (BN steps not dominated by convolution FLOPs, or "
                "stages that overlap in a whole step)." if len(misses) else ""))
    over = fits[fits["ratio_nd_bn"] > target].sort_values("ratio_nd_bn")
    parts = []
    for row in over.itertuples():
        if np.isinf(row.outside_cut):
            parts.append(f"{row.arch} (its floor, {row.flop_floor:.2f}, is above the target already)")
        elif pd.notna(row.outside_cut):
            parts.append(f"{row.arch} {row.outside_cut:.1f}x (they take {row.outside_share:.2f} of a BN step)")
    if parts:
        sentences.append("For those it describes that are above the target, patch extraction and "
                         "Newton-Schulz would have to become this much cheaper, with the covariance and the "
                         "fold already at the floor, to reach it: " + "; ".join(parts) + ".")
    return sentences


def floor_targets(floor: pd.DataFrame, bench: pd.DataFrame, reference_sweep: pd.DataFrame,
                  floor_multiple: float = FLOOR_MULTIPLE_TARGET,
                  ratio_targets: dict[str, float] | None = None) -> pd.DataFrame:
    """Issue 30's targets per architecture: the measured ND/BN over its FLOP floor, the ND/BN
    ratio targets, and ndlib against the public algorithm.

    ``floor`` is :func:`exact_floor`; ``reference_sweep`` is :func:`bench_sweep` with
    ``implementation="reference"`` (the newest benchmark per architecture that also timed the
    re-implementation of the public code), and ``bench`` the benchmark rows it came from.  The
    comparison with the public algorithm takes both ND steps from that same benchmark
    (``ndlib_over_reference`` = ndlib's ND step / the reference's: below 1, ndlib is faster).
    Columns: ``arch, ratio_nd_bn, flop_floor, over_floor, meets_floor, excess, patches_share,
    newton_schulz_share, stages_cut, ratio_target, meets_ratio, ndlib_over_reference,
    reference_bench_id``; ``meets_*`` is NaN where not measured or without a target.

    Why an architecture misses the floor target, per stage: ``excess`` is how far its ND step
    is above ``floor_multiple`` times the floor, in BN steps (``ratio_nd_bn - floor_multiple *
    flop_floor``); ``patches_share`` and ``newton_schulz_share`` (from :func:`exact_floor`'s
    stage breakdown, NaN without one) are the two stages the floor leaves out, in the same
    unit; ``stages_cut`` is how many times cheaper those two would have to become to remove
    the excess (``inf`` where removing them entirely would not: the rest of the excess is in
    stages the floor counts, running below the convolutions' rate).
    """
    ratio_targets = RATIO_TARGETS if ratio_targets is None else ratio_targets
    columns = ["arch", "ratio_nd_bn", "flop_floor", "over_floor", "meets_floor", "excess", "patches_share",
               "newton_schulz_share", "stages_cut", "ratio_target", "meets_ratio", "ndlib_over_reference",
               "reference_bench_id"]
    if floor.empty:
        return pd.DataFrame(columns=columns)
    require_columns(floor, ["arch", "ratio_nd_bn", "flop_floor"], "the floor table")
    out = floor.reindex(columns=["arch", "ratio_nd_bn", "flop_floor", "patches_share", "newton_schulz_share"])
    out["over_floor"] = out["ratio_nd_bn"] / out["flop_floor"]
    out["meets_floor"] = (out["over_floor"] <= floor_multiple).where(out["over_floor"].notna())
    out["excess"] = out["ratio_nd_bn"] - floor_multiple * out["flop_floor"]
    outside = out["patches_share"] + out["newton_schulz_share"]
    out["stages_cut"] = _cut_needed(outside, outside - out["excess"])
    out["ratio_target"] = out["arch"].map(ratio_targets).astype(float)
    out["meets_ratio"] = (out["ratio_nd_bn"] <= out["ratio_target"]).where(
        out["ratio_nd_bn"].notna() & out["ratio_target"].notna())
    reference = reference_sweep.dropna(subset=["bench_id"]).set_index("arch") if not reference_sweep.empty \
        else pd.DataFrame(columns=["bench_id", "nd_step_s"])
    out["reference_bench_id"] = out["arch"].map(reference["bench_id"]) if not reference.empty else np.nan
    out["ndlib_over_reference"] = ndlib_over_public(bench, out["reference_bench_id"])
    return out[columns]


def ndlib_over_public(bench: pd.DataFrame, bench_ids: pd.Series) -> pd.Series:
    """For each benchmark id in ``bench_ids``: ndlib's ND step over the public algorithm's, both
    timed in that benchmark (below 1: ndlib is faster); NaN where it did not time both."""
    def steps(implementation: str) -> pd.Series:
        if bench.empty:
            return pd.Series(dtype=float)
        return bench[bench["implementation"] == implementation].set_index("bench_id")["nd_step_s"]

    return (bench_ids.map(steps("ndlib")) / bench_ids.map(steps("reference"))).astype(float)


def floor_target_reasons(over: pd.DataFrame, floor_multiple: float = FLOOR_MULTIPLE_TARGET) -> list[str]:
    """One sentence per architecture of :func:`floor_targets` above its floor target: the measured
    reason, per stage, from its stage breakdown."""
    sentences = []
    for row in over.itertuples():
        head = (f"{row.arch} is {row.excess:.2f} of a BN step above {floor_multiple:g}x its floor "
                f"({floor_multiple * row.flop_floor:.2f})")
        if pd.isna(row.stages_cut):
            sentences.append(head + "; no stage breakdown in this setting says where.")
        elif np.isinf(row.stages_cut):
            sentences.append(head + f", more than patch extraction ({row.patches_share:.2f}) and Newton-Schulz "
                             f"({row.newton_schulz_share:.2f}) take together: the rest is in the stages the floor "
                             "counts (covariance, fold, convolution), running below the convolutions' FLOP rate.")
        else:
            sentences.append(head + f": patch extraction takes {row.patches_share:.2f} and Newton-Schulz "
                             f"{row.newton_schulz_share:.2f} of a BN step, so the two would have to become "
                             f"{row.stages_cut:.2f}x cheaper.")
    return sentences


def floor_target_sentences(targets: pd.DataFrame, floor_multiple: float = FLOOR_MULTIPLE_TARGET) -> list[str]:
    """What :func:`floor_targets` says, from the table only."""
    measured = targets.dropna(subset=["over_floor"])
    if measured.empty:
        return ["No architecture has both a benchmark and a FLOP floor yet, so the targets are not judged."]
    over = measured[measured["over_floor"] > floor_multiple].sort_values("over_floor", ascending=False)
    sentences = [f"{len(measured) - len(over)} of {len(measured)} measured architectures are within "
                 f"{floor_multiple:g}x of their FLOP floor"
                 + (": every one." if over.empty else
                    "; above it: " + ", ".join(f"{r.arch} ({r.over_floor:.2f}x)" for r in over.itertuples()) + ".")]
    sentences += floor_target_reasons(over, floor_multiple)
    for row in targets.dropna(subset=["ratio_target"]).itertuples():
        if pd.isna(row.ratio_nd_bn):
            sentences.append(f"{row.arch}: not measured, so its ND/BN target of {row.ratio_target:.2f} is not judged.")
        else:
            verdict = "met" if row.meets_ratio else "not met"
            sentences.append(f"{row.arch}'s ND/BN is {row.ratio_nd_bn:.2f} against a target of "
                             f"{row.ratio_target:.2f}: {verdict}.")
    compared = targets.dropna(subset=["ndlib_over_reference"])
    missing = len(targets) - len(compared)
    if compared.empty:
        sentences.append("No benchmark in this setting timed the public algorithm beside ndlib yet.")
    else:
        faster = compared[compared["ndlib_over_reference"] < 1.0]
        sentences.append(f"Against the public algorithm, timed in the same benchmark: ndlib's ND step is faster on "
                         f"{len(faster)} of the {len(compared)} architectures compared "
                         f"({', '.join(f'{r.arch} {r.ndlib_over_reference:.2f}x' for r in compared.itertuples())})"
                         + (f"; {missing} are not compared yet." if missing else "."))
    return sentences
