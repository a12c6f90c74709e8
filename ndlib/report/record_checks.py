"""Checks on our records that the chapters show: every completed run's summary against its own
history, the synthetic smoke runs (listed apart, never in a table), and the channel statistics
the real-data records store."""
from __future__ import annotations

import pandas as pd

from ndlib.report.frames import require_columns
from ndlib.report.selection import split_synthetic


def final_epoch_from_history(histories: pd.DataFrame) -> pd.DataFrame:
    """The last epoch of every run's history: ``run_id, epoch, train_acc, test_acc``.

    Used to check that a record's summary accuracies are its history's final epoch."""
    require_columns(histories, ["run_id", "epoch", "train_acc", "test_acc"], "the histories")
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
