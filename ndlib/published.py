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


def reproduction_table1() -> pd.DataFrame:
    """The reproduction's per-attempt Table 1 values, with ``acc_pct`` = 100 * ``reported_acc``."""
    df = _read("re_table1_attempts.csv")
    df["acc_pct"] = 100.0 * df["reported_acc"]
    return df


def reproduction_imagenet_times() -> pd.DataFrame:
    """The reproduction's 90-epoch ImageNet wall times on an A100 (hours in ``wall_time_h``)."""
    return _read("re_table2_times.csv")


def net_sizes() -> dict[str, float]:
    """The paper's printed "Net Size" (millions of parameters, ND models, 10 classes) by arch."""
    t = paper_table1()
    return dict(t.drop_duplicates("arch").set_index("arch")["net_size_m"].astype(float))
