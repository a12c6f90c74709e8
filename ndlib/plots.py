"""Figures for the book, drawn with seaborn from the DataFrames of :mod:`ndlib.report`.

Every function takes a report DataFrame and returns a matplotlib ``Figure`` (the caller
shows or saves it); none reads files or computes results itself.  Panels that have no data
say so in the panel ("not run yet") instead of being silently blank.
"""
from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from ndlib.report import CIFAR_EPOCHS
from ndlib.report.frames import require_columns

__all__ = ["table1_figure", "reproduction_vs_paper_figure", "timing_ratio_figure",
           "learning_curves_figure", "reproduction_difference_figure", "one_epoch_figure",
           "nd_gain_figure", "bench_sweep_figure", "convergence_figure", "time_to_accuracy_figure", "SOURCES",
           "NORM_PALETTE"]

SOURCES: tuple[str, ...] = ("paper", "reproduction", "ours")
SOURCE_TITLES = {
    "paper": "paper (test accuracy)",
    "reproduction": "reproduction (as reported)",
    "ours": "ours (test accuracy)",
}
NORM_PALETTE = {"BN": "#4C72B0", "ND": "#DD8452"}


def _say_empty(ax: plt.Axes, text: str) -> None:
    """Why a panel is empty, in its middle, wrapped to stay inside a small panel."""
    ax.text(0.5, 0.5, textwrap.fill(text, 28), transform=ax.transAxes, ha="center", va="center",
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
    require_columns(long, ["paper_name", "norm", "epochs", "source", "accuracy"], "the Table 1 frame")
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
    fig.text(0.01, 0.003, "* the reproduction's reported value: training accuracy by our inference at 100 epochs "
             "and on CIFAR-100 at 20; on CIFAR-10 at 20 its split is not stated", fontsize=8, color="0.3")
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
    ``paper_test``), or None / empty when we have no runs.  Our runs of cells the paper does
    not have (no ``paper_test``: an extra variant, or BN at twice the epochs for the
    equal-cost comparison) have no place on the x axis and are left out.
    """
    require_columns(comparison, ["paper_test", "repro_mean", "epochs", "dataset"], "the comparison")
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
        ours = None
    else:
        require_columns(ours, ["paper_test", "train_acc", "test_acc", "epochs"], "our runs")
        ours = ours.dropna(subset=["paper_test"])
        if ours.empty:
            _say_empty(right, "no completed real-data run of a paper cell yet")
            ours = None
    if ours is not None:
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
    require_columns(repro_timing, ["dataset", "arch", "epochs", "ratio_nd_bn"], "the timing frame")
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
    batches (running accuracy over the epoch); circles mark test, crosses training values.  The
    gap between the two lines is what the reproduction's 20/100-epoch values leave out.

    ``histories`` is :func:`ndlib.records.load_histories`; ``runs`` the matching run rows
    (for dataset, arch, norm, epochs), e.g. the completed real-data runs.
    """
    require_columns(histories, ["run_id", "epoch", "train_acc", "test_acc"], "the histories")
    require_columns(runs, ["run_id", "dataset", "arch", "norm", "epochs"], "the runs")
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
    require_columns(comparison, ["dataset", "paper_name", "norm", "epochs", "diff"], "the comparison")
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


# Vertical offsets of the three sources within an architecture's row (paper on top).
_ROW_OFFSETS = {"paper": -0.25, "reproduction": 0.0, "ours": 0.25}
_SOURCE_MARKERS = {"paper": "o", "reproduction": "X", "ours": "D"}
FLAG_COLOUR = "#C44E52"


def _source_rows(ax: plt.Axes, names: list[str], values: dict[str, tuple], colours: dict[str, object],
                 labels: dict[str, str]) -> None:
    """Draw, per source, its points at the architecture rows (offset within a row) with a
    horizontal error bar; ``values[source] = (means, errors)`` aligned with ``names``."""
    rows = range(len(names))
    for source, (means, errors) in values.items():
        ys = [row + _ROW_OFFSETS[source] for row in rows]
        ax.errorbar(means, ys, xerr=errors, fmt=_SOURCE_MARKERS[source], color=colours[source],
                    markersize=6, elinewidth=1.3, capsize=2.5, linestyle="none",
                    label=labels[source])
    ax.set_yticks(list(rows), names)
    ax.set_ylim(len(names) - 0.5, -0.5)
    for boundary in range(len(names) - 1):
        ax.axhline(boundary + 0.5, color="0.9", linewidth=0.8)
    ax.grid(axis="x", alpha=0.3)


def _say_not_run(ax: plt.Axes, y: float) -> None:
    """"ours: not run" at the left edge of a panel, at row position ``y``."""
    ax.text(0.02, y, "ours: not run", va="center", ha="left", fontsize=7, color="0.45",
            transform=ax.get_yaxis_transform())


def one_epoch_figure(agreement: pd.DataFrame, title: str = "", level: float = 0.95) -> Figure:
    """One dataset at one budget: per architecture, the paper's value (circle), the
    reproduction's mean ± one sd over its attempts (cross) and our test accuracy, mean ± one
    sd over our seeds (diamond, with ``n``), in a BN panel and an ND panel.  A red ring marks
    a cell whose paper value lies outside the ``level`` prediction interval of our seeds
    (column ``ours_outside``, tested only with enough seeds); a row without our runs says
    "not run".

    ``agreement`` is :func:`ndlib.report.agreement_with_paper` for one dataset.
    """
    require_columns(agreement, ["paper_name", "norm", "paper_test", "repro_mean", "repro_std",
                         "ours_test_mean", "ours_test_std", "ours_n", "ours_outside"],
             "the agreement frame")
    if agreement.empty:
        raise ValueError("the agreement frame is empty; nothing to plot")
    names = list(dict.fromkeys(agreement["paper_name"]))
    fig, axes = plt.subplots(1, len(NORM_PALETTE), figsize=(11, 0.55 * len(names) + 2.2),
                             sharey=True, sharex=True, squeeze=False)
    top = float(pd.concat([agreement["paper_test"],
                           agreement["repro_mean"] + agreement["repro_std"].fillna(0),
                           agreement["ours_test_mean"] + agreement["ours_test_std"].fillna(0)]).max())
    for ax, norm in zip(axes[0], NORM_PALETTE):
        part = agreement[agreement["norm"] == norm.lower()].set_index("paper_name").reindex(names)
        shades = sns.light_palette(NORM_PALETTE[norm], 5)[2:]
        colours = dict(zip(SOURCES, shades))
        _source_rows(ax, names, {
            "paper": (part["paper_test"], None),
            "reproduction": (part["repro_mean"], part["repro_std"]),
            "ours": (part["ours_test_mean"], part["ours_test_std"]),
        }, colours, {"paper": "paper (test)", "reproduction": "reproduction (mean ± sd)",
                     "ours": "ours (test, mean ± sd)"})
        for row, (name, cell) in enumerate(part.iterrows()):
            y = row + _ROW_OFFSETS["ours"]
            if cell["ours_n"] == 0 or pd.isna(cell["ours_test_mean"]):
                _say_not_run(ax, y)
                continue
            ax.annotate(f"n={int(cell['ours_n'])}", (cell["ours_test_mean"], y), xytext=(7, 0),
                        textcoords="offset points", va="center", fontsize=7, color="0.3")
            if pd.notna(cell["ours_outside"]) and bool(cell["ours_outside"]):
                ax.plot([cell["ours_test_mean"]], [y], marker="o", markersize=13,
                        markerfacecolor="none", markeredgecolor=FLAG_COLOUR, markeredgewidth=1.6,
                        linestyle="none")
        ax.set_title(norm, fontsize=11)
        ax.set_xlabel("test accuracy (%)")
        ax.set_xlim(0, min(101.0, 5.0 * (top // 5.0) + 10.0))
    # The legend shows the shapes in grey: the colour only says BN (blue) or ND (orange).
    handles = [plt.Line2D([], [], marker=_SOURCE_MARKERS[source], color="0.4", linestyle="none",
                          markersize=7) for source in SOURCES]
    labels = ["paper (test)", "reproduction (mean ± sd)", "ours (test, mean ± sd, n seeds)"]
    handles.append(plt.Line2D([], [], marker="o", markersize=11, markerfacecolor="none",
                              markeredgecolor=FLAG_COLOUR, markeredgewidth=1.6, linestyle="none"))
    labels.append(f"paper outside our {100 * level:g} % prediction interval")
    fig.legend(handles, labels, loc="upper right", ncol=4, frameon=False, fontsize=8,
               bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(title, x=0.01, y=0.99, ha="left", fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return fig


def nd_gain_figure(gains: pd.DataFrame, titles: dict[str, str] | None = None) -> Figure:
    """ND minus BN (points) per architecture, one panel per dataset: the paper's gain
    (circle), the reproduction's (cross, ± one standard error over its attempts) and ours
    (diamond, ± one standard error over our seeds where both sides have two or more; no bar
    with one seed).  A row without our runs on both sides says "not run".  The dashed line is
    no gain.

    ``gains`` is :func:`ndlib.report.nd_vs_bn` rows of one budget (with ``paper_name``).
    """
    require_columns(gains, ["dataset", "paper_name", "paper_gain", "repro_gain", "repro_gain_se",
                     "ours_gain", "ours_gain_se"], "the gains frame")
    if gains.empty:
        raise ValueError("the gains frame is empty; nothing to plot")
    datasets = list(dict.fromkeys(gains["dataset"]))
    names = list(dict.fromkeys(gains["paper_name"]))
    colours = dict(zip(SOURCES, sns.color_palette("dark", 3)))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 0.5 * len(names) + 2),
                             sharey=True, squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        part = gains[gains["dataset"] == dataset].set_index("paper_name").reindex(names)
        _source_rows(ax, names, {
            "paper": (part["paper_gain"], None),
            "reproduction": (part["repro_gain"], part["repro_gain_se"]),
            "ours": (part["ours_gain"], part["ours_gain_se"]),
        }, colours, {"paper": "paper", "reproduction": "reproduction (± se)",
                     "ours": "ours (± se)"})
        for row, value in enumerate(part["ours_gain"]):
            if pd.isna(value):
                _say_not_run(ax, row + _ROW_OFFSETS["ours"])
        ax.axvline(0.0, color="0.4", linestyle="--", linewidth=1)
        ax.set_title((titles or {}).get(dataset, dataset), fontsize=11)
        ax.set_xlabel("ND − BN (points)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=3, frameon=False, fontsize=8,
               bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    return fig


def bench_sweep_figure(sweep: pd.DataFrame, median_target: float, max_target: float, machine: str = "") -> Figure:
    """Our benchmarked ND / BN step-time ratio per architecture (median over rounds, with the
    range of the per-round ratios), against the targets: dotted = the median target, dashed =
    the largest allowed; architectures without a measurement say so."""
    require_columns(sweep, ["arch", "ratio_nd_bn", "ratio_min", "ratio_max"], "the benchmark sweep")
    fig, ax = plt.subplots(figsize=(7, 0.45 * max(len(sweep), 2) + 1.2))
    y = list(range(len(sweep)))
    for i, row in enumerate(sweep.itertuples()):
        if pd.isna(row.ratio_nd_bn):
            ax.text(1.0, i, "  not measured", va="center", color="0.35", fontsize=9)
            continue
        over = row.ratio_nd_bn > max_target
        ax.barh(i, row.ratio_nd_bn, color="#C44E52" if over else NORM_PALETTE["ND"], alpha=0.85)
        if pd.notna(row.ratio_min) and pd.notna(row.ratio_max):
            ax.plot([row.ratio_min, row.ratio_max], [i, i], color="0.2", linewidth=1.2)
    ax.set_yticks(y, sweep["arch"].tolist())
    ax.invert_yaxis()
    ax.axvline(1.0, color="0.4", linewidth=1)
    ax.axvline(median_target, color="0.3", linestyle=":", linewidth=1.2, label=f"median target {median_target:g}x")
    ax.axvline(max_target, color="0.3", linestyle="--", linewidth=1.2, label=f"largest allowed {max_target:g}x")
    ax.set_xlabel("training step time ND / BN (exact layer)")
    ax.set_title(f"ND / BN per architecture{': ' + machine if machine else ''}", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def _cell_panels(curves: pd.DataFrame, columns: int = 4) -> tuple[Figure, list[tuple[str, str]], object]:
    """A grid of panels, one per (dataset, arch) of ``curves`` in its order."""
    cells = list(dict.fromkeys(zip(curves["dataset"], curves["arch"])))
    columns = max(1, min(columns, len(cells)))
    rows = -(-len(cells) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(max(3.9 * columns, 7.0), 3.0 * rows + 0.8), squeeze=False)
    for ax in list(axes.flat)[len(cells):]:
        ax.set_visible(False)
    return fig, cells, axes


def _panel_title(part: pd.DataFrame, dataset_titles: dict[str, str]) -> str:
    name = part["paper_name"].iloc[0]
    title = f"{name}, {dataset_titles.get(part['dataset'].iloc[0], part['dataset'].iloc[0])}"
    states = []
    for norm in ("bn", "nd"):
        side = part[part["norm"] == norm]
        if side.empty:
            states.append(f"{norm.upper()} not run")
        elif bool(side["in_progress"].any()):
            states.append(f"{norm.upper()} {int(side['epoch'].max())}/{int(side['epochs'].iloc[0])}")
    return title + (f"\nin progress: {', '.join(states)}" if states else "")


def convergence_figure(curves: pd.DataFrame, paper: pd.DataFrame, dataset_titles: dict[str, str],
                       epochs: int = 20) -> Figure:
    """Test accuracy per epoch of our ``epochs``-epoch runs (seed 0), BN blue and ND orange, one
    panel per architecture and dataset; dashed lines: the paper's test accuracy after ``epochs``
    epochs in the same colours.  A run still training ends at its last finished epoch (the panel
    title says so).  ``curves``: :func:`ndlib.convergence.campaign_curves`; ``paper``: rows of
    ``dataset, arch, norm, paper_test`` at ``epochs``."""
    require_columns(curves, ["dataset", "arch", "paper_name", "norm", "seed", "epoch", "test_acc", "in_progress"],
             "the curves")
    data = curves[curves["seed"] == 0]
    if data.empty:
        raise ValueError(f"no {epochs}-epoch run has finished an epoch yet; nothing to plot")
    fig, cells, axes = _cell_panels(data)
    for ax, (dataset, arch) in zip(axes.flat, cells):
        part = data[(data["dataset"] == dataset) & (data["arch"] == arch)]
        for norm, colour in (("bn", NORM_PALETTE["BN"]), ("nd", NORM_PALETTE["ND"])):
            side = part[part["norm"] == norm]
            if not side.empty:
                ax.plot(side["epoch"], side["test_acc"], marker="o", markersize=3, color=colour,
                        label=f"ours {norm.upper()} (test)")
            value = paper[(paper["dataset"] == dataset) & (paper["arch"] == arch) & (paper["norm"] == norm)]
            if not value.empty:
                ax.axhline(float(value["paper_test"].iloc[0]), color=colour, linestyle="--", linewidth=1,
                           label=f"paper {norm.upper()}, {epochs} epochs")
        ax.set_xlim(0.5, epochs + 0.5)
        ax.set_xticks(range(0, epochs + 1, 5))
        ax.set_xlabel("epoch")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.set_title(_panel_title(part, dataset_titles), fontsize=9)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=2 if len(cells) < 3 else 4, frameon=False, fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return fig


def time_to_accuracy_figure(curves: pd.DataFrame, pairs: pd.DataFrame, dataset_titles: dict[str, str]) -> Figure:
    """Test accuracy against training hours (evaluation excluded), BN blue and ND orange, one panel
    per architecture and dataset whose BN and ND runs trained on one machine with one thread count
    (``pairs``: :func:`ndlib.convergence.same_machine_pairs`); other panels say why they are empty."""
    require_columns(curves, ["dataset", "arch", "paper_name", "norm", "seed", "elapsed_s", "test_acc", "in_progress"],
             "the curves")
    data = curves[curves["seed"] == 0]
    if data.empty:
        raise ValueError("no 20-epoch run has finished an epoch yet; nothing to plot")
    comparable = {(row.dataset, row.arch): row for row in pairs.itertuples()}
    fig, cells, axes = _cell_panels(data)
    for ax, (dataset, arch) in zip(axes.flat, cells):
        part = data[(data["dataset"] == dataset) & (data["arch"] == arch)]
        pair = comparable.get((dataset, arch))
        ax.set_title(_panel_title(part, dataset_titles), fontsize=9)
        ax.set_xlabel("training time (hours)")
        ax.set_ylabel("test accuracy (%)")
        if pair is None or not pair.comparable:
            _say_empty(ax, pair.reason if pair is not None else "not run")
            continue
        for norm, colour in (("bn", NORM_PALETTE["BN"]), ("nd", NORM_PALETTE["ND"])):
            side = part[part["norm"] == norm]
            ax.plot(side["elapsed_s"] / 3600.0, side["test_acc"], marker="o", markersize=3, color=colour,
                    label=f"ours {norm.upper()} (test)")
        # equal training time: where the side that trained less stops (convergence.equal_time reads both there)
        ax.axvline(part.groupby("norm")["elapsed_s"].max().min() / 3600.0, color="grey", linestyle=":", linewidth=1)
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], color=NORM_PALETTE[n], marker="o", markersize=3, label=f"ours {n} (test)")
               for n in ("BN", "ND")]
    handles.append(plt.Line2D([], [], color="grey", linestyle=":", linewidth=1, label="equal training time"))
    fig.legend(handles=handles, loc="upper center", ncol=3, frameon=False, fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return fig
