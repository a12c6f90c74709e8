"""Checkpoints: the versioned format, atomic saves, the position, and files written before the format was versioned.

``tests/fixtures/checkpoint_v0.pt`` was written by ``ndlib.train`` at commit ebd34a8 (before
checkpoints had a version): :func:`_experiments_helpers.tiny_config` with ``epochs=2`` and
``checkpoint_interval_s=0``, a :class:`CallAt` wrapper around :func:`tiny_model` stopped by a
KeyboardInterrupt at the 7th training step, so it stands mid-epoch: epoch 2 of 2, step 6, 32
images in.  It must keep loading and resuming.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from _experiments_helpers import CallAt, raising, tiny_config, tiny_model

from ndlib.train import run

V0 = Path(__file__).parent / "fixtures" / "checkpoint_v0.pt"
V0_RUN_ID = "t1-cifar10-syn-vgg16-bn-e2-s0-od2e2df58"


def _v0_config(tmp_path):
    config = tiny_config(tmp_path, epochs=2, checkpoint_interval_s=0)
    assert config.run_id == V0_RUN_ID
    target = Path(config.checkpoint_dir) / config.run_id / "last.pt"
    target.parent.mkdir(parents=True)
    shutil.copy(V0, target)
    return config


def test_a_checkpoint_written_before_versions_resumes_mid_epoch(tmp_path):
    config = _v0_config(tmp_path / "resumed")
    never = raising(RuntimeError("never"))
    resumed = run(config, model=CallAt(tiny_model(seed=123), 0, never), progress=False)
    assert resumed["status"] == "completed"
    assert resumed["resumed_at_steps"] == [6] and resumed["resumed_at_epochs"] == [1]
    assert [h["epoch"] for h in resumed["history"]] == [1, 2] and resumed["history"][-1]["resumed_mid_epoch"]
    assert [s["from_step"] for s in resumed["segments"]] == [0, 6]
    straight = run(tiny_config(tmp_path / "straight", epochs=2), model=CallAt(tiny_model(), 0, never), progress=False)
    # the fixture was written on another machine: equal up to float rounding of its kernels
    for key in ("train_loss", "test_loss", "train_acc", "test_acc", "test_top5"):
        assert resumed["final"][key] == pytest.approx(straight["final"][key], rel=1e-4, abs=1e-4), key
    assert json.loads((tmp_path / "resumed" / "runs" / f"{V0_RUN_ID}.json").read_text())["status"] == "completed"
