"""Grid: plans, cost estimates, skipping completed runs, atomic claims, Slurm scripts."""
from __future__ import annotations

import dataclasses
import io
import os
import shutil
import subprocess
import sys

import pytest

import ndlib.cli
import ndlib.config
import ndlib.train
from ndlib.claims import claim
from ndlib.grid import norms_for, plan, run_grid, run_status, slurm_script
from ndlib.records import machine_id, write_json_atomic
from ndlib.train import TrainConfig


def test_table1_plan_is_the_full_cross_product(tmp_path):
    configs = plan(1, epochs=[1, 20], seeds=[0, 1], runs_dir=str(tmp_path))
    assert len(configs) == 2 * 10 * 2 * 2 * 2  # datasets x archs x norms x epochs x seeds
    assert len({c.run_id for c in configs}) == len(configs)
    assert {c.arch for c in configs} == set(ndlib.config.known_archs(1, extras=False))
    assert "efficientnetb0_allnd" not in {c.arch for c in configs}  # an extra, not a paper cell


def test_plan_takes_an_extra_variant_by_name(tmp_path):
    configs = plan(1, epochs=[1], archs=["efficientnetb0_allnd"], datasets=["cifar10"], runs_dir=str(tmp_path))
    assert [c.run_id for c in configs] == ["t1-cifar10-efficientnetb0_allnd-bn-e1-s0",
                                           "t1-cifar10-efficientnetb0_allnd-nd-e1-s0"]


def test_table2_plan_has_vgg11_without_normalisation():
    configs = plan(2)
    assert len(configs) == 7 and all(c.epochs == 90 and c.batch_size == 256 for c in configs)
    assert ("vgg11_imagenet", "none") in {(c.arch, c.norm) for c in configs}
    assert norms_for("resnet18_imagenet") == ("bn", "nd")


def test_plan_filters_and_validates():
    configs = plan(1, epochs=[1], archs=["vgg16"], datasets=["cifar10"], norms=["nd"])
    assert [c.run_id for c in configs] == ["t1-cifar10-vgg16-nd-e1-s0"]
    with pytest.raises(ValueError, match="valid"):
        plan(1, archs=["resnet18_imagenet"])
    with pytest.raises(ValueError, match="valid"):
        plan(1, datasets=["imagenet"])
    with pytest.raises(ValueError, match="table"):
        plan(3)


def _fake_run(calls):
    def fake(config, progress=True):
        calls.append(config.run_id)
        record = {"run_id": config.run_id, "status": "completed", "config": config.to_dict(), "history": [],
                  "final": {"test_acc": 50.0}}
        write_json_atomic(os.path.join(config.runs_dir, f"{config.run_id}.json"), record)
        return record

    return fake


def test_grid_runs_only_what_has_no_completed_record(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    configs = plan(1, epochs=[1], archs=["vgg16", "resnet18"], datasets=["cifar10"], runs_dir=str(runs))
    done, stale, *rest = configs
    write_json_atomic(runs / f"{done.run_id}.json", {"run_id": done.run_id, "status": "completed", "config": {}})
    dead_pid = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                                  text=True).stdout)
    write_json_atomic(runs / f"{stale.run_id}.json", {"run_id": stale.run_id, "status": "running", "config": {},
                                                      "environment": {"pid": dead_pid,
                                                                      "hostname": __import__("socket").gethostname()}})
    calls = []
    monkeypatch.setattr(ndlib.train, "run", _fake_run(calls))
    summary = run_grid(configs, claims=tmp_path / "claims", progress=False, stream=io.StringIO())
    assert calls == [stale.run_id] + [c.run_id for c in rest]
    assert summary.completed == 3 and summary.skipped_done == 1 and summary.exit_code == 0
    assert all(run_status(c) == "completed" for c in configs)
    assert not (tmp_path / "claims").exists()  # claims released, the emptied folder removed
    calls.clear()
    run_grid(configs, claims=tmp_path / "claims", progress=False, stream=io.StringIO())
    assert calls == []


def test_grid_goes_on_after_a_failure_and_reports_it(tmp_path, monkeypatch):
    configs = plan(1, epochs=[1], archs=["vgg16"], datasets=["cifar10"], runs_dir=str(tmp_path / "runs"))

    def failing(config, progress=True):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(ndlib.train, "run", failing)
    out = io.StringIO()
    summary = run_grid(configs, claims=tmp_path / "claims", progress=False, stream=out)
    assert summary.failed == 2 and summary.exit_code == 1 and "out of memory" in out.getvalue()


def test_a_claimed_run_is_skipped_by_a_second_worker(tmp_path, monkeypatch):
    configs = plan(1, epochs=[1], archs=["vgg16"], datasets=["cifar10"], norms=["bn"], runs_dir=str(tmp_path / "r"))
    calls = []
    monkeypatch.setattr(ndlib.train, "run", _fake_run(calls))
    with claim(configs[0].run_id, tmp_path / "claims"):
        summary = run_grid(configs, claims=tmp_path / "claims", progress=False, stream=io.StringIO())
    assert calls == [] and summary.skipped_claimed == 1


def test_slurm_script_has_one_task_per_run(tmp_path):
    configs = plan(1, epochs=[1], archs=["vgg16"], datasets=["cifar10"], lr=0.05, note="a b")
    script = slurm_script(configs, partition="gpu")
    assert "#SBATCH --array=0-1" in script and "#SBATCH --partition=gpu" in script
    for config in configs:
        assert f"# {config.run_id}" in script
    assert "--lr 0.05" in script and "SLURM_ARRAY_TASK_ID" in script
    if shutil.which("bash"):
        path = tmp_path / "job.sh"
        path.write_text(script)
        assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    with pytest.raises(ValueError, match="no runs"):
        slurm_script([])


def test_slurm_task_reproduces_the_configuration(tmp_path):
    """Run the array line of one task through bash to the CLI parser: same run id."""
    from ndlib.cli import build_parser, config_from_args

    config = plan(1, epochs=[20], archs=["resnet18"], datasets=["cifar100"], norms=["nd"], lr=0.05, note="x y")[0]
    script = slurm_script([config])
    line = [text for text in script.splitlines() if text.strip().startswith("'")][0]
    program = f"RUNS=(\n{line}\n)\neval \"printf '%s\\n' ${{RUNS[0]}}\""
    words = subprocess.run(["bash", "-c", program], capture_output=True, text=True, check=True).stdout.splitlines()
    assert "x y" in words  # the note survives as one argument
    parser = build_parser()
    args = parser.parse_args(["train", *words])
    assert config_from_args(args, parser).run_id == config.run_id


def test_a_live_running_record_is_not_retrained_and_a_dead_one_is(tmp_path, monkeypatch):
    import socket

    configs = plan(1, epochs=[1], archs=["vgg16"], datasets=["cifar10"], runs_dir=str(tmp_path / "runs"))
    live, dead = configs
    dead_pid = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                                  text=True).stdout)
    for config, pid in ((live, os.getpid()), (dead, dead_pid)):
        write_json_atomic(tmp_path / "runs" / f"{config.run_id}.json",
                          {"run_id": config.run_id, "status": "running", "config": {},
                           "environment": {"pid": pid, "hostname": socket.gethostname(), "machine_id": machine_id()}})
    assert run_status(live) == "running" and run_status(dead) == "stale"
    calls = []
    monkeypatch.setattr(ndlib.train, "run", _fake_run(calls))
    summary = run_grid(configs, claims=tmp_path / "claims", progress=False, stream=io.StringIO())
    assert calls == [dead.run_id] and summary.skipped_claimed == 1


def _record(run_id, arch, norm, dataset="cifar10", *, threads=1, device="cpu", epochs=1, seconds=(600.0, 60.0),
            status="completed", synthetic=False, cpu=None):
    history = [{"epoch": e + 1, "train_time_s": seconds[0], "eval_time_s": seconds[1]} for e in range(epochs)]
    return {"run_id": run_id, "status": status, "table": 1, "history": history, "final": {"test_acc": 50.0},
            "config": {"arch": arch, "norm": norm, "dataset": dataset, "epochs": epochs, "seed": 0},
            "data_source": {"kind": "synthetic" if synthetic else "npz", "synthetic": synthetic},
            "environment": {"device_type": device, "num_threads": threads,
                            **({} if cpu is None else {"device_name": cpu[0], "cpu_bf16_isa": cpu[1]})}}


def _estimate_frames(tmp_path, records, bench_rows=()):
    import pandas as pd

    from ndlib.bench import BENCH_COLUMNS
    from ndlib.records import load_runs

    for record in records:
        write_json_atomic(tmp_path / f"{record['run_id']}.json", record)
    bench = pd.DataFrame([{c: row.get(c) for c in BENCH_COLUMNS} for row in bench_rows], columns=BENCH_COLUMNS)
    return load_runs(tmp_path), bench


def test_a_run_under_way_is_estimated_from_its_own_finished_epochs(tmp_path):
    from ndlib.grid import estimate_cost

    runs, bench = _estimate_frames(tmp_path, [
        _record("t1-cifar10-vgg16-nd-e1-s0", "vgg16", "nd", seconds=(1000.0, 100.0)),  # a completed run: 1100/epoch
        _record("t1-cifar10-vgg16-nd-e20-s0", "vgg16", "nd", epochs=3, seconds=(1500.0, 60.0), status="running"),
    ])
    config = TrainConfig(arch="vgg16", norm="nd", dataset="cifar10", epochs=20, device="cpu", num_threads=1)
    estimate = estimate_cost(config, runs, bench)
    assert estimate.source == "own" and estimate.per_epoch_s == 1560.0 and estimate.seconds == 20 * 1560.0
    assert "its own 3 finished epochs, 1 thread" in estimate.describe()
    # another run of the cell (another seed) still goes by the completed runs
    other = estimate_cost(dataclasses.replace(config, seed=1), runs, bench)
    assert other.source == "runs" and other.per_epoch_s == 1100.0
    # a run whose time mixes settings (resumed on another machine) does not go by its own epochs
    mixed = runs.assign(timing_mixed=runs["run_id"] == config.run_id)
    assert estimate_cost(config, mixed, bench).source == "runs"


def test_cost_estimate_is_the_median_epoch_of_comparable_completed_runs(tmp_path):
    from ndlib.grid import estimate_cost
    from ndlib.records import load_runs

    runs, bench = _estimate_frames(tmp_path, [
        _record("t1-cifar10-vgg16-nd-e1-s0", "vgg16", "nd", seconds=(1000.0, 100.0)),
        _record("t1-cifar100-vgg16-nd-e1-s1", "vgg16", "nd", "cifar100", seconds=(2000.0, 100.0)),  # CIFAR-100 counts
        _record("t1-cifar10-vgg16-nd-e2-s0", "vgg16", "nd", epochs=2, seconds=(1600.0, 100.0)),  # per epoch: 1700
        # none of these counts: another thread count, a refresh mode, synthetic, diverged, BN, GPU
        _record("t1-cifar10-vgg16-nd-e1-s3", "vgg16", "nd", threads=2, seconds=(1.0, 1.0)),
        _record("t1-cifar10-vgg16-nd-e1-s0-o1234abcd", "vgg16", "nd", seconds=(1.0, 1.0)),
        _record("t1-cifar10-syn-vgg16-nd-e1-s0", "vgg16", "nd", synthetic=True, seconds=(1.0, 1.0)),
        _record("t1-cifar10-vgg16-nd-e1-s4", "vgg16", "nd", status="diverged", seconds=(1.0, 1.0)),
        _record("t1-cifar10-vgg16-bn-e1-s0", "vgg16", "bn", seconds=(1.0, 1.0)),
        _record("t1-cifar10-vgg16-nd-e1-s5", "vgg16", "nd", device="cuda", seconds=(1.0, 1.0)),
    ])
    config = TrainConfig(arch="vgg16", norm="nd", dataset="cifar100", epochs=20, seed=2, device="cpu", num_threads=1)
    estimate = estimate_cost(config, runs, bench)
    assert estimate.source == "runs" and estimate.n_records == 3 and estimate.num_threads == 1
    assert estimate.per_epoch_s == 1700.0 and estimate.seconds == 20 * 1700.0
    assert "median of 3 completed runs, cpu, 1 thread" in estimate.describe()
    # without a thread count, the most common one among the comparable runs (1 thread: 3 runs, 2 threads: 1)
    assert estimate_cost(dataclasses.replace(config, num_threads=None), runs, bench).per_epoch_s == 1700.0
    assert estimate_cost(dataclasses.replace(config, num_threads=2), runs, bench).per_epoch_s == 2.0
    assert estimate_cost(dataclasses.replace(config, num_threads=4), runs, bench) is None
    assert estimate_cost(dataclasses.replace(config, arch="resnet18"), runs, bench) is None  # never another model
    # a run with options counts only for a plan with the same options
    refresh = TrainConfig(arch="vgg16", norm="nd", dataset="cifar10", epochs=1, seed=0, device="cpu",
                          num_threads=1, deconv_refresh_every=4)
    assert estimate_cost(refresh, runs, bench) is None
    write_json_atomic(tmp_path / f"{refresh.run_id}.json",
                      _record(refresh.run_id, "vgg16", "nd", seconds=(500.0, 100.0)))
    assert estimate_cost(refresh, load_runs(tmp_path), bench).per_epoch_s == 600.0
    assert estimate_cost(config, load_runs(tmp_path), bench).per_epoch_s == 1700.0


def test_cost_estimate_prefers_the_machine_type_the_run_will_train_on(tmp_path):
    from ndlib.grid import estimate_cost
    from ndlib.records import load_runs

    intel, amd = ("Intel Xeon", "amx_bf16"), ("AMD EPYC", "avx512_bf16")
    runs, bench = _estimate_frames(tmp_path, [
        _record("t1-cifar10-vgg16-nd-e1-s0", "vgg16", "nd", seconds=(1600.0, 100.0), cpu=intel),
        _record("t1-cifar10-vgg16-nd-e1-s1", "vgg16", "nd", seconds=(1700.0, 100.0), cpu=intel),
        _record("t1-cifar10-vgg16-nd-e1-s2", "vgg16", "nd", seconds=(3900.0, 100.0), cpu=amd),
        _record("t1-cifar10-vgg16-bn-e1-s0", "vgg16", "bn", seconds=(900.0, 100.0), cpu=intel),
    ])
    config = TrainConfig(arch="vgg16", norm="nd", dataset="cifar100", epochs=20, device="cpu", num_threads=1)
    on_amd = estimate_cost(config, runs, bench, "AMD EPYC (AVX512-BF16)")
    assert on_amd.per_epoch_s == 4000.0 and on_amd.n_records == 1 and on_amd.machine == "AMD EPYC (AVX512-BF16)"
    assert "median of 1 completed run, AMD EPYC (AVX512-BF16), 1 thread" in on_amd.describe()
    on_intel = estimate_cost(config, runs, bench, "Intel Xeon (AMX)")
    assert on_intel.per_epoch_s == 1750.0 and on_intel.n_records == 2
    # no machine given: every machine's runs, the median of all three, which name no single machine
    anywhere = estimate_cost(config, runs, bench)
    assert anywhere.per_epoch_s == 1800.0 and anywhere.n_records == 3 and anywhere.machine is None
    assert "median of 3 completed runs, cpu, 1 thread" in anywhere.describe()
    # a machine type without runs of the model falls back to every machine's: BN was run on the Intel VM only
    bn = estimate_cost(dataclasses.replace(config, norm="bn"), runs, bench, "AMD EPYC (AVX512-BF16)")
    assert bn.per_epoch_s == 1000.0 and bn.machine == "Intel Xeon (AMX)"
    # a run under way on the Intel VM (a snapshot), planned on the AMD one: its own epochs are no guide there
    write_json_atomic(tmp_path / f"{config.run_id}.json", _record(config.run_id, "vgg16", "nd", epochs=2,
                                                                  seconds=(1500.0, 100.0), status="running",
                                                                  cpu=intel))
    runs = load_runs(tmp_path)
    assert estimate_cost(config, runs, bench, "Intel Xeon (AMX)").source == "own"
    assert estimate_cost(config, runs, bench).source == "own"
    elsewhere = estimate_cost(config, runs, bench, "AMD EPYC (AVX512-BF16)")
    assert elsewhere.source == "runs" and elsewhere.per_epoch_s == 4000.0


def test_cost_estimate_falls_back_to_the_newest_benchmark_of_the_model(tmp_path):
    from ndlib.grid import estimate_cost

    row = dict(arch="dpn92", batch_size=128, device_type="cpu", num_threads=2, implementation="ndlib",
               bn_step_s=20.0, nd_step_s=30.0, refresh_every=1, created_at="2026-12-01T10:00:00+00:00")
    runs, bench = _estimate_frames(tmp_path, [], [
        row,
        {**row, "bn_step_s": 10.0, "created_at": "2026-12-02T10:00:00+00:00"},  # the newest
        {**row, "bn_step_s": 1.0, "refresh_every": 4, "created_at": "2026-12-03T10:00:00+00:00"},  # another layer
        {**row, "bn_step_s": 1.0, "implementation": "reference", "created_at": "2026-12-03T10:00:00+00:00"},
        {**row, "bn_step_s": 1.0, "batch_size": 64, "created_at": "2026-12-03T10:00:00+00:00"},
        {**row, "bn_step_s": 1.0, "channels_last": True, "created_at": "2026-12-03T10:00:00+00:00"},
    ])
    config = TrainConfig(arch="dpn92", norm="bn", dataset="cifar10", epochs=2, device="cpu")
    estimate = estimate_cost(config, runs, bench)
    assert estimate.source == "bench" and estimate.per_epoch_s == 10.0 * 391 and estimate.seconds == 2 * 3910.0
    assert "bench step time" in estimate.describe() and "no evaluation" in estimate.describe()
    assert estimate_cost(dataclasses.replace(config, norm="nd"), runs, bench).per_epoch_s == 30.0 * 391
    assert estimate_cost(dataclasses.replace(config, num_threads=1), runs, bench) is None
    # with a machine type, that machine's newest bench, though another machine's is newer
    machines = bench.assign(machine_type=["AMD EPYC (AVX512-BF16)", "Intel Xeon (AMX)"] + [None] * 4)
    on_amd = estimate_cost(config, runs, machines, "AMD EPYC (AVX512-BF16)")
    assert on_amd.per_epoch_s == 20.0 * 391 and "AMD EPYC (AVX512-BF16), 2 threads" in on_amd.describe()
    assert estimate_cost(config, runs, machines, "AMD EPYC (no native bf16)").per_epoch_s == 10.0 * 391


def test_cost_estimate_from_benchmarks_takes_the_runs_precision(tmp_path):
    from ndlib.grid import estimate_cost

    row = dict(arch="vgg16", batch_size=128, device_type="cpu", num_threads=1, implementation="ndlib",
               bn_step_s=4.0, nd_step_s=6.0, refresh_every=1, amp=False, created_at="2026-12-01T10:00:00+00:00")
    runs, bench = _estimate_frames(tmp_path, [], [row, {**row, "bn_step_s": 2.0, "amp": True,
                                                        "created_at": "2026-11-01T10:00:00+00:00"}])
    config = TrainConfig(arch="vgg16", norm="bn", dataset="cifar10", epochs=1, device="cpu", num_threads=1)
    assert estimate_cost(config, runs, bench).per_epoch_s == 4.0 * 391
    assert estimate_cost(dataclasses.replace(config, amp=True), runs, bench).per_epoch_s == 2.0 * 391
    assert estimate_cost(dataclasses.replace(config, amp=True), runs, bench[~bench["amp"]]) is None
    assert estimate_cost(dataclasses.replace(config, amp=True, momentum=0.8), runs, bench) is None


def test_cost_estimate_from_benchmarks_takes_the_runs_layout(tmp_path):
    from ndlib.grid import estimate_cost

    row = dict(arch="resnet18", batch_size=128, device_type="cpu", num_threads=1, implementation="ndlib",
               bn_step_s=2.5, nd_step_s=6.5, refresh_every=1, amp=True, channels_last=False,
               created_at="2026-12-01T10:00:00+00:00")
    runs, bench = _estimate_frames(tmp_path, [], [row, {**row, "bn_step_s": 2.0, "channels_last": True}])
    config = TrainConfig(arch="resnet18", norm="bn", dataset="cifar100", epochs=1, device="cpu", num_threads=1,
                         amp=True)
    assert estimate_cost(config, runs, bench).per_epoch_s == 2.5 * 391
    assert estimate_cost(dataclasses.replace(config, channels_last=True), runs, bench).per_epoch_s == 2.0 * 391
    contiguous_only = bench[~bench["channels_last"].astype(bool)]
    assert estimate_cost(dataclasses.replace(config, channels_last=True), runs, contiguous_only) is None
    assert estimate_cost(dataclasses.replace(config, channels_last=True, amp=False), runs, bench) is None


def test_dry_run_prints_estimates_checkpoints_and_the_total(tmp_path, capsys):
    runs = tmp_path / "runs"
    runs.mkdir()
    write_json_atomic(runs / "t1-cifar10-vgg16-bn-e1-s0.json",
                      _record("t1-cifar10-vgg16-bn-e1-s0", "vgg16", "bn", seconds=(1700.0, 100.0)))
    (tmp_path / "ckpt" / "t1-cifar10-vgg16-bn-e1-s1").mkdir(parents=True)
    (tmp_path / "ckpt" / "t1-cifar10-vgg16-bn-e1-s1" / "last.pt").write_bytes(b"")
    code = ndlib.cli.main(["grid", "--table", "1", "--epochs", "1", "--seeds", "0", "1", "--archs", "vgg16",
                           "--datasets", "cifar10", "--norms", "bn", "--device", "cpu", "--num-threads", "1",
                           "--runs-dir", str(runs), "--checkpoint-dir", str(tmp_path / "ckpt"), "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0
    assert "completed   t1-cifar10-vgg16-bn-e1-s0\n" in out
    assert "missing     t1-cifar10-vgg16-bn-e1-s1  [checkpoint cannot be read (" in out  # an empty file
    checkpoint = tmp_path / "ckpt" / "t1-cifar10-vgg16-bn-e1-s1" / "last.pt"
    assert (f"): delete {checkpoint} to start the run over]  ~0.5 h (30 min/epoch: median of "
            "1 completed run, cpu, 1 thread)") in out
    assert "1 run to do, one after another: ~0.5 h estimated from completed runs\n" in out


def test_dry_run_counts_only_what_a_resuming_run_has_left(tmp_path, capsys, monkeypatch):
    import ndlib.grid
    from ndlib.checkpoint import CheckpointPosition

    runs = tmp_path / "runs"
    runs.mkdir()
    write_json_atomic(runs / "t1-cifar10-vgg16-bn-e1-s0.json",
                      _record("t1-cifar10-vgg16-bn-e1-s0", "vgg16", "bn", seconds=(3500.0, 100.0)))
    # seed 1 stopped 293 of its 391 steps in (three quarters); seed 2 has no checkpoint
    positions = {"t1-cifar10-vgg16-bn-e1-s1": CheckpointPosition(1, 50_000, 128, 0, 37_504, 293)}
    monkeypatch.setattr(ndlib.grid, "checkpoint_position", lambda config: positions.get(config.run_id))
    code = ndlib.cli.main(["grid", "--table", "1", "--epochs", "1", "--seeds", "0", "1", "2", "--archs", "vgg16",
                           "--datasets", "cifar10", "--norms", "bn", "--device", "cpu", "--num-threads", "1",
                           "--runs-dir", str(runs), "--checkpoint-dir", str(tmp_path / "ckpt"), "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0
    assert ("missing     t1-cifar10-vgg16-bn-e1-s1  [resumes from its checkpoint: epoch 1 of 1, 37,504 training "
            "images in, step 293]  ~0.3 h left of ~1.0 h (60 min/epoch: median of 1 completed run, cpu, "
            "1 thread)") in out
    assert "missing     t1-cifar10-vgg16-bn-e1-s2  ~1.0 h (60 min/epoch" in out
    # 0.25 h + 1 h
    assert ("2 runs to do, one after another: ~1.3 h estimated from completed runs "
            "(1 resuming: only the training after the checkpoint counts)") in out


def test_budget_cost_estimates_each_model_and_precision_and_sums_the_column(tmp_path):
    from ndlib.report import budget_cost, budget_cost_sentence

    row = dict(arch="resnet18", batch_size=128, device_type="cpu", num_threads=1, implementation="ndlib",
               bn_step_s=2.0, nd_step_s=3.0, refresh_every=1, amp=True, created_at="2026-12-01T10:00:00+00:00")
    runs, bench = _estimate_frames(tmp_path, [
        _record("t1-cifar10-vgg16-bn-e1-s0", "vgg16", "bn", seconds=(300.0, 60.0)),
        _record("t1-cifar100-vgg16-nd-e1-s0", "vgg16", "nd", "cifar100", seconds=(660.0, 60.0)),
        _record("t1-cifar10-vgg16-nd-e1-s1", "vgg16", "nd", threads=2, seconds=(1.0, 1.0)),  # not the lanes' threads
    ], [row])
    cost = budget_cost(runs, bench, ["vgg16", "resnet18"], epochs=100)
    by = cost.set_index(["arch", "norm"])
    assert by.loc[("vgg16", "bn"), "fp32_hours"] == 100 * 360 / 3600
    assert by.loc[("vgg16", "nd"), "fp32_hours"] == 100 * 720 / 3600
    assert "median of 1 completed run, cpu, 1 thread" in by.loc[("vgg16", "nd"), "fp32_basis"]
    assert by.loc[("resnet18", "nd"), "bf16_hours"] == 100 * 3.0 * 391 / 3600  # from the bf16 bench
    assert by.loc["resnet18", "fp32_hours"].isna().all() and by.loc["vgg16", "bf16_hours"].isna().all()
    sentence = budget_cost_sentence(cost)
    # float32: (10 + 20) h per run, 6 runs each (2 datasets x 3 seeds) = 180 lane-hours, 3.75 days on 2 lanes
    assert "the 2 of 4 model-norm pairs with an estimate (6 runs each) would take about 180 lane-hours" in sentence
    assert "3.8 days on 2 lanes; no estimate for resnet18 BN, resnet18 ND." in sentence
    assert budget_cost_sentence(budget_cost(runs.iloc[0:0], bench.iloc[0:0], ["vgg16"])).count("no estimate yet") == 2
