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
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_table1_figure_has_nine_panels_and_marks_missing_ours():
    long = report.table1_long(pd.DataFrame(columns=list(report.RUN_COLUMNS)), "cifar10")
    fig = plots.table1_figure(long, "CIFAR-10")
    assert len(fig.axes) == 9
    assert texts(fig).count("not run yet") == 3
    assert fig.legends, "BN/ND legend missing"


def test_table1_figure_draws_our_bars_when_present():
    runs = pd.DataFrame([{**{c: None for c in report.RUN_COLUMNS}, "run_id": "a",
                          "status": "completed", "table": 1, "dataset": "cifar10",
                          "arch": "vgg16", "norm": "nd", "epochs": 1, "seed": 0,
                          "synthetic": False, "test_acc": 70.0, "train_acc": 60.0}])
    fig = plots.table1_figure(report.table1_long(runs, "cifar10"))
    assert texts(fig).count("not run yet") == 2
    ours_1_epoch = fig.axes[6]
    widths = [p.get_width() for p in ours_1_epoch.patches if p.get_width() > 0]
    assert widths == [pytest.approx(70.0)]


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


def test_timing_ratio_figure_one_panel_per_dataset():
    fig = plots.timing_ratio_figure(report.reproduction_timing())
    assert len(fig.axes) == 2
