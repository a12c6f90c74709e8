"""Small device helpers shared by training, benchmarks and the GPU check."""
from __future__ import annotations

import functools
from pathlib import Path

import torch

__all__ = ["synchronize", "cpu_has_native_bf16"]

#: CPU flags (``/proc/cpuinfo``) of native bfloat16 arithmetic: Intel AMX tiles or AVX512-BF16.
NATIVE_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA kernels run asynchronously), so a wall-clock
    reading after it includes that work; a no-op on the CPU, where every op has finished."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@functools.cache
def cpu_has_native_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bfloat16 natively (one of :data:`NATIVE_BF16_FLAGS`); False where
    the flags cannot be read (not Linux), so a bf16 run is never started on a guess."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    flags = {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[-1].split()}
    return bool(flags & NATIVE_BF16_FLAGS)
