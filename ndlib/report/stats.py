"""Statistics over seeds: mean ± standard deviation as text, the difference of two means with
Welch's standard error and a verdict, and the prediction interval for one more run.

Means are over distinct seeds, with the sample standard deviation (``ddof=1``; undefined for
one seed).  All accuracies are in percent and differences in points.
"""
from __future__ import annotations

import math

from ndlib.report.frames import is_missing, seed_count


def format_mean_std(mean: float, std: float, n: int, digits: int = 2) -> str:
    """``"93.10 ± 0.21 (n=3)"``; ``"93.10 (n=1)"`` for one seed; ``"not run"`` for none."""
    if n == 0 or mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "not run"
    if n == 1 or std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.{digits}f} (n={n})"
    return f"{mean:.{digits}f} ± {std:.{digits}f} (n={n})"


def compare_difference(mean_a: float, sd_a: float, n_a: int, mean_b: float, sd_b: float,
                       n_b: int, k: float = 2.0) -> dict[str, object]:
    """``a - b`` for two means over seeds, with Welch's standard error and a verdict.

    Returns ``diff`` (NaN when a side has no run); ``se`` = sqrt(s_a^2/n_a + s_b^2/n_b) (NaN
    unless both sides have at least two seeds); ``verdict``: ``"not run"``, ``"no noise
    estimate"`` (one seed on a side), ``"beyond noise"`` (|diff| > k se) or ``"within
    noise"``; and ``text``, e.g. ``"+3.20 points (standard error 1.10: beyond 2 standard
    errors)"``.
    """
    n_a, n_b = seed_count(n_a), seed_count(n_b)
    if n_a == 0 or n_b == 0 or is_missing(mean_a) or is_missing(mean_b):
        return judge_difference(math.nan, math.nan, k)
    diff = float(mean_a) - float(mean_b)
    if n_a < 2 or n_b < 2 or is_missing(sd_a) or is_missing(sd_b):
        return judge_difference(diff, math.nan, k)
    return judge_difference(diff, math.sqrt(float(sd_a) ** 2 / n_a + float(sd_b) ** 2 / n_b), k)


def judge_difference(diff: float, se: float, k: float) -> dict[str, object]:
    """The verdict and text of :func:`compare_difference` for a difference and its standard
    error (NaN difference: not run; NaN error: no noise estimate)."""
    if is_missing(diff):
        return {"diff": math.nan, "se": math.nan, "verdict": "not run", "text": "not run"}
    if is_missing(se):
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
