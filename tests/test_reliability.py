"""Never lose a result: each fault a user can cause, and what they see (README "Reliability").

Rerun of a completed cell, failed and interrupted reruns, SIGINT / SIGTERM / SIGKILL
mid-epoch with an exact resume, damaged records, full or read-only folders, bad input to
every subcommand, and portable records.  All on tiny synthetic data.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import ndlib.cli
import ndlib.records
import ndlib.train
from _experiments_helpers import CallAt, raising, tiny_config, tiny_model
from ndlib.cli import main
from ndlib.records import RecordWriteError, load_runs, read_record, write_json_atomic
from ndlib.train import run, run_notebook

TESTS = Path(__file__).resolve().parent
PROJECT = TESTS.parent
TINY = ["--synthetic", "--synthetic-image-size", "8", "--synthetic-train-size", "32", "--synthetic-test-size", "16",
        "--batch-size", "16", "--device", "cpu", "--num-threads", "1", "--no-progress"]


@pytest.fixture
def tiny_models(monkeypatch):
    monkeypatch.setattr(ndlib.train, "create_model", lambda config: tiny_model(nd=config.norm == "nd"))


def _cli(tmp_path, *extra: str) -> list[str]:
    return ["train", "--arch", "vgg16", *TINY, "--runs-dir", str(tmp_path / "runs"),
            "--checkpoint-dir", str(tmp_path / "ck"), *extra]


def _record_file(tmp_path) -> Path:
    (path,) = (tmp_path / "runs").glob("*.json")  # the one cell the CLI tests train
    return path


# --------------------------------------------------------------------------------------
# A completed record is never replaced by a run that has not completed
# --------------------------------------------------------------------------------------
def test_rerunning_a_completed_cell_prints_it_and_trains_nothing(tmp_path, tiny_models, monkeypatch, capsys):
    assert main(_cli(tmp_path)) == 0
    before = _record_file(tmp_path).read_bytes()
    capsys.readouterr()
    monkeypatch.setattr(ndlib.train, "create_model", lambda config: pytest.fail("must not train"))
    assert main(_cli(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "already completed" in out and "test_acc" in out and "--rerun" in out
    assert _record_file(tmp_path).read_bytes() == before


def test_a_rerun_that_fails_on_missing_data_leaves_the_record(tmp_path, tiny_models, monkeypatch, capsys):
    assert main(_cli(tmp_path)) == 0
    before = _record_file(tmp_path).read_bytes()
    capsys.readouterr()

    def missing(*args):
        raise FileNotFoundError("cifar10 was not found under typo; fix: pass --data-dir to the folder that holds it")

    monkeypatch.setattr(ndlib.train, "_build_loaders", missing)
    assert main(_cli(tmp_path, "--rerun")) == 2
    assert "not found under typo" in capsys.readouterr().err
    assert _record_file(tmp_path).read_bytes() == before
    assert not list((tmp_path / "runs").rglob("*.rerun.json"))


def test_an_interrupted_rerun_leaves_the_record_and_resumes_with_rerun(tmp_path):
    config = tiny_config(tmp_path, epochs=2, checkpoint_interval_s=0.0)
    first = run(config, model=tiny_model(), progress=False)
    record_file = tmp_path / "runs" / f"{config.run_id}.json"
    before = record_file.read_bytes()
    with pytest.raises(KeyboardInterrupt):
        run(config, model=CallAt(tiny_model(seed=5), 6, raising(KeyboardInterrupt())), progress=False, rerun=True)
    assert record_file.read_bytes() == before
    attempt = read_record(tmp_path / "runs" / "attempts" / f"{config.run_id}.rerun.json")
    assert attempt["status"] == "interrupted"
    # a plain run still returns the completed record; --rerun resumes the rerun and completes it
    assert run(config, model=tiny_model(), progress=False)["started_at"] == first["started_at"]
    again = run(config, model=CallAt(tiny_model(seed=5)), progress=False, rerun=True)
    assert again["status"] == "completed" and again["resumed_at_steps"] == [5]
    assert read_record(record_file)["final"] == again["final"] != first["final"]  # another init: another result
    archived = sorted((tmp_path / "runs" / "attempts").glob("*.json"))
    assert len(archived) == 1 and read_record(archived[0])["final"] == first["final"]
    assert len(load_runs(tmp_path / "runs")) == 1  # the book sees one record per cell


def test_a_completed_rerun_replaces_the_record_and_keeps_the_old_one(tmp_path, tiny_models, capsys):
    assert main(_cli(tmp_path)) == 0
    old = read_record(_record_file(tmp_path))
    assert main(_cli(tmp_path, "--rerun")) == 0
    new = read_record(_record_file(tmp_path))
    assert new["status"] == "completed" and new["started_at"] >= old["started_at"]
    assert main(_cli(tmp_path, "--rerun")) == 0  # again: both earlier records are kept, none overwritten
    kept = sorted(read_record(p)["finished_at"] for p in (tmp_path / "runs" / "attempts").glob("*.json"))
    assert len(kept) == 2 and kept[0] == old["finished_at"]
    assert not list((tmp_path / "runs").glob("attempts/*.rerun.json"))


def test_a_failed_first_run_is_recorded_and_a_later_run_replaces_it(tmp_path):
    config = tiny_config(tmp_path)
    with pytest.raises(RuntimeError):
        run(config, model=CallAt(tiny_model(), 2, raising(RuntimeError("boom"))), progress=False)
    assert read_record(tmp_path / "runs" / f"{config.run_id}.json")["status"] == "failed"
    assert run(config, model=tiny_model(), progress=False, resume=False)["status"] == "completed"
    assert not list(tmp_path.rglob("attempts/*.json"))  # it had finished no epoch: nothing to keep


def test_a_fresh_start_over_an_unfinished_record_archives_its_epochs_first(tmp_path):
    """A machine lost mid-run takes the checkpoint with it, and its lane's record stays ``running``
    with the epochs it finished (a campaign commits it).  Started again from step 0 elsewhere, the
    run keeps that record in attempts/ instead of writing over it; a resume keeps nothing apart."""
    resumed = tiny_config(tmp_path, epochs=3, checkpoint_interval_s=0.0)  # 4 steps per epoch
    with pytest.raises(KeyboardInterrupt):
        run(resumed, model=CallAt(tiny_model(), 9, raising(KeyboardInterrupt())), progress=False)
    assert run(resumed, model=CallAt(tiny_model()), progress=False)["resumed_at_steps"] == [8]
    assert not (tmp_path / "runs" / "attempts").exists()

    config = tiny_config(tmp_path, epochs=3, seed=1, checkpoint_interval_s=0.0)
    with pytest.raises(KeyboardInterrupt):
        run(config, model=CallAt(tiny_model(), 9, raising(KeyboardInterrupt())), progress=False)
    record_file = tmp_path / "runs" / f"{config.run_id}.json"
    killed = dict(read_record(record_file), status="running")  # as SIGKILL leaves it
    write_json_atomic(record_file, killed)
    for checkpoint in (tmp_path / "checkpoints").rglob("*"):  # the lost machine's disk
        if checkpoint.is_file() and config.run_id in str(checkpoint):
            checkpoint.unlink()
    again = run(config, model=CallAt(tiny_model(seed=1)), progress=False)
    assert again["status"] == "completed" and again["resumed_at_steps"] == [] and len(again["history"]) == 3
    (archived,) = (tmp_path / "runs" / "attempts").glob(f"{config.run_id}.*.json")
    assert read_record(archived) == killed and len(killed["history"]) == 2
    assert {r["run_id"] for r in load_runs(tmp_path / "runs").to_dict("records")} == {resumed.run_id, config.run_id}


# --------------------------------------------------------------------------------------
# Signals and exact resume
# --------------------------------------------------------------------------------------
def _weights(model: nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture
def python_sigint_handler():
    """Python's usual SIGINT handler for the test, whatever the process inherited (a shell
    starts background jobs with SIGINT ignored, and Python then keeps it ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_epoch_records_interrupted_and_resume_is_exact(tmp_path, signum, python_sigint_handler):
    straight_model = CallAt(tiny_model(nd=True))
    straight = run(tiny_config(tmp_path / "straight", epochs=2), model=straight_model, progress=False)
    config = tiny_config(tmp_path / "stopped", epochs=2, checkpoint_interval_s=0.0)
    with pytest.raises(KeyboardInterrupt):
        run(config, model=CallAt(tiny_model(nd=True), 3, lambda: os.kill(os.getpid(), signum)), progress=False)
    stopped = read_record(tmp_path / "stopped" / "runs" / f"{config.run_id}.json")
    assert stopped["status"] == "interrupted" and stopped["history"] == []
    resumed_model = CallAt(tiny_model(nd=True, seed=99))
    resumed = run(config, model=resumed_model, progress=False)
    assert resumed["resumed_at_steps"] == [2] and resumed["history"][0]["resumed_mid_epoch"]
    for key in ("train_loss", "train_acc", "test_loss", "test_acc", "test_top5"):
        assert resumed["final"][key] == straight["final"][key], key
    expected, got = _weights(straight_model), _weights(resumed_model)
    assert all(torch.equal(expected[name], got[name]) for name in expected)


_CHILD = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from _experiments_helpers import CallAt, tiny_config, tiny_model
    from ndlib.train import run

    config = tiny_config(Path({root!r}), epochs=2, synthetic_train_size=128, checkpoint_interval_s=0.0)
    kill = CallAt(tiny_model(nd=True), {kill_at}, lambda: os.kill(os.getpid(), signal.SIGKILL))
    run(config, model=kill, progress=False)
""")


@pytest.mark.parametrize("kill_at", [4, 13])  # mid first epoch, mid second epoch (8 steps each)
def test_sigkill_mid_epoch_then_the_same_command_gives_the_uninterrupted_result(tmp_path, kill_at):
    straight_model = CallAt(tiny_model(nd=True))
    straight = run(tiny_config(tmp_path / "straight", epochs=2, synthetic_train_size=128), model=straight_model,
                   progress=False)
    root = tmp_path / "killed"
    child = subprocess.run([sys.executable, "-c", _CHILD.format(tests=str(TESTS), root=str(root), kill_at=kill_at)],
                           capture_output=True, text=True, timeout=120)
    assert child.returncode == -signal.SIGKILL, child.stderr
    config = tiny_config(root, epochs=2, synthetic_train_size=128, checkpoint_interval_s=0.0)
    assert read_record(root / "runs" / f"{config.run_id}.json")["status"] == "running"  # killed: no chance to say
    assert not [p for p in (root / "checkpoints" / config.run_id).iterdir() if p.name != "last.pt"]  # no torn files
    resumed_model = CallAt(tiny_model(nd=True, seed=99))
    resumed = run(config, model=resumed_model, progress=False)
    assert resumed["status"] == "completed" and resumed["resumed_at_steps"] == [kill_at - 1]
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
    for epoch in range(2):
        for key in ("train_loss", "train_acc", "test_loss", "test_acc", "test_top5", "lr", "lr_end"):
            assert resumed["history"][epoch][key] == straight["history"][epoch][key], (epoch, key)
    expected, got = _weights(straight_model), _weights(resumed_model)
    assert all(torch.equal(expected[name], got[name]) for name in expected)


def test_the_tensor_loader_continues_mid_epoch_with_the_same_batches():
    from ndlib.data import TensorLoader, synthetic_arrays

    train, _, _ = synthetic_arrays(40, 8, 3, 8, seed=1)
    loader = TensorLoader(train, 8, (0.5,) * 3, (0.25,) * 3, train=True, seed=3)
    loader.set_epoch(2)
    full = list(loader)
    loader.set_epoch(2)
    iterator = iter(loader)
    for _ in range(2):
        next(iterator)
    state = loader.state_dict()
    other = TensorLoader(train, 8, (0.5,) * 3, (0.25,) * 3, train=True, seed=3)
    other.load_state_dict(state)
    rest = list(other)
    assert len(rest) == 3
    for (x, y), (x2, y2) in zip(full[2:], rest):
        assert torch.equal(x, x2) and torch.equal(y, y2)


# --------------------------------------------------------------------------------------
# Damaged records, full or read-only folders
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("content, problem", [
    ('{"run_id": "t1-x", "status": "compl', "not valid JSON"),
    ('{"run_id": "t1-x", "status": "completed", "config": {}, "schema_version": 99}', "schema_version 99"),
    ('[1, 2]', "lacks a run_id"),
])
def test_a_damaged_record_is_named_everywhere(tmp_path, tiny_models, capsys, content, problem):
    runs = tmp_path / "runs"
    runs.mkdir()
    name = ndlib.cli.config_from_args(ndlib.cli.build_parser().parse_args(_cli(tmp_path)), None).run_id + ".json"
    (runs / name).write_text(content)
    with pytest.raises(ValueError, match=re.escape(name) + ".*" + re.escape(problem)):
        load_runs(runs)
    assert main(_cli(tmp_path)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and name in err[0] and problem in err[0]
    assert (runs / name).read_text() == content  # untouched


def test_a_full_disk_is_named_and_leaves_the_previous_version(tmp_path, monkeypatch):
    path = write_json_atomic(tmp_path / "r.json", {"a": 1})

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(RecordWriteError, match=r"cannot write .*r\.json \(No space left on device\).*free disk"):
        write_json_atomic(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_a_read_only_runs_folder_is_one_line_exit_2(tmp_path, tiny_models, monkeypatch, capsys):
    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(ndlib.records.tempfile, "mkstemp", read_only)
    assert main(_cli(tmp_path)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "Permission denied" in err[-1] and "writable" in err[-1]
    assert not list((tmp_path / "runs").glob("*")) if (tmp_path / "runs").exists() else True


# --------------------------------------------------------------------------------------
# Bad input: one line, exit 2, no traceback
# --------------------------------------------------------------------------------------
def _exit_and_stderr(args: list[str], capsys) -> tuple[int, str]:
    try:
        code = main(args)
    except SystemExit as done:
        code = done.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("args, problem", [
    (["train", "--arch", "nope"], "invalid choice: 'nope'"),
    (["train", "--arch", "vgg16", "--epochs", "0"], "epochs must be a positive integer"),
    (["train", "--arch", "vgg16", "--lr", "fast"], "invalid float value: 'fast'"),
    (["train", "--arch", "vgg16", "--checkpoint-interval-s", "-1"], "checkpoint_interval_s must be a non-negative"),
    (["grid", "--table", "1", "--archs", "nope", "--dry-run"], "invalid archs ['nope']"),
    (["grid", "--table", "3"], "invalid choice: 3"),
    (["bench", "--arch", "nope"], "unknown arch 'nope'"),
    (["bench", "--arch", "vgg16", "--image-size", "-3"], "image_size must be a positive int"),
    (["bench", "--arch", "vgg16", "--batch-size", "0"], "batch_size must be a positive int"),
    (["train", "--arch", "vgg16", "--seed", "99999999999"], "seed must be an integer from 0 to 4294967295"),
    (["train", "--arch", "vgg16", "--norm", "bn", "--deconv-block", "5"], "deconv_block only apply to ND models"),
    (["train", "--arch", "vgg16", "--device", "cudax"], "device must be 'auto', 'cpu', 'cuda' or 'cuda:<index>'"),
    (["train", "--arch", "vgg16", "--device", "cuda:-1"], "device must be"),
    (["train", "--arch", "resnet18", "--synthetic", "--synthetic-image-size", "1"], "at least 8"),
    (["train", "--arch", "vgg16", "--synthetic", "--download"], "synthetic runs read no dataset"),
    (["train", "--arch", "vgg16", "--synthetic", "--data-dir", "data"], "synthetic runs read no dataset"),
    (["grid", "--table", "1", "--norms", "none", "--dry-run"], "no runs planned"),
    (["grid", "--table", "1", "--seeds", "0", "0", "--dry-run"], "seeds lists [0] more than once"),
    (["grid", "--table", "1", "--archs", "vgg16", "--dry-run", "--slurm", "x.sh"], "give one of them"),
    (["grid", "--table", "1", "--archs", "vgg16", "--slurm", "x.sh", "--partition", "gpu\n#SBATCH --x"],
     "is not a Slurm partition name"),
    (["grid", "--table", "1", "--archs", "vgg16", "--seeds", "-1", "--dry-run"], "seed must be an integer from 0"),
])
def test_every_subcommand_rejects_bad_input_in_one_line(args, problem, capsys):
    code, err = _exit_and_stderr(args, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and problem in lines[0] and "--help" in lines[0], err


def test_the_entry_point_prints_no_traceback_for_bad_input():
    done = subprocess.run([sys.executable, "-m", "ndlib", "bench", "--arch", "nope"], capture_output=True, text=True,
                          cwd=PROJECT, timeout=120)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_without_cuda_is_one_line(tmp_path, capsys, tiny_models):
    code, err = _exit_and_stderr(["bench", "--arch", "vgg16", "--device", "cuda"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "CUDA is not available" in err
    code, err = _exit_and_stderr(_cli(tmp_path, "--device", "cuda"), capsys)
    assert code == 2 and "CUDA is not available" in err.strip().splitlines()[-1]
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").glob("*.json"))


def test_a_notebook_returns_a_completed_record_instead_of_training(tmp_path, monkeypatch):
    parameters = {"synthetic": True, "synthetic_train_size": 16, "synthetic_test_size": 16, "synthetic_image_size": 8,
                  "batch_size": 16, "num_threads": 1, "device": "cpu", "records_dir": str(tmp_path / "runs"),
                  "checkpoint_dir": str(tmp_path / "ck")}
    monkeypatch.setattr(ndlib.train, "create_model", lambda config: tiny_model())
    first = run_notebook(parameters)
    assert first["status"] == "completed" and not first["reused"]
    monkeypatch.setattr(ndlib.train, "create_model", lambda config: pytest.fail("must not train"))
    again = run_notebook(parameters)
    assert again["reused"] and again["final"] == first["final"]


@pytest.mark.parametrize("parameters, message", [
    ({"synthetic": True, "rerun": "yes"}, "rerun must be True or False"),
    ({"synthetic": True, "epochs": -1}, "epochs must be a positive integer"),
    ({"synthetic": True, "archh": "vgg16"}, "unknown notebook parameter"),
])
def test_notebook_parameters_are_checked(parameters, message):
    with pytest.raises(ValueError, match=message):
        run_notebook(parameters)


# --------------------------------------------------------------------------------------
# Portable records
# --------------------------------------------------------------------------------------
_ABSOLUTE = re.compile(r"(?<![\w.<~])/(?:root|home|work|tmp|usr|opt|var|mnt|srv|Users|private)/|[A-Za-z]:\\\\")


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def test_a_new_record_carries_no_absolute_path(tmp_path):
    config = tiny_config(tmp_path)
    with pytest.raises(RuntimeError):  # a failed run: traceback and error scrubbed too
        run(config, model=CallAt(tiny_model(), 2, raising(RuntimeError(f"boom in {tmp_path}"))), progress=False)
    run(tiny_config(tmp_path / "ok"), model=tiny_model(), progress=False)
    for path in (tmp_path / "runs").glob("*.json"), (tmp_path / "ok" / "runs").glob("*.json"):
        for record_file in path:
            text = record_file.read_text()
            bad = [s for s in _strings(json.loads(text)) if _ABSOLUTE.search(s)]
            assert not bad, bad[:3]


def test_no_committed_record_carries_an_absolute_path_or_describes_people():
    files = sorted((PROJECT / "results").rglob("*.json"))
    assert files
    for path in files:
        strings = list(_strings(json.loads(path.read_text())))
        bad = [s for s in strings if _ABSOLUTE.search(s)]
        assert not bad, f"{path.name}: {bad[:3]}"
        about_people = r"\b(engineers?|colleagues?|people|users?|lead|developers?|someone)\b"
        people = [s for s in strings if re.search(about_people, s, re.I) and not s.startswith("git")]
        assert not people, f"{path.name}: a note describes people: {people[:2]}"


def test_portable_path_is_relative_inside_the_project_and_a_placeholder_outside(tmp_path):
    from ndlib.paths import portable_path

    assert portable_path(PROJECT / "data") == "data"
    link = PROJECT / ".pytest_cache" / "portable-link"  # a link inside the project to a folder outside it
    link.parent.mkdir(exist_ok=True)
    link.unlink(missing_ok=True)
    link.symlink_to(tmp_path)
    try:
        assert portable_path(link) == ".pytest_cache/portable-link"
    finally:
        link.unlink()
    assert portable_path(tmp_path / "x").startswith("<tmp>/")
    assert portable_path("/nowhere/at/all") == "<outside the project>/all"


# --------------------------------------------------------------------------------------
# Round two (issue "Never lose a result, part 2"): weights, promotion, checkpoint faults
# --------------------------------------------------------------------------------------
def test_an_interrupted_rerun_never_touches_the_completed_runs_weights(tmp_path):
    """The rerun's mid-epoch checkpoints go beside the final weights (rerun.pt), not over them."""
    config = tiny_config(tmp_path, epochs=2, checkpoint_interval_s=0.0)
    run(config, model=tiny_model(), progress=False)
    final = tmp_path / "checkpoints" / config.run_id / "last.pt"
    before = final.read_bytes()
    with pytest.raises(KeyboardInterrupt):
        run(config, model=CallAt(tiny_model(seed=5), 3, raising(KeyboardInterrupt())), progress=False, rerun=True)
    assert final.read_bytes() == before
    assert (tmp_path / "checkpoints" / config.run_id / "rerun.pt").is_file()
    done = run(config, model=CallAt(tiny_model(seed=5)), progress=False, rerun=True)
    assert done["status"] == "completed" and done["resumed_at_steps"] == [2]
    assert not (tmp_path / "checkpoints" / config.run_id / "rerun.pt").exists()
    assert final.read_bytes() != before  # the new weights, promoted with the record
    (kept,) = (tmp_path / "checkpoints" / config.run_id).glob("last.*.pt")  # the old ones, archived
    assert kept.read_bytes() == before


def test_a_completed_rerun_that_could_not_be_promoted_is_promoted_by_the_next_command(tmp_path, monkeypatch):
    config = tiny_config(tmp_path)
    first = run(config, model=tiny_model(), progress=False)
    real = ndlib.train.write_json_atomic
    calls = []

    def full_disk_at_the_swap(path, payload):
        calls.append(Path(path))
        if Path(path) == tmp_path / "runs" / f"{config.run_id}.json" and payload.get("status") == "completed":
            raise RecordWriteError(f"cannot write {path} (No space left on device)")
        return real(path, payload)

    monkeypatch.setattr(ndlib.train, "write_json_atomic", full_disk_at_the_swap)
    with pytest.raises(RecordWriteError):
        run(config, model=tiny_model(seed=5), progress=False, rerun=True)
    monkeypatch.undo()
    pending = read_record(tmp_path / "runs" / "attempts" / f"{config.run_id}.rerun.json")
    assert pending["status"] == "completed" and read_record(tmp_path / "runs" / f"{config.run_id}.json") == first
    trained = []
    monkeypatch.setattr(ndlib.train, "create_model", lambda c: trained.append(1) or tiny_model())
    promoted = run(config, progress=False)  # a plain run: promotes, trains nothing
    assert trained == [] and promoted["started_at"] == pending["started_at"]
    assert read_record(tmp_path / "runs" / f"{config.run_id}.json")["final"] == pending["final"]
    archives = [p for p in (tmp_path / "runs" / "attempts").glob("*.json")]
    assert len(archives) == 1 and read_record(archives[0])["started_at"] == first["started_at"]  # archived once


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_a_checkpoint_folder_that_cannot_be_written_is_one_line_exit_2_and_keeps_the_epoch(
        tmp_path, tiny_models, monkeypatch, capsys, fault):
    if fault == "full":
        def no_space(*args, **kwargs):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")
        monkeypatch.setattr(ndlib.train.torch, "save", no_space)
    else:
        real_mkdir = Path.mkdir

        def read_only(self, *args, **kwargs):  # the checkpoint folder only; the runs folder is writable
            if str(tmp_path / "ck") in str(self):
                raise PermissionError(13, "Permission denied", str(self))
            return real_mkdir(self, *args, **kwargs)
        monkeypatch.setattr(Path, "mkdir", read_only)
    assert main(_cli(tmp_path, "--checkpoint-interval-s", "100000")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "cannot write checkpoint" in err[-1] and "--checkpoint-dir" in err[-1]
    assert "Traceback" not in "\n".join(err)
    record = read_record(_record_file(tmp_path))
    assert record["status"] == "interrupted" and len(record["history"]) == 1  # the trained epoch is kept


def test_grid_stops_at_a_checkpoint_folder_that_cannot_be_written(tmp_path, tiny_models, monkeypatch, capsys):
    monkeypatch.setattr(ndlib.train.torch, "save", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("disk full")))
    args = ["grid", "--table", "1", "--archs", "vgg16", "--datasets", "cifar10", "--epochs", "1", *TINY,
            "--runs-dir", str(tmp_path / "runs"), "--checkpoint-dir", str(tmp_path / "ck")]
    assert main(args) == 2
    assert "cannot write checkpoint" in capsys.readouterr().err
    assert len(list((tmp_path / "runs").glob("*.json"))) == 1  # the first cell only: the grid stopped there


def test_temporary_checkpoints_of_a_killed_save_are_removed_on_the_next_start(tmp_path):
    config = tiny_config(tmp_path)
    folder = tmp_path / "checkpoints" / config.run_id
    folder.mkdir(parents=True)
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    orphan = folder / f".last.pt.{dead}.tmp"
    orphan.write_bytes(b"x" * 1000)
    live = folder / f".last.pt.{os.getppid()}.tmp"  # a live process's save in flight: left alone
    live.write_bytes(b"y")
    run(config, model=tiny_model(), progress=False)
    assert not orphan.exists() and live.exists()


def test_every_resume_is_kept_not_only_the_last(tmp_path):
    config = tiny_config(tmp_path, epochs=2, checkpoint_interval_s=0.0)
    with pytest.raises(KeyboardInterrupt):
        run(config, model=CallAt(tiny_model(), 2, raising(KeyboardInterrupt())), progress=False)
    with pytest.raises(KeyboardInterrupt):
        run(config, model=CallAt(tiny_model(), 5, raising(KeyboardInterrupt())), progress=False)
    done = run(config, model=CallAt(tiny_model()), progress=False)
    assert done["resumed_at_steps"] == [1, 5] and done["resumed_at_epochs"] == [0, 1]


def test_records_name_no_host_and_scrub_any_absolute_path_in_free_text(tmp_path):
    from ndlib.paths import scrub_paths

    record = run(tiny_config(tmp_path), model=tiny_model(), progress=False)
    assert "hostname" not in record["environment"] and "machine_id" in record["environment"]
    assert scrub_paths("checkpoint /scratch/alice/ck/last.pt failed") == "checkpoint <path>/last.pt failed"
    assert scrub_paths('File "/opt/x/y.py", line 3') == 'File "<path>/y.py", line 3'
    for kept in ("data/cifar10_train.npz", "https://example.org/a/b", "1/2", "<project>/results/x.json"):
        assert scrub_paths(kept) == kept


@pytest.mark.parametrize("field, value", [("final", [1]), ("history", "abc"), ("environment", 3),
                                          ("history", [1, 2]), ("segments", {})])
def test_a_record_with_wrongly_typed_fields_is_named_as_damaged(tmp_path, tiny_models, capsys, field, value):
    assert main(_cli(tmp_path)) == 0
    path = _record_file(tmp_path)
    record = json.loads(path.read_text())
    record[field] = value
    path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match=f"wrongly typed field.*{field}"):
        read_record(path)
    assert main(_cli(tmp_path)) == 2
    assert str(path) in capsys.readouterr().err
    assert main(["grid", "--table", "1", "--archs", "vgg16", "--datasets", "cifar10", "--epochs", "1", *TINY,
                 "--runs-dir", str(tmp_path / "runs"), "--dry-run"]) == 2


def test_an_unreadable_record_is_named(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    path.write_text("{}")
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: (_ for _ in ()).throw(PermissionError(13, "denied")))
    with pytest.raises(ValueError, match="cannot be read"):
        read_record(path)


def test_records_get_the_umasks_mode_not_0600(tmp_path):
    path = write_json_atomic(tmp_path / "x.json", {"a": 1})
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_a_runs_folder_where_no_claim_can_be_written_is_one_line_exit_2(tmp_path, tiny_models, monkeypatch, capsys):
    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if self.name == ".claims":
            raise PermissionError(13, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)
    monkeypatch.setattr(Path, "mkdir", read_only)
    assert main(_cli(tmp_path)) == 2
    assert "cannot write the claim" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["truncated", "bit-flipped", "not a zip"])
def test_a_damaged_dataset_file_is_named_with_the_fix_exit_2_and_no_record(tmp_path, tiny_models, capsys, damage):
    import numpy as np

    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 32), ("test", 16)):
        np.savez_compressed(data / f"cifar10_{split}.npz", x=rng.integers(0, 255, (n, 32, 32, 3), dtype=np.uint8),
                            y=rng.integers(0, 10, n))
    path = data / "cifar10_train.npz"
    raw = bytearray(path.read_bytes())
    if damage == "truncated":
        raw = raw[: len(raw) // 2]
    elif damage == "bit-flipped":
        middle = len(raw) // 2
        raw[middle:middle + 64] = bytes(b ^ 0xFF for b in raw[middle:middle + 64])
    else:
        raw = b"this is not an archive" * 100
    path.write_bytes(bytes(raw))
    args = ["train", "--arch", "vgg16", "--batch-size", "16", "--device", "cpu", "--num-threads", "1",
            "--no-progress", "--data-dir", str(data), "--runs-dir", str(tmp_path / "runs"),
            "--checkpoint-dir", str(tmp_path / "ck")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "cifar10_train.npz is damaged" in err and "make data" in err and "pickle" not in err
    assert not list((tmp_path / "runs").glob("*.json"))


def test_a_synthetic_image_too_small_for_the_model_is_bad_input_before_any_record(tmp_path, capsys):
    """VGG-16's five poolings need 32 pixels: 8 used to fail mid-run with a 'failed' record."""
    code, err = _exit_and_stderr(["train", "--arch", "vgg16", "--synthetic", "--synthetic-image-size", "8",
                                  "--synthetic-train-size", "16", "--synthetic-test-size", "16", "--batch-size", "16",
                                  "--device", "cpu", "--num-threads", "1", "--no-progress",
                                  "--runs-dir", str(tmp_path / "runs"), "--checkpoint-dir", str(tmp_path / "ck")],
                                 capsys)
    assert code == 2 and "synthetic_image_size 8 is too small for vgg16" in err.strip().splitlines()[-1]
    assert not list((tmp_path / "runs").glob("*.json")) if (tmp_path / "runs").exists() else True


def test_grid_gives_the_nd_options_to_the_nd_runs_only():
    from ndlib.grid import plan

    configs = plan(1, epochs=[1], archs=["vgg16"], datasets=["cifar10"], deconv_refresh_every=4)
    by_norm = {c.norm: c for c in configs}
    assert by_norm["nd"].deconv_refresh_every == 4 and by_norm["bn"].deconv_refresh_every is None
