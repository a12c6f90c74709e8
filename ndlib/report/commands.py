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


def budget_cost(runs: pd.DataFrame, bench: pd.DataFrame | None, archs: Sequence[str], epochs: int = 100,
                num_threads: int = 1, seeds: Sequence[int] = DEFAULT_SEEDS, n_datasets: int = 2) -> pd.DataFrame:
    """What a Table 1 column we cannot run here would cost on our CPU: per (arch, norm) and
    precision, :func:`ndlib.grid.estimate_cost` of one ``epochs``-epoch CIFAR run with
    ``num_threads`` threads (the campaign lanes' setting), from our completed runs of the model in
    that precision, else from its newest bench step time.  Both CIFAR datasets cost the same (the
    same images; only the classifier differs), so the column's cost is ``n_datasets * len(seeds)``
    runs of each row.

    Columns: ``arch, norm`` and, per precision (``fp32``, ``bf16``), ``<p>_hours`` (one run; NaN
    without an estimate) and ``<p>_basis`` (:meth:`ndlib.grid.CostEstimate.describe`'s basis)."""
    from ndlib.grid import estimate_cost

    rows = []
    for arch in archs:
        for norm in ("bn", "nd"):
            row = {"arch": arch, "norm": norm}
            for precision, amp in (("fp32", False), ("bf16", True)):
                config = TrainConfig(arch=arch, norm=norm, dataset="cifar10", epochs=epochs, amp=amp,
                                     device="cpu", num_threads=num_threads)
                estimate = estimate_cost(config, runs, bench)
                row[f"{precision}_hours"] = float("nan") if estimate is None else estimate.seconds / 3600
                row[f"{precision}_basis"] = "" if estimate is None else estimate.describe().split(": ", 1)[-1][:-1]
            rows.append(row)
    frame = pd.DataFrame(rows)
    frame.attrs.update(runs_per_row=n_datasets * len(seeds), epochs=epochs, num_threads=num_threads)
    return frame


def budget_cost_sentence(cost: pd.DataFrame, lanes: int = 2) -> str:
    """One paragraph on a :func:`budget_cost` frame: the column's lane-hours in each precision,
    the days on ``lanes`` lanes, and which rows have no estimate."""
    runs_per_row, epochs = cost.attrs["runs_per_row"], cost.attrs["epochs"]
    threads = cost.attrs["num_threads"]
    parts = []
    for precision, title in (("fp32", "float32"), ("bf16", "bf16 autocast")):
        hours = cost[f"{precision}_hours"]
        known = hours.dropna()
        if known.empty:
            parts.append(f"In {title} we have no estimate yet.")
            continue
        total = float(known.sum()) * runs_per_row
        missing = [f"{a} {n.upper()}" for a, n in cost.loc[hours.isna(), ["arch", "norm"]].itertuples(index=False)]
        parts.append(f"In {title}, the {len(known)} of {len(cost)} model-norm pairs with an estimate "
                     f"({runs_per_row} runs each) would take about {total:,.0f} lane-hours, "
                     f"{total / lanes / 24:,.1f} days on {lanes} lanes"
                     + (f"; no estimate for {', '.join(missing)}" if missing else "") + ".")
    return (f"Estimated for {epochs}-epoch runs with {threads} thread{'s' if threads != 1 else ''} "
            f"(`ndlib.grid.estimate_cost`; the basis of each figure is in the table). " + " ".join(parts))
