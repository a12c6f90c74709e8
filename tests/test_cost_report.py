"""The training-time chapter's tables: benchmark sweep vs targets, stage breakdown, refresh trade-off."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from ndlib import report
from ndlib.bench import BENCH_COLUMNS, STAGE_COLUMNS
from ndlib.records import RUN_COLUMNS
from ndlib.report import layouts
from ndlib.train import TrainConfig


def bench_row(arch, ratio, created_at, **overrides):
    row = {c: None for c in BENCH_COLUMNS}
    row.update(bench_id=f"{arch}-{created_at}", arch=arch, batch_size=128, device_type="cpu", machine_type="cpu x",
               num_threads=2, implementation="ndlib", bn_step_s=1.0, nd_step_s=ratio, ratio_nd_bn=ratio,
               ratio_min=ratio - 0.1, ratio_max=ratio + 0.1, rounds=5, steps_per_round=1, channels_last=False,
               refresh_every=1, round_statistic="median", created_at=created_at)
    row.update(overrides)
    return row


def test_sweep_takes_the_newest_qualifying_record_per_arch_and_judges_the_targets():
    bench = pd.DataFrame([
        bench_row("a", 3.0, "2026-01-01"), bench_row("a", 1.2, "2026-01-02"),  # newer wins
        bench_row("a", 0.5, "2026-01-03", rounds=1),  # too few rounds
        bench_row("a", 0.5, "2026-01-04", num_threads=1),  # other setting
        bench_row("a", 0.5, "2026-01-05", refresh_every=10),  # not the exact layer
        bench_row("a", 0.5, "2026-01-06", channels_last=True),
        bench_row("a", 0.5, "2026-01-07", keep_freed_memory=True),  # another memory setting
        bench_row("b", 1.4, "2026-01-01"), bench_row("c", 2.5, "2026-01-01"),
    ], columns=BENCH_COLUMNS)
    sweep = report.bench_sweep(bench, ["a", "b", "c"])
    assert sweep["ratio_nd_bn"].tolist() == [1.2, 1.4, 2.5]
    verdict = report.sweep_verdict(sweep)
    assert verdict["complete"] and verdict["median"] == pytest.approx(1.4) and verdict["max_arch"] == "c"
    assert verdict["meets_median"] and not verdict["meets_max"] and verdict["over_max"] == ["c"]
    assert report.sweep_verdict(report.bench_sweep(bench, ["a", "b"]))["meets_max"]
    # the stage breakdown: the sweep's own record where it has one, else the newest of the setting that has
    staged = report.bench_sweep(bench, ["a", "b", "c"], with_stages={"a-2026-01-01", "b-2026-01-01",
                                                                         "a-2026-01-04"})
    assert staged["stages_bench_id"].tolist()[:2] == ["a-2026-01-01", "b-2026-01-01"]
    assert math.isnan(staged.loc[2, "stages_bench_id"])
    assert staged.loc[0, "bench_id"] == "a-2026-01-02"  # the ratio stays the newest record's
    kept = report.bench_sweep(bench, ["a", "b"], keep_freed_memory=True)
    assert kept.loc[0, "ratio_nd_bn"] == 0.5 and math.isnan(kept.loc[1, "ratio_nd_bn"])
    # an architecture without a measurement: listed, and no verdict on an incomplete sweep
    partial = report.sweep_verdict(report.bench_sweep(bench, ["a", "b", "d"]))
    assert partial["missing"] == ["d"] and not partial["complete"] and not partial["meets_median"]
    empty = report.bench_sweep(pd.DataFrame(columns=BENCH_COLUMNS), ["a"])
    assert math.isnan(empty.loc[0, "ratio_nd_bn"])
    with pytest.raises(ValueError, match="lacks the column"):
        report.bench_sweep(pd.DataFrame({"arch": ["a"]}), ["a"])


def test_memory_setting_comparison_pairs_the_two_sweeps_by_architecture():
    bench = pd.DataFrame([
        bench_row("a", 1.8, "2026-01-01", bn_step_s=2.0, nd_step_s=3.6),
        bench_row("a", 2.1, "2026-01-02", bn_step_s=1.6, nd_step_s=3.36, keep_freed_memory=True,
                  load_avg_before=[1.5, 1.6, 1.7], load_avg_after=[1.8, 1.7, 1.7]),
        bench_row("b", 1.5, "2026-01-01", bn_step_s=1.0, nd_step_s=1.5),
        bench_row("b", 1.2, "2026-01-02", bn_step_s=1.0, nd_step_s=1.2, keep_freed_memory=True),
        bench_row("c", 1.4, "2026-01-01"),  # measured one way only
    ], columns=BENCH_COLUMNS)
    default = report.bench_sweep(bench, ["a", "b", "c"])
    kept = report.bench_sweep(bench, ["a", "b", "c"], keep_freed_memory=True)
    both = report.memory_setting_comparison(default, kept)
    assert both["arch"].tolist() == ["a", "b", "c"]
    assert both["ratio_nd_bn_default"].tolist() == [1.8, 1.5, 1.4]
    assert both["ratio_nd_bn_kept"].tolist()[:2] == [2.1, 1.2] and math.isnan(both["ratio_nd_bn_kept"].iloc[2])
    assert both["ratio_change"].iloc[0] == pytest.approx(2.1 / 1.8) and both["load_kept"].iloc[0].startswith("1.5")
    sentences = " ".join(report.memory_setting_sentences(both))
    assert "Measured both ways: 2 of 3 architectures" in sentences
    assert "the BN step was faster for 1 of them and the ND step for 2" in sentences
    assert "the ND/BN ratio rose for 1 and fell for 1" in sentences
    assert "1.65 with the default allocator, 1.65 with freed memory kept" in sentences
    assert "Above 2 with freed memory kept: a (2.10)." in sentences
    assert report.memory_setting_sentences(report.memory_setting_comparison(default, default.iloc[0:0])) == []


def test_setting_comparison_compares_timings_only_within_one_machine():
    bench = pd.DataFrame([
        bench_row("a", 1.8, "2026-01-01"), bench_row("a", 2.1, "2026-01-02", keep_freed_memory=True),
        bench_row("b", 1.5, "2026-01-01"),
        bench_row("b", 1.2, "2026-01-02", keep_freed_memory=True, machine_type="other cpu"),
    ], columns=BENCH_COLUMNS)
    both = report.memory_setting_comparison(report.bench_sweep(bench, ["a", "b"]),
                                            report.bench_sweep(bench, ["a", "b"], keep_freed_memory=True))
    both = both.set_index("arch")
    assert both.loc["a", "ratio_nd_bn_kept"] == 2.1 and both.loc["b", "machine_kept"] == "other cpu"
    assert both.loc["b", ["bn_step_s_kept", "nd_step_s_kept", "ratio_nd_bn_kept", "ratio_change"]].isna().all()


def test_stage_breakdown_sums_forward_and_backward_of_the_stages_the_layer_runs():
    rows = []
    for layer in ("l1", "l2"):
        for stage, seconds in (("patch_extraction", 1.0), ("center_covariance_fused", 2.0), ("centering", 50.0),
                               ("covariance", 50.0), ("newton_schulz", 3.0), ("weight_folding", 0.5),
                               ("convolution", 3.5)):
            row = {c: None for c in STAGE_COLUMNS}
            row.update(bench_id="x", arch="vgg16", layer=layer, stage=stage, forward_s=seconds / 2,
                       backward_s=seconds / 2)
            rows.append(row)
    table = report.stage_breakdown(pd.DataFrame(rows, columns=STAGE_COLUMNS), ["x", "missing"])
    assert len(table) == 1 and table.loc[0, "layers"] == 2
    assert table.loc[0, "Newton-Schulz"] == pytest.approx(6.0) and table.loc[0, "convolution"] == pytest.approx(7.0)
    # the unfused centering/covariance (timed for information) are not counted twice
    assert table.loc[0, "whitening_share"] == pytest.approx(13.0 / 20.0)
    assert report.stage_breakdown(pd.DataFrame(columns=STAGE_COLUMNS), ["x"]).empty


def test_precision_comparison_sets_the_bf16_sweep_beside_the_float32_one():
    fp32 = report.bench_sweep(pd.DataFrame([
        bench_row("a", 2.0, "2026-01-01", bn_step_s=1.0, nd_step_s=2.0),
        bench_row("b", 1.5, "2026-01-01", bn_step_s=2.0, nd_step_s=3.0),
    ], columns=BENCH_COLUMNS), ["a", "b"])
    bf16 = report.bench_sweep(pd.DataFrame([
        bench_row("a", 1.6, "2026-01-02", bn_step_s=0.5, nd_step_s=0.8, amp=True),
    ], columns=BENCH_COLUMNS), ["a", "b"])
    both = report.precision_comparison(fp32, bf16).set_index("arch")
    assert both.loc["a", "bn_speedup"] == pytest.approx(2.0) and both.loc["a", "nd_speedup"] == pytest.approx(2.5)
    assert both.loc["a", "ratio_change"] == pytest.approx(0.8) and math.isnan(both.loc["b", "nd_speedup"])
    text = " ".join(report.precision_sentences(both.reset_index()))
    assert "Measured in both precisions: 1 of 2 architectures (not yet: b)." in text
    assert "bf16's BN step was 2.00x to 2.00x as fast as float32's" in text
    assert "2.00 in float32, 1.60 in bf16" in text
    none = report.precision_comparison(fp32, bf16.iloc[0:0].reindex(columns=bf16.columns))
    assert report.precision_sentences(none) == [
        "No architecture has both a float32 and a bf16 benchmark in this setting yet (2 to measure)."]


def test_exact_floor_counts_the_products_the_exact_layer_needs_and_what_it_leaves_out():
    flops = pd.DataFrame({"arch": ["a", "b", "c", "d"], "conv_gflop": [100.0, 100.0, 10.0, 100.0],
                          "covariance_gflop": [40.0, 40.0, 40.0, 2.0], "fold_gflop": [10.0, 10.0, 0.0, 0.0]})
    sweep = pd.DataFrame({"arch": ["a", "b", "c", "d", "e"], "ratio_nd_bn": [1.8, 1.6, 2.0, 1.0, 1.5],
                          "bn_step_s": [2.0, 2.0, 1.0, 1.0, 1.0]})
    breakdown = pd.DataFrame({"arch": ["a", "c", "d"], "patches": [0.3, 0.1, 0.1], "Newton-Schulz": [0.5, 0.1, 0.1]})
    floor = report.exact_floor(flops, sweep, breakdown).set_index("arch")
    # 1 + (1.5 * 40 + 3 * 10) / (3 * 100): symmetric covariance + its backward, fold forward + backward
    assert floor.loc["a", "flop_floor"] == pytest.approx(1.3)
    assert floor.loc["a", "outside_share"] == pytest.approx(0.4)  # (0.3 + 0.5) s of a 2 s BN step
    assert floor.loc["a", "patches_share"] == pytest.approx(0.15) and floor.loc["a", "newton_schulz_share"] == 0.25
    assert floor.loc["a", "floor_plus_outside"] == pytest.approx(1.7)
    assert floor.loc["a", "model_error"] == pytest.approx(1.7 / 1.8 - 1)
    assert floor.loc["a", "outside_cut"] == pytest.approx(0.4 / 0.2)  # room to 1.5 is 0.2
    assert math.isnan(floor.loc["b", "outside_share"]) and math.isnan(floor.loc["b", "outside_cut"])  # no breakdown
    assert floor.loc["c", "flop_floor"] == pytest.approx(3.0) and math.isinf(floor.loc["c", "outside_cut"])
    assert math.isnan(floor.loc["d", "outside_cut"])  # 1.01 + 0.2 is within the target already
    assert math.isnan(floor.loc["e", "flop_floor"])  # no FLOP model for it
    text = " ".join(report.floor_sentences(floor.reset_index()))
    assert "median FLOP floor is 1.30" in text and "measured median of 1.70" in text
    # 'a' is described (1.70 against 1.80) and needs its outside stages 2x cheaper; 'c' (3.2 vs 2.0) is not described
    assert "a (1.70 against 1.80)" in text and "a 2.0x" in text and "It does not describe c (3.20 against 2.00)" in text
    assert "c (its floor" not in text
    empty = report.exact_floor(pd.DataFrame({"note": ["not available"]}), sweep, breakdown)
    assert empty["flop_floor"].isna().all() and report.floor_sentences(empty) == []
    with pytest.raises(ValueError, match="lacks the column"):
        report.exact_floor(flops.drop(columns="fold_gflop"), sweep, breakdown)


def run_row(config: TrainConfig, status, test_acc=None, diverged_step=None, train_time_s=None):
    row = {c: None for c in RUN_COLUMNS}
    row.update(run_id=config.run_id, status=status, dataset=config.dataset, arch=config.arch, norm=config.norm,
               epochs=config.epochs, seed=config.seed, test_acc=test_acc, diverged_step=diverged_step,
               train_time_s=train_time_s, device_name="cpu x", num_threads=1, synthetic=False)
    return row


def test_refresh_tradeoff_finds_each_setting_by_its_run_id():
    runs = pd.DataFrame([
        run_row(TrainConfig(arch="vgg16", norm="bn"), "completed", 11.0, train_time_s=900.0),
        run_row(TrainConfig(arch="vgg16", norm="nd"), "completed", 74.0, train_time_s=1800.0),
        run_row(TrainConfig(arch="vgg16", norm="nd", deconv_refresh_every=4), "diverged", diverged_step=18),
        run_row(TrainConfig(arch="vgg16", norm="nd", deconv_refresh_every=16, deconv_refresh_stats="last"),
                "completed", 70.5, train_time_s=1000.0),
        run_row(TrainConfig(arch="vgg16", norm="nd", deconv_refresh_every=4, deconv_refresh_stats="last",
                            deconv_refresh_warmup=100), "completed", 72.0),
        run_row(TrainConfig(arch="vgg16", norm="nd", lr=0.05), "completed", 60.0),  # other option: not a setting
    ], columns=RUN_COLUMNS)
    bench = pd.DataFrame([bench_row("vgg16", 2.2, "2026-01-01"),
                          bench_row("vgg16", 1.3, "2026-01-01", refresh_every=16, round_statistic="mean"),
                          # a median over single steps times only the cheap steps between refreshes: ignored
                          bench_row("vgg16", 0.9, "2026-01-02", refresh_every=16, round_statistic="median")],
                         columns=BENCH_COLUMNS)
    table = report.refresh_tradeoff(runs, bench, archs=["vgg16"]).set_index("setting")
    assert table.loc["BN", "test_acc"] == 11.0 and math.isnan(table.loc["BN", "bench_ratio"])
    assert table.loc["ND, exact (k = 1)", "bench_ratio"] == 2.2
    assert table.loc["ND, k = 4, running statistics", "status"] == "diverged"
    assert table.loc["ND, k = 4, running statistics", "diverged_step"] == 18
    assert table.loc["ND, k = 16, last estimate", "test_acc"] == 70.5
    assert table.loc["ND, k = 16, last estimate", "bench_ratio"] == 1.3  # same work per step in both modes
    assert table.loc["ND, k = 4, last estimate", "status"] == "not run"
    assert table.loc["ND, k = 4, last estimate, 100 exact steps first", "test_acc"] == 72.0
    assert table.loc["ND, k = 4, last estimate, 100 exact steps first", "command"].endswith(
        "--seed 0 --deconv-refresh-every 4 --deconv-refresh-stats last --deconv-refresh-warmup 100")
    assert table.loc["BN", "command"].endswith("--norm bn --dataset cifar10 --epochs 1 --seed 0")
    assert "--deconv-refresh-stats" not in table.loc["ND, k = 16, running statistics", "command"]
    assert 60.0 not in table["test_acc"].tolist()
    text = " ".join(report.refresh_sentences(table.reset_index()))
    assert "exact layer reached 74.00% and BN 11.00%" in text
    assert "k = 4, running statistics diverged at step 18" in text
    assert "k = 16, last estimate reached 70.50% (-3.50 points against the exact layer)" in text
    assert report.refresh_sentences(report.refresh_tradeoff(runs.iloc[:0], bench, archs=["vgg16"])) == []


def test_measured_cost_sentences_name_each_machine_and_cite_the_run_notes():
    def timing(arch, ratio, note, **extra):
        row = {"device_type": "cpu", "device_name": "cpu x", "num_threads": 1, "keep_freed_memory": False,
               "synthetic": False, "dataset": "cifar10", "arch": arch, "epochs": 1, "options": "",
               "ratio_nd_bn": ratio, "notes": note}
        row.update(extra)
        return row

    times = pd.DataFrame([
        timing("a", 1.5, "busy"),
        timing("b", 2.25, "busy\nquiet", keep_freed_memory=True, dataset="cifar100", epochs=20,
               machine_id="1a2b"),
        timing("c", 9.0, "", synthetic=True),  # smoke run: not stated
        timing("d", 9.0, "", options="o1234"),  # other settings: not stated
        timing("e", float("nan"), "busy"),  # one side missing: no ratio
    ])
    bench = pd.DataFrame([bench_row("a", 1.8, "2026-01-01"), bench_row("b", 1.2, "2026-01-01"),
                          bench_row("a", 2.0, "2026-01-02", keep_freed_memory=True)], columns=BENCH_COLUMNS)
    sweep = report.bench_sweep(bench, ["a", "b"])
    assert sweep["num_threads"].tolist() == [2, 2] and sweep["batch_size"].tolist() == [128, 128]
    kept = report.bench_sweep(bench, ["a", "b"], keep_freed_memory=True)
    lines, notes = report.measured_cost_sentences(times, sweep, kept, names={"a": "Model A"})
    assert notes == ["busy", "quiet"]
    assert lines[0] == ("Training runs, CIFAR-10 Model A, 1 epoch, on cpu x (instance not recorded, CPU, "
                        "1 thread): ND took 1.50 times BN's training time (run notes 1).")
    assert lines[1] == ("Training runs, CIFAR-100 b, 20 epochs, on cpu x (instance 1a2b, CPU, 1 thread, "
                        "freed memory kept): ND took 2.25 times BN's training time (run notes 1, 2).")
    assert len(lines) == 3
    assert lines[2].startswith("Benchmarks of the exact layer on cpu x (CPU, 2 threads), training steps at "
                               "batch 128, the newest per architecture (2 of 2 architectures): an ND step "
                               "took 1.20 (b) to 1.80 (Model A) times a BN step, median 1.50")
    assert lines[2].endswith("; with freed memory kept, median 2.00 over 1 architectures.")
    empty_times = pd.DataFrame(columns=list(times.columns))
    empty_bench = report.bench_sweep(pd.DataFrame(columns=BENCH_COLUMNS), ["a"])
    assert report.measured_cost_sentences(empty_times, empty_bench) == ([], [])


def test_floor_targets_judge_the_ratio_over_the_floor_and_compare_with_the_reference_in_one_benchmark():
    floor = pd.DataFrame({"arch": ["vgg16", "resnet18", "dpn92"], "ratio_nd_bn": [2.0, 1.5, float("nan")],
                          "flop_floor": [1.5, 1.25, 1.0], "patches_share": [0.2, 0.1, float("nan")],
                          "newton_schulz_share": [0.3, 0.1, float("nan")]})
    bench = pd.DataFrame({"bench_id": ["b1", "b1", "b0"], "implementation": ["ndlib", "reference", "ndlib"],
                          "nd_step_s": [3.0, 4.0, 9.0]})
    reference_sweep = pd.DataFrame({"arch": ["vgg16", "resnet18", "dpn92"], "bench_id": [None, "b1", None],
                                    "nd_step_s": [float("nan"), 4.0, float("nan")]})
    targets = report.floor_targets(floor, bench, reference_sweep).set_index("arch")
    assert targets.loc["vgg16", "over_floor"] == pytest.approx(2.0 / 1.5)
    assert not targets.loc["vgg16", "meets_floor"] and not targets.loc["vgg16", "meets_ratio"]  # 2.0 > 1.80
    meets = targets.loc["resnet18", "meets_floor"]
    assert meets and not pd.isna(meets)  # 1.5 / 1.25 = 1.2 <= 1.25
    assert pd.isna(targets.loc["resnet18", "ratio_target"]) and pd.isna(targets.loc["resnet18", "meets_ratio"])
    assert pd.isna(targets.loc["dpn92", "meets_floor"])  # not measured: not judged
    assert targets.loc["resnet18", "ndlib_over_reference"] == pytest.approx(3.0 / 4.0)  # same benchmark b1
    assert pd.isna(targets.loc["vgg16", "ndlib_over_reference"])
    text = " ".join(report.floor_target_sentences(targets.reset_index()))
    assert "1 of 2 measured architectures are within 1.25x of their FLOP floor; above it: vgg16 (1.33x)" in text
    # the reason per stage: 2.0 - 1.25 * 1.5 = 0.125 of a BN step above; the two outside stages take 0.5,
    # so they would have to shrink to 0.375: 0.5 / 0.375 = 1.33x cheaper
    assert targets.loc["vgg16", "excess"] == pytest.approx(0.125)
    assert targets.loc["vgg16", "stages_cut"] == pytest.approx(0.5 / 0.375)
    assert pd.isna(targets.loc["resnet18", "stages_cut"])  # within its target: nothing to cut
    assert "vgg16 is 0.12 of a BN step above 1.25x its floor (1.88): patch extraction takes 0.20 and " \
           "Newton-Schulz 0.30 of a BN step, so the two would have to become 1.33x cheaper." in text
    heavy = report.floor_targets(floor.assign(patches_share=[0.05, 0.1, 0.0], newton_schulz_share=[0.05, 0.1, 0.0]),
                                 bench, reference_sweep)
    assert math.isinf(heavy.set_index("arch").loc["vgg16", "stages_cut"])  # 0.1 < 0.125: not enough even at zero
    assert "the rest is in the stages the floor counts" in " ".join(report.floor_target_sentences(heavy))
    bare = report.floor_targets(floor.drop(columns=["patches_share", "newton_schulz_share"]), bench, reference_sweep)
    assert "no stage breakdown in this setting says where" in " ".join(report.floor_target_sentences(bare))
    assert "vgg16's ND/BN is 2.00 against a target of 1.80: not met" in text
    assert "faster on 1 of the 1 architectures compared (resnet18 0.75x); 2 are not compared yet" in text
    assert "not judged" in report.floor_target_sentences(report.floor_targets(floor.iloc[2:], bench,
                                                                              reference_sweep))[0]


def test_sweep_takes_the_memory_format_asked_for():
    bench = pd.DataFrame([bench_row("a", 1.2, "2026-01-01"), bench_row("a", 0.9, "2026-01-02", channels_last=True)],
                         columns=BENCH_COLUMNS)
    assert report.bench_sweep(bench, ["a"])["ratio_nd_bn"].tolist() == [1.2]
    assert report.bench_sweep(bench, ["a"], channels_last=True)["ratio_nd_bn"].tolist() == [0.9]


def _pair(arch, bench_id, ndlib_s, public_s, channels_last=False, public_cl=0.0, device="cpu x", bn_s=1.0):
    common = dict(bench_id=f"{arch}-{bench_id}", created_at=bench_id, channels_last=channels_last, machine_type=device,
                  bn_step_s=bn_s)
    return [bench_row(arch, ndlib_s, **common, nd_convs_channels_last=0),
            bench_row(arch, public_s, **common, implementation="reference", nd_convs_channels_last=public_cl)]


def test_layout_comparison_times_both_implementations_in_each_layout_on_one_machine():
    bench = pd.DataFrame(
        _pair("resnext29", "1", 1.10, 1.00, public_cl=1.0) + _pair("resnext29", "2", 0.50, 0.60, True, 1.0, bn_s=0.5)
        + _pair("vgg16", "1", 0.80, 1.00) + _pair("vgg16", "2", 0.90, 1.00, True, device="other")
        + _pair("dpn92", "1", 1.20, 1.00, public_cl=0.99) + _pair("dpn92", "2", 1.30, 1.20, True, 1.0),
        columns=BENCH_COLUMNS)
    out = layouts.layout_comparison(bench, ["resnext29", "vgg16", "dpn92", "pnasneta"]).set_index("arch")
    assert out.loc["resnext29", "ndlib_over_public"] == pytest.approx(1.1)
    assert out.loc["resnext29", "ndlib_over_public_channels_last"] == pytest.approx(0.5 / 0.6)
    assert out.loc["resnext29", "public_channels_last_share"] == 1.0
    assert out.loc["resnext29", "ndlib_channels_last_share"] == 0
    assert out.loc["resnext29", "bn_channels_last_speedup"] == pytest.approx(2.0)
    assert pd.isna(out.loc["vgg16", "ndlib_over_public_channels_last"])  # channels-last timed on another machine
    assert out.loc["pnasneta"].isna().all()
    lines = layouts.layout_sentences(out.reset_index())
    assert len(lines) == 2  # vgg16: ndlib already faster; pnasneta: not timed
    assert lines[0].startswith("resnext29: in the default layout ndlib's ND step is 1.10x")
    assert "is its layout" in lines[0]
    assert "100% of its convolutions channels-last, ndlib 0%" in lines[0]
    assert "still 1.08x" in lines[1] and "does not explain" in lines[1]
    assert layouts.layout_comparison(pd.DataFrame(), ["a"])["ndlib_over_public"].isna().all()


def test_sweep_can_keep_one_machines_benchmarks():
    bench = pd.DataFrame([bench_row("a", 1.2, "2026-01-01"), bench_row("a", 0.9, "2026-01-02", machine_type="new")],
                         columns=BENCH_COLUMNS)
    assert report.bench_sweep(bench, ["a"])["ratio_nd_bn"].tolist() == [0.9]
    assert report.bench_sweep(bench, ["a"], machine_type="cpu x")["ratio_nd_bn"].tolist() == [1.2]
