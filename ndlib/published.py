"""Published numbers: the paper's Tables 1 and 2 and the 2024 reproduction's results.

The CSV files live in ``ndlib/published_data/`` (sources in its README).  Accuracies are in
percent everywhere in ``ndlib``; the reproduction's spreadsheet recorded fractions, which
:func:`reproduction_table1` converts (keeping the raw column as ``reported_acc``).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

DATA_DIR = Path(__file__).resolve().parent / "published_data"

PAPER = "Ye et al., Network Deconvolution, ICLR 2020"
REPRODUCTION = "Obadage et al., [Re] Network Deconvolution, ReScience C 2024"


def _read(name: str) -> pd.DataFrame:
    path = DATA_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"published data file {path} is missing; reinstall ndlib (pip install -e .)")
    return pd.read_csv(path)


def paper_table1() -> pd.DataFrame:
    """Table 1 of the paper: columns dataset, arch, paper_name, net_size_m, method, epochs, test_acc_pct."""
    return _read("original_table1.csv")


def paper_table2() -> pd.DataFrame:
    """Table 2 of the paper (``source == 'original'``) and the reproduction's (``'re'``)."""
    return _read("original_table2.csv")


ATTEMPT_KEY = ["dataset", "arch", "method", "epochs", "attempt"]


def _suspect_reasons() -> pd.DataFrame:
    """Our flags on rows of the reproduction's spreadsheet, kept in their own file so that the copy
    of the spreadsheet stays verbatim. Each flag needs a unique key and a reason."""
    flags = _read("reproduction_suspect_rows.csv")
    if flags.duplicated(ATTEMPT_KEY).any() or (flags["reason"].fillna("").str.strip() == "").any():
        raise ValueError("reproduction_suspect_rows.csv: each row needs a unique key and a reason")
    return flags.rename(columns={"reason": "suspect"})


def reproduction_table1() -> pd.DataFrame:
    """The reproduction's per-attempt Table 1 values, with ``acc_pct`` = 100 * ``reported_acc``.

    ``suspect`` gives our reason to doubt a row (empty when there is none; see the README of
    ``published_data``). Flagged rows are kept, so means are still taken over every attempt; a
    caller that wants them out filters on ``suspect == ""``. A flag that matches no attempt (a
    typo, or a changed source file) is an error rather than a flag that silently vanishes.
    """
    df = _read("re_table1_attempts.csv")
    df["acc_pct"] = 100.0 * df["reported_acc"]
    flags = _suspect_reasons()
    merged = df.merge(flags, on=ATTEMPT_KEY, how="left", validate="one_to_one")
    unmatched = flags.merge(df[ATTEMPT_KEY], on=ATTEMPT_KEY, how="left", indicator=True)
    unmatched = unmatched[unmatched["_merge"] == "left_only"]
    if not unmatched.empty:
        raise ValueError("reproduction_suspect_rows.csv flags attempts that re_table1_attempts.csv lacks:\n"
                         + unmatched[ATTEMPT_KEY].to_string(index=False))
    merged["suspect"] = merged["suspect"].fillna("").astype(str)
    return merged


def suspect_reproduction_rows() -> pd.DataFrame:
    """The attempts of :func:`reproduction_table1` that we flag, each with its reason."""
    df = reproduction_table1()
    return df[df["suspect"] != ""].reset_index(drop=True)


def reproduction_imagenet_times() -> pd.DataFrame:
    """The reproduction's 90-epoch ImageNet wall times on an A100 (hours in ``wall_time_h``)."""
    return _read("re_table2_times.csv")


def net_sizes() -> dict[str, float]:
    """The paper's printed "Net Size" (millions of parameters, ND models, 10 classes) by arch."""
    t = paper_table1()
    return dict(t.drop_duplicates("arch").set_index("arch")["net_size_m"].astype(float))
