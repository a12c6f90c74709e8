"""What ND costs, for the training-time chapter: the benchmark sweep against the targets, where
ND's time goes, and the accuracy/speed trade-off of ``refresh_every``.

Like :mod:`ndlib.report`, every function takes DataFrames built from our records
(:func:`ndlib.bench.load_bench`, :func:`ndlib.bench.load_stages`,
:func:`ndlib.records.load_runs`) and returns a DataFrame or text computed from them.

* :func:`bench_sweep` picks, per architecture, the newest benchmark of the exact layer in one
  setting (device, threads, batch, at least ``min_rounds`` interleaved rounds) and
  :func:`sweep_verdict` checks the median and the largest ND/BN ratio against the targets;
  :func:`memory_setting_comparison` sets the sweeps with and without freed memory kept
  (:mod:`ndlib.cpu_memory`) side by side, and :func:`memory_setting_sentences` says what changed.
* :func:`measured_cost_sentences` states every ND/BN cost ratio we measured, each with its
  machine: training runs and the benchmark sweeps (for the conclusions).
* :func:`stage_breakdown` sums a benchmark's per-layer stage times (forward + backward) into
  the stages the layer runs: patch extraction, centring + covariance, Newton-Schulz, the fold
  into the weight, and the convolution itself.
* :func:`exact_floor` sets the sweep beside a FLOP floor of the exact layer: the matrix
  products it cannot do without, at the convolutions' rate, and the measured time of the stages
  that floor leaves out (:func:`floor_sentences` says what that means for the targets).
* :func:`refresh_tradeoff` puts, per architecture, BN, the exact ND layer and ND with
  ``refresh_every = k`` (each way of whitening between refreshes) side by side: the run's
  status and test accuracy, its training time, and the benchmarked ND/BN step ratio.
"""
from __future__ import annotations

from typing import Collection, Sequence

import numpy as np
import pandas as pd

from ndlib.report import DATASET_TITLES, load_average_text, machine_instance_text, train_command

__all__ = [
    "MEDIAN_TARGET",
    "MAX_TARGET",
    "FLOOR_MODEL_TOLERANCE",
    "REFRESH_SETTINGS",
    "bench_sweep",
    "sweep_verdict",
    "memory_setting_comparison",
    "memory_setting_sentences",
    "measured_cost_sentences",
    "stage_breakdown",
    "exact_floor",
    "floor_sentences",
    "refresh_tradeoff",
    "refresh_sentences",
]

#: Issue 11's targets for the exact layer on the project's CPU (2 threads, batch 128).
MEDIAN_TARGET = 1.5
MAX_TARGET = 2.0

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

#: ``(label, refresh_every, refresh_stats, refresh_warmup)`` of the refresh comparison;
#: ``refresh_every=None`` is BN.  The warm-up of 100 steps mirrors the public code's
#: ``freeze_iter = 100`` for its frozen first layer.
REFRESH_SETTINGS: tuple[tuple[str, int | None, str | None, int], ...] = (
    ("BN", None, None, 0),
    ("ND, exact (k = 1)", 1, None, 0),
    ("ND, k = 4, running statistics", 4, "running", 0),
    ("ND, k = 16, running statistics", 16, "running", 0),
    ("ND, k = 4, last estimate", 4, "last", 0),
    ("ND, k = 16, last estimate", 16, "last", 0),
    ("ND, k = 4, last estimate, 100 exact steps first", 4, "last", 100),
    ("ND, k = 16, last estimate, 100 exact steps first", 16, "last", 100),
)


def _require(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lack the columns {missing}; load them with ndlib's loaders")


def bench_sweep(bench: pd.DataFrame, archs: Sequence[str], *, device_type: str = "cpu", num_threads: int = 2,
                batch_size: int = 128, min_rounds: int = 5, implementation: str = "ndlib",
                refresh_every: int = 1, keep_freed_memory: bool = False,
                with_stages: Collection[str] = ()) -> pd.DataFrame:
    """The newest benchmark per architecture in one setting, one row per arch in ``archs``
    (``NaN`` where none qualifies): ``arch, ratio_nd_bn, ratio_min, ratio_max, bn_step_s,
    nd_step_s, rounds, load_avg_before, load_avg_after, git_commit, created_at, bench_id,
    device_name, device_type, num_threads, batch_size``, ``load`` (the load averages before and after, as text) and
    ``stages_bench_id``: the newest benchmark of the same setting among ``with_stages`` (the
    ids that have a stage breakdown, :func:`ndlib.bench.load_stages`), which is the sweep's
    own where that one timed the stages.

    Only records with the default image size, no channels_last and at least ``min_rounds``
    rounds count: fewer rounds give a ratio too noisy to hold against a target.  The memory
    setting (``keep_freed_memory``, :mod:`ndlib.cpu_memory`) must match too: it changes BN's
    step more than ND's.
    """
    columns = ["arch", "ratio_nd_bn", "ratio_min", "ratio_max", "bn_step_s", "nd_step_s", "rounds",
               "load_avg_before", "load_avg_after", "git_commit", "created_at", "bench_id", "device_name",
               "device_type", "num_threads", "batch_size"]
    frame = pd.DataFrame({"arch": list(archs)})
    if bench.empty:
        return frame.reindex(columns=columns + ["load", "stages_bench_id"])
    _require(bench, ["arch", "device_type", "num_threads", "batch_size", "implementation", "refresh_every",
                     "rounds", "channels_last", "created_at"], "the benchmark records")
    chosen = bench[(bench["device_type"] == device_type) & (bench["num_threads"] == num_threads)
                   & (bench["batch_size"] == batch_size) & (bench["implementation"] == implementation)
                   & (bench["refresh_every"].fillna(1).astype(int) == refresh_every)
                   & (bench["rounds"] >= min_rounds) & ~bench["channels_last"].astype(bool)]
    if "keep_freed_memory" in chosen.columns:
        chosen = chosen[chosen["keep_freed_memory"].fillna(False).astype(bool) == keep_freed_memory]
    elif keep_freed_memory:
        chosen = chosen.iloc[0:0]
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


def memory_setting_comparison(default: pd.DataFrame, kept: pd.DataFrame) -> pd.DataFrame:
    """Two :func:`bench_sweep` frames of one setting, without and with freed memory kept
    (:mod:`ndlib.cpu_memory`), side by side per architecture: ``arch``, ``bn_step_s`` /
    ``nd_step_s`` / ``ratio_nd_bn`` with the suffixes ``_default`` and ``_kept``, ``load_kept``
    and ``created_at_kept``, and ``ratio_change`` (kept / default: above 1, keeping the memory
    made ND's step dearer relative to BN's).  Only the architectures of ``default``, in its order."""
    values = ["bn_step_s", "nd_step_s", "ratio_nd_bn"]
    left = default[["arch", *values]].rename(columns={c: f"{c}_default" for c in values})
    right = kept[["arch", *values, "load", "created_at"]].rename(
        columns={**{c: f"{c}_kept" for c in values}, "load": "load_kept", "created_at": "created_at_kept"})
    out = left.merge(right, on="arch", how="left")
    out["ratio_change"] = out["ratio_nd_bn_kept"] / out["ratio_nd_bn_default"]
    return out


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


def _machine_text(device_name: object, device_type: object, num_threads: object,
                  keep_freed_memory: bool = False, machine_id: object = None) -> str:
    """E.g. ``"AMD EPYC (CPU, 1 thread, freed memory kept)"``; with ``machine_id`` (a training
    run's machine instance, ``""`` where not recorded) the instance comes first:
    ``"AMD EPYC (instance 1a2b3c4d5e6f, CPU, 1 thread)"``."""
    kind = str(device_type).upper() if isinstance(device_type, str) else "device unknown"
    parts = [kind]
    if machine_id is not None:
        parts.insert(0, machine_instance_text(machine_id))
    if kind == "CPU" and not pd.isna(num_threads) and int(num_threads) > 0:
        parts.append(f"{int(num_threads)} thread{'s' if int(num_threads) != 1 else ''}")
    if keep_freed_memory:
        parts.append("freed memory kept")
    return f"{device_name or 'unnamed machine'} ({', '.join(parts)})"


def measured_cost_sentences(our_times: pd.DataFrame, sweep: pd.DataFrame,
                            kept_sweep: pd.DataFrame | None = None,
                            names: dict[str, str] | None = None) -> tuple[list[str], list[str]]:
    """Every ND/BN cost ratio we measured, one sentence each with its machine, and the notes
    the runs recorded on the machine's load: ``(sentences, notes)``; a sentence cites its
    notes by number (``notes[i - 1]``).

    ``our_times`` is :func:`ndlib.report.our_timing`; only rows with a ratio, on real data and
    with the paper's settings (empty ``options``) are stated.  ``sweep`` is the
    :func:`bench_sweep` of the exact layer (default allocator); ``kept_sweep``, when given, the
    same sweep with freed memory kept: its median is stated beside.  ``names`` maps an
    architecture to its printed name (default: the architecture as it is)."""
    names = names or {}
    sentences: list[str] = []
    notes: list[str] = []
    if not our_times.empty:
        usable = our_times[our_times["ratio_nd_bn"].notna() & ~our_times["synthetic"].astype(bool)
                           & (our_times["options"].fillna("") == "")]
        for row in usable.itertuples():
            cited = []
            for note in str(row.notes or "").splitlines():
                if not note:
                    continue
                if note not in notes:
                    notes.append(note)
                cited.append(str(notes.index(note) + 1))
            epochs = int(row.epochs)
            machine = _machine_text(row.device_name, row.device_type, row.num_threads,
                                    bool(row.keep_freed_memory), getattr(row, "machine_id", None))
            sentences.append(
                f"Training runs, {DATASET_TITLES.get(row.dataset, row.dataset)} "
                f"{names.get(row.arch, row.arch)}, {epochs} epoch{'s' if epochs > 1 else ''}, on "
                f"{machine}: ND took {row.ratio_nd_bn:.2f} times BN's training time"
                + (f" (run notes {', '.join(cited)})" if cited else "") + ".")
    verdict = sweep_verdict(sweep)
    if verdict["n_measured"]:
        measured = sweep.dropna(subset=["ratio_nd_bn"]).sort_values("ratio_nd_bn")
        low, high = measured.iloc[0], measured.iloc[-1]
        machines = ", ".join(sorted({_machine_text(*key) for key in zip(
            measured["device_name"], measured["device_type"], measured["num_threads"])}))
        batches = "/".join(str(int(b)) for b in sorted(set(measured["batch_size"].dropna())))
        text = (f"Benchmarks of the exact layer on {machines}, training steps at batch {batches}, "
                f"the newest per architecture ({verdict['n_measured']} of {verdict['n_archs']} "
                f"architectures): an ND step took {low.ratio_nd_bn:.2f} "
                f"({names.get(low.arch, low.arch)}) to {high.ratio_nd_bn:.2f} "
                f"({names.get(high.arch, high.arch)}) times a BN step, median "
                f"{verdict['median']:.2f}")
        if kept_sweep is not None:
            kept = sweep_verdict(kept_sweep)
            if kept["n_measured"]:
                text += (f"; with freed memory kept, median {kept['median']:.2f} over "
                         f"{kept['n_measured']} architectures")
        sentences.append(text + ".")
    return sentences, notes


def stage_breakdown(stages: pd.DataFrame, bench_ids: Sequence[str]) -> pd.DataFrame:
    """Seconds (forward + backward, summed over a model's deconvolution layers) per stage the
    layer runs, one row per benchmark in ``bench_ids`` that has a breakdown, with
    ``whitening_share``: the share of the layer's time that is not the convolution."""
    labels = list(_RUN_STAGES.values())
    columns = ["bench_id", "arch", "layers", *labels, "whitening_share"]
    if stages.empty:
        return pd.DataFrame(columns=columns)
    _require(stages, ["bench_id", "arch", "layer", "stage", "forward_s", "backward_s"], "the stage records")
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


def exact_floor(flops: pd.DataFrame, sweep: pd.DataFrame, breakdown: pd.DataFrame,
                target: float = MEDIAN_TARGET) -> pd.DataFrame:
    """How close the exact layer could come to BN, by a FLOP count, beside what it measures.

    ``flops`` is :func:`ndlib.report.flop_overhead` (forward-pass GFLOP per architecture),
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
    the BN step.  ``floor_plus_outside`` adds the two.  ``outside_cut`` is the factor by which
    those two stages would have to shrink for ``flop_floor + outside_share`` to reach
    ``target`` (``inf`` where the floor alone is above it, ``NaN`` where already below or
    not measured).  ``model_error = floor_plus_outside / ratio_nd_bn - 1`` says how well this
    account describes the measurement: far from 0, the architecture's time goes elsewhere
    (see :data:`FLOOR_MODEL_TOLERANCE`).
    """
    columns = ["arch", "ratio_nd_bn", "flop_floor", "outside_share", "floor_plus_outside", "model_error",
               "outside_cut"]
    frame = pd.DataFrame({"arch": list(sweep["arch"])}) if not sweep.empty else pd.DataFrame(columns=["arch"])
    if "note" in flops.columns or frame.empty:
        return frame.reindex(columns=columns)
    _require(flops, ["arch", "conv_gflop", "covariance_gflop", "fold_gflop"], "the FLOP model")
    _require(sweep, ["arch", "ratio_nd_bn", "bn_step_s"], "the sweep")
    model = flops.set_index("arch")
    floor = 1.0 + (1.5 * model["covariance_gflop"] + 3.0 * model["fold_gflop"]) / (3.0 * model["conv_gflop"])
    out = frame.merge(sweep[["arch", "ratio_nd_bn", "bn_step_s"]], on="arch", how="left")
    out["flop_floor"] = out["arch"].map(floor)
    outside = pd.Series(dtype=float)
    if not breakdown.empty:
        _require(breakdown, ["arch", "patches", "Newton-Schulz"], "the stage breakdown")
        outside = (breakdown["patches"] + breakdown["Newton-Schulz"]).groupby(breakdown["arch"]).last()
    out["outside_share"] = out["arch"].map(outside) / out["bn_step_s"]
    out["floor_plus_outside"] = out["flop_floor"] + out["outside_share"]
    room = target - out["flop_floor"]
    cut = out["outside_share"] / room.where(room > 0)
    cut[(room <= 0) & out["outside_share"].notna()] = np.inf
    cut[out["floor_plus_outside"] <= target] = np.nan
    out["outside_cut"] = cut
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


def _run_id(arch: str, norm: str, dataset: str, epochs: int, seed: int, refresh_every: int | None,
            refresh_stats: str | None, refresh_warmup: int = 0) -> str:
    from ndlib.train import TrainConfig

    options = {}
    if refresh_every not in (None, 1):
        options["deconv_refresh_every"] = refresh_every
        options["deconv_refresh_stats"] = refresh_stats
        options["deconv_refresh_warmup"] = refresh_warmup
    return TrainConfig(arch=arch, norm=norm, dataset=dataset, epochs=epochs, seed=seed, **options).run_id


def _refresh_command(dataset: str, arch: str, norm: str, epochs: int, seed: int, refresh_every: int | None,
                     refresh_stats: str | None, refresh_warmup: int) -> str:
    """:func:`ndlib.report.train_command` plus the refresh flags of a setting."""
    command = train_command(dataset, arch, norm, epochs, seed)
    if refresh_every not in (None, 1):
        command += f" --deconv-refresh-every {refresh_every}"
        if refresh_stats not in (None, "running"):
            command += f" --deconv-refresh-stats {refresh_stats}"
        if refresh_warmup:
            command += f" --deconv-refresh-warmup {refresh_warmup}"
    return command


def refresh_tradeoff(runs: pd.DataFrame, bench: pd.DataFrame, archs: Sequence[str] = ("vgg16", "resnet18"),
                     dataset: str = "cifar10", epochs: int = 1, seed: int = 0, *, num_threads: int = 2,
                     settings: Sequence[tuple[str, int | None, str | None, int]] = REFRESH_SETTINGS) -> pd.DataFrame:
    """One row per (arch, setting of :data:`REFRESH_SETTINGS`): the run of that exact
    configuration (paper's settings otherwise) and the benchmark of its step cost.

    Columns: ``arch, setting, refresh_every, refresh_stats, refresh_warmup, run_id, status`` (``"not run"``
    when there is no record), ``diverged_step``, ``test_acc``, ``train_time_s``,
    ``device_name``, ``run_threads`` (the run's torch threads) and ``bench_ratio``: the
    newest CPU benchmark's ND/BN step ratio at that ``refresh_every`` (``num_threads``
    threads, ndlib layers; the benchmark does not depend on ``refresh_stats``: both modes do
    the same work per step), with ``bench_id``, and ``command`` (what runs the setting).  ``"running"`` is what
    ``refresh_stats`` defaults to, so its run ids carry only ``refresh_every``.
    """
    columns = ["arch", "setting", "refresh_every", "refresh_stats", "refresh_warmup", "run_id", "status", "diverged_step",
               "test_acc", "train_time_s", "device_name", "run_threads", "bench_ratio", "bench_id", "command"]
    by_id = runs.set_index("run_id") if not runs.empty else pd.DataFrame()
    rows = []
    for arch in archs:
        for label, every, stats, warmup in settings:
            norm = "bn" if every is None else "nd"
            run_id = _run_id(arch, norm, dataset, epochs, seed, every, stats, warmup)
            row = {"arch": arch, "setting": label, "refresh_every": every, "refresh_stats": stats,
                   "refresh_warmup": warmup,
                   "run_id": run_id, "status": "not run", "diverged_step": np.nan, "test_acc": np.nan,
                   "train_time_s": np.nan, "device_name": "", "run_threads": np.nan,
                   "bench_ratio": np.nan, "bench_id": "",
                   "command": _refresh_command(dataset, arch, norm, epochs, seed, every, stats, warmup)}
            if run_id in by_id.index:
                record = by_id.loc[run_id]
                row.update(status=record["status"], device_name=record.get("device_name", ""),
                           run_threads=record.get("num_threads", np.nan))
                if record["status"] == "completed":
                    row.update(test_acc=record["test_acc"], train_time_s=record["train_time_s"])
                if record["status"] == "diverged":
                    row["diverged_step"] = record.get("diverged_step", np.nan)
            if every is not None:
                sweep = bench_sweep(bench, [arch], num_threads=num_threads, refresh_every=every, min_rounds=1)
                if not sweep.empty and pd.notna(sweep.loc[0, "ratio_nd_bn"]):
                    row.update(bench_ratio=float(sweep.loc[0, "ratio_nd_bn"]), bench_id=sweep.loc[0, "bench_id"])
            rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def refresh_sentences(tradeoff: pd.DataFrame) -> list[str]:
    """What the refresh comparison shows, one sentence per architecture, from the table only."""
    sentences = []
    for arch, part in tradeoff.groupby("arch", sort=False):
        part = part.set_index("setting")
        exact = part.loc[part["refresh_every"] == 1].iloc[0] if (part["refresh_every"] == 1).any() else None
        bn = part.loc[part["refresh_every"].isna()].iloc[0] if part["refresh_every"].isna().any() else None
        bits = []
        for label, row in part.iterrows():
            if pd.isna(row["refresh_every"]) or row["refresh_every"] == 1:
                continue
            if row["status"] == "diverged":
                step = "" if pd.isna(row["diverged_step"]) else f" at step {int(row['diverged_step'])}"
                bits.append(f"{label} diverged{step}")
            elif row["status"] == "completed":
                text = f"{label} reached {row['test_acc']:.2f}%"
                if exact is not None and exact["status"] == "completed":
                    text += f" ({row['test_acc'] - exact['test_acc']:+.2f} points against the exact layer)"
                bits.append(text)
            elif row["status"] != "not run":
                bits.append(f"{label} ended {row['status']}")
        if not bits:
            continue
        head = f"{arch}: "
        if exact is not None and exact["status"] == "completed":
            head += f"the exact layer reached {exact['test_acc']:.2f}%"
            if bn is not None and bn["status"] == "completed":
                head += f" and BN {bn['test_acc']:.2f}%"
            head += "; "
        sentences.append(head + "; ".join(bits) + ".")
    return sentences
