"""Table 2 (ImageNet): the paper's and the reproduction's values, our runs' status, ND's gains
and what the table costs."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ndlib import published
from ndlib.report.selection import in_table, split_synthetic


def table2_published() -> pd.DataFrame:
    """Table 2: per (arch, method) the paper's and the reproduction's top-1/top-5 (%), and
    the reproduction's 90-epoch wall time (hours, one A100)."""
    t2 = published.paper_table2()
    wide = t2.pivot_table(index=["arch", "method"], columns="source",
                          values=["top1_pct", "top5_pct"])
    wide.columns = [f"{src}_{metric.replace('_pct', '')}" for metric, src in wide.columns]
    wide = wide.rename(columns={"original_top1": "paper_top1", "original_top5": "paper_top5",
                                "re_top1": "repro_top1", "re_top5": "repro_top5"}).reset_index()
    times = published.reproduction_imagenet_times()[["arch", "method", "wall_time_h"]]
    wide = wide.merge(times.rename(columns={"wall_time_h": "repro_wall_time_h"}),
                      on=["arch", "method"], how="left")
    order = list(dict.fromkeys(t2["arch"]))
    wide["arch"] = pd.Categorical(wide["arch"], categories=order, ordered=True)
    wide = wide.sort_values(["arch", "method"]).reset_index(drop=True)
    wide["arch"] = wide["arch"].astype(str)
    return wide[["arch", "method", "paper_top1", "paper_top5", "repro_top1", "repro_top5",
                 "repro_wall_time_h"]]


def table2_status(runs: pd.DataFrame) -> pd.DataFrame:
    """Our Table 2 runs per (arch, norm): completed count and top-1/top-5 (empty cells = not run)."""
    published_cells = table2_published()[["arch", "method"]].copy()
    published_cells["norm"] = published_cells["method"].str.lower()
    published_cells["model"] = published_cells["arch"] + "_imagenet"
    cols = ["arch", "method", "ours_n", "ours_top1", "ours_top5", "ours_status"]
    if runs.empty:
        out = published_cells.assign(ours_n=0, ours_top1=np.nan, ours_top5=np.nan,
                                     ours_status="not run")
        return out[cols]
    real, _ = split_synthetic(runs)
    done = real[in_table(real, 2) & (real["status"] == "completed")]
    agg = (done.groupby(["arch", "norm"])
           .agg(ours_n=("seed", "nunique"), ours_top1=("test_acc", "mean"),
                ours_top5=("test_top5", "mean")).reset_index()
           .rename(columns={"arch": "model"}))
    out = published_cells.merge(agg, on=["model", "norm"], how="left")
    out["ours_n"] = out["ours_n"].fillna(0).astype(int)
    out["ours_status"] = np.where(out["ours_n"] > 0, "done", "not run")
    return out[cols]


def table2_gains() -> pd.DataFrame:
    """ND minus BN (points) per architecture in Table 2, for the paper and the reproduction:
    ``arch, paper_top1_gain, repro_top1_gain, paper_top5_gain, repro_top5_gain``."""
    t2 = table2_published()
    t2 = t2[t2["method"].isin(["BN", "ND"])].set_index(["arch", "method"])
    rows = []
    for arch in dict.fromkeys(t2.index.get_level_values("arch")):
        nd, bn = t2.loc[(arch, "ND")], t2.loc[(arch, "BN")]
        rows.append({"arch": arch, **{f"{col}_gain": nd[col] - bn[col]
                                      for col in ("paper_top1", "repro_top1", "paper_top5",
                                                  "repro_top5")}})
    return pd.DataFrame(rows)


def imagenet_compute() -> dict[str, float]:
    """What Table 2 costs, from the reproduction's single-A100 wall times (hours):
    the total for all seven runs, the total in GPU-days, and ND/BN ratios per arch."""
    times = published.reproduction_imagenet_times()
    pivot = times.pivot_table(index="arch", columns="method", values="wall_time_h")
    out = {"total_h": float(times["wall_time_h"].sum())}
    out["total_gpu_days"] = out["total_h"] / 24.0
    for arch, row in pivot.iterrows():
        out[f"ratio_nd_bn_{arch}"] = float(row["ND"] / row["BN"])
    return out
