"""A training run's resumable state: :class:`Checkpoint`, where it lives, how it is saved and read.

A checkpoint holds everything the rest of a run depends on: the model, optimizer and scheduler
states, the torch (CPU and CUDA), Python and NumPy random states, the data loader's position and
augmentation generator, the epoch's running loss and accuracy sums (mid-epoch), the history, the
epoch and the global step, the identity of the configuration that wrote it, and the training
segments so far.  On disk it is a dict of tensors, numbers and strings (the random states and
the identity as JSON text), so it is read with ``torch.load(weights_only=True)``: loading a
checkpoint never unpickles arbitrary objects.

Versions: ``version`` 1 is the layout this module writes.  Files written before the layout had
a version (``ndlib.train`` up to the split of #31, version 0) have the same keys without
``version`` (and, the older ones, without some of the later keys): they load, with the defaults
their writer implied (:meth:`Checkpoint.from_state`).  A file with a newer version is refused.

Writes are atomic (a temporary file, fsync, ``os.replace``, as the run records are written), so
a kill at any moment leaves the previous checkpoint or the new one, never a torn file.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ndlib.config import CELL_FIELDS, TrainConfig
from ndlib.data import DATASETS
from ndlib.paths import checkpoints_dir
from ndlib.records import RecordWriteError, process_alive

__all__ = [
    "CHECKPOINT_VERSION",
    "Checkpoint",
    "EpochProgress",
    "CheckpointPosition",
    "CheckpointWriteError",
    "checkpoint_file",
    "checkpoint_position",
    "read_checkpoint",
    "load_checkpoint",
    "save_atomic",
    "remove_dead_temporaries",
]

#: The layout this module writes (0: the files written before checkpoints had a version).
CHECKPOINT_VERSION = 1


class CheckpointWriteError(RecordWriteError):
    """A checkpoint could not be written (full disk, read-only folder); names the folder and the fix."""


@dataclass
class EpochProgress:
    """The running sums of the epoch in progress: enough to continue it exactly after a resume."""

    loss_sum: float = 0.0
    correct: float = 0.0
    seen: int = 0
    elapsed_s: float = 0.0  # training wall time of this epoch before the resume


@dataclass
class Checkpoint:
    """One checkpoint (see the module's docstring).

    ``epoch`` counts the whole epochs behind it: at an epoch's end ``epoch`` is that epoch's
    number (1-based) and ``within_epoch`` None; mid-epoch it is the epoch in progress (0-based),
    ``within_epoch`` holding the loader's state (``loader``) and the epoch's :class:`EpochProgress`
    (``progress``).  ``identity`` is the writing configuration's :meth:`TrainConfig.identity`;
    ``segments`` the record's training segments (None: written before they were recorded)."""

    model: dict
    optimizer: dict
    scheduler: dict
    cpu_rng: torch.Tensor
    epoch: int
    global_step: int
    history: list = field(default_factory=list)
    cuda_rng: list = field(default_factory=list)
    python_rng: tuple | None = None
    numpy_rng: tuple | None = None
    loader: dict | None = None
    progress: EpochProgress | None = None
    identity: dict | None = None
    started_at: str | None = None
    keep_freed_memory: bool = False
    world_size: int = 1
    segments: list | None = None
    version: int = CHECKPOINT_VERSION

    # ----------------------------------------------------------------------- capture / restore
    @classmethod
    def capture(cls, config: TrainConfig, model, optimizer, scheduler, loader, *, epoch: int, global_step: int,
                progress: EpochProgress | None, record: dict) -> "Checkpoint":
        """The state of a run now: at the end of epoch ``epoch`` (0-based) when ``progress`` is
        None, else within it; ``record`` gives the history, start time, environment and segments."""
        environment = record.get("environment", {})
        return cls(
            model=model.state_dict(), optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
            cpu_rng=torch.get_rng_state(),
            cuda_rng=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            python_rng=random.getstate(), numpy_rng=np.random.get_state(),
            epoch=epoch if progress is not None else epoch + 1, global_step=global_step,
            loader=None if progress is None else loader.state_dict(), progress=progress,
            history=list(record["history"]), identity=config.identity(), started_at=record["started_at"],
            # whether every attempt so far kept freed memory (ndlib.cpu_memory): it changes step times
            keep_freed_memory=bool(environment.get("keep_freed_memory", False)),
            # the processes sharing each epoch: ``progress.seen`` counts this one's shard only
            world_size=int(environment.get("world_size", 1)),
            segments=list(record.get("segments", [])),
        )

    def restore(self, model, optimizer, scheduler, loader) -> tuple[int, int, EpochProgress | None]:
        """Load this state into a run; returns (epoch, global step, progress within that epoch)."""
        model.load_state_dict(self.model)
        optimizer.load_state_dict(self.optimizer)
        scheduler.load_state_dict(self.scheduler)
        torch.set_rng_state(self.cpu_rng.cpu())
        if self.cuda_rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in self.cuda_rng])
        if self.python_rng is not None:
            random.setstate(self.python_rng)
        if self.numpy_rng is not None:
            np.random.set_state(self.numpy_rng)
        if self.within_epoch:
            loader_state = dict(self.loader)
            if loader_state.get("generator_state") is not None:
                loader_state["generator_state"] = loader_state["generator_state"].cpu()
            loader.load_state_dict(loader_state)
        return self.epoch, self.global_step, self.progress

    # ----------------------------------------------------------------------- position and checks
    @property
    def within_epoch(self) -> bool:
        return self.progress is not None

    def matches(self, config: TrainConfig) -> bool:
        """Whether ``config`` wrote this checkpoint.  A field added to :class:`TrainConfig` after
        the checkpoint was written is absent from its identity: it matches when every such field
        has its default value in ``config`` (the run that wrote it could not have set it), so old
        checkpoints keep resuming."""
        saved, current = self.identity, config.identity()
        if not isinstance(saved, dict) or set(saved) - set(current) or not CELL_FIELDS <= set(saved):
            return False
        defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
        return all(saved[k] == v if k in saved else v == defaults.get(k, object()) for k, v in current.items())

    def is_final(self, config: TrainConfig) -> bool:
        """Written at the end of the last epoch (a finished run's weights)."""
        return not self.within_epoch and self.epoch >= config.epochs

    def earlier_segments(self) -> list[dict]:
        """The training segments before a resume from here; a checkpoint written before segments
        were recorded gives one segment from step 0 with its settings unknown."""
        if self.segments is not None:
            return list(self.segments)
        return [{"from_step": 0, "started_at": self.started_at, "unknown_settings": True}]

    # ----------------------------------------------------------------------- the file's layout
    def to_state(self) -> dict:
        """The dict saved to disk: tensors, numbers and strings only (``weights_only`` loading)."""
        return {
            "version": self.version,
            "model": self.model,
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "cpu_rng": self.cpu_rng,
            "cuda_rng": list(self.cuda_rng),
            "python_rng_json": None if self.python_rng is None else json.dumps(self.python_rng),
            "numpy_rng_json": None if self.numpy_rng is None else json.dumps(_numpy_state_to_json(self.numpy_rng)),
            "epoch": int(self.epoch),
            "global_step": int(self.global_step),
            "within_epoch": None if self.progress is None else {
                "loader": self.loader, "loss_sum": self.progress.loss_sum, "correct": self.progress.correct,
                "seen": self.progress.seen, "elapsed_s": self.progress.elapsed_s},
            "history": list(self.history),
            "identity_json": None if self.identity is None else json.dumps(self.identity, sort_keys=True),
            "started_at": self.started_at,
            "keep_freed_memory": bool(self.keep_freed_memory),
            "world_size": int(self.world_size),
            "segments_json": None if self.segments is None else json.dumps(self.segments),
        }

    @classmethod
    def from_state(cls, state: dict) -> "Checkpoint":
        """A checkpoint from the dict on disk, of this version or an earlier one (version 0 has no
        ``version`` key; its older files lack ``keep_freed_memory``: that run did not keep freed
        memory; ``world_size``: one process; ``segments_json``: settings unknown; the random
        states as JSON: left as they are).  A ValueError says what is wrong with anything else."""
        if not isinstance(state, dict):
            raise ValueError(f"not a checkpoint: a {type(state).__name__}, not a dict")
        version = state.get("version", 0)
        if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version <= CHECKPOINT_VERSION:
            raise ValueError(f"checkpoint version {version!r} is newer than this ndlib reads (0 to "
                             f"{CHECKPOINT_VERSION}); update ndlib (git pull)")
        missing = sorted({"model", "optimizer", "scheduler", "cpu_rng"} - set(state))
        if missing:
            raise ValueError(f"not a checkpoint: it lacks {', '.join(missing)}")
        within = state.get("within_epoch")
        python_rng = numpy_rng = None
        if state.get("python_rng_json"):
            rng_version, internal, gauss = json.loads(state["python_rng_json"])
            python_rng = (rng_version, tuple(internal), gauss)
        if state.get("numpy_rng_json"):
            numpy_rng = _numpy_state_from_json(json.loads(state["numpy_rng_json"]))
        return cls(
            model=state["model"], optimizer=state["optimizer"], scheduler=state["scheduler"],
            cpu_rng=state["cpu_rng"], cuda_rng=list(state.get("cuda_rng") or []),
            python_rng=python_rng, numpy_rng=numpy_rng,
            epoch=int(state.get("epoch", 0)), global_step=int(state.get("global_step", 0)),
            loader=None if within is None else dict(within["loader"]),
            progress=None if within is None else EpochProgress(within["loss_sum"], within["correct"],
                                                               within["seen"], within["elapsed_s"]),
            history=list(state.get("history") or []), identity=_identity(state.get("identity_json")),
            started_at=state.get("started_at"), keep_freed_memory=bool(state.get("keep_freed_memory", False)),
            world_size=int(state.get("world_size", 1)),
            segments=json.loads(state["segments_json"]) if state.get("segments_json") else None,
            version=version,
        )

    def save(self, path: Path) -> None:
        """Write atomically (:func:`save_atomic`), always in this module's layout (version 1)."""
        save_atomic(dataclasses.replace(self, version=CHECKPOINT_VERSION).to_state(), path)


def _identity(saved_json: object) -> dict | None:
    if not isinstance(saved_json, str):
        return None
    try:
        saved = json.loads(saved_json)
    except ValueError:
        return None
    return saved if isinstance(saved, dict) else None


def _numpy_state_to_json(state) -> list:
    name, keys, pos, has_gauss, cached = state
    return [name, [int(k) for k in keys], int(pos), int(has_gauss), float(cached)]


def _numpy_state_from_json(values: list):
    name, keys, pos, has_gauss, cached = values
    return name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached


# --------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------
def checkpoint_file(config: TrainConfig, rerun: bool = False) -> Path:
    """Where ``config``'s run keeps its resumable state: ``<checkpoint_dir>/<run_id>/last.pt``.

    A rerun of a completed run checkpoints to ``rerun.pt`` beside it, never over the completed
    run's weights; the two are swapped only when the rerun completes
    (:func:`ndlib.train.promote_pending_rerun`)."""
    root = Path(config.checkpoint_dir) if config.checkpoint_dir else checkpoints_dir()
    return root / config.run_id / ("rerun.pt" if rerun else "last.pt")


def save_atomic(state: dict, path: Path) -> None:
    """``torch.save`` to a temporary file, fsync, then ``os.replace``: a kill at any moment
    leaves either the previous checkpoint or the new one, never a torn file.  A write that
    fails (``torch.save`` reports a full disk as a ``RuntimeError``, not an ``OSError``) raises
    :class:`CheckpointWriteError` and leaves the previous checkpoint as it was."""
    path = Path(path)
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


def remove_dead_temporaries(folder: Path) -> None:
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


def read_checkpoint(path: str | Path, map_location="cpu", *, mmap: bool = False) -> Checkpoint:
    """The checkpoint in ``path`` (``torch.load(weights_only=True)``: tensors, numbers and strings
    only); ``mmap`` maps the tensors instead of reading them.  Whatever goes wrong raises."""
    return Checkpoint.from_state(torch.load(path, map_location=map_location, weights_only=True, mmap=mmap))


def load_checkpoint(path: Path, config: TrainConfig, device) -> Checkpoint | None:
    """The checkpoint ``config``'s run resumes from, or None when there is none.  A damaged file,
    or one that another configuration wrote, raises a ValueError naming it and the fix."""
    if not path.is_file():
        return None
    try:
        checkpoint = read_checkpoint(path, map_location=device)
    except Exception as error:  # a damaged file: name it and the fix
        raise ValueError(f"checkpoint {path} cannot be read ({type(error).__name__}: {error}); delete it to start "
                         "the run over (or pass --no-resume)") from error
    if not checkpoint.matches(config):
        raise ValueError(f"checkpoint {path} belongs to a different configuration than run {config.run_id}; "
                         "delete it (or pass resume=False / --no-resume) to start over")
    return checkpoint


# --------------------------------------------------------------------------------------
# Position, for planning
# --------------------------------------------------------------------------------------
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
        checkpoint = read_checkpoint(path, mmap=True)
    except Exception as error:  # a damaged or empty file
        return dataclasses.replace(blank, problem=f"checkpoint cannot be read ({type(error).__name__}): "
                                                  f"delete {path} to start the run over")
    if not checkpoint.matches(config):
        return dataclasses.replace(blank, problem=f"checkpoint belongs to another configuration: delete {path} "
                                                  "to start the run over")
    seen = checkpoint.progress.seen if checkpoint.progress is not None else 0
    # ``seen`` counts the writing process's shard: times the processes that shared the epoch
    images_in = int(seen) * checkpoint.world_size
    return dataclasses.replace(blank, epochs_done=checkpoint.epoch, step=checkpoint.global_step,
                               images_in=min(images_in, num_train))
