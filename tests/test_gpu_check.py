"""``make gpu-check`` on the CPU: the refusal without CUDA, the argument errors, and the steps
themselves with the device injected (float32 on the CPU against float64, tiny models, fake bench
and training runners), so the comparisons, the JSON files and the summary are exercised."""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from torch import nn

from ndlib.checks import common, compare
from ndlib.checks import gpu as gpu_check
from ndlib.layers import Delinear, FastDeconv

ROOT = Path(__file__).resolve().parents[1]


def tiny_model(arch: str, norm: str, num_classes: int) -> tuple[nn.Module, int]:
    if norm == "bn":
        body = [nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU()]
        head = nn.Linear(8, num_classes)
    else:
        body = [FastDeconv(3, 8, 3, padding=1, n_iter=15, freeze=True), nn.ReLU(), FastDeconv(8, 8, 1, block=4),
                nn.ReLU()]
        head = Delinear(8, num_classes, block=8)
    return nn.Sequential(*body, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.5), head), 8


def fake_bench(argv: list[str]) -> int:
    """Stands in for ``python -m ndlib bench``: checks the arguments with bench's own parser and
    writes a record of the shape bench writes."""
    from ndlib import bench

    parser = __import__("argparse").ArgumentParser()
    bench.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    assert args.command == "bench" and args.device == "cpu" and args.threads == 1
    summary = {"bn": {"step_s": 0.01}, "nd": {"step_s": 0.02, "ratio": 2.0},
               "nd_reference": {"step_s": 0.03, "ratio": 3.0}}
    (Path(args.out_dir) / f"{args.arch}-b{args.batch_size}.json").write_text(json.dumps({"summary": summary}))
    return 0 if args.arch != "broken" else 1


def fake_train(norm: str, device: str, data_dir: Path, out: Path) -> dict:
    final = {"test_acc": 60.0 if norm == "nd" else 40.0, "train_acc": 30.0, "train_time_s": 12.0,
             "images_per_s": 4000.0, "peak_mem_mb": 800.0}
    return {"status": "completed", "run_id": f"t1-cifar10-vgg16-{norm}-e1-s0", "final": final}


@pytest.fixture()
def cifar_dir(tmp_path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    for name in ("cifar10_train.npz", "cifar10_test.npz"):
        (folder / name).write_bytes(b"")
    return folder


# --------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_no_cuda_refusal_is_one_line_exit_2_and_does_nothing(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "ndlib.checks.gpu", "--out", str(out)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no CUDA device" in lines[0], result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert not out.exists()  # refused before doing anything


@pytest.mark.parametrize("argv, needle", [
    ([], "--out"),
    (["--out", "x", "--device", "cpu"], "--device"),
    (["--out", "x", "--budget-s", "0"], "--budget-s"),
    (["--out", "x", "--budget-s", "soon"], "--budget-s"),
    (["--out", "x", "--steps", "layers,fly"], "--steps"),
    (["--out", "x", "--frobnicate"], "unrecognized"),
])
def test_bad_arguments_are_one_line_exit_2(argv, needle, capsys):
    with pytest.raises(SystemExit) as exit_info:
        gpu_check.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and needle in err, err


def test_out_must_not_be_a_file(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("")
    with pytest.raises(SystemExit) as exit_info:
        gpu_check.main(["--out", str(target)])
    assert exit_info.value.code == 2
    assert "not a folder" in capsys.readouterr().err


def test_registers_as_a_subcommand(tmp_path, capsys):
    from ndlib.cli import build_parser, main

    args = build_parser().parse_args(["gpu-check", "--out", "o", "--quick"])
    assert args.handler is gpu_check._handle and args.quick and args.data_dir == "data"
    with pytest.raises(SystemExit) as exit_info:  # python -m ndlib gpu-check: same one-line errors
        main(["gpu-check", "--out", "o", "--device", "cpu"])
    assert exit_info.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1
    if not torch.cuda.is_available():
        assert main(["gpu-check", "--out", str(tmp_path / "o")]) == 2
        assert "no CUDA device" in capsys.readouterr().err and not (tmp_path / "o").exists()


# --------------------------------------------------------------------------------------
# The steps, on the CPU
# --------------------------------------------------------------------------------------
def test_layer_comparison_passes_and_can_fail():
    cases = [compare.LayerCase("tiny depthwise stride 2", lambda: FastDeconv(4, 4, 3, stride=2, padding=1, groups=4),
                                 (4, 4, 8, 8), steps=2)]
    cases += [c for c in compare.layer_cases() if c.name in {"Delinear blocks of 64", "ChannelDeconv on vectors"}]
    assert len(cases) == 3 and len(compare.layer_cases(quick=True)) < len(compare.layer_cases())
    result = compare.check_layers("cpu", cases)
    assert result["status"] == "passed", result["detail"]
    conv = result["results"][0]
    assert set(conv["errors"]) == set(compare.LAYER_TOLERANCES)
    assert 0 < conv["errors"]["output"] < 1e-5 and conv["counters_equal"]  # float32 vs float64: rounding only
    assert "amp_output" not in result["results"][2]["errors"]  # ChannelDeconv: no AMP handling
    # a layer whose device copy differs from the reference (wrong eps in float32) is caught
    broken = compare.LayerCase("broken", lambda: _EpsOnDevice(8, 8, 3, padding=1), (4, 8, 8, 8), steps=1)
    failed = compare.check_layers("cpu", [broken])
    assert failed["status"] == "failed" and "output" in failed["results"][0]["failures"]
    assert "FAILED: broken" in failed["detail"]


class _EpsOnDevice(FastDeconv):
    """A FastDeconv whose float32 copy uses another ridge (a stand-in for a device-only bug)."""

    def _apply(self, fn, recurse=True):
        module = super()._apply(fn, recurse)
        if self.weight.dtype == torch.float32:
            self.eps = 1.0
        return module


def test_model_check_with_an_injected_builder():
    result = compare.check_models("cpu", [("tiny", "bn"), ("tiny", "nd")], batch_size=4, build=tiny_model)
    assert result["status"] == "passed", result["detail"]
    for entry in result["results"]:
        assert entry["modes"]["amp"]["output_dtype"] == "bfloat16"
        assert all(mode["shape"] == [4, 10] for mode in entry["modes"].values())
        assert entry["errors"]["channels_last"] < 1e-5 and entry["errors"]["amp"] < 0.1  # dropout off
    broken = compare.check_models("cpu", [("tiny", "nan")], batch_size=4,
                                    build=lambda a, n, c: (nn.Sequential(nn.Flatten(), nn.Linear(192, c),
                                                                         _Poison()), 8))
    assert broken["status"] == "failed" and "float32: finite_output" in broken["results"][0]["failures"]


class _Poison(nn.Module):
    def forward(self, x):
        return x * float("nan")


def test_model_plan_covers_every_model_and_norm():
    from ndlib import models

    plan = compare.model_plan()
    assert {arch for arch, _ in plan} == set(models.available(extras=True))
    assert ("vgg11_imagenet", "none") in plan and ("efficientnetb0_allnd", "nd") in plan
    assert len(plan) == sum(len(models.get_spec(a).norms) for a in models.available(extras=True))
    assert gpu_check.bench_archs() == models.available(table=1)


def test_bench_arguments_are_bench_cli_arguments(tmp_path):
    step = gpu_check.run_bench_step(tmp_path, "cpu", archs=["resnet18", "broken"], runner=fake_bench)
    assert step["status"] == "failed" and "FAILED: broken" in step["detail"]
    first = step["runs"][0]
    assert first["status"] == "passed" and first["ratio_nd_bn"] == 2.0 and first["records"] == ["resnet18-b128.json"]
    assert first["command"].startswith("python -m ndlib bench --arch resnet18 --device cpu")
    late = gpu_check.run_bench_step(tmp_path, "cpu", archs=["vgg16"], runner=fake_bench, deadline=0.0)
    assert late["runs"][0]["status"] == "skipped" and late["status"] == "passed"


def test_train_step_skips_without_data_and_builds_the_paper_config(tmp_path, cifar_dir, monkeypatch):
    skipped = gpu_check.run_train_step(tmp_path, tmp_path / "nowhere", "cuda")
    assert skipped["status"] == "skipped" and skipped["detail"].startswith("skipped: data folder")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no CIFAR-10" in gpu_check.run_train_step(tmp_path, empty, "cuda")["detail"]
    seen = {}

    def fake_run(config, model=None, *, progress=True, resume=True):
        seen.update(config=config, options={"progress": progress, "resume": resume})
        return {"status": "completed", "final": {"test_acc": 50.0, "train_time_s": 1.0}}

    import ndlib.train

    monkeypatch.setattr(ndlib.train, "run", fake_run)
    step = gpu_check.run_train_step(tmp_path, cifar_dir, "cuda", norms=("nd",))
    config = seen["config"]
    assert step["status"] == "passed" and "nd: test 50.00%" in step["detail"]
    assert (config.arch, config.norm, config.dataset, config.epochs, config.device) == \
        ("vgg16", "nd", "cifar10", 1, "cuda")
    assert config.data_dir == str(cifar_dir) and config.runs_dir == str(tmp_path / "runs")
    assert config.checkpoint_dir == str(tmp_path / "checkpoints")
    assert seen["options"].get("progress") is False and seen["options"].get("resume") is False


def test_whole_check_writes_json_and_summary(tmp_path, cifar_dir):
    out = tmp_path / "out"
    cases = [compare.LayerCase("refresh_every=2", lambda: FastDeconv(4, 4, 3, padding=1, refresh_every=2),
                                 (2, 4, 6, 6))]
    lines = []
    report = gpu_check.run_gpu_check(
        out, data_dir=cifar_dir, device="cpu", layer_case_list=cases, plan=[("tiny", "bn"), ("tiny", "nd")],
        model_batch_size=4, model_builder=tiny_model, bench_arch_list=["resnet18", "vgg16"], bench_runner=fake_bench,
        train_runner=fake_train, log=lines.append)
    assert report["status"] == "passed"
    names = {p.name for p in out.iterdir()}
    assert {"layers.json", "models.json", "bench.json", "train.json", "gpu_check.json", "summary.md", "bench"} <= names
    overall = json.loads((out / "gpu_check.json").read_text())
    assert overall["status"] == "passed" and set(overall["steps_summary"]) == set(gpu_check.STEPS)
    assert overall["environment"]["torch"] == torch.__version__
    layers = json.loads((out / "layers.json").read_text())
    assert layers["results"][0]["layer"] == "refresh_every=2" and layers["tf32"] is False
    summary = (out / "summary.md").read_text()
    assert summary.startswith("# gpu-check: PASSED")
    for needle in ("| refresh_every=2 |", "| tiny |", "| resnet18 | passed |", "| nd | passed | 60.00 |",
                   "AMP <= 0.5 BN / 2.0 ND"):
        assert needle in summary, needle
    assert len(summary.splitlines()) < 80  # one page
    assert any("PASSED" in line for line in lines)


def test_whole_check_reports_skips_and_failures(tmp_path):
    def failing_bench(argv):
        raise RuntimeError("CUDA error: out of memory\nmore")

    report = gpu_check.run_gpu_check(tmp_path / "out", data_dir=None, device="cpu", steps=("bench", "train"),
                                     bench_arch_list=["resnet18"], bench_runner=failing_bench, log=lambda _: None)
    assert report["status"] == "failed"
    assert report["steps"]["train"]["status"] == "skipped"
    assert "RuntimeError: CUDA error: out of memory" in report["steps"]["bench"]["runs"][0]["detail"]
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "# gpu-check: FAILED" in summary and "## Train: skipped: no --data-dir given" in summary


def test_json_names_no_machine_path_and_no_host(tmp_path):
    trace = 'File "/scratch/someone/venv/lib/torch/x.py", line 3'
    path = common.write_json(tmp_path / "x.json", {"detail": trace, "out": str(tmp_path / "out")})
    written = json.loads(path.read_text())
    out = "<tmp>/" + (tmp_path / "out").relative_to(tempfile.gettempdir()).as_posix()
    assert written == {"detail": 'File "<path>/x.py", line 3', "out": out}
    assert "hostname" not in common.environment("cpu")


def test_json_has_no_nan_and_rel_err_handles_edge_cases(tmp_path):
    path = common.write_json(tmp_path / "x.json", {"a": float("nan"), "b": [float("inf"), 1.0], "c": (1, 2)})
    assert json.loads(path.read_text()) == {"a": "nan", "b": ["inf", 1.0], "c": [1, 2]}
    zero = torch.zeros(3)
    assert compare.rel_err(zero, zero) == 0.0
    assert compare.rel_err(torch.ones(3), zero) == float("inf")
    assert compare.rel_err(torch.tensor([float("nan")]), torch.ones(1)) == float("inf")
    with pytest.raises(ValueError, match="shapes"):
        compare.rel_err(torch.ones(2), torch.ones(3))


def test_torchvision_placeholder_only_when_missing(monkeypatch):
    with common.torchvision_placeholder() as used:
        import torchvision

        assert used is (torchvision.__version__ == "not installed")
    monkeypatch.setattr(common, "module_version", lambda name: None)
    saved = sys.modules.pop("torchvision", None)
    try:
        with common.torchvision_placeholder() as used:
            import torchvision

            assert used and torchvision.__version__ == "not installed"
        assert "torchvision" not in sys.modules
    finally:
        if saved is not None:
            sys.modules["torchvision"] = saved
