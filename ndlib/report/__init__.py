"""Report tables for the book: our run records beside the published numbers, as DataFrames.

Every function here takes DataFrames (our records, our benchmarks) and returns a DataFrame or
text computed from them, so that the book's chapters stay thin and every number they show is
computed, never typed.  Sources:

* our runs: :func:`load_runs` / :func:`load_histories` (:mod:`ndlib.records`: one JSON record
  per run in ``results/runs/``);
* our benchmarks: :func:`load_bench` (:mod:`ndlib.bench`, ``results/bench/``);
* the paper's and the reproduction's numbers: :mod:`ndlib.published`.

One module per concern; ``from ndlib import report`` gives every public name below.

=========================  ==================================================================
``constants``              the paper's grid, the compared norms, dataset names and classes
``frames``                 column checks and missing values (shared with :mod:`ndlib.plots`)
``loading``                records, histories, benchmarks and record details
``selection``              which runs count: real data, the paper's settings, one timing setting
``stats``                  mean ± sd, differences with standard errors, prediction intervals
``commands``               the shell commands the chapters print
``table1`` / ``table2``    the paper's tables beside the reproduction and our runs
``chosen_cells``           our runs for cells of our choosing (EfficientNet variants, equal cost)
``record_checks``          history consistency, synthetic smoke runs, channel statistics
``timing``                 training times and every ND/BN cost ratio we measured
``benchmarks``             step-time benchmarks: sweep, targets, stages, FLOP floor
``layouts``                ndlib against the public algorithm in one memory layout
``refresh``                the accuracy/speed trade-off of ``refresh_every``
``prose``                  generated discussion (Markdown sentences)
=========================  ==================================================================

Two rules are enforced here rather than in the chapters:

* **Synthetic-data runs never enter a results table** (:func:`split_synthetic`); the chapters
  list them separately, labelled "synthetic smoke run" (:func:`synthetic_summary`).
* **Only completed runs give accuracies.**  Diverged, interrupted and failed runs are counted
  per cell (column ``ours_other_runs``) so that a reader sees them, but they give no accuracy.

Statistics over seeds (:mod:`ndlib.report.stats`): mean and sample standard deviation
(``ddof=1``; undefined for one seed), with ``n`` the number of distinct seeds.  All accuracies
are in percent.
"""
from __future__ import annotations

from ndlib.bench import BENCH_COLUMNS
from ndlib.config import BF16_OPTIONS
from ndlib.records import HISTORY_COLUMNS, RUN_COLUMNS
from ndlib.report.benchmarks import (
    FLOOR_MODEL_TOLERANCE,
    FLOOR_MULTIPLE_TARGET,
    MAX_TARGET,
    MEDIAN_TARGET,
    RATIO_TARGETS,
    bench_summary,
    bench_sweep,
    exact_floor,
    floor_sentences,
    floor_target_reasons,
    floor_target_sentences,
    floor_targets,
    flop_overhead,
    memory_setting_comparison,
    memory_setting_sentences,
    ndlib_over_public,
    precision_comparison,
    precision_sentences,
    setting_comparison,
    stage_breakdown,
    sweep_verdict,
)
from ndlib.report.chosen_cells import (
    EFFICIENTNET_VARIANTS,
    EQUAL_COST_CELLS,
    compare_cells,
    efficientnet_variants,
    equal_cost,
)
from ndlib.report.commands import (
    budget_cost,
    budget_cost_sentence,
    format_command,
    grid_command,
    missing_commands,
    table2_commands,
)
from ndlib.report.constants import (
    CIFAR_EPOCHS,
    COMPARED_NORMS,
    DATASET_TITLES,
    DEFAULT_SEEDS,
    NUM_CLASSES,
    REPRODUCTION_DEVICE,
)
from ndlib.report.layouts import layout_comparison, layout_sentences
from ndlib.report.loading import (
    load_average_text,
    load_bench,
    load_histories,
    load_record_details,
    load_runs,
    record_details,
)
from ndlib.report.prose import (
    efficientnet_sentences,
    equal_cost_verdicts,
    first_layer_descriptions,
    gain_sentences,
    one_epoch_discussion,
)
from ndlib.report.record_checks import (
    channel_statistics,
    check_history_consistency,
    final_epoch_from_history,
    synthetic_summary,
)
from ndlib.report.refresh import REFRESH_SETTINGS, refresh_sentences, refresh_tradeoff
from ndlib.report.selection import paper_settings_only, run_options, split_synthetic
from ndlib.report.stats import compare_difference, format_mean_std, prediction_factor
from ndlib.report.table1 import (
    agreement_with_paper,
    nd_vs_bn,
    our_train_vs_test,
    reproduction_evidence,
    reproduction_vs_paper,
    table1,
    table1_display,
    table1_long,
)
from ndlib.report.table2 import imagenet_compute, table2_gains, table2_published, table2_status
from ndlib.report.timing import (
    epoch_cost,
    epoch_cost_summary,
    machine_instance_text,
    measured_cost_sentences,
    our_timing,
    reproduction_timing,
    run_costs,
)

__all__ = [
    # constants (the record and benchmark columns are their contracts', re-exported)
    "CIFAR_EPOCHS",
    "DEFAULT_SEEDS",
    "COMPARED_NORMS",
    "REPRODUCTION_DEVICE",
    "DATASET_TITLES",
    "NUM_CLASSES",
    "RUN_COLUMNS",
    "HISTORY_COLUMNS",
    "BENCH_COLUMNS",
    # loading and selection
    "load_runs",
    "load_histories",
    "load_bench",
    "load_record_details",
    "record_details",
    "load_average_text",
    "split_synthetic",
    "run_options",
    "paper_settings_only",
    "BF16_OPTIONS",
    # statistics
    "format_mean_std",
    "compare_difference",
    "prediction_factor",
    # commands
    "grid_command",
    "table2_commands",
    "missing_commands",
    "budget_cost",
    "budget_cost_sentence",
    "format_command",
    # Table 1
    "table1",
    "table1_display",
    "table1_long",
    "nd_vs_bn",
    "agreement_with_paper",
    "reproduction_vs_paper",
    "reproduction_evidence",
    "our_train_vs_test",
    "EFFICIENTNET_VARIANTS",
    "EQUAL_COST_CELLS",
    "compare_cells",
    "efficientnet_variants",
    "equal_cost",
    "final_epoch_from_history",
    "check_history_consistency",
    "synthetic_summary",
    "channel_statistics",
    # Table 2
    "table2_published",
    "table2_status",
    "table2_gains",
    "imagenet_compute",
    # timing
    "reproduction_timing",
    "our_timing",
    "epoch_cost",
    "epoch_cost_summary",
    "run_costs",
    "machine_instance_text",
    "measured_cost_sentences",
    "FLOOR_MULTIPLE_TARGET",
    "MEDIAN_TARGET",
    "RATIO_TARGETS",
    "MAX_TARGET",
    "FLOOR_MODEL_TOLERANCE",
    "bench_summary",
    "bench_sweep",
    "sweep_verdict",
    "memory_setting_comparison",
    "memory_setting_sentences",
    "setting_comparison",
    "precision_comparison",
    "precision_sentences",
    "stage_breakdown",
    "flop_overhead",
    "exact_floor",
    "floor_sentences",
    "floor_target_reasons",
    "floor_target_sentences",
    "floor_targets",
    "ndlib_over_public",
    "layout_comparison",
    "layout_sentences",
    "REFRESH_SETTINGS",
    "refresh_tradeoff",
    "refresh_sentences",
    # generated prose
    "one_epoch_discussion",
    "gain_sentences",
    "efficientnet_sentences",
    "equal_cost_verdicts",
    "first_layer_descriptions",
]
