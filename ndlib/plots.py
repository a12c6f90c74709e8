"""Figures for the book, drawn with seaborn from the DataFrames of :mod:`ndlib.report`.

Every function takes a report DataFrame and returns a matplotlib ``Figure`` (the caller
shows or saves it); none reads files or computes results itself.  Panels that have no data
say so in the panel ("not run yet") instead of being silently blank.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from ndlib.report import CIFAR_EPOCHS

__all__ = ["table1_figure", "reproduction_vs_paper_figure", "timing_ratio_figure",
           "learning_curves_figure", "reproduction_difference_figure",
           "SOURCES", "NORM_PALETTE"]

SOURCES: tuple[str, ...] = ("paper", "reproduction", "ours")
SOURCE_TITLES = {
    "paper": "paper (test accuracy)",
    "reproduction": "reproduction (as reported)",
    "ours": "ours (test accuracy)",
}
NORM_PALETTE = {"BN": "#4C72B0", "ND": "#DD8452"}


def _require(df: pd.DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks the column(s) {missing}; build it with ndlib.report")


def _say_empty(ax: plt.Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center",
            fontsize=11, color="0.35")


def _series_styles() -> tuple[list[str], dict[str, tuple], dict[str, str]]:
    """Series "<source> <NORM>" in plotting order, their colours (blue shades for BN,
    orange shades for ND, darker = ours) and markers (one per source)."""
    shades = {"BN": sns.light_palette(NORM_PALETTE["BN"], 5)[2:],
              "ND": sns.light_palette(NORM_PALETTE["ND"], 5)[2:]}
    markers = {"paper": "o", "reproduction": "X", "ours": "D"}
    order, colours, marker_of = [], {}, {}
    for norm in NORM_PALETTE:
        for shade, source in zip(shades[norm], SOURCES):
            name = f"{source} {norm}"
            order.append(name)
            colours[name] = shade
            marker_of[name] = markers[source]
    return order, colours, marker_of


def table1_figure(long: pd.DataFrame, title: str = "") -> Figure:
    """Accuracy per architecture, one panel per epoch budget: for BN (blue) and ND (orange)
    the paper's test accuracy (circle), the reproduction's reported value (cross) and our test
    accuracy (diamond).  Points are means; the lines through them are one standard deviation
    over the reproduction's attempts or our seeds.  A panel without our runs says so.

    ``long`` is :func:`ndlib.report.table1_long` for one dataset.
    """
    _require(long, ["paper_name", "norm", "epochs", "source", "accuracy"], "the Table 1 frame")
    if long.empty:
        raise ValueError("the Table 1 frame is empty; nothing to plot")
    data = long.assign(series=long["source"] + " " + long["norm"].str.upper())
    archs = list(dict.fromkeys(data.loc[data["source"] == "paper", "paper_name"]))
    order, colours, markers = _series_styles()
    fig, axes = plt.subplots(len(CIFAR_EPOCHS), 1, figsize=(8, 4.2 * len(CIFAR_EPOCHS)),
                             squeeze=False)
    for ax, epochs in zip(axes[:, 0], CIFAR_EPOCHS):
        part = data[data["epochs"] == epochs]
        present = [name for name in order if name in set(part["series"])]
        sns.pointplot(data=part, y="paper_name", x="accuracy", hue="series", order=archs,
                      hue_order=present, palette=colours,
                      markers=[markers[name] for name in present], linestyles="none",
                      dodge=0.6, errorbar="sd", err_kws={"linewidth": 1.2}, markersize=6,
                      ax=ax, legend=False)
        missing = "" if (part["source"] == "ours").any() else " (ours: not run yet)"
        ax.set_title(f"{epochs} epoch{'s' if epochs > 1 else ''}{missing}", fontsize=11)
        ax.set_ylabel("")
        ax.set_xlabel("accuracy (%)")
        # Each budget on its own scale (the 20/100-epoch values crowd near the top), always
        # reaching past 100 so that values at 99.9 % stay visible.
        low = part["accuracy"].min() if not part.empty else 0.0
        ax.set_xlim(max(0.0, 5.0 * (low // 5.0) - 5.0), 101)
        ax.grid(axis="x", alpha=0.3)
        for boundary in range(len(archs) - 1):
            ax.axhline(boundary + 0.5, color="0.9", linewidth=0.8)
    handles = [plt.Line2D([], [], color=colours[name], marker=markers[name], linestyle="none",
                          markersize=7, label=name.replace("reproduction", "reproduction*"))
               for source in SOURCES for name in order if name.startswith(source)]
    fig.legend(handles=handles, loc="upper center", ncol=3, frameon=False, fontsize=9,
               bbox_to_anchor=(0.5, 1.0))
    fig.suptitle(title, x=0.01, y=0.995, ha="left", fontsize=12)
    fig.text(0.01, 0.003, "* the reproduction's reported value: training accuracy at 20 and "
             "100 epochs", fontsize=8, color="0.3")
    fig.tight_layout(rect=(0, 0.01, 1, 0.955))
    return fig


def reproduction_vs_paper_figure(comparison: pd.DataFrame, ours: pd.DataFrame | None = None
                                 ) -> Figure:
    """Left: the reproduction's reported value against the paper's test accuracy, one point
    per Table 1 cell, coloured by epoch budget; on the diagonal they agree.  Right: our own
    final-epoch training and test accuracy per run against the paper's test accuracy for the
    same cell -- what a reported value looks like when it is one or the other.

    ``comparison`` is :func:`ndlib.report.reproduction_vs_paper`; ``ours`` is
    :func:`ndlib.report.our_train_vs_test` merged with the paper's value (column
    ``paper_test``), or None / empty when we have no runs.
    """
    _require(comparison, ["paper_test", "repro_mean", "epochs", "dataset"], "the comparison")
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5.5))
    palette = dict(zip(CIFAR_EPOCHS, sns.color_palette("viridis", len(CIFAR_EPOCHS))))
    sns.scatterplot(data=comparison, x="paper_test", y="repro_mean", hue="epochs",
                    style="dataset", palette=palette, s=55, ax=left)
    for ax in (left, right):
        ax.plot([0, 100], [0, 100], color="0.5", linestyle="--", linewidth=1)
        ax.set_xlim(0, 101)
        ax.set_ylim(0, 101)
        ax.set_xlabel("paper: test accuracy (%)")
        ax.grid(alpha=0.3)
    left.set_ylabel("reproduction: reported accuracy (%)")
    left.set_title("Reproduction vs paper, per Table 1 cell")
    sns.move_legend(left, "lower right", fontsize=8, title_fontsize=8)
    right.set_title("Ours: training and test accuracy vs paper")
    right.set_ylabel("ours, final epoch (%)")
    if ours is None or ours.empty:
        _say_empty(right, "no completed real-data runs yet")
    else:
        _require(ours, ["paper_test", "train_acc", "test_acc", "epochs"], "our runs")
        melted = ours.melt(id_vars=["paper_test", "epochs"], value_vars=["train_acc", "test_acc"],
                           var_name="measured on", value_name="accuracy")
        melted["measured on"] = melted["measured on"].map(
            {"train_acc": "training set", "test_acc": "test set"})
        sns.scatterplot(data=melted, x="paper_test", y="accuracy", hue="epochs",
                        style="measured on", palette=palette, s=60, ax=right)
        sns.move_legend(right, "lower right", fontsize=8, title_fontsize=8)
    fig.tight_layout()
    return fig


def timing_ratio_figure(repro_timing: pd.DataFrame) -> Figure:
    """The reproduction's training-time ratio ND / BN per architecture (V100), one bar per
    epoch budget, one panel per dataset; the dashed line is parity."""
    _require(repro_timing, ["dataset", "arch", "epochs", "ratio_nd_bn"], "the timing frame")
    datasets = list(dict.fromkeys(repro_timing["dataset"]))
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 5), sharey=True,
                             squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        part = repro_timing[repro_timing["dataset"] == dataset]
        sns.barplot(data=part, y="arch", x="ratio_nd_bn", hue="epochs", palette="viridis",
                    ax=ax)
        ax.axvline(1.0, color="0.4", linestyle="--", linewidth=1)
        ax.set_xlabel("training time ND / BN")
        ax.set_ylabel("")
        ax.set_title(f"{dataset}: reproduction, Tesla V100")
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def learning_curves_figure(histories: pd.DataFrame, runs: pd.DataFrame) -> Figure:
    """Training and test accuracy per epoch for each of our runs, one panel per
    (dataset, arch, epoch budget): BN blue, ND orange; solid = test set, dashed = training
    batches (running accuracy over the epoch); circles mark test, crosses training values.  The gap between the two lines is what the
    reproduction's 20/100-epoch values leave out.

    ``histories`` is :func:`ndlib.records.load_histories`; ``runs`` the matching run rows
    (for dataset, arch, norm, epochs), e.g. the completed real-data runs.
    """
    _require(histories, ["run_id", "epoch", "train_acc", "test_acc"], "the histories")
    _require(runs, ["run_id", "dataset", "arch", "norm", "epochs"], "the runs")
    data = histories.merge(runs[["run_id", "dataset", "arch", "norm", "epochs"]], on="run_id")
    if data.empty:
        raise ValueError("no history rows for these runs; nothing to plot")
    data = data.assign(panel=data["dataset"] + " " + data["arch"] + ", "
                       + data["epochs"].astype(int).astype(str) + " epoch(s)",
                       norm=data["norm"].str.upper())
    long = data.melt(id_vars=["run_id", "panel", "norm", "epoch"],
                     value_vars=["train_acc", "test_acc"], var_name="measured on",
                     value_name="accuracy")
    long["measured on"] = long["measured on"].map({"train_acc": "training batches",
                                                   "test_acc": "test set"})
    panels = list(dict.fromkeys(long["panel"]))
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5.6 * columns, 3.4 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        sns.lineplot(data=long[long["panel"] == panel], x="epoch", y="accuracy", hue="norm",
                     style="measured on", units="run_id", estimator=None,
                     markers={"test set": "o", "training batches": "X"},
                     palette=NORM_PALETTE, hue_order=[n for n in NORM_PALETTE],
                     style_order=["test set", "training batches"], ax=ax)
        last_epoch = int(long.loc[long["panel"] == panel, "epoch"].max())
        ax.set_xticks(range(1, last_epoch + 1, max(1, last_epoch // 10)))
        ax.set_xlim(0.5, last_epoch + 0.5)
        ax.set_title(panel, fontsize=10)
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def reproduction_difference_figure(comparison: pd.DataFrame) -> Figure:
    """Reproduction minus paper (points) for every Table 1 cell as a heatmap: rows are
    architecture and BN/ND, columns dataset and epoch budget; red = the reproduction above
    the paper's test accuracy.  ``comparison`` is :func:`ndlib.report.reproduction_vs_paper`.
    """
    _require(comparison, ["dataset", "paper_name", "norm", "epochs", "diff"], "the comparison")
    data = comparison.assign(row=comparison["paper_name"] + " " + comparison["norm"].str.upper(),
                             column=comparison["dataset"].str.upper().str.replace("CIFAR", "CIFAR-")
                             + "\n" + comparison["epochs"].astype(int).astype(str) + " ep")
    rows = list(dict.fromkeys(data["row"]))
    columns = list(dict.fromkeys(data.sort_values(["dataset", "epochs"])["column"]))
    grid = data.pivot(index="row", columns="column", values="diff").reindex(index=rows,
                                                                          columns=columns)
    limit = float(abs(grid).max().max())
    fig, ax = plt.subplots(figsize=(8, 8.5))
    sns.heatmap(grid, annot=True, fmt=".1f", cmap="RdBu_r", center=0.0, vmin=-limit, vmax=limit,
                linewidths=0.5, cbar_kws={"label": "reproduction − paper (points)"},
                annot_kws={"fontsize": 8}, ax=ax)
    ax.set_xlabel("")
    ax.set_ylabel("")
    ax.tick_params(axis="x", rotation=0, labelsize=9)
    ax.tick_params(axis="y", labelsize=9)
    fig.tight_layout()
    return fig
