"""Loading our records for the report: run records, per-epoch histories, benchmarks and the
record details that :func:`load_runs` leaves out.

The loaders are :mod:`ndlib.records`' and :mod:`ndlib.bench`'s; here their folders default to
the project's ``results/`` wherever the caller runs (the book's notebooks run in ``book/``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

from ndlib import bench as bench_records
from ndlib import records as run_records
from ndlib.paths import project_root


def _folder(root: str | Path | None, default: str) -> str:
    """``root``, or ``<project>/<default>``."""
    return str(Path(root) if root is not None else project_root() / default)


def load_runs(root: str | Path | None = None) -> pd.DataFrame:
    """Our run records (one row per run, columns :data:`ndlib.records.RUN_COLUMNS`).  ``root``
    defaults to ``<project>/results/runs``."""
    return run_records.load_runs(root=_folder(root, "results/runs"))


def load_histories(root: str | Path | None = None) -> pd.DataFrame:
    """Per-epoch histories of our runs (long form), empty when there are none."""
    return run_records.load_histories(root=_folder(root, "results/runs"))


def load_bench(root: str | Path | None = None, amp: bool | None = False) -> pd.DataFrame:
    """Our step-time benchmarks, empty when there are none.  ``root`` defaults to
    ``<project>/results/bench``; ``amp`` as :func:`ndlib.bench.load_bench` (float32 only by
    default, ``True`` the bfloat16 ones, ``None`` both)."""
    return bench_records.load_bench(root=_folder(root, "results/bench"), amp=amp)


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
    return record_details(run_records.load_records(root=_folder(root, "results/runs")))
