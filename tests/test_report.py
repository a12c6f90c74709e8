"""Tests of ndlib.report on small run frames built here (never on files in results/)."""
from __future__ import annotations

import math
import shlex

import numpy as np
import pandas as pd
import pytest

from ndlib import published, report
from ndlib.cli import build_parser, config_from_args
from ndlib.config import TrainConfig


def make_run(**overrides) -> dict:
    """One run record row with the contract's columns; defaults: a completed real run."""
    row = {name: None for name in report.RUN_COLUMNS}
    row.update(run_id="r", status="completed", table=1, dataset="cifar10", arch="vgg16",
               norm="nd", epochs=1, seed=0, synthetic=False, data_source="npz",
               test_acc=70.0, test_top5=97.0, train_acc=60.0, train_loss=1.2,
               train_time_s=100.0, eval_time_s=5.0, images_per_s=500.0, peak_mem_mb=900.0,
               device_type="cpu", device_name="test-cpu", num_threads=2,
               finished_at="2026-11-25T22:00:00")
    row.update(overrides)
    return row


def frame(*rows: dict) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=list(report.RUN_COLUMNS))


def cell(table: pd.DataFrame, arch: str, norm: str, epochs: int) -> pd.Series:
    hit = table[(table["arch"] == arch) & (table["norm"] == norm) & (table["epochs"] == epochs)]
    assert len(hit) == 1
    return hit.iloc[0]


def test_table1_empty_runs_lists_every_cell_as_not_run_with_its_command():
    table = report.table1(frame(), "cifar10")
    assert len(table) == 10 * 2 * 3
    assert (table["ours_status"] == "not run").all()
    first = cell(table, "vgg16", "bn", 20)
    assert first["command"] == ("python -m ndlib grid --table 1 --datasets cifar10 --archs vgg16 "
                                "--epochs 20 --seeds 0 1 2")
    paper = published.paper_table1()
    expected = paper[(paper.dataset == "cifar10") & (paper.arch == "vgg16") &
                     (paper.method == "BN") & (paper.epochs == 20)]["test_acc_pct"].item()
    assert first["paper_test"] == expected


def test_table1_mean_std_over_seeds_and_partial_status():
    runs = frame(make_run(run_id="a", seed=0, test_acc=70.0, train_acc=60.0),
                 make_run(run_id="b", seed=1, test_acc=74.0, train_acc=64.0),
                 make_run(run_id="c", seed=0, norm="bn", test_acc=20.0))
    table = report.table1(runs, "cifar10")
    nd = cell(table, "vgg16", "nd", 1)
    assert nd["ours_test_mean"] == pytest.approx(72.0)
    assert nd["ours_test_std"] == pytest.approx(np.std([70.0, 74.0], ddof=1))
    assert nd["ours_n"] == 2
    assert nd["ours_train_mean"] == pytest.approx(62.0)
    assert nd["ours_status"] == "2 of 3 seeds"
    assert nd["command"].endswith("--seeds 2")
    bn = cell(table, "vgg16", "bn", 1)
    assert bn["ours_n"] == 1 and math.isnan(bn["ours_test_std"])
    assert cell(table, "vgg16", "nd", 20)["ours_status"] == "not run"


def test_table1_done_when_all_seeds_present_and_command_empty():
    runs = frame(*[make_run(run_id=f"s{s}", seed=s, test_acc=70.0 + s) for s in (0, 1, 2)])
    nd = cell(report.table1(runs, "cifar10"), "vgg16", "nd", 1)
    assert nd["ours_status"] == "done" and nd["command"] == "" and nd["ours_n"] == 3


def test_table1_excludes_synthetic_and_other_datasets_and_table2():
    runs = frame(make_run(run_id="syn", synthetic=True, test_acc=11.0),
                 make_run(run_id="c100", dataset="cifar100", test_acc=30.0),
                 make_run(run_id="t2", table=2, test_acc=50.0))
    table = report.table1(runs, "cifar10")
    assert (table["ours_n"] == 0).all()
    assert cell(report.table1(runs, "cifar100"), "vgg16", "nd", 1)["ours_test_mean"] == 30.0


def test_missing_synthetic_flag_counts_as_synthetic():
    real, synthetic = report.split_synthetic(frame(make_run(run_id="x", synthetic=None),
                                                   make_run(run_id="y", synthetic=False)))
    assert list(real["run_id"]) == ["y"] and list(synthetic["run_id"]) == ["x"]


def test_table1_counts_diverged_runs_but_takes_no_accuracy_from_them():
    runs = frame(make_run(run_id="d", status="diverged", test_acc=10.0),
                 make_run(run_id="ok", seed=1, test_acc=71.0))
    nd = cell(report.table1(runs, "cifar10"), "vgg16", "nd", 1)
    assert nd["ours_test_mean"] == 71.0 and nd["ours_n"] == 1
    assert nd["ours_other_runs"] == 1
    assert nd["ours_status"] == "1 of 3 seeds (1 diverged)"
    running = frame(make_run(run_id="r", status="running", test_acc=None, train_acc=None))
    assert cell(report.table1(running, "cifar10"), "vgg16", "nd", 1)["ours_status"] == "not run (1 running)"


def test_repeated_seed_keeps_latest_finished_run():
    runs = frame(make_run(run_id="old", test_acc=50.0, finished_at="2026-11-25T20:00:00"),
                 make_run(run_id="new", test_acc=70.0, finished_at="2026-11-25T23:00:00"))
    nd = cell(report.table1(runs, "cifar10"), "vgg16", "nd", 1)
    assert nd["ours_n"] == 1 and nd["ours_test_mean"] == 70.0


def test_table1_unknown_dataset_raises():
    with pytest.raises(ValueError, match="unknown dataset"):
        report.table1(frame(), "mnist")


def test_table1_display_formats_cells():
    runs = frame(make_run(run_id="a", seed=0, test_acc=70.0), make_run(run_id="b", seed=1,
                                                                       test_acc=72.0))
    view = report.table1_display(report.table1(runs, "cifar10"), epochs=1)
    assert view.loc["VGG-16", ("ND", "ours (test)")] == "71.00 ± 1.41 (n=2)"
    assert view.loc["VGG-16", ("BN", "ours (test)")] == "not run"
    diverged = frame(make_run(run_id="d", norm="bn", status="diverged"))
    view = report.table1_display(report.table1(diverged, "cifar10"), epochs=1)
    assert view.loc["VGG-16", ("BN", "ours (test)")] == "not run [1 diverged]"
    with pytest.raises(ValueError):
        report.table1_display(report.table1(runs, "cifar10"), epochs=7)


def test_format_mean_std():
    assert report.format_mean_std(float("nan"), float("nan"), 0) == "not run"
    assert report.format_mean_std(93.1, float("nan"), 1) == "93.10 (n=1)"
    assert report.format_mean_std(93.1, 0.2, 3, digits=1) == "93.1 ± 0.2 (n=3)"


def test_table1_long_has_all_sources_and_only_real_runs():
    runs = frame(make_run(run_id="a"), make_run(run_id="syn", synthetic=True, seed=1))
    long = report.table1_long(runs, "cifar10")
    counts = long.groupby("source").size()
    assert counts["paper"] == 60 and counts["reproduction"] == 180 and counts["ours"] == 1
    assert long["paper_name"].notna().all()


def test_reproduction_vs_paper_difference_matches_sources():
    cmp = report.reproduction_vs_paper("cifar100")
    row = cmp[(cmp.arch == "densenet121") & (cmp.norm == "nd") & (cmp.epochs == 20)].iloc[0]
    repro = published.reproduction_table1()
    values = repro[(repro.dataset == "cifar100") & (repro.arch == "densenet121") &
                   (repro.method == "ND") & (repro.epochs == 20)]["acc_pct"]
    assert row["repro_mean"] == pytest.approx(values.mean())
    assert row["diff"] == pytest.approx(values.mean() - row["paper_test"])
    with pytest.raises(ValueError):
        report.reproduction_vs_paper("svhn")


def test_reproduction_evidence_counts_are_consistent():
    evidence = report.reproduction_evidence()
    assert set(evidence["epochs"]) == set(report.CIFAR_EPOCHS)
    assert (evidence["cells"] == 20).all()
    assert (evidence["above_paper"] <= evidence["cells"]).all()
    cmp = report.reproduction_vs_paper()
    c100 = cmp[(cmp.dataset == "cifar100") & (cmp.epochs == 100)]
    row = evidence[(evidence.dataset == "cifar100") & (evidence.epochs == 100)].iloc[0]
    assert row["near_perfect"] == int((c100["repro_mean"] >= 99.0).sum())
    assert row["mean_diff"] == pytest.approx(c100["diff"].mean())


def test_our_train_vs_test_gap_and_history_final_epoch():
    runs = frame(make_run(run_id="a", train_acc=99.0, test_acc=93.0))
    gap = report.our_train_vs_test(runs)
    assert gap.loc[0, "gap"] == pytest.approx(6.0)
    histories = pd.DataFrame({"run_id": ["a", "a", "b"], "epoch": [1, 2, 1],
                              "train_acc": [50.0, 99.0, 30.0], "test_acc": [55.0, 93.0, 31.0]})
    last = report.final_epoch_from_history(histories).set_index("run_id")
    assert last.loc["a", "epoch"] == 2 and last.loc["a", "train_acc"] == 99.0
    assert last.loc["b", "test_acc"] == 31.0
    with pytest.raises(ValueError, match="lacks"):
        report.final_epoch_from_history(histories.drop(columns="test_acc"))


def test_synthetic_summary_labels_runs():
    summary = report.synthetic_summary(frame(make_run(run_id="s", synthetic=True),
                                             make_run(run_id="r")))
    assert list(summary["run_id"]) == ["s"]
    assert (summary["label"] == "synthetic smoke run").all()


def test_table2_published_and_status():
    t2 = report.table2_published()
    assert len(t2) == 7
    row = t2[(t2.arch == "vgg11") & (t2.method == "ND")].iloc[0]
    assert row["paper_top1"] == 71.95 and row["repro_wall_time_h"] == pytest.approx(69.45)
    status = report.table2_status(frame(make_run(run_id="i", table=2, dataset="imagenet",
                                                 arch="resnet18_imagenet", norm="bn",
                                                 test_acc=69.0, test_top5=89.0)))
    done = status[(status.arch == "resnet18") & (status.method == "BN")].iloc[0]
    assert done["ours_status"] == "done" and done["ours_top1"] == 69.0
    assert (status.drop(index=done.name)["ours_status"] == "not run").all()


def test_imagenet_compute_sums_published_times():
    compute = report.imagenet_compute()
    times = published.reproduction_imagenet_times()
    assert compute["total_h"] == pytest.approx(times["wall_time_h"].sum())
    assert compute["ratio_nd_bn_resnet18"] == pytest.approx(35.8 / 13.133)


def test_reproduction_timing_ratio():
    timing = report.reproduction_timing()
    row = timing[(timing.dataset == "cifar10") & (timing.arch == "vgg16") &
                 (timing.epochs == 1)].iloc[0]
    repro = published.reproduction_table1()
    part = repro[(repro.dataset == "cifar10") & (repro.arch == "vgg16") & (repro.epochs == 1)]
    bn = part[part.method == "BN"]["train_time_s"].mean()
    nd = part[part.method == "ND"]["train_time_s"].mean()
    assert row["ratio_nd_bn"] == pytest.approx(nd / bn)


def test_our_timing_keeps_devices_apart_and_flags_synthetic():
    runs = frame(make_run(run_id="c1", norm="bn", train_time_s=100.0),
                 make_run(run_id="c2", norm="nd", train_time_s=300.0),
                 make_run(run_id="g1", norm="bn", train_time_s=10.0, device_type="cuda",
                          device_name="gpu"),
                 make_run(run_id="s1", norm="nd", train_time_s=5.0, synthetic=True))
    timing = report.our_timing(runs)
    cpu = timing[(timing.device_type == "cpu") & ~timing.synthetic].iloc[0]
    assert cpu["ratio_nd_bn"] == pytest.approx(3.0) and cpu["n_bn"] == 1 and cpu["n_nd"] == 1
    gpu = timing[timing.device_type == "cuda"].iloc[0]
    assert math.isnan(gpu["ratio_nd_bn"]) and gpu["n_nd"] == 0
    assert timing["synthetic"].sum() == 1
    assert report.our_timing(frame()).empty


def test_timing_never_mixes_runs_that_kept_freed_memory_with_runs_that_did_not():
    runs = frame(make_run(run_id="b0", norm="bn", seed=0, train_time_s=100.0),
                 make_run(run_id="n0", norm="nd", seed=0, train_time_s=180.0),
                 make_run(run_id="b1", norm="bn", seed=1, train_time_s=80.0),
                 make_run(run_id="n1", norm="nd", seed=1, train_time_s=150.0))
    runs["keep_freed_memory"] = [False, False, True, True]
    timing = report.our_timing(runs).set_index("keep_freed_memory")
    assert timing.loc[False, "ratio_nd_bn"] == pytest.approx(1.8)
    assert timing.loc[True, "ratio_nd_bn"] == pytest.approx(150.0 / 80.0)
    runs["keep_freed_memory"] = [False, True, True, True]  # seed 0's pair is split: no ratio for it
    cost = report.epoch_cost(runs)
    assert list(cost["seed"]) == [1] and bool(cost.loc[0, "keep_freed_memory"])
    assert "freed memory kept" in report.epoch_cost_summary(cost)
    costs = report.run_costs(runs, report.record_details([]))
    assert list(costs["keep_freed_memory"]) == [False, True, True, True]
    # frames from before the setting existed count as not kept
    assert not report.our_timing(runs.drop(columns="keep_freed_memory"))["keep_freed_memory"].any()


def test_bench_summary_keeps_every_benchmark_or_the_latest():
    bench = pd.DataFrame([
        {"bench_id": "1", "arch": "vgg16", "batch_size": 128, "device_type": "cpu",
         "machine_type": "c", "num_threads": 2, "bn_step_s": 1.0, "nd_step_s": 2.0,
         "ratio_nd_bn": 2.0, "implementation": "ndlib", "torch_version": "x",
         "created_at": "2026-11-25T20:00"},
        {"bench_id": "2", "arch": "vgg16", "batch_size": 128, "device_type": "cpu",
         "machine_type": "c", "num_threads": 2, "bn_step_s": 1.0, "nd_step_s": 3.0,
         "ratio_nd_bn": 3.0, "implementation": "ndlib", "torch_version": "x",
         "created_at": "2026-11-25T21:00"}])
    summary = report.bench_summary(bench)
    assert list(summary["ratio_nd_bn"]) == [2.0, 3.0]
    latest = report.bench_summary(bench, latest_only=True)
    assert len(latest) == 1 and latest.loc[0, "ratio_nd_bn"] == 3.0
    with pytest.raises(ValueError, match="lacks"):
        report.bench_summary(bench.drop(columns="nd_step_s"))
    # a newer refresh_every benchmark is another layer, not the latest of the exact one
    refreshed = pd.concat([bench.assign(refresh_every=1),
                           bench.iloc[[1]].assign(bench_id="3", ratio_nd_bn=1.2, refresh_every=10,
                                                  created_at="2026-11-25T22:00")], ignore_index=True)
    latest = report.bench_summary(refreshed, latest_only=True).set_index("refresh_every")
    assert latest.loc[1, "ratio_nd_bn"] == 3.0 and latest.loc[10, "ratio_nd_bn"] == 1.2


def test_grid_command_quotes_and_lists():
    cmd = report.grid_command("cifar100", ["vgg16", "resnet18"], [1, 20], [0])
    assert cmd == ("python -m ndlib grid --table 1 --datasets cifar100 --archs vgg16 resnet18 "
                   "--epochs 1 20 --seeds 0")


def test_loaders_return_contract_columns_for_empty_folders(tmp_path):
    runs = report.load_runs(tmp_path)
    assert runs.empty and set(report.RUN_COLUMNS) <= set(runs.columns)
    bench = report.load_bench(tmp_path)
    assert bench.empty and set(report.BENCH_COLUMNS) <= set(bench.columns)


def test_format_command_wraps_without_changing_the_command():
    import shlex

    command = report.grid_command("cifar10", [f"arch{i}" for i in range(20)], [1, 20], [0, 1])
    wrapped = report.format_command(command, width=40)
    lines = wrapped.split(" \\\n")
    assert len(lines) > 1
    assert all(len(line) <= 40 for line in lines)
    assert shlex.split(wrapped.replace("\\\n", " ")) == shlex.split(command)


def test_table2_commands_one_per_cell():
    commands = report.table2_commands(nproc_per_node=4, data_dir="/data/in")
    assert len(commands) == 7
    first = commands.iloc[0]["command"]
    assert first.startswith("torchrun --nproc_per_node=4 -m ndlib train ")
    parser = build_parser()  # the command's options parse back to the cell's configuration
    config = config_from_args(parser.parse_args(shlex.split(first)[4:]), parser)
    assert config == TrainConfig(arch="vgg11_imagenet", norm="bn", dataset="imagenet", epochs=90, data_dir="/data/in")
    with pytest.raises(ValueError):
        report.table2_commands(nproc_per_node=0)


def test_table2_gains_are_nd_minus_bn():
    gains = report.table2_gains().set_index("arch")
    assert gains.loc["resnet18", "paper_top1_gain"] == pytest.approx(71.24 - 69.76)
    assert gains.loc["densenet121", "repro_top1_gain"] == pytest.approx(75.668 - 75.884)


def test_nd_vs_bn_gains_and_standard_error():
    runs = frame(*[make_run(run_id=f"nd{s}", seed=s, norm="nd", test_acc=v)
                   for s, v in zip((0, 1, 2), (70.0, 72.0, 74.0))],
                 *[make_run(run_id=f"bn{s}", seed=s, norm="bn", test_acc=v)
                   for s, v in zip((0, 1), (20.0, 22.0))])
    gains = report.nd_vs_bn(report.table1(runs, "cifar10"))
    row = gains[(gains.arch == "vgg16") & (gains.epochs == 1)].iloc[0]
    assert row["ours_gain"] == pytest.approx(72.0 - 21.0)
    expected_se = math.sqrt(np.var([70, 72, 74], ddof=1) / 3 + np.var([20, 22], ddof=1) / 2)
    assert row["ours_gain_se"] == pytest.approx(expected_se)
    assert row["ours_n_bn"] == 2 and row["ours_n_nd"] == 3
    assert row["paper_gain"] == pytest.approx(74.18 - 14.12)
    other = gains[(gains.arch == "vgg16") & (gains.epochs == 20)].iloc[0]
    assert math.isnan(other["ours_gain"]) and other["ours_n_nd"] == 0
    assert len(gains) == 30


def test_a_run_resumed_under_other_settings_counts_for_accuracy_but_not_for_time():
    runs = frame(make_run(run_id="b0", norm="bn", seed=0, train_time_s=100.0),
                 make_run(run_id="n0", norm="nd", seed=0, train_time_s=180.0),
                 make_run(run_id="b1", norm="bn", seed=1, train_time_s=90.0, test_acc=40.0),
                 make_run(run_id="n1", norm="nd", seed=1, train_time_s=999.0, test_acc=70.0))
    runs["timing_mixed"] = [False, False, False, True]  # n1 resumed at another thread count
    timing = report.our_timing(runs).iloc[0]
    assert timing["nd_train_s"] == pytest.approx(180.0) and timing["n_nd"] == 1 and timing["n_bn"] == 2
    assert list(report.epoch_cost(runs)["seed"]) == [0]
    cells = report.compare_cells(runs, [{"label": "ND", "dataset": "cifar10", "arch": "vgg16", "norm": "nd",
                                          "epochs": 1}])
    assert cells.loc[0, "ours_n"] == 2 and cells.loc[0, "ours_test_mean"] == pytest.approx(70.0)
    assert cells.loc[0, "ours_train_time_mean"] == pytest.approx(180.0)
    costs = report.run_costs(runs, report.record_details([])).set_index("run_id")
    assert costs.loc["n1", "timing_mixed"] and not costs.loc["n0", "timing_mixed"]
    assert costs.loc["n1", "train_s"] == pytest.approx(999.0)  # listed with its time, marked
    # frames from before the column existed: nothing is mixed
    assert report.our_timing(runs.drop(columns="timing_mixed")).iloc[0]["n_nd"] == 2


def test_our_timing_and_train_vs_test_carry_run_notes():
    runs = frame(make_run(run_id="a", norm="bn"), make_run(run_id="b", norm="nd"))
    runs["note"] = ["shared machine", "shared machine"]
    assert report.our_timing(runs).loc[0, "notes"] == "shared machine"
    assert list(report.our_train_vs_test(runs)["note"]) == ["shared machine"] * 2


def test_flop_overhead_sums_the_layer_model():
    from ndlib import models
    from ndlib.whitening import model_deconv_flops

    flops = report.flop_overhead(["vgg16"], batch_size=4, image_size=32)
    layers = model_deconv_flops(models.create("vgg16", num_classes=10, norm="nd"), (4, 3, 32, 32),
                                include_linear=True)
    row = flops.iloc[0]
    assert row["layers"] == len(layers)
    assert row["overhead_gflop"] == pytest.approx(layers["overhead"].sum() / 1e9)
    assert row["overhead_ratio"] == pytest.approx(layers["overhead"].sum() / layers["conv"].sum())
    stage_sum = sum(row[f"{s}_gflop"] for s in ("center", "covariance", "newton_schulz", "fold",
                                                "bias_shift"))
    assert stage_sum == pytest.approx(row["overhead_gflop"])


def test_record_without_table_is_in_no_table():
    runs = frame(make_run(run_id="x", table=None), make_run(run_id="y", seed=1))
    nd = cell(report.table1(runs, "cifar10"), "vgg16", "nd", 1)
    assert nd["ours_n"] == 1 and nd["ours_test_mean"] == 70.0


# --------------------------------------------------------------------------- one epoch


def seeds_of(norm: str, values, arch: str = "vgg16", epochs: int = 1, dataset: str = "cifar10",
             **extra) -> list[dict]:
    """Completed runs of one cell, seeds 0, 1, ... with the given test accuracies."""
    return [make_run(run_id=f"t1-{dataset}-{arch}-{norm}-e{epochs}-s{seed}", seed=seed, norm=norm,
                     arch=arch, epochs=epochs, dataset=dataset, test_acc=value, **extra)
            for seed, value in enumerate(values)]


def test_run_with_non_default_options_never_counts_for_a_paper_cell():
    runs = frame(make_run(run_id="t1-cifar10-vgg16-nd-e1-s0", test_acc=70.0),
                 make_run(run_id="t1-cifar10-vgg16-nd-e1-s1-o1a2b3c4d", seed=1, test_acc=10.0))
    assert report.run_options("t1-cifar10-vgg16-nd-e1-s1-o1a2b3c4d") == "o1a2b3c4d"
    assert report.run_options("t1-cifar10-vgg16-nd-e1-s1") == ""
    assert list(report.paper_settings_only(runs)["run_id"]) == ["t1-cifar10-vgg16-nd-e1-s0"]
    nd = cell(report.table1(runs, "cifar10"), "vgg16", "nd", 1)
    assert nd["ours_n"] == 1 and nd["ours_test_mean"] == 70.0
    long = report.table1_long(runs, "cifar10")
    assert list(long.loc[long["source"] == "ours", "accuracy"]) == [70.0]
    timing = report.our_timing(runs)
    assert sorted(timing["options"]) == ["", "o1a2b3c4d"]  # never averaged together


def test_table1_long_leaves_out_extra_archs_and_budgets():
    runs = frame(*seeds_of("nd", [70.0]), *seeds_of("nd", [50.0], arch="efficientnetb0_allnd"),
                 *seeds_of("bn", [30.0], epochs=2))
    ours = report.table1_long(runs, "cifar10").query("source == 'ours'")
    assert list(ours["accuracy"]) == [70.0]


def test_compare_difference_verdicts():
    assert report.compare_difference(70, 1, 3, 60, 1, 3)["verdict"] == "beyond noise"
    close = report.compare_difference(70, 5, 3, 69, 5, 3)
    assert close["verdict"] == "within noise"
    assert close["se"] == pytest.approx(math.sqrt(25 / 3 + 25 / 3))
    single = report.compare_difference(70, float("nan"), 1, 60, 1, 3)
    assert single["verdict"] == "no noise estimate" and single["diff"] == 10
    assert "no estimate of the noise" in single["text"]
    assert report.compare_difference(float("nan"), float("nan"), 0, 60, 1, 3)["verdict"] == "not run"


def test_compare_difference_welch_error_by_hand_with_unequal_seeds_and_spread():
    """Guards against pairing each sd with the other side's n (equal n and sd hide that)."""
    result = report.compare_difference(70, 2, 3, 60, 1, 2)
    assert result["diff"] == 10
    assert result["se"] == pytest.approx(1.354006, abs=1e-6)  # sqrt(4/3 + 1/2); swapped: 1.528
    assert result["verdict"] == "beyond noise"
    assert result["text"] == "+10.00 points (standard error 1.35: beyond 2 standard errors)"


def test_prediction_factor_is_the_student_interval_for_one_more_run():
    """Hand values from t tables, so a wrong df, level or sqrt(1 + 1/n) term fails."""
    assert report.prediction_factor(3) == pytest.approx(4.3027 * math.sqrt(4 / 3), abs=1e-3)  # 4.9683
    assert report.prediction_factor(2) == pytest.approx(12.7062 * math.sqrt(1.5), abs=1e-3)  # 15.562
    assert report.prediction_factor(10, level=0.9) == pytest.approx(1.8331 * math.sqrt(1.1), abs=1e-3)
    assert math.isnan(report.prediction_factor(1))


def test_agreement_with_paper_flags_only_cells_with_enough_seeds():
    paper_bn = 14.12  # the paper's VGG-16 BN one-epoch value, checked against published below
    paper = published.paper_table1()
    assert paper.query("dataset == 'cifar10' and arch == 'vgg16' and method == 'BN' "
                       "and epochs == 1")["test_acc_pct"].item() == paper_bn
    runs = frame(*seeds_of("bn", [10.0, 10.5, 11.0]), *seeds_of("nd", [70.0, 80.0]),
                 *seeds_of("bn", [40.0, 50.0, 60.0], arch="resnet18"))
    agreement = report.agreement_with_paper(report.table1(runs, "cifar10"))
    bn = agreement.query("arch == 'vgg16' and norm == 'bn'").iloc[0]
    assert bn["ours_n"] == 3 and bn["ours_minus_paper"] == pytest.approx(10.5 - paper_bn)
    assert bn["ours_band"] == pytest.approx(report.prediction_factor(3) * 0.5)
    assert bool(bn["ours_outside"])  # |10.5 - 14.12| = 3.62 > 4.97 * 0.5
    resnet = agreement.query("arch == 'resnet18' and norm == 'bn'").iloc[0]
    assert not bool(resnet["ours_outside"])  # far from the paper, but the seeds scatter widely
    nd = agreement.query("arch == 'vgg16' and norm == 'nd'").iloc[0]
    assert pd.isna(nd["ours_outside"])  # two seeds: not tested
    assert agreement.query("arch == 'densenet121'")["closer_to"].eq("").all()
    repro = bn["repro_mean"]
    assert bn["closer_to"] == ("paper" if abs(10.5 - paper_bn) < abs(10.5 - repro) else "reproduction")
    assert len(agreement) == 20


def test_compare_cells_takes_non_paper_cells_and_lists_missing_commands():
    runs = frame(*seeds_of("bn", [30.0, 34.0], epochs=2), *seeds_of("nd", [70.0]))
    cells = report.compare_cells(runs, [
        {"label": "BN 2", "dataset": "cifar10", "arch": "vgg16", "norm": "bn", "epochs": 2},
        {"label": "ND 1", "dataset": "cifar10", "arch": "vgg16", "norm": "nd", "epochs": 1}])
    bn2 = cells.set_index("label").loc["BN 2"]
    assert bn2["ours_test_mean"] == 32.0 and bn2["ours_n"] == 2 and pd.isna(bn2["paper_test"])
    assert bn2["paper_name"] == "VGG-16"
    assert bn2["commands"] == ["python -m ndlib train --arch vgg16 --norm bn --dataset cifar10 "
                               "--epochs 2 --seed 2"]
    nd1 = cells.set_index("label").loc["ND 1"]
    assert nd1["paper_test"] == 74.18 and nd1["ours_train_time_mean"] == 100.0
    assert len(nd1["commands"]) == 2
    empty = report.compare_cells(frame(), [{"label": "x", "dataset": "cifar10", "arch": "vgg16",
                                            "norm": "bn", "epochs": 2}])
    assert empty.loc[0, "ours_status"] == "not run" and len(empty.loc[0, "commands"]) == 3


def test_equal_cost_verdicts_survive_fail_and_missing():
    runs = frame(*seeds_of("nd", [74.0, 74.5, 75.0]), *seeds_of("bn", [11.0, 12.0, 13.0]),
                 *seeds_of("bn", [60.0, 61.0, 62.0], epochs=2),
                 *seeds_of("nd", [50.0], arch="resnet18"), *seeds_of("bn", [55.0], arch="resnet18", epochs=2))
    verdicts = report.equal_cost_verdicts(report.equal_cost(runs)).set_index("arch")
    vgg = verdicts.loc["vgg16"]
    assert vgg["lead_equal_cost"] == pytest.approx(74.5 - 61.0)
    assert vgg["lead_equal_epochs"] == pytest.approx(74.5 - 12.0)
    assert vgg["verdict"] == "beyond noise" and bool(vgg["survives"])
    assert "ND at one epoch is ahead of BN at two epochs, at about equal compute" in vgg["text"]
    resnet = verdicts.loc["resnet18"]
    assert resnet["verdict"] == "no noise estimate" and not bool(resnet["survives"])
    assert "BN at two epochs is ahead of ND at one epoch in these single runs" in resnet["text"]
    assert "Still missing: BN, 1 epoch" in resnet["text"]
    missing = report.equal_cost_verdicts(report.equal_cost(frame())).set_index("arch")
    assert missing["survives"].isna().all()
    assert ("`python -m ndlib train --arch vgg16 --norm bn --dataset cifar10 --epochs 2 --seed 0` "
            "and the same with `--seed` 1, 2" in missing.loc["vgg16", "text"])


def test_efficientnet_sentences_adapt_to_the_records():
    none = report.efficientnet_sentences(report.efficientnet_variants(frame()))
    assert len(none) == 2 and all("has not run yet" in p for p in none)
    assert "--arch efficientnetb0_allnd --norm nd --dataset cifar10 --epochs 1 --seed 0" in none[0]
    runs = frame(*seeds_of("bn", [40.0, 41.0, 42.0], arch="efficientnetb0"),
                 *seeds_of("nd", [55.0, 56.0, 57.0], arch="efficientnetb0"),
                 *seeds_of("nd", [45.0, 46.0, 47.0], arch="efficientnetb0_allnd"))
    variants = report.efficientnet_variants(runs, datasets=["cifar10"])
    assert list(variants["ours_n"]) == [3, 3, 3]
    assert pd.isna(variants.loc[2, "paper_test"])
    text = report.efficientnet_sentences(variants)[0]
    assert "-10.00 points" in text and "blocks hurts" in text
    single = frame(*seeds_of("nd", [55.0], arch="efficientnetb0"),
                   *seeds_of("nd", [58.0], arch="efficientnetb0_allnd"))
    text = report.efficientnet_sentences(report.efficientnet_variants(single, datasets=["cifar10"]))[0]
    assert "helped in these runs" in text and "no estimate of the noise" in text


def test_epoch_cost_pairs_bn_and_nd_of_a_seed_on_one_machine():
    runs = frame(make_run(run_id="b0", norm="bn", seed=0, train_time_s=100.0),
                 make_run(run_id="n0", norm="nd", seed=0, train_time_s=180.0),
                 make_run(run_id="b0e2", norm="bn", seed=0, epochs=2, train_time_s=210.0),
                 make_run(run_id="n1", norm="nd", seed=1, train_time_s=170.0),
                 make_run(run_id="b1", norm="bn", seed=1, train_time_s=90.0, device_name="other"),
                 make_run(run_id="n2-o1234abcd", norm="nd", seed=2, train_time_s=1.0),
                 make_run(run_id="b2", norm="bn", seed=2, train_time_s=1.0))
    runs["note"] = "busy machine"
    cost = report.epoch_cost(runs)
    assert list(cost["seed"]) == [0]  # seed 1: two machines; seed 2: other options
    row = cost.iloc[0]
    assert row["ratio_nd_bn"] == pytest.approx(1.8)
    assert row["ratio_nd_bn_double"] == pytest.approx(180.0 / 210.0)
    assert row["notes"] == "busy machine"
    assert report.epoch_cost(frame()).empty


def test_times_from_two_machine_instances_are_never_paired():
    """Machines of one name can differ about twofold in speed: a ratio needs one instance."""
    runs = frame(make_run(run_id="b0", norm="bn", seed=0, train_time_s=100.0, machine_id="aaa"),
                 make_run(run_id="n0", norm="nd", seed=0, train_time_s=40.0, machine_id="bbb"),
                 make_run(run_id="b1", norm="bn", seed=1, train_time_s=110.0, machine_id="bbb"),
                 make_run(run_id="n1", norm="nd", seed=1, train_time_s=130.0, machine_id="bbb"),
                 make_run(run_id="b2", norm="bn", seed=2, train_time_s=90.0),  # instance not recorded
                 make_run(run_id="n2", norm="nd", seed=2, train_time_s=180.0))
    cost = report.epoch_cost(runs)
    assert sorted(zip(cost["seed"], cost["machine_id"])) == [(1, "bbb"), (2, "")]
    assert cost.set_index("seed").loc[1, "ratio_nd_bn"] == pytest.approx(130.0 / 110.0)
    timing = report.our_timing(runs).set_index("machine_id")
    assert timing.loc["aaa", "n_bn"] == 1 and timing.loc["aaa", "n_nd"] == 0
    assert pd.isna(timing.loc["aaa", "ratio_nd_bn"])
    assert timing.loc["bbb", "ratio_nd_bn"] == pytest.approx(((40.0 + 130.0) / 2) / 110.0)
    assert timing.loc["", "ratio_nd_bn"] == pytest.approx(2.0)
    summary = report.epoch_cost_summary(cost)
    assert "instance bbb" in summary and "instance not recorded" in summary
    costs = report.run_costs(runs, report.record_details([])).set_index("run_id")
    assert costs.loc["n0", "machine_id"] == "bbb" and costs.loc["b2", "machine_id"] == ""


def test_one_epoch_discussion_is_generated_from_the_frames():
    runs = frame(*seeds_of("bn", [10.0, 10.5, 11.0]), *seeds_of("nd", [74.0, 74.2, 74.4]),
                 *seeds_of("nd", [58.0], arch="resnet18"))
    table = report.table1(runs, "cifar10")
    agreement = report.agreement_with_paper(table)
    gains = report.nd_vs_bn(table).query("epochs == 1")
    text = report.one_epoch_discussion(agreement, gains, gap_threshold=10.0,
                                       first_layers={"resnet18": "an ordinary layer"})
    assert set(text) == {"claims", "paper_values", "gaps", "summary", "explanations"}
    assert any("ND is ahead of BN in 1 of the 1" in line for line in text["claims"])
    assert any("VGG-16 BN" in line and "outside" in line for line in text["paper_values"])
    resnet_gap = [line for line in text["gaps"] if "ResNet-18 ND" in line]
    assert len(resnet_gap) == 1 and "closer to the reproduction" in resnet_gap[0]
    assert any("PreAct-18 BN" in line and "not run yet" in line for line in text["gaps"])
    assert any("an ordinary layer: ResNet-18" in line for line in text["explanations"])
    nothing = report.table1(frame(), "cifar10")
    empty = report.one_epoch_discussion(report.agreement_with_paper(nothing),
                                        report.nd_vs_bn(nothing).query("epochs == 1"))
    assert "cannot test ND > BN" in empty["claims"][0]
    assert empty["paper_values"] == ["We have no run at this budget yet."]


def test_one_epoch_discussion_names_cells_near_chance_with_their_test_loss():
    """Below twice chance (20 % on CIFAR-10, 2 % on CIFAR-100), a cell is listed with its mean
    test loss against ln K; cells above it, and the ND cell here, are not."""
    runs = frame(*seeds_of("bn", [10.0, 12.0], test_loss=2.5), *seeds_of("nd", [74.0], test_loss=0.8),
                 *seeds_of("bn", [1.5], dataset="cifar100", test_loss=4.5),
                 *seeds_of("bn", [45.0], arch="resnet18", test_loss=1.5))
    tables = [report.table1(runs, d) for d in ("cifar10", "cifar100")]
    agreement = pd.concat([report.agreement_with_paper(t) for t in tables])
    gains = pd.concat([report.nd_vs_bn(t) for t in tables]).query("epochs == 1")
    assert cell(tables[0], "vgg16", "bn", 1)["ours_test_loss_mean"] == pytest.approx(2.5)
    line = [t for t in report.one_epoch_discussion(agreement, gains)["explanations"]
            if "times chance" in t]
    assert len(line) == 1
    assert "(20 % on CIFAR-10, 2 % on CIFAR-100)" in line[0]
    assert "CIFAR-10 VGG-16 BN: ours 11.00 ± 1.41 (n=2), test loss 2.50 (above ln 10 = 2.30)" in line[0]
    assert "CIFAR-100 VGG-16 BN: ours 1.50 (n=1), test loss 4.50 (below ln 100 = 4.61)" in line[0]
    assert "ResNet-18" not in line[0] and "VGG-16 ND" not in line[0]
    assert "the paper 14.12, the reproduction 14.38" in line[0]  # the published CIFAR-10 VGG-16 BN cell

    unrecorded = frame(*seeds_of("bn", [10.0]))  # a record without a test loss
    table = report.table1(unrecorded, "cifar10")
    text = report.one_epoch_discussion(report.agreement_with_paper(table),
                                       report.nd_vs_bn(table).query("epochs == 1"))
    assert any("VGG-16 BN: ours 10.00 (n=1), test loss not recorded" in t for t in text["explanations"])

    above = frame(*seeds_of("bn", [45.0], arch="resnet18"))
    table = report.table1(above, "cifar10")
    text = report.one_epoch_discussion(report.agreement_with_paper(table),
                                       report.nd_vs_bn(table).query("epochs == 1"))
    assert "None of our cells ends the epoch below 2 times chance (20 % on CIFAR-10)." in text["explanations"]
    assert not any("Single seeds" in t for t in text["explanations"])
    assert not any("times chance" in t for t in report.one_epoch_discussion(
        report.agreement_with_paper(report.table1(frame(), "cifar10")),
        report.nd_vs_bn(report.table1(frame(), "cifar10")).query("epochs == 1"))["explanations"])


def test_num_classes_agree_with_the_data_module():
    from ndlib.data import DATASETS
    assert report.NUM_CLASSES == {name: info.num_classes for name, info in DATASETS.items()}


def test_nd_vs_bn_follows_the_paper_order_with_names_and_reproduction_error():
    gains = report.nd_vs_bn(report.table1(frame(), "cifar10")).query("epochs == 1")
    paper = published.paper_table1()
    order = list(dict.fromkeys(paper.loc[paper["dataset"] == "cifar10", "paper_name"]))
    assert list(gains["paper_name"]) == order
    repro = published.reproduction_table1().query("dataset == 'cifar10' and arch == 'vgg16' "
                                                  "and epochs == 1")
    sd = repro.groupby("method")["acc_pct"].std()
    expected = math.sqrt(sd["ND"] ** 2 / 3 + sd["BN"] ** 2 / 3)
    assert gains.query("arch == 'vgg16'")["repro_gain_se"].item() == pytest.approx(expected)


def make_record(run_id: str, **data_source) -> dict:
    return {"run_id": run_id, "status": "completed",
            "environment": {"cpu_count": 2, "load_avg_at_start": [1.0, 0.5, 0.25],
                            "load_avg_at_end": [3.0, 2.0, 1.0]},
            "data_source": {"kind": "npz", **data_source}}


def test_run_costs_add_the_load_and_the_reproduction_time_of_the_same_cell():
    runs = frame(make_run(run_id="t1-cifar10-vgg16-nd-e1-s0", train_time_s=100.0, eval_time_s=5.0),
                 make_run(run_id="t1-cifar10-vgg16-nd-e1-s0-o1a2b3c4d", train_time_s=50.0),
                 make_run(run_id="x", arch="efficientnetb0_allnd"))
    details = report.record_details([make_record(r) for r in runs["run_id"]])
    costs = report.run_costs(runs, details).set_index("run_id")
    row = costs.loc["t1-cifar10-vgg16-nd-e1-s0"]
    assert row["wall_s"] == pytest.approx(105.0) and row["cpu_count"] == 2
    assert row["load_start"] == "1.00 / 0.50 / 0.25" and row["load_end"] == "3.00 / 2.00 / 1.00"
    repro = published.reproduction_table1().query("dataset == 'cifar10' and arch == 'vgg16' and "
                                                  "method == 'ND' and epochs == 1")
    assert row["repro_train_s"] == pytest.approx(repro["train_time_s"].mean())
    assert row["repro_device"] == report.REPRODUCTION_DEVICE
    assert pd.isna(costs.loc["t1-cifar10-vgg16-nd-e1-s0-o1a2b3c4d", "repro_train_s"])
    assert costs.loc["x", "repro_device"] == "" and costs.loc["x", "options"] == ""
    assert report.run_costs(frame(), details).empty


def test_channel_statistics_from_records_that_have_them():
    runs = frame(make_run(run_id="old", finished_at="2026-11-01T00:00:00"),
                 make_run(run_id="new", dataset="cifar100", finished_at="2026-12-01T00:00:00"),
                 make_run(run_id="syn", dataset="cifar100", synthetic=True))
    details = report.record_details([
        make_record("old"),
        make_record("new", channel_mean=[0.5, 0.4, 0.3], channel_std=[0.2, 0.2, 0.2]),
        make_record("syn", channel_mean=[0.1, 0.1, 0.1], channel_std=[0.1, 0.1, 0.1])])
    stats = report.channel_statistics(runs, details)
    assert list(stats["dataset"]) == ["cifar100"]
    assert stats.loc[0, "channel_mean"] == (0.5, 0.4, 0.3) and stats.loc[0, "run_id"] == "new"
    assert stats.loc[0, "records_with_stats"] == 1 and stats.loc[0, "distinct_values"] == 1
    assert report.channel_statistics(runs, report.record_details([make_record("old")])).empty


def test_epoch_cost_summary_states_ratios_and_notes():
    assert "not measured" in report.epoch_cost_summary(report.epoch_cost(frame()))
    runs = frame(make_run(run_id="b0", norm="bn", seed=0, train_time_s=100.0),
                 make_run(run_id="n0", norm="nd", seed=0, train_time_s=180.0),
                 make_run(run_id="b1", norm="bn", seed=1, train_time_s=100.0),
                 make_run(run_id="n1", norm="nd", seed=1, train_time_s=200.0),
                 make_run(run_id="b0e2", norm="bn", seed=0, epochs=2, train_time_s=190.0))
    runs["note"] = ["shared", "shared", "quiet", "quiet", "shared"]
    text = report.epoch_cost_summary(report.epoch_cost(runs))
    assert "1.80 to 2.00 times" in text and "median 1.90, 2 seed pairs" in text
    assert "0.95 times BN's (1 pair)" in text
    assert text.endswith("* shared\n* quiet")


def test_first_layer_descriptions_read_the_registry():
    from ndlib import models

    text = report.first_layer_descriptions(["vgg16", "resnet18"])
    vgg = models.get_spec("vgg16").first_layer
    assert text["vgg16"] == (f"a deconvolution with {vgg['n_iter']} Newton-Schulz iterations and "
                             f"statistics frozen after {vgg['freeze_iter']} training iterations")
    assert text["resnet18"].startswith("an ordinary deconvolution layer")


def test_one_epoch_discussion_takes_frames_concatenated_over_datasets():
    runs = frame(*seeds_of("bn", [10.0, 11.0]), *seeds_of("bn", [5.0, 6.0], dataset="cifar100"))
    tables = [report.table1(runs, d) for d in ("cifar10", "cifar100")]
    agreement = pd.concat([report.agreement_with_paper(t) for t in tables])  # repeated index
    gains = pd.concat([report.nd_vs_bn(t) for t in tables]).query("epochs == 1")
    text = report.one_epoch_discussion(agreement, gains)
    spread = [line for line in text["explanations"] if line.startswith("Our seeds of one BN cell")]
    assert spread and "up to 0.71 points" in spread[0] and "over 2 such cells" in spread[0]


def test_gain_sentences_state_our_gain_beside_the_papers_only_where_both_sides_ran():
    runs = frame(*seeds_of("bn", [10.0, 12.0]), *seeds_of("nd", [74.0, 76.0]),
                 *seeds_of("nd", [70.0], arch="resnet18"), *seeds_of("bn", [40.0], arch="resnet18"),
                 *seeds_of("nd", [50.0], arch="preact18"),  # one side only: no sentence
                 *seeds_of("bn", [90.0], epochs=20), *seeds_of("nd", [93.0], epochs=20))
    gains = report.nd_vs_bn(report.table1(runs, "cifar10"))
    lines = report.gain_sentences(gains)
    paper = published.paper_table1().query("dataset == 'cifar10'").set_index(["arch", "method", "epochs"])
    vgg_paper = paper.loc[("vgg16", "ND", 1), "test_acc_pct"] - paper.loc[("vgg16", "BN", 1), "test_acc_pct"]
    assert lines[0] == (f"CIFAR-10 VGG-16, 1 epoch (BN n=2, ND n=2): ND − BN +64.00 points (standard error "
                        f"1.41: beyond 2 standard errors); the paper {vgg_paper:+.2f}.")
    assert lines[1].startswith("CIFAR-10 ResNet-18, 1 epoch (BN n=1, ND n=1): ND − BN +30.00 points (one seed")
    assert lines[2].startswith("CIFAR-10 VGG-16, 20 epochs (BN n=1, ND n=1): ND − BN +3.00 points")
    assert len(lines) == 3 and not any("PreAct" in line for line in lines)
    assert report.gain_sentences(report.nd_vs_bn(report.table1(frame(), "cifar10"))) == []


def test_one_epoch_discussion_summary_collects_the_in_sum_sentences():
    runs = frame(*seeds_of("bn", [10.0, 10.5, 11.0]), *seeds_of("nd", [74.0, 74.2, 74.4]),
                 *seeds_of("nd", [58.0], arch="resnet18"))
    table = report.table1(runs, "cifar10")
    text = report.one_epoch_discussion(report.agreement_with_paper(table),
                                       report.nd_vs_bn(table).query("epochs == 1"))
    assert len(text["summary"]) == 3
    assert text["summary"][0].startswith("ND is ahead of BN in 1 of the 1 architecture cells")
    assert text["summary"][0].endswith("; 9 of the paper's 10 cells at this budget are not run on both sides yet.")
    agreement = report.agreement_with_paper(table)
    one_epoch = report.nd_vs_bn(table).query("epochs == 1")
    complete = report.one_epoch_discussion(agreement, one_epoch.query("arch == 'vgg16'"))
    assert complete["summary"][0].endswith("; every one of the paper's 1 cells at this budget is run "
                                           "on both sides.")
    one_short = report.one_epoch_discussion(agreement, one_epoch.query("arch in ['vgg16', 'resnet18']"))
    assert one_short["summary"][0].endswith("; 1 of the paper's 2 cells at this budget is not run on both "
                                            "sides yet.")
    assert text["summary"][1] == ("1 of the 2 cells with at least 3 seeds put the paper's value outside "
                                  "the prediction interval of our seeds.")
    assert text["summary"][2] == ("5 cells differ by 10 points or more; we have run 1 of them, closer to "
                                  "the paper in 0 and to the reproduction in 1.")
    assert all(not line.startswith("In sum") for line in text["summary"])
    assert text["gaps"][-1] == "By method: ND, 1 cell run: closer to the paper in 0 and to the reproduction in 1."
    nothing = report.table1(frame(), "cifar10")
    assert report.one_epoch_discussion(report.agreement_with_paper(nothing),
                                       report.nd_vs_bn(nothing).query("epochs == 1"))["summary"] == []


def test_one_epoch_discussion_names_a_single_seed_near_chance_behind_a_higher_mean():
    """A cell whose mean is above twice chance but one of whose seeds is below it: that seed is
    named with its own test loss and the cell's other seeds, and the cell is not listed among
    the cells below twice chance."""
    runs = frame(*(make_run(run_id=f"t1-cifar10-preact18-bn-e1-s{seed}", arch="preact18", norm="bn",
                            seed=seed, test_acc=acc, test_loss=loss)
                   for seed, acc, loss in ((0, 20.5, 2.1), (1, 44.7, 1.5), (2, 11.0, 2.3035))))
    table = report.table1(runs, "cifar10")
    assert cell(table, "preact18", "bn", 1)["ours_seed_results"] == (
        (0, 20.5, 2.1), (1, 44.7, 1.5), (2, 11.0, 2.3035))
    text = report.one_epoch_discussion(report.agreement_with_paper(table),
                                       report.nd_vs_bn(table).query("epochs == 1"))["explanations"]
    assert "None of our cells ends the epoch below 2 times chance (20 % on CIFAR-10)." in text
    single = [t for t in text if t.startswith("Single seeds")]
    assert len(single) == 1
    assert ("CIFAR-10 PreAct-18 BN, seed 2: 11.00 %, test loss 2.30 (above ln 10 = 2.30) "
            "(the cell's other seeds: 20.50, 44.70)") in single[0]
    assert "seed 0" not in single[0]  # 20.5 % is above twice chance
