"""ndlib.convergence and its figures, on run and history frames built here (never results/)."""
from __future__ import annotations

import matplotlib
import pandas as pd
import pytest

matplotlib.use("Agg")

from ndlib import convergence, plots, published, report  # noqa: E402
from ndlib.config import TrainConfig, execution_options, run_id_options  # noqa: E402


def _run(run_id, arch="vgg16", norm="bn", dataset="cifar10", status="completed", machine="m1", seed=0, **extra):
    row = {name: None for name in report.RUN_COLUMNS}
    row.update(run_id=run_id, status=status, table=1, dataset=dataset, arch=arch, norm=norm, epochs=20, seed=seed,
               synthetic=False, machine_id=machine, machine_type="cpu", num_threads=1, **extra)
    return row


def _history(run_id, accuracies, seconds=100.0):
    return [{"run_id": run_id, "epoch": e, "test_acc": a, "train_acc": a + 5, "train_loss": 1.0, "test_loss": 1.0,
             "train_time_s": seconds} for e, a in enumerate(accuracies, 1)]


def _frames():
    runs = pd.DataFrame([_run("t1-cifar10-vgg16-bn-e20-s0"), _run("t1-cifar10-vgg16-nd-e20-s0", norm="nd"),
                         _run("t1-cifar100-vgg16-bn-e20-s0", dataset="cifar100", status="running"),
                         _run("t1-cifar100-vgg16-nd-e20-s0", norm="nd", dataset="cifar100", status="interrupted",
                              machine="m2"),
                         _run("t1-cifar10-vgg16-nd-e20-s0-o1a2b3c4d", norm="nd"),  # other options: left out
                         _run("t1-cifar10-resnet18-bn-e1-s0", arch="resnet18")],  # another budget
                        columns=report.RUN_COLUMNS)
    runs.loc[runs["run_id"].str.endswith("e1-s0"), "epochs"] = 1
    histories = pd.DataFrame(
        _history("t1-cifar10-vgg16-bn-e20-s0", [50 + e for e in range(20)])
        + _history("t1-cifar10-vgg16-nd-e20-s0", [60 + e for e in range(20)], seconds=200.0)
        + _history("t1-cifar100-vgg16-bn-e20-s0", [10, 20, 30])
        + _history("t1-cifar100-vgg16-nd-e20-s0", [25, 35])
        + _history("t1-cifar10-vgg16-nd-e20-s0-o1a2b3c4d", [1.0])
        + _history("t1-cifar10-resnet18-bn-e1-s0", [40.0]))
    return runs, histories


def test_reproduction_labels_say_training_accuracy_only_where_the_evidence_holds():
    assert convergence.reproduction_label("cifar10", 20) == "split not stated"
    for dataset, epochs in (("cifar100", 20), ("cifar100", 100), ("cifar10", 100)):
        assert convergence.reproduction_label(dataset, epochs) == "training accuracy (our inference)"


def test_curves_keep_paper_setting_runs_of_the_budget_with_cumulative_training_time():
    curves = convergence.campaign_curves(*_frames())
    assert set(curves["run_id"]) == {"t1-cifar10-vgg16-bn-e20-s0", "t1-cifar10-vgg16-nd-e20-s0",
                                     "t1-cifar100-vgg16-bn-e20-s0", "t1-cifar100-vgg16-nd-e20-s0"}
    nd = curves[curves["run_id"] == "t1-cifar10-vgg16-nd-e20-s0"]
    assert list(nd["elapsed_s"]) == [200.0 * e for e in range(1, 21)]
    assert curves.groupby("run_id")["in_progress"].first().to_dict() == {
        "t1-cifar10-vgg16-bn-e20-s0": False, "t1-cifar10-vgg16-nd-e20-s0": False,
        "t1-cifar100-vgg16-bn-e20-s0": True, "t1-cifar100-vgg16-nd-e20-s0": True}
    assert convergence.campaign_curves(pd.DataFrame(columns=report.RUN_COLUMNS), pd.DataFrame()).empty


def test_cell_progress_gives_final_values_and_where_runs_in_progress_stand():
    curves = convergence.campaign_curves(*_frames())
    c10 = convergence.cell_progress(curves, "cifar10").set_index(["arch", "norm"])
    assert len(c10) == 20 and c10.loc[("vgg16", "nd"), "ours_test"] == 79.0
    assert bool(c10.loc[("vgg16", "nd"), "ours_final"]) and c10.loc[("resnet18", "bn"), "ours_epochs_done"] == 0
    paper = published.paper_table1().query("dataset == 'cifar10' and arch == 'vgg16' and epochs == 20")
    assert c10.loc[("vgg16", "bn"), "paper_test"] == paper.query("method == 'BN'")["test_acc_pct"].item()
    assert (c10["repro_label"] == "split not stated").all()
    c100 = convergence.cell_progress(curves, "cifar100").set_index(["arch", "norm"])
    assert c100.loc[("vgg16", "bn"), "ours_epochs_done"] == 3 and not c100.loc[("vgg16", "bn"), "ours_final"]
    assert (c100["repro_label"] == "training accuracy (our inference)").all()


def test_gains_compare_at_the_last_epoch_both_sides_finished():
    curves = convergence.campaign_curves(*_frames())
    gains = convergence.gains_so_far(curves).set_index("dataset")
    assert gains.loc["cifar10", "final"] and gains.loc["cifar10", "ours_gain"] == pytest.approx(10.0)
    assert gains.loc["cifar100", "at_epoch"] == 2 and not gains.loc["cifar100", "final"]
    assert gains.loc["cifar100", "ours_gain"] == pytest.approx(35 - 20)
    paper = published.paper_table1().query("dataset == 'cifar10' and arch == 'vgg16' and epochs == 20")
    expected = paper.set_index("method")["test_acc_pct"]
    assert gains.loc["cifar10", "paper_gain"] == pytest.approx(expected["ND"] - expected["BN"])
    lines = convergence.progress_sentences(convergence.cell_progress(curves, "cifar10"),
                                           gains.reset_index().query("dataset == 'cifar10'"))
    assert lines[0] == ("2 of the paper's 20 cells at 20 epochs have a completed run of ours; "
                        "0 more are in progress.")
    assert lines[1].startswith("Where both sides finished 20 epochs, ND is ahead of BN in 1 of 1")
    assert gains.loc["cifar10", ["paper_bn", "paper_nd"]].tolist() == [expected["BN"], expected["ND"]]
    paper_bn, paper_nd = expected["BN"], expected["ND"]
    assert lines[2].startswith(f"VGG-16 (CIFAR-10), after 20 epochs: ND − BN +10.00 points (BN 69.00 %, ND 79.00 %) "
                               f"against the paper's {paper_nd - paper_bn:+.2f} (BN {paper_bn:.2f} %, "
                               f"ND {paper_nd:.2f} %).")
    assert "neither gain has a noise estimate" in lines[2]
    partial = convergence.progress_sentences(convergence.cell_progress(curves, "cifar100"),
                                             gains.reset_index().query("dataset == 'cifar100'"))
    assert "No architecture has both BN and ND at 20 epochs yet" in partial[1]
    expected = "VGG-16 (CIFAR-100), in progress: after epoch 2 of 20 ND (35.00 %) is 15.00 points ahead of BN (20.00 %)"
    assert expected in partial[2]


def test_curves_come_in_the_papers_order_which_the_panels_follow():
    runs = pd.DataFrame([_run("t1-cifar100-vgg16-bn-e20-s0", dataset="cifar100"),
                         _run("t1-cifar10-efficientnetb0-bn-e20-s0", arch="efficientnetb0"),
                         _run("t1-cifar10-vgg16-nd-e20-s0", norm="nd"), _run("t1-cifar10-vgg16-bn-e20-s0")],
                        columns=report.RUN_COLUMNS)
    histories = pd.DataFrame([row for run_id in runs["run_id"] for row in _history(run_id, [10.0, 20.0])])
    curves = convergence.campaign_curves(runs, histories)
    assert list(dict.fromkeys(curves["run_id"])) == [  # alphabetical run ids would put EfficientNet first
        "t1-cifar10-vgg16-bn-e20-s0", "t1-cifar10-vgg16-nd-e20-s0", "t1-cifar10-efficientnetb0-bn-e20-s0",
        "t1-cifar100-vgg16-bn-e20-s0"]
    assert list(curves["elapsed_s"].iloc[:2]) == [100.0, 200.0]
    fig = plots.convergence_figure(curves, pd.DataFrame(columns=["dataset", "arch", "norm", "paper_test"]),
                                   report.DATASET_TITLES)
    assert [ax.get_title().split("\n")[0] for ax in fig.axes if ax.get_visible()] == [
        "VGG-16, CIFAR-10", "EfficientNet, CIFAR-10", "VGG-16, CIFAR-100"]


def test_time_is_compared_only_on_one_machine():
    pairs = convergence.same_machine_pairs(convergence.campaign_curves(*_frames())).set_index("dataset")
    assert pairs.loc["cifar10", "comparable"] and pairs.loc["cifar10", "machine_id"] == "m1"
    assert not pairs.loc["cifar100", "comparable"] and "different machines" in pairs.loc["cifar100", "reason"]


def test_a_pair_on_two_machines_is_named_with_where_each_side_trained():
    runs, histories = _frames()
    curves = convergence.campaign_curves(runs, histories)
    [line] = convergence.unpaired_sentences(curves, convergence.same_machine_pairs(curves))
    assert line == ("VGG-16 (CIFAR-100): no comparison at equal time. BN and ND both trained on cpu, 1 thread, "
                    "but on different machine instances, so their training seconds do not compare.")
    runs.loc[runs["run_id"] == "t1-cifar100-vgg16-nd-e20-s0", "machine_type"] = "AMD EPYC"
    curves = convergence.campaign_curves(runs, histories)
    [line] = convergence.unpaired_sentences(curves, convergence.same_machine_pairs(curves))
    assert "BN trained on cpu, 1 thread, ND on AMD EPYC, 1 thread, so" in line
    # a cell with one side only, and a comparable pair, get no such line
    alone = curves[~((curves["dataset"] == "cifar100") & (curves["norm"] == "nd"))]
    assert convergence.unpaired_sentences(alone, convergence.same_machine_pairs(alone)) == []


def test_equal_time_compares_both_sides_after_the_same_training_seconds():
    curves = convergence.campaign_curves(*_frames())
    table = convergence.equal_time(curves, convergence.same_machine_pairs(curves))
    assert list(table["dataset"]) == ["cifar10"]  # the CIFAR-100 pair trained on two machines
    row = table.iloc[0]
    # BN: 100 s per epoch, 50 + (epoch - 1) %; ND: 200 s per epoch, 60 + (epoch - 1) %
    assert row["at_s"] == 2000.0 and (row["bn_epoch"], row["bn_test"]) == (20, 69.0)
    assert (row["nd_epoch"], row["nd_test"], row["lead"]) == (10, 69.0, 0.0)
    assert (row["nd_reach_epoch"], row["nd_reach_s"], row["bn_total_s"]) == (10, 2000.0, 2000.0)
    [line] = convergence.equal_time_sentences(table)
    assert "after 0.56 h of training each, BN 69.00 % (epoch 20) and ND 69.00 % (epoch 10): ND level" in line
    assert "after 0.56 h (epoch 10), 1.00 times the 0.56 h BN took for its 20 epochs" in line
    # ND under way after 3 epochs (600 s): BN after the same 600 s is at epoch 6
    nd = (curves["norm"] == "nd") & (curves["dataset"] == "cifar10")
    partial = curves[~nd | (curves["epoch"] <= 3)].copy()
    partial.loc[nd, "in_progress"] = True
    row = convergence.equal_time(partial, convergence.same_machine_pairs(partial)).iloc[0]
    assert row["at_s"] == 600.0 and (row["bn_epoch"], row["bn_test"], row["nd_epoch"], row["nd_test"]) == (6, 55, 3, 62)
    assert row["lead"] == 7.0 and row["in_progress"] and row["nd_reach_epoch"] == 0
    [line] = convergence.equal_time_sentences(pd.DataFrame([row]))
    assert "ND ahead by 7.00 points at equal time" in line and "has not reached BN's final 69.00 % yet" in line
    assert line.endswith("a snapshot, not a result.")
    assert convergence.equal_time(curves.iloc[0:0], convergence.same_machine_pairs(curves)).empty


def test_the_figures_draw_one_panel_per_cell_and_say_what_is_missing():
    curves = convergence.campaign_curves(*_frames())
    paper = published.paper_table1().query("epochs == 20").assign(norm=lambda d: d["method"].str.lower())
    paper = paper.rename(columns={"test_acc_pct": "paper_test"})
    titles = report.DATASET_TITLES
    fig = plots.convergence_figure(curves, paper, titles)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 2 and "in progress: BN 3/20, ND 2/20" in visible[1].get_title()
    assert len(visible[0].lines) == 4  # two curves, two paper lines
    fig = plots.time_to_accuracy_figure(curves, convergence.same_machine_pairs(curves), titles)
    texts = [" ".join(t.get_text().split()) for ax in fig.axes for t in ax.texts]
    assert any("BN and ND trained on different machines or thread counts" in t for t in texts)
    # the comparable panel marks equal training time where BN (100 s x 20 epochs) stopped: 2000 s
    marked = [line.get_xdata()[0] for ax in fig.axes for line in ax.lines if line.get_linestyle() == ":"]
    assert marked == [pytest.approx(2000.0 / 3600.0)]
    with pytest.raises(ValueError, match="nothing to plot"):
        plots.convergence_figure(curves.iloc[0:0], paper, titles)


def test_bf16_speedups_pair_each_bf16_benchmark_with_its_float32_twin():
    def row(bench_id, amp, bn, nd, created, threads=1, device="cpu-a"):
        return {"bench_id": bench_id, "amp": amp, "bn_step_s": bn, "nd_step_s": nd, "ratio_nd_bn": nd / bn,
                "created_at": created, "machine_type": device, "arch": "resnet18", "batch_size": 32,
                "num_threads": threads, "implementation": "ndlib"}
    bench = pd.DataFrame([row("f-old", False, 9.0, 9.0, "1"), row("f", False, 2.0, 5.0, "2"),
                          row("b", True, 40.0, 50.0, "3"), row("b2", True, 1.0, 2.5, "4", threads=2),
                          row("f-after", False, 1.0, 1.0, "5")])
    out = convergence.bf16_speedups(bench)
    assert list(out["bench_id"]) == ["b"]  # b2 has no float32 twin at 2 threads
    assert out.loc[0, "bn_speedup"] == pytest.approx(2.0 / 40.0) and out.loc[0, "nd_speedup"] == pytest.approx(0.1)
    assert out.loc[0, "ratio_fp32"] == pytest.approx(2.5) and out.loc[0, "ratio_bf16"] == pytest.approx(1.25)
    assert convergence.bf16_speedups(pd.DataFrame()).empty


def test_a_bf16_timing_is_matched_only_within_one_machine_type():
    """Regression: the AVX2-only AMD EPYC's bf16 benchmarks (27x slower, no ISA recorded) described
    the runs of an AMD EPYC with AVX512-BF16, because both have one CPU name."""
    from ndlib.records import machine_type

    old_amd, new_amd = machine_type("cpu", "AMD EPYC", None), machine_type("cpu", "AMD EPYC", "avx512_bf16")
    assert (old_amd, new_amd) == ("AMD EPYC", "AMD EPYC (AVX512-BF16)")
    assert machine_type("cpu", "Xeon", "amx_bf16") == "Xeon (AMX)"
    assert machine_type("cpu", "Xeon", "none") == "Xeon (no native bf16)"
    assert machine_type("cuda", "H200", "amx_bf16") == "H200"  # a GPU's timing: the host CPU's ISA is beside it
    assert machine_type("cpu", None, "none") is None

    def row(bench_id, amp, step, created, machine):
        return {"bench_id": bench_id, "amp": amp, "bn_step_s": step, "nd_step_s": step, "ratio_nd_bn": 1.0,
                "created_at": created, "machine_type": machine, "arch": "vgg16", "batch_size": 128,
                "num_threads": 1, "implementation": "ndlib"}
    bench = pd.DataFrame([row("old-f", False, 1.0, "1", old_amd), row("new-b", True, 0.5, "2", new_amd),
                          row("old-b", True, 27.0, "3", old_amd)])
    speedups = convergence.bf16_speedups(bench)
    assert list(speedups["bench_id"]) == ["old-b"]  # new-b's only float32 twin is another machine type
    curves = convergence.campaign_curves(*_frames()).assign(machine_type=new_amd)
    fidelity = pd.DataFrame({"inside": [True], "machine_type": [new_amd], "bf16_status": ["completed"]})
    text = convergence.precision_verdict(speedups, curves, fidelity)
    assert "No bf16 benchmark is recorded on the machine of these runs yet" in text and "27" not in text


def test_precision_verdict_gives_the_fidelity_verdict_then_the_machines_bf16_timings():
    curves = convergence.campaign_curves(*_frames())
    fidelity = pd.DataFrame({"inside": [True, pd.NA], "machine_type": ["amx", None], "bf16_status": ["completed", ""]})
    speedups = pd.DataFrame({"machine_type": ["cpu", "other"], "bn_speedup": [0.05, 2.0], "nd_speedup": [0.1, 1.5]})
    text = convergence.precision_verdict(speedups, curves, fidelity)
    assert text.startswith("**Verdict: float32 for now.** 1 of 2") and "10.0 to 20.0 times slower" in text
    assert "(amx, cpu)" in text
    assert "No bf16 benchmark is recorded on the machines" in convergence.precision_verdict(
        speedups.iloc[1:], curves, fidelity)
    faster = convergence.precision_verdict(speedups.assign(machine_type=["cpu", "amx"], bn_speedup=[1.7, 1.1],
                                                           nd_speedup=[1.3, 1.2]), curves,
                                           fidelity.assign(inside=[True, True]))
    assert faster.startswith("**Verdict: bfloat16 accepted.**") and "1.10x to 1.70x" in faster
    assert "(amx, cpu)" in faster


def _with_run(runs, histories, run_id, **fields):
    runs = pd.concat([runs, pd.DataFrame([_run(run_id, norm="nd", **fields)], columns=report.RUN_COLUMNS)])
    return runs, pd.concat([histories, pd.DataFrame(_history(run_id, [70.0]))])


def test_curves_take_one_execution_float32_or_the_paper_settings_in_bf16_or_channels_last():
    runs, histories = _frames()
    bf16_id = f"t1-cifar10-vgg16-nd-e20-s0-{report.BF16_OPTIONS}"
    layout_id = f"t1-cifar10-vgg16-nd-e20-s0-{execution_options(amp=True, channels_last=True)}"
    other_id = f"t1-cifar10-vgg16-nd-e20-s0-{run_id_options(TrainConfig(arch='vgg16', lr=0.05).run_id)}"
    runs, histories = _with_run(runs, histories, bf16_id, amp=True)
    runs, histories = _with_run(runs, histories, layout_id, amp=True)
    runs, histories = _with_run(runs, histories, other_id)
    assert not {bf16_id, layout_id, other_id} & set(convergence.campaign_curves(runs, histories)["run_id"])
    bf16 = convergence.campaign_curves(runs, histories, execution=convergence.Execution(amp=True))
    assert set(bf16["run_id"]) == {bf16_id} and bf16["amp"].all() and not bf16["channels_last"].any()
    both = convergence.campaign_curves(runs, histories, execution=convergence.Execution(True, True))
    assert set(both["run_id"]) == {layout_id} and both["channels_last"].all()


def test_curves_take_each_cell_in_the_execution_the_campaign_gives_it():
    runs, histories = _frames()
    bf16_id = f"t1-cifar10-vgg16-nd-e20-s0-{report.BF16_OPTIONS}"
    runs, histories = _with_run(runs, histories, bf16_id, amp=True)
    cells = {("cifar10", "vgg16"): convergence.Execution(amp=True), ("cifar100", "vgg16"): convergence.Execution()}
    curves = convergence.campaign_curves(runs, histories, execution=cells)
    chosen = curves.drop_duplicates("run_id").set_index("run_id")["amp"]
    assert chosen.to_dict() == {bf16_id: True, "t1-cifar100-vgg16-bn-e20-s0": False,
                                "t1-cifar100-vgg16-nd-e20-s0": False}  # CIFAR-10 float32 runs left out
    # a cell the mapping does not name is left out altogether
    only = {("cifar10", "vgg16"): convergence.Execution(amp=True)}
    assert set(convergence.campaign_curves(runs, histories, execution=only)["run_id"]) == {bf16_id}
    # the runs of the cells in another execution than theirs: the CIFAR-10 float32 runs
    other = convergence.curves_in_other_executions(runs, histories, 20, cells)
    assert set(other["run_id"]) == {"t1-cifar10-vgg16-bn-e20-s0", "t1-cifar10-vgg16-nd-e20-s0"}
    assert convergence.curves_in_other_executions(runs, histories, 20, {}).empty


def test_cell_executions_and_their_words():
    configs = [TrainConfig(arch=arch, norm=norm, dataset=dataset, epochs=20, amp=arch == "vgg16")
               for dataset in ("cifar10", "cifar100") for arch in ("vgg16", "pnasneta") for norm in ("bn", "nd")]
    configs.append(TrainConfig(arch="dpn92", epochs=1))  # another budget: not a cell of this one
    cells = convergence.cell_executions(configs, 20)
    E = convergence.Execution
    assert cells == {("cifar10", "vgg16"): E(amp=True), ("cifar10", "pnasneta"): E(),
                     ("cifar100", "vgg16"): E(amp=True), ("cifar100", "pnasneta"): E()}
    assert convergence.execution_text({k: E(amp=True) for k in cells}) == "bfloat16 autocast"
    assert convergence.execution_text({}) == "float32"
    cells[("cifar100", "efficientnetb0")] = E(amp=True)
    assert convergence.execution_text(cells) == "bfloat16 autocast (float32: PNASNetA)"
    cells[("cifar10", "efficientnetb0")] = E()
    assert convergence.execution_text(cells) == "bfloat16 autocast (float32: PNASNetA, CIFAR-10 EfficientNet)"
    cells[("cifar10", "resnet18")] = cells[("cifar100", "resnet18")] = E(amp=True, channels_last=True)
    assert convergence.execution_text(cells) == ("bfloat16 autocast (float32: PNASNetA, CIFAR-10 EfficientNet); "
                                                 "channels-last layout: ResNet-18 (contiguous: the rest)")
    assert convergence.execution_text({k: E(channels_last=True) for k in cells}) == "float32; channels-last layout"
    assert [convergence.execution_words(e) for e in (E(), E(amp=True), E(True, True), None)] == [
        "float32", "bf16", "bf16, channels-last", "—"]
    with pytest.raises(ValueError, match="cifar10 vgg16 at 20 epochs has runs in two executions"):
        convergence.cell_executions(configs + [TrainConfig(arch="vgg16", norm="nd", epochs=20)], 20)
    with pytest.raises(ValueError, match="one precision and layout"):
        convergence.cell_executions(configs + [TrainConfig(arch="vgg16", norm="nd", epochs=20, amp=True,
                                                           channels_last=True)], 20)


def test_a_cell_whose_nd_side_computes_the_covariance_backward_in_bf16():
    """covariance_grad is the ND side's: the cell's BN run is its (amp, layout) run, its ND run the
    one with the option; the ND run without it is a run in another execution, the BN run is not."""
    E = convergence.Execution
    pair = [TrainConfig(arch="resnet18", norm=norm, dataset="cifar100", epochs=20, amp=True, channels_last=True,
                        **({"deconv_covariance_grad": "input"} if norm == "nd" else {})) for norm in ("bn", "nd")]
    cells = convergence.cell_executions(pair, 20)
    assert cells == {("cifar100", "resnet18"): E(True, True, "input")}
    with pytest.raises(ValueError, match="ND runs with two covariance_grad settings"):
        convergence.cell_executions(pair + [TrainConfig(arch="resnet18", norm="nd", dataset="cifar100", epochs=20,
                                                        amp=True, channels_last=True, seed=1)], 20)
    assert convergence.execution_words(cells[("cifar100", "resnet18")]) == "bf16, channels-last, ND bf16 cov. backward"
    mixed = {**cells, ("cifar100", "mobilenetv2"): E(True, True), ("cifar100", "senet18"): E(True, True)}
    assert convergence.execution_text(mixed) == ("bfloat16 autocast; channels-last layout; ND's covariance backward "
                                                 "in bf16: ResNet-18 (float32: the rest)")
    layout = execution_options(amp=True, channels_last=True)
    low = execution_options(amp=True, channels_last=True, covariance_grad="input")
    ids = {"bn": f"t1-cifar100-resnet18-bn-e20-s0-{layout}", "nd": f"t1-cifar100-resnet18-nd-e20-s0-{low}",
           "nd32": f"t1-cifar100-resnet18-nd-e20-s0-{layout}"}
    runs = pd.DataFrame([_run(ids["bn"], arch="resnet18", dataset="cifar100"),
                         _run(ids["nd"], arch="resnet18", norm="nd", dataset="cifar100"),
                         _run(ids["nd32"], arch="resnet18", norm="nd", dataset="cifar100")], columns=report.RUN_COLUMNS)
    histories = pd.DataFrame(sum((_history(run_id, [30.0, 40.0]) for run_id in ids.values()), []))
    curves = convergence.campaign_curves(runs, histories, execution=cells)
    assert set(curves["run_id"]) == {ids["bn"], ids["nd"]} and len(curves) == 4
    grads = curves.drop_duplicates("run_id").set_index("norm")["covariance_grad"]
    assert grads["nd"] == "input" and grads["bn"] is None  # a BN run has no covariance
    other = convergence.curves_in_other_executions(runs, histories, 20, cells)
    assert set(other["run_id"]) == {ids["nd32"]} and len(other) == 2
    assert set(report.paper_settings_only(runs, True, True, "input")["run_id"]) == {ids["bn"], ids["nd"]}
    assert set(report.paper_settings_only(runs, True, True)["run_id"]) == {ids["bn"], ids["nd32"]}
