"""What the micro-benchmark scripts in ``tools/`` share: the line that names the code and the
machine a measurement ran on, and a positive-integer argument type."""
from __future__ import annotations

import argparse
import os

from ndlib.records import environment_info


def positive_int(text: str) -> int:
    """``argparse`` type: an integer of at least 1, or a one-line usage error naming the value."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def machine_line(threads: int, batch_size: int, what: str) -> str:
    """``"<cpu>, torch <v>, commit <sha>[ (dirty)], <n> threads, batch <b>, <what>, load average <l>"``."""
    env = environment_info("cpu")
    commit = (env["git_commit"] or "?")[:7] + (" (dirty)" if env["git_dirty"] else "")
    return (f"{env['device_name']}, torch {env['torch_version']}, commit {commit}, {threads} threads, "
            f"batch {batch_size}, {what}, load average {os.getloadavg()[0]:.2f}")
