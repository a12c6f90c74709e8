"""What the micro-benchmark scripts in ``tools/`` share: the line that names the code and the
machine a measurement ran on, a positive-integer argument type, and the options of the scripts
that time interleaved rounds."""
from __future__ import annotations

import argparse
import os

import torch

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


def rounds_parser(doc: str, rounds: int) -> argparse.ArgumentParser:
    """A parser described by ``doc``'s first line with the options every interleaved-rounds script
    takes: ``--threads`` (default 2), ``--rounds`` (default ``rounds``), ``--batch-size`` (default 128)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.add_argument("--rounds", type=positive_int, default=rounds)
    parser.add_argument("--batch-size", type=positive_int, default=128)
    return parser


def start_timing(args: argparse.Namespace) -> None:
    """Torch threads from ``--threads`` and a fixed seed, so every run times the same tensors."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
