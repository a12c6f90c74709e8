"""Training times: the reproduction's, ours per machine setting, ND's epoch against BN's paired
by seed, every run's cost, and every ND/BN cost ratio we measured in sentences.

Times are compared only within one machine instance, thread count and memory setting
(:func:`ndlib.report.selection.with_timing_keys`); a run resumed under other settings keeps
its accuracy but gives no time.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ndlib import published
from ndlib.report.benchmarks import sweep_verdict
from ndlib.report.constants import CELL_KEYS, COMPARED_NORMS, DATASET_TITLES, REPRODUCTION_DEVICE
from ndlib.report.frames import require_columns
from ndlib.report.loading import load_average_text
from ndlib.report.selection import (
    in_table,
    mixed_timing,
    paper_settings_only,
    run_options,
    single_setting_times,
    split_synthetic,
    with_timing_keys,
)
from ndlib.report.table1 import paper_names


def reproduction_timing() -> pd.DataFrame:
    """The reproduction's Table 1 training times (V100): per (dataset, arch, epochs) the mean
    wall seconds of BN and ND over its attempts, the ratio ND / BN of the means, and the
    spread of the attempts (``bn_spread``, ``nd_spread``: slowest / fastest attempt)."""
    repro = published.reproduction_table1()
    grouped = repro.groupby(["dataset", "arch", "epochs", "method"])["train_time_s"]
    mean = grouped.mean().unstack("method")
    spread = (grouped.max() / grouped.min()).unstack("method")
    out = pd.DataFrame({"bn_train_s": mean["BN"], "nd_train_s": mean["ND"],
                        "bn_spread": spread["BN"], "nd_spread": spread["ND"]}).reset_index()
    out["ratio_nd_bn"] = out["nd_train_s"] / out["bn_train_s"]
    out["device_name"] = REPRODUCTION_DEVICE
    return out


def machine_instance_text(machine_id: str | None) -> str:
    """``"instance 1a2b3c4d5e6f"``, or ``"instance not recorded"`` for runs from before the field."""
    return f"instance {machine_id}" if isinstance(machine_id, str) and machine_id else "instance not recorded"


def our_timing(runs: pd.DataFrame) -> pd.DataFrame:
    """Our training times: per (device, machine instance, threads, memory setting, synthetic,
    dataset, arch, epochs, options) the mean wall seconds of BN and ND runs that completed,
    images/s, and the ratio ND / BN.

    The device stays in the key: a CPU ratio is never mixed with a GPU one.  So does the
    machine instance (``machine_id``, ``""`` where not recorded): CPU machines of one name
    have differed about twofold in speed, so BN on one and ND on another is no ratio.  So do the
    options (:func:`run_options`, ``""`` for the paper's settings): a run with a non-default
    setting is never averaged with the paper's.  So does ``keep_freed_memory``
    (:mod:`ndlib.cpu_memory`), which changes a CPU step's time but not its result.  A run
    resumed under other settings (``timing_mixed``) has no single setting and is left out."""
    keys = ["device_type", "device_name", "machine_id", "num_threads", "keep_freed_memory", "synthetic", "dataset",
            "arch", "epochs", "options"]
    cols = keys + ["bn_train_s", "nd_train_s", "bn_images_per_s", "nd_images_per_s",
                   "ratio_nd_bn", "n_bn", "n_nd", "notes"]
    if runs.empty:
        return pd.DataFrame(columns=cols)
    require_columns(runs, [k for k in keys if k not in ("machine_id", "keep_freed_memory", "synthetic", "options")]
                     + ["run_id", "status", "norm", "train_time_s", "images_per_s"], "the run records")
    done = with_timing_keys(single_setting_times(runs[runs["status"] == "completed"]))
    done["options"] = done["run_id"].map(run_options)
    _, synthetic = split_synthetic(done)
    done["synthetic"] = done.index.isin(synthetic.index)
    done["num_threads"] = done["num_threads"].fillna(0).astype(int)
    agg = (done.groupby(keys + ["norm"])
           .agg(train_s=("train_time_s", "mean"), images_per_s=("images_per_s", "mean"),
                n=("run_id", "count")).unstack("norm"))
    if agg.empty:
        return pd.DataFrame(columns=cols)
    out = pd.DataFrame(index=agg.index)
    for norm in COMPARED_NORMS:
        for metric, name in (("train_s", f"{norm}_train_s"),
                             ("images_per_s", f"{norm}_images_per_s"), ("n", f"n_{norm}")):
            out[name] = agg[(metric, norm)] if (metric, norm) in agg.columns else np.nan
    out["ratio_nd_bn"] = out["nd_train_s"] / out["bn_train_s"]
    out[["n_bn", "n_nd"]] = out[["n_bn", "n_nd"]].fillna(0).astype(int)
    # The runs' free-text notes (e.g. "shared machine, runs concurrent") qualify the times;
    # distinct notes of one configuration are joined by newlines.
    if "note" in done.columns:
        notes = done.groupby(keys)["note"].agg(
            lambda s: "\n".join(dict.fromkeys(str(v) for v in s if isinstance(v, str) and v)))
        out["notes"] = notes.reindex(out.index).fillna("")
    else:
        out["notes"] = ""
    return out.reset_index()[cols]


def epoch_cost(runs: pd.DataFrame, dataset: str = "cifar10", archs: Sequence[str] | None = None,
               epochs: int = 1) -> pd.DataFrame:
    """The measured cost of ND against BN, per (arch, seed) where both ran: completed real-data
    runs with the paper's settings at ``epochs``, on the same machine (``device_name`` and
    instance, ``machine_id``: ``""`` where not recorded), thread count and memory setting
    (``keep_freed_memory``), paired by seed.  Runs whose time mixes settings (resumed under
    others, ``timing_mixed``) are left out.

    Columns: ``arch, seed, device_type, device_name, machine_id, num_threads, keep_freed_memory, bn_train_s, nd_train_s,
    ratio_nd_bn`` (training seconds, summed over epochs), ``bn_double_train_s`` (BN at twice
    the epochs, same seed and machine, when it ran) and ``ratio_nd_bn_double``, and
    ``notes`` (the runs' recorded notes on the machine's load, which qualify the times).
    """
    keys = ["arch", "seed", "device_type", "device_name", "machine_id", "num_threads", "keep_freed_memory"]
    columns = keys + ["bn_train_s", "nd_train_s", "ratio_nd_bn", "bn_double_train_s",
                      "ratio_nd_bn_double", "notes"]
    if runs.empty:
        return pd.DataFrame(columns=columns)
    real, _ = split_synthetic(paper_settings_only(with_timing_keys(single_setting_times(runs))))
    done = real[(real["status"] == "completed") & (real["dataset"] == dataset)
                & in_table(real, 1)].copy()
    if archs is not None:
        done = done[done["arch"].isin(list(archs))]
    done["epochs"] = pd.to_numeric(done["epochs"]).astype(int)
    done["num_threads"] = done["num_threads"].fillna(0).astype(int)
    done["seed"] = done["seed"].astype(int)

    def times(norm: str, n_epochs: int) -> pd.Series:
        part = done[(done["norm"] == norm) & (done["epochs"] == n_epochs)]
        if "finished_at" in part.columns:
            part = part.sort_values("finished_at")
        return part.drop_duplicates(keys, keep="last").set_index(keys)["train_time_s"]

    bn, nd, bn_double = times("bn", epochs), times("nd", epochs), times("bn", 2 * epochs)
    pairs = pd.DataFrame({"bn_train_s": bn, "nd_train_s": nd}).dropna()
    if pairs.empty:
        return pd.DataFrame(columns=columns)
    pairs = pairs.astype(float)
    pairs["ratio_nd_bn"] = pairs["nd_train_s"] / pairs["bn_train_s"]
    pairs["bn_double_train_s"] = bn_double.reindex(pairs.index).astype(float)
    pairs["ratio_nd_bn_double"] = pairs["nd_train_s"] / pairs["bn_double_train_s"]
    note_of = done.assign(note=done["note"] if "note" in done.columns else "")
    note_of = note_of[note_of["epochs"].isin([epochs, 2 * epochs])].groupby(keys)["note"].agg(
        lambda s: "\n".join(dict.fromkeys(str(v) for v in s if isinstance(v, str) and v)))
    pairs["notes"] = note_of.reindex(pairs.index).fillna("")
    return pairs.reset_index()[columns]


def _span(values: pd.Series) -> str:
    """``"1.59 to 1.89"``, or ``"1.80"`` when the values agree to two decimals."""
    low, high = f"{values.min():.2f}", f"{values.max():.2f}"
    return low if low == high else f"{low} to {high}"


def epoch_cost_summary(cost: pd.DataFrame) -> str:
    """Markdown: the measured ratio of ND's training time to BN's per architecture of an
    :func:`epoch_cost` frame (range and median over seed pairs, with the machine), and of ND
    to BN at twice the epochs where that ran; the runs' notes on the machine's load follow,
    since they qualify every ratio."""
    if cost.empty:
        return ("No architecture has completed BN and ND runs of the same seed on one machine "
                "yet, so the cost of an ND epoch against a BN epoch is not measured.")
    lines = []
    cost = with_timing_keys(cost)
    for (arch, device, instance, kind, threads, kept), part in cost.groupby(
            ["arch", "device_name", "machine_id", "device_type", "num_threads", "keep_freed_memory"], sort=False):
        ratio = part["ratio_nd_bn"]
        line = (f"* {paper_names().get(arch, arch)} on {device} ({machine_instance_text(instance)}, {kind}, "
                f"{threads} thread{'s' if threads != 1 else ''}{', freed memory kept' if kept else ''}): "
                f"one ND epoch took {_span(ratio)} times the "
                f"training time of one BN epoch (median {ratio.median():.2f}, {len(part)} seed "
                f"pair{'s' if len(part) != 1 else ''})")
        double = part["ratio_nd_bn_double"].dropna()
        if not double.empty:
            line += (f"; against BN trained for twice the epochs, ND's time is {_span(double)} "
                     f"times BN's ({len(double)} pair{'s' if len(double) != 1 else ''})")
        lines.append(line + ".")
    notes = list(dict.fromkeys(n for text in cost["notes"] for n in str(text).split("\n") if n))
    if notes:
        lines.append("\nThe runs' own notes on the machine's load, which qualify these ratios:\n")
        lines += [f"* {note}" for note in notes]
    return "\n".join(lines)


def run_costs(runs: pd.DataFrame, details: pd.DataFrame) -> pd.DataFrame:
    """The cost of every run we recorded, one row per record, beside the reproduction's time
    for the same cell.

    Columns: ``run_id, status, dataset, arch, norm, epochs, seed, options`` (``""`` for the
    paper's settings), ``synthetic``, ``device_type, device_name, num_threads,
    keep_freed_memory, cpu_count`` (the settings of the run's last segment),
    ``timing_mixed`` (True when it was resumed under other settings, so its times mix them),
    ``train_s, eval_s, wall_s`` (our seconds: training, evaluation, their sum, on that
    machine), ``load_start, load_end`` (load average over 1 / 5 / 15 minutes at the run's
    start and end, as text), ``note``; and the reproduction's mean seconds over its attempts
    on its machine, ``repro_train_s, repro_eval_s`` with ``repro_device`` (empty where the
    cell is not one of the paper's).
    """
    columns = ["run_id", "status", "dataset", "arch", "norm", "epochs", "seed", "options",
               "synthetic", "device_type", "device_name", "machine_id", "num_threads", "keep_freed_memory",
               "timing_mixed", "cpu_count", "train_s",
               "eval_s", "wall_s", "load_start", "load_end", "note", "repro_train_s",
               "repro_eval_s", "repro_device"]
    if runs.empty:
        return pd.DataFrame(columns=columns)
    out = with_timing_keys(runs).merge(details, on="run_id", how="left")
    _, synthetic = split_synthetic(out)
    out["synthetic"] = out.index.isin(synthetic.index)
    out["options"] = out["run_id"].map(run_options)
    out["timing_mixed"] = mixed_timing(out)
    out["train_s"] = pd.to_numeric(out["train_time_s"], errors="coerce")
    out["eval_s"] = pd.to_numeric(out["eval_time_s"], errors="coerce")
    out["wall_s"] = out["train_s"] + out["eval_s"]
    out["load_start"] = out["load_avg_at_start"].map(load_average_text)
    out["load_end"] = out["load_avg_at_end"].map(load_average_text)
    out["note"] = out["note"].fillna("") if "note" in out.columns else ""
    repro = published.reproduction_table1().assign(norm=lambda d: d["method"].str.lower())
    repro = (repro.groupby(CELL_KEYS).agg(repro_train_s=("train_time_s", "mean"),
                                      repro_eval_s=("test_time_s", "mean")).reset_index())
    out["epochs"] = pd.to_numeric(out["epochs"], errors="coerce").astype("Int64")
    repro["epochs"] = repro["epochs"].astype("Int64")
    out = out.merge(repro, on=CELL_KEYS, how="left")
    # A run with other options or synthetic data is not the reproduction's cell.
    unlike = (out["options"] != "") | out["synthetic"]
    out.loc[unlike, ["repro_train_s", "repro_eval_s"]] = np.nan
    out["repro_device"] = np.where(out["repro_train_s"].notna(), REPRODUCTION_DEVICE, "")
    out = out.sort_values(["dataset", "arch", "epochs", "norm", "seed", "run_id"])
    return out[columns].reset_index(drop=True)


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
            measured["machine_type"], measured["device_type"], measured["num_threads"])}))
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
