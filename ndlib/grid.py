"""The grid of Tables 1 and 2: plan the runs, run the missing ones, or write a Slurm array.

``python -m ndlib grid --table 1 --epochs 1 20 100 --seeds 0 1 2`` plans one
:class:`~ndlib.train.TrainConfig` per (dataset, arch, norm, epochs, seed), prints the plan
with each run's status, and trains, one after the other, only those without a ``completed``
record (a ``running``, ``failed``, ``interrupted`` or ``diverged`` record is rerun; a run with
a checkpoint resumes from it).

Several workers may share the grid (e.g. two shells, or many Slurm tasks on a shared file
system): before training, a worker *claims* the run (:mod:`ndlib.claims`: an exclusive lock on
``<runs_dir>/.claims/<run_id>.claim``, which the kernel drops when the worker dies) and skips
runs that another live worker holds.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ndlib.checkpoint import checkpoint_position
from ndlib.claims import ClaimTaken, claim, claims_folder, holder
from ndlib.cliargs import add_config_arguments, usage_error
from ndlib.config import TrainConfig, execution_of_options, known_archs, run_id_options
from ndlib.data import DATASETS
from ndlib.models import NORMS
from ndlib.records import machine_id, process_alive, read_record, record_path, this_machine_type

__all__ = ["TABLE_DEFAULTS", "norms_for", "plan", "run_status", "CostEstimate", "estimate_cost",
           "planned_machine_type", "run_grid", "slurm_script", "add_parser"]

# What each table sweeps by default (spec sections 4 and 5).
TABLE_DEFAULTS: dict[int, dict] = {
    1: {"datasets": ("cifar10", "cifar100"), "epochs": (1, 20, 100)},
    2: {"datasets": ("imagenet",), "epochs": (90,)},
}

# Table 2 has a third VGG-11 variant without normalisation.
_EXTRA_NORMS = {"vgg11_imagenet": ("none",)}


def norms_for(arch: str) -> tuple[str, ...]:
    """The variants of ``arch`` in the paper: BN and ND, plus 'none' for VGG-11 on ImageNet."""
    return _EXTRA_NORMS.get(arch, ()) + ("bn", "nd")


def _check_choices(name: str, values: Sequence, valid: Sequence) -> None:
    bad = [v for v in values if v not in valid]
    if bad:
        raise ValueError(f"invalid {name} {bad}; valid: {list(valid)}")


def plan(table: int, epochs: Sequence[int] | None = None, seeds: Sequence[int] = (0,),
         archs: Sequence[str] | None = None, datasets: Sequence[str] | None = None,
         norms: Sequence[str] | None = None, **options) -> list[TrainConfig]:
    """Every configuration of the table's grid (``options`` go to every TrainConfig)."""
    if table not in TABLE_DEFAULTS:
        raise ValueError(f"table must be one of {sorted(TABLE_DEFAULTS)}, got {table!r}")
    defaults = TABLE_DEFAULTS[table]
    table_datasets = [name for name, info in DATASETS.items() if info.table == table]
    datasets = list(datasets) if datasets else list(defaults["datasets"])
    _check_choices("datasets", datasets, table_datasets)
    archs = list(archs) if archs else known_archs(table, extras=False)  # the paper's grid
    _check_choices("archs", archs, known_archs(table))
    if norms:
        _check_choices("norms", norms, NORMS)
    epochs = list(epochs) if epochs else list(defaults["epochs"])
    for name, values in (("seeds", list(seeds)), ("epochs", epochs), ("archs", archs), ("datasets", datasets),
                         ("norms", list(norms or []))):
        repeated = sorted({v for v in values if values.count(v) > 1}, key=str)
        if repeated:
            raise ValueError(f"{name} lists {repeated} more than once; give each once")
    configs = []
    for dataset in datasets:
        for arch in archs:
            for norm in norms_for(arch):
                if norms and norm not in norms:
                    continue
                # the ND layers' options (--deconv-*) go to the ND runs only
                own = {k: v for k, v in options.items() if norm == "nd" or not k.startswith("deconv_")}
                for epoch_count in epochs:
                    for seed in seeds:
                        configs.append(TrainConfig(arch=arch, norm=norm, dataset=dataset, epochs=epoch_count,
                                                   seed=seed, **own))
    if not configs:
        raise ValueError("no runs planned: no architecture of the table has the norms asked for (--norms none "
                         "exists for vgg11_imagenet on Table 2 only)")
    return configs


def run_status(config: TrainConfig, *, holding_claim: bool = False) -> str:
    """The status in the run's record, or ``missing``.

    A ``running`` record reads ``running`` while a worker holds the run's claim (or, for a
    process started before claims lived beside the records, while the process that wrote it is
    alive on this machine: same boot, :func:`~ndlib.records.machine_id`); otherwise the process
    was killed without a chance to record it, and it reads ``stale``.  ``holding_claim``: the
    caller holds the claim itself, so only the second test applies.
    """
    path = record_path(config.run_id, config.runs_dir)
    if not path.is_file():
        return "missing"
    record = read_record(path)
    status = str(record.get("status", "unknown"))
    if status == "running" and (holding_claim or holder(config.run_id, claims_folder(config.runs_dir)) is None):
        environment = record.get("environment") or {}
        pid, machine = environment.get("pid"), environment.get("machine_id")
        if not (machine is not None and machine == machine_id() and isinstance(pid, int) and process_alive(pid)):
            return "stale"
    return status


@dataclass(frozen=True)
class CostEstimate:
    """What a planned run should cost: ``seconds`` for all its epochs, scaled from ``per_epoch_s``.

    ``source`` says where the per-epoch figure comes from: ``"own"``, the mean training +
    evaluation time of the ``n_records`` epochs the run itself has finished (a run under way);
    ``"runs"``, the median training + evaluation time per epoch of ``n_records`` completed runs of
    the same model on the same kind of device; ``"bench"``, the newest ``python -m ndlib bench``
    step time times the steps of an epoch (synthetic batches, training steps only: no data
    loading, no evaluation)."""

    seconds: float
    per_epoch_s: float
    source: str
    n_records: int
    device_type: str
    num_threads: int | None
    machine: str | None = None  # the machine type of every record it rests on, when they share one

    def describe(self) -> str:
        threads = "" if self.num_threads is None else \
            f", {self.num_threads} thread{'s' if self.num_threads != 1 else ''}"
        where = self.machine or self.device_type
        if self.source == "own":
            basis = f"its own {self.n_records} finished epoch{'s' if self.n_records != 1 else ''}{threads}"
        elif self.source == "runs":
            basis = (f"median of {self.n_records} completed run{'s' if self.n_records != 1 else ''}, "
                     f"{where}{threads}")
        else:
            basis = f"bench step time x steps, {where}{threads}, no evaluation or data loading"
        return f"~{self.seconds / 3600:.1f} h ({self.per_epoch_s / 60:.0f} min/epoch: {basis})"


def _planned_device_type(config: TrainConfig) -> str:
    if config.device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return config.device.split(":")[0]


def planned_machine_type(config: TrainConfig) -> str | None:
    """The machine type (:func:`ndlib.records.machine_type`) ``config`` would train on here."""
    return this_machine_type(_planned_device_type(config))


def _prefer_machine(frame, machine: str | None):
    """Rows of machine type ``machine`` when there are any, else all of ``frame``."""
    if machine is None or "machine_type" not in frame.columns:
        return frame
    same = frame[frame["machine_type"] == machine]
    return same if not same.empty else frame


def _shared_machine(frame) -> str | None:
    """The machine type of every row of ``frame``, or None when they differ or one is unknown."""
    if "machine_type" not in frame.columns:
        return None
    kinds = set(frame["machine_type"])
    kind = kinds.pop() if len(kinds) == 1 else None
    return kind if isinstance(kind, str) else None


def _same_threads(frame, num_threads: int | None):
    """Rows with ``num_threads`` (when given), else those of the most common thread count."""
    threads = frame["num_threads"]
    if num_threads is not None:
        return frame[threads == num_threads]
    if threads.notna().any():
        return frame[threads == threads.mode().iloc[0]]
    return frame


def estimate_cost(config: TrainConfig, runs, bench=None, machine: str | None = None) -> CostEstimate | None:
    """The expected cost of ``config``, or None when nothing comparable was measured.

    A run under way with finished epochs in ``runs`` (:func:`ndlib.records.load_runs`) is
    estimated from those: its own machine, load and code, closer than any other run (not when
    its time mixes settings, ``timing_mixed``, nor when ``machine`` is given and they were timed
    on another machine type, as for a snapshot of a run that a lost machine had under way).
    Otherwise from ``runs`` first: the median per-epoch training +
    evaluation seconds of the completed real-data runs of the same table, architecture and
    norm on the same device type, times ``config.epochs``.  Both CIFAR datasets count for each
    other (the same 50,000 + 10,000 images; only the classifier differs).  With
    ``config.num_threads`` set, only runs with that thread count count; otherwise the thread
    count with the most runs.  Only runs with the same non-default options count (the same
    ``-o`` suffix of the run id, none for the paper's settings): a refresh mode, for one, is
    another computation at another cost.  With ``machine`` (the machine type the run will train
    on, :func:`ndlib.records.this_machine_type`), the completed runs of that machine type only,
    when there are any: one device type and thread count has covered CPUs more than twice apart
    (VGG-16 ND, 1 thread: about 4,000 s per epoch on one AMD EPYC VM, 1,700 s on an Intel Xeon).

    Failing that, for the paper's settings only (executed in float32 or bf16 autocast, in the
    contiguous or channels_last layout: :func:`ndlib.config.execution_options`), from ``bench``
    (:func:`ndlib.bench.load_bench` with ``amp=None``): the newest exact-layer (``ndlib``,
    ``refresh_every`` 1) step time of the architecture in the run's precision and layout at its
    batch size on the same device type
    (and thread count and preferred machine type, as above), times the steps of ``config.epochs`` epochs.  Never from
    another model, device, precision or layout: no estimate is better than a guess."""
    device_type = _planned_device_type(config)
    options = run_id_options(config.run_id)
    if runs is not None and len(runs):
        runs = runs[runs["run_id"].map(run_id_options) == options]
        from ndlib.report.frames import is_missing  # (ndlib.report is heavy: only where runs are read)

        own = runs[(runs["run_id"] == config.run_id) & (runs["epochs_done"] > 0)
                   & (runs["device_type"] == device_type) & ~runs["timing_mixed"].fillna(False).astype(bool)]
        if machine is not None and "machine_type" in own.columns:  # its epochs on another machine type: no guide
            own = own[own["machine_type"].isna() | (own["machine_type"] == machine)]
        if not own.empty and not is_missing(own["train_time_s"].iloc[-1]):
            row = own.iloc[-1]
            eval_s = 0.0 if is_missing(row["eval_time_s"]) else float(row["eval_time_s"])
            per_epoch = (float(row["train_time_s"]) + eval_s) / float(row["epochs_done"])
            return CostEstimate(per_epoch * config.epochs, per_epoch, "own", int(row["epochs_done"]), device_type,
                                None if is_missing(row["num_threads"]) else int(row["num_threads"]),
                                _shared_machine(own.iloc[[-1]]))
        done = runs[(runs["status"] == "completed") & ~runs["synthetic"].astype(bool)
                    & (runs["table"] == config.table) & (runs["arch"] == config.arch)
                    & (runs["norm"] == config.norm) & (runs["device_type"] == device_type)
                    & (runs["epochs_done"] > 0)]
        done = _prefer_machine(_same_threads(done, config.num_threads), machine)
        if not done.empty:
            per_epoch = float(((done["train_time_s"].astype(float) + done["eval_time_s"].fillna(0.0).astype(float))
                               / done["epochs_done"].astype(float)).median())
            threads = done["num_threads"].dropna()
            return CostEstimate(per_epoch * config.epochs, per_epoch, "runs", len(done), device_type,
                                int(threads.iloc[0]) if not threads.empty else None, _shared_machine(done))
    execution = execution_of_options(options)
    if bench is None or not len(bench) or config.norm not in ("bn", "nd") or execution is None:
        return None
    amp, channels_last = execution
    rows = bench[(bench["arch"] == config.arch) & (bench["batch_size"] == config.batch_size)
                 & (bench["device_type"] == device_type) & (bench["implementation"] == "ndlib")]
    if "amp" in rows.columns:  # the run's precision only
        rows = rows[rows["amp"].fillna(False).astype(bool) == amp]
    elif amp:
        return None
    if "refresh_every" in rows.columns:
        rows = rows[rows["refresh_every"].fillna(1).astype(int) == 1]
    if "channels_last" in rows.columns:  # the run's memory layout only
        rows = rows[rows["channels_last"].fillna(False).astype(bool) == channels_last]
    elif channels_last:
        return None
    rows = _prefer_machine(_same_threads(rows, config.num_threads), machine)
    if rows.empty:
        return None
    newest = rows.sort_values("created_at").iloc[[-1]]
    steps = math.ceil(DATASETS[config.dataset].num_train / config.batch_size)
    per_epoch = float(newest[f"{config.norm}_step_s"].iloc[0]) * steps
    threads = newest["num_threads"].iloc[0]
    return CostEstimate(per_epoch * config.epochs, per_epoch, "bench", 1, device_type,
                        None if threads != threads else int(threads), _shared_machine(newest))


@dataclass
class GridSummary:
    completed: int = 0
    skipped_done: int = 0
    skipped_claimed: int = 0
    diverged: int = 0
    failed: int = 0

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else (3 if self.diverged else 0)


def run_grid(configs: Sequence[TrainConfig], *, claims: str | Path | None = None, progress: bool = True,
             stream=None) -> GridSummary:
    """Train every configuration without a completed record, claiming each first (in ``claims``,
    default: beside each run's records, :func:`ndlib.claims.claims_folder`).

    A completed record is never touched.  Missing data, a missing device or an unwritable runs
    folder stops the grid (:class:`~ndlib.train.BadRunInput`, :class:`~ndlib.records.RecordWriteError`)."""
    from ndlib.records import RecordWriteError
    from ndlib.train import BadRunInput, run

    stream = stream if stream is not None else sys.stdout
    summary = GridSummary()
    todo = [c for c in configs if run_status(c) != "completed"]
    summary.skipped_done = len(configs) - len(todo)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="grid", unit="run")
    for config in todo:
        if bar is not None:
            bar.set_postfix_str(config.run_id)
        try:
            with claim(config.run_id, claims if claims is not None else claims_folder(config.runs_dir)):
                status = run_status(config, holding_claim=True)
                if status == "completed":  # finished by another worker meanwhile
                    summary.skipped_done += 1
                    continue
                if status == "running":  # started outside the grid (python -m ndlib train), still alive
                    raise ClaimTaken(f"{config.run_id} is being trained by a live process (its record says running)")
                try:
                    record = run(config, progress=progress)
                except (BadRunInput, RecordWriteError):
                    raise  # bad input or an unwritable folder: every other run would fail the same way
                except Exception as error:  # recorded as failed; go on with the rest of the grid
                    print(f"{config.run_id}: failed: {type(error).__name__}: {error}", file=stream)
                    summary.failed += 1
                    continue
                if record["status"] == "diverged":
                    summary.diverged += 1
                else:
                    summary.completed += 1
                final = record.get("final") or {}
                print(f"{config.run_id}: {record['status']} test_acc={final.get('test_acc')}", file=stream)
        except ClaimTaken as taken:
            print(f"skip: {taken}", file=stream)
            summary.skipped_claimed += 1
        finally:
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return summary


def _train_arguments(config: TrainConfig) -> str:
    """The ``python -m ndlib train`` options that reproduce ``config`` (:meth:`TrainConfig.train_arguments`:
    the run id's fields and the non-default ones), shell-quoted."""
    return shlex.join(config.train_arguments())


def slurm_script(configs: Sequence[TrainConfig], *, job_name: str = "ndlib-grid", partition: str | None = None,
                 time_limit: str = "24:00:00", gpus: int = 1, cpus: int = 8, python: str = "python") -> str:
    """A Slurm array script, one task per configuration (task i trains ``configs[i]``)."""
    if not configs:
        raise ValueError("no runs to put in a Slurm script (every configuration already has a completed record?)")
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={job_name}",
        f"#SBATCH --array=0-{len(configs) - 1}",
        f"#SBATCH --gres=gpu:{gpus}",
        f"#SBATCH --cpus-per-task={cpus}",
        f"#SBATCH --time={time_limit}",
        "#SBATCH --output=slurm-%A_%a.out",
    ]
    if partition:
        lines.append(f"#SBATCH --partition={partition}")
    lines += [
        "# Written by `python -m ndlib grid --slurm`; submit with `sbatch <this file>` from the project root.",
        "# Each task trains one run and writes results/runs/<run_id>.json; rerunning resumes from checkpoints.",
        "set -euo pipefail",
        "RUNS=(",
        *[f"  {shlex.quote(_train_arguments(c))}  # {c.run_id}" for c in configs],
        ")",
        f'eval "exec {python} -m ndlib train --no-progress ${{RUNS[$SLURM_ARRAY_TASK_ID]}}"',
    ]
    return "\n".join(lines) + "\n"


def _print_plan(configs: Sequence[TrainConfig], stream) -> None:
    """The plan, one line per run: its status, and for a run still to do where it resumes from
    its checkpoint (:func:`ndlib.checkpoint.checkpoint_position`) and what is left of its cost
    (:func:`estimate_cost`, times the share of training still to do); then the total."""
    from ndlib.bench import load_bench
    from ndlib.records import load_runs

    records = {folder: load_runs(folder) for folder in {c.runs_dir for c in configs}}
    bench = load_bench(None, amp=None)
    print(f"{len(configs)} runs planned:", file=stream)
    seconds = {"runs": 0.0, "bench": 0.0}
    todo, unknown, resuming = 0, 0, 0
    for config in configs:
        status = run_status(config)
        line = f"  {status:<11} {config.run_id}"
        if status != "completed":
            todo += 1
            position = checkpoint_position(config)
            done = 0.0 if position is None else position.fraction_done
            if position is not None:
                line += f"  [{position.describe()}]"
            estimate = estimate_cost(config, records[config.runs_dir], bench, planned_machine_type(config))
            if estimate is None:
                unknown += 1
                line += "  no estimate (no completed run or benchmark of this model on this device)"
            else:
                left = estimate.seconds * (1.0 - done)
                seconds[estimate.source] += left
                resuming += done > 0
                line += (f"  ~{left / 3600:.1f} h left of " if done > 0 else "  ") + estimate.describe()
        print(line, file=stream)
    if todo:
        parts = [f"~{seconds[source] / 3600:.1f} h {label}" for source, label in
                 (("runs", "estimated from completed runs"), ("bench", "from benchmark step times"))
                 if seconds[source]]
        print(f"{todo} run{'s' if todo != 1 else ''} to do, one after another: " + (" + ".join(parts) or "no estimate")
              + (f"; {unknown} without an estimate" if unknown and parts else "")
              + (f" ({resuming} resuming: only the training after the checkpoint counts)" if resuming else ""),
              file=stream)


def _grid(args: argparse.Namespace) -> int:
    from ndlib.distributed import context_from_env

    if context_from_env().enabled:
        args.parser.error("the grid runs one configuration at a time in one process; for several GPUs per run, "
                          "use `torchrun ... -m ndlib train` per configuration (or --slurm and edit the launcher)")
    from ndlib.records import RecordWriteError
    from ndlib.train import BadRunInput

    skipped = {"arch", "norm", "dataset", "epochs", "seed"}
    shared = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if f.name not in skipped}
    try:
        configs = plan(args.table, args.epochs, args.seeds, args.archs, args.datasets, args.norms, **shared)
    except (ValueError, TypeError) as error:
        args.parser.error(str(error))
    try:
        if args.slurm and args.dry_run:
            args.parser.error("--slurm writes a script and --dry-run only prints the plan: give one of them")
        if args.partition is not None and not re.fullmatch(r"[A-Za-z0-9_.,-]+", args.partition):
            args.parser.error(f"--partition {args.partition!r} is not a Slurm partition name (letters, digits, "
                              "'_', '-', '.', ',')")
        _print_plan(configs, sys.stdout)
        if args.slurm:
            todo = [c for c in configs if run_status(c) != "completed"]
            Path(args.slurm).write_text(slurm_script(todo, partition=args.partition, time_limit=args.time_limit))
            print(f"wrote {args.slurm}: a Slurm array of {len(todo)} tasks; submit it with `sbatch {args.slurm}`")
            return 0
        if args.dry_run:
            return 0
        summary = run_grid(configs, progress=not args.no_progress)
    except KeyboardInterrupt:
        print("grid interrupted; rerun the same command to continue (finished runs are skipped)", file=sys.stderr)
        return 130
    except (BadRunInput, RecordWriteError, ValueError, OSError) as error:  # damaged record, data, disk
        return usage_error(args.parser.prog, f"grid stopped: {error}")
    print(f"grid done: {summary}")
    return summary.exit_code


def add_parser(subparsers) -> None:
    """Register ``grid``."""
    parser = subparsers.add_parser(
        "grid", help="plan / run / Slurm-script a table's grid",
        description="Plan the runs of Table 1 or 2, then train those without a completed record "
                    "(or write a Slurm array script with --slurm).")
    parser.add_argument("--table", type=int, choices=sorted(TABLE_DEFAULTS), required=True)
    parser.add_argument("--epochs", type=int, nargs="+", help="default: 1 20 100 (Table 1), 90 (Table 2)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--archs", nargs="+", help="default: every architecture of the table")
    parser.add_argument("--datasets", nargs="+", help="default: cifar10 cifar100 (Table 1), imagenet (Table 2)")
    parser.add_argument("--norms", nargs="+", choices=list(NORMS), help="default: every variant")
    parser.add_argument("--dry-run", action="store_true", help="print the plan only")
    parser.add_argument("--slurm", metavar="PATH", help="write a Slurm array script for the missing runs instead")
    parser.add_argument("--partition", help="Slurm partition (with --slurm)")
    parser.add_argument("--time-limit", default="24:00:00", help="Slurm time per task (with --slurm)")
    parser.add_argument("--no-progress", action="store_true")
    add_config_arguments(parser, skip=("arch", "norm", "dataset", "epochs", "seed"))
    parser.set_defaults(handler=_grid, parser=parser)
