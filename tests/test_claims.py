"""Run claims (ndlib.claims): exclusive, freed by a dead holder, released only by their holder,
kept beside the runs folder, and race-free between processes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from ndlib.claims import ClaimTaken, claim, claims_folder, holder
from ndlib.grid import plan, run_status
from ndlib.records import write_json_atomic


def test_a_claim_is_exclusive_and_released(tmp_path):
    with claim("t1-x", tmp_path, lane=1) as path:
        assert holder("t1-x", tmp_path)["lane"] == 1
        with pytest.raises(ClaimTaken, match="t1-x"):
            with claim("t1-x", tmp_path):
                pass
        assert path.exists()  # the refused worker did not remove the holder's claim
    assert not (tmp_path / "t1-x.claim").exists() and holder("t1-x", tmp_path) is None
    with claim("t1-x", tmp_path):  # free again
        pass


def test_a_leftover_claim_file_of_a_dead_process_is_free(tmp_path):
    """SIGKILL leaves the file but not the lock: the next worker takes it, whatever pid it names."""
    (tmp_path / "t1-x.claim").write_text(json.dumps({"host": "elsewhere", "pid": os.getpid()}))
    assert holder("t1-x", tmp_path) is None
    with claim("t1-x", tmp_path) as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()


def test_a_claim_held_by_another_process_is_refused_until_it_dies(tmp_path):
    code = textwrap.dedent(f"""
        import sys, time
        from ndlib.claims import claim
        with claim("t1-x", {str(tmp_path)!r}, lane=7):
            print("held", flush=True)
            time.sleep(60)
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        assert holder("t1-x", tmp_path)["pid"] == child.pid
        with pytest.raises(ClaimTaken, match="'lane': 7"):
            with claim("t1-x", tmp_path):
                pass
    finally:
        child.kill()
        child.wait()
    with claim("t1-x", tmp_path):  # SIGKILLed holder: its lock went with it
        pass


def test_two_processes_racing_for_claims_never_share_one(tmp_path):
    """Many short claim/release cycles in two processes at once: at no moment do both hold a run."""
    log = tmp_path / "log"
    code = textwrap.dedent(f"""
        import os, sys, time
        from ndlib.claims import ClaimTaken, claim
        for i in range(200):
            try:
                with claim("t1-x", {str(tmp_path / "c")!r}):
                    with open({str(log)!r}, "a") as f:
                        f.write(f"in {{os.getpid()}}\\n"); f.flush()
                        time.sleep(0.001)
                        f.write(f"out {{os.getpid()}}\\n")
            except ClaimTaken:
                pass
    """)
    workers = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(2)]
    assert all(w.wait(timeout=120) == 0 for w in workers)
    lines = log.read_text().split()
    events = list(zip(lines[::2], lines[1::2]))
    assert len(events) >= 2 and len(events) % 2 == 0
    for (kind_in, pid_in), (kind_out, pid_out) in zip(events[::2], events[1::2]):
        assert kind_in == "in" and kind_out == "out" and pid_in == pid_out  # strictly nested, one holder


def test_claims_live_beside_the_runs_folder(tmp_path):
    """Two checkouts sharing one runs folder share its claims (not one per working directory)."""
    config = plan(1, epochs=[1], archs=["vgg16"], datasets=["cifar10"], norms=["bn"],
                  runs_dir=str(tmp_path / "shared-runs"))[0]
    assert claims_folder(config.runs_dir) == tmp_path / "shared-runs" / ".claims"
    write_json_atomic(tmp_path / "shared-runs" / f"{config.run_id}.json",
                      {"run_id": config.run_id, "status": "running", "config": {}, "environment": {}})
    assert run_status(config) == "stale"
    with claim(config.run_id, claims_folder(config.runs_dir)):
        assert run_status(config) == "running"


def test_a_running_record_from_an_earlier_boot_is_stale(tmp_path):
    """A reused pid after a reboot must not keep a dead run 'running' forever: the machine id differs."""
    config = plan(1, epochs=[1], archs=["vgg16"], datasets=["cifar10"], norms=["bn"], runs_dir=str(tmp_path))[0]
    write_json_atomic(tmp_path / f"{config.run_id}.json",
                      {"run_id": config.run_id, "status": "running", "config": {},
                       "environment": {"pid": os.getpid(), "machine_id": "000000000000"}})
    assert run_status(config) == "stale"
