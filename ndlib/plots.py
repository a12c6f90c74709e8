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


def table1_figure(long: pd.DataFrame, title: str = "") -> Figure:
    """Accuracy per architecture, BN beside ND: one row of panels per source (paper,
    reproduction, ours), one column per epoch budget.  Bars are means; the black lines are
    one standard deviation over the reproduction's attempts or our seeds.

    ``long`` is :func:`ndlib.report.table1_long` for one dataset.
    """
    _require(long, ["paper_name", "norm", "epochs", "source", "accuracy"], "the Table 1 frame")
    if long.empty:
        raise ValueError("the Table 1 frame is empty; nothing to plot")
    data = long.assign(norm=long["norm"].str.upper())
    archs = list(dict.fromkeys(data.loc[data["source"] == "paper", "paper_name"]))
    fig, axes = plt.subplots(len(SOURCES), len(CIFAR_EPOCHS), figsize=(13, 12),
                             sharex=True, sharey=True, squeeze=False)
    for row, source in enumerate(SOURCES):
        for col, epochs in enumerate(CIFAR_EPOCHS):
            ax = axes[row][col]
            part = data[(data["source"] == source) & (data["epochs"] == epochs)]
            if part.empty:
                _say_empty(ax, "not run yet")
                ax.set_yticks(range(len(archs)), archs)
            else:
                sns.barplot(data=part, y="paper_name", x="accuracy", hue="norm", order=archs,
                            hue_order=list(NORM_PALETTE), palette=NORM_PALETTE,
                            errorbar="sd", err_kws={"linewidth": 1.2, "color": "black"},
                            ax=ax, legend=(row == 0 and col == len(CIFAR_EPOCHS) - 1))
            ax.set_title(f"{SOURCE_TITLES[source]}, {epochs} epoch{'s' if epochs > 1 else ''}",
                         fontsize=10)
            ax.set_ylabel("")
            ax.set_xlabel("accuracy (%)" if row == len(SOURCES) - 1 else "")
            ax.set_xlim(0, 100)
            ax.grid(axis="x", alpha=0.3)
    legend = axes[0][len(CIFAR_EPOCHS) - 1].get_legend()
    if legend is not None:
        handles, labels = legend.legend_handles, [t.get_text() for t in legend.get_texts()]
        legend.remove()
        fig.legend(handles, labels, loc="upper right", ncol=2, frameon=False)
    fig.suptitle(title or " ", x=0.02, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
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
