"""The accuracy/speed trade-off of ``refresh_every``: per architecture, BN, the exact ND layer
and ND with ``refresh_every = k`` (each way of whitening between refreshes) side by side: the
run's status and test accuracy, its training time, and the benchmarked ND/BN step ratio."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ndlib.config import TrainConfig
from ndlib.report.benchmarks import bench_sweep

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


def _setting_config(arch: str, norm: str, dataset: str, epochs: int, seed: int, refresh_every: int | None,
                    refresh_stats: str | None, refresh_warmup: int = 0) -> TrainConfig:
    """The configuration of a setting of :data:`REFRESH_SETTINGS` (the paper's settings otherwise)."""
    options = {}
    if refresh_every not in (None, 1):
        options["deconv_refresh_every"] = refresh_every
        options["deconv_refresh_stats"] = refresh_stats
        options["deconv_refresh_warmup"] = refresh_warmup
    return TrainConfig(arch=arch, norm=norm, dataset=dataset, epochs=epochs, seed=seed, **options)


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
    columns = ["arch", "setting", "refresh_every", "refresh_stats", "refresh_warmup", "run_id", "status",
               "diverged_step", "test_acc", "train_time_s", "device_name", "run_threads", "bench_ratio", "bench_id",
               "command"]
    by_id = runs.set_index("run_id") if not runs.empty else pd.DataFrame()
    rows = []
    for arch in archs:
        for label, every, stats, warmup in settings:
            norm = "bn" if every is None else "nd"
            config = _setting_config(arch, norm, dataset, epochs, seed, every, stats, warmup)
            run_id = config.run_id
            row = {"arch": arch, "setting": label, "refresh_every": every, "refresh_stats": stats,
                   "refresh_warmup": warmup,
                   "run_id": run_id, "status": "not run", "diverged_step": np.nan, "test_acc": np.nan,
                   "train_time_s": np.nan, "device_name": "", "run_threads": np.nan,
                   "bench_ratio": np.nan, "bench_id": "",
                   "command": config.shell_command()}
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
