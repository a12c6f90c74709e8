"""The Python micro-benchmark scripts in ``tools/`` (behind rows of ``results/bench/README.md``) still run,
on tiny SYNTHETIC inputs, and refuse bad arguments with exit code 2."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_tool(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(ROOT / "tools" / script), *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)


def test_patch_routes_agree_and_are_timed():
    done = run_tool("bench_patch_routes.py", "--threads", "1", "--rounds", "1", "--batch-size", "2")
    assert done.returncode == 0, done.stderr
    assert "1 threads, batch 2, 1 interleaved rounds (SYNTHETIC input)" in done.stdout
    assert len([line for line in done.stdout.splitlines() if "x 576" in line]) == 5  # one row per layer shape


def test_bf16_covariance_products_are_timed_with_the_bf16_error():
    done = run_tool("bench_bf16_covariance.py", "--threads", "1", "--rounds", "1", "--batch-size", "2")
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines() if "x 576" in line]
    assert len(rows) == 4 and all(0 < float(row[-1]) < 0.05 for row in rows)  # bf16 rounding, not garbage
    backward = [line.split() for line in done.stdout.splitlines() if " backward " in line]
    assert len(backward) == 4 and all(0 < float(row[-2]) < float(row[-1]) < 0.05 for row in backward)


def test_bf16_whitening_error_is_far_smaller_with_float32_statistics():
    done = run_tool("bf16_whitening_error.py", "--batch-size", "2")
    assert done.returncode == 0, done.stderr
    errors = {line.split()[0]: float(line.split()[-3]) for line in done.stdout.splitlines() if "relative error" in line}
    assert set(errors) == {"public", "ndlib"} and errors["ndlib"] < errors["public"] / 5


def test_layers_against_the_reference_cover_every_deconvolution_layer():
    done = run_tool("bench_layers_vs_reference.py", "--arch", "efficientnetb0", "--threads", "1", "--rounds", "1",
                    "--batch-size", "2")
    assert done.returncode == 0, done.stderr
    total = [line for line in done.stdout.splitlines() if line.startswith("all ")]
    assert len(total) == 1 and int(total[0].split()[1]) == 2  # EfficientNet-B0: the stem conv and the classifier


def test_step_settings_times_both_precisions_of_both_norms():
    done = run_tool("bench_step_settings.py", "--arch", "efficientnetb0", "--threads", "1", "--rounds", "1",
                    "--batch-size", "2", "--num-classes", "10")
    assert done.returncode == 0, done.stderr
    assert "freed memory kept" in done.stdout
    rows = [line.split() for line in done.stdout.splitlines() if line.startswith("efficientnetb0 ")]
    assert [row[1] for row in rows] == ["bn", "nd"]
    assert all(float(row[2]) > 0 and float(row[3]) > 0 and float(row[4]) > 0 for row in rows)


def test_step_settings_times_both_layouts_of_both_norms_in_bf16():
    done = run_tool("bench_step_settings.py", "--compare", "layout", "--amp", "--arch", "resnet18", "--threads", "1",
                    "--rounds", "1", "--batch-size", "2", "--num-classes", "10")
    assert done.returncode == 0, done.stderr
    assert "bf16 autocast" in done.stdout and "channels_last / nchw" in done.stdout
    rows = [line.split() for line in done.stdout.splitlines() if line.startswith("resnet18 ")]
    assert [row[1] for row in rows] == ["bn", "nd"]
    assert all(float(row[2]) > 0 and float(row[3]) > 0 and float(row[4]) > 0 for row in rows)


def test_step_settings_times_nd_with_the_covariance_backward_in_bf16():
    done = run_tool("bench_step_settings.py", "--compare", "covariance-grad", "--channels-last",
                    "--arch", "efficientnetb0", "--threads", "1", "--rounds", "1", "--batch-size", "2",
                    "--num-classes", "10")
    assert done.returncode == 0, done.stderr
    assert "bf16 autocast, channels_last" in done.stdout and "bf16-grad / fp32-grad" in done.stdout
    rows = [line.split() for line in done.stdout.splitlines() if line.startswith("efficientnetb0 ")]
    assert [row[1] for row in rows] == ["nd"]  # BN has no covariance
    assert all(float(row[2]) > 0 and float(row[3]) > 0 and float(row[4]) > 0 for row in rows)


def test_profile_channels_last_sets_nd_beside_bn():
    done = run_tool("profile_step.py", "--arch", "efficientnetb0", "--threads", "1", "--steps", "1",
                    "--batch-size", "2", "--top", "3", "--against", "bn", "--amp", "--channels-last")
    assert done.returncode == 0, done.stderr
    assert "bf16 autocast, channels_last" in done.stdout and "aten::" in done.stdout


def test_profile_lists_operators_of_both_steps():
    done = run_tool("profile_step.py", "--arch", "efficientnetb0", "--threads", "1", "--steps", "1",
                    "--batch-size", "2", "--top", "3")
    assert done.returncode == 0, done.stderr
    assert "self CPU seconds per step: ndlib" in done.stdout and "aten::" in done.stdout


def test_profile_sets_nd_beside_bn_under_autocast():
    done = run_tool("profile_step.py", "--arch", "efficientnetb0", "--threads", "1", "--steps", "1",
                    "--batch-size", "2", "--top", "3", "--against", "bn", "--amp")
    assert done.returncode == 0, done.stderr
    assert "bf16 autocast" in done.stdout and ", bn " in done.stdout and "aten::" in done.stdout


@pytest.mark.parametrize("script, args", [
    ("bench_patch_routes.py", ["--rounds", "0"]),
    ("bench_bf16_covariance.py", ["--threads", "0"]),
    ("bf16_whitening_error.py", ["--batch-size", "-1"]),
    ("bench_layers_vs_reference.py", ["--arch", "resnet19"]),
    ("profile_step.py", ["--arch", "resnet18", "--threads", "two"]),
    ("bench_step_settings.py", ["--arch", "vgg17"]),
    ("bench_step_settings.py", ["--compare", "sideways"]),
])
def test_bad_arguments_exit_2_with_one_line_naming_them(script, args):
    done = run_tool(script, *args)
    assert done.returncode == 2
    message = done.stderr.strip().splitlines()[-1]
    assert "error:" in message and (args[-1] in message or "positive integer" in message)
