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
step (:class:`ndlib.checkpoint.Checkpoint`: its format, versions, files and position); the
data order of epoch ``e`` depends only on ``(seed, e)``.  So on CPU with
``deterministic=True`` a run killed at any moment (even with SIGKILL) and resumed with the
same command ends with the same weights and metrics as an uninterrupted one; it loses at most
the work since the last checkpoint.

Where things live: the configuration and its run id and command line in :mod:`ndlib.config`
(``TrainConfig`` is re-exported here, the type every caller of :func:`run` needs), the
checkpoint in :mod:`ndlib.checkpoint`, the record's layout in :mod:`ndlib.records`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import random
import resource
import shutil
import signal
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ndlib import cpu_memory
from ndlib import distributed as dist_utils
from ndlib.checkpoint import (
    Checkpoint,
    CheckpointWriteError,
    EpochProgress,
    checkpoint_file,
    load_checkpoint,
    remove_dead_temporaries,
)
from ndlib.config import TrainConfig
from ndlib.data import DATASETS, TensorLoader, dataset_info, imagenet_loaders, load_cifar, synthetic_arrays
from ndlib.devices import synchronize
from ndlib.layers import finite_checks
from ndlib.paths import data_dir, portable_path, scrub_paths
from ndlib.records import (
    RecordWriteError,
    add_epoch,
    archive_record,
    attempts_dir,
    completed_record,
    environment_info,
    epoch_entry,
    finish_record,
    keep_unfinished_record,
    new_record,
    read_record,
    record_path,
    training_segment,
    write_json_atomic,
)

__all__ = [
    "TrainConfig",
    "RunInterrupted",
    "RunPaused",
    "BadRunInput",
    "promote_pending_rerun",
    "DataUnavailable",
    "DeviceUnavailable",
    "run",
    "create_model",
    "run_notebook",
    "notebook_parameters",
]


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


def _train_epoch(model, loader, optimizer, scheduler, config, device, context, epoch, global_step, progress,
                 start: EpochProgress | None = None, checkpointer: "_Checkpointer | None" = None):
    """One pass over the training split (or the rest of it, from ``start``); returns
    (loss, top-1 %, images, new global step).  After an optimizer step at which
    ``checkpointer.due()``, the state is saved mid-epoch (with the epoch's running sums)."""
    model.train()
    start = start or EpochProgress()
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

    def progress_so_far() -> EpochProgress:
        return EpochProgress(float(loss_sum.item()), float(correct.item()), seen, start.elapsed_s)

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
        images = torch.tensor(float(len(y)), dtype=torch.float64, device=device)
        sums += torch.stack([F.cross_entropy(logits, y, reduction="sum").double(), hits[:, 0].sum().double(),
                             hits.any(1).sum().double(), images])
    dist_utils.all_reduce_sum(sums, context)
    count = sums[3].item()
    return {"test_loss": sums[0].item() / count, "test_acc": 100.0 * sums[1].item() / count,
            "test_top5": 100.0 * sums[2].item() / count, "test_images": int(count)}

# --------------------------------------------------------------------------------------
# Checkpoints (the format, files and position: ndlib.checkpoint)
# --------------------------------------------------------------------------------------
class _Checkpointer:
    """Writes the run's checkpoint (:class:`ndlib.checkpoint.Checkpoint`): after every epoch, and
    within an epoch every ``config.checkpoint_interval_s`` seconds (0: after every step).
    Only rank 0 writes.  After each one it asks ``pause_requested`` and raises :class:`RunPaused`."""

    def __init__(self, path: Path, config: TrainConfig, model, optimizer, scheduler, loader, record: dict,
                 enabled: bool, pause_requested=None) -> None:
        self.path, self.config, self.model, self.optimizer, self.scheduler = path, config, model, optimizer, scheduler
        self.loader, self.record, self.enabled = loader, record, enabled
        self.pause_requested = pause_requested
        self.interval = config.checkpoint_interval_s
        self.last = time.monotonic()

    def due(self) -> bool:
        return self.enabled and time.monotonic() - self.last >= self.interval

    def save(self, epoch: int, global_step: int, within: EpochProgress | None) -> None:
        """``within`` is the epoch's progress for a mid-epoch checkpoint, None at an epoch's end."""
        if not self.enabled:
            return
        if within is not None:  # the epoch's train time so far, this segment's included
            within = dataclasses.replace(within, elapsed_s=within.elapsed_s + time.perf_counter() - self.epoch_t0)
        Checkpoint.capture(self.config, self.model, self.optimizer, self.scheduler, self.loader, epoch=epoch,
                           global_step=global_step, progress=within, record=self.record).save(self.path)
        self.last = time.monotonic()
        finished = within is None and epoch + 1 >= self.config.epochs  # nothing left to pause: let it complete
        if not finished and self.pause_requested is not None and self.pause_requested():
            raise RunPaused(f"paused after the checkpoint at step {global_step}; the same command resumes from it")

    def epoch_started(self) -> None:
        self.epoch_t0 = time.perf_counter()


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
            stamp = archive_record(old, canonical.parent).stem.removeprefix(f"{old['run_id']}.")
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

@dataclass
class _Run:
    """A run in progress: its record and where it goes, and what :func:`_set_up` built for the
    epoch loop (:func:`_train_epochs`) and the end (:func:`_complete`)."""

    config: TrainConfig
    context: dist_utils.DistContext
    record: dict
    path: Path  # where the record is written: the canonical record, or a rerun's attempt
    canonical: Path
    is_rerun: bool
    device: torch.device | None = None
    model: nn.Module | None = None
    wrapped: nn.Module | None = None
    optimizer: torch.optim.Optimizer | None = None
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    train_loader: object = None
    test_loader: object = None
    checkpointer: _Checkpointer | None = None
    start_epoch: int = 0
    global_step: int = 0
    within: EpochProgress | None = None
    written: bool = False

    @property
    def total_steps(self) -> int:
        return self.config.epochs * len(self.train_loader)

    def write(self) -> None:
        if self.context.is_main:
            write_json_atomic(self.path, scrub_paths(self.record))
            self.written = True


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

    The steps: :func:`_set_up` (device, seeds, data, model, optimizer), :func:`_resume` (from the
    checkpoint), :func:`_train_epochs` (the epoch loop) and :func:`_complete`; the record's
    layout and its end states are :mod:`ndlib.records`' (``new_record``, ``finish_record``).
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
    state = _Run(config, context, new_record(config.run_id, config.table, _portable_config(config),
                                             synthetic=config.synthetic),
                 path=_rerun_path(config) if existing is not None else canonical, canonical=canonical,
                 is_rerun=existing is not None)
    state.device = _resolve_device(config, context)
    created_group = dist_utils.init_process_group(context, state.device)
    record = state.record
    try:
        with _torch_settings(config, state.device) as deterministic, _sigterm_raises():
            _set_up(state, model, deterministic)
            checkpoint_path = checkpoint_file(config, rerun=state.is_rerun)
            if context.is_main:
                remove_dead_temporaries(checkpoint_path.parent)
            checkpoint = (load_checkpoint(checkpoint_path, config, state.device) if resume and config.checkpoint
                          else None)
            if checkpoint is None and context.is_main:  # a fresh start: keep an earlier attempt's epochs
                keep_unfinished_record(state.path)
            _resume(state, checkpoint)
            state.checkpointer = _Checkpointer(checkpoint_path, config, state.model, state.optimizer, state.scheduler,
                                               state.train_loader, record,
                                               enabled=config.checkpoint and context.is_main,
                                               pause_requested=pause_requested)
            state.write()
            with finite_checks(False):  # the loop checks the loss itself; no per-layer device read-back
                if _train_epochs(state, progress):
                    _complete(state)
            return record
    except KeyboardInterrupt as interrupt:
        finish_record(record, "interrupted", error=interrupt)
        if state.written:
            state.write()
        raise
    except BadRunInput:
        raise  # bad input, nothing trained: no record
    except CheckpointWriteError as error:  # the environment stopped the run, not the run itself
        finish_record(record, "interrupted", error=error)
        with contextlib.suppress(RecordWriteError):
            state.write()  # the trained epochs' metrics are kept
        raise
    except Exception as error:
        finish_record(record, "failed", error=error, traceback=traceback.format_exc())
        if not isinstance(error, RecordWriteError):
            with contextlib.suppress(RecordWriteError):
                state.write()
        raise
    finally:
        if created_group:
            torch.distributed.destroy_process_group()


def _set_up(state: _Run, model: nn.Module | None, deterministic: bool) -> None:
    """Everything before the first step: memory policy, the environment and first segment in
    the record, seeds, data loaders, the model (probed, moved, wrapped), optimizer and schedule."""
    config, device, context, record = state.config, state.device, state.context, state.record
    if device.type == "cpu" and config.keep_freed_memory:
        cpu_memory.keep_freed_memory()
    # the process's state, not only the request: a process that kept freed memory once keeps it
    record["environment"] = {**environment_info(device), "deterministic": deterministic,
                             "world_size": context.world_size, "amp": config.amp,
                             "channels_last": config.channels_last, "keep_freed_memory": cpu_memory.is_kept()}
    # One segment per start or resume, with the settings that time it (records.TIMING_SETTINGS).
    record["segments"] = [training_segment(record["environment"], from_step=0)]
    _seed_everything(config.seed)
    try:
        state.train_loader, state.test_loader, source = _build_loaders(config, device, context)
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
    record["steps_per_epoch"] = len(state.train_loader)
    state.model = model
    state.wrapped = dist_utils.wrap_model(model, context, device)
    state.optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                      weight_decay=config.weight_decay)
    state.scheduler = torch.optim.lr_scheduler.LambdaLR(state.optimizer, _cosine_factor(state.total_steps))


def _resume(state: _Run, checkpoint: Checkpoint | None) -> None:
    """Continue from ``checkpoint`` (None: start afresh): restore the training state, and carry
    the history, start time and training segments of the earlier attempts into the record."""
    if checkpoint is None:
        return
    record = state.record
    state.start_epoch, state.global_step, state.within = checkpoint.restore(
        state.model, state.optimizer, state.scheduler, state.train_loader)
    record["history"] = list(checkpoint.history)
    record["started_at"] = checkpoint.started_at
    # The record's times span every attempt: it kept freed memory only if all of them did
    # (a checkpoint from before the setting existed was written by a run that did not).
    record["environment"]["keep_freed_memory"] = bool(record["environment"]["keep_freed_memory"]
                                                      and checkpoint.keep_freed_memory)
    this_segment = record["segments"][-1]
    record["segments"] = checkpoint.earlier_segments() + [dict(this_segment, from_step=state.global_step)]
    # every resume so far, not only this one: one per segment after the first
    steps = [int(segment["from_step"]) for segment in record["segments"][1:]]
    record["resumed_at_steps"] = steps
    record["resumed_at_epochs"] = [step // len(state.train_loader) for step in steps]


def _train_epochs(state: _Run, progress: bool) -> bool:
    """The epoch loop, from where :func:`_resume` left the run: train, evaluate, record the
    epoch, checkpoint.  False when the loss diverged (the record then says so)."""
    config, device, context, record = state.config, state.device, state.context, state.record
    optimizer, loader, within = state.optimizer, state.train_loader, state.within
    for epoch in range(state.start_epoch, config.epochs):
        if within is None:
            loader.set_epoch(epoch)
        resumed_mid_epoch = within is not None
        lr_at_start = optimizer.param_groups[0]["lr"]
        if resumed_mid_epoch:  # the lr the epoch started with, as LambdaLR computed it
            lr_at_start = config.lr * _cosine_factor(state.total_steps)(epoch * len(loader))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        synchronize(device)
        state.checkpointer.epoch_started()
        t0 = time.perf_counter()
        try:
            train_loss, train_acc, images, state.global_step = _train_epoch(
                state.wrapped, loader, optimizer, state.scheduler, config, device, context, epoch,
                state.global_step, progress, start=within, checkpointer=state.checkpointer)
        except _Diverged as diverged:
            finish_record(record, "diverged", divergence={"step": diverged.step, "epoch": diverged.epoch,
                                                          "loss": str(diverged.value)})
            state.write()
            return False
        synchronize(device)
        train_time = time.perf_counter() - t0 + (within.elapsed_s if within is not None else 0.0)
        within = None
        t1 = time.perf_counter()
        metrics = evaluate(state.wrapped, state.test_loader, config, device, context)
        synchronize(device)
        eval_time = time.perf_counter() - t1
        add_epoch(record, epoch_entry(
            epoch=epoch + 1, global_step=state.global_step, lr=lr_at_start, lr_end=optimizer.param_groups[0]["lr"],
            train_loss=train_loss, train_acc=train_acc, metrics=metrics, train_images=images,
            train_time_s=train_time, eval_time_s=eval_time, peak_mem_mb=_peak_memory_mb(device),
            peak_mem_kind="cuda_max_allocated" if device.type == "cuda" else "cpu_process_max_rss",
            resumed_mid_epoch=resumed_mid_epoch))
        state.checkpointer.save(epoch, state.global_step, None)
        dist_utils.barrier(context)
        state.write()
    return True


def _complete(state: _Run) -> None:
    """The run trained every epoch: record it ``completed``; a rerun then replaces the record."""
    record = state.record
    finish_record(record, "completed")
    record["environment"]["load_avg_at_end"] = list(os.getloadavg())
    state.write()
    if state.path != state.canonical and state.context.is_main:
        _promote(state.config, state.path, state.canonical, scrub_paths(record))


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
