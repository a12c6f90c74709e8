"""The benchmark harness on tiny models: interleaving, summaries, records, loaders, CLI."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from torch import nn

from ndlib import bench, cpu_memory
from ndlib import layers as nd
from ndlib._reference import to_reference


def tiny(norm: str) -> nn.Module:
    torch.manual_seed(0)
    if norm == "bn":
        body = [nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                nn.Conv2d(8, 8, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU()]
        head = nn.Linear(8, 10)
    else:
        body = [nd.FastDeconv(3, 8, 3, padding=1), nn.ReLU(), nd.FastDeconv(8, 8, 1, block=4), nn.ReLU()]
        head = nd.Delinear(8, 10, block=4)
    return nn.Sequential(*body, nn.AdaptiveAvgPool2d(1), nn.Flatten(), head)


def tiny_models() -> dict[str, nn.Module]:
    nd_model = tiny("nd")
    return {"bn": tiny("bn"), "nd": nd_model, "nd_reference": to_reference(nd_model)}


def test_time_train_steps_interleaves_and_trains():
    models = tiny_models()
    before = models["nd"][0].weight.detach().clone()
    order = []
    for name, model in models.items():
        model.register_forward_pre_hook(lambda m, a, name=name: order.append(name))
    images, labels = torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))
    times = bench.time_train_steps(models, images, labels, warmup=1, rounds=3, steps=2)
    assert {k: [len(r) for r in v] for k, v in times.items()} == {k: [2, 2, 2] for k in models}
    assert all(t > 0 for rounds in times.values() for r in rounds for t in r)
    # warm-up, then A B C / C B A / A B C with 2 steps each
    timed = order[3:]
    assert timed[::2] == ["bn", "nd", "nd_reference", "nd_reference", "nd", "bn", "bn", "nd", "nd_reference"]
    assert not torch.equal(before, models["nd"][0].weight)  # the SGD step ran


def test_summarize_medians_and_pair_ratios():
    times = {"bn": [[1.0], [2.0], [1.0]], "nd": [[2.0], [3.0], [2.5]]}
    summary = bench.summarize(times)
    assert summary["bn"]["step_s"] == 1.0
    assert summary["nd"]["step_s"] == 2.5
    assert summary["nd"]["pair_ratios"] == [2.0, 1.5, 2.5]
    assert (summary["nd"]["ratio"], summary["nd"]["ratio_min"], summary["nd"]["ratio_max"]) == (2.0, 1.5, 2.5)


def test_run_bench_writes_record_and_load_bench_reads_it(tmp_path):
    config = bench.BenchConfig(arch="tiny", batch_size=4, rounds=2, warmup=1, image_size=8, stages=True,
                               stage_repeats=1, out_dir=str(tmp_path), threads=1, note="unit test")
    record = bench.run_bench(config, models=tiny_models(), log=None)
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1 and not list(tmp_path.glob(".*tmp"))
    stored = json.loads(files[0].read_text())
    assert stored["bench_id"] == record["bench_id"]
    assert stored["input"].startswith("synthetic")
    assert len(stored["load_avg_before"]) == 3
    frame = bench.load_bench(tmp_path)
    assert list(frame.columns) == bench.BENCH_COLUMNS
    assert sorted(frame["implementation"]) == ["ndlib", "reference"]
    row = frame.set_index("implementation").loc["ndlib"]
    assert row["arch"] == "tiny" and row["batch_size"] == 4 and row["device_type"] == "cpu"
    assert row["num_threads"] == 1 and row["rounds"] == 2
    assert row["keep_freed_memory"] == cpu_memory.is_kept() == stored["keep_freed_memory"]  # the process's state
    assert row["ratio_nd_bn"] == pytest.approx(record["summary"]["nd"]["ratio"])
    assert row["ratio_min"] <= row["ratio_nd_bn"] <= row["ratio_max"]
    assert stored["conv_layouts"]["nd"] == {"convs": 2, "channels_last": 0}
    assert row["nd_convs_channels_last"] == row["bn_convs_channels_last"] == 0.0
    del stored["conv_layouts"]  # a record from before layouts were recorded
    files[0].write_text(json.dumps(stored))
    assert bench.load_bench(tmp_path)["nd_convs_channels_last"].isna().all()
    stages = bench.load_stages(tmp_path)
    assert list(stages.columns) == bench.STAGE_COLUMNS
    assert set(stages["stage"]) >= {"patch_extraction", "centering", "covariance", "newton_schulz",
                                    "weight_folding", "convolution"}
    assert set(stages["layer"]) == {"0", "2"}  # the two FastDeconv layers
    assert (stages[["forward_s", "backward_s"]] >= 0).all().all()


def test_stage_pieces_compose_to_the_layer_statistics():
    """The stages the breakdown times are the computation of the layer (same numbers)."""
    torch.manual_seed(0)
    layer = nd.FastDeconv(16, 8, 3, padding=1, block=8).double().train()
    x = torch.randn(2, 16, 9, 9, dtype=torch.float64)
    stages = dict(bench.deconv_stages(layer))
    X = stages["patch_extraction"](x)
    Xc = stages["centering"](X)
    cov = stages["covariance"](Xc)
    mean, cov_fused = stages["center_covariance_fused"](X)
    torch.testing.assert_close(cov, cov_fused)
    deconv = stages["newton_schulz"](cov)
    mean_ref, deconv_ref = layer.batch_statistics(x)
    torch.testing.assert_close(mean.reshape(mean_ref.shape), mean_ref)
    torch.testing.assert_close(deconv, deconv_ref)
    w, b = stages["weight_folding"](mean, deconv)
    torch.testing.assert_close(stages["convolution"](x, w, b), layer(x))


def test_load_bench_empty_and_bad_files(tmp_path):
    empty = bench.load_bench(tmp_path / "missing")
    assert isinstance(empty, pd.DataFrame) and empty.empty and list(empty.columns) == bench.BENCH_COLUMNS
    assert bench.load_stages(tmp_path).empty
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="broken.json"):
        bench.load_bench(tmp_path)


@pytest.mark.parametrize("kwargs, match", [
    ({"batch_size": 0}, "batch_size"),
    ({"rounds": -1}, "rounds"),
    ({"warmup": -1}, "warmup"),
    ({"implementations": ("fast",)}, "implementations"),
    ({"device": "tpu"}, "device"),
    ({"threads": 0}, "threads"),
    ({"image_size": -3}, "image_size"),
    ({"refresh_every": 0}, "refresh_every"),
    ({"refresh_every": 4}, "ndlib's layers only"),  # with the default implementations (reference included)
    ({"refresh_every": 4, "steps": 6, "implementations": ("ndlib",)}, "multiple of refresh_every"),
    ({"refresh_every": "4", "implementations": ("ndlib",)}, "refresh_every must be a positive int"),
])
def test_bench_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        bench.BenchConfig(**kwargs)


def test_run_bench_rejects_bad_models_and_missing_cuda(tmp_path):
    config = bench.BenchConfig(arch="tiny", batch_size=2, rounds=1, image_size=8, out_dir=str(tmp_path))
    with pytest.raises(ValueError, match="include 'bn'"):
        bench.run_bench(config, models={"nd": tiny("nd")}, log=None)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cuda"):
            bench.run_bench(bench.BenchConfig(device="cuda", out_dir=str(tmp_path)), log=None)


def test_cli_registers_bench():
    from ndlib.cli import build_parser

    args = build_parser().parse_args(["bench", "--arch", "resnet18", "--batch-size", "8", "--rounds", "2"])
    assert args.command == "bench" and args.batch_size == 8 and args.rounds == 2 and args.threads == 2
    assert args.handler is bench._handle


def test_refresh_every_builds_the_nd_model_with_it_and_names_the_record(tmp_path):
    from ndlib.layers import FastDeconv

    config = bench.BenchConfig(arch="pnasneta", batch_size=2, rounds=1, warmup=0, image_size=8, threads=1,
                               implementations=("ndlib",), refresh_every=4, out_dir=str(tmp_path))
    models = bench._build_models(config, torch.device("cpu"))
    layers = [m for m in models["nd"].modules() if isinstance(m, FastDeconv)]
    assert layers and all(m.refresh_every == 4 for m in layers)
    record = bench.run_bench(config, models={"bn": tiny("bn"), "nd": tiny("nd")}, log=None)
    assert "-r4-" in record["bench_id"]
    assert bench.load_bench(tmp_path)["refresh_every"].tolist() == [4]
    # a round times one whole refresh cycle (4 steps), averaged: the refresh step is in the ratio
    assert config.steps == 4 and record["round_statistic"] == "mean"
    assert [len(r) for r in record["step_times_s"]["nd"]] == [4]
    assert bench.load_bench(tmp_path)["round_statistic"].tolist() == ["mean"]
    assert bench.BenchConfig(implementations=("ndlib",), refresh_every=4, steps=8).steps == 8
    assert bench.BenchConfig().steps == 1 and bench.BenchConfig().round_statistic == "median"


def test_summarize_mean_rounds_keep_the_expensive_step():
    times = {"bn": [[1.0, 1.0, 1.0, 1.0]], "nd": [[4.0, 1.0, 1.0, 1.0]]}  # one refresh step, three cheap
    assert bench.summarize(times)["nd"]["ratio"] == 1.0  # a median hides the refresh step
    assert bench.summarize(times, round_statistic="mean")["nd"]["ratio"] == pytest.approx(7 / 4)
    with pytest.raises(ValueError, match="round_statistic"):
        bench.summarize(times, round_statistic="max")


def test_amp_bench_runs_in_bfloat16_names_its_record_and_stays_out_of_the_fp32_tables(tmp_path):
    models = {"bn": tiny("bn"), "nd": tiny("nd")}
    dtypes = []
    models["bn"][0].register_forward_hook(lambda m, a, out: dtypes.append(out.dtype))
    config = bench.BenchConfig(arch="tiny", batch_size=4, image_size=8, rounds=2, amp=True,
                               implementations=("ndlib",), out_dir=str(tmp_path))
    record = bench.run_bench(config, models=models, log=None)
    assert set(dtypes) == {torch.bfloat16}  # the convolutions ran under bf16 autocast
    assert record["bench_id"].split("-")[-2] == "bf16" and record["config"]["amp"] is True
    fp32 = bench.run_bench(bench.BenchConfig(arch="tiny", batch_size=4, image_size=8, rounds=2,
                                             implementations=("ndlib",), out_dir=str(tmp_path)),
                           models={"bn": tiny("bn"), "nd": tiny("nd")}, log=None)
    assert list(bench.load_bench(tmp_path)["bench_id"]) == [fp32["bench_id"]]  # default: float32 only
    assert list(bench.load_bench(tmp_path, amp=True)["bench_id"]) == [record["bench_id"]]
    both = bench.load_bench(tmp_path, amp=None)
    assert sorted(both["amp"]) == [False, True]


def test_the_public_fold_switches_resnext29_to_channels_last_and_ndlib_does_not(one_thread):
    """The public code's quirk, recorded by every benchmark: its fold views a one-block 1x1
    weight (the 3-channel stem) with strides PyTorch reads as channels-last, so that conv and
    every conv after it run channels-last; ndlib's model stays contiguous.  Counting changes nothing."""
    config = bench.BenchConfig(arch="resnext29", batch_size=2, implementations=("ndlib", "reference"))
    models = bench._build_models(config, torch.device("cpu"))
    images = torch.randn(2, 3, 32, 32)
    buffers = {k: v.clone() for k, v in models["nd_reference"].state_dict().items()}
    layouts = {name: bench.conv_layouts(model, images) for name, model in models.items()}
    assert layouts["bn"]["channels_last"] == layouts["nd"]["channels_last"] == 0
    assert layouts["nd_reference"]["channels_last"] == layouts["nd_reference"]["convs"] == layouts["nd"]["convs"] > 20
    assert all(torch.equal(v, models["nd_reference"].state_dict()[k]) for k, v in buffers.items())
    assert all(model.training for model in models.values())


def test_channels_last_bench_keeps_the_public_models_weights_contiguous(one_thread):
    """The public code's ``weight.view`` fails on channels-last weights: the bench stores the
    reference model's weights contiguous (its convs still run channels-last from the input)."""
    config = bench.BenchConfig(arch="resnext29", batch_size=2, channels_last=True)
    models = bench._build_models(config, torch.device("cpu"))
    images = torch.randn(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (2,))
    for name, model in models.items():
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        bench._train_step(model, optimizer, images, labels)
        assert bench.conv_layouts(model, images)["channels_last"] == bench.conv_layouts(model, images)["convs"]
    assert models["bn"].stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert all(p.is_contiguous() for p in models["nd_reference"].parameters())
