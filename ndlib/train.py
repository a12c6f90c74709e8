"""Training and evaluation for Tables 1 and 2, with checkpoints, resume and run records.

Defaults are the paper's (spec sections 4 and 5): SGD with lr 0.1, momentum 0.9, weight
decay 1e-3 and batch 128 on CIFAR (1e-4 and 256 on ImageNet), and a cosine schedule applied
per *step*, ``lr_t = lr * (1 + cos(pi * t / T)) / 2`` with ``T = epochs * steps_per_epoch``,
so the last step trains at ``lr_T = 0``.

:func:`run` takes a :class:`TrainConfig` and optionally a model object (tests pass a tiny
``nn.Module``; otherwise ``ndlib.models.create`` builds ``config.arch``).  Each epoch it
records the running training loss and top-1 accuracy, the test (or validation) top-1/top-5,
the train and eval wall times (CUDA synchronised), images per second and peak memory, writes
a checkpoint and rewrites the run record.  A non-finite training loss ends the run with
status ``diverged`` and the step at which it happened; Ctrl-C / SIGTERM writes
``interrupted`` and an exception ``failed`` (both re-raised).

Completed results are safe: a configuration whose record is ``completed`` is not trained
again unless ``rerun=True``, and a rerun replaces the record only once it has completed (see
:func:`run` and :mod:`ndlib.records`).

Resuming: a checkpoint is written atomically after every epoch and, within an epoch, every
``checkpoint_interval_s`` seconds.  It holds the model, optimizer and scheduler states, the
torch (CPU and CUDA), Python and NumPy random states, the data loader's position and its
augmentation generator, the epoch's running loss and accuracy sums, the epoch and the global
step; the data order of epoch ``e`` depends only on ``(seed, e)``.  So on CPU with
``deterministic=True`` a run killed at any moment (even with SIGKILL) and resumed with the
same command ends with the same weights and metrics as an uninterrupted one; it loses at most
the work since the last checkpoint.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import random
import re
import resource
import shutil
import signal
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ndlib import cpu_memory
from ndlib import distributed as dist_utils
from ndlib.data import DATASETS, TensorLoader, dataset_info, imagenet_loaders, load_cifar, synthetic_arrays
from ndlib.devices import synchronize
from ndlib.layers import REFRESH_STATS, finite_checks
from ndlib.paths import checkpoints_dir, data_dir, portable_path, runs_dir, scrub_paths
from ndlib.records import (
    SCHEMA_VERSION,
    RecordWriteError,
    attempts_dir,
    completed_record,
    environment_info,
    process_alive,
    read_record,
    record_path,
    training_segment,
    utc_now,
    write_json_atomic,
)

__all__ = [
    "TrainConfig",
    "NORMS",
    "TABLE_ARCHS",
    "known_archs",
    "RunInterrupted",
    "RunPaused",
    "BadRunInput",
    "CheckpointWriteError",
    "promote_pending_rerun",
    "DataUnavailable",
    "DeviceUnavailable",
    "run",
    "checkpoint_file",
    "CheckpointPosition",
    "checkpoint_position",
    "create_model",
    "DEFAULTS_BY_TABLE",
    "run_notebook",
    "notebook_parameters",
]

NORMS = ("bn", "nd", "none")

# The contract's architecture names (ndlib.models.available(table) is preferred when it exists).
TABLE_ARCHS: dict[int, tuple[str, ...]] = {
    1: ("vgg16", "resnet18", "preact18", "densenet121", "resnext29", "mobilenetv2", "dpn92", "pnasneta",
        "senet18", "efficientnetb0"),
    2: ("vgg11_imagenet", "resnet18_imagenet", "densenet121_imagenet"),
}

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
_NON_IDENTITY = frozenset({
    "data_dir", "download", "device", "num_threads", "num_workers", "deterministic", "checkpoint",
    "checkpoint_interval_s", "runs_dir", "checkpoint_dir", "note", "keep_freed_memory",
})

# Deconvolution options: config field -> keyword of ndlib.models.create (None = model default).
DECONV_OPTIONS = {
    "deconv_block": "block",
    "deconv_block_fc": "block_fc",
    "deconv_eps": "eps",
    "deconv_n_iter": "n_iter",
    "deconv_sampling_stride": "sampling_stride",
    "deconv_refresh_every": "refresh_every",
    "deconv_refresh_stats": "refresh_stats",
    "deconv_refresh_warmup": "refresh_warmup",
}


def known_archs(table: int | None = None, *, extras: bool = True) -> list[str]:
    """Architecture names for ``table`` (both tables when None), from ``ndlib.models`` if present;
    with ``extras`` (default) our extra variants too (e.g. ``efficientnetb0_allnd``)."""
    try:
        from ndlib.models import available
    except ImportError:
        available = None
    if available is not None:
        return list(available(table, extras=extras))
    tables = (table,) if table is not None else tuple(TABLE_ARCHS)
    return [name for t in tables for name in TABLE_ARCHS[t]]


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
    ``deconv_refresh_stats="running"`` and ``deconv_refresh_warmup=0`` are stored as None (the
    layers' defaults), so the same computation always gets the same run id.
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
            raise ValueError(f"norm 'none' exists for vgg11_imagenet only (Table 2), not {self.arch!r}; use 'bn' or 'nd'")
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
            given = [name for name in DECONV_OPTIONS if getattr(self, name) is not None]
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
        values = {k: v for k, v in self.to_dict().items() if k not in _NON_IDENTITY}
        if not self.synthetic:
            values = {k: v for k, v in values.items() if not k.startswith("synthetic_")}
        return values

    def non_default_options(self) -> dict:
        """Identity fields that differ from the paper's defaults (and are not in the run id's name)."""
        reference = TrainConfig(arch=self.arch, norm=self.norm, dataset=self.dataset, epochs=self.epochs,
                                seed=self.seed, synthetic=self.synthetic)
        named = {"arch", "norm", "dataset", "epochs", "seed", "synthetic"}
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
        return {keyword: getattr(self, name) for name, keyword in DECONV_OPTIONS.items() if getattr(self, name) is not None}


class RunInterrupted(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM, so a killed run records ``interrupted``."""


class RunPaused(RunInterrupted):
    """Raised right after a checkpoint when ``run(..., pause_requested=...)`` says so: the run
    records ``interrupted`` and resumes from that very checkpoint, losing no work."""


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):  # noqa: ARG001
        raise RunInterrupted(f"received signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _torch_settings(config: TrainConfig, device: torch.device) -> Iterator[bool]:
    """Threads, determinism and cuDNN flags for the run, restored afterwards."""
    previous_threads = torch.get_num_threads()
    previous_det = torch.are_deterministic_algorithms_enabled()
    previous_bench = torch.backends.cudnn.benchmark
    previous_cudnn_det = torch.backends.cudnn.deterministic
    deterministic = config.deterministic if config.deterministic is not None else device.type == "cpu"
    try:
        if config.num_threads is not None:
            torch.set_num_threads(config.num_threads)
        if device.type == "cpu":
            torch.use_deterministic_algorithms(deterministic)
        else:
            torch.backends.cudnn.deterministic = deterministic
            torch.backends.cudnn.benchmark = not deterministic
        yield deterministic
    finally:
        torch.set_num_threads(previous_threads)
        torch.use_deterministic_algorithms(previous_det)
        torch.backends.cudnn.benchmark = previous_bench
        torch.backends.cudnn.deterministic = previous_cudnn_det


def _resolve_device(config: TrainConfig, context: dist_utils.DistContext) -> torch.device:
    name = config.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceUnavailable(f"device {config.device!r} requested but CUDA is not available here; "
                                    "use --device cpu")
        if device.index is None:
            device = torch.device("cuda", context.local_rank if context.enabled else torch.cuda.current_device())
        torch.cuda.set_device(device)
    return device


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def num_classes_of(config: TrainConfig) -> int:
    if config.synthetic and config.synthetic_num_classes is not None:
        return config.synthetic_num_classes
    return DATASETS[config.dataset].num_classes


def _build_loaders(config: TrainConfig, device: torch.device, context: dist_utils.DistContext):
    info = dataset_info(config.dataset)
    if config.batch_size % context.world_size:
        raise ValueError(f"batch_size {config.batch_size} must be divisible by the number of processes "
                         f"({context.world_size})")
    per_rank_batch = config.batch_size // context.world_size
    common = dict(rank=context.rank, world_size=context.world_size, channels_last=config.channels_last)
    if config.dataset == "imagenet" and not config.synthetic:
        root = Path(config.data_dir) if config.data_dir else data_dir() / "imagenet"
        return imagenet_loaders(root, per_rank_batch, seed=config.seed, device=device, num_workers=config.num_workers,
                                **common)
    if config.synthetic:
        size = config.synthetic_image_size or info.image_size
        train, test, source = synthetic_arrays(config.synthetic_train_size, config.synthetic_test_size,
                                               num_classes_of(config), size, 3, seed=config.seed)
    else:
        root = Path(config.data_dir) if config.data_dir else data_dir()
        train, test, source = load_cifar(config.dataset, root, download=config.download)
    # Table 1 augmentation for CIFAR-shaped data; synthetic ImageNet-shaped data uses flips and
    # crops the same way (a smoke test of the plumbing, not of ImageNet's transforms).  Real data
    # is normalised by the statistics computed from its own training split.
    mean = source.channel_mean or info.mean
    std = source.channel_std or info.std
    train_loader = TensorLoader(train, per_rank_batch, mean, std, train=True, seed=config.seed,
                                padding=4, device=device, **common)
    test_loader = TensorLoader(test, per_rank_batch, mean, std, train=False, device=device, **common)
    return train_loader, test_loader, source


def create_model(config: TrainConfig) -> nn.Module:
    """``ndlib.models.create(arch, num_classes, norm, **deconv options)``."""
    from ndlib.models import create

    return create(config.arch, num_classes=num_classes_of(config), norm=config.norm, **config.deconv_options())


def _probe_image_size(model: nn.Module, config: TrainConfig, device: torch.device) -> None:
    """One eval-mode forward of two blank images at the synthetic size, before anything is recorded:
    a size the model cannot take (VGG-16's five poolings need 32) is bad input, not a failed run.
    Eval mode under ``no_grad`` changes no statistic and draws no random number."""
    size = config.synthetic_image_size
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(2, 3, size, size, device=device))
    except RuntimeError as error:
        raise BadRunInput(f"synthetic_image_size {size} is too small for {config.arch} "
                          f"({str(error).splitlines()[0]}); use the dataset's size (leave it unset) or a larger one") \
            from None
    finally:
        model.train(was_training)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _autocast(config: TrainConfig, device: torch.device):
    if not config.amp:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


class _Diverged(Exception):
    def __init__(self, step: int, epoch: int, value: float) -> None:
        super().__init__(f"non-finite training loss {value} at global step {step} (epoch {epoch})")
        self.step, self.epoch, self.value = step, epoch, value


def _cosine_factor(total_steps: int):
    def factor(step: int) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))

    return factor


@dataclass
class _EpochProgress:
    """The running sums of the epoch in progress: enough to continue it exactly after a resume."""

    loss_sum: float = 0.0
    correct: float = 0.0
    seen: int = 0
    elapsed_s: float = 0.0  # training wall time of this epoch before the resume


def _train_epoch(model, loader, optimizer, scheduler, config, device, context, epoch, global_step, progress,
                 start: _EpochProgress | None = None, checkpointer: "_Checkpointer | None" = None):
    """One pass over the training split (or the rest of it, from ``start``); returns
    (loss, top-1 %, images, new global step).  After an optimizer step at which
    ``checkpointer.due()``, the state is saved mid-epoch (with the epoch's running sums)."""
    model.train()
    start = start or _EpochProgress()
    loss_sum = torch.tensor(start.loss_sum, dtype=torch.float64, device=device)
    correct = torch.tensor(start.correct, dtype=torch.float64, device=device)
    seen = start.seen
    check_every = 1 if device.type == "cpu" else 25  # each check is a host sync on a GPU
    pending: list[torch.Tensor] = []
    first_pending_step = global_step
    bar = None
    if progress and context.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(loader), desc=f"epoch {epoch + 1}/{config.epochs}", mininterval=10, leave=False)

    def progress_so_far() -> _EpochProgress:
        return _EpochProgress(float(loss_sum.item()), float(correct.item()), seen, start.elapsed_s)

    for x, y in loader:
        with _autocast(config, device):
            logits = model(x)
            loss = F.cross_entropy(logits.float(), y)
        pending.append(loss.detach())
        if len(pending) >= check_every:
            _check_finite(pending, first_pending_step, epoch)
            pending, first_pending_step = [], global_step + 1
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        global_step += 1
        loss_sum += loss.detach().double() * len(y)
        correct += (logits.detach().argmax(1) == y).sum()
        seen += len(y)
        if bar is not None:
            bar.update(1)
        if checkpointer is not None and checkpointer.due():
            if pending:  # never checkpoint a state that a non-finite loss has already spoiled
                _check_finite(pending, first_pending_step, epoch)
                pending, first_pending_step = [], global_step
            checkpointer.save(epoch, global_step, progress_so_far())
    if pending:
        _check_finite(pending, first_pending_step, epoch)
    if bar is not None:
        bar.close()
    totals = dist_utils.all_reduce_sum(torch.stack([loss_sum, correct, torch.tensor(float(seen), dtype=torch.float64,
                                                                                     device=device)]), context)
    images = int(totals[2].item())
    return totals[0].item() / images, 100.0 * totals[1].item() / images, images, global_step


def _check_finite(losses: list[torch.Tensor], first_step: int, epoch: int) -> None:
    values = torch.stack(losses)
    finite = torch.isfinite(values)
    if not bool(finite.all()):
        index = int((~finite).nonzero()[0, 0])
        raise _Diverged(first_step + index, epoch, float(values[index]))


@torch.no_grad()
def evaluate(model, loader, config: TrainConfig, device, context=dist_utils.DistContext()) -> dict:
    """Loss, top-1 and top-5 accuracy (%) over a split (top-k with k = min(5, classes))."""
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, top1, top5, count
    for x, y in loader:
        with _autocast(config, device):
            logits = model(x).float()
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        hits = top == y[:, None]
        sums += torch.stack([F.cross_entropy(logits, y, reduction="sum").double(), hits[:, 0].sum().double(),
                             hits.any(1).sum().double(), torch.tensor(float(len(y)), dtype=torch.float64, device=device)])
    dist_utils.all_reduce_sum(sums, context)
    count = sums[3].item()
    return {"test_loss": sums[0].item() / count, "test_acc": 100.0 * sums[1].item() / count,
            "test_top5": 100.0 * sums[2].item() / count, "test_images": int(count)}


# --------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------
def checkpoint_file(config: TrainConfig, rerun: bool = False) -> Path:
    """Where ``config``'s run keeps its resumable state: ``<checkpoint_dir>/<run_id>/last.pt``.

    A rerun of a completed run checkpoints to ``rerun.pt`` beside it, never over the completed
    run's weights; the two are swapped only when the rerun completes (:func:`promote_pending_rerun`)."""
    root = Path(config.checkpoint_dir) if config.checkpoint_dir else checkpoints_dir()
    return root / config.run_id / ("rerun.pt" if rerun else "last.pt")


@dataclass(frozen=True)
class CheckpointPosition:
    """Where a run's checkpoint stands, for planning (``grid --dry-run``).

    ``epochs_done`` whole epochs are behind it and ``images_in`` training images of the next
    one (0 at an epoch's end); ``step`` is the optimizer step it resumes after.  ``problem``,
    when set, says why the run would refuse the checkpoint, with the fix: the run then starts
    over and nothing of it is done."""

    epochs: int
    num_train: int
    batch_size: int
    epochs_done: int = 0
    images_in: int = 0
    step: int = 0
    problem: str | None = None

    @property
    def fraction_done(self) -> float:
        """The share of the run's training behind the checkpoint, in [0, 1].

        Counted in steps, ``(epochs_done + s / S) / epochs`` with ``s`` the steps into the
        unfinished epoch and ``S = ceil(num_train / batch_size)`` the steps of an epoch, so that
        it does not depend on how many processes shared the epoch."""
        if self.problem is not None:
            return 0.0
        steps_per_epoch = math.ceil(self.num_train / self.batch_size)
        within = min(max(self.step - self.epochs_done * steps_per_epoch, 0), steps_per_epoch)
        return min((self.epochs_done + within / steps_per_epoch) / self.epochs, 1.0)

    def describe(self) -> str:
        if self.problem is not None:
            return self.problem
        if self.images_in:
            return (f"resumes from its checkpoint: epoch {self.epochs_done + 1} of {self.epochs}, "
                    f"{self.images_in:,} training images in, step {self.step}")
        return f"resumes from its checkpoint: {self.epochs_done} of {self.epochs} epochs done, step {self.step}"


def checkpoint_position(config: TrainConfig) -> CheckpointPosition | None:
    """Where ``config``'s run would resume (:class:`CheckpointPosition`); None without a checkpoint.

    A checkpoint that cannot be read, or that another configuration wrote, comes back with its
    ``problem`` set, as the run itself would refuse it.  The file is memory-mapped
    (``weights_only``), so reading the position of a large checkpoint does not read its tensors."""
    path = checkpoint_file(config)
    if not path.is_file():
        return None
    num_train = config.synthetic_train_size if config.synthetic else DATASETS[config.dataset].num_train
    blank = CheckpointPosition(config.epochs, num_train, config.batch_size)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # a damaged or empty file
        return dataclasses.replace(blank, problem=f"checkpoint cannot be read ({type(error).__name__}): "
                                                  f"delete {path} to start the run over")
    if not isinstance(state, dict) or not _same_identity(state.get("identity_json"), config):
        return dataclasses.replace(blank, problem=f"checkpoint belongs to another configuration: delete {path} "
                                                  "to start the run over")
    within = state.get("within_epoch") or {}
    # ``seen`` counts the writing process's shard; checkpoints before world_size was kept: 1 process
    images_in = int(within.get("seen", 0)) * int(state.get("world_size", 1))
    return dataclasses.replace(blank, epochs_done=int(state.get("epoch", 0)), step=int(state.get("global_step", 0)),
                               images_in=min(images_in, num_train))


class CheckpointWriteError(RecordWriteError):
    """A checkpoint could not be written (full disk, read-only folder); names the folder and the fix."""


def _save_atomic(state: dict, path: Path) -> None:
    """``torch.save`` to a temporary file, fsync, then ``os.replace``: a kill at any moment
    leaves either the previous checkpoint or the new one, never a torn file.  A write that
    fails (``torch.save`` reports a full disk as a ``RuntimeError``, not an ``OSError``) raises
    :class:`CheckpointWriteError` and leaves the previous checkpoint as it was."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temp, "wb") as stream:
            torch.save(state, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
    except (OSError, RuntimeError) as error:
        with contextlib.suppress(OSError):
            temp.unlink(missing_ok=True)
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error).splitlines()[0]
        raise CheckpointWriteError(f"cannot write checkpoint {path} ({reason}); free disk space or make "
                                   f"{path.parent} writable (or pass --checkpoint-dir), then run the same "
                                   "command again: it resumes from the last checkpoint that was written") from error
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _remove_dead_temporaries(folder: Path) -> None:
    """Delete the temporary checkpoint files (``.<name>.<pid>.tmp``) that a process killed during
    a save left behind (100+ MB each); those of a live process are left alone."""
    if not folder.is_dir():
        return
    for temp in folder.glob(".*.tmp"):
        pid = temp.name.rsplit(".", 2)[-2]
        if pid.isdigit() and int(pid) != os.getpid() and process_alive(int(pid)):
            continue
        with contextlib.suppress(OSError):
            temp.unlink()


class _Checkpointer:
    """Writes the run's checkpoint: after every epoch, and within an epoch every
    ``config.checkpoint_interval_s`` seconds (0: after every step).

    A checkpoint holds everything the rest of the run depends on: model, optimizer and
    scheduler states, the torch (CPU and CUDA), Python and NumPy random states, the data
    loader's position and augmentation generator, the epoch's running loss/accuracy sums,
    the history and the global step.  Only rank 0 writes.
    """

    def __init__(self, path: Path, config: TrainConfig, model, optimizer, scheduler, loader, record: dict,
                 enabled: bool, pause_requested=None) -> None:
        self.path, self.config, self.model, self.optimizer, self.scheduler = path, config, model, optimizer, scheduler
        self.loader, self.record, self.enabled = loader, record, enabled
        self.pause_requested = pause_requested
        self.interval = config.checkpoint_interval_s
        self.last = time.monotonic()

    def due(self) -> bool:
        return self.enabled and time.monotonic() - self.last >= self.interval

    def save(self, epoch: int, global_step: int, within: _EpochProgress | None) -> None:
        """``within`` is the epoch's progress for a mid-epoch checkpoint, None at an epoch's end."""
        if not self.enabled:
            return
        elapsed = None
        if within is not None:
            elapsed = _EpochProgress(within.loss_sum, within.correct, within.seen,
                                     within.elapsed_s + time.perf_counter() - self.epoch_t0)
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "cpu_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python_rng_json": json.dumps(random.getstate()),
            "numpy_rng_json": json.dumps(_numpy_state_to_json(np.random.get_state())),
            "epoch": epoch if within is not None else epoch + 1,
            "global_step": global_step,
            "within_epoch": None if elapsed is None else {
                "loader": self.loader.state_dict(), "loss_sum": elapsed.loss_sum, "correct": elapsed.correct,
                "seen": elapsed.seen, "elapsed_s": elapsed.elapsed_s},
            "history": list(self.record["history"]),
            "identity_json": json.dumps(self.config.identity(), sort_keys=True),
            "started_at": self.record["started_at"],
            # whether every attempt so far kept freed memory (ndlib.cpu_memory): it changes step times
            "keep_freed_memory": bool(self.record.get("environment", {}).get("keep_freed_memory", False)),
            # the processes sharing each epoch: ``within_epoch["seen"]`` counts this one's shard only
            "world_size": int(self.record.get("environment", {}).get("world_size", 1)),
            # the training segments so far (records.training_segment), as JSON for weights_only loading
            "segments_json": json.dumps(self.record.get("segments", [])),
        }
        _save_atomic(state, self.path)
        self.last = time.monotonic()
        finished = within is None and epoch + 1 >= self.config.epochs  # nothing left to pause: let it complete
        if not finished and self.pause_requested is not None and self.pause_requested():
            raise RunPaused(f"paused after the checkpoint at step {global_step}; the same command resumes from it")

    def epoch_started(self) -> None:
        self.epoch_t0 = time.perf_counter()


def _numpy_state_to_json(state) -> list:
    name, keys, pos, has_gauss, cached = state
    return [name, [int(k) for k in keys], int(pos), int(has_gauss), float(cached)]


def _numpy_state_from_json(values: list):
    name, keys, pos, has_gauss, cached = values
    return name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached


_CELL_FIELDS = frozenset({"arch", "norm", "dataset", "epochs", "seed"})


def _same_identity(saved_json: object, config: TrainConfig) -> bool:
    """Whether a checkpoint's stored identity is ``config``'s.  A field added to
    :class:`TrainConfig` after the checkpoint was written is absent from it: the checkpoint
    matches when every such field has its default value in ``config`` (the run it was
    written by could not have set it), so old checkpoints keep resuming."""
    if not isinstance(saved_json, str):
        return False
    try:
        saved = json.loads(saved_json)
    except ValueError:
        return False
    current = config.identity()
    if not isinstance(saved, dict) or set(saved) - set(current) or not _CELL_FIELDS <= set(saved):
        return False
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    return all(saved[k] == v if k in saved else v == defaults.get(k, object()) for k, v in current.items())


def _load_checkpoint(path: Path, config: TrainConfig, device) -> dict | None:
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # a damaged file: name it and the fix
        raise ValueError(f"checkpoint {path} cannot be read ({type(error).__name__}: {error}); delete it to start "
                         "the run over (or pass --no-resume)") from error
    if not _same_identity(state.get("identity_json"), config):
        raise ValueError(f"checkpoint {path} belongs to a different configuration than run {config.run_id}; "
                         "delete it (or pass resume=False / --no-resume) to start over")
    return state


def _earlier_segments(state: dict) -> list[dict]:
    """The training segments a checkpoint's run had before this resume; a checkpoint written
    before segments were recorded gives one segment from step 0 with its settings unknown."""
    if state.get("segments_json"):
        return list(json.loads(state["segments_json"]))
    return [{"from_step": 0, "started_at": state.get("started_at"), "unknown_settings": True}]


def _restore(state: dict, model, optimizer, scheduler, loader) -> tuple[int, int, _EpochProgress | None]:
    """Load a checkpoint into the run; returns (epoch, global step, progress within that epoch)."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["cpu_rng"].cpu())
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
    if state.get("python_rng_json"):
        version, internal, gauss = json.loads(state["python_rng_json"])
        random.setstate((version, tuple(internal), gauss))
    if state.get("numpy_rng_json"):
        np.random.set_state(_numpy_state_from_json(json.loads(state["numpy_rng_json"])))
    within = state.get("within_epoch")
    progress = None
    if within is not None:
        loader_state = dict(within["loader"])
        if loader_state.get("generator_state") is not None:
            loader_state["generator_state"] = loader_state["generator_state"].cpu()
        loader.load_state_dict(loader_state)
        progress = _EpochProgress(within["loss_sum"], within["correct"], within["seen"], within["elapsed_s"])
    return int(state["epoch"]), int(state["global_step"]), progress


def _is_final(state: dict, config: TrainConfig) -> bool:
    """A checkpoint written at the end of the last epoch (a finished run's weights)."""
    return state.get("within_epoch") is None and int(state["epoch"]) >= config.epochs


# --------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------
class BadRunInput(Exception):
    """The run cannot start on this input (nothing was trained, no record written)."""


class DataUnavailable(BadRunInput, FileNotFoundError):
    """The run's data could not be loaded."""


class DeviceUnavailable(BadRunInput, ValueError):
    """The requested device does not exist on this machine."""


def _rerun_path(config: TrainConfig) -> Path:
    return attempts_dir(config.runs_dir) / f"{config.run_id}.rerun.json"


def _promote(config: TrainConfig, rerun_file: Path, canonical: Path, record: dict) -> None:
    """A completed rerun replaces the record and the weights: archive the old record (once: an
    archive with the same content already there counts) and the old final checkpoint, then swap
    in the new ones.  Every step can be repeated, so a promotion cut short by a full disk or a kill
    is finished by the next command (:func:`promote_pending_rerun`), never trained again."""
    if canonical.is_file():
        old = read_record(canonical)
        if not (rerun_file.is_file() and read_record(rerun_file) == old):  # not already the promoted record
            stamp = str(old.get("started_at", "unknown")).replace(":", "").replace("-", "").replace("+0000", "Z")
            archive = attempts_dir(canonical.parent) / f"{old['run_id']}.{stamp}.json"
            count = 1
            while archive.exists() and read_record(archive) != old:  # never overwrite another archived record
                count += 1
                archive = archive.with_name(f"{old['run_id']}.{stamp}-{count}.json")
            if not archive.exists():
                write_json_atomic(archive, old)
            weights = checkpoint_file(config)
            if weights.is_file() and checkpoint_file(config, rerun=True).is_file():
                os.replace(weights, weights.with_name(f"last.{stamp}.pt"))
    new_weights = checkpoint_file(config, rerun=True)
    if new_weights.is_file():
        os.replace(new_weights, checkpoint_file(config))
    write_json_atomic(canonical, record)
    rerun_file.unlink(missing_ok=True)


def promote_pending_rerun(config: TrainConfig) -> dict | None:
    """Finish the promotion of a rerun that completed but was not swapped in (a full disk or a kill
    between its steps); the promoted record, or None when there is none to promote."""
    pending = _rerun_path(config)
    if not pending.is_file():
        return None
    record = read_record(pending)
    if record["status"] != "completed":
        return None
    _promote(config, pending, record_path(config.run_id, config.runs_dir), record)
    return record


def run(config: TrainConfig, model: nn.Module | None = None, *, progress: bool = True, resume: bool = True,
        rerun: bool = False, pause_requested=None) -> dict:
    """Train ``config`` (or the given ``model`` on ``config``'s data and settings); return the record.

    The record is ``<runs_dir>/<run_id>.json`` (rank 0 writes it).  A configuration whose
    record is already ``completed`` is not trained again: the stored record is returned.  With
    ``rerun=True`` it is trained again, its progress going to
    ``<runs_dir>/attempts/<run_id>.rerun.json``; only when the rerun completes does it replace
    the record (the old one is kept in ``attempts/``), so a failed or interrupted rerun never
    touches a completed result.

    Resume: the run continues from its checkpoint (``resume=True``), mid-epoch included, and on
    CPU ends with exactly the metrics of an uninterrupted run.  A rerun starts from scratch
    unless its own unfinished checkpoint is there.

    ``pause_requested``: a function asked after every checkpoint (mid-epoch or at an epoch's
    end); when it returns True the run stops there with :class:`RunPaused` (recorded as
    ``interrupted``), so a resume loses nothing.  Campaign lanes use it for a clean pause.

    Raises :class:`BadRunInput` (:class:`DataUnavailable`, :class:`DeviceUnavailable`; nothing
    trained, nothing recorded) when the data or the device is not there; on
    interruption (after recording ``interrupted``) and on other errors (after recording
    ``failed``) it re-raises.  A diverged run returns normally with ``status == "diverged"``.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    context = dist_utils.context_from_env()
    canonical = record_path(config.run_id, config.runs_dir)
    promoted = promote_pending_rerun(config) if context.is_main else None
    if promoted is not None:
        return promoted  # a rerun that completed earlier: promoted now, never trained again
    existing = completed_record(config.run_id, config.runs_dir)  # a damaged record raises, naming the file
    if existing is not None and not rerun:
        return existing
    path = _rerun_path(config) if existing is not None else canonical
    device = _resolve_device(config, context)
    created_group = dist_utils.init_process_group(context, device)
    record: dict = {
        "schema_version": SCHEMA_VERSION,
        "run_id": config.run_id,
        "status": "running",
        "table": config.table,
        "label": "synthetic smoke run" if config.synthetic else "",
        "config": _portable_config(config),
        "started_at": utc_now(),
        "finished_at": None,
        "history": [],
        "final": None,
        "divergence": None,
        "error": None,
        "resumed_at_epochs": [],
        "resumed_at_steps": [],
    }
    written = False

    def write() -> None:
        nonlocal written
        if context.is_main:
            write_json_atomic(path, scrub_paths(record))
            written = True

    try:
        with _torch_settings(config, device) as deterministic, _sigterm_raises():
            if device.type == "cpu" and config.keep_freed_memory:
                cpu_memory.keep_freed_memory()
            # the process's state, not only the request: a process that kept freed memory once keeps it
            record["environment"] = {**environment_info(device), "deterministic": deterministic,
                                     "world_size": context.world_size, "amp": config.amp,
                                     "channels_last": config.channels_last,
                                     "keep_freed_memory": cpu_memory.is_kept()}
            # One segment per start or resume, with the settings that time it (records.TIMING_SETTINGS).
            this_segment = training_segment(record["environment"], from_step=0)
            record["segments"] = [this_segment]
            _seed_everything(config.seed)
            try:
                train_loader, test_loader, source = _build_loaders(config, device, context)
            except (FileNotFoundError, ValueError) as error:
                raise DataUnavailable(str(error)) from error
            record["data_source"] = source.to_dict()
            model_source = "ndlib.models.create" if model is None else "passed to ndlib.train.run"
            model = create_model(config) if model is None else model
            model = model.to(device)
            if config.synthetic and config.synthetic_image_size is not None:
                _probe_image_size(model, config, device)
            if config.channels_last:
                model = model.to(memory_format=torch.channels_last)
            record["model"] = {"class": type(model).__name__, "source": model_source,
                               "num_params": sum(p.numel() for p in model.parameters())}
            record["steps_per_epoch"] = len(train_loader)
            wrapped = dist_utils.wrap_model(model, context, device)
            optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                        weight_decay=config.weight_decay)
            total_steps = config.epochs * len(train_loader)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _cosine_factor(total_steps))
            start_epoch, global_step, within = 0, 0, None
            checkpoint_path = checkpoint_file(config, rerun=existing is not None)
            if context.is_main:
                _remove_dead_temporaries(checkpoint_path.parent)
            state = _load_checkpoint(checkpoint_path, config, device) if (resume and config.checkpoint) else None
            if state is not None:
                start_epoch, global_step, within = _restore(state, model, optimizer, scheduler, train_loader)
                record["history"] = list(state["history"])
                record["started_at"] = state["started_at"]
                # The record's times span every attempt: it kept freed memory only if all of them did
                # (a checkpoint from before the setting existed was written by a run that did not).
                record["environment"]["keep_freed_memory"] = bool(
                    record["environment"]["keep_freed_memory"] and state.get("keep_freed_memory", False))
                record["segments"] = _earlier_segments(state) + [dict(this_segment, from_step=global_step)]
                # every resume so far, not only this one: one per segment after the first
                steps = [int(segment["from_step"]) for segment in record["segments"][1:]]
                record["resumed_at_steps"] = steps
                record["resumed_at_epochs"] = [step // len(train_loader) for step in steps]
            checkpointer = _Checkpointer(checkpoint_path, config, model, optimizer, scheduler, train_loader, record,
                                         enabled=config.checkpoint and context.is_main,
                                         pause_requested=pause_requested)
            write()
            with finite_checks(False):  # the loop checks the loss itself; no per-layer device read-back
                for epoch in range(start_epoch, config.epochs):
                    if within is None:
                        train_loader.set_epoch(epoch)
                    resumed_mid_epoch = within is not None
                    lr_at_start = optimizer.param_groups[0]["lr"]
                    if resumed_mid_epoch:  # the lr the epoch started with, as LambdaLR computed it
                        lr_at_start = config.lr * _cosine_factor(total_steps)(epoch * len(train_loader))
                    if device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(device)
                    synchronize(device)
                    checkpointer.epoch_started()
                    t0 = time.perf_counter()
                    try:
                        train_loss, train_acc, images, global_step = _train_epoch(
                            wrapped, train_loader, optimizer, scheduler, config, device, context, epoch,
                            global_step, progress, start=within, checkpointer=checkpointer)
                    except _Diverged as diverged:
                        record.update(status="diverged", finished_at=utc_now(),
                                      divergence={"step": diverged.step, "epoch": diverged.epoch,
                                                  "loss": str(diverged.value)})
                        record["final"] = dict(record["history"][-1]) if record["history"] else None
                        write()
                        return record
                    synchronize(device)
                    train_time = time.perf_counter() - t0 + (within.elapsed_s if within is not None else 0.0)
                    within = None
                    t1 = time.perf_counter()
                    metrics = evaluate(wrapped, test_loader, config, device, context)
                    synchronize(device)
                    eval_time = time.perf_counter() - t1
                    entry = {
                        "epoch": epoch + 1, "global_step": global_step, "lr": lr_at_start,
                        "lr_end": optimizer.param_groups[0]["lr"], "train_loss": train_loss, "train_acc": train_acc,
                        **metrics, "train_images": images, "train_time_s": train_time, "eval_time_s": eval_time,
                        "images_per_s": images / train_time, "peak_mem_mb": _peak_memory_mb(device),
                        "peak_mem_kind": "cuda_max_allocated" if device.type == "cuda" else "cpu_process_max_rss",
                    }
                    if resumed_mid_epoch:
                        entry["resumed_mid_epoch"] = True  # its train time omits the steps lost to the stop
                    record["history"].append(entry)
                    checkpointer.save(epoch, global_step, None)
                    dist_utils.barrier(context)
                    write()
            record["final"] = dict(record["history"][-1])
            record["status"] = "completed"
            record["finished_at"] = utc_now()
            record["environment"]["load_avg_at_end"] = list(os.getloadavg())
            if path != canonical:
                write()
                if context.is_main:
                    _promote(config, path, canonical, scrub_paths(record))
            else:
                write()
            return record
    except KeyboardInterrupt as interrupt:
        record.update(status="interrupted", finished_at=utc_now(), error=f"{type(interrupt).__name__}: {interrupt}")
        record["final"] = dict(record["history"][-1]) if record["history"] else None
        if written:
            write()
        raise
    except BadRunInput:
        raise  # bad input, nothing trained: no record
    except CheckpointWriteError as error:  # the environment stopped the run, not the run itself
        record.update(status="interrupted", finished_at=utc_now(), error=f"{type(error).__name__}: {error}")
        record["final"] = dict(record["history"][-1]) if record["history"] else None
        with contextlib.suppress(RecordWriteError):
            write()  # the trained epochs' metrics are kept
        raise
    except Exception as error:
        record.update(status="failed", finished_at=utc_now(), error=f"{type(error).__name__}: {error}",
                      traceback=traceback.format_exc())
        record["final"] = dict(record["history"][-1]) if record["history"] else None
        if not isinstance(error, RecordWriteError):
            with contextlib.suppress(RecordWriteError):
                write()
        raise
    finally:
        if created_group:
            torch.distributed.destroy_process_group()


def _portable_config(config: TrainConfig) -> dict:
    """The config for the record, with its folders relative to the project root (or scrubbed)."""
    values = config.to_dict()
    for name in ("data_dir", "runs_dir", "checkpoint_dir"):
        values[name] = portable_path(values[name])
    return values


def run_notebook(parameters: dict, *, progress: bool = False) -> dict:
    """The experiment notebooks' one call: validate the ``parameters`` cell, train, return the record.

    ``parameters`` holds TrainConfig fields plus ``records_dir`` ("" or None: ``results/runs``
    for real data; a fresh temporary folder for synthetic data, so smoke runs in CI never land
    in the committed records).  Such a run's checkpoints go to that folder too and are deleted
    when it returns or fails: no later call could resume from a folder made for this one, and
    each would leave a model's weights (~90 MB for VGG-16) in the temp dir.  ``rerun``
    (default False) trains a configuration that already has a completed record again
    (otherwise that record is returned).  Unknown names or bad values raise
    ValueError naming them.
    """
    import tempfile

    values = dict(parameters)
    records_dir = values.pop("records_dir", None) or values.pop("runs_dir", None) or None
    rerun = values.pop("rerun", False)
    if not isinstance(rerun, bool):
        raise ValueError(f"notebook parameter rerun must be True or False, got {rerun!r}")
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown notebook parameter(s) {unknown}; valid: {sorted(names | {'records_dir', 'rerun'})}")
    scratch = None
    if values.get("synthetic") and records_dir is None:
        scratch = Path(tempfile.mkdtemp(prefix="ndlib-synthetic-"))
        records_dir = str(scratch / "runs")
        if not values.get("checkpoint_dir"):
            values["checkpoint_dir"] = str(scratch / "checkpoints")
    try:
        config = TrainConfig(**values, runs_dir=records_dir)
        stored = completed_record(config.run_id, config.runs_dir)
        record = run(config, progress=progress, rerun=rerun)
    finally:
        if scratch is not None:  # a smoke run's folder: nothing could resume from it or read it later
            shutil.rmtree(scratch, ignore_errors=True)
    record["reused"] = stored is not None and not rerun  # the stored result, nothing trained
    record["record_path"] = None if scratch is not None else str(record_path(config.run_id, config.runs_dir))
    return record


def notebook_parameters(namespace: dict, declared: list[str], ignore: set[str]) -> dict:
    """The values of a notebook's ``declared`` parameters from its ``namespace`` (``globals()``).

    papermill sets a parameter by injecting an assignment after the ``parameters`` cell, so a
    misspelled one (``-p epoch 3``) would only create a new variable and the run would train the
    defaults.  Any other public name holding a literal value (what a parameter can be; imported
    functions and modules are not) is refused, with the valid names.  ``ignore``: the names the
    kernel itself defines (IPython's ``user_ns_hidden``)."""
    literal = (bool, int, float, str, type(None), list, tuple, dict, set)
    unknown = sorted(name for name, value in namespace.items()
                     if not name.startswith("_") and name not in declared and name not in ignore
                     and isinstance(value, literal))
    if unknown:
        raise ValueError(f"unknown notebook parameter(s) {unknown}; valid: {sorted(declared)}")
    return {name: namespace[name] for name in declared if name in namespace}
