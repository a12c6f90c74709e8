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
import shlex
from pathlib import Path
from typing import Callable, Iterable, Sequence

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
]

CIFAR_EPOCHS: tuple[int, ...] = (1, 20, 100)
DEFAULT_SEEDS: tuple[int, ...] = (0, 1, 2)
NORMS: tuple[str, ...] = ("bn", "nd")
REPRODUCTION_DEVICE = "Tesla V100-SXM2-16GB"

# The columns promised by the records and benchmark contracts; used to give an empty,
# correctly shaped frame when nothing has been recorded yet.
RUN_COLUMNS: tuple[str, ...] = (
    "run_id", "status", "table", "dataset", "arch", "norm", "epochs", "seed", "synthetic",
    "data_source", "test_acc", "test_top5", "train_acc", "train_loss", "train_time_s",
    "eval_time_s", "images_per_s", "peak_mem_mb", "device_type", "device_name", "num_threads",
    "torch_version", "git_commit", "git_dirty", "started_at", "finished_at",
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
    """Per cell: test mean/std over the distinct seeds of completed real runs, and counts."""
    columns = ["dataset", "arch", "norm", "epochs", "ours_test_mean", "ours_test_std", "ours_n",
               "ours_train_mean", "ours_seeds", "ours_other_runs", "ours_other_detail"]
    if runs.empty:
        return pd.DataFrame(columns=columns)
    _require_columns(runs, ["status", "table", "dataset", "arch", "norm", "epochs", "seed",
                            "test_acc", "train_acc", "synthetic"], "the run records")
    real, _ = split_synthetic(runs)
    real = real[_in_table(real, table)]
    if real.empty:
        return pd.DataFrame(columns=columns)
    real = real.assign(epochs=real["epochs"].astype(int))
    done = real[real["status"] == "completed"]
    # One value per seed: if a seed was run twice, the latest finished run counts.
    if "finished_at" in done.columns:
        done = done.sort_values("finished_at")
    done = done.drop_duplicates(_CELL + ["seed"], keep="last")
    cells = (done.groupby(_CELL)
             .agg(ours_test_mean=("test_acc", "mean"), ours_test_std=("test_acc", "std"),
                  ours_n=("seed", "nunique"), ours_train_mean=("train_acc", "mean"),
                  ours_seeds=("seed", lambda s: tuple(sorted(int(v) for v in s))))
             .reset_index())
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
    ``ours_train_mean`` (final-epoch training accuracy), ``ours_other_runs`` (diverged /
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
                  "ours_test_std", "ours_n", "ours_train_mean", "ours_other_runs",
                  "ours_other_detail", "ours_status", "command", "paper_test", "repro_mean",
                  "repro_std", "repro_n"]]


def nd_vs_bn(table: pd.DataFrame) -> pd.DataFrame:
    """ND minus BN per (dataset, arch, epochs) of a :func:`table1` frame (points).

    ``paper_gain``: the paper's test accuracies; ``repro_gain``: the reproduction's reported
    values (training accuracy at 20/100 epochs); ``ours_gain``: difference of our test means,
    with ``ours_gain_se`` = sqrt(s_nd^2/n_nd + s_bn^2/n_bn) (Welch's standard error; NaN unless
    both sides have at least two seeds) and ``ours_n_bn``, ``ours_n_nd``.
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
    return out.reset_index()


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
    row per seed of a completed real-data run, so a plot can show their spread."""
    paper = _paper_cells(dataset)
    names = paper.drop_duplicates("arch").set_index("arch")["paper_name"]
    frames = [paper.assign(source="paper", metric="test", accuracy=paper["paper_test"])]
    repro = published.reproduction_table1()
    repro = repro[repro["dataset"] == dataset].assign(norm=lambda d: d["method"].str.lower())
    frames.append(repro.assign(source="reproduction", metric="as reported",
                               accuracy=repro["acc_pct"], paper_name=repro["arch"].map(names)))
    if not runs.empty:
        real, _ = split_synthetic(runs)
        ours = real[_in_table(real, 1) & (real["dataset"] == dataset)
                    & (real["status"] == "completed")]
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


def our_timing(runs: pd.DataFrame) -> pd.DataFrame:
    """Our training times: per (device, threads, synthetic, dataset, arch, epochs) the mean
    wall seconds of BN and ND runs that completed, images/s, and the ratio ND / BN.

    The device stays in the key: a CPU ratio is never mixed with a GPU one."""
    keys = ["device_type", "device_name", "num_threads", "synthetic", "dataset", "arch", "epochs"]
    cols = keys + ["bn_train_s", "nd_train_s", "bn_images_per_s", "nd_images_per_s",
                   "ratio_nd_bn", "n_bn", "n_nd", "notes"]
    if runs.empty:
        return pd.DataFrame(columns=cols)
    _require_columns(runs, keys + ["status", "norm", "train_time_s", "images_per_s"],
                     "the run records")
    done = runs[runs["status"] == "completed"].copy()
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
    ``latest_only=True`` keeps the newest per (device, threads, implementation, arch, batch).
    """
    keys = ["device_type", "device_name", "num_threads", "implementation", "arch", "batch_size"]
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
