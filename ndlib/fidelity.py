"""Fidelity tests: may the 20-epoch campaign train in bf16 autocast, and with ND's covariance backward in bf16?

bf16 keeps float32's exponent but only 8 bits of mantissa, so a bf16 run is another computation
(the ND layers keep their statistics, Newton-Schulz and fold in float32 under autocast, but the
convolutions and matrix products around them round).  On a CPU with native bf16 (Intel AMX) it
made the BN step of most Table 1 models 1.6x to 2.3x faster and the ND step 1.2x to 1.55x
(``results/bench``, 2026-12-06), which is days over the campaign, but it is used only if it does
not move the result.

The test (issue 29): the runs of ``campaigns/bf16-fidelity.toml``, one-epoch bf16 runs of cells
that already have at least three float32 seeds with the paper's settings.  A bf16 run passes if
its final test accuracy ``x`` lies in the 95 % prediction interval of its cell's float32 seeds,

    m - k s <= x <= m + k s,    k = t_{n-1, 0.975} * sqrt(1 + 1/n)

(``m``, ``s``: the seeds' mean and sample sd; :func:`ndlib.report.prediction_factor`): the range
one more float32 run falls in with probability 0.95.  A prediction interval, not a confidence
interval of the mean, since the question is whether the bf16 run could have been one more
float32 seed.  bf16 is accepted only if every run of the file completed and passed; a diverged
bf16 run fails.  With 3 seeds ``k`` is about 4.97, so the test catches a shift of a few seed
standard deviations, not a small bias: the 20-epoch tables say which precision they hold.

The same test guards a second setting, ``covariance_grad="input"`` (``TrainConfig.
deconv_covariance_grad``: ND's covariance backward in bf16, ``ndlib.layers``), with one-epoch
runs of ResNet-18 ND on both datasets, the architecture of those that use it with three float32
seeds (``campaigns/covariance-grad-fidelity.toml``).  :data:`FIDELITY_TESTS` lists both; a campaign run
that uses a setting waits until that setting's test has accepted it (:func:`waiting_for`).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ndlib.campaign import load_campaign
from ndlib.paths import project_root
from ndlib.report import paper_settings_only, prediction_factor, split_synthetic

__all__ = ["FIDELITY_LEVEL", "MIN_FLOAT32_SEEDS", "FidelityTest", "FIDELITY_TESTS", "fidelity_campaign",
           "fidelity_table", "fidelity_verdict", "waiting_for"]

#: The prediction interval's coverage.
FIDELITY_LEVEL = 0.95
#: Float32 seeds a cell needs before it can judge a bf16 run.
MIN_FLOAT32_SEEDS = 3

_COLUMNS = ["dataset", "arch", "norm", "bf16_run_id", "bf16_status", "bf16_test", "machine_type",
            "fp32_seeds", "fp32_mean", "fp32_sd", "low", "high", "inside"]


@dataclass(frozen=True)
class FidelityTest:
    """A setting that changes how the paper's computation runs, and the one-epoch runs that must all
    land inside their float32 interval before a campaign run may use it.

    ``uses(config)``: whether a run uses the setting; ``subject``: the setting in words (the
    verdict's sentences); ``file``: the test's campaign under ``campaigns/``."""

    name: str
    file: str
    subject: str
    uses: Callable

    @property
    def campaign(self) -> Path:
        return project_root() / "campaigns" / self.file


#: The settings the campaigns use only after a fidelity test: bf16 autocast, and (ND only) the
#: covariance's backward in bf16 on top of it.
FIDELITY_TESTS: dict[str, FidelityTest] = {
    "bf16": FidelityTest("bf16", "bf16-fidelity.toml", "bfloat16 autocast", lambda config: bool(config.amp)),
    "covariance-grad": FidelityTest(
        "covariance-grad", "covariance-grad-fidelity.toml",
        "ND's covariance backward in bf16 (covariance_grad='input')",
        lambda config: getattr(config, "deconv_covariance_grad", None) is not None),
}


def fidelity_campaign(test: str = "bf16") -> Path:
    """``campaigns/<file>`` of fidelity test ``test`` (default ``campaigns/bf16-fidelity.toml``):
    the test's runs, in the order the lanes train them."""
    return FIDELITY_TESTS[test].campaign


def waiting_for(config, runs: pd.DataFrame) -> FidelityTest | None:
    """The first fidelity test that real-data run ``config`` uses and that has not accepted its
    setting yet in ``runs`` (the records), None when it may train.  A test's own runs never wait
    for that test; synthetic runs never wait."""
    if config.synthetic:
        return None
    for test in FIDELITY_TESTS.values():
        if not test.uses(config):
            continue
        own = {planned.run_id for planned in load_campaign(test.campaign).runs}
        if config.run_id in own:
            continue
        if fidelity_verdict(fidelity_table(runs, test.campaign), test=test.name)[0] is not True:
            return test
    return None


def fidelity_table(runs: pd.DataFrame, campaign: str | Path | None = None,
                   level: float = FIDELITY_LEVEL) -> pd.DataFrame:
    """One row per run of the fidelity campaign: the bf16 run's final test accuracy beside the
    ``level`` prediction interval ``[low, high]`` of its cell's float32 seeds (completed, real data,
    the paper's settings, same dataset, architecture, norm and epochs).

    ``inside`` is True or False once the bf16 run finished (a diverged run: False), ``pd.NA``
    while it has not, or when the cell has fewer than :data:`MIN_FLOAT32_SEEDS` float32 seeds."""
    planned = load_campaign(campaign or fidelity_campaign()).runs
    real, _ = split_synthetic(runs) if not runs.empty else (runs, runs)
    fp32 = paper_settings_only(real) if not real.empty else real
    fp32 = fp32[fp32["status"] == "completed"] if not fp32.empty else fp32
    by_id = real.set_index("run_id") if not real.empty else pd.DataFrame()
    rows = []
    for config in planned:
        seeds = fp32[(fp32["dataset"] == config.dataset) & (fp32["arch"] == config.arch)
                     & (fp32["norm"] == config.norm) & (fp32["epochs"] == config.epochs)]["test_acc"] \
            if not fp32.empty else pd.Series(dtype=float)
        seeds = seeds.astype(float)
        n = len(seeds)
        mean, sd = (float(seeds.mean()), float(seeds.std(ddof=1))) if n >= 2 else (np.nan, np.nan)
        band = prediction_factor(n, level) * sd if n >= MIN_FLOAT32_SEEDS else np.nan
        bf16 = by_id.loc[config.run_id] if config.run_id in by_id.index else None
        status = bf16["status"] if bf16 is not None else "not run"
        test = float(bf16["test_acc"]) if bf16 is not None and status == "completed" else np.nan
        if status == "diverged":
            inside = False
        elif status != "completed" or np.isnan(band):
            inside = pd.NA
        else:
            inside = bool(mean - band <= test <= mean + band)
        rows.append((config.dataset, config.arch, config.norm, config.run_id, status, test,
                     bf16["machine_type"] if bf16 is not None else None, n, mean, sd,
                     mean - band, mean + band, inside))
    return pd.DataFrame(rows, columns=_COLUMNS)


#: The verdict's sentences: the bf16 test's, and any other setting's (``{subject}``: its words).
_VERDICT_WORDS = {
    "bf16": {
        "empty": "The bf16 fidelity test lists no runs.",
        "failed": "**Verdict: float32.** {failed} of {total} bf16 runs fell outside the {percent} prediction "
                  "interval of their cell's float32 seeds: {names}. bf16 is not accepted; every campaign run "
                  "trains in float32.",
        "open": "**Verdict: float32 for now.** {judged} of {total} bf16 fidelity runs have finished{so_far}; "
                "bf16 is accepted only when all have.",
        "accepted": "**Verdict: bfloat16 accepted.** All {total} bf16 runs landed inside the {percent} prediction "
                    "interval of their cell's float32 seeds, so the 20-epoch campaign may train in bf16 autocast, "
                    "both sides of every pair in the same precision.",
    },
    "setting": {
        "empty": "The fidelity test of {subject} lists no runs.",
        "failed": "**Verdict: not accepted.** {failed} of {total} runs with {subject} fell outside the {percent} "
                  "prediction interval of their cell's float32 seeds: {names}. The campaign's runs that use it "
                  "wait; give them the default setting instead.",
        "open": "**Verdict: not yet.** {judged} of {total} fidelity runs with {subject} have finished{so_far}; "
                "the campaign's runs that use it wait until all have.",
        "accepted": "**Verdict: accepted.** All {total} runs with {subject} landed inside the {percent} prediction "
                    "interval of their cell's float32 seeds, so the campaign's runs may use it.",
    },
}


def fidelity_verdict(table: pd.DataFrame, level: float = FIDELITY_LEVEL,
                     test: str = "bf16") -> tuple[bool | None, str]:
    """``(accepted, sentence)`` from :func:`fidelity_table` of fidelity test ``test``: True when
    every run passed, False when one finished outside its interval (or diverged), None while the
    test is incomplete."""
    words = _VERDICT_WORDS["bf16" if test == "bf16" else "setting"]
    facts = {"percent": f"{100 * level:g} %", "subject": FIDELITY_TESTS[test].subject, "total": len(table)}
    if table.empty:
        return None, words["empty"].format(**facts)
    judged = table["inside"].dropna().astype(bool)
    failed = table[table["inside"].map(lambda inside: inside is not pd.NA and not inside)]
    if not failed.empty:
        names = ", ".join(f"{row.arch} {row.norm.upper()} ({row.dataset}: "
                          + ("diverged" if row.bf16_status == "diverged" else
                             f"{row.bf16_test:.2f} %, interval [{row.low:.2f}, {row.high:.2f}]") + ")"
                          for row in failed.itertuples())
        return False, words["failed"].format(failed=len(failed), names=names, **facts)
    if len(judged) < len(table):
        so_far = ", all inside their interval" if len(judged) else ""
        return None, words["open"].format(judged=len(judged), so_far=so_far, **facts)
    return True, words["accepted"].format(**facts)
