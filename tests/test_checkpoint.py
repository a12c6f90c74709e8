"""Checkpoints: the versioned format, atomic saves, the position, and files written before the format was versioned.

``tests/fixtures/checkpoint_v0.pt`` was written by ``ndlib.train`` at commit ebd34a8 (before
checkpoints had a version): :func:`_experiments_helpers.tiny_config` with ``epochs=2`` and
``checkpoint_interval_s=0``, a :class:`CallAt` wrapper around :func:`tiny_model` stopped by a
KeyboardInterrupt at the 7th training step, so it stands mid-epoch: epoch 2 of 2, step 6, 32
images in.  It must keep loading and resuming.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from _experiments_helpers import CallAt, raising, tiny_config, tiny_model
from ndlib.checkpoint import (
    CHECKPOINT_VERSION,
    Checkpoint,
    CheckpointWriteError,
    checkpoint_file,
    checkpoint_position,
    load_checkpoint,
    read_checkpoint,
)
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


V0_KEYS = {"model", "optimizer", "scheduler", "cpu_rng", "cuda_rng", "python_rng_json", "numpy_rng_json", "epoch",
           "global_step", "within_epoch", "history", "identity_json", "started_at", "keep_freed_memory", "world_size",
           "segments_json"}


def test_the_v0_file_reads_through_the_checkpoint_module(tmp_path):
    config = _v0_config(tmp_path)
    raw = torch.load(V0, weights_only=True)
    assert set(raw) == V0_KEYS  # the layout before versions: no "version" key
    checkpoint = read_checkpoint(V0)
    assert checkpoint.version == 0 and checkpoint.matches(config)
    assert (checkpoint.epoch, checkpoint.global_step, checkpoint.within_epoch) == (1, 6, True)
    assert checkpoint.progress.seen == 32 and checkpoint.world_size == 1 and len(checkpoint.history) == 1
    assert [s["from_step"] for s in checkpoint.earlier_segments()] == [0]
    assert not checkpoint.is_final(config)
    position = checkpoint_position(config)
    assert position.describe() == "resumes from its checkpoint: epoch 2 of 2, 32 training images in, step 6"
    assert position.fraction_done == 0.75
    assert load_checkpoint(checkpoint_file(config), config, "cpu").global_step == 6
    with pytest.raises(ValueError, match="different configuration"):
        load_checkpoint(checkpoint_file(config), dataclasses.replace(config, lr=0.5), "cpu")


def test_a_saved_checkpoint_is_version_1_with_the_v0_keys_and_round_trips(tmp_path):
    checkpoint = read_checkpoint(V0)
    path = tmp_path / "x" / "last.pt"
    checkpoint.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temporary file left
    raw = torch.load(path, weights_only=True)
    assert set(raw) == V0_KEYS | {"version"} and raw["version"] == CHECKPOINT_VERSION == 1
    again = read_checkpoint(path)
    assert again.version == 1
    old, new = checkpoint.to_state(), again.to_state()
    assert old.keys() == new.keys()
    for key in old:
        if key not in ("version", "model", "optimizer", "scheduler", "cpu_rng", "within_epoch"):
            assert old[key] == new[key], key
    assert torch.equal(old["cpu_rng"], new["cpu_rng"])
    assert all(torch.equal(old["model"][k], new["model"][k]) for k in old["model"])
    assert json.loads(raw["identity_json"]) == checkpoint.identity
    # what a v0 reader (ndlib before #31) reads: the same keys with the same meaning
    assert raw["within_epoch"]["seen"] == 32 and raw["epoch"] == 1 and raw["global_step"] == 6


def test_a_run_writes_version_1(tmp_path):
    config = tiny_config(tmp_path, epochs=1)
    run(config, model=tiny_model(), progress=False)
    raw = torch.load(checkpoint_file(config), weights_only=True)
    assert set(raw) == V0_KEYS | {"version"} and raw["version"] == 1
    checkpoint = read_checkpoint(checkpoint_file(config))
    assert checkpoint.is_final(config) and checkpoint.epoch == 1 and checkpoint.global_step == 4


def test_older_and_newer_layouts(tmp_path):
    raw = torch.load(V0, weights_only=True)
    for key in ("keep_freed_memory", "world_size", "segments_json", "python_rng_json", "numpy_rng_json"):
        del raw[key]  # as the earliest checkpoints were written
    old = Checkpoint.from_state(raw)
    assert (old.keep_freed_memory, old.world_size, old.segments, old.python_rng, old.numpy_rng) == (
        False, 1, None, None, None)
    assert old.earlier_segments() == [{"from_step": 0, "started_at": old.started_at, "unknown_settings": True}]
    with pytest.raises(ValueError, match="newer than this ndlib reads"):
        Checkpoint.from_state({**raw, "version": CHECKPOINT_VERSION + 1})
    with pytest.raises(ValueError, match="not a checkpoint"):
        Checkpoint.from_state([1, 2])
    with pytest.raises(ValueError, match="lacks cpu_rng, model, optimizer, scheduler"):
        Checkpoint.from_state({"epoch": 1})


class _Payload:
    """An arbitrary object: a checkpoint holding one must not be unpickled."""


def test_loading_never_unpickles_arbitrary_objects(tmp_path):
    config = _v0_config(tmp_path)
    path = checkpoint_file(config)
    torch.save({**torch.load(V0, weights_only=True), "extra": _Payload()}, path)
    with pytest.raises(ValueError, match="cannot be read"):
        load_checkpoint(path, config, "cpu")
    assert checkpoint_position(config).describe().startswith("checkpoint cannot be read (")


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    checkpoint = read_checkpoint(V0)
    checkpoint.save(path)
    before = path.read_bytes()

    def full_disk(*args, **kwargs):
        raise RuntimeError("PytorchStreamWriter failed writing file: No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointWriteError, match="No space left"):
        dataclasses.replace(checkpoint, global_step=7).save(path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["last.pt"]
