"""Tests of ndlib.report on small run frames built here (never on files in results/)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ndlib import published, report


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


def test_bench_summary_keeps_every_benchmark_or_the_latest():
    bench = pd.DataFrame([
        {"bench_id": "1", "arch": "vgg16", "batch_size": 128, "device_type": "cpu",
         "device_name": "c", "num_threads": 2, "bn_step_s": 1.0, "nd_step_s": 2.0,
         "ratio_nd_bn": 2.0, "implementation": "ndlib", "torch_version": "x",
         "created_at": "2026-11-25T20:00"},
        {"bench_id": "2", "arch": "vgg16", "batch_size": 128, "device_type": "cpu",
         "device_name": "c", "num_threads": 2, "bn_step_s": 1.0, "nd_step_s": 3.0,
         "ratio_nd_bn": 3.0, "implementation": "ndlib", "torch_version": "x",
         "created_at": "2026-11-25T21:00"}])
    summary = report.bench_summary(bench)
    assert list(summary["ratio_nd_bn"]) == [2.0, 3.0]
    latest = report.bench_summary(bench, latest_only=True)
    assert len(latest) == 1 and latest.loc[0, "ratio_nd_bn"] == 3.0
    with pytest.raises(ValueError, match="lacks"):
        report.bench_summary(bench.drop(columns="nd_step_s"))


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
    assert first.startswith("torchrun --nproc_per_node=4 -m ndlib train --dataset imagenet")
    assert "--arch vgg11_imagenet" in first and "--data-dir /data/in" in first
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
