"""Small device helpers shared by training, benchmarks and the GPU check."""
from __future__ import annotations

import functools
from pathlib import Path

import torch

__all__ = ["synchronize", "cpu_bf16_isa", "cpu_has_native_bf16"]

#: CPU flags (``/proc/cpuinfo``) of native bfloat16 arithmetic, the preferred first: Intel AMX
#: tiles, then AVX512-BF16.
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA kernels run asynchronously), so a wall-clock
    reading after it includes that work; a no-op on the CPU, where every op has finished."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_bf16_isa(cpuinfo: str | Path = "/proc/cpuinfo") -> str | None:
    """The CPU's native bfloat16 instruction set, read from its flags: ``"amx_bf16"`` (Intel AMX
    tiles), ``"avx512_bf16"`` (bf16 dot products in AVX-512, e.g. AMD EPYC Zen 4) or ``"none"``;
    None where the flags cannot be read (not Linux).

    Why records carry it: one CPU name covers processors with and without native bf16 (the
    project has had AMD EPYC VMs of both kinds), and a bf16 step differs by more than tenfold
    between them, so a bf16 timing is only compared within one (name, ISA) pair."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return None
    flags = {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[-1].split()}
    for flag in NATIVE_BF16_FLAGS:
        if flag in flags:
            return flag
    return "none"


@functools.cache
def cpu_has_native_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bfloat16 natively (one of :data:`NATIVE_BF16_FLAGS`); False where
    the flags cannot be read (not Linux), so a bf16 run is never started on a guess."""
    return cpu_bf16_isa(cpuinfo) in NATIVE_BF16_FLAGS
