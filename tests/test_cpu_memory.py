"""ndlib.cpu_memory: with glibc keeping freed memory, a re-allocated block does not page-fault."""
from __future__ import annotations

import ctypes
import subprocess
import sys
from pathlib import Path

import pytest

from ndlib import cpu_memory

ROOT = Path(__file__).resolve().parents[1]

# Allocate 64 MB with the C library's malloc, write it, free it, allocate and write it again,
# and print the minor page faults of the second round. A fresh process, so that nothing the
# test session did before (threads, arenas, earlier settings) changes what malloc does.
_PROBE = """
import ctypes, resource, sys
from ndlib import cpu_memory
if sys.argv[1] == "keep" and not cpu_memory.keep_freed_memory():
    sys.exit("keep_freed_memory() returned False")
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
size = 64 * 2**20
block = libc.malloc(size); libc.memset(block, 1, size); libc.free(block)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
block = libc.malloc(size); libc.memset(block, 1, size)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _has_glibc() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        ctypes.CDLL(None).gnu_get_libc_version
    except AttributeError:  # not glibc (musl has no gnu_get_libc_version)
        return False
    return True


def _faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", _PROBE, mode], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip())


@pytest.mark.skipif(not _has_glibc(), reason="mallopt's parameters are glibc's (Linux)")
def test_a_freed_large_block_is_reused_without_page_faults():
    # 64 MB are 16384 pages of 4 KB; by default glibc maps them afresh and faults on each one
    assert _faults("default") > 16000
    assert _faults("keep") < 1000


@pytest.mark.skipif(not _has_glibc(), reason="mallopt's parameters are glibc's (Linux)")
def test_keeping_is_idempotent_and_reported():
    assert cpu_memory.keep_freed_memory() is True and cpu_memory.is_kept()
    assert cpu_memory.keep_freed_memory() is True


def test_it_reports_false_instead_of_raising_where_it_cannot_apply(monkeypatch):
    monkeypatch.setattr(cpu_memory, "_kept", False)
    monkeypatch.setattr(cpu_memory.sys, "platform", "darwin")
    assert cpu_memory.keep_freed_memory() is False and not cpu_memory.is_kept()
