"""Our runs for cells of our choosing, which need not be cells of the paper's Table 1: the
EfficientNet-B0 variants and the equal-cost comparison (ND at 1 epoch against BN at 2)."""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import pandas as pd

from ndlib.config import TrainConfig
from ndlib.report.constants import CELL_KEYS, DEFAULT_SEEDS
from ndlib.report.frames import seed_count
from ndlib.report.table1 import all_paper_cells, cell_status, our_cells, paper_names, reproduction_cells


def compare_cells(runs: pd.DataFrame, cells: Iterable[Mapping[str, Any]],
                  seeds: Sequence[int] = DEFAULT_SEEDS) -> pd.DataFrame:
    """Our runs for a chosen list of cells, which need not be cells of the paper's table (an
    extra architecture of ours, another epoch budget).

    Each item of ``cells`` gives ``label, dataset, arch, norm, epochs``.  Columns: those and
    ``paper_name`` (the paper's name of the architecture, else the arch); ours
    as in :func:`table1` (``ours_test_mean, ours_test_std, ours_n, ours_seeds,
    ours_train_mean``, ``ours_train_time_mean`` in seconds, ``ours_other_detail``,
    ``ours_status``; completed real-data runs with the paper's settings only); the published
    ``paper_test, repro_mean, repro_std, repro_n`` where the cell is one of the paper's (else
    NaN); ``commands``: one ``python -m ndlib train`` command per seed of ``seeds`` still
    missing (a list, empty when none is).
    """
    want = pd.DataFrame(list(cells), columns=["label", "dataset", "arch", "norm", "epochs"])
    want["epochs"] = want["epochs"].astype("int64")
    ours = our_cells(runs, table=1)
    ours = ours.assign(epochs=pd.to_numeric(ours["epochs"]).astype("int64"))
    out = want.merge(ours, on=CELL_KEYS, how="left")
    out = out.merge(all_paper_cells()[CELL_KEYS + ["paper_test"]], on=CELL_KEYS, how="left")
    out = out.merge(reproduction_cells(), on=CELL_KEYS, how="left")
    out["ours_n"] = out["ours_n"].map(seed_count)
    out["ours_other_detail"] = out["ours_other_detail"].fillna("")
    out["ours_status"] = [cell_status(n, detail, len(seeds))
                          for n, detail in zip(out["ours_n"], out["ours_other_detail"])]

    def commands(row: pd.Series) -> list[str]:
        have = set(row["ours_seeds"]) if isinstance(row["ours_seeds"], tuple) else set()
        return [TrainConfig(arch=row["arch"], norm=row["norm"], dataset=row["dataset"], epochs=int(row["epochs"]),
                            seed=int(seed)).shell_command()
                for seed in seeds if seed not in have]

    out["commands"] = [commands(row) for _, row in out.iterrows()]
    out["paper_name"] = [paper_names().get(arch, arch) for arch in out["arch"]]
    return out[["label", "dataset", "arch", "paper_name", "norm", "epochs", "ours_test_mean",
                "ours_test_std", "ours_n", "ours_seeds", "ours_train_mean", "ours_train_time_mean",
                "ours_other_detail", "ours_status", "paper_test", "repro_mean", "repro_std",
                "repro_n", "commands"]]


#: The three EfficientNet-B0 models of the one-epoch comparison: (label, arch, norm).  The BN
#: model of ``efficientnetb0_allnd`` is the same network as ``efficientnetb0``'s, so the BN
#: row serves both ND variants.
EFFICIENTNET_VARIANTS: tuple[tuple[str, str, str], ...] = (
    ("BN", "efficientnetb0", "bn"),
    ("ND, the paper's network (stem + classifier)", "efficientnetb0", "nd"),
    ("ND in every block (ours, extra)", "efficientnetb0_allnd", "nd"),
)


def efficientnet_variants(runs: pd.DataFrame, datasets: Sequence[str] = ("cifar10", "cifar100"),
                          epochs: int = 1, seeds: Sequence[int] = DEFAULT_SEEDS) -> pd.DataFrame:
    """EfficientNet-B0 at ``epochs``: BN, the paper's ND network (only the stem and the
    classifier deconvolved, BN in every block) and our every-block ND variant
    (``efficientnetb0_allnd``), per dataset: a :func:`compare_cells` frame whose ``label``
    names the variant (the extra variant has no paper or reproduction value)."""
    return compare_cells(runs, [{"label": label, "dataset": dataset, "arch": arch, "norm": norm,
                                 "epochs": epochs}
                                for dataset in datasets for label, arch, norm in EFFICIENTNET_VARIANTS],
                         seeds)


#: Labels of the three cells of the equal-cost comparison: (label, norm, epochs).
EQUAL_COST_CELLS: tuple[tuple[str, str, int], ...] = (
    ("ND, 1 epoch", "nd", 1), ("BN, 1 epoch", "bn", 1), ("BN, 2 epochs", "bn", 2))


def equal_cost(runs: pd.DataFrame, dataset: str = "cifar10",
               archs: Sequence[str] = ("vgg16", "resnet18"),
               seeds: Sequence[int] = DEFAULT_SEEDS) -> pd.DataFrame:
    """ND at 1 epoch beside BN at 1 epoch and BN at 2 epochs (cosine over the 2 epochs), per
    architecture: a :func:`compare_cells` frame.  One ND epoch costs about two BN epochs on
    our CPU (:func:`epoch_cost`), so the 2-epoch BN run is the comparison at about equal
    compute."""
    return compare_cells(runs, [{"label": label, "dataset": dataset, "arch": arch, "norm": norm,
                                 "epochs": epochs}
                                for arch in archs for label, norm, epochs in EQUAL_COST_CELLS],
                         seeds)
