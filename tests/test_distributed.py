"""DistributedDataParallel: two CPU processes with gloo on synthetic data, as under torchrun."""
from __future__ import annotations

import json
import os
import socket

import torch
import torch.multiprocessing as mp

from _experiments_helpers import tiny_config, tiny_model
from ndlib.distributed import DistContext, context_from_env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, tmp: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank))
    from pathlib import Path

    from ndlib.train import run

    model = tiny_model(nd=True)
    record = run(tiny_config(Path(tmp), epochs=2), model=model, progress=False)
    torch.save({"params": {k: v for k, v in model.named_parameters()}, "status": record["status"]},
               os.path.join(tmp, f"rank{rank}.pt"))


def test_two_gloo_processes_train_one_model(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    states = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert states[0]["status"] == states[1]["status"] == "completed"
    for name, value in states[0]["params"].items():
        torch.testing.assert_close(value, states[1]["params"][name], rtol=0, atol=0)  # DDP keeps replicas equal
    records = list((tmp_path / "runs").glob("*.json"))
    assert len(records) == 1  # only rank 0 writes
    record = json.loads(records[0].read_text())
    assert record["environment"]["world_size"] == 2
    # Global metrics: both ranks' shards are summed (64 train / 32 test images).
    assert record["history"][-1]["train_images"] == 64 and record["history"][-1]["test_images"] == 32
    assert record["steps_per_epoch"] == 4  # 32 images per rank, 8 per rank and step (global batch 16)


def test_context_from_env(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert context_from_env() == DistContext(0, 1, 0) and not context_from_env().enabled
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert context_from_env() == DistContext(1, 2, 1) and not context_from_env().is_main
