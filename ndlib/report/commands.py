"""The shell commands the chapters print: the grid commands of the runs still missing and the
``torchrun`` commands of Table 2, with :func:`format_command` to break a long command into lines
for display.  A single run's command comes from its configuration
(:meth:`ndlib.config.TrainConfig.shell_command`), built from the same option table as the parser."""
from __future__ import annotations

import shlex
from typing import Sequence

import pandas as pd

from ndlib.config import TrainConfig
from ndlib.report.constants import CIFAR_EPOCHS, DEFAULT_SEEDS
from ndlib.report.table2 import table2_published


def grid_command(dataset: str, archs: Sequence[str] | None = None,
                 epochs: Sequence[int] = CIFAR_EPOCHS,
                 seeds: Sequence[int] = DEFAULT_SEEDS, table: int = 1) -> str:
    """The command that runs the given Table 1 cells with the grid CLI (``python -m ndlib``), its
    options spelled by the grid's own parser (:func:`ndlib.cli.subcommand_argv`)."""
    from ndlib.cli import subcommand_argv

    argv = subcommand_argv("grid", table=table, datasets=[dataset], archs=list(archs) if archs else None,
                           epochs=[int(e) for e in epochs], seeds=[int(s) for s in seeds])
    return shlex.join(["python", "-m", "ndlib", *argv])


def format_command(command: str, width: int = 72) -> str:
    """A long shell command broken into lines of about ``width`` characters, joined with
    `` \\`` continuations (for display; the shell reads it as one command).  Lines break
    before an ``--option`` so that options stay with their values; an option whose values do
    not fit on one line is broken between its values."""
    groups: list[list[str]] = []
    for word in shlex.split(command):
        if word.startswith("--") or not groups:
            groups.append([])
        groups[-1].append(shlex.quote(word))
    lines, current = [], ""
    for group in groups:
        text = " ".join(group)
        if current.strip() and len(current) + 1 + len(text) <= width:
            current = f"{current} {text}"
            continue
        if current.strip():
            lines.append(current)
            current = "    "
        for piece in group:
            if current.strip() and len(current) + 1 + len(piece) > width:
                lines.append(current)
                current = "    " + piece
            else:
                current = f"{current} {piece}" if current.strip() else current + piece
    lines.append(current)
    return " \\\n".join(lines)


def table2_commands(nproc_per_node: int = 8, data_dir: str = "data/imagenet",
                    epochs: int = 90) -> pd.DataFrame:
    """One ``torchrun`` command per Table 2 cell (``python -m ndlib train`` under DDP; the
    global batch of 256 is split over the processes).  ``data_dir`` holds ``train/<class>/``
    and ``val/<class>/``."""
    if isinstance(nproc_per_node, bool) or not isinstance(nproc_per_node, int) or nproc_per_node < 1:
        raise ValueError(f"nproc_per_node must be a positive integer, got {nproc_per_node!r}")
    rows = []
    for cell in table2_published()[["arch", "method"]].itertuples():
        config = TrainConfig(arch=f"{cell.arch}_imagenet", norm=cell.method.lower(), dataset="imagenet",
                             epochs=epochs, data_dir=data_dir)
        parts = ["torchrun", f"--nproc_per_node={nproc_per_node}", "-m", "ndlib", "train", *config.train_arguments()]
        rows.append({"arch": cell.arch, "method": cell.method, "command": shlex.join(parts)})
    return pd.DataFrame(rows)


def missing_commands(table: pd.DataFrame, seeds: Sequence[int] = DEFAULT_SEEDS) -> pd.DataFrame:
    """The runs still missing from a :func:`table1` frame, as one grid command per
    (dataset, epochs): the architectures with any cell short of ``seeds``."""
    todo = table[table["ours_n"] < len(seeds)]
    rows = []
    for (dataset, epochs), part in todo.groupby(["dataset", "epochs"], sort=True):
        archs = list(dict.fromkeys(part["arch"]))
        rows.append({"dataset": dataset, "epochs": int(epochs), "cells_missing": len(part),
                     "archs": ", ".join(archs),
                     "command": grid_command(dataset, archs, [int(epochs)], seeds)})
    return pd.DataFrame(rows, columns=["dataset", "epochs", "cells_missing", "archs", "command"])


def commands_markdown(commands: Sequence[str]) -> str:
    """Markdown for the train commands of missing seeds: the first in full, the others as the
    seed that changes (they differ only in ``--seed``)."""
    if not commands:
        return ""
    rest = [command.rsplit(" ", 1)[-1] for command in commands[1:]]
    return f"`{commands[0]}`" + (" and the same with `--seed` " + ", ".join(rest) if rest else "")
