"""Small checks on the frames and values that the report modules and :mod:`ndlib.plots` take."""
from __future__ import annotations

import math
from typing import Iterable

import pandas as pd


def require_columns(df: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    """Raise ``ValueError`` naming the columns of ``columns`` that ``df`` (``what``, e.g.
    ``"the run records"``) lacks; build such frames with :mod:`ndlib.report`'s functions."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks the column(s) {missing}; got {list(df.columns)}")


def is_missing(value: object) -> bool:
    """True for None, NA and NaN."""
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def seed_count(value: object) -> int:
    """A seed count that may be missing (NaN after a merge): 0 then."""
    return 0 if is_missing(value) else int(value)
