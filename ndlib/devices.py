"""Small device helpers shared by training, benchmarks and the GPU check."""
from __future__ import annotations

import torch

__all__ = ["synchronize"]


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA kernels run asynchronously), so a wall-clock
    reading after it includes that work; a no-op on the CPU, where every op has finished."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
