"""Table 1 (CIFAR-10/100): the paper's cells beside the reproduction's values and our runs.

Our side of a cell: the distinct seeds of completed real-data runs with the paper's settings
(:mod:`ndlib.report.selection`); diverged, interrupted and failed runs are counted per cell
(``ours_other_runs``) so that a reader sees them, but they give no accuracy.  The
reproduction's values at 20 and 100 epochs are training accuracies
(:func:`reproduction_evidence`).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from ndlib import published
from ndlib.report.commands import grid_command
from ndlib.report.constants import CELL_KEYS, CIFAR_EPOCHS, COMPARED_NORMS, DEFAULT_SEEDS
from ndlib.report.frames import is_missing, require_columns, seed_count
from ndlib.report.selection import in_table, mixed_timing, paper_settings_only, split_synthetic
from ndlib.report.stats import format_mean_std, prediction_factor


def paper_cells(dataset: str) -> pd.DataFrame:
    paper = published.paper_table1()
    paper = paper[paper["dataset"] == dataset].copy()
    if paper.empty:
        known = sorted(published.paper_table1()["dataset"].unique())
        raise ValueError(f"unknown dataset {dataset!r}; Table 1 has {known}")
    paper["norm"] = paper["method"].str.lower()
    return paper.rename(columns={"test_acc_pct": "paper_test"})[
        ["dataset", "arch", "paper_name", "norm", "epochs", "paper_test"]]


def reproduction_cells() -> pd.DataFrame:
    repro = published.reproduction_table1()
    repro["norm"] = repro["method"].str.lower()
    return (repro.groupby(CELL_KEYS)["acc_pct"]
            .agg(repro_mean="mean", repro_std="std", repro_n="count").reset_index())


def our_cells(runs: pd.DataFrame, table: int) -> pd.DataFrame:
    """Per cell: test mean/std over the distinct seeds of completed real runs with the paper's
    settings (:func:`paper_settings_only`), their mean training seconds (of the runs that
    trained under one setting throughout, ``timing_mixed`` False), and counts."""
    columns = ["dataset", "arch", "norm", "epochs", "ours_test_mean", "ours_test_std", "ours_n",
               "ours_train_mean", "ours_test_loss_mean", "ours_seed_results", "ours_seeds",
               "ours_train_time_mean", "ours_other_runs", "ours_other_detail"]
    if runs.empty:
        return pd.DataFrame(columns=columns)
    require_columns(runs, ["run_id", "status", "table", "dataset", "arch", "norm", "epochs",
                            "seed", "test_acc", "train_acc", "train_time_s", "synthetic"],
                     "the run records")
    real, _ = split_synthetic(paper_settings_only(runs))
    real = real[in_table(real, table)]
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
    done = done.drop_duplicates(CELL_KEYS + ["seed"], keep="last")
    # A run's accuracy counts; its time only where it ran under one setting throughout.
    done = done.assign(train_time_s=pd.to_numeric(done["train_time_s"], errors="coerce")
                       .where(~mixed_timing(done)))
    cells = (done.groupby(CELL_KEYS)
             .agg(ours_test_mean=("test_acc", "mean"), ours_test_std=("test_acc", "std"),
                  ours_n=("seed", "nunique"), ours_train_mean=("train_acc", "mean"),
                  ours_test_loss_mean=("test_loss", "mean"),
                  ours_seeds=("seed", lambda s: tuple(sorted(int(v) for v in s))),
                  ours_train_time_mean=("train_time_s", "mean"))
             .reset_index())
    # Each seed's own outcome, so that one failed seed is visible behind a cell's mean.
    per_seed = {key: tuple(sorted((int(seed), float(acc), float(loss)) for seed, acc, loss in
                                  zip(group["seed"], group["test_acc"], group["test_loss"])))
                for key, group in done.groupby(CELL_KEYS)}
    cells["ours_seed_results"] = [per_seed[tuple(key)] for key in
                                  cells[CELL_KEYS].itertuples(index=False, name=None)]
    unfinished = real[real["status"] != "completed"]
    other = (unfinished.groupby(CELL_KEYS)
             .agg(ours_other_runs=("status", "size"),
                  ours_other_detail=("status", lambda s: ", ".join(
                      f"{count} {status}" for status, count in sorted(s.value_counts().items()))))
             .reset_index())
    merged = cells.merge(other, on=CELL_KEYS, how="outer")
    merged["ours_other_runs"] = merged["ours_other_runs"].fillna(0).astype(int)
    merged["ours_other_detail"] = merged["ours_other_detail"].fillna("")
    merged["ours_n"] = merged["ours_n"].fillna(0).astype(int)
    return merged[columns]


def cell_status(n: int, other_detail: str, wanted: int) -> str:
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
    paper = paper_cells(dataset)
    cells = paper.merge(reproduction_cells(), on=CELL_KEYS, how="left")
    ours = our_cells(runs, table=1)
    cells = cells.merge(ours, on=CELL_KEYS, how="left")
    cells["ours_n"] = cells["ours_n"].fillna(0).astype(int)
    cells["ours_other_runs"] = cells["ours_other_runs"].fillna(0).astype(int)
    wanted = len(seeds)
    cells["ours_other_detail"] = cells["ours_other_detail"].fillna("")
    cells["ours_status"] = [cell_status(n, detail, wanted)
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
    require_columns(table, ["dataset", "arch", "norm", "epochs", "paper_test", "repro_mean",
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
        for norm in COMPARED_NORMS:
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
    paper = paper_cells(dataset)
    names = paper.drop_duplicates("arch").set_index("arch")["paper_name"]
    frames = [paper.assign(source="paper", metric="test", accuracy=paper["paper_test"])]
    repro = published.reproduction_table1()
    repro = repro[repro["dataset"] == dataset].assign(norm=lambda d: d["method"].str.lower())
    frames.append(repro.assign(source="reproduction", metric="as reported",
                               accuracy=repro["acc_pct"], paper_name=repro["arch"].map(names)))
    if not runs.empty:
        real, _ = split_synthetic(paper_settings_only(runs))
        ours = real[in_table(real, 1) & (real["dataset"] == dataset)
                    & (real["status"] == "completed") & real["arch"].isin(names.index)
                    & pd.to_numeric(real["epochs"], errors="coerce").isin(CIFAR_EPOCHS)]
        frames.append(ours.assign(source="ours", metric="test", accuracy=ours["test_acc"],
                                  epochs=ours["epochs"].astype(int),
                                  paper_name=ours["arch"].map(names)))
    cols = ["dataset", "arch", "paper_name", "norm", "epochs", "source", "metric", "accuracy"]
    long = pd.concat([f[cols] for f in frames], ignore_index=True)
    long["accuracy"] = long["accuracy"].astype(float)
    return long


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
    require_columns(table, ["dataset", "arch", "paper_name", "norm", "epochs", "paper_test",
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
    out["ours_n"] = out["ours_n"].map(seed_count)
    out["repro_minus_paper"] = out["repro_mean"] - out["paper_test"]
    out["ours_minus_paper"] = out["ours_test_mean"] - out["paper_test"]
    out["ours_minus_repro"] = out["ours_test_mean"] - out["repro_mean"]
    out["ours_band"] = [prediction_factor(n, level) * sd for n, sd in
                        zip(out["ours_n"], out["ours_test_std"])]
    outside = out["ours_minus_paper"].abs() > out["ours_band"]
    out["ours_outside"] = pd.array([bool(o) if n >= min_seeds else pd.NA
                                    for o, n in zip(outside, out["ours_n"])], dtype="boolean")

    def closer(row: pd.Series) -> str:
        if row["ours_n"] == 0 or is_missing(row["ours_test_mean"]):
            return ""
        to_paper, to_repro = abs(row["ours_minus_paper"]), abs(row["ours_minus_repro"])
        if math.isclose(to_paper, to_repro):
            return "equally close"
        return "paper" if to_paper < to_repro else "reproduction"

    out["closer_to"] = out.apply(closer, axis=1) if not out.empty else ""
    return out


def paper_names() -> dict[str, str]:
    """The paper's name of each Table 1 architecture, e.g. ``{"vgg16": "VGG-16", ...}``."""
    return dict(published.paper_table1().drop_duplicates("arch")[["arch", "paper_name"]].values)


def all_paper_cells() -> pd.DataFrame:
    return pd.concat([paper_cells(d) for d in dict.fromkeys(published.paper_table1()["dataset"])],
                     ignore_index=True)


def reproduction_vs_paper(dataset: str | None = None) -> pd.DataFrame:
    """Per Table 1 cell: the paper's test accuracy, the reproduction's mean and range over
    its attempts, and the difference ``repro_mean - paper_test`` (percentage points)."""
    paper = published.paper_table1().rename(columns={"test_acc_pct": "paper_test"})
    paper["norm"] = paper["method"].str.lower()
    repro = published.reproduction_table1()
    repro["norm"] = repro["method"].str.lower()
    stats = (repro.groupby(CELL_KEYS)["acc_pct"]
             .agg(repro_mean="mean", repro_min="min", repro_max="max").reset_index())
    cmp = paper[CELL_KEYS + ["paper_name", "paper_test"]].merge(stats, on=CELL_KEYS, how="inner")
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
