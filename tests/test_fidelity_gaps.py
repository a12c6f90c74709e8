"""Training and record fidelity gaps found by mutation testing: exact resume with dropout (the global
torch RNG) and atomic record writes that fail in the middle of the write."""
from __future__ import annotations

import json
import os

import pytest
import torch
from torch import nn

from _experiments_helpers import CallAt, raising, tiny_config, tiny_model
from ndlib import records
from ndlib.records import RecordWriteError, write_json_atomic
from ndlib.train import run


def tiny_dropout_model(seed: int = 0) -> nn.Module:
    """:func:`tiny_model` with ``nn.Dropout`` before the classifier: its masks come from the global
    torch RNG (the loader has its own generator), so a resume must restore that RNG's state."""
    body = list(tiny_model(seed=seed))
    return nn.Sequential(*body[:-1], nn.Dropout(0.5), body[-1])


def test_resume_with_dropout_restores_the_global_rng_and_reaches_the_same_result(tmp_path):
    """Guards against a resume that does not restore ``torch.set_rng_state``: epoch 2's dropout
    masks would differ from the uninterrupted run's, and so would the metrics and weights."""
    never = raising(RuntimeError("never"))
    straight_model = CallAt(tiny_dropout_model(), 0, never)
    small = dict(epochs=2, synthetic_train_size=32, synthetic_test_size=16)  # 2 steps per epoch
    straight = run(tiny_config(tmp_path / "straight", **small), model=straight_model, progress=False)

    config = tiny_config(tmp_path / "resumed", **small)
    with pytest.raises(KeyboardInterrupt):  # the first step of epoch 2
        run(config, model=CallAt(tiny_dropout_model(), 3, raising(KeyboardInterrupt())), progress=False)
    resumed_model = CallAt(tiny_dropout_model(seed=123), 0, never)
    resumed = run(config, model=resumed_model, progress=False)

    assert resumed["status"] == "completed" and resumed["resumed_at_epochs"] == [1]
    for key in ("train_loss", "train_acc", "test_acc", "test_top5", "test_loss"):
        assert resumed["final"][key] == straight["final"][key], key
    expected, got = straight_model.state_dict(), resumed_model.state_dict()
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name


class _FailsHalfway:
    """A text stream that writes the first half of the text, then raises ``error``."""

    def __init__(self, stream, error: BaseException) -> None:
        self.stream, self.error, self.written = stream, error, 0

    def write(self, text: str) -> int:
        self.stream.write(text[: len(text) // 2])
        self.stream.flush()
        self.written += len(text) // 2
        raise self.error

    def __getattr__(self, name):
        return getattr(self.stream, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stream.close()
        return False


@pytest.mark.parametrize("error, raised", [
    (OSError(28, "No space left on device"), RecordWriteError),
    (KeyboardInterrupt(), KeyboardInterrupt),
], ids=["disk-full", "interrupt"])
def test_a_write_that_fails_midway_keeps_the_previous_record_and_leaves_no_temporary_file(
        tmp_path, monkeypatch, error, raised):
    """Guards against writing the record in place (a half-written record) and against leaving the
    half-written temporary file behind, for an OSError and for an interruption alike."""
    path = write_json_atomic(tmp_path / "r.json", {"status": "completed", "history": [1, 2]})
    before = path.read_bytes()
    streams = []
    real_fdopen = os.fdopen

    def fdopen(*args, **kwargs):
        streams.append(_FailsHalfway(real_fdopen(*args, **kwargs), error))
        return streams[-1]

    monkeypatch.setattr(records.os, "fdopen", fdopen)
    with pytest.raises(raised):
        write_json_atomic(path, {"status": "running", "history": list(range(200))})
    assert streams and streams[0].written > 100  # the failure did come in the middle of the write
    assert path.read_bytes() == before
    assert json.loads(before)["status"] == "completed"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
