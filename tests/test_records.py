"""Run records: atomic writes, loading into DataFrames, project-root discovery."""
from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from _experiments_helpers import tiny_config, tiny_model
from ndlib.paths import project_root
from ndlib.records import HISTORY_COLUMNS, RUN_COLUMNS, load_histories, load_runs, read_record, write_json_atomic
from ndlib.train import run


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    path = write_json_atomic(tmp_path / "sub" / "r.json", {"a": 1})
    write_json_atomic(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]


def test_failed_serialisation_keeps_the_previous_version(tmp_path):
    path = write_json_atomic(tmp_path / "r.json", {"a": 1})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_non_finite_numbers_become_strings_not_invalid_json(tmp_path):
    path = write_json_atomic(tmp_path / "r.json", {"loss": float("nan"), "x": [float("inf")]})
    assert json.loads(path.read_text()) == {"loss": "nan", "x": ["inf"]}


def test_invalid_record_names_the_file(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text("{")
    with pytest.raises(ValueError, match="broken.json"):
        read_record(bad)


def test_empty_folder_gives_empty_frames_with_the_contract_columns(tmp_path):
    runs, histories = load_runs(tmp_path), load_histories(tmp_path / "missing")
    assert runs.empty and list(runs.columns) == RUN_COLUMNS
    assert histories.empty and list(histories.columns) == HISTORY_COLUMNS


def test_records_load_into_one_row_per_run(tmp_path):
    config = tiny_config(tmp_path, epochs=2)
    record = run(config, model=tiny_model(), progress=False)
    runs = load_runs(tmp_path / "runs")
    assert len(runs) == 1
    row = runs.iloc[0]
    assert row["run_id"] == config.run_id and row["status"] == "completed"
    assert (row["table"], row["dataset"], row["arch"], row["norm"], row["epochs"], row["seed"]) == \
        (1, "cifar10", "vgg16", "bn", 2, 0)
    assert bool(row["synthetic"]) and row["data_source"] == "synthetic" and row["label"] == "synthetic smoke run"
    assert row["test_acc"] == record["final"]["test_acc"] and row["train_acc"] == record["final"]["train_acc"]
    assert row["test_loss"] == record["final"]["test_loss"]
    assert row["train_time_s"] == pytest.approx(sum(h["train_time_s"] for h in record["history"]))
    assert row["device_type"] == "cpu" and row["num_threads"] == 1 and row["epochs_done"] == 2
    histories = load_histories(tmp_path / "runs")
    assert list(histories["epoch"]) == [1, 2] and set(histories["run_id"]) == {config.run_id}
    assert histories["lr"].iloc[0] == pytest.approx(0.1)


def test_running_record_of_a_killed_process_is_not_completed(tmp_path):
    write_json_atomic(tmp_path / "t1-x.json", {"run_id": "t1-x", "status": "running", "config": {}, "history": []})
    runs = load_runs(tmp_path)
    assert runs.loc[0, "status"] == "running" and pd.isna(runs.loc[0, "test_acc"])


def test_project_root_is_found_from_a_subfolder(monkeypatch):
    root = project_root()
    assert (root / "pyproject.toml").is_file() and (root / "ndlib").is_dir()
    monkeypatch.chdir(root / "tests")
    assert project_root() == root


def test_project_root_falls_back_to_the_package_parent(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert (project_root() / "ndlib" / "records.py").is_file()


def test_committed_records_are_valid(tmp_path):
    """Every record in results/runs parses and carries a known status (guards hand edits)."""
    runs = load_runs()
    assert set(runs["status"]) <= {"running", "completed", "diverged", "interrupted", "failed"}
    for path in runs["path"]:
        assert os.path.basename(path).removesuffix(".json") == read_record(path)["run_id"]


def test_this_machine_type_is_what_a_record_written_here_gives():
    from ndlib import records

    env = records.environment_info("cpu")
    assert records.this_machine_type("cpu") == records.machine_type("cpu", env["device_name"], env["cpu_bf16_isa"])
    assert records.this_machine_type("cpu") is not None
    assert records.this_machine_type("mps") is None


def test_machine_id_is_an_anonymous_digest_of_the_boot_id(tmp_path, monkeypatch):
    import hashlib

    from ndlib import records

    boot = tmp_path / "boot_id"
    boot.write_text("0b6a9c1e-1111-2222-3333-444455556666\n")
    monkeypatch.setattr(records, "_BOOT_ID", boot)
    expected = hashlib.sha256(b"0b6a9c1e-1111-2222-3333-444455556666").hexdigest()[:12]
    assert records.machine_id() == expected
    assert records.environment_info("cpu")["machine_id"] == expected
    boot.write_text("another-boot")
    assert records.machine_id() != expected  # a reboot or another machine: another instance
    monkeypatch.setattr(records, "_BOOT_ID", tmp_path / "absent")
    assert records.machine_id() is None  # a system without a boot id: not recorded


def test_segments_on_two_machine_instances_mix_and_leave_the_instance_unknown():
    from ndlib.records import record_machine_id, timing_settings_mixed

    def segment(step, machine, threads=1):
        return {"from_step": step, "device_type": "cpu", "device_name": "cpu-x", "machine_id": machine,
                "num_threads": threads, "keep_freed_memory": True, "world_size": 1}

    one = {"segments": [segment(0, "aaa"), segment(50, "aaa")]}
    assert not timing_settings_mixed(one) and record_machine_id(one) == "aaa"
    moved = {"segments": [segment(0, "aaa"), segment(50, "bbb")]}  # resumed on a replaced machine
    assert timing_settings_mixed(moved) and record_machine_id(moved) is None
    # a segment that did not record its instance (older code) says nothing either way
    older = {"segments": [segment(0, None), segment(50, "bbb")]}
    assert not timing_settings_mixed(older) and record_machine_id(older) is None
    assert timing_settings_mixed({"segments": [segment(0, None), segment(50, "bbb", threads=2)]})
    assert record_machine_id({}) is None and not timing_settings_mixed({})


def test_rewritten_records_under_results_do_not_make_the_code_dirty(tmp_path):
    """A campaign clone rewrites tracked records in results/runs as runs progress: data, not code."""
    import subprocess

    from ndlib import records

    repo = tmp_path / "repo"
    (repo / "ndlib").mkdir(parents=True)
    (repo / "results" / "runs").mkdir(parents=True)
    (repo / "pyproject.toml").write_text("")
    (repo / "ndlib" / "a.py").write_text("x = 1\n")
    (repo / "results" / "runs" / "r.json").write_text("{}\n")
    git = lambda *a: subprocess.run(["git", *a], cwd=repo, check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    git("-c", "user.email=t@example.invalid", "-c", "user.name=t", "add", ".")
    git("-c", "user.email=t@example.invalid", "-c", "user.name=t", "commit", "-qm", "x")
    (repo / "results" / "runs" / "r.json").write_text('{"a": 1}\n')
    original = records.project_root
    records.project_root = lambda start=None: repo
    try:
        assert records.environment_info("cpu")["git_dirty"] is False
        (repo / "ndlib" / "a.py").write_text("x = 2\n")
        assert records.environment_info("cpu")["git_dirty"] is True
    finally:
        records.project_root = original


def test_the_trainer_writes_the_schema_the_readers_use(tmp_path):
    """One definition: a run's record has the fields of RECORD_FIELDS (the first fourteen in their
    order), its history entries EPOCH_FIELDS, and the flattener's history columns are among them."""
    from ndlib.records import EPOCH_FIELDS, RECORD_FIELDS

    record = run(tiny_config(tmp_path, epochs=2), model=tiny_model(), progress=False)
    on_disk = json.loads((tmp_path / "runs" / f"{record['run_id']}.json").read_text())
    assert list(on_disk)[:14] == list(RECORD_FIELDS)[:14] and set(on_disk) <= set(RECORD_FIELDS)
    assert set(RECORD_FIELDS) - set(on_disk) == {"traceback"}  # a failed run's only
    for entry in on_disk["history"]:
        assert tuple(entry) == EPOCH_FIELDS
    assert on_disk["final"] == on_disk["history"][-1]
    assert set(HISTORY_COLUMNS[1:]) <= set(EPOCH_FIELDS)
    from ndlib.records import _summary_row

    assert list(_summary_row(on_disk)) == RUN_COLUMNS
    row = load_runs(tmp_path / "runs").iloc[0]
    assert row["epochs_done"] == 2 and row["test_acc"] == on_disk["history"][-1]["test_acc"]


@pytest.mark.parametrize("status", ["completed", "diverged", "interrupted", "failed"])
def test_finish_record_ends_a_record_in_each_status(status):
    from ndlib.records import add_epoch, epoch_entry, finish_record, new_record

    record = new_record("t1-cifar10-vgg16-bn-e1-s0", 1, {"arch": "vgg16"}, synthetic=False)
    assert record["status"] == "running" and record["history"] == [] and record["label"] == ""
    assert finish_record(dict(record, history=[]), status)["final"] is None  # nothing finished: no final
    entry = epoch_entry(epoch=1, global_step=4, lr=0.1, lr_end=0.0, train_loss=2.0, train_acc=10.0,
                        metrics={"test_loss": 2.1, "test_acc": 9.0, "test_top5": 50.0, "test_images": 32},
                        train_images=64, train_time_s=2.0, eval_time_s=0.5, peak_mem_mb=1.0,
                        peak_mem_kind="cpu_process_max_rss")
    assert entry["images_per_s"] == 32.0 and "resumed_mid_epoch" not in entry
    add_epoch(record, entry)
    error = RuntimeError("boom") if status in ("failed", "interrupted") else None
    finish_record(record, status, error=error, divergence={"step": 3, "epoch": 0, "loss": "nan"}
                  if status == "diverged" else None, traceback="tb" if status == "failed" else None)
    assert record["status"] == status and record["finished_at"] and record["final"] == entry
    assert record["error"] == (None if error is None else "RuntimeError: boom")
    assert ("traceback" in record) == (status == "failed")
    assert (record["divergence"] is not None) == (status == "diverged")
    with pytest.raises(ValueError, match="finishes as one of"):
        finish_record(record, "running")
