"""Which of our runs count, and for what: the paper's table and settings, real data, and
training times taken under one machine setting.

* **Synthetic-data runs never enter a results table.**  Records with ``synthetic == True``
  (smoke runs on random images) are split off by :func:`split_synthetic`.
* **A run with non-default options measures something else**: its run id ends in
  ``-o<hash>`` (:func:`ndlib.config.run_id_options`) and :func:`paper_settings_only` drops it.
* **A training time counts only under one setting**: a run resumed under other threads,
  another machine or memory setting (``timing_mixed``) keeps its accuracy but not its time
  (:func:`single_setting_times`); times are grouped by machine instance and memory setting
  (:func:`with_timing_keys`).
"""
from __future__ import annotations

import math

import pandas as pd

from ndlib.config import execution_options
from ndlib.config import run_id_options as run_options
from ndlib.report.frames import require_columns


def in_table(runs: pd.DataFrame, table: int) -> pd.Series:
    """Rows of ``runs`` that belong to the paper's Table ``table`` (a missing value: none)."""
    return pd.to_numeric(runs["table"], errors="coerce") == table


def paper_settings_only(runs: pd.DataFrame, amp: bool = False, channels_last: bool = False,
                        covariance_grad: str | None = None) -> pd.DataFrame:
    """The runs trained with the paper's settings: run ids without an ``-o<hash>`` suffix.

    A run with any non-default option (e.g. ``deconv_refresh_every``) measures something else
    and never counts for a cell of the paper's table.  ``amp`` / ``channels_last`` ask instead for
    the paper's settings executed in bfloat16 autocast and/or the channels_last layout: run ids
    whose suffix hashes exactly those (:func:`ndlib.config.execution_options`; the settings a
    campaign may train a cell in, bf16 once the fidelity test accepts it, :mod:`ndlib.fidelity`).
    ``covariance_grad`` (with ``amp``) asks for ND runs with that ND option too, beside BN runs
    of the same precision and layout (``runs`` then needs a ``norm`` column)."""
    require_columns(runs, ["run_id"], "the run records")
    wanted = execution_options(amp, channels_last)
    if covariance_grad is None:
        return runs[runs["run_id"].map(run_options) == wanted]
    require_columns(runs, ["norm"], "the run records")
    nd_wanted = execution_options(amp, channels_last, covariance_grad)
    return runs[runs["run_id"].map(run_options) == runs["norm"].map(lambda norm: nd_wanted if norm == "nd"
                                                                     else wanted)]


def split_synthetic(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(real, synthetic)``: records on real data, and smoke runs on synthetic data.

    A record whose ``synthetic`` flag is missing counts as synthetic: a result whose data
    source is unknown must not enter a results table.
    """
    require_columns(runs, ["synthetic"], "the run records")
    flag = runs["synthetic"].map(lambda v: True if v is None or v is pd.NA or
                                 (isinstance(v, float) and math.isnan(v)) else bool(v))
    flag = flag.astype(bool)
    return runs[~flag].copy(), runs[flag].copy()


def with_timing_keys(runs: pd.DataFrame) -> pd.DataFrame:
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


def mixed_timing(runs: pd.DataFrame) -> pd.Series:
    """Per row, whether the run's training time mixes settings (``timing_mixed``: it was resumed
    under other threads, another machine or memory setting, :func:`ndlib.records.timing_settings_mixed`);
    False where the column is absent (frames built before it existed)."""
    if "timing_mixed" not in runs.columns:
        return pd.Series(False, index=runs.index)
    return runs["timing_mixed"].astype("boolean").fillna(False).astype(bool)


def single_setting_times(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` without the runs whose training time mixes settings (:func:`mixed_timing`):
    their accuracy counts, but their time belongs to no one machine setting."""
    return runs[~mixed_timing(runs)]
