"""Tests of ndlib.plots: the figures draw from report frames and say when data is missing."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from ndlib import plots, report  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def texts(fig) -> list[str]:
    """Every text drawn in the panels, its line breaks (wrapping) read as spaces."""
    return [" ".join(t.get_text().split()) for ax in fig.axes for t in ax.texts]


def titles(fig) -> list[str]:
    return [ax.get_title() for ax in fig.axes]


def test_table1_figure_one_panel_per_budget_and_marks_missing_ours():
    long = report.table1_long(pd.DataFrame(columns=list(report.RUN_COLUMNS)), "cifar10")
    fig = plots.table1_figure(long, "CIFAR-10")
    assert len(fig.axes) == 3
    assert sum("ours: not run yet" in t for t in titles(fig)) == 3
    labels = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert "ours ND" in labels and "paper BN" in labels


def test_table1_figure_draws_our_point_when_present():
    runs = pd.DataFrame([{**{c: None for c in report.RUN_COLUMNS}, "run_id": "a",
                          "status": "completed", "table": 1, "dataset": "cifar10",
                          "arch": "vgg16", "norm": "nd", "epochs": 1, "seed": 0,
                          "synthetic": False, "test_acc": 70.0, "train_acc": 60.0}])
    fig = plots.table1_figure(report.table1_long(runs, "cifar10"))
    assert sum("ours: not run yet" in t for t in titles(fig)) == 2
    one_epoch = fig.axes[0]
    xs = [x for line in one_epoch.lines for x in line.get_xdata()]
    assert any(abs(x - 70.0) < 1e-9 for x in xs), "our 70 % point is not drawn"


def test_table1_figure_rejects_wrong_frame():
    with pytest.raises(ValueError, match="lacks"):
        plots.table1_figure(pd.DataFrame({"x": [1]}))


def test_reproduction_vs_paper_figure_with_and_without_ours():
    cmp = report.reproduction_vs_paper()
    fig = plots.reproduction_vs_paper_figure(cmp)
    assert "no completed real-data runs yet" in texts(fig)
    ours = pd.DataFrame({"paper_test": [74.18], "train_acc": [60.0], "test_acc": [70.0],
                         "epochs": [1]})
    fig = plots.reproduction_vs_paper_figure(cmp, ours)
    assert "no completed real-data runs yet" not in texts(fig)
    assert len(fig.axes[1].collections) >= 1
    # a run of a cell the paper does not have (BN at 2 epochs: no paper value, no colour for
    # its budget) is left out instead of failing the figure
    extra = pd.DataFrame({"paper_test": [float("nan")], "train_acc": [12.0], "test_acc": [13.0], "epochs": [2]})
    fig = plots.reproduction_vs_paper_figure(cmp, pd.concat([ours, extra], ignore_index=True))
    offsets = [tuple(xy) for c in fig.axes[1].collections for xy in c.get_offsets()]
    assert (74.18, 60.0) in offsets and (74.18, 70.0) in offsets and len(offsets) == 2
    fig = plots.reproduction_vs_paper_figure(cmp, extra)
    assert "no completed real-data run of a paper cell yet" in texts(fig)


def test_timing_ratio_figure_one_panel_per_dataset():
    fig = plots.timing_ratio_figure(report.reproduction_timing())
    assert len(fig.axes) == 2


def test_learning_curves_one_panel_per_cell_and_lines_per_run():
    histories = pd.DataFrame({
        "run_id": ["a", "a", "b", "b", "c"], "epoch": [1, 2, 1, 2, 1],
        "train_acc": [40.0, 60.0, 30.0, 50.0, 20.0], "test_acc": [45.0, 58.0, 35.0, 48.0, 25.0]})
    runs = pd.DataFrame({"run_id": ["a", "b", "c"], "dataset": ["cifar10"] * 3,
                         "arch": ["vgg16", "vgg16", "resnet18"], "norm": ["nd", "bn", "nd"],
                         "epochs": [2, 2, 1]})
    fig = plots.learning_curves_figure(histories, runs)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 2
    ys = {round(y, 1) for line in visible[0].lines for y in line.get_ydata()}
    assert {40.0, 60.0, 45.0, 58.0, 30.0, 50.0} <= ys
    with pytest.raises(ValueError, match="no history rows"):
        plots.learning_curves_figure(histories, runs.assign(run_id=["x", "y", "z"]))


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # inside seaborn's heatmap
def test_reproduction_difference_figure_annotates_every_cell():
    cmp = report.reproduction_vs_paper()
    fig = plots.reproduction_difference_figure(cmp)
    heat = fig.axes[0]
    values = [float(t.get_text()) for t in heat.texts]
    assert len(values) == len(cmp)
    assert sorted(values) == sorted(round(v, 1) + 0.0 for v in cmp["diff"])


def _runs(*cells) -> pd.DataFrame:
    """Completed CIFAR-10 one-epoch runs: cells of (arch, norm, [test accuracies by seed])."""
    rows = []
    for arch, norm, values in cells:
        for seed, value in enumerate(values):
            rows.append({**{c: None for c in report.RUN_COLUMNS},
                         "run_id": f"t1-cifar10-{arch}-{norm}-e1-s{seed}", "status": "completed",
                         "table": 1, "dataset": "cifar10", "arch": arch, "norm": norm,
                         "epochs": 1, "seed": seed, "synthetic": False, "test_acc": value,
                         "train_acc": value - 5.0, "train_time_s": 100.0})
    return pd.DataFrame(rows, columns=list(report.RUN_COLUMNS))


def _flag_rings(fig) -> int:
    return sum(1 for ax in fig.axes for line in ax.lines
               if line.get_markerfacecolor() == "none"
               and matplotlib.colors.same_color(line.get_markeredgecolor(), plots.FLAG_COLOUR))


def test_one_epoch_figure_draws_ours_marks_outside_and_not_run():
    runs = _runs(("vgg16", "bn", [10.0, 10.5, 11.0]), ("vgg16", "nd", [74.0, 80.0]))
    agreement = report.agreement_with_paper(report.table1(runs, "cifar10"))
    fig = plots.one_epoch_figure(agreement, "CIFAR-10")
    assert titles(fig) == ["BN", "ND"]
    xs = [x for line in fig.axes[0].lines for x in line.get_xdata()]
    assert any(abs(x - 10.5) < 1e-9 for x in xs), "our BN mean is not drawn"
    assert _flag_rings(fig) == 1  # BN: 3 seeds, paper outside; ND: 2 seeds, not tested
    assert texts(fig).count("ours: not run") == 2 * 9
    assert "n=3" in texts(fig) and "n=2" in texts(fig)
    wide = report.agreement_with_paper(report.table1(runs, "cifar10"), level=0.9999)
    assert _flag_rings(plots.one_epoch_figure(wide)) == 0


def test_one_epoch_figure_without_runs_and_with_a_wrong_frame():
    agreement = report.agreement_with_paper(report.table1(_runs(), "cifar10"))
    fig = plots.one_epoch_figure(agreement)
    assert texts(fig).count("ours: not run") == 2 * 10 and _flag_rings(fig) == 0
    with pytest.raises(ValueError, match="lacks"):
        plots.one_epoch_figure(pd.DataFrame({"x": [1]}))


def test_nd_gain_figure_one_panel_per_dataset_with_our_gain():
    runs = _runs(("vgg16", "bn", [10.0, 12.0]), ("vgg16", "nd", [70.0, 74.0]))
    gains = pd.concat([report.nd_vs_bn(report.table1(runs, d)) for d in ("cifar10", "cifar100")])
    fig = plots.nd_gain_figure(gains[gains["epochs"] == 1], {"cifar10": "CIFAR-10"})
    assert titles(fig) == ["CIFAR-10", "cifar100"]
    xs = [x for line in fig.axes[0].lines for x in line.get_xdata()]
    assert any(abs(x - 61.0) < 1e-9 for x in xs), "our gain of 61 points is not drawn"
    assert texts(fig).count("ours: not run") == 9 + 10
    with pytest.raises(ValueError, match="empty"):
        plots.nd_gain_figure(gains.iloc[0:0])


def test_bench_sweep_figure_marks_over_target_and_unmeasured_archs():
    sweep = pd.DataFrame({"arch": ["a", "b", "c"], "ratio_nd_bn": [1.2, 2.4, float("nan")],
                          "ratio_min": [1.1, 2.2, float("nan")], "ratio_max": [1.3, 2.6, float("nan")]})
    fig = plots.bench_sweep_figure(sweep, 1.5, 2.0, machine="cpu, 2 threads")
    ax = fig.axes[0]
    bars = [p for p in ax.patches]
    assert len(bars) == 2 and bars[1].get_facecolor() != bars[0].get_facecolor()  # b is over 2.0x
    assert any("not measured" in " ".join(t.get_text().split()) for t in ax.texts)
    plt.close(fig)
    with pytest.raises(ValueError, match="lacks the column"):
        plots.bench_sweep_figure(pd.DataFrame({"arch": ["a"]}), 1.5, 2.0)
