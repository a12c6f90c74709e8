"""The constants the report modules share: the paper's grid, the norms the tables compare, the
reproduction's machine and the datasets' names and class counts.

The run-record and benchmark columns are not here: they belong to their contracts,
:data:`ndlib.records.RUN_COLUMNS`, :data:`ndlib.records.HISTORY_COLUMNS` and
:data:`ndlib.bench.BENCH_COLUMNS`.
"""
from __future__ import annotations

from ndlib.data import DATASETS

#: The epoch budgets of the paper's Table 1.
CIFAR_EPOCHS: tuple[int, ...] = (1, 20, 100)
#: The seeds a cell of ours is run with.
DEFAULT_SEEDS: tuple[int, ...] = (0, 1, 2)
#: The norms the tables compare, BN against ND (the models know a third, ``"none"``:
#: :data:`ndlib.models.NORMS`).
COMPARED_NORMS: tuple[str, ...] = ("bn", "nd")
#: The GPU of the reproduction's Table 1 runs.
REPRODUCTION_DEVICE = "Tesla V100-SXM2-16GB"

#: The columns that name one cell of Table 1.
CELL_KEYS = ["dataset", "arch", "norm", "epochs"]

#: Readable names of the datasets, for generated sentences.
DATASET_TITLES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "imagenet": "ImageNet"}
#: Classes of each dataset (from :data:`ndlib.data.DATASETS`): chance accuracy is ``100 / K`` %,
#: and ``ln K`` is the test cross-entropy of a uniform guess.
NUM_CLASSES = {name: info.num_classes for name, info in DATASETS.items()}
