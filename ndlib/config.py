"""The configuration of a training run: :class:`TrainConfig`, its run id and its command line.

A :class:`TrainConfig` holds everything that defines a run, with the paper's settings as
defaults (spec sections 4 and 5).  It names its run (:attr:`TrainConfig.run_id`), rebuilds
itself from a run id (:meth:`TrainConfig.from_run_id`, :func:`parse_run_id`) and writes the
``python -m ndlib train`` command that trains it (:meth:`TrainConfig.command_line`, from the
option table of :mod:`ndlib.cliargs`).  ``ndlib.train`` re-exports it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import shlex
from dataclasses import dataclass, field
from typing import NamedTuple

from ndlib.data import DATASETS
from ndlib.layers import COVARIANCE_GRADS, REFRESH_STATS
from ndlib.models import NORMS, available

__all__ = [
    "TrainConfig",
    "BF16_OPTIONS",
    "EXECUTION_FIELDS",
    "execution_options",
    "execution_of_options",
    "DEFAULTS_BY_TABLE",
    "DECONV_FIELDS",
    "NON_IDENTITY_FIELDS",
    "CELL_FIELDS",
    "MAX_SEED",
    "MIN_SYNTHETIC_IMAGE_SIZE",
    "RunId",
    "parse_run_id",
    "run_id_options",
    "known_archs",
]

# Paper settings that differ between the tables (spec sections 4 and 5).
DEFAULTS_BY_TABLE: dict[int, dict] = {
    1: {"batch_size": 128, "weight_decay": 1e-3},
    2: {"batch_size": 256, "weight_decay": 1e-4},
}

#: The largest seed NumPy's legacy seeding (``np.random.seed``) accepts.
MAX_SEED = 2**32 - 1

#: Below this side no model of ours trains (VGG-16 needs 32: its probe says so at the start).
MIN_SYNTHETIC_IMAGE_SIZE = 8

# Config fields that do not change what is computed (where, how fast, where files go): left out
# of the run id, so a cell run on a laptop and on a GPU share it.
NON_IDENTITY_FIELDS = frozenset({
    "data_dir", "download", "device", "num_threads", "num_workers", "deterministic", "checkpoint",
    "checkpoint_interval_s", "runs_dir", "checkpoint_dir", "note", "keep_freed_memory",
})

#: The fields a run id spells out (``t1-cifar10-vgg16-nd-e1-s0``); every other identity field is
#: in its ``-o<hash>`` suffix when it differs from the paper's default.
CELL_FIELDS = frozenset({"arch", "norm", "dataset", "epochs", "seed"})

#: The ND layers' options: config field -> keyword of ``ndlib.models.create`` (None: the model's default).
#: (Not ``ndlib.models.factory.DECONV_OPTIONS``, the FastDeconv keywords themselves.)
DECONV_FIELDS: dict[str, str] = {
    "deconv_block": "block",
    "deconv_block_fc": "block_fc",
    "deconv_eps": "eps",
    "deconv_n_iter": "n_iter",
    "deconv_sampling_stride": "sampling_stride",
    "deconv_refresh_every": "refresh_every",
    "deconv_refresh_stats": "refresh_stats",
    "deconv_refresh_warmup": "refresh_warmup",
    "deconv_covariance_grad": "covariance_grad",
}


def known_archs(table: int | None = None, *, extras: bool = True) -> list[str]:
    """Architecture names for ``table`` (both tables when None) from ``ndlib.models.available``;
    with ``extras`` (default) our extra variants too (e.g. ``efficientnetb0_allnd``)."""
    return list(available(table, extras=extras))


def _positive_int(name: str, value, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _non_negative_float(name: str, value, allow_none: bool = False, positive: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0 \
            or (positive and value == 0):
        kind = "positive" if positive else "non-negative"
        raise ValueError(f"{name} must be a {kind} finite number, got {value!r}")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (flat fields; paper defaults).

    ``batch_size`` and ``weight_decay`` left as None take the table's paper value (128 / 1e-3
    for CIFAR, 256 / 1e-4 for ImageNet).  ``deconv_*`` left as None take the model's default
    (the paper's ND settings).  ``synthetic=True`` replaces the dataset by labelled synthetic
    images of the same shape (``synthetic_*`` sizes) for tests and smoke runs.
    ``deterministic`` (None: on for CPU, off for CUDA) makes CPU kernels deterministic and
    turns cuDNN autotuning off on a GPU.  ``amp`` uses bfloat16 autocast.
    ``keep_freed_memory`` (CPU runs): glibc keeps freed memory in the process instead of
    mapping every step's large tensors in afresh (:mod:`ndlib.cpu_memory`; 6 % to 25 % of a
    CPU step was page faults); results are bit-identical, and the record says whether it applied.
    ``checkpoint_interval_s``: a checkpoint is also written within an epoch every that many
    seconds (0: after every step), so a killed run loses at most that much work.
    ``deconv_refresh_stats="running"``, ``deconv_refresh_warmup=0`` and
    ``deconv_covariance_grad="statistics"`` are stored as None (the layers' defaults), so the same
    computation always gets the same run id.  ``deconv_covariance_grad="input"`` (the covariance's
    backward in bfloat16, ``ndlib.layers``) needs ``amp``: without autocast it is the default.
    """

    arch: str = "vgg16"
    norm: str = "bn"
    dataset: str = "cifar10"
    epochs: int = 1
    seed: int = 0
    batch_size: int | None = None
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float | None = None
    deconv_block: int | None = None
    deconv_block_fc: int | None = None
    deconv_eps: float | None = None
    deconv_n_iter: int | None = None
    deconv_sampling_stride: int | None = None
    deconv_refresh_every: int | None = None
    deconv_refresh_stats: str | None = None
    deconv_refresh_warmup: int | None = None
    deconv_covariance_grad: str | None = None
    synthetic: bool = False
    synthetic_train_size: int = 512
    synthetic_test_size: int = 256
    synthetic_image_size: int | None = None
    synthetic_num_classes: int | None = None
    amp: bool = False
    channels_last: bool = False
    device: str = "auto"
    num_threads: int | None = None
    keep_freed_memory: bool = True
    deterministic: bool | None = None
    num_workers: int = 4
    data_dir: str | None = None
    download: bool = False
    checkpoint: bool = True
    checkpoint_interval_s: float = 300.0
    runs_dir: str | None = None
    checkpoint_dir: str | None = None
    note: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; valid: {sorted(DATASETS)}")
        table = DATASETS[self.dataset].table
        valid_archs = known_archs(table)
        if self.arch not in valid_archs:
            raise ValueError(f"unknown arch {self.arch!r} for dataset {self.dataset!r} (Table {table}); "
                             f"valid: {valid_archs}")
        if self.norm not in NORMS:
            raise ValueError(f"unknown norm {self.norm!r}; valid: {list(NORMS)}")
        if self.norm == "none" and self.arch != "vgg11_imagenet":
            raise ValueError(f"norm 'none' exists for vgg11_imagenet only (Table 2), not {self.arch!r}; "
                             "use 'bn' or 'nd'")
        for name in ("epochs", "synthetic_train_size", "synthetic_test_size"):
            _positive_int(name, getattr(self, name))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must be an integer from 0 to {MAX_SEED} (NumPy's seed range), got {self.seed!r}")
        for name in ("batch_size", "deconv_block", "deconv_block_fc", "deconv_n_iter", "deconv_sampling_stride",
                     "deconv_refresh_every", "synthetic_image_size", "synthetic_num_classes", "num_threads"):
            _positive_int(name, getattr(self, name), allow_none=True)
        if self.deconv_refresh_stats is not None and self.deconv_refresh_stats not in REFRESH_STATS:
            raise ValueError(f"deconv_refresh_stats must be one of {REFRESH_STATS}, got {self.deconv_refresh_stats!r}")
        warmup = self.deconv_refresh_warmup
        if warmup is not None and (isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0):
            raise ValueError(f"deconv_refresh_warmup must be a non-negative integer, got {warmup!r}")
        for name, layer_default in (("deconv_refresh_stats", "running"), ("deconv_refresh_warmup", 0)):
            if getattr(self, name) is None:
                continue
            if self.deconv_refresh_every in (None, 1):
                raise ValueError(f"{name} only applies to refreshing layers: set deconv_refresh_every > 1 too "
                                 f"(or leave {name} unset)")
            if getattr(self, name) == layer_default:  # the layers' default: one run id for one computation
                object.__setattr__(self, name, None)
        if self.deconv_covariance_grad is not None:
            if self.deconv_covariance_grad not in COVARIANCE_GRADS:
                raise ValueError(f"deconv_covariance_grad must be one of {COVARIANCE_GRADS}, got "
                                 f"{self.deconv_covariance_grad!r}")
            if self.deconv_covariance_grad == COVARIANCE_GRADS[0]:  # the layers' default
                object.__setattr__(self, "deconv_covariance_grad", None)
            elif self.amp is not True:
                raise ValueError("deconv_covariance_grad='input' only changes a bf16 autocast run (without "
                                 "autocast the input is float32, as the statistics): add amp (--amp) or leave it out")
        if isinstance(self.num_workers, bool) or not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise ValueError(f"num_workers must be a non-negative integer, got {self.num_workers!r}")
        _non_negative_float("lr", self.lr, positive=True)
        _non_negative_float("momentum", self.momentum)
        _non_negative_float("weight_decay", self.weight_decay, allow_none=True)
        _non_negative_float("deconv_eps", self.deconv_eps, allow_none=True, positive=True)
        _non_negative_float("checkpoint_interval_s", self.checkpoint_interval_s)
        if not isinstance(self.device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:<index>' (index 0, 1, ...), "
                             f"got {self.device!r}")
        if self.norm != "nd":
            given = [name for name in DECONV_FIELDS if getattr(self, name) is not None]
            if given:
                raise ValueError(f"{', '.join(given)} only apply to ND models, not norm {self.norm!r}: "
                                 "use --norm nd or leave them out")
        if self.synthetic and (self.download or self.data_dir is not None):
            raise ValueError("synthetic runs read no dataset: leave out download / data_dir with synthetic, or "
                             "drop synthetic to train on the real data")
        if self.synthetic_image_size is not None and self.synthetic_image_size < MIN_SYNTHETIC_IMAGE_SIZE:
            raise ValueError(f"synthetic_image_size must be at least {MIN_SYNTHETIC_IMAGE_SIZE}, got "
                             f"{self.synthetic_image_size}")
        for name in ("synthetic", "amp", "channels_last", "download", "checkpoint", "keep_freed_memory"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        # Resolve the table's paper defaults (frozen dataclass: set through object.__setattr__).
        for name, value in DEFAULTS_BY_TABLE[table].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)

    # ----------------------------------------------------------------------------------
    @property
    def table(self) -> int:
        return DATASETS[self.dataset].table

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {sorted(unknown)}; valid: {sorted(names)}")
        return cls(**values)

    def identity(self) -> dict:
        """The fields that define what is computed (everything but placement and file locations)."""
        values = {k: v for k, v in self.to_dict().items() if k not in NON_IDENTITY_FIELDS}
        if not self.synthetic:
            values = {k: v for k, v in values.items() if not k.startswith("synthetic_")}
        return values

    def non_default_options(self) -> dict:
        """Identity fields that differ from the paper's defaults (and are not in the run id's name)."""
        reference = TrainConfig(arch=self.arch, norm=self.norm, dataset=self.dataset, epochs=self.epochs,
                                seed=self.seed, synthetic=self.synthetic)
        named = CELL_FIELDS | {"synthetic"}
        mine, theirs = self.identity(), reference.identity()
        return {k: v for k, v in mine.items() if k not in named and theirs.get(k) != v}

    @property
    def run_id(self) -> str:
        """E.g. ``t1-cifar10-vgg16-nd-e1-s0``; ``-syn`` marks synthetic data; a hash of any
        non-default option is appended (``-o1a2b3c4d``) so different settings never collide."""
        dataset = f"{self.dataset}-syn" if self.synthetic else self.dataset
        base = f"t{self.table}-{dataset}-{self.arch}-{self.norm}-e{self.epochs}-s{self.seed}"
        extra = self.non_default_options()
        if extra:
            digest = hashlib.sha256(json.dumps(extra, sort_keys=True).encode()).hexdigest()[:8]
            base += f"-o{digest}"
        return base

    def deconv_options(self) -> dict:
        """The ND layers' options set in this config, as ``ndlib.models.create`` keywords."""
        return {keyword: getattr(self, name) for name, keyword in DECONV_FIELDS.items()
                if getattr(self, name) is not None}

    @classmethod
    def from_run_id(cls, run_id: str, **fields) -> "TrainConfig":
        """The configuration named ``run_id`` (:func:`parse_run_id`), with ``fields`` for the rest.

        The run id fixes the cell (dataset, synthetic data, architecture, norm, epochs, seed);
        ``fields`` set any other field.  The ``-o<hash>`` suffix of a run with non-default options
        cannot be inverted, so such a run id needs those options in ``fields``: a ValueError says
        so when the configuration built does not have exactly ``run_id``."""
        parsed = parse_run_id(run_id)
        cell = {"arch": parsed.arch, "norm": parsed.norm, "dataset": parsed.dataset, "epochs": parsed.epochs,
                "seed": parsed.seed, "synthetic": parsed.synthetic}
        clash = sorted(name for name in set(cell) & set(fields) if fields[name] != cell[name])
        if clash:
            raise ValueError(f"run id {run_id!r} sets {', '.join(clash)} itself: leave them out of the fields")
        config = cls(**{**cell, **fields})
        if config.run_id != run_id:
            hint = (f"its suffix -{parsed.options} hashes non-default options: pass them as fields"
                    if parsed.options else "it has the paper's settings: leave out the non-default fields")
            raise ValueError(f"the fields given make run {config.run_id!r}, not {run_id!r}; {hint}")
        return config

    def train_arguments(self) -> list[str]:
        """The ``python -m ndlib train`` options that reproduce this configuration: the run id's
        fields always, every other field only where it differs from the paper's default (the
        flags come from :func:`ndlib.cliargs.config_options`, as the parser's do)."""
        from ndlib.cliargs import config_options

        reference = TrainConfig(arch=self.arch, dataset=self.dataset)
        words: list[str] = []
        for option in config_options():
            value = getattr(self, option.name)
            if option.name in CELL_FIELDS or getattr(reference, option.name) != value:
                words += option.words(value)
        return words

    def command_line(self, python: str = "python") -> list[str]:
        """The argv that trains this configuration: ``[python, "-m", "ndlib", "train", *options]``
        (:meth:`train_arguments`); ``shlex.join`` makes it a shell command."""
        return [python, "-m", "ndlib", "train", *self.train_arguments()]

    def shell_command(self, python: str = "python") -> str:
        """:meth:`command_line` as one shell-quoted string."""
        return shlex.join(self.command_line(python))


class RunId(NamedTuple):
    """The parts of a run id (:attr:`TrainConfig.run_id`); ``options`` is its ``o<hash>`` suffix
    (``""`` for the paper's settings)."""

    table: int
    dataset: str
    synthetic: bool
    arch: str
    norm: str
    epochs: int
    seed: int
    options: str


_RUN_ID = re.compile(
    r"t(?P<table>\d+)-(?P<dataset>{datasets})(?P<syn>-syn)?-(?P<arch>[A-Za-z0-9_]+)-(?P<norm>{norms})"
    r"-e(?P<epochs>\d+)-s(?P<seed>\d+)(?:-(?P<options>o[0-9a-f]+))?".format(
        datasets="|".join(sorted(map(re.escape, DATASETS), key=len, reverse=True)),
        norms="|".join(map(re.escape, NORMS))))

# A run whose settings differ from the paper's defaults has ``-o<hash of the options>`` at its end.
_OPTIONS_SUFFIX = re.compile(r"-o[0-9a-f]+$")


def parse_run_id(run_id: str) -> RunId:
    """Split a run id such as ``t1-cifar10-syn-vgg16-nd-e20-s0-o1a2b3c4d`` into its parts;
    a ValueError names what does not fit (:meth:`TrainConfig.from_run_id` builds the config)."""
    match = _RUN_ID.fullmatch(run_id) if isinstance(run_id, str) else None
    if match is None:
        raise ValueError(f"{run_id!r} is not a run id: t<table>-<dataset>[-syn]-<arch>-<norm>-e<epochs>-s<seed>"
                         "[-o<hash>], e.g. 't1-cifar10-vgg16-nd-e20-s0'")
    parts = RunId(int(match["table"]), match["dataset"], match["syn"] is not None, match["arch"], match["norm"],
                  int(match["epochs"]), int(match["seed"]), match["options"] or "")
    if DATASETS[parts.dataset].table != parts.table:
        raise ValueError(f"run id {run_id!r}: {parts.dataset} belongs to Table {DATASETS[parts.dataset].table}, "
                         f"not {parts.table}")
    return parts


def run_id_options(run_id: object) -> str:
    """The ``-o<hash>`` suffix of a run id (its non-default options) without the dash, ``""`` for a
    run with the paper's settings or for anything that is not a string.
    E.g. ``"t1-cifar10-vgg16-nd-e1-s0-o1a2b3c4d"`` -> ``"o1a2b3c4d"``."""
    match = _OPTIONS_SUFFIX.search(run_id) if isinstance(run_id, str) else None
    return match.group(0)[1:] if match else ""


#: The options that change how the paper's computation is executed, not what it computes: the
#: precision (``amp``, bfloat16 autocast; it counts for a paper's cell once the fidelity test,
#: :mod:`ndlib.fidelity`, accepts it), the memory layout (``channels_last``: the same
#: arithmetic in another summation order, checked against float32 by ``ndlib.checks.compare``)
#: and, for ND runs under autocast, the precision of the covariance's backward product
#: (``deconv_covariance_grad``, its own fidelity test).  A run with the paper's settings and only
#: these changed counts for the paper's cell; both sides of a BN/ND pair share precision and
#: layout (the third has no BN side).
EXECUTION_FIELDS = ("amp", "channels_last", "deconv_covariance_grad")


def execution_options(amp: bool = False, channels_last: bool = False, covariance_grad: str | None = None) -> str:
    """The run-id suffix (without its dash; ``""`` for none) of the paper's settings with only
    the :data:`EXECUTION_FIELDS` given changed; ``covariance_grad`` names an ND run's (BN and ND
    runs share the suffix otherwise)."""
    norm = "nd" if covariance_grad is not None else "bn"
    return run_id_options(TrainConfig(arch="vgg16", norm=norm, amp=amp, channels_last=channels_last,
                                      deconv_covariance_grad=covariance_grad).run_id)


def execution_of_options(options: str) -> tuple[bool, bool] | None:
    """``(amp, channels_last)`` of a run-id suffix made by :func:`execution_options`, None for any
    other suffix (a run with another option measures something else)."""
    return _EXECUTIONS.get(options)


_EXECUTIONS = {execution_options(amp, layout, grad): (amp, layout)
               for amp in (False, True) for layout in (False, True)
               for grad in ((None, "input") if amp else (None,))}

#: The run-id suffix of the paper's settings in bfloat16 autocast alone (contiguous layout).
BF16_OPTIONS = execution_options(amp=True)
