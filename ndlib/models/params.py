"""Parameter counts of every registered model, beside the paper's "Net Size" column.

The paper's Table 1 prints one size per architecture (millions of parameters, 10-class
head) and these are the sizes of the ND models: deconvolution layers carry a bias and there
are no BatchNorm parameters.  :func:`parameter_table` builds every model in every variant
on PyTorch's ``meta`` device (shapes only, no memory, no initialization cost) and counts
its parameters; buffers (BN running statistics, the deconvolution layers' running mean and
whitening matrix) are not parameters and are not counted.
"""
from __future__ import annotations

import pandas as pd
import torch
from torch import nn

from ndlib import published
from ndlib.models.registry import available, create, get_spec

__all__ = ["count_parameters", "parameter_table", "NET_SIZE_TOLERANCE_M", "NET_SIZE_NOTES"]

#: How close (in millions) our ND count must be to the paper's printed Net Size.
NET_SIZE_TOLERANCE_M = 0.01

#: Why an ND count differs from the paper's Net Size by more than the tolerance (none does
#: now; an entry here is printed beside such a row).
NET_SIZE_NOTES: dict[str, str] = {}


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalars in ``model.parameters()`` (buffers excluded)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"count_parameters expects a torch.nn.Module, got {type(model).__name__}")
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _count(name: str, norm: str, num_classes: int) -> int:
    with torch.device("meta"):
        return count_parameters(create(name, num_classes=num_classes, norm=norm))


def parameter_table(num_classes: int = 10, table: int | None = None) -> pd.DataFrame:
    """One row per (arch, norm): our parameter count and, for ND CIFAR models, the paper's.

    Our extra variants (``efficientnetb0_allnd``) are listed too, without a paper size.
    Columns: ``arch``, ``paper_name``, ``table``, ``norm``, ``num_classes``, ``params``,
    ``params_m``, ``paper_net_size_m`` (the paper's Net Size for the ND row of a Table 1
    model, else NaN), ``diff_m`` (ours - paper), ``within_tolerance`` and ``note`` (the
    explanation where the difference exceeds :data:`NET_SIZE_TOLERANCE_M`).
    The paper's sizes are for 10 classes, so they are only compared when ``num_classes == 10``.
    """
    net_sizes = published.net_sizes()
    rows = []
    for name in available(table, extras=True):
        spec = get_spec(name)
        for norm in spec.norms:
            params = _count(name, norm, num_classes)
            paper = net_sizes.get(name) if (norm == "nd" and spec.table == 1 and num_classes == 10) else None
            diff = None if paper is None else params / 1e6 - paper
            within = None if diff is None else bool(abs(diff) <= NET_SIZE_TOLERANCE_M + 1e-12)
            rows.append(
                {
                    "arch": name,
                    "paper_name": spec.paper_name,
                    "table": spec.table,
                    "norm": norm,
                    "num_classes": num_classes,
                    "params": params,
                    "params_m": round(params / 1e6, 4),
                    "paper_net_size_m": paper,
                    "diff_m": None if diff is None else round(diff, 4),
                    "within_tolerance": within,
                    "note": NET_SIZE_NOTES.get(name, "") if within is False else "",  # explained exceptions
                }
            )
    return pd.DataFrame(rows)
