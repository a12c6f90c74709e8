"""Table 1 past one epoch: learning curves, time to accuracy and ND - BN at 20 epochs, from our records.

The paper's convergence claim is that ND stays ahead of BN after 20 and 100 epochs.  Our
20-epoch runs take days on the CPU, so the book shows them as they land: a record is rewritten
after every epoch, and a run still training (or paused) contributes the epochs it has finished,
marked *in progress*, never a final value.  Only runs with the paper's settings count (the
paper's optimiser and layers, no other option), on real data, in the precision the campaign file
gives the cell (both sides of a pair share it): float32 (no ``-o<hash>`` run id), or bfloat16
autocast and nothing else once the fidelity test (:mod:`ndlib.fidelity`) accepts it.

Beside our test accuracy the book sets the paper's test accuracy and the reproduction's reported
value.  What the reproduction's value measured is not stated in its source; the label we give it
is our inference (:func:`reproduction_label`, evidence in the Table 1 chapter).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

import numpy as np
import pandas as pd

from ndlib import published
from ndlib.fidelity import fidelity_verdict
from ndlib.report import paper_settings_only, split_synthetic

__all__ = ["TRAINING_INFERRED", "reproduction_label", "Execution", "campaign_curves", "curves_in_other_executions",
           "cell_executions", "execution_words", "execution_text",
           "cell_progress", "gains_so_far",
           "same_machine_pairs", "equal_time", "equal_time_sentences", "unpaired_sentences", "progress_sentences",
           "bf16_speedups", "precision_verdict"]

_DATASET_TITLES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}

#: The label of a reproduction value that behaves like training accuracy (our reading, not its source's).
TRAINING_INFERRED = "training accuracy (our inference)"

# Where the evidence in the Table 1 chapter holds: CIFAR-100 at 20 and 100 epochs, CIFAR-10 at 100.
# On CIFAR-10 at 20 epochs the reproduction is close to the paper's test accuracy, so its numbers
# cannot tell which split they come from.
_REPRODUCTION_SPLIT = {("cifar100", 20): TRAINING_INFERRED, ("cifar100", 100): TRAINING_INFERRED,
                       ("cifar10", 100): TRAINING_INFERRED, ("cifar10", 20): "split not stated"}

_CURVE_COLUMNS = ["run_id", "dataset", "arch", "paper_name", "norm", "seed", "epochs", "status", "in_progress",
                  "machine_id", "machine_type", "num_threads", "amp", "channels_last", "covariance_grad", "epoch",
                  "train_acc", "test_acc", "train_loss", "test_loss", "train_time_s", "elapsed_s"]


def reproduction_label(dataset: str, epochs: int) -> str:
    """What the reproduction's value at this budget is, as far as the evidence goes (our inference)."""
    return _REPRODUCTION_SPLIT.get((dataset, int(epochs)), "as reported (split not stated)")


def _paper_names() -> pd.Series:
    return published.paper_table1().drop_duplicates("arch").set_index("arch")["paper_name"]


class Execution(NamedTuple):
    """How a cell's runs execute the paper's computation (:data:`ndlib.config.EXECUTION_FIELDS`):
    bfloat16 autocast or float32, channels_last or contiguous memory layout (both sides of the
    pair), and the ND side's ``covariance_grad`` (None: the default, float32)."""
    amp: bool = False
    channels_last: bool = False
    covariance_grad: str | None = None


_EXECUTIONS = [Execution(amp, layout, grad) for amp in (False, True) for layout in (False, True)
               for grad in ((None, "input") if amp else (None,))]


def _same_for(norm: str, a: Execution, b: Execution) -> bool:
    """Whether a run of ``norm`` trained in ``a`` also trained in ``b`` (a BN run has no covariance)."""
    return a == b if norm == "nd" else a[:2] == b[:2]


def campaign_curves(runs: pd.DataFrame, histories: pd.DataFrame, epochs: int = 20,
                    execution: Execution | Mapping[tuple[str, str], Execution] = Execution()) -> pd.DataFrame:
    """Per epoch of every real-data Table 1 run of ``epochs`` epochs with the paper's settings, in
    one execution per cell, so both sides of a pair share it: ``execution`` for every cell, or a
    mapping ``(dataset, arch) -> Execution`` (the campaign file's, :func:`cell_executions`), which
    also leaves out the cells it does not name.

    One row per (run, finished epoch): accuracies and losses, the epoch's training seconds and
    ``elapsed_s``, the training seconds up to the end of that epoch (evaluation excluded), and
    the run's ``amp``, ``channels_last`` and (ND runs) ``covariance_grad``.  ``in_progress`` marks
    runs whose record is not finished (``running``, ``interrupted``): their last epoch is where
    training stood when the record was committed, not a result.  Rows come in the paper's
    order (CIFAR-10, then CIFAR-100; the architectures as its Table 1 lists them), which the
    figures' panels follow."""
    if runs.empty or histories.empty:
        return pd.DataFrame(columns=_CURVE_COLUMNS)
    every = pd.concat([paper_settings_only(runs, *e).assign(amp=e.amp, channels_last=e.channels_last,
                                                            covariance_grad=e.covariance_grad)
                       for e in _EXECUTIONS])  # (a BN run once per covariance_grad: it has none)
    ran = [Execution(a, c, g) for a, c, g in zip(every["amp"], every["channels_last"], every["covariance_grad"])]
    if isinstance(execution, Mapping):
        wanted = [execution.get((dataset, arch)) for dataset, arch in zip(every["dataset"], every["arch"])]
    else:
        wanted = [Execution(*execution)] * len(every)
    chosen = every[[w is not None and Execution(*w) == e for w, e in zip(wanted, ran)]]
    chosen = chosen.assign(covariance_grad=chosen["covariance_grad"].where(chosen["norm"] == "nd", None))
    real, _ = split_synthetic(chosen)
    real = real[(pd.to_numeric(real["table"], errors="coerce") == 1)
                & (pd.to_numeric(real["epochs"], errors="coerce") == epochs)
                & real["arch"].isin(_paper_names().index)]
    if real.empty:
        return pd.DataFrame(columns=_CURVE_COLUMNS)
    real = real.assign(in_progress=real["status"].isin(["running", "interrupted"]),
                       paper_name=real["arch"].map(_paper_names()))
    keep = ["run_id", "dataset", "arch", "paper_name", "norm", "seed", "epochs", "status", "in_progress",
            "machine_id", "machine_type", "num_threads", "amp", "channels_last", "covariance_grad"]
    # the paper's order: CIFAR-10 before CIFAR-100, the architectures as its Table 1 lists them
    dataset_rank = {name: rank for rank, name in enumerate(_DATASET_TITLES)}
    arch_rank = {arch: rank for rank, arch in enumerate(_paper_names().index)}
    data = (histories.merge(real[keep], on="run_id")
            .assign(_dataset_rank=lambda d: d["dataset"].map(dataset_rank).fillna(len(dataset_rank)),
                    _arch_rank=lambda d: d["arch"].map(arch_rank))
            .sort_values(["_dataset_rank", "_arch_rank", "norm", "seed", "run_id", "epoch"]))
    data["elapsed_s"] = data.groupby("run_id")["train_time_s"].cumsum()
    for name in ("epoch", "seed", "epochs"):
        data[name] = data[name].astype(int)
    return data[_CURVE_COLUMNS].reset_index(drop=True)


def curves_in_other_executions(runs: pd.DataFrame, histories: pd.DataFrame, epochs: int,
                               cells: Mapping[tuple[str, str], Execution]) -> pd.DataFrame:
    """:func:`campaign_curves` of the runs of ``cells`` trained in another execution than the one
    ``cells`` gives them (e.g. begun before the campaign file changed it): kept out of the results,
    named beside them."""
    parts = []
    for e in _EXECUTIONS:
        part = campaign_curves(runs, histories, epochs, {cell: e for cell, own in cells.items() if own != e})
        other = [not _same_for(norm, e, cells[(dataset, arch)])
                 for norm, dataset, arch in zip(part["norm"], part["dataset"], part["arch"])]
        parts.append(part[other])
    parts = [part for part in parts if not part.empty]
    return (pd.concat(parts, ignore_index=True).drop_duplicates(["run_id", "epoch"]) if parts
            else pd.DataFrame(columns=_CURVE_COLUMNS))


def cell_executions(configs: Iterable, epochs: int) -> dict[tuple[str, str], Execution]:
    """``(dataset, arch) -> Execution`` of the runs of ``epochs`` epochs among ``configs`` (a
    campaign's :class:`~ndlib.config.TrainConfig` list): how each cell trains, its ``covariance_grad``
    the ND side's.  A cell whose runs disagree is an error: both sides of a pair must share
    precision and layout."""
    cells: dict[tuple[str, str], Execution] = {}
    nd_grads: dict[tuple[str, str], str | None] = {}
    for config in configs:
        if config.epochs != epochs:
            continue
        key, own = (config.dataset, config.arch), Execution(config.amp, config.channels_last)
        if cells.setdefault(key, own)[:2] != own[:2]:
            raise ValueError(f"{config.dataset} {config.arch} at {epochs} epochs has runs in two executions "
                             f"({cells[key]} and {own}); give both sides of a pair one precision and layout "
                             "(the stage's amp and channels_last)")
        if config.norm == "nd":
            grad = config.deconv_covariance_grad
            if nd_grads.setdefault(key, grad) != grad:
                raise ValueError(f"{config.dataset} {config.arch} at {epochs} epochs has ND runs with two "
                                 f"covariance_grad settings ({nd_grads[key]} and {grad}); give the cell one")
            cells[key] = cells[key]._replace(covariance_grad=grad)
    return cells


def execution_words(execution: Execution | None) -> str:
    """One cell's execution for a table: ``"bf16"``, ``"float32"``, ``"bf16, channels-last"``,
    ``"bf16, channels-last, ND bf16 cov. backward"``; ``"—"`` for None."""
    if execution is None:
        return "—"
    return (("bf16" if execution.amp else "float32") + (", channels-last" if execution.channels_last else "")
            + (", ND bf16 cov. backward" if execution.covariance_grad == "input" else ""))


def _exceptions_text(cells: Mapping[tuple[str, str], bool]) -> tuple[bool, str]:
    """The majority value of ``cells`` and the cells that differ, named by architecture (and
    dataset where an architecture differs on one dataset only)."""
    flags = list(cells.values())
    main = max((True, False), key=flags.count)
    names = _paper_names()
    by_arch: dict[str, list[str]] = {}
    for (dataset, arch), flag in cells.items():
        if flag != main:
            by_arch.setdefault(arch, []).append(dataset)
    parts = []
    for arch, datasets in by_arch.items():
        everywhere = {d for (d, a) in cells if a == arch} == set(datasets)
        name = names.get(arch, arch)
        parts.append(name if everywhere else ", ".join(f"{_DATASET_TITLES.get(d, d)} {name}" for d in datasets))
    return main, ", ".join(parts)


def execution_text(cells: Mapping[tuple[str, str], Execution]) -> str:
    """How a campaign's cells train, in words: the majority precision with the exceptions named, e.g.
    ``"bfloat16 autocast (float32: EfficientNet, PNASNetA)"``, then the layout where any cell trains
    channels-last, e.g. ``"...; channels-last layout: ResNet18, MobileNetV2 (contiguous: the rest)"``,
    then the cells whose ND runs compute the covariance's backward in bf16, if any."""
    if not cells:
        return "float32"
    words = {True: "bfloat16 autocast", False: "float32"}
    main, exceptions = _exceptions_text({cell: e.amp for cell, e in cells.items()})
    text = words[main] + (f" ({words[not main]}: {exceptions})" if exceptions else "")
    main_layout, layout_exceptions = _exceptions_text({cell: e.channels_last for cell, e in cells.items()})
    if main_layout:
        text += "; channels-last layout" + (f" (contiguous: {layout_exceptions})" if layout_exceptions else "")
    elif layout_exceptions:
        text += f"; channels-last layout: {layout_exceptions} (contiguous: the rest)"
    low = {cell: e.covariance_grad == "input" for cell, e in cells.items()}
    if any(low.values()):
        main_grad, grad_exceptions = _exceptions_text(low)
        text += ("; ND's covariance backward in bf16" + (f" (float32: {grad_exceptions})" if grad_exceptions else "")
                 if main_grad else f"; ND's covariance backward in bf16: {grad_exceptions} (float32: the rest)")
    return text


def cell_progress(curves: pd.DataFrame, dataset: str, epochs: int = 20) -> pd.DataFrame:
    """One row per (arch, norm) of the paper's grid at ``epochs``: the paper's test accuracy, the
    reproduction's mean with its label, and ours -- the final test accuracy of a completed seed-0
    run, or where a run in progress stands (``ours_epochs_done`` of ``epochs``)."""
    paper = published.paper_table1()
    paper = paper[(paper["dataset"] == dataset) & (paper["epochs"] == epochs)].assign(
        norm=lambda d: d["method"].str.lower()).rename(columns={"test_acc_pct": "paper_test"})
    repro = published.reproduction_table1()
    repro = (repro[(repro["dataset"] == dataset) & (repro["epochs"] == epochs)]
             .assign(norm=lambda d: d["method"].str.lower())
             .groupby(["arch", "norm"])["acc_pct"].agg(repro_mean="mean", repro_std="std").reset_index())
    cells = paper[["arch", "paper_name", "norm", "paper_test"]].merge(repro, on=["arch", "norm"], how="left")
    cells["repro_label"] = reproduction_label(dataset, epochs)
    part = curves[(curves["dataset"] == dataset) & (curves["epochs"] == epochs)] if not curves.empty else curves
    last = (part.sort_values("epoch").groupby(["arch", "norm", "seed"]).tail(1) if not part.empty
            else pd.DataFrame(columns=_CURVE_COLUMNS))
    last = last.sort_values("seed").drop_duplicates(["arch", "norm"])  # seed 0 first: the campaign's seed
    mine = last[["arch", "norm", "seed", "status", "in_progress", "epoch", "test_acc", "train_acc", "elapsed_s",
                 "machine_id"]].rename(columns={"epoch": "ours_epochs_done", "test_acc": "ours_test",
                                                "train_acc": "ours_train", "elapsed_s": "ours_train_s",
                                                "status": "ours_status", "seed": "ours_seed",
                                                "machine_id": "ours_machine"})
    cells = cells.merge(mine, on=["arch", "norm"], how="left")
    cells["ours_epochs_done"] = cells["ours_epochs_done"].fillna(0).astype(int)
    cells["ours_final"] = (cells["ours_status"] == "completed") & (cells["ours_epochs_done"] == epochs)
    order = {arch: i for i, arch in enumerate(dict.fromkeys(paper["arch"]))}
    return (cells.assign(_rank=cells["arch"].map(order)).sort_values(["_rank", "norm"])
            .drop(columns="_rank").reset_index(drop=True))


def same_machine_pairs(curves: pd.DataFrame) -> pd.DataFrame:
    """The (dataset, arch) cells whose BN and ND runs (seed 0) trained on one machine instance with
    one thread count, so their training seconds compare: ``comparable`` and the shared ``machine_id``."""
    columns = ["dataset", "arch", "paper_name", "comparable", "machine_id", "reason"]
    if curves.empty:
        return pd.DataFrame(columns=columns)
    first = curves[curves["seed"] == 0].drop_duplicates("run_id")
    rows = []
    for (dataset, arch), group in first.groupby(["dataset", "arch"], sort=False):
        by_norm = {row.norm: row for row in group.itertuples()}
        if set(by_norm) != {"bn", "nd"}:
            rows.append((dataset, arch, group["paper_name"].iloc[0], False, None, "one side not run yet"))
            continue
        bn, nd = by_norm["bn"], by_norm["nd"]
        same = (isinstance(bn.machine_id, str) and bn.machine_id == nd.machine_id
                and bn.num_threads == nd.num_threads)
        rows.append((dataset, arch, bn.paper_name, same, bn.machine_id if same else None,
                     "" if same else "BN and ND trained on different machines or thread counts"))
    return pd.DataFrame(rows, columns=columns)


def equal_time(curves: pd.DataFrame, pairs: pd.DataFrame, epochs: int = 20) -> pd.DataFrame:
    """Is ND ahead at equal training time, not only at equal epochs?  Per cell whose BN and ND runs
    (seed 0) trained on one machine with one thread count (``pairs``: :func:`same_machine_pairs`).

    ``at_s``: the training seconds (evaluation excluded) of the side that has trained less in
    time, for a finished pair the faster run's whole budget.  ``bn_*`` / ``nd_*``: each side's test
    accuracy after the last epoch it had finished by then (``*_epoch`` 0 and NaN: none yet).
    ``lead``: ND - BN there.  Where BN finished all ``epochs``: ``bn_final`` and ``bn_total_s``, and
    ``nd_reach_s`` / ``nd_reach_epoch``, when ND's test accuracy first reached BN's final one
    (NaN / 0: not yet).  ``in_progress``: a side is still training, so this is no result."""
    columns = ["dataset", "arch", "paper_name", "machine_type", "num_threads", "in_progress", "at_s",
               "bn_epoch", "bn_test", "nd_epoch", "nd_test", "lead", "bn_final", "bn_total_s", "nd_reach_s",
               "nd_reach_epoch"]
    if curves.empty or pairs.empty:
        return pd.DataFrame(columns=columns)
    seed0 = curves[curves["seed"] == 0]
    rows = []
    for pair in pairs[pairs["comparable"].astype(bool)].itertuples():
        cell = seed0[(seed0["dataset"] == pair.dataset) & (seed0["arch"] == pair.arch)]
        bn = cell[cell["norm"] == "bn"].sort_values("epoch")
        nd = cell[cell["norm"] == "nd"].sort_values("epoch")
        if bn.empty or nd.empty:
            continue
        at_s = min(float(bn["elapsed_s"].iloc[-1]), float(nd["elapsed_s"].iloc[-1]))

        def by(side: pd.DataFrame) -> tuple[int, float]:
            done = side[side["elapsed_s"] <= at_s * (1 + 1e-9)]
            return (0, np.nan) if done.empty else (int(done["epoch"].iloc[-1]), float(done["test_acc"].iloc[-1]))

        (bn_epoch, bn_test), (nd_epoch, nd_test) = by(bn), by(nd)
        bn_done = not bool(bn["in_progress"].iloc[0]) and int(bn["epoch"].iloc[-1]) == epochs
        bn_final = float(bn["test_acc"].iloc[-1]) if bn_done else np.nan
        reached = nd[nd["test_acc"] >= bn_final] if bn_done else nd.iloc[0:0]
        rows.append((pair.dataset, pair.arch, pair.paper_name, bn["machine_type"].iloc[0], bn["num_threads"].iloc[0],
                     bool(cell["in_progress"].any()), at_s, bn_epoch, bn_test, nd_epoch, nd_test, nd_test - bn_test,
                     bn_final, float(bn["elapsed_s"].iloc[-1]) if bn_done else np.nan,
                     float(reached["elapsed_s"].iloc[0]) if not reached.empty else np.nan,
                     int(reached["epoch"].iloc[0]) if not reached.empty else 0))
    return pd.DataFrame(rows, columns=columns)


def _threads_words(num_threads) -> str:
    """``", 1 thread"`` / ``", 2 threads"``, or nothing where the record does not say."""
    return "" if pd.isna(num_threads) else f", {int(num_threads)} thread{'s' if num_threads != 1 else ''}"


def equal_time_sentences(table: pd.DataFrame, epochs: int = 20) -> list[str]:
    """One sentence per row of :func:`equal_time`: the accuracies at equal training time, and when
    ND reached BN's final accuracy."""
    lines = []
    for row in table.itertuples():
        cell = f"{row.paper_name} ({_DATASET_TITLES.get(row.dataset, row.dataset)})"
        where = f"one machine, {row.machine_type or 'unnamed'}{_threads_words(row.num_threads)}"

        def side(name: str, epoch: int, test: float) -> str:
            return f"{name} {test:.2f} % (epoch {epoch})" if epoch else f"{name} had not finished an epoch"

        text = (f"{cell}, {where}{', in progress' if row.in_progress else ''}: after {row.at_s / 3600:.2f} h of "
                f"training each, {side('BN', row.bn_epoch, row.bn_test)} and {side('ND', row.nd_epoch, row.nd_test)}")
        if row.bn_epoch and row.nd_epoch:
            text += (": ND level with BN at equal time" if row.lead == 0 else
                     f": ND {'ahead by' if row.lead > 0 else 'behind by'} {abs(row.lead):.2f} points at equal time")
        text += "."
        if not pd.isna(row.bn_final):
            if row.nd_reach_epoch:
                text += (f" ND reached BN's final {row.bn_final:.2f} % after {row.nd_reach_s / 3600:.2f} h "
                         f"(epoch {row.nd_reach_epoch}), {row.nd_reach_s / row.bn_total_s:.2f} times the "
                         f"{row.bn_total_s / 3600:.2f} h BN took for its {epochs} epochs.")
            else:
                text += f" ND has not reached BN's final {row.bn_final:.2f} % yet."
        if row.in_progress:
            text += " A side is still training: a snapshot, not a result."
        lines.append(text)
    return lines


def unpaired_sentences(curves: pd.DataFrame, pairs: pd.DataFrame) -> list[str]:
    """One sentence per cell whose BN and ND runs (seed 0) both have an epoch but trained on
    different machine instances or thread counts (:func:`same_machine_pairs`), naming where each
    side trained: their seconds do not compare, so the cell has no equal-time line or panel."""
    if curves.empty or pairs.empty:
        return []
    seed0 = curves[curves["seed"] == 0].drop_duplicates("run_id")
    lines = []
    for pair in pairs[~pairs["comparable"].astype(bool)].itertuples():
        cell = seed0[(seed0["dataset"] == pair.dataset) & (seed0["arch"] == pair.arch)]
        where = {}
        for row in cell.itertuples():
            where[row.norm] = f"{row.machine_type or 'an unnamed machine'}{_threads_words(row.num_threads)}"
        if {"bn", "nd"} - set(where):  # one side not run yet: nothing to compare
            continue
        same_type = where["bn"] == where["nd"]
        lines.append(
            f"{pair.paper_name} ({_DATASET_TITLES.get(pair.dataset, pair.dataset)}): no comparison at equal time. "
            + (f"BN and ND both trained on {where['bn']}, but on different machine instances"
               if same_type else f"BN trained on {where['bn']}, ND on {where['nd']}")
            + ", so their training seconds do not compare.")
    return lines


def gains_so_far(curves: pd.DataFrame, epochs: int = 20) -> pd.DataFrame:
    """ND - BN per (dataset, arch) of seed 0: at the full budget when both completed (``final``),
    else at the last epoch both sides have finished (``at_epoch``; a cosine schedule over
    ``epochs`` epochs is still at a high learning rate then, so this is no result), beside the
    paper's gain at ``epochs``."""
    columns = ["dataset", "arch", "paper_name", "at_epoch", "final", "bn_test", "nd_test", "ours_gain",
               "paper_bn", "paper_nd", "paper_gain"]
    if curves.empty:
        return pd.DataFrame(columns=columns)
    paper = published.paper_table1()
    paper = (paper[paper["epochs"] == epochs].assign(norm=lambda d: d["method"].str.lower())
             .pivot_table(index=["dataset", "arch"], columns="norm", values="test_acc_pct"))
    seed0 = curves[curves["seed"] == 0]
    rows = []
    for (dataset, arch), group in seed0.groupby(["dataset", "arch"], sort=False):
        sides = {norm: part.set_index("epoch") for norm, part in group.groupby("norm")}
        if set(sides) != {"bn", "nd"}:
            continue
        common = sorted(set(sides["bn"].index) & set(sides["nd"].index))
        if not common:
            continue
        at = common[-1]
        final = at == epochs and not bool(group["in_progress"].any())
        bn, nd = float(sides["bn"].loc[at, "test_acc"]), float(sides["nd"].loc[at, "test_acc"])
        paper_bn, paper_nd = (paper.loc[(dataset, arch), ["bn", "nd"]].astype(float).tolist()
                              if (dataset, arch) in paper.index else (np.nan, np.nan))
        rows.append((dataset, arch, group["paper_name"].iloc[0], at, final, bn, nd, nd - bn,
                     paper_bn, paper_nd, paper_nd - paper_bn))
    return pd.DataFrame(rows, columns=columns)


def progress_sentences(cells: pd.DataFrame, gains: pd.DataFrame, epochs: int = 20) -> list[str]:
    """The generated discussion of the 20-epoch section: what is run, and what it says so far."""
    n_cells = len(cells)
    final = int(cells["ours_final"].sum())
    running = int(cells["in_progress"].astype("boolean").fillna(False).astype(bool).sum())
    lines = [f"{final} of the paper's {n_cells} cells at {epochs} epochs {'has' if final == 1 else 'have'} a "
             "completed run of ours; "
             f"{running} more {'is' if running == 1 else 'are'} in progress."]
    done = gains[gains["final"]] if not gains.empty else gains
    if not done.empty:
        ahead = int((done["ours_gain"] > 0).sum())
        paper_ahead = int((done["paper_gain"] > 0).sum())
        lines.append(f"Where both sides finished {epochs} epochs, ND is ahead of BN in {ahead} of {len(done)} "
                     f"architecture cells (the paper: {paper_ahead} of the same {len(done)}).")
        for row in done.itertuples():
            cell = f"{row.paper_name} ({_DATASET_TITLES.get(row.dataset, row.dataset)})"
            lines.append(f"{cell}, after {epochs} epochs: ND − BN {row.ours_gain:+.2f} points (BN {row.bn_test:.2f} %, "
                         f"ND {row.nd_test:.2f} %) against the paper's {row.paper_gain:+.2f} (BN {row.paper_bn:.2f} %, "
                         f"ND {row.paper_nd:.2f} %). One run a side, as in the paper: neither gain has a noise "
                         "estimate, so a difference between them is no test of the paper's value.")
    else:
        lines.append(f"No architecture has both BN and ND at {epochs} epochs yet, so the paper's {epochs}-epoch "
                     "claim is not tested here yet.")
    partial = gains[~gains["final"]] if not gains.empty else gains
    for row in partial.itertuples():
        lead = "ahead of" if row.ours_gain > 0 else "behind"
        cell = f"{row.paper_name} ({_DATASET_TITLES.get(row.dataset, row.dataset)})"
        lines.append(f"{cell}, in progress: after epoch {row.at_epoch} of {epochs} ND "
                     f"({row.nd_test:.2f} %) is {abs(row.ours_gain):.2f} points {lead} BN ({row.bn_test:.2f} %); "
                     f"the learning rate is still high at that point of the cosine schedule, so this is a "
                     f"snapshot, not a result (the paper's gain after {epochs} epochs: {row.paper_gain:+.2f}).")
    return lines


def bf16_speedups(bench: pd.DataFrame) -> pd.DataFrame:
    """Float32 step time over bfloat16-autocast step time, per norm, for every bf16 benchmark that has a
    float32 twin (same machine type -- name and native bf16 ISA, :func:`ndlib.records.machine_type` --,
    architecture, batch size, thread count and ND implementation;
    the newest twin made before it).  ``bench``: :func:`ndlib.bench.load_bench` with ``amp=None``.
    A speed-up below 1 means bf16 is slower on that machine."""
    columns = ["machine_type", "arch", "batch_size", "num_threads", "bn_fp32_s", "bn_bf16_s", "nd_fp32_s", "nd_bf16_s",
               "bn_speedup", "nd_speedup", "ratio_fp32", "ratio_bf16", "bench_id"]
    if bench.empty or "amp" not in bench.columns:
        return pd.DataFrame(columns=columns)
    keys = ["machine_type", "arch", "batch_size", "num_threads", "implementation"]
    rows = []
    bench = bench[bench["implementation"] == "ndlib"].sort_values("created_at")
    for _, fast in bench[bench["amp"].astype(bool)].iterrows():
        twins = bench[~bench["amp"].astype(bool) & (bench["created_at"] <= fast["created_at"])]
        for key in keys:
            twins = twins[twins[key] == fast[key]]
        if twins.empty:
            continue
        slow = twins.iloc[-1]
        rows.append((fast["machine_type"], fast["arch"], int(fast["batch_size"]), int(fast["num_threads"]),
                     slow["bn_step_s"], fast["bn_step_s"], slow["nd_step_s"], fast["nd_step_s"],
                     slow["bn_step_s"] / fast["bn_step_s"], slow["nd_step_s"] / fast["nd_step_s"],
                     slow["ratio_nd_bn"], fast["ratio_nd_bn"], fast["bench_id"]))
    return pd.DataFrame(rows, columns=columns)


def precision_verdict(speedups: pd.DataFrame, curves: pd.DataFrame, fidelity: pd.DataFrame) -> str:
    """The precision the campaign may use and why: the fidelity test's verdict
    (``fidelity``: :func:`ndlib.fidelity.fidelity_table`), then what bf16 does to a step's time on
    the machines of the campaign's and the test's runs (``speedups``: :func:`bf16_speedups`;
    ``curves``: :func:`campaign_curves`)."""
    _, text = fidelity_verdict(fidelity)
    machines = set(curves["machine_type"].dropna()) if not curves.empty else set()
    machines |= set(fidelity["machine_type"].dropna()) if not fidelity.empty else set()
    measured = speedups[speedups["machine_type"].isin(machines)] if machines else speedups.iloc[0:0]
    where = ", ".join(sorted(machines))
    if measured.empty:
        return text + (" No bf16 benchmark is recorded on the machine" + ("s" if len(machines) != 1 else "")
                       + " of these runs yet.")
    slowest = float(min(measured["bn_speedup"].min(), measured["nd_speedup"].min()))
    fastest = float(max(measured["bn_speedup"].max(), measured["nd_speedup"].max()))
    if fastest < 1.0:
        return text + (f" On the machines of these runs ({where}) a bf16 train step is {1 / fastest:.1f} to "
                       f"{1 / slowest:.1f} times slower than a float32 one (table above), so bf16 would cost "
                       "hours there whatever the test says.")
    return text + (f" On the machines of these runs ({where}) bf16 changes a step's time by {slowest:.2f}x to "
                   f"{fastest:.2f}x (float32 over bf16, table above).")
