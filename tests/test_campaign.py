"""Campaigns (ndlib.campaign): the file, lanes, skipping finished runs, resume, a clean pause,
claims between lanes, status, committing records, and one-line errors.  Synthetic data only."""
from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import ndlib.campaign as campaign_module
from ndlib.campaign import CampaignError, load_campaign, next_run, pause_file, status_lines, work_lane
from ndlib.claims import claim, claims_folder
from ndlib.cli import main
from ndlib.config import execution_of_options
from ndlib.config import run_id_options as report_options
from ndlib.grid import run_status

TINY_SETTINGS = """
[settings]
synthetic = true
synthetic_image_size = 8
synthetic_train_size = 32
synthetic_test_size = 16
batch_size = 16
"""


def _write(tmp_path: Path, stages: str, settings: str = TINY_SETTINGS, name: str = "tiny") -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / f"{name}.toml"
    path.write_text(f'name = "{name}"\n' + textwrap.dedent(settings) + textwrap.dedent(stages))
    return path


PAIR = """
[[stage]]
title = "one pair"
datasets = ["cifar10"]
archs = ["resnet18"]
norms = ["bn", "nd"]
epochs = [1]
"""


def _placement(tmp_path: Path, **extra) -> dict:
    return dict(runs_dir=str(tmp_path / "runs"), checkpoint_dir=str(tmp_path / "ck"), num_threads=1, device="cpu",
                **extra)


def _records(tmp_path: Path) -> dict:
    return {p.stem: json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*.json")}


def test_the_project_campaign_lists_the_issue_order():
    campaign = load_campaign(campaign_module.default_campaign())
    ids = [c.run_id.removesuffix(f"-{report_options(c.run_id)}") for c in campaign.runs]  # any execution
    assert all(execution_of_options(report_options(c.run_id)) for c in campaign.runs)  # and nothing else
    assert ids[:8] == ["t1-cifar10-vgg16-bn-e20-s0", "t1-cifar10-vgg16-nd-e20-s0",
                       "t1-cifar100-vgg16-bn-e20-s0", "t1-cifar100-vgg16-nd-e20-s0",
                       # the covariance-grad fidelity test, queued before the stages that wait for it
                       "t1-cifar100-resnet18-nd-e1-s0", "t1-cifar10-resnet18-nd-e1-s0",
                       "t1-cifar10-efficientnetb0-bn-e20-s0", "t1-cifar10-efficientnetb0-nd-e20-s0"]
    assert len([i for i in ids if i.endswith("-e20-s0")]) == 8 + 8 + 8 + 4
    assert ids[10] == "t1-cifar100-resnet18-bn-e20-s0" and ids[18] == "t1-cifar10-resnet18-bn-e20-s0"
    assert [i.split("-")[2] for i in ids[10:26:2]] == ["resnet18", "mobilenetv2", "preact18", "senet18"] * 2
    # ND's covariance backward in bf16 where it made the ND step faster (results/bench/README.md), ND runs only
    low = {(c.dataset, c.arch) for c in campaign.runs if c.deconv_covariance_grad == "input" and c.epochs == 20}
    assert low == {(d, a) for d in ("cifar10", "cifar100") for a in ("resnet18", "preact18", "senet18")}
    assert all(c.norm == "nd" for c in campaign.runs if c.deconv_covariance_grad is not None)


def test_the_project_campaign_trains_in_bf16_only_once_the_committed_fidelity_test_accepted_it():
    from ndlib import convergence, fidelity
    from ndlib.paths import project_root
    from ndlib.records import load_runs

    campaign = load_campaign(campaign_module.default_campaign())
    pairs: dict[tuple, set] = {}
    for config in campaign.runs:
        pairs.setdefault((config.dataset, config.arch, config.epochs, config.seed), set()).add(config.amp)
    assert all(len(precisions) == 1 for precisions in pairs.values())  # both sides of a pair in one precision
    assert convergence.cell_executions(campaign.runs, 20)  # one precision and layout per cell, or it raises
    # float32 where bf16 made the lanes' step slower (results/bench/README.md, tools/bench_step_settings.py)
    assert {c.arch for c in campaign.runs if c.epochs == 20 and not c.amp} == {"efficientnetb0", "pnasneta"}
    assert not any(c.amp for c in campaign.runs if c.epochs == 1 and c.seed > 0)  # extra seeds join float32 seeds
    bf16 = [c for c in campaign.runs if c.amp]
    if bf16:
        table = fidelity.fidelity_table(load_runs(project_root() / "results" / "runs"))
        accepted, verdict = fidelity.fidelity_verdict(table)
        assert accepted is True, verdict
        assert all(execution_of_options(report_options(c.run_id))[0] for c in bf16)  # bf16 (and layout) only


def test_the_project_campaign_trains_channels_last_only_where_it_was_measured_faster():
    campaign = load_campaign(campaign_module.default_campaign())
    # every 20-epoch stage after VGG-16 (tools/bench_step_settings.py --compare layout, results/bench/README.md)
    layout = {(c.dataset, c.arch) for c in campaign.runs if c.channels_last}
    assert layout == {(c.dataset, c.arch) for c in campaign.runs if c.epochs == 20 and c.arch != "vgg16"}
    assert len(layout) == 12  # EfficientNet-B0, the four of stages 2 and 3a, PNASNet-A; both datasets
    assert not any(c.channels_last for c in campaign.runs if c.epochs == 1 and c.seed > 0)  # extra seeds: contiguous


def test_a_stage_sets_the_layout_of_its_runs_and_a_wrong_value_is_one_clear_error(tmp_path):
    text = PAIR.replace("[[stage]]", "[[stage]]\nchannels_last = true", 1)
    campaign = load_campaign(_write(tmp_path, text), **_placement(tmp_path))
    assert all(c.channels_last for c in campaign.runs)
    contiguous = load_campaign(_write(tmp_path, PAIR), **_placement(tmp_path))
    assert not {c.run_id for c in campaign.runs} & {c.run_id for c in contiguous.runs}  # ids of their own
    bad = PAIR.replace("[[stage]]", '[[stage]]\nchannels_last = "yes"', 1)
    with pytest.raises(CampaignError, match="channels_last must be True or False"):
        load_campaign(_write(tmp_path, bad), **_placement(tmp_path))


def test_stages_expand_in_order_with_pairs_adjacent(tmp_path):
    campaign = load_campaign(_write(tmp_path, PAIR.replace('["cifar10"]', '["cifar10", "cifar100"]')),
                             **_placement(tmp_path))
    assert [(c.dataset, c.norm) for c in campaign.runs] == [("cifar10", "bn"), ("cifar10", "nd"),
                                                           ("cifar100", "bn"), ("cifar100", "nd")]
    assert campaign.stages == ("one pair",) * 4 and campaign.runs[0].num_threads == 1


def test_a_stage_may_set_its_own_precision(tmp_path):
    stages = PAIR + PAIR.replace('"one pair"', '"float32 seeds"').replace("epochs = [1]", "epochs = [2]\namp = false")
    campaign = load_campaign(_write(tmp_path, stages, TINY_SETTINGS + "amp = true\n"), **_placement(tmp_path))
    assert [c.amp for c in campaign.runs] == [True, True, False, False]


def test_a_lane_leaves_bf16_runs_to_a_machine_with_native_bf16(tmp_path, monkeypatch):
    stages = PAIR + PAIR.replace("epochs = [1]", "epochs = [1]\namp = false").replace('"resnet18"', '"vgg16"')
    campaign = load_campaign(_write(tmp_path, stages, TINY_SETTINGS + "amp = true\n"), **_placement(tmp_path))
    monkeypatch.setattr(campaign_module, "cpu_has_native_bf16", lambda: False)
    assert [campaign_module.needs_native_bf16(c) for c in campaign.runs] == [True, True, False, False]
    assert next_run(campaign).run_id == campaign.runs[2].run_id  # the first float32 run: vgg16 bn
    # the float32 runs are done
    monkeypatch.setattr(campaign_module, "next_run", lambda campaign, skip, untouched_only=False: None)
    out = io.StringIO()
    assert work_lane(campaign, 1, stream=out) == 0
    assert "nothing left to train here: 2 bf16 runs wait for a machine with native bf16" in out.getvalue()
    text = "\n".join(status_lines(campaign))
    assert text.count("[bf16: not on this CPU]") == 2 and f"next        {campaign.runs[2].run_id}" in text
    assert "  one pair  (0 of 4 done, ~0 h left, 4 without an estimate)" in text  # nothing to estimate from
    from ndlib.records import this_machine_type

    assert f"those of this machine type, {this_machine_type('cpu')}, where there are any" in text
    monkeypatch.setattr(campaign_module, "cpu_has_native_bf16", lambda: True)
    assert not any(campaign_module.needs_native_bf16(c) for c in campaign.runs)


def test_a_deconv_setting_applies_to_the_nd_runs_of_its_stage(tmp_path):
    text = PAIR.replace("[[stage]]", '[[stage]]\namp = true\ndeconv_covariance_grad = "input"', 1)
    campaign = load_campaign(_write(tmp_path, text), **_placement(tmp_path))
    assert [(c.norm, c.amp, c.deconv_covariance_grad) for c in campaign.runs] == [("bn", True, None),
                                                                                  ("nd", True, "input")]
    without_amp = PAIR.replace("[[stage]]", '[[stage]]\ndeconv_covariance_grad = "input"', 1)
    with pytest.raises(CampaignError, match="only changes a bf16 autocast run"):
        load_campaign(_write(tmp_path, without_amp), **_placement(tmp_path))


def test_a_fidelity_stage_queues_the_tests_own_runs(tmp_path):
    from ndlib.fidelity import fidelity_campaign

    stages = PAIR + '[[stage]]\ntitle = "the test"\nfidelity = "covariance-grad"\n'
    campaign = load_campaign(_write(tmp_path, stages), **_placement(tmp_path))
    test_runs = load_campaign(fidelity_campaign("covariance-grad")).runs
    assert [c.run_id for c in campaign.runs[2:]] == [c.run_id for c in test_runs]
    assert campaign.stages[2:] == ("the test",) * len(test_runs) and campaign.runs[2].num_threads == 1
    for bad, message in (('fidelity = "fp8"', "unknown fidelity test 'fp8'"),
                         ('fidelity = "bf16"\narchs = ["vgg16"]', "a fidelity stage takes only")):
        with pytest.raises(CampaignError, match=message):
            load_campaign(_write(tmp_path, PAIR + f"[[stage]]\n{bad}\n"), **_placement(tmp_path))


def test_a_run_waiting_for_a_fidelity_test_is_skipped_and_shown(tmp_path, monkeypatch):
    from ndlib.fidelity import FIDELITY_TESTS

    campaign = load_campaign(_write(tmp_path, PAIR), **_placement(tmp_path))
    waits = {campaign.runs[0].run_id}
    monkeypatch.setattr(campaign_module, "_waiting_for",
                        lambda config, records: FIDELITY_TESTS["bf16"] if config.run_id in waits else None)
    assert next_run(campaign).run_id == campaign.runs[1].run_id  # the BN run waits: its ND partner goes first
    text = "\n".join(status_lines(campaign))
    assert f"missing     {campaign.runs[0].run_id}  [waits for the bf16 fidelity test]" in text
    assert f"next        {campaign.runs[1].run_id}" in text
    waits.add(campaign.runs[1].run_id)
    assert next_run(campaign) is None
    out = io.StringIO()
    assert work_lane(campaign, 1, stream=out) == 0
    assert "nothing left to train; 2 runs wait for a fidelity test's verdict" in out.getvalue()


def test_native_bf16_is_read_from_the_cpu_flags(tmp_path):
    from ndlib.devices import cpu_has_native_bf16

    for flags, native in (("fpu avx2 amx_bf16 amx_tile", True), ("fpu avx512f avx512_bf16", True),
                          ("fpu avx2 avx512f", False)):
        path = tmp_path / f"cpuinfo-{native}-{len(flags)}"
        path.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        assert cpu_has_native_bf16.__wrapped__(path) is native
    assert cpu_has_native_bf16.__wrapped__(tmp_path / "absent") is False


def test_the_bf16_isa_names_which_native_bf16_a_cpu_has(tmp_path):
    """Two AMD EPYC VMs of this project differ only here (AVX2 only vs AVX512-BF16), and bf16 is
    more than tenfold slower on the first, so records name the ISA, AMX first where both exist."""
    from ndlib.devices import cpu_bf16_isa

    for flags, isa in (("fpu avx512_bf16 amx_bf16 amx_tile", "amx_bf16"), ("fpu avx512f avx512_bf16", "avx512_bf16"),
                       ("fpu avx2", "none")):
        path = tmp_path / f"cpuinfo-{isa}"
        path.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        assert cpu_bf16_isa(path) == isa
    assert cpu_bf16_isa(tmp_path / "absent") is None


@pytest.mark.parametrize("text, message", [
    ('name = "x"\n[[stage]]\ndatasets = ["cifar10"]\narchs = ["vgg16"]\nnorms = ["bn"]\nepoch = [1]\n',
     "unknown keys \\['epoch'\\]"),
    ('name = "x"\n[settings]\nnum_threads = 2\n' + PAIR, "may hold only what a run computes"),
    ('name = "x"\n[settings]\nlr = -1.0\n' + PAIR, "lr must be"),
    ('name = "x"\n' + PAIR + PAIR, "listed more than once"),
    ('name = "x"\n[[stage]]\ndatasets = ["cifar10"]\narchs = ["alexnet"]\nnorms = ["bn"]\nepochs = 1\n',
     "unknown arch 'alexnet'"),
    ('name = "x"\n', "no \\[\\[stage\\]\\]"),
    ('name = \n', "not valid TOML"),
])
def test_a_bad_campaign_file_is_one_clear_error(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(CampaignError, match=message):
        load_campaign(path)


def test_bad_campaign_file_on_the_command_line_exits_2_with_one_line(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text('name = "x"\n[settings]\nrunz_dir = "a"\n' + PAIR)
    assert main(["campaign", "status", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "runz_dir" in err and str(path) in err
    assert main(["campaign", "status", str(tmp_path / "missing.toml")]) == 2
    assert "not found" in capsys.readouterr().err


def test_one_lane_trains_in_order_skips_finished_runs_and_reports_status(tmp_path):
    campaign = load_campaign(_write(tmp_path, PAIR), **_placement(tmp_path))
    out = io.StringIO()
    assert work_lane(campaign, 1, stream=out) == 0
    records = _records(tmp_path)
    assert {r["status"] for r in records.values()} == {"completed"} and len(records) == 2
    assert out.getvalue().index("resnet18-bn") < out.getvalue().index("resnet18-nd")
    started = {k: r["started_at"] for k, r in records.items()}
    assert work_lane(campaign, 1, stream=io.StringIO()) == 0  # finished runs are skipped, not retrained
    assert {k: r["started_at"] for k, r in _records(tmp_path).items()} == started
    text = "\n".join(status_lines(campaign))
    assert "2 done, 0 running, 0 waiting" in text and "test " in text
    assert "  one pair  (2 of 2 done, ~0 h left)" in text  # each stage's header sums its runs


def test_a_pause_stops_after_the_next_checkpoint_and_the_run_resumes_exactly(tmp_path, monkeypatch):
    stages = PAIR.replace('["bn", "nd"]', '["bn"]')
    straight = load_campaign(_write(tmp_path / "a", stages), **_placement(tmp_path / "a"))
    work_lane(straight, 1, stream=io.StringIO())
    expected = _records(tmp_path / "a")[straight.runs[0].run_id]["final"]

    campaign = load_campaign(_write(tmp_path / "b", stages), **_placement(tmp_path / "b", checkpoint_interval_s=0))
    asked = iter([False, True])  # the lane's own check, then one per checkpoint: pause at the first (step 1 of 2)
    monkeypatch.setattr(campaign_module, "is_paused", lambda c: next(asked, False))
    out = io.StringIO()
    assert work_lane(campaign, 1, stream=out) == 0 and "paused after its checkpoint" in out.getvalue()
    record = _records(tmp_path / "b")[campaign.runs[0].run_id]
    assert record["status"] == "interrupted" and "RunPaused" in record["error"]
    monkeypatch.undo()
    assert work_lane(campaign, 1, stream=io.StringIO()) == 0
    resumed = _records(tmp_path / "b")[campaign.runs[0].run_id]
    assert resumed["status"] == "completed" and resumed["resumed_at_steps"] == [1]
    for key in ("train_loss", "train_acc", "test_acc", "test_loss"):
        assert resumed["final"][key] == expected[key], key


def test_the_pause_command_writes_the_pause_file_and_run_clears_it(tmp_path, capsys):
    path = _write(tmp_path, PAIR)
    dirs = ["--runs-dir", str(tmp_path / "runs"), "--checkpoint-dir", str(tmp_path / "ck")]
    assert main(["campaign", "pause", str(path), *dirs]) == 0
    campaign = load_campaign(path, **_placement(tmp_path))
    assert pause_file(campaign).exists() and "PAUSED" in status_lines(campaign)[0]
    assert work_lane(campaign, 1, stream=io.StringIO()) == 0 and not _records(tmp_path)  # paused: nothing trained


def test_a_run_claimed_by_another_worker_is_left_to_it(tmp_path):
    campaign = load_campaign(_write(tmp_path, PAIR), **_placement(tmp_path))
    first, second = campaign.runs
    with claim(first.run_id, claims_folder(first.runs_dir), lane=2):
        assert next_run(campaign) == second
        assert work_lane(campaign, 1, stream=io.StringIO()) == 0
        assert run_status(first) == "missing" and run_status(second) == "completed"
        assert "lane 2" not in "\n".join(status_lines(campaign))  # a claim without a record: still waiting


class _Writes(io.StringIO):
    """A stream that keeps each ``write`` call apart."""

    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    def write(self, text):
        self.calls.append(text)
        return super().write(text)


def test_a_lane_writes_each_line_in_one_call_so_lanes_sharing_stdout_never_run_together(tmp_path):
    campaign = load_campaign(_write(tmp_path, PAIR), **_placement(tmp_path))
    out = _Writes()
    assert work_lane(campaign, 1, stream=out) == 0
    lane_lines = [call for call in out.calls if call.startswith("[lane 1]")]
    assert lane_lines and all(call.endswith("\n") and call.count("\n") == 1 for call in lane_lines)
    assert "\n" not in out.calls  # no newline written on its own


def test_two_lanes_share_the_campaign_without_training_a_run_twice(tmp_path):
    """`campaign run --lanes 2`: two processes, each run trained once, claims released at the end."""
    stages = PAIR.replace('["cifar10"]', '["cifar10", "cifar100"]')
    path = _write(tmp_path, stages)
    done = subprocess.run([sys.executable, "-m", "ndlib", "campaign", "run", str(path), "--lanes", "2",
                           "--device", "cpu", "--runs-dir", str(tmp_path / "runs"),
                           "--checkpoint-dir", str(tmp_path / "ck"), "--note", "test lanes"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    records = _records(tmp_path)
    assert len(records) == 4 and {r["status"] for r in records.values()} == {"completed"}
    assert all(r["resumed_at_steps"] == [] for r in records.values())  # none trained twice or over another
    trained = re.findall(r"\] train (t1-\S+)", done.stdout)  # wherever the two lanes' lines fall
    assert sorted(trained) == sorted(records), done.stdout  # each run trained once, by one lane
    finished = {line.split("]")[0] + "]" for line in done.stdout.splitlines() if "nothing left to train" in line}
    assert finished == {"[lane 1]", "[lane 2]"}  # both lane processes ran and ended with the queue empty
    assert all(r["config"]["note"] == "test lanes" and r["config"]["num_threads"] == 1 for r in records.values())
    assert not (tmp_path / "runs" / ".claims").exists()


def _git_repo(tmp_path):
    """An empty git repository under ``tmp_path`` and a ``git(*args) -> stdout`` runner for it."""
    repo = tmp_path / "repo"
    repo.mkdir()

    def git(*args):
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout

    git("init", "-q")
    git("config", "user.email", "t@example.invalid")
    git("config", "user.name", "t")
    return repo, git


def test_commit_to_commits_each_finished_record_alone(tmp_path):
    repo, git = _git_repo(tmp_path)
    (repo / "work.txt").write_text("uncommitted work\n")
    git("add", "work.txt")  # staged work of the developer must stay staged, not committed
    campaign = load_campaign(_write(tmp_path, PAIR.replace('["bn", "nd"]', '["bn"]')), **_placement(tmp_path))
    out = io.StringIO()
    assert work_lane(campaign, 1, commit_to=repo, stream=out) == 0
    run_id = campaign.runs[0].run_id
    assert git("log", "--format=%s").startswith(f"Run record: {run_id}: completed")
    assert git("show", "--name-only", "--format=").split() == [f"results/runs/{run_id}.json"]
    assert "A  work.txt" in git("status", "--porcelain")
    assert json.loads((repo / "results" / "runs" / f"{run_id}.json").read_text())["status"] == "completed"


def _commit_in(repo, git, record: dict) -> None:
    """Commit ``record`` into ``repo`` as another machine's lane would have."""
    path = repo / "results" / "runs" / f"{record['run_id']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    git("add", str(path.relative_to(repo)))
    git("commit", "-q", "-m", f"Run record: {record['run_id']} (another machine)")


def _finished_elsewhere(config, status="completed", epochs=1) -> dict:
    return {"run_id": config.run_id, "status": status, "config": {}, "started_at": "2026-12-01T00:00:00+00:00",
            "history": [{"epoch": e, "test_acc": 77.0} for e in range(1, epochs + 1)], "final": {"test_acc": 77.0}}


def test_a_helper_machine_trains_only_runs_without_a_record(tmp_path):
    """A second machine (a lent GPU) helping a campaign sees the first machine's runs under way as
    stale records (committed snapshots, no live process here); with --skip-started it leaves them."""
    from ndlib.records import write_json_atomic

    path = _write(tmp_path, PAIR)
    campaign = load_campaign(path, **_placement(tmp_path))
    bn, nd = campaign.runs
    (tmp_path / "runs").mkdir()
    write_json_atomic(tmp_path / "runs" / f"{bn.run_id}.json", _finished_elsewhere(bn, status="running"))
    assert run_status(bn) == "stale" and next_run(campaign).run_id == bn.run_id  # a lost machine's run: resumed
    assert next_run(campaign, untouched_only=True).run_id == nd.run_id
    argv = ["campaign", "lane", str(path), "--skip-started", "--runs-dir", str(tmp_path / "runs"),
            "--checkpoint-dir", str(tmp_path / "ck"), "--device", "cpu"]
    assert main(argv) == 0
    assert {k: r["status"] for k, r in _records(tmp_path).items()} == {bn.run_id: "running", nd.run_id: "completed"}
    args = campaign_module._lane_argv(argparse.Namespace(
        file=path, threads=1, runs_dir=None, checkpoint_dir=None, data_dir=None, device=None, note="",
        commit_to=None, skip_started=True), 2)
    assert args[-1] == "--skip-started"  # `campaign run --skip-started` hands it to each lane


def test_a_lane_takes_a_run_completed_on_another_machine_from_the_repository(tmp_path):
    """Two machines on one campaign meet in the repository the lanes commit to: a run completed and
    committed there by the other machine is not trained again, and this machine's unfinished
    record of it is kept in attempts/; its snapshot never writes a run under way over it."""
    from ndlib.campaign import snapshot
    from ndlib.records import write_json_atomic

    repo, git = _git_repo(tmp_path)
    campaign = load_campaign(_write(tmp_path, PAIR), **_placement(tmp_path))
    bn, nd = campaign.runs
    theirs = _finished_elsewhere(bn)
    _commit_in(repo, git, theirs)
    (tmp_path / "runs").mkdir()
    ours = dict(_finished_elsewhere(bn, status="interrupted"), started_at="2026-12-02T00:00:00+00:00")
    write_json_atomic(tmp_path / "runs" / f"{bn.run_id}.json", ours)
    assert snapshot(campaign, repo) == []  # a run under way here, completed there: not committed over it
    out = io.StringIO()
    assert work_lane(campaign, 1, commit_to=repo, stream=out) == 0
    assert f"{bn.run_id}: completed on another machine, committed in repo: taken from there" in out.getvalue()
    assert f"train {bn.run_id}" not in out.getvalue() and f"train {nd.run_id}" in out.getvalue()
    assert _records(tmp_path)[bn.run_id] == theirs
    (kept,) = (tmp_path / "runs" / "attempts").glob(f"{bn.run_id}.*.json")
    assert json.loads(kept.read_text()) == ours
    assert git("log", "-1", "--format=%s").startswith(f"Run record: {nd.run_id}: completed")


def test_a_record_completed_twice_keeps_the_first_committed_and_commits_the_second_in_attempts(tmp_path):
    """The other machine committed its completed record while this lane was training the same run."""
    from ndlib.campaign import _commit_finished

    repo, git = _git_repo(tmp_path)
    campaign = load_campaign(_write(tmp_path, PAIR.replace('["bn", "nd"]', '["bn"]')), **_placement(tmp_path))
    (bn,) = campaign.runs
    assert work_lane(campaign, 1, stream=io.StringIO()) == 0  # trained here, not yet committed
    ours = _records(tmp_path)[bn.run_id]
    theirs = _finished_elsewhere(bn)
    _commit_in(repo, git, theirs)
    line = _commit_finished(campaign, bn, ours, 1, repo)
    assert line.startswith(f"repo already had a completed record of {bn.run_id} (another machine's)")
    assert json.loads(git("show", f"HEAD:results/runs/{bn.run_id}.json")) == theirs
    (committed,) = git("show", "--name-only", "--format=").split()
    assert committed.startswith(f"results/runs/attempts/{bn.run_id}.")
    assert json.loads(git("show", f"HEAD:{committed}")) == ours
    assert _records(tmp_path)[bn.run_id] == theirs  # this machine's runs folder agrees with the repository


def test_commit_waits_out_a_git_lock_held_for_a_moment(tmp_path):
    """A developer's git command in the same checkout holds ``.git/index.lock`` for a moment; a
    lane committing a finished record then must wait and retry, not stop (it used to stop with
    exit 2, leaving the queue untrained until someone restarted it)."""
    import threading

    from ndlib.campaign import commit_record

    repo, git = _git_repo(tmp_path)
    record = tmp_path / "t1-cifar10-vgg16-bn-e1-s0.json"
    record.write_text('{"status": "completed"}\n')
    lock = repo / ".git" / "index.lock"
    lock.write_text("")
    threading.Timer(1.0, lock.unlink).start()
    commit_record(record, repo, "Run record: test")
    assert git("log", "--format=%s").strip() == "Run record: test"
    lock.write_text("")  # a lock that stays: a clear error naming the record's place, after the retries
    record.write_text('{"status": "completed", "changed": true}\n')
    with pytest.raises(OSError, match="index.lock.*commit it by hand"):
        commit_record(record, repo, "Run record: again", lock_wait_s=0.5)


def test_snapshot_commits_the_records_of_runs_under_way_in_one_commit(tmp_path):
    from ndlib.campaign import snapshot
    from ndlib.records import write_json_atomic

    repo, git = _git_repo(tmp_path)
    (repo / "work.txt").write_text("uncommitted work\n")
    git("add", "work.txt")  # a developer's staged work stays staged
    campaign = load_campaign(_write(tmp_path, PAIR.replace("epochs = [1]", "epochs = [3]")), **_placement(tmp_path))
    bn, nd = campaign.runs
    (tmp_path / "runs").mkdir()

    def record(config, status, epochs):
        history = [{"epoch": e, "test_acc": 41.5, "train_acc": 40.0} for e in range(1, epochs + 1)]
        write_json_atomic(tmp_path / "runs" / f"{config.run_id}.json",
                          {"run_id": config.run_id, "status": status, "config": {}, "history": history})

    record(bn, "running", 1)
    record(nd, "running", 0)
    assert snapshot(campaign, repo) == [f"{bn.run_id}: 1 of 3 epochs (test 41.50 % after epoch 1)"]
    assert git("show", "--name-only", "--format=").split() == [f"results/runs/{bn.run_id}.json"]  # no epoch: left
    assert git("log", "--format=%s").startswith("Run records in progress (campaign tiny, snapshot): ")
    assert "A  work.txt" in git("status", "--porcelain")
    record(nd, "interrupted", 2)
    record(bn, "completed", 3)
    assert [line.split(":")[0] for line in snapshot(campaign, repo)] == [nd.run_id]  # finished runs: the lanes'
    # from the command line: only what is new since the last commit, so a snapshot right after another is no error
    argv = ["campaign", "snapshot", str(campaign.path), "--commit-to", str(repo), "--runs-dir", str(tmp_path / "runs"),
            "--checkpoint-dir", str(tmp_path / "ck")]
    assert main(argv) == 0
    record(nd, "interrupted", 3)
    assert main(argv) == 0 and git("log", "-1", "--format=%s").count(f"{nd.run_id}: 3 of 3 epochs") == 1
    assert snapshot(load_campaign(_write(tmp_path / "other", PAIR), **_placement(tmp_path / "other")), repo) == []
    # a run that started over (its machine and checkpoint lost) kept its earlier record in attempts/: committed once
    (tmp_path / "runs" / "attempts").mkdir()
    write_json_atomic(tmp_path / "runs" / "attempts" / f"{nd.run_id}.20261207T120000Z.json",
                      {"run_id": nd.run_id, "status": "running", "config": {}, "history": [{"epoch": 1}]})
    write_json_atomic(tmp_path / "runs" / "attempts" / f"{nd.run_id}.rerun.json",  # a rerun under way: not kept
                      {"run_id": nd.run_id, "status": "running", "config": {}, "history": [{"epoch": 1}]})
    assert snapshot(campaign, repo, news_only=True) == [
        f"{nd.run_id}: an earlier attempt kept in attempts/ (running, 1 of 3 epochs)"]
    assert git("show", "--name-only", "--format=").split() == [
        f"results/runs/attempts/{nd.run_id}.20261207T120000Z.json"]
    assert snapshot(campaign, repo, news_only=True) == []


class _FakeLane:
    """A lane process for :func:`ndlib.campaign.watch_lanes`: each poll first runs the next step
    (a change to the records), and the lane has stopped (exit 0) once the steps are used up."""

    def __init__(self, steps):
        self.steps = list(steps)

    def poll(self):
        if self.steps:
            self.steps.pop(0)()
            return None
        return 0

    def wait(self):
        return 0


def test_run_commits_a_snapshot_periodically_only_after_a_new_epoch_and_when_the_lanes_stop(tmp_path, monkeypatch):
    """Records of runs under way used to reach the repository only by a hand-run `campaign
    snapshot`: a session cut off before it lost every epoch's numbers with the machine."""
    from ndlib.campaign import watch_lanes
    from ndlib.records import write_json_atomic

    repo, git = _git_repo(tmp_path)
    campaign = load_campaign(_write(tmp_path, PAIR.replace("epochs = [1]", "epochs = [3]")), **_placement(tmp_path))
    bn = campaign.runs[0]
    (tmp_path / "runs").mkdir()

    def record(status, epochs):
        history = [{"epoch": e, "test_acc": 41.5} for e in range(1, epochs + 1)]
        write_json_atomic(tmp_path / "runs" / f"{bn.run_id}.json",
                          {"run_id": bn.run_id, "status": status, "config": {}, "history": history})

    failing = {"on": False}
    real_commit = campaign_module.commit_records

    def commit(files, repo_, message, lock_wait_s=60.0):
        if failing["on"]:
            shutil.copyfile(files[0], repo / "results" / "runs" / files[0].name)  # copied, then git fails
            raise OSError("`git commit` in repo failed: simulated")
        return real_commit(files, repo_, message, lock_wait_s)

    monkeypatch.setattr(campaign_module, "commit_records", commit)

    def epoch_two_and_a_failing_commit():
        record("running", 2)
        failing["on"] = True

    steps = [lambda: record("running", 1),  # snapshot: epoch 1
             lambda: None,  # nothing new: no commit
             epoch_two_and_a_failing_commit,  # the commit fails: reported, the lane goes on
             lambda: failing.update(on=False),  # the next interval commits epoch 2 (the copy left is not a commit)
             lambda: record("interrupted", 2)]  # the lane stopped: its status
    out = io.StringIO()
    codes = watch_lanes([_FakeLane(steps)], campaign, commit_to=repo, snapshot_every_s=1e-9, poll_s=0.0, stream=out)
    assert codes == [0]
    subjects = git("log", "--format=%s").splitlines()[::-1]
    assert [re.search(r"snapshot\): \S+: (\d) of 3", line).group(1) for line in subjects] == ["1", "2", "2"]
    assert json.loads(git("show", f"HEAD:results/runs/{bn.run_id}.json"))["status"] == "interrupted"
    assert out.getvalue().count("snapshot committed") == 3
    assert "[campaign] snapshot not committed: `git commit` in repo failed: simulated" in out.getvalue()
    # without --commit-to, or with the interval 0, no snapshot
    assert watch_lanes([_FakeLane([lambda: record("running", 3)])], campaign, snapshot_every_s=1e-9, poll_s=0.0,
                       stream=io.StringIO()) == [0]
    assert watch_lanes([_FakeLane([lambda: None])], campaign, commit_to=repo, snapshot_every_s=0, poll_s=0.0,
                       stream=io.StringIO()) == [0]
    assert len(git("log", "--format=%s").splitlines()) == 3
    # an interval longer than the lanes ran: the snapshot when they stop
    assert watch_lanes([_FakeLane([lambda: record("interrupted", 3)])], campaign, commit_to=repo,
                       snapshot_every_s=3600.0, poll_s=0.0, stream=io.StringIO()) == [0]
    assert re.search(r"snapshot\): \S+: 3 of 3", git("log", "-1", "--format=%s"))


def test_snapshot_every_min_must_not_be_negative(tmp_path, capsys):
    path = _write(tmp_path, PAIR)
    assert main(["campaign", "run", str(path), "--snapshot-every-min", "-1"]) == 2
    assert "--snapshot-every-min must be 0 (off) or more, got -1.0" in capsys.readouterr().err


def test_snapshot_needs_a_checkout_to_commit_in(tmp_path):
    path = _write(tmp_path, PAIR)
    done = subprocess.run([sys.executable, "-m", "ndlib", "campaign", "snapshot", str(path)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert done.returncode == 2 and "snapshot needs --commit-to REPO" in done.stderr.strip().splitlines()[-1]
