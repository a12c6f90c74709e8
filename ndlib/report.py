"""Report tables for the book: our run records beside the published numbers, as DataFrames.

Every function here takes DataFrames (our records, our benchmarks) and returns a DataFrame,
so that the book's chapters stay thin and every number they show is computed, never typed.
Sources:

* our runs: :func:`ndlib.records.load_runs` / :func:`ndlib.records.load_histories`
  (one JSON record per run in ``results/runs/``);
* our benchmarks: :func:`ndlib.bench.load_bench` (``results/bench/``);
* the paper's and the reproduction's numbers: :mod:`ndlib.published`.

Two rules are enforced here rather than in the chapters:

* **Synthetic-data runs never enter a results table.**  Records with ``synthetic == True``
  (smoke runs on random images) are split off by :func:`split_synthetic`; the chapters list
  them separately, labelled "synthetic smoke run".
* **Only completed runs give accuracies.**  Diverged, interrupted and failed runs are counted
  per cell (column ``ours_other_runs``) so that a reader sees them, but they give no accuracy.

Statistics over seeds: mean and sample standard deviation (``ddof=1``; undefined for one seed),
with ``n`` the number of distinct seeds.  All accuracies are in percent.
"""
from __future__ import annotations

import importlib
import importlib.util
import math
import re
import shlex
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from ndlib import published
from ndlib.paths import project_root

__all__ = [
    "CIFAR_EPOCHS",
    "DEFAULT_SEEDS",
    "RUN_COLUMNS",
    "HISTORY_COLUMNS",
    "BENCH_COLUMNS",
    "load_runs",
    "load_histories",
    "load_bench",
    "split_synthetic",
    "grid_command",
    "format_command",
    "table1",
    "table1_display",
    "table1_long",
    "reproduction_vs_paper",
    "reproduction_evidence",
    "our_train_vs_test",
    "final_epoch_from_history",
    "synthetic_summary",
    "check_history_consistency",
    "table2_published",
    "table2_status",
    "imagenet_compute",
    "table2_gains",
    "table2_commands",
    "reproduction_timing",
    "our_timing",
    "bench_summary",
    "flop_overhead",
    "missing_commands",
    "format_mean_std",
    "nd_vs_bn",
    "run_options",
    "paper_settings_only",
    "train_command",
    "compare_difference",
    "prediction_factor",
    "agreement_with_paper",
    "compare_cells",
    "efficientnet_variants",
    "efficientnet_sentences",
    "equal_cost",
    "equal_cost_verdicts",
    "epoch_cost",
    "epoch_cost_summary",
    "first_layer_descriptions",
    "one_epoch_discussion",
    "gain_sentences",
    "record_details",
    "load_record_details",
    "run_costs",
    "machine_instance_text",
    "channel_statistics",
    "load_average_text",
]

CIFAR_EPOCHS: tuple[int, ...] = (1, 20, 100)
DEFAULT_SEEDS: tuple[int, ...] = (0, 1, 2)
NORMS: tuple[str, ...] = ("bn", "nd")
REPRODUCTION_DEVICE = "Tesla V100-SXM2-16GB"

# The columns promised by the records and benchmark contracts; used to give an empty,
# correctly shaped frame when nothing has been recorded yet.
RUN_COLUMNS: tuple[str, ...] = (
    "run_id", "status", "table", "dataset", "arch", "norm", "epochs", "seed", "synthetic",
    "data_source", "test_acc", "test_top5", "test_loss", "train_acc", "train_loss", "train_time_s",
    "eval_time_s", "images_per_s", "peak_mem_mb", "device_type", "device_name", "machine_id", "num_threads",
    "keep_freed_memory", "timing_mixed", "torch_version", "git_commit", "git_dirty", "started_at", "finished_at",
)
HISTORY_COLUMNS: tuple[str, ...] = (
    "run_id", "epoch", "train_loss", "train_acc", "test_acc", "test_top5", "lr",
    "train_time_s", "eval_time_s",
)
BENCH_COLUMNS: tuple[str, ...] = (
    "bench_id", "arch", "batch_size", "device_type", "device_name", "num_threads", "bn_step_s",
    "nd_step_s", "ratio_nd_bn", "implementation", "torch_version", "created_at",
)

_CELL = ["dataset", "arch", "norm", "epochs"]


def _in_table(runs: pd.DataFrame, table: int) -> pd.Series:
    """Rows of ``runs`` that belong to the paper's Table ``table`` (a missing value: none)."""
    return pd.to_numeric(runs["table"], errors="coerce") == table


# A run whose settings differ from the paper's defaults has ``-o<hash of the options>`` at the
# end of its run id (``ndlib.train.TrainConfig.run_id``).
_OPTIONS_SUFFIX = re.compile(r"-o[0-9a-f]+$")


def run_options(run_id: object) -> str:
    """The ``-o<hash>`` suffix of a run id (its non-default options), ``""`` for a run with
    the paper's settings.  E.g. ``"t1-cifar10-vgg16-nd-e1-s0-o1a2b3c4d"`` -> ``"o1a2b3c4d"``."""
    match = _OPTIONS_SUFFIX.search(run_id) if isinstance(run_id, str) else None
    return match.group(0)[1:] if match else ""


def paper_settings_only(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs trained with the paper's settings: run ids without an ``-o<hash>`` suffix.

    A run with any non-default option (e.g. ``deconv_refresh_every``) measures something else
    and never counts for a cell of the paper's table."""
    _require_columns(runs, ["run_id"], "the run records")
    return runs[runs["run_id"].map(run_options) == ""]


# --------------------------------------------------------------------------- loading


def _empty(columns: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype="object") for name in columns})


def _optional_loader(module: str, function: str) -> Callable[..., pd.DataFrame] | None:
    """The loader ``module.function`` if that module exists (it may be written later).

    Only a *missing* module is tolerated; an import that fails inside an existing module
    raises, as it should.
    """
    if importlib.util.find_spec(module) is None:
        return None
    return getattr(importlib.import_module(module), function)


def _load(module: str, function: str, subdir: str, columns: Sequence[str],
          root: str | Path | None) -> pd.DataFrame:
    loader = _optional_loader(module, function)
    # The book's notebooks run with cwd = book/, so the default is anchored at the project root.
    folder = Path(root) if root is not None else project_root() / subdir
    if loader is None:
        return _empty(columns)
    return loader(root=str(folder))


def load_runs(root: str | Path | None = None) -> pd.DataFrame:
    """Our run records (one row per run), or an empty frame with the contract's columns
    when ``ndlib.records`` is not installed.  ``root`` defaults to ``<project>/results/runs``."""
    return _load("ndlib.records", "load_runs", "results/runs", RUN_COLUMNS, root)


def load_histories(root: str | Path | None = None) -> pd.DataFrame:
    """Per-epoch histories of our runs (long form), empty when there are none."""
    return _load("ndlib.records", "load_histories", "results/runs", HISTORY_COLUMNS, root)


def load_bench(root: str | Path | None = None) -> pd.DataFrame:
    """Our step-time benchmarks, empty when there are none.  ``root`` defaults to
    ``<project>/results/bench``."""
    return _load("ndlib.bench", "load_bench", "results/bench", BENCH_COLUMNS, root)


def _require_columns(df: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks the column(s) {missing}; got {list(df.columns)}")


def split_synthetic(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(real, synthetic)``: records on real data, and smoke runs on synthetic data.

    A record whose ``synthetic`` flag is missing counts as synthetic: a result whose data
    source is unknown must not enter a results table.
    """
    _require_columns(runs, ["synthetic"], "the run records")
    flag = runs["synthetic"].map(lambda v: True if v is None or v is pd.NA or
                                 (isinstance(v, float) and math.isnan(v)) else bool(v))
    flag = flag.astype(bool)
    return runs[~flag].copy(), runs[flag].copy()


# --------------------------------------------------------------------------- commands


def grid_command(dataset: str, archs: Sequence[str] | None = None,
                 epochs: Sequence[int] = CIFAR_EPOCHS,
                 seeds: Sequence[int] = DEFAULT_SEEDS, table: int = 1) -> str:
    """The command that runs the given Table 1 cells with the grid CLI (``python -m ndlib``)."""
    parts = ["python", "-m", "ndlib", "grid", "--table", str(table), "--datasets", dataset]
    if archs:
        parts += ["--archs", *archs]
    parts += ["--epochs", *map(str, epochs), "--seeds", *map(str, seeds)]
    return shlex.join(parts)


def format_command(command: str, width: int = 72) -> str:
    """A long shell command broken into lines of about ``width`` characters, joined with
    `` \\`` continuations (for display; the shell reads it as one command).  Lines break
    before an ``--option`` so that options stay with their values; an option whose values do
    not fit on one line is broken between its values."""
    groups: list[list[str]] = []
    for word in shlex.split(command):
        if word.startswith("--") or not groups:
            groups.append([])
        groups[-1].append(shlex.quote(word))
    lines, current = [], ""
    for group in groups:
        text = " ".join(group)
        if current.strip() and len(current) + 1 + len(text) <= width:
            current = f"{current} {text}"
            continue
        if current.strip():
            lines.append(current)
            current = "    "
        for piece in group:
            if current.strip() and len(current) + 1 + len(piece) > width:
                lines.append(current)
                current = "    " + piece
            else:
                current = f"{current} {piece}" if current.strip() else current + piece
    lines.append(current)
    return " \\\n".join(lines)


# --------------------------------------------------------------------------- Table 1


def _paper_cells(dataset: str) -> pd.DataFrame:
    paper = published.paper_table1()
    paper = paper[paper["dataset"] == dataset].copy()
    if paper.empty:
        known = sorted(published.paper_table1()["dataset"].unique())
        raise ValueError(f"unknown dataset {dataset!r}; Table 1 has {known}")
    paper["norm"] = paper["method"].str.lower()
    return paper.rename(columns={"test_acc_pct": "paper_test"})[
        ["dataset", "arch", "paper_name", "norm", "epochs", "paper_test"]]


def _reproduction_cells() -> pd.DataFrame:
    repro = published.reproduction_table1()
    repro["norm"] = repro["method"].str.lower()
    return (repro.groupby(_CELL)["acc_pct"]
            .agg(repro_mean="mean", repro_std="std", repro_n="count").reset_index())


def _our_cells(runs: pd.DataFrame, table: int) -> pd.DataFrame:
    """Per cell: test mean/std over the distinct seeds of completed real runs with the paper's
    settings (:func:`paper_settings_only`), their mean training seconds (of the runs that
    trained under one setting throughout, ``timing_mixed`` False), and counts."""
    columns = ["dataset", "arch", "norm", "epochs", "ours_test_mean", "ours_test_std", "ours_n",
               "ours_train_mean", "ours_test_loss_mean", "ours_seed_results", "ours_seeds",
               "ours_train_time_mean", "ours_other_runs", "ours_other_detail"]
    if runs.empty:
        return pd.DataFrame(columns=columns)
    _require_columns(runs, ["run_id", "status", "table", "dataset", "arch", "norm", "epochs",
                            "seed", "test_acc", "train_acc", "train_time_s", "synthetic"],
                     "the run records")
    real, _ = split_synthetic(paper_settings_only(runs))
    real = real[_in_table(real, table)]
    if real.empty:
        return pd.DataFrame(columns=columns)
    real = real.assign(epochs=real["epochs"].astype(int))
    if "test_loss" not in real.columns:  # a frame built before the column existed
        real = real.assign(test_loss=np.nan)
    real = real.assign(test_loss=pd.to_numeric(real["test_loss"], errors="coerce"))
    done = real[real["status"] == "completed"]
    # One value per seed: if a seed was run twice, the latest finished run counts.
    if "finished_at" in done.columns:
        done = done.sort_values("finished_at")
    done = done.drop_duplicates(_CELL + ["seed"], keep="last")
    # A run's accuracy counts; its time only where it ran under one setting throughout.
    done = done.assign(train_time_s=pd.to_numeric(done["train_time_s"], errors="coerce")
                       .where(~_mixed_timing(done)))
    cells = (done.groupby(_CELL)
             .agg(ours_test_mean=("test_acc", "mean"), ours_test_std=("test_acc", "std"),
                  ours_n=("seed", "nunique"), ours_train_mean=("train_acc", "mean"),
                  ours_test_loss_mean=("test_loss", "mean"),
                  ours_seeds=("seed", lambda s: tuple(sorted(int(v) for v in s))),
                  ours_train_time_mean=("train_time_s", "mean"))
             .reset_index())
    # Each seed's own outcome, so that one failed seed is visible behind a cell's mean.
    per_seed = {key: tuple(sorted((int(seed), float(acc), float(loss)) for seed, acc, loss in
                                  zip(group["seed"], group["test_acc"], group["test_loss"])))
                for key, group in done.groupby(_CELL)}
    cells["ours_seed_results"] = [per_seed[tuple(key)] for key in
                                  cells[_CELL].itertuples(index=False, name=None)]
    unfinished = real[real["status"] != "completed"]
    other = (unfinished.groupby(_CELL)
             .agg(ours_other_runs=("status", "size"),
                  ours_other_detail=("status", lambda s: ", ".join(
                      f"{count} {status}" for status, count in sorted(s.value_counts().items()))))
             .reset_index())
    merged = cells.merge(other, on=_CELL, how="outer")
    merged["ours_other_runs"] = merged["ours_other_runs"].fillna(0).astype(int)
    merged["ours_other_detail"] = merged["ours_other_detail"].fillna("")
    merged["ours_n"] = merged["ours_n"].fillna(0).astype(int)
    return merged[columns]


def _cell_status(n: int, other_detail: str, wanted: int) -> str:
    """E.g. "not run", "2 of 3 seeds (1 diverged)", "done", "not run (1 running)"."""
    status = "not run" if n == 0 else (f"{n} of {wanted} seeds" if n < wanted else "done")
    if other_detail:
        status += f" ({other_detail})"
    return status


def table1(runs: pd.DataFrame, dataset: str, seeds: Sequence[int] = DEFAULT_SEEDS
           ) -> pd.DataFrame:
    """Table 1 for one dataset: one row per (arch, norm, epochs) of the paper's grid.

    Columns: ``dataset, arch, paper_name, norm, epochs``; ours: ``ours_test_mean,
    ours_test_std, ours_n`` (distinct seeds of completed real-data runs),
    ``ours_train_mean`` (final-epoch training accuracy), ``ours_test_loss_mean`` (mean test
    cross-entropy after the last epoch), ``ours_seed_results`` (a tuple of ``(seed, test
    accuracy, test loss)`` per seed, NaN without a completed run), ``ours_other_runs`` (diverged /
    interrupted / failed / still running), ``ours_status`` ("not run", "k of n seeds", "done") and
    ``command`` (the grid command for the missing seeds, empty when done); published:
    ``paper_test`` (the paper's test accuracy), ``repro_mean, repro_std, repro_n`` (the
    reproduction's value over its attempts -- at 20 and 100 epochs a *training* accuracy,
    see :func:`reproduction_evidence`).
    """
    paper = _paper_cells(dataset)
    cells = paper.merge(_reproduction_cells(), on=_CELL, how="left")
    ours = _our_cells(runs, table=1)
    cells = cells.merge(ours, on=_CELL, how="left")
    cells["ours_n"] = cells["ours_n"].fillna(0).astype(int)
    cells["ours_other_runs"] = cells["ours_other_runs"].fillna(0).astype(int)
    wanted = len(seeds)
    cells["ours_other_detail"] = cells["ours_other_detail"].fillna("")
    cells["ours_status"] = [_cell_status(n, detail, wanted)
                            for n, detail in zip(cells["ours_n"], cells["ours_other_detail"])]

    def missing_command(row: pd.Series) -> str:
        have = set(row["ours_seeds"]) if isinstance(row["ours_seeds"], tuple) else set()
        todo = [s for s in seeds if s not in have]
        if not todo:
            return ""
        return grid_command(dataset, [row["arch"]], [int(row["epochs"])], todo)

    cells["command"] = cells.apply(missing_command, axis=1)
    order = list(dict.fromkeys(paper["arch"]))
    cells["arch"] = pd.Categorical(cells["arch"], categories=order, ordered=True)
    cells = cells.sort_values(["arch", "epochs", "norm"]).reset_index(drop=True)
    cells["arch"] = cells["arch"].astype(str)
    return cells[["dataset", "arch", "paper_name", "norm", "epochs", "ours_test_mean",
                  "ours_test_std", "ours_n", "ours_train_mean", "ours_test_loss_mean", "ours_seed_results",
                  "ours_other_runs", "ours_other_detail", "ours_status", "command", "paper_test", "repro_mean",
                  "repro_std", "repro_n"]]


def nd_vs_bn(table: pd.DataFrame) -> pd.DataFrame:
    """ND minus BN per (dataset, arch, epochs) of a :func:`table1` frame (points).

    ``paper_gain``: the paper's test accuracies; ``repro_gain``: the reproduction's reported
    values (training accuracy at 20/100 epochs); ``ours_gain``: difference of our test means,
    with ``ours_gain_se`` = sqrt(s_nd^2/n_nd + s_bn^2/n_bn) (Welch's standard error; NaN unless
    both sides have at least two seeds) and ``ours_n_bn``, ``ours_n_nd``; ``repro_gain_se``
    the same over the reproduction's attempts.  With the table's ``paper_name`` column, rows
    follow the paper's order of architectures and carry ``paper_name``.
    """
    _require_columns(table, ["dataset", "arch", "norm", "epochs", "paper_test", "repro_mean",
                             "ours_test_mean", "ours_test_std", "ours_n"], "the Table 1 frame")
    keys = ["dataset", "arch", "epochs"]
    wide = table.pivot_table(index=keys, columns="norm",
                             values=["paper_test", "repro_mean", "ours_test_mean",
                                     "ours_test_std", "ours_n"], aggfunc="first", dropna=False)
    out = pd.DataFrame(index=wide.index)
    out["paper_gain"] = wide[("paper_test", "nd")] - wide[("paper_test", "bn")]
    out["repro_gain"] = wide[("repro_mean", "nd")] - wide[("repro_mean", "bn")]
    ours_nd = pd.to_numeric(wide[("ours_test_mean", "nd")], errors="coerce")
    ours_bn = pd.to_numeric(wide[("ours_test_mean", "bn")], errors="coerce")
    out["ours_gain"] = ours_nd - ours_bn
    n_nd = pd.to_numeric(wide[("ours_n", "nd")], errors="coerce").fillna(0).astype(int)
    n_bn = pd.to_numeric(wide[("ours_n", "bn")], errors="coerce").fillna(0).astype(int)
    sd_nd = pd.to_numeric(wide[("ours_test_std", "nd")], errors="coerce")
    sd_bn = pd.to_numeric(wide[("ours_test_std", "bn")], errors="coerce")
    se = np.sqrt(sd_nd**2 / n_nd.where(n_nd > 1) + sd_bn**2 / n_bn.where(n_bn > 1))
    out["ours_gain_se"] = se
    out["ours_n_bn"], out["ours_n_nd"] = n_bn, n_nd
    if {"repro_std", "repro_n"} <= set(table.columns):
        spread = table.pivot_table(index=keys, columns="norm", values=["repro_std", "repro_n"],
                                   aggfunc="first", dropna=False).reindex(wide.index)
        out["repro_gain_se"] = np.sqrt(spread[("repro_std", "nd")] ** 2 / spread[("repro_n", "nd")]
                                       + spread[("repro_std", "bn")] ** 2 / spread[("repro_n", "bn")])
    out = out.reset_index()
    if "paper_name" in table.columns:
        names = table.drop_duplicates("arch").set_index("arch")["paper_name"]
        out.insert(2, "paper_name", out["arch"].map(names))
        # The table's (paper's) order of architectures, not the alphabet.
        rank = out["arch"].map({arch: i for i, arch in enumerate(names.index)})
        out = (out.assign(_rank=rank).sort_values(["dataset", "epochs", "_rank"])
               .drop(columns="_rank").reset_index(drop=True))
    return out


def format_mean_std(mean: float, std: float, n: int, digits: int = 2) -> str:
    """``"93.10 ± 0.21 (n=3)"``; ``"93.10 (n=1)"`` for one seed; ``"not run"`` for none."""
    if n == 0 or mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "not run"
    if n == 1 or std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.{digits}f} (n={n})"
    return f"{mean:.{digits}f} ± {std:.{digits}f} (n={n})"


def table1_display(table: pd.DataFrame, epochs: int) -> pd.DataFrame:
    """A reader's view of :func:`table1` for one epoch setting: one row per architecture;
    for BN and ND the paper's test accuracy, the reproduction's reported value and ours
    (mean ± std over seeds, or "not run"; runs that did not complete in brackets)."""
    part = table[table["epochs"] == epochs]
    if part.empty:
        raise ValueError(f"no Table 1 rows for {epochs} epochs; the grid has {CIFAR_EPOCHS}")
    rows = []
    for name, group in part.groupby("paper_name", sort=False):
        row: dict[str, object] = {"architecture": name}
        for norm in NORMS:
            cell = group[group["norm"] == norm].iloc[0]
            label = norm.upper()
            row[(label, "paper (test)")] = f"{cell['paper_test']:.2f}"
            repro = format_mean_std(cell["repro_mean"], cell["repro_std"], int(cell["repro_n"]))
            row[(label, "reproduction")] = repro.replace(" (n=3)", "")
            ours = format_mean_std(cell["ours_test_mean"], cell["ours_test_std"],
                                   int(cell["ours_n"]))
            if cell["ours_other_detail"]:
                ours += f" [{cell['ours_other_detail']}]"
            row[(label, "ours (test)")] = ours
        rows.append(row)
    view = pd.DataFrame(rows).set_index("architecture")
    view.columns = pd.MultiIndex.from_tuples(view.columns)
    return view


def table1_long(runs: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Table 1 in long form for plotting: one row per value, with ``source`` in
    {"paper", "reproduction", "ours"} and ``metric`` saying what the value is
    ("test" for the paper and ours; "as reported" for the reproduction, whose 20/100-epoch
    values are training accuracy).  The reproduction gives one row per attempt and ours one
    row per seed of a completed real-data run with the paper's settings, in a cell of the
    paper's grid (our extra architectures and budgets are left out), so a plot can show their
    spread."""
    paper = _paper_cells(dataset)
    names = paper.drop_duplicates("arch").set_index("arch")["paper_name"]
    frames = [paper.assign(source="paper", metric="test", accuracy=paper["paper_test"])]
    repro = published.reproduction_table1()
    repro = repro[repro["dataset"] == dataset].assign(norm=lambda d: d["method"].str.lower())
    frames.append(repro.assign(source="reproduction", metric="as reported",
                               accuracy=repro["acc_pct"], paper_name=repro["arch"].map(names)))
    if not runs.empty:
        real, _ = split_synthetic(paper_settings_only(runs))
        ours = real[_in_table(real, 1) & (real["dataset"] == dataset)
                    & (real["status"] == "completed") & real["arch"].isin(names.index)
                    & pd.to_numeric(real["epochs"], errors="coerce").isin(CIFAR_EPOCHS)]
        frames.append(ours.assign(source="ours", metric="test", accuracy=ours["test_acc"],
                                  epochs=ours["epochs"].astype(int),
                                  paper_name=ours["arch"].map(names)))
    cols = ["dataset", "arch", "paper_name", "norm", "epochs", "source", "metric", "accuracy"]
    long = pd.concat([f[cols] for f in frames], ignore_index=True)
    long["accuracy"] = long["accuracy"].astype(float)
    return long


def reproduction_vs_paper(dataset: str | None = None) -> pd.DataFrame:
    """Per Table 1 cell: the paper's test accuracy, the reproduction's mean and range over
    its attempts, and the difference ``repro_mean - paper_test`` (percentage points)."""
    paper = published.paper_table1().rename(columns={"test_acc_pct": "paper_test"})
    paper["norm"] = paper["method"].str.lower()
    repro = published.reproduction_table1()
    repro["norm"] = repro["method"].str.lower()
    stats = (repro.groupby(_CELL)["acc_pct"]
             .agg(repro_mean="mean", repro_min="min", repro_max="max").reset_index())
    cmp = paper[_CELL + ["paper_name", "paper_test"]].merge(stats, on=_CELL, how="inner")
    cmp["diff"] = cmp["repro_mean"] - cmp["paper_test"]
    if dataset is not None:
        if dataset not in set(cmp["dataset"]):
            raise ValueError(f"unknown dataset {dataset!r}; choose from {sorted(set(cmp['dataset']))}")
        cmp = cmp[cmp["dataset"] == dataset]
    return cmp.reset_index(drop=True)


def reproduction_evidence(near_perfect: float = 99.0) -> pd.DataFrame:
    """The case that the reproduction's 20/100-epoch values are training accuracy, in numbers.

    One row per (dataset, epochs): ``cells``; ``mean_diff`` and ``median_diff`` of
    reproduction minus paper (points); ``above_paper`` (cells where the reproduction's mean
    beats the paper's test value); ``near_perfect`` (cells whose reproduction mean is at or
    above ``near_perfect`` percent); ``repro_max``; and ``paper_best`` -- the best *test*
    accuracy anywhere in the paper's table for that dataset (any arch, any budget), which a
    held-out accuracy could not plausibly exceed by many points.
    """
    cmp = reproduction_vs_paper()
    paper_best = published.paper_table1().groupby("dataset")["test_acc_pct"].max()
    out = (cmp.groupby(["dataset", "epochs"])
           .agg(cells=("diff", "size"), mean_diff=("diff", "mean"),
                median_diff=("diff", "median"),
                above_paper=("diff", lambda d: int((d > 0).sum())),
                near_perfect=("repro_mean", lambda a: int((a >= near_perfect).sum())),
                repro_max=("repro_mean", "max"))
           .reset_index())
    out["paper_best"] = out["dataset"].map(paper_best)
    out["above_paper_best"] = [
        int((cmp[(cmp["dataset"] == d) & (cmp["epochs"] == e)]["repro_mean"] > paper_best[d]).sum())
        for d, e in zip(out["dataset"], out["epochs"])]
    return out


def our_train_vs_test(runs: pd.DataFrame) -> pd.DataFrame:
    """Our completed real-data runs, one row each: final-epoch training accuracy beside test
    accuracy and the gap ``train_acc - test_acc`` (points)."""
    cols = ["run_id", "dataset", "arch", "norm", "epochs", "seed", "train_acc", "test_acc", "gap",
            "device_name", "note"]
    if runs.empty:
        return pd.DataFrame(columns=cols)
    real, _ = split_synthetic(runs)
    done = real[real["status"] == "completed"].copy()
    done["gap"] = done["train_acc"] - done["test_acc"]
    done["note"] = done["note"].fillna("") if "note" in done.columns else ""
    return done[cols].sort_values(["dataset", "arch", "epochs", "norm", "seed"]).reset_index(drop=True)


def final_epoch_from_history(histories: pd.DataFrame) -> pd.DataFrame:
    """The last epoch of every run's history: ``run_id, epoch, train_acc, test_acc``.

    Used to check that a record's summary accuracies are its history's final epoch."""
    _require_columns(histories, ["run_id", "epoch", "train_acc", "test_acc"], "the histories")
    if histories.empty:
        return pd.DataFrame(columns=["run_id", "epoch", "train_acc", "test_acc"])
    last = histories.sort_values(["run_id", "epoch"]).groupby("run_id").tail(1)
    return last[["run_id", "epoch", "train_acc", "test_acc"]].reset_index(drop=True)


def check_history_consistency(runs: pd.DataFrame, histories: pd.DataFrame,
                              tolerance: float = 1e-6) -> pd.DataFrame:
    """Check that every completed run's summary accuracies are its history's final epoch.

    Returns the joined frame (``run_id, epoch, train_acc, test_acc`` from the history beside
    the record's values); raises ``ValueError`` naming the runs whose record disagrees with
    its own history, or whose history is missing, since then the record cannot be trusted.
    """
    cols = ["run_id", "epochs", "epoch", "train_acc", "history_train_acc", "test_acc",
            "history_test_acc"]
    done = runs[runs["status"] == "completed"] if not runs.empty else runs
    if done.empty:
        return pd.DataFrame(columns=cols)
    last = final_epoch_from_history(histories).rename(
        columns={"train_acc": "history_train_acc", "test_acc": "history_test_acc"})
    joined = done[["run_id", "epochs", "train_acc", "test_acc"]].merge(last, on="run_id", how="left")
    bad = joined[joined["epoch"].isna()
                 | (joined["epoch"] != joined["epochs"])
                 | ((joined["train_acc"] - joined["history_train_acc"]).abs() > tolerance)
                 | ((joined["test_acc"] - joined["history_test_acc"]).abs() > tolerance)]
    if not bad.empty:
        raise ValueError(
            f"run record(s) {list(bad['run_id'])} disagree with their own per-epoch history "
            "(missing history, wrong final epoch or different accuracies); inspect those "
            "JSON files in results/runs/ and rerun the runs")
    return joined[cols]


def synthetic_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Synthetic-data smoke runs, labelled as such; they test the pipeline, not the claim."""
    cols = ["label", "run_id", "status", "dataset", "arch", "norm", "epochs", "seed", "test_acc",
            "device_name"]
    if runs.empty:
        return pd.DataFrame(columns=cols)
    _, synthetic = split_synthetic(runs)
    synthetic = synthetic.assign(label="synthetic smoke run")
    return synthetic[cols].reset_index(drop=True)


# --------------------------------------------------------------------------- Table 2


def table2_published() -> pd.DataFrame:
    """Table 2: per (arch, method) the paper's and the reproduction's top-1/top-5 (%), and
    the reproduction's 90-epoch wall time (hours, one A100)."""
    t2 = published.paper_table2()
    wide = t2.pivot_table(index=["arch", "method"], columns="source",
                          values=["top1_pct", "top5_pct"])
    wide.columns = [f"{src}_{metric.replace('_pct', '')}" for metric, src in wide.columns]
    wide = wide.rename(columns={"original_top1": "paper_top1", "original_top5": "paper_top5",
                                "re_top1": "repro_top1", "re_top5": "repro_top5"}).reset_index()
    times = published.reproduction_imagenet_times()[["arch", "method", "wall_time_h"]]
    wide = wide.merge(times.rename(columns={"wall_time_h": "repro_wall_time_h"}),
                      on=["arch", "method"], how="left")
    order = list(dict.fromkeys(t2["arch"]))
    wide["arch"] = pd.Categorical(wide["arch"], categories=order, ordered=True)
    wide = wide.sort_values(["arch", "method"]).reset_index(drop=True)
    wide["arch"] = wide["arch"].astype(str)
    return wide[["arch", "method", "paper_top1", "paper_top5", "repro_top1", "repro_top5",
                 "repro_wall_time_h"]]


def table2_status(runs: pd.DataFrame) -> pd.DataFrame:
    """Our Table 2 runs per (arch, norm): completed count and top-1/top-5 (empty cells = not run)."""
    published_cells = table2_published()[["arch", "method"]].copy()
    published_cells["norm"] = published_cells["method"].str.lower()
    published_cells["model"] = published_cells["arch"] + "_imagenet"
    cols = ["arch", "method", "ours_n", "ours_top1", "ours_top5", "ours_status"]
    if runs.empty:
        out = published_cells.assign(ours_n=0, ours_top1=np.nan, ours_top5=np.nan,
                                     ours_status="not run")
        return out[cols]
    real, _ = split_synthetic(runs)
    done = real[_in_table(real, 2) & (real["status"] == "completed")]
    agg = (done.groupby(["arch", "norm"])
           .agg(ours_n=("seed", "nunique"), ours_top1=("test_acc", "mean"),
                ours_top5=("test_top5", "mean")).reset_index()
           .rename(columns={"arch": "model"}))
    out = published_cells.merge(agg, on=["model", "norm"], how="left")
    out["ours_n"] = out["ours_n"].fillna(0).astype(int)
    out["ours_status"] = np.where(out["ours_n"] > 0, "done", "not run")
    return out[cols]


def table2_gains() -> pd.DataFrame:
    """ND minus BN (points) per architecture in Table 2, for the paper and the reproduction:
    ``arch, paper_top1_gain, repro_top1_gain, paper_top5_gain, repro_top5_gain``."""
    t2 = table2_published()
    t2 = t2[t2["method"].isin(["BN", "ND"])].set_index(["arch", "method"])
    rows = []
    for arch in dict.fromkeys(t2.index.get_level_values("arch")):
        nd, bn = t2.loc[(arch, "ND")], t2.loc[(arch, "BN")]
        rows.append({"arch": arch, **{f"{col}_gain": nd[col] - bn[col]
                                      for col in ("paper_top1", "repro_top1", "paper_top5",
                                                  "repro_top5")}})
    return pd.DataFrame(rows)


def table2_commands(nproc_per_node: int = 8, data_dir: str = "data/imagenet",
                    epochs: int = 90) -> pd.DataFrame:
    """One ``torchrun`` command per Table 2 cell (``python -m ndlib train`` under DDP; the
    global batch of 256 is split over the processes).  ``data_dir`` holds ``train/<class>/``
    and ``val/<class>/``."""
    if isinstance(nproc_per_node, bool) or not isinstance(nproc_per_node, int) or nproc_per_node < 1:
        raise ValueError(f"nproc_per_node must be a positive integer, got {nproc_per_node!r}")
    rows = []
    for cell in table2_published()[["arch", "method"]].itertuples():
        parts = ["torchrun", f"--nproc_per_node={nproc_per_node}", "-m", "ndlib", "train",
                 "--dataset", "imagenet", "--arch", f"{cell.arch}_imagenet",
                 "--norm", cell.method.lower(), "--epochs", str(epochs), "--data-dir", data_dir]
        rows.append({"arch": cell.arch, "method": cell.method, "command": shlex.join(parts)})
    return pd.DataFrame(rows)


def imagenet_compute() -> dict[str, float]:
    """What Table 2 costs, from the reproduction's single-A100 wall times (hours):
    the total for all seven runs, the total in GPU-days, and ND/BN ratios per arch."""
    times = published.reproduction_imagenet_times()
    pivot = times.pivot_table(index="arch", columns="method", values="wall_time_h")
    out = {"total_h": float(times["wall_time_h"].sum())}
    out["total_gpu_days"] = out["total_h"] / 24.0
    for arch, row in pivot.iterrows():
        out[f"ratio_nd_bn_{arch}"] = float(row["ND"] / row["BN"])
    return out


# --------------------------------------------------------------------------- timing


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


def _with_timing_keys(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with the two keys every timing comparison groups by, filled in:

    * ``keep_freed_memory`` as a bool (False where absent: records from before the setting);
    * ``machine_id`` as a string (:func:`ndlib.records.machine_id`; ``""`` where the instance was
      not recorded).  Times are compared only within one instance: machines of one type can
      differ about twofold in speed.  Unrecorded instances form one group of their own, as
      before the field existed."""
    memory = (runs["keep_freed_memory"].fillna(False).astype(bool) if "keep_freed_memory" in runs.columns
              else False)
    machine = runs["machine_id"].fillna("").astype(str) if "machine_id" in runs.columns else ""
    return runs.assign(keep_freed_memory=memory, machine_id=machine)


def machine_instance_text(machine_id: str | None) -> str:
    """``"instance 1a2b3c4d5e6f"``, or ``"instance not recorded"`` for runs from before the field."""
    return f"instance {machine_id}" if isinstance(machine_id, str) and machine_id else "instance not recorded"


def _mixed_timing(runs: pd.DataFrame) -> pd.Series:
    """Per row, whether the run's training time mixes settings (``timing_mixed``: it was resumed
    under other threads, another machine or memory setting, :func:`ndlib.records.timing_settings_mixed`);
    False where the column is absent (frames built before it existed)."""
    if "timing_mixed" not in runs.columns:
        return pd.Series(False, index=runs.index)
    return runs["timing_mixed"].astype("boolean").fillna(False).astype(bool)


def _single_setting_times(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` without the runs whose training time mixes settings (:func:`_mixed_timing`):
    their accuracy counts, but their time belongs to no one machine setting."""
    return runs[~_mixed_timing(runs)]


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
    _require_columns(runs, [k for k in keys if k not in ("machine_id", "keep_freed_memory", "synthetic", "options")]
                     + ["run_id", "status", "norm", "train_time_s", "images_per_s"], "the run records")
    done = _with_timing_keys(_single_setting_times(runs[runs["status"] == "completed"]))
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
    for norm in NORMS:
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


def bench_summary(bench: pd.DataFrame, latest_only: bool = False) -> pd.DataFrame:
    """Our benchmarks, one row per (benchmark, implementation): median step times, the median
    per-round ratio ND / BN and its range when recorded, with the time, commit and note.

    Every benchmark is kept by default: runs of different code versions or machine loads are
    different measurements, and hiding the older ones would hide how the number moved.
    ``latest_only=True`` keeps the newest per (device, threads, implementation, arch, batch,
    ``refresh_every`` when recorded).
    """
    keys = ["device_type", "device_name", "num_threads", "implementation", "arch", "batch_size"]
    if "refresh_every" in bench.columns:  # refresh_every = k > 1 is another layer: never "the latest" of k = 1
        bench = bench.assign(refresh_every=bench["refresh_every"].fillna(1).astype(int))
        keys.append("refresh_every")
    cols = keys + ["bn_step_s", "nd_step_s", "ratio_nd_bn", "torch_version", "created_at"]
    optional = [c for c in ("ratio_min", "ratio_max", "rounds", "git_commit", "note")
                if c in bench.columns]
    if bench.empty:
        return pd.DataFrame(columns=cols + optional)
    _require_columns(bench, cols, "the benchmark records")
    ordered = bench.sort_values(keys + ["created_at"])
    if latest_only:
        ordered = ordered.drop_duplicates(keys, keep="last")
    columns = keys + ["bn_step_s", "nd_step_s", "ratio_nd_bn",
                      *[c for c in optional if c.startswith("ratio_") or c == "rounds"],
                      "torch_version", "created_at",
                      *[c for c in optional if c in ("git_commit", "note")]]
    return ordered[columns].reset_index(drop=True)


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

    Empty frame (a ``note`` column says why) while ``ndlib.whitening`` or the models are
    not available.
    """
    whitening = _optional_module("ndlib.whitening")
    models = _optional_module("ndlib.models")
    if whitening is None or not hasattr(whitening, "model_deconv_flops") or models is None:
        return pd.DataFrame({"note": ["the FLOP model (ndlib.whitening) is not available yet"]})
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


def _optional_module(name: str):
    """The module ``name`` if it exists, else None (it may be written later)."""
    if importlib.util.find_spec(name) is None:
        return None
    return importlib.import_module(name)


def missing_commands(table: pd.DataFrame, seeds: Sequence[int] = DEFAULT_SEEDS) -> pd.DataFrame:
    """The runs still missing from a :func:`table1` frame, as one grid command per
    (dataset, epochs): the architectures with any cell short of ``seeds``."""
    todo = table[table["ours_n"] < len(seeds)]
    rows = []
    for (dataset, epochs), part in todo.groupby(["dataset", "epochs"], sort=True):
        archs = list(dict.fromkeys(part["arch"]))
        rows.append({"dataset": dataset, "epochs": int(epochs), "cells_missing": len(part),
                     "archs": ", ".join(archs),
                     "command": grid_command(dataset, archs, [int(epochs)], seeds)})
    return pd.DataFrame(rows, columns=["dataset", "epochs", "cells_missing", "archs", "command"])


# --------------------------------------------------------------------------- one epoch

#: Readable names of the datasets, for generated sentences.
DATASET_TITLES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "imagenet": "ImageNet"}
#: Classes of each dataset, as in ``ndlib.data.DATASETS`` (kept here so that this module needs
#: no torch; a test checks the two agree): chance accuracy is ``100 / K`` %, and ``ln K`` is the
#: test cross-entropy of a uniform guess.
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}


def _missing(value: object) -> bool:
    """True for None, NA and NaN."""
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _count(value: object) -> int:
    """A seed count that may be missing (NaN after a merge): 0 then."""
    return 0 if _missing(value) else int(value)


def train_command(dataset: str, arch: str, norm: str, epochs: int, seed: int) -> str:
    """The command that trains one run with the paper's settings, e.g.
    ``python -m ndlib train --arch vgg16 --norm bn --dataset cifar10 --epochs 2 --seed 0``."""
    return shlex.join(["python", "-m", "ndlib", "train", "--arch", arch, "--norm", norm,
                       "--dataset", dataset, "--epochs", str(int(epochs)), "--seed", str(int(seed))])


def compare_difference(mean_a: float, sd_a: float, n_a: int, mean_b: float, sd_b: float,
                       n_b: int, k: float = 2.0) -> dict[str, object]:
    """``a - b`` for two means over seeds, with Welch's standard error and a verdict.

    Returns ``diff`` (NaN when a side has no run); ``se`` = sqrt(s_a^2/n_a + s_b^2/n_b) (NaN
    unless both sides have at least two seeds); ``verdict``: ``"not run"``, ``"no noise
    estimate"`` (one seed on a side), ``"beyond noise"`` (|diff| > k se) or ``"within
    noise"``; and ``text``, e.g. ``"+3.20 points (standard error 1.10: beyond 2 standard
    errors)"``.
    """
    n_a, n_b = _count(n_a), _count(n_b)
    if n_a == 0 or n_b == 0 or _missing(mean_a) or _missing(mean_b):
        return _judge(math.nan, math.nan, k)
    diff = float(mean_a) - float(mean_b)
    if n_a < 2 or n_b < 2 or _missing(sd_a) or _missing(sd_b):
        return _judge(diff, math.nan, k)
    return _judge(diff, math.sqrt(float(sd_a) ** 2 / n_a + float(sd_b) ** 2 / n_b), k)


def _judge(diff: float, se: float, k: float) -> dict[str, object]:
    """The verdict and text of :func:`compare_difference` for a difference and its standard
    error (NaN difference: not run; NaN error: no noise estimate)."""
    if _missing(diff):
        return {"diff": math.nan, "se": math.nan, "verdict": "not run", "text": "not run"}
    if _missing(se):
        return {"diff": diff, "se": math.nan, "verdict": "no noise estimate",
                "text": f"{diff:+.2f} points (one seed on a side: no estimate of the noise)"}
    where = "beyond" if abs(diff) > k * se else "within"
    return {"diff": diff, "se": se, "verdict": f"{where} noise",
            "text": f"{diff:+.2f} points (standard error {se:.2f}: {where} {k:g} standard errors)"}


def prediction_factor(n: int, level: float = 0.95) -> float:
    """Half-width of the ``level`` prediction interval for one more run, in standard deviations
    of ``n`` seeds: ``t * sqrt(1 + 1/n)`` with ``t`` the two-sided Student quantile for
    ``n - 1`` degrees of freedom (NaN below two seeds).  For 3 seeds at 95 %: about 4.97.

    A new run ``x`` of a setting whose seeds have mean ``m`` and sample sd ``s`` lies within
    ``m ± prediction_factor(n) * s`` with probability ``level`` (normally distributed runs)."""
    from scipy import stats

    if n < 2:
        return math.nan
    return float(stats.t.ppf(0.5 + level / 2.0, n - 1) * math.sqrt(1.0 + 1.0 / n))


def agreement_with_paper(table: pd.DataFrame, epochs: int = 1, level: float = 0.95,
                         min_seeds: int = 3) -> pd.DataFrame:
    """How far the reproduction and our runs lie from the paper, per cell of a :func:`table1`
    frame at ``epochs`` (one row per dataset, architecture and norm, in the table's order).

    Columns: ``dataset, arch, paper_name, norm, epochs, paper_test, repro_mean, repro_std,
    repro_n, ours_test_mean, ours_test_std, ours_n, ours_train_mean, ours_test_loss_mean,
    ours_seed_results`` (NaN where the table has no such column); the differences
    ``repro_minus_paper``, ``ours_minus_paper`` and ``ours_minus_repro`` (points);
    ``ours_band``: the half-width of the ``level`` prediction interval of our seeds
    (:func:`prediction_factor` times their sd); ``ours_outside``: for a cell with at least
    ``min_seeds`` seeds, whether the paper's value lies outside that interval,
    ``|ours_mean - paper| > ours_band`` -- the paper reports a single run, and a single run
    of our setting falls outside it with probability ``1 - level`` only -- and ``<NA>`` with
    fewer seeds (not tested); ``closer_to``: the published value our mean is nearer,
    ``"paper"``, ``"reproduction"`` or ``"equally close"`` (``""`` without a run of ours).
    """
    _require_columns(table, ["dataset", "arch", "paper_name", "norm", "epochs", "paper_test",
                             "repro_mean", "repro_std", "repro_n", "ours_test_mean",
                             "ours_test_std", "ours_n", "ours_train_mean"], "the Table 1 frame")
    part = table[table["epochs"] == epochs]
    if part.empty:
        raise ValueError(f"no Table 1 rows for {epochs} epochs; the grid has {CIFAR_EPOCHS}")
    for optional in ("ours_test_loss_mean", "ours_seed_results"):
        if optional not in part.columns:
            part = part.assign(**{optional: np.nan})
    out = part[["dataset", "arch", "paper_name", "norm", "epochs", "paper_test", "repro_mean",
                "repro_std", "repro_n", "ours_test_mean", "ours_test_std", "ours_n",
                "ours_train_mean", "ours_test_loss_mean", "ours_seed_results"]].reset_index(drop=True)
    for column in ("paper_test", "repro_mean", "repro_std", "ours_test_mean", "ours_test_std",
                   "ours_train_mean", "ours_test_loss_mean"):
        out[column] = pd.to_numeric(out[column], errors="coerce").astype(float)
    out["ours_n"] = out["ours_n"].map(_count)
    out["repro_minus_paper"] = out["repro_mean"] - out["paper_test"]
    out["ours_minus_paper"] = out["ours_test_mean"] - out["paper_test"]
    out["ours_minus_repro"] = out["ours_test_mean"] - out["repro_mean"]
    out["ours_band"] = [prediction_factor(n, level) * sd for n, sd in
                        zip(out["ours_n"], out["ours_test_std"])]
    outside = out["ours_minus_paper"].abs() > out["ours_band"]
    out["ours_outside"] = pd.array([bool(o) if n >= min_seeds else pd.NA
                                    for o, n in zip(outside, out["ours_n"])], dtype="boolean")

    def closer(row: pd.Series) -> str:
        if row["ours_n"] == 0 or _missing(row["ours_test_mean"]):
            return ""
        to_paper, to_repro = abs(row["ours_minus_paper"]), abs(row["ours_minus_repro"])
        if math.isclose(to_paper, to_repro):
            return "equally close"
        return "paper" if to_paper < to_repro else "reproduction"

    out["closer_to"] = out.apply(closer, axis=1) if not out.empty else ""
    return out


def _paper_names() -> dict[str, str]:
    """The paper's name of each Table 1 architecture, e.g. ``{"vgg16": "VGG-16", ...}``."""
    return dict(published.paper_table1().drop_duplicates("arch")[["arch", "paper_name"]].values)


def _all_paper_cells() -> pd.DataFrame:
    return pd.concat([_paper_cells(d) for d in dict.fromkeys(published.paper_table1()["dataset"])],
                     ignore_index=True)


def compare_cells(runs: pd.DataFrame, cells: Iterable[Mapping[str, Any]],
                  seeds: Sequence[int] = DEFAULT_SEEDS) -> pd.DataFrame:
    """Our runs for a chosen list of cells, which need not be cells of the paper's table (an
    extra architecture of ours, another epoch budget).

    Each item of ``cells`` gives ``label, dataset, arch, norm, epochs``.  Columns: those and
    ``paper_name`` (the paper's name of the architecture, else the arch); ours
    as in :func:`table1` (``ours_test_mean, ours_test_std, ours_n, ours_seeds,
    ours_train_mean``, ``ours_train_time_mean`` in seconds, ``ours_other_detail``,
    ``ours_status``; completed real-data runs with the paper's settings only); the published
    ``paper_test, repro_mean, repro_std, repro_n`` where the cell is one of the paper's (else
    NaN); ``commands``: one ``python -m ndlib train`` command per seed of ``seeds`` still
    missing (a list, empty when none is).
    """
    want = pd.DataFrame(list(cells), columns=["label", "dataset", "arch", "norm", "epochs"])
    want["epochs"] = want["epochs"].astype("int64")
    ours = _our_cells(runs, table=1)
    ours = ours.assign(epochs=pd.to_numeric(ours["epochs"]).astype("int64"))
    out = want.merge(ours, on=_CELL, how="left")
    out = out.merge(_all_paper_cells()[_CELL + ["paper_test"]], on=_CELL, how="left")
    out = out.merge(_reproduction_cells(), on=_CELL, how="left")
    out["ours_n"] = out["ours_n"].map(_count)
    out["ours_other_detail"] = out["ours_other_detail"].fillna("")
    out["ours_status"] = [_cell_status(n, detail, len(seeds))
                          for n, detail in zip(out["ours_n"], out["ours_other_detail"])]

    def commands(row: pd.Series) -> list[str]:
        have = set(row["ours_seeds"]) if isinstance(row["ours_seeds"], tuple) else set()
        return [train_command(row["dataset"], row["arch"], row["norm"], row["epochs"], seed)
                for seed in seeds if seed not in have]

    out["commands"] = [commands(row) for _, row in out.iterrows()]
    out["paper_name"] = [_paper_names().get(arch, arch) for arch in out["arch"]]
    return out[["label", "dataset", "arch", "paper_name", "norm", "epochs", "ours_test_mean",
                "ours_test_std", "ours_n", "ours_seeds", "ours_train_mean", "ours_train_time_mean",
                "ours_other_detail", "ours_status", "paper_test", "repro_mean", "repro_std",
                "repro_n", "commands"]]


#: The three EfficientNet-B0 models of the one-epoch comparison: (label, arch, norm).  The BN
#: model of ``efficientnetb0_allnd`` is the same network as ``efficientnetb0``'s, so the BN
#: row serves both ND variants.
EFFICIENTNET_VARIANTS: tuple[tuple[str, str, str], ...] = (
    ("BN", "efficientnetb0", "bn"),
    ("ND, the paper's network (stem + classifier)", "efficientnetb0", "nd"),
    ("ND in every block (ours, extra)", "efficientnetb0_allnd", "nd"),
)


def efficientnet_variants(runs: pd.DataFrame, datasets: Sequence[str] = ("cifar10", "cifar100"),
                          epochs: int = 1, seeds: Sequence[int] = DEFAULT_SEEDS) -> pd.DataFrame:
    """EfficientNet-B0 at ``epochs``: BN, the paper's ND network (only the stem and the
    classifier deconvolved, BN in every block) and our every-block ND variant
    (``efficientnetb0_allnd``), per dataset: a :func:`compare_cells` frame whose ``label``
    names the variant (the extra variant has no paper or reproduction value)."""
    return compare_cells(runs, [{"label": label, "dataset": dataset, "arch": arch, "norm": norm,
                                 "epochs": epochs}
                                for dataset in datasets for label, arch, norm in EFFICIENTNET_VARIANTS],
                         seeds)


def _commands_text(commands: Sequence[str]) -> str:
    """Markdown for the train commands of missing seeds: the first in full, the others as the
    seed that changes (they differ only in ``--seed``)."""
    if not commands:
        return ""
    rest = [command.rsplit(" ", 1)[-1] for command in commands[1:]]
    return f"`{commands[0]}`" + (" and the same with `--seed` " + ", ".join(rest) if rest else "")


def _cell_of(frame: pd.DataFrame, **keys: object) -> pd.Series | None:
    hit = frame
    for name, value in keys.items():
        hit = hit[hit[name] == value]
    return None if hit.empty else hit.iloc[0]


def _mean_text(row: pd.Series | None) -> str:
    if row is None or row["ours_n"] == 0:
        return "not run"
    return format_mean_std(row["ours_test_mean"], row["ours_test_std"], int(row["ours_n"]))


def _compare_rows(a: pd.Series, b: pd.Series, k: float) -> dict[str, object]:
    return compare_difference(a["ours_test_mean"], a["ours_test_std"], a["ours_n"],
                              b["ours_test_mean"], b["ours_test_std"], b["ours_n"], k)


def efficientnet_sentences(variants: pd.DataFrame, k: float = 2.0) -> list[str]:
    """One Markdown paragraph per dataset of an :func:`efficientnet_variants` frame: does
    deconvolving inside the depthwise and squeeze-excitation blocks (the every-block
    variant) help or hurt, against the paper's ND network and against BN -- or which runs
    are still missing, with their commands."""
    bn_label, paper_label, every_label = (label for label, _, _ in EFFICIENTNET_VARIANTS)
    paragraphs = []
    for dataset, part in variants.groupby("dataset", sort=False):
        title = DATASET_TITLES.get(dataset, dataset)
        bn, paper_nd, every = (_cell_of(part, label=label)
                               for label in (bn_label, paper_label, every_label))
        epochs = int(part["epochs"].iloc[0])
        budget = f"{epochs} epoch{'s' if epochs > 1 else ''}"
        text = [f"**{title}, {budget}.** BN {_mean_text(bn)}; the paper's ND network "
                f"{_mean_text(paper_nd)}; ND in every block {_mean_text(every)} (test accuracy, %)."]
        if every is None or every["ours_n"] == 0:
            text.append("The every-block variant has not run yet: "
                        + _commands_text(every["commands"] if every is not None else []) + ".")
        else:
            if paper_nd is not None and paper_nd["ours_n"] > 0:
                cmp = _compare_rows(every, paper_nd, k)
                if cmp["verdict"] == "within noise":
                    effect = ("makes no difference beyond the noise of our seeds")
                elif cmp["verdict"] == "beyond noise":
                    effect = "helps" if cmp["diff"] > 0 else "hurts"
                else:
                    effect = ("helped" if cmp["diff"] > 0 else "hurt") + " in these runs"
                text.append(f"Every-block ND minus the paper's ND network: {cmp['text']}; "
                            f"at {budget}, whitening inside the depthwise and SE blocks "
                            f"{effect}.")
            else:
                text.append("The paper's ND network has not run yet, so the two ND variants "
                            "cannot be compared.")
            if bn is not None and bn["ours_n"] > 0:
                text.append(f"Every-block ND minus BN: {_compare_rows(every, bn, k)['text']}.")
        if paper_nd is not None and paper_nd["ours_n"] > 0 and bn is not None and bn["ours_n"] > 0:
            text.append(f"The paper's ND network minus BN: {_compare_rows(paper_nd, bn, k)['text']} "
                        f"(the paper: {paper_nd['paper_test'] - bn['paper_test']:+.2f}).")
        paragraphs.append(" ".join(text))
    return paragraphs


#: Labels of the three cells of the equal-cost comparison: (label, norm, epochs).
EQUAL_COST_CELLS: tuple[tuple[str, str, int], ...] = (
    ("ND, 1 epoch", "nd", 1), ("BN, 1 epoch", "bn", 1), ("BN, 2 epochs", "bn", 2))


def equal_cost(runs: pd.DataFrame, dataset: str = "cifar10",
               archs: Sequence[str] = ("vgg16", "resnet18"),
               seeds: Sequence[int] = DEFAULT_SEEDS) -> pd.DataFrame:
    """ND at 1 epoch beside BN at 1 epoch and BN at 2 epochs (cosine over the 2 epochs), per
    architecture: a :func:`compare_cells` frame.  One ND epoch costs about two BN epochs on
    our CPU (:func:`epoch_cost`), so the 2-epoch BN run is the comparison at about equal
    compute."""
    return compare_cells(runs, [{"label": label, "dataset": dataset, "arch": arch, "norm": norm,
                                 "epochs": epochs}
                                for arch in archs for label, norm, epochs in EQUAL_COST_CELLS],
                         seeds)


def equal_cost_verdicts(equal: pd.DataFrame, k: float = 2.0) -> pd.DataFrame:
    """Per architecture of an :func:`equal_cost` frame: ND's one-epoch lead over BN at equal
    epochs (``lead_equal_epochs``) and over BN at 2 epochs (``lead_equal_cost``), with their
    standard errors and verdicts (:func:`compare_difference`), ``survives`` (True / False /
    ``<NA>`` while a side is missing; with one seed on a side it is the sign of the single
    difference, and ``text`` says so) and ``text``, a Markdown sentence that also lists the
    commands of missing runs."""
    nd_label, bn1_label, bn2_label = (label for label, _, _ in EQUAL_COST_CELLS)
    rows = []
    for (dataset, arch), part in equal.groupby(["dataset", "arch"], sort=False):
        nd, bn1, bn2 = (_cell_of(part, label=label) for label in (nd_label, bn1_label, bn2_label))
        epochs_cmp, cost_cmp = _compare_rows(nd, bn1, k), _compare_rows(nd, bn2, k)
        name = f"{DATASET_TITLES.get(dataset, dataset)} {part['paper_name'].iloc[0]}"
        missing = [row for row in (nd, bn1, bn2) if row["ours_n"] == 0]
        if cost_cmp["verdict"] == "not run":
            survives = pd.NA
            text = (f"**{name}**: not known yet; missing "
                    + " and ".join(f"{row['label']} ({_commands_text(row['commands'])})"
                                   for row in (nd, bn2) if row["ours_n"] == 0) + ".")
        else:
            if cost_cmp["verdict"] == "within noise":
                survives = pd.NA
                verdict = ("the difference is within the noise of our seeds, so at about equal "
                           "compute neither is shown to be ahead")
            else:
                survives = bool(cost_cmp["diff"] > 0)
                verdict = ("ND at one epoch is ahead of BN at two epochs" if survives else
                           "BN at two epochs is ahead of ND at one epoch")
                verdict += (" in these single runs" if cost_cmp["verdict"] == "no noise estimate"
                            else "") + ", at about equal compute"
            text = (f"**{name}**: ND at 1 epoch {_mean_text(nd)} against BN at 2 epochs "
                    f"{_mean_text(bn2)}: {cost_cmp['text']}; {verdict}.")
            if epochs_cmp["verdict"] != "not run":
                text += (f" At equal epochs, ND minus BN at 1 epoch ({_mean_text(bn1)}): "
                         f"{epochs_cmp['text']}.")
            if missing:
                text += " Still missing: " + ", ".join(row["label"] for row in missing) + "."
        rows.append({"dataset": dataset, "arch": arch,
                     "nd_e1": nd["ours_test_mean"], "bn_e1": bn1["ours_test_mean"],
                     "bn_e2": bn2["ours_test_mean"],
                     "lead_equal_epochs": epochs_cmp["diff"], "lead_equal_epochs_se": epochs_cmp["se"],
                     "lead_equal_cost": cost_cmp["diff"], "lead_equal_cost_se": cost_cmp["se"],
                     "verdict": cost_cmp["verdict"], "survives": survives, "text": text})
    columns = ["dataset", "arch", "nd_e1", "bn_e1", "bn_e2", "lead_equal_epochs",
               "lead_equal_epochs_se", "lead_equal_cost", "lead_equal_cost_se", "verdict",
               "survives", "text"]
    out = pd.DataFrame(rows, columns=columns)
    out["survives"] = out["survives"].astype("boolean")
    return out


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
    real, _ = split_synthetic(paper_settings_only(_with_timing_keys(_single_setting_times(runs))))
    done = real[(real["status"] == "completed") & (real["dataset"] == dataset)
                & _in_table(real, 1)].copy()
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
    cost = _with_timing_keys(cost)
    for (arch, device, instance, kind, threads, kept), part in cost.groupby(
            ["arch", "device_name", "machine_id", "device_type", "num_threads", "keep_freed_memory"], sort=False):
        ratio = part["ratio_nd_bn"]
        line = (f"* {_paper_names().get(arch, arch)} on {device} ({machine_instance_text(instance)}, {kind}, "
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


def first_layer_descriptions(archs: Iterable[str]) -> dict[str, str]:
    """The ND first-layer settings of each architecture, in words, from the model registry
    (``ndlib.models``; empty while it is not available), e.g. ``"a deconvolution with 15
    Newton-Schulz iterations and statistics frozen after 100 training iterations"``."""
    models = _optional_module("ndlib.models")
    if models is None:
        return {}
    out = {}
    for arch in archs:
        settings = models.get_spec(arch).first_layer
        if not settings:
            out[arch] = "an ordinary deconvolution layer (no special settings)"
            continue
        text = f"a deconvolution with {settings.get('n_iter')} Newton-Schulz iterations"
        if settings.get("freeze"):
            text += f" and statistics frozen after {settings.get('freeze_iter')} training iterations"
        out[arch] = text
    return out


def _sum_sentence(line: str) -> str:
    """An "In sum: ..." sentence of a section, standing on its own (for ``"summary"``)."""
    rest = line.removeprefix("In sum: ")
    return rest[:1].upper() + rest[1:]


def one_epoch_discussion(agreement: pd.DataFrame, gains: pd.DataFrame, gap_threshold: float = 10.0,
                         k: float = 2.0, min_seeds: int = 3,
                         first_layers: Mapping[str, str] | None = None,
                         near_chance: float = 2.0) -> dict[str, list[str]]:
    """The one-epoch discussion, generated from the frames so that it stays true as records
    arrive: Markdown bullets per section.

    ``agreement`` is :func:`agreement_with_paper` (one or both datasets, one budget),
    ``gains`` :func:`nd_vs_bn` rows of the same budget.  Sections:

    * ``"claims"``: per architecture we ran on both sides, ND minus BN (ours, the paper's,
      the reproduction's) and how many of those cells have ND ahead;
    * ``"paper_values"``: our cells against the paper's values, with the prediction-interval
      test for cells of at least ``min_seeds`` seeds (see :func:`agreement_with_paper`; its
      ``ours_band``);
    * ``"gaps"``: cells where the reproduction and the paper differ by at least
      ``gap_threshold`` points, with ours (or "not run yet") and which one ours is closer to;
    * ``"summary"``: the "In sum" sentence of each of the sections above that has one, without
      that prefix (for a summary elsewhere, e.g. the conclusions);
    * ``"explanations"``: measured quantities that bear on the gaps (the spread of the
      reproduction's attempts and of our seeds, our training accuracy over the epoch against
      our test accuracy after it, our cells whose test accuracy stays below ``near_chance``
      times chance, with their test loss against ``ln K``) and, for the architectures of the
      gaps, their ND first-layer settings from ``first_layers`` (arch -> description), when
      given.
    """
    out: dict[str, list[str]] = {"claims": [], "paper_values": [], "gaps": [], "summary": [],
                                 "explanations": []}
    agreement, gains = agreement.reset_index(drop=True), gains.reset_index(drop=True)

    def name(row) -> str:
        return f"{DATASET_TITLES.get(row['dataset'], row['dataset'])} {row['paper_name']}"

    # ND > BN per architecture.
    both = gains[(gains["ours_n_bn"] > 0) & (gains["ours_n_nd"] > 0)]
    for _, row in both.iterrows():
        ours = _judge(row["ours_gain"], row["ours_gain_se"], k)["text"]
        out["claims"].append(f"{name(row)}: ND − BN {ours} in our runs (BN n={int(row['ours_n_bn'])}, "
                             f"ND n={int(row['ours_n_nd'])}); the paper {row['paper_gain']:+.2f}, "
                             f"the reproduction {row['repro_gain']:+.2f}.")
    if both.empty:
        out["claims"].append(f"None of the paper's {len(gains)} one-budget cells has runs of ours "
                             "on both sides yet, so we cannot test ND > BN on any architecture.")
    else:
        ahead = int((both["ours_gain"] > 0).sum())
        paper_ahead = int((both["paper_gain"] > 0).sum())
        missing = len(gains) - len(both)
        coverage = (f"every one of the paper's {len(gains)} cells at this budget is run on both sides"
                    if missing == 0 else
                    f"{missing} of the paper's {len(gains)} cells at this budget "
                    f"{'is' if missing == 1 else 'are'} not run on both sides yet")
        out["claims"].append(f"In sum: ND is ahead of BN in {ahead} of the {len(both)} "
                             f"architecture cells we have run on both sides (the paper: in "
                             f"{paper_ahead} of those {len(both)}); {coverage}.")
        out["summary"].append(_sum_sentence(out["claims"][-1]))

    # The paper's values.
    ran = agreement[agreement["ours_n"] > 0]
    tested = ran[ran["ours_n"] >= min_seeds]
    for _, row in tested.iterrows():
        where = "outside" if bool(row["ours_outside"]) else "inside"
        out["paper_values"].append(
            f"{name(row)} {row['norm'].upper()}: ours {_mean_text(row)}, the paper "
            f"{row['paper_test']:.2f} ({row['ours_minus_paper']:+.2f}): the paper's value lies "
            f"{where} the prediction interval of our seeds (mean ± {row['ours_band']:.2f}).")
    if not tested.empty:
        n_out = int(tested["ours_outside"].astype(bool).sum())
        out["paper_values"].append(f"In sum: {n_out} of the {len(tested)} cells with at least "
                                   f"{min_seeds} seeds put the paper's value outside the "
                                   f"prediction interval of our seeds.")
        out["summary"].append(_sum_sentence(out["paper_values"][-1]))
    untested = ran[ran["ours_n"] < min_seeds]
    if not untested.empty:
        listed = "; ".join(f"{name(row)} {row['norm'].upper()} {row['ours_minus_paper']:+.2f} "
                           f"(n={int(row['ours_n'])})" for _, row in untested.iterrows())
        out["paper_values"].append(f"Cells with fewer than {min_seeds} seeds are not tested; our "
                                   f"mean minus the paper's value there: {listed}.")
    if ran.empty:
        out["paper_values"].append("We have no run at this budget yet.")

    # Where the reproduction and the paper disagree.
    gaps = agreement[agreement["repro_minus_paper"].abs() >= gap_threshold]
    for _, row in gaps.iterrows():
        head = (f"{name(row)} {row['norm'].upper()}: the paper {row['paper_test']:.2f}, the "
                f"reproduction {row['repro_mean']:.2f} ({row['repro_minus_paper']:+.2f})")
        if row["ours_n"] == 0:
            out["gaps"].append(f"{head}; ours: not run yet.")
            continue
        closer = ("equally far from both" if row["closer_to"] == "equally close"
                  else f"closer to the {row['closer_to']}")
        out["gaps"].append(f"{head}; ours {_mean_text(row)}, {abs(row['ours_minus_paper']):.2f} "
                           f"points from the paper and {abs(row['ours_minus_repro']):.2f} from "
                           f"the reproduction: {closer}.")
    if gaps.empty:
        out["gaps"].append(f"No cell at this budget has the reproduction and the paper "
                           f"{gap_threshold:g} or more points apart.")
    else:
        run = gaps[gaps["ours_n"] > 0]
        counts = run["closer_to"].value_counts()
        out["gaps"].append(
            f"In sum: {len(gaps)} cells differ by {gap_threshold:g} points or more; we have run "
            f"{len(run)} of them, closer to the paper in {int(counts.get('paper', 0))} and to the "
            f"reproduction in {int(counts.get('reproduction', 0))}.")
        if len(run):
            out["summary"].append(_sum_sentence(out["gaps"][-1]))
            # Split by method: whether one side's baseline, not the other's, carries the dispute.
            parts = []
            for norm in NORMS:
                side = run[run["norm"] == norm]["closer_to"].value_counts()
                if side.sum():
                    parts.append(f"{norm.upper()}, {int(side.sum())} cell{'s' if side.sum() != 1 else ''} "
                                 f"run: closer to the paper in {int(side.get('paper', 0))} and to the "
                                 f"reproduction in {int(side.get('reproduction', 0))}")
            out["gaps"].append("By method: " + "; ".join(parts) + ".")

    # Measured quantities that bear on the gaps: how much one cell scatters.
    for norm in NORMS:
        for who, column, n_column in (("The reproduction's attempts", "repro_std", "repro_n"),
                                      ("Our seeds", "ours_test_std", "ours_n")):
            part = agreement[(agreement["norm"] == norm) & agreement[column].notna()]
            if part.empty:
                continue
            widest = part.loc[part[column].idxmax()]
            median = (f"; the median over {len(part)} such cells is {part[column].median():.2f}"
                      if len(part) > 1 else "")
            out["explanations"].append(
                f"{who} of one {norm.upper()} cell scatter by up to {widest[column]:.2f} points "
                f"(standard deviation; {name(widest)}, n={int(widest[n_column])}){median}.")
    measured = agreement[(agreement["ours_n"] > 0) & agreement["ours_train_mean"].notna()]
    if not measured.empty:
        lead = measured["ours_test_mean"] - measured["ours_train_mean"]
        below_paper = int((agreement["repro_minus_paper"] < 0).sum())
        out["explanations"].append(
            f"In {int((lead > 0).sum())} of our {len(measured)} cells the running training "
            f"accuracy over the epoch is below the test accuracy measured after it (test minus "
            f"training: {lead.mean():+.2f} points on average, from {lead.min():+.2f} to "
            f"{lead.max():+.2f}). Of the paper's {len(agreement)} cells at this budget, the "
            f"reproduction's value is below the paper's in {below_paper}.")
    out["explanations"] += _near_chance_sentences(ran, near_chance, name)
    gap_norms = set(gaps["norm"])
    if "bn" in gap_norms:
        out["explanations"].append("A BN model has no deconvolution layer, so the ND settings "
                                   "(first layer included) do not bear on the BN gaps.")
    if first_layers and "nd" in gap_norms:
        nd_gaps = gaps[gaps["norm"] == "nd"].drop_duplicates("arch")
        by_setting: dict[str, list[str]] = {}
        for _, row in nd_gaps.iterrows():
            if row["arch"] in first_layers:
                by_setting.setdefault(first_layers[row["arch"]], []).append(row["paper_name"])
        if by_setting:
            out["explanations"].append(
                "The ND first layers of the architectures with an ND gap: " + "; ".join(
                    f"{setting}: {', '.join(names)}" for setting, names in by_setting.items()) + ".")
    return out


def _near_chance_sentences(ran: pd.DataFrame, multiple: float,
                           name: Callable[[pd.Series], str]) -> list[str]:
    """The cells of ``ran`` (agreement rows with runs of ours) whose mean test accuracy is
    below ``multiple`` times chance (``100 / K`` %), each with its mean test loss against
    ``ln K``, the test cross-entropy of a uniform guess; one sentence, or none without a
    dataset of known ``K``."""
    known = ran[ran["dataset"].isin(list(NUM_CLASSES))]
    if known.empty:
        return []
    chance = known["dataset"].map(lambda d: 100.0 / NUM_CLASSES[d])
    limits = ", ".join(f"{multiple * 100.0 / NUM_CLASSES[d]:g} % on {DATASET_TITLES.get(d, d)}"
                       for d in dict.fromkeys(known["dataset"]))
    low = known[known["ours_test_mean"] < multiple * chance]
    single = _single_seeds_near_chance(known[known["ours_test_mean"] >= multiple * chance],
                                       multiple, name)
    if low.empty:
        return [f"None of our cells ends the epoch below {multiple:g} times chance ({limits})."] + single
    items = []
    for _, row in low.iterrows():
        loss_text = _loss_against_uniform(row.get("ours_test_loss_mean"), NUM_CLASSES[row["dataset"]])
        published_text = "".join(f", the {who} {row[column]:.2f}" for who, column in
                                 (("paper", "paper_test"), ("reproduction", "repro_mean"))
                                 if not _missing(row[column]))
        items.append(f"{name(row)} {row['norm'].upper()}: ours {_mean_text(row)}, {loss_text}"
                     f"{published_text}")
    return [f"Our cells that end the epoch below {multiple:g} times chance ({limits}), with "
            f"their mean test loss against ln K, the test cross-entropy of a uniform guess over "
            f"the K classes: " + "; ".join(items) + ". A mean test loss near or above ln K means "
            f"that after the epoch the network gives the true class no more log-probability, on "
            f"average, than a uniform guess does: it had barely begun to learn."] + single


def _loss_against_uniform(loss: float, classes: int) -> str:
    """``loss`` (a test cross-entropy) beside ``ln K``, that of a uniform guess over ``K`` classes."""
    if _missing(loss):
        return "test loss not recorded"
    uniform = math.log(classes)
    return f"test loss {loss:.2f} ({'above' if loss > uniform else 'below'} ln {classes} = {uniform:.2f})"


def _single_seeds_near_chance(cells: pd.DataFrame, multiple: float,
                              name: Callable[[pd.Series], str]) -> list[str]:
    """The seeds below ``multiple`` times chance in ``cells`` whose mean is above it (their
    ``ours_seed_results``), each with its test loss and the cell's other seeds: one sentence,
    or none.  A mean hides such a seed, and it widens its cell's standard deviation."""
    items = []
    for _, row in cells.iterrows():
        results = row.get("ours_seed_results")
        if not isinstance(results, tuple):
            continue
        classes = NUM_CLASSES[row["dataset"]]
        for seed, acc, loss in results:
            if acc >= multiple * 100.0 / classes:
                continue
            loss_text = _loss_against_uniform(loss, classes)
            others = ", ".join(f"{a:.2f}" for s, a, _ in results if s != seed)
            items.append(f"{name(row)} {row['norm'].upper()}, seed {seed}: {acc:.2f} %, "
                         f"{loss_text} (the cell's other seeds: {others or 'none'})")
    if not items:
        return []
    return [f"Single seeds below {multiple:g} times chance in cells whose mean is above it: "
            + "; ".join(items) + ". Such a seed had barely begun to learn after the epoch; the "
            "cell's mean hides it, and its standard deviation is wide because of it."]


def gain_sentences(gains: pd.DataFrame, k: float = 2.0) -> list[str]:
    """One sentence per cell of an :func:`nd_vs_bn` frame that has runs of ours on both sides:
    ND minus BN in our runs, with its standard error and whether it lies beyond ``k`` of them,
    beside the paper's gain, e.g. ``"CIFAR-10 VGG-16, 1 epoch (BN n=2, ND n=2): ND − BN +63.08
    points (standard error 0.26: beyond 2 standard errors); the paper +60.06."``  The
    reproduction's gain is left out: at 20 and 100 epochs its values are training accuracies."""
    _require_columns(gains, ["dataset", "arch", "epochs", "paper_gain", "ours_gain",
                             "ours_gain_se", "ours_n_bn", "ours_n_nd"], "the ND - BN frame")
    both = gains[(gains["ours_n_bn"] > 0) & (gains["ours_n_nd"] > 0)]
    lines = []
    for _, row in both.iterrows():
        arch = row["paper_name"] if "paper_name" in row and not _missing(row["paper_name"]) else row["arch"]
        epochs = int(row["epochs"])
        paper = "" if _missing(row["paper_gain"]) else f"; the paper {row['paper_gain']:+.2f}"
        lines.append(f"{DATASET_TITLES.get(row['dataset'], row['dataset'])} {arch}, {epochs} "
                     f"epoch{'s' if epochs > 1 else ''} (BN n={int(row['ours_n_bn'])}, ND "
                     f"n={int(row['ours_n_nd'])}): ND − BN "
                     f"{_judge(row['ours_gain'], row['ours_gain_se'], k)['text']}{paper}.")
    return lines


# --------------------------------------------------------------------------- run costs


def load_average_text(value: object) -> str:
    """A load-average list ``[1 min, 5 min, 15 min]`` as ``"1.27 / 0.82 / 0.38"``."""
    if not isinstance(value, (list, tuple)) or not value:
        return ""
    return " / ".join(f"{float(v):.2f}" for v in value)


def record_details(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """What :func:`load_runs` leaves out of the records, one row per record: ``run_id``,
    ``cpu_count``, ``load_avg_at_start`` and ``load_avg_at_end`` (the machine's load average
    over 1, 5 and 15 minutes, a list), ``channel_mean`` and ``channel_std`` (the training
    split's per-channel statistics in ``data_source``, a tuple, or None for records written
    before they were stored) and ``data_kind``.  ``records`` are record dicts, e.g.
    :func:`ndlib.records.load_records`."""
    rows = []
    for record in records:
        env = record.get("environment") or {}
        source = record.get("data_source") or {}
        mean, std = source.get("channel_mean"), source.get("channel_std")
        rows.append({"run_id": record.get("run_id"), "cpu_count": env.get("cpu_count"),
                     "load_avg_at_start": env.get("load_avg_at_start"),
                     "load_avg_at_end": env.get("load_avg_at_end"),
                     "channel_mean": tuple(mean) if mean else None,
                     "channel_std": tuple(std) if std else None,
                     "data_kind": source.get("kind")})
    return pd.DataFrame(rows, columns=["run_id", "cpu_count", "load_avg_at_start",
                                       "load_avg_at_end", "channel_mean", "channel_std",
                                       "data_kind"])


def load_record_details(root: str | Path | None = None) -> pd.DataFrame:
    """:func:`record_details` of the records in ``root`` (default ``<project>/results/runs``)."""
    loader = _optional_loader("ndlib.records", "load_records")
    folder = Path(root) if root is not None else project_root() / "results/runs"
    return record_details(loader(root=str(folder)) if loader is not None else [])


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
    out = _with_timing_keys(runs).merge(details, on="run_id", how="left")
    _, synthetic = split_synthetic(out)
    out["synthetic"] = out.index.isin(synthetic.index)
    out["options"] = out["run_id"].map(run_options)
    out["timing_mixed"] = _mixed_timing(out)
    out["train_s"] = pd.to_numeric(out["train_time_s"], errors="coerce")
    out["eval_s"] = pd.to_numeric(out["eval_time_s"], errors="coerce")
    out["wall_s"] = out["train_s"] + out["eval_s"]
    out["load_start"] = out["load_avg_at_start"].map(load_average_text)
    out["load_end"] = out["load_avg_at_end"].map(load_average_text)
    out["note"] = out["note"].fillna("") if "note" in out.columns else ""
    repro = published.reproduction_table1().assign(norm=lambda d: d["method"].str.lower())
    repro = (repro.groupby(_CELL).agg(repro_train_s=("train_time_s", "mean"),
                                      repro_eval_s=("test_time_s", "mean")).reset_index())
    out["epochs"] = pd.to_numeric(out["epochs"], errors="coerce").astype("Int64")
    repro["epochs"] = repro["epochs"].astype("Int64")
    out = out.merge(repro, on=_CELL, how="left")
    # A run with other options or synthetic data is not the reproduction's cell.
    unlike = (out["options"] != "") | out["synthetic"]
    out.loc[unlike, ["repro_train_s", "repro_eval_s"]] = np.nan
    out["repro_device"] = np.where(out["repro_train_s"].notna(), REPRODUCTION_DEVICE, "")
    out = out.sort_values(["dataset", "arch", "epochs", "norm", "seed", "run_id"])
    return out[columns].reset_index(drop=True)


def channel_statistics(runs: pd.DataFrame, details: pd.DataFrame) -> pd.DataFrame:
    """Per dataset, the training split's channel mean and std (/255) as a real-data record
    stores them in ``data_source`` (the most recently finished such record), with
    ``records_with_stats`` and ``distinct_values`` (1 when every record agrees).  Datasets
    whose records predate the statistics have no row."""
    columns = ["dataset", "channel_mean", "channel_std", "run_id", "records_with_stats",
               "distinct_values"]
    if runs.empty or details.empty:
        return pd.DataFrame(columns=columns)
    real, _ = split_synthetic(runs)
    have = real.merge(details, on="run_id")
    have = have[have["channel_mean"].notna() & have["channel_std"].notna()]
    if have.empty:
        return pd.DataFrame(columns=columns)
    if "finished_at" in have.columns:
        have = have.sort_values("finished_at", na_position="first")
    rows = []
    for dataset, part in have.groupby("dataset", sort=True):
        last = part.iloc[-1]
        rows.append({"dataset": dataset, "channel_mean": last["channel_mean"],
                     "channel_std": last["channel_std"], "run_id": last["run_id"],
                     "records_with_stats": len(part),
                     "distinct_values": len(set(zip(part["channel_mean"], part["channel_std"])))})
    return pd.DataFrame(rows, columns=columns)
