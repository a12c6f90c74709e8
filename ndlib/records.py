"""Run records: one JSON file per run in ``results/runs/<run_id>.json``, and loaders for the book.

A record is written atomically (a temporary file in the same folder, flushed and fsync'ed,
then ``os.replace``), so a reader sees either the previous complete version or the new one,
never half a file.  The trainer writes it at the start (status ``running``), after every
epoch, and at the end (``completed``, ``diverged``, ``interrupted`` or ``failed``).  A
``running`` record whose process was killed stays ``running``: it is never counted as done.

Completed results are never lost: a rerun of a configuration whose record is ``completed``
writes its progress to ``<runs>/attempts/<run_id>.rerun.json`` and replaces the record only
once it has completed itself; the replaced record is kept as
``<runs>/attempts/<run_id>.<its started_at>.json``.  So is an unfinished record with finished
epochs when its run starts over from step 0 (its checkpoint gone with a lost machine).  The book
reads only the top-level records, so attempts are kept out of every table.

Records are portable: paths inside the project are stored relative to its root, other
absolute paths (a temporary folder, the Python installation, the home folder) are replaced by
a placeholder (:func:`ndlib.paths.scrub_paths`), so a record says nothing about the filesystem of the
machine that wrote it.

All accuracies are in percent.
"""
from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import math
import os
import platform
import subprocess
import tempfile
from pathlib import Path

import pandas as pd

from ndlib.paths import project_root, runs_dir

__all__ = [
    "SCHEMA_VERSION",
    "STATUSES",
    "FINISHED_STATUSES",
    "RECORD_FIELDS",
    "EPOCH_FIELDS",
    "new_record",
    "epoch_entry",
    "add_epoch",
    "finish_record",
    "RUN_COLUMNS",
    "HISTORY_COLUMNS",
    "write_json_atomic",
    "read_record",
    "record_path",
    "attempts_dir",
    "archive_record",
    "keep_unfinished_record",
    "completed_record",
    "RecordWriteError",
    "environment_info",
    "utc_now",
    "load_records",
    "load_runs",
    "load_histories",
    "TIMING_SETTINGS",
    "training_segment",
    "timing_settings_mixed",
    "machine_id",
    "machine_type",
    "this_machine_type",
    "process_alive",
    "record_machine_id",
]

STATUSES = ("running", "completed", "diverged", "interrupted", "failed")

#: Version of the run-record layout this code writes and reads (1: records without the field).
SCHEMA_VERSION = 2

#: How a run ended (every status but ``running``).
FINISHED_STATUSES = STATUSES[1:]

# --------------------------------------------------------------------------------------
# The record's schema: what the trainer writes (new_record, epoch_entry / add_epoch,
# finish_record) and what the readers below (read_record, _summary_row) expect.
# --------------------------------------------------------------------------------------
#: The top-level fields of a record: name -> JSON type(s) of its value (None is allowed where a
#: run has no value yet).  A new record has the first fourteen, in this order (:func:`new_record`);
#: the trainer adds ``environment``, ``segments``, ``data_source``, ``model`` and
#: ``steps_per_epoch`` once it has them; a failed run adds ``traceback``.
RECORD_FIELDS: dict[str, tuple[type, ...]] = {
    "schema_version": (int,), "run_id": (str,), "status": (str,), "table": (int,), "label": (str,),
    "config": (dict,), "started_at": (str,), "finished_at": (str,), "history": (list,), "final": (dict,),
    "divergence": (dict,), "error": (str,), "resumed_at_epochs": (list,), "resumed_at_steps": (list,),
    "environment": (dict,), "segments": (list,), "data_source": (dict,), "model": (dict,),
    "steps_per_epoch": (int,), "traceback": (str,),
}

#: The fields of one ``history`` entry (one per finished epoch), in the order written
#: (:func:`epoch_entry`); an epoch resumed mid-way also has ``resumed_mid_epoch: true``.
EPOCH_FIELDS: tuple[str, ...] = (
    "epoch", "global_step", "lr", "lr_end", "train_loss", "train_acc", "test_loss", "test_acc", "test_top5",
    "test_images", "train_images", "train_time_s", "eval_time_s", "images_per_s", "peak_mem_mb", "peak_mem_kind",
)

# The fields every reader uses, checked by read_record (records of every schema version have them right).
_CHECKED_FIELDS = ("history", "final", "environment", "segments", "data_source", "divergence", "resumed_at_epochs",
                   "resumed_at_steps", "started_at", "finished_at", "error", "label")
_FIELD_TYPES: dict[str, tuple[type, ...]] = {name: RECORD_FIELDS[name] for name in _CHECKED_FIELDS}


def new_record(run_id: str, table: int, config: dict, *, synthetic: bool) -> dict:
    """A run's record as it starts (status ``running``, no history): :data:`RECORD_FIELDS`' first
    fourteen.  ``config`` is the run's TrainConfig as a dict (folders made portable)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "status": "running",
        "table": table,
        "label": "synthetic smoke run" if synthetic else "",
        "config": config,
        "started_at": utc_now(),
        "finished_at": None,
        "history": [],
        "final": None,
        "divergence": None,
        "error": None,
        "resumed_at_epochs": [],
        "resumed_at_steps": [],
    }


def epoch_entry(*, epoch: int, global_step: int, lr: float, lr_end: float, train_loss: float, train_acc: float,
                metrics: dict, train_images: int, train_time_s: float, eval_time_s: float, peak_mem_mb: float,
                peak_mem_kind: str, resumed_mid_epoch: bool = False) -> dict:
    """One ``history`` entry (:data:`EPOCH_FIELDS`): ``epoch`` is 1-based, ``metrics`` the
    evaluation's ``test_loss``, ``test_acc``, ``test_top5`` and ``test_images``; ``images_per_s``
    is derived.  ``resumed_mid_epoch``: its train time omits the steps lost to the stop."""
    entry = {
        "epoch": epoch, "global_step": global_step, "lr": lr, "lr_end": lr_end, "train_loss": train_loss,
        "train_acc": train_acc, **metrics, "train_images": train_images, "train_time_s": train_time_s,
        "eval_time_s": eval_time_s, "images_per_s": train_images / train_time_s, "peak_mem_mb": peak_mem_mb,
        "peak_mem_kind": peak_mem_kind,
    }
    if resumed_mid_epoch:
        entry["resumed_mid_epoch"] = True
    return entry


def add_epoch(record: dict, entry: dict) -> None:
    """Append a finished epoch (:func:`epoch_entry`) to the record's history."""
    record["history"].append(entry)


def finish_record(record: dict, status: str, *, error: BaseException | None = None, divergence: dict | None = None,
                  traceback: str | None = None) -> dict:
    """End the record with ``status`` (one of :data:`FINISHED_STATUSES`): the finish time, the
    ``error`` as ``"<type>: <message>"``, the ``divergence`` (``step``, ``epoch``, ``loss``), a
    failure's ``traceback``, and ``final``, the last finished epoch (None before the first)."""
    if status not in FINISHED_STATUSES:
        raise ValueError(f"a record finishes as one of {FINISHED_STATUSES}, not {status!r}")
    record["status"] = status
    record["finished_at"] = utc_now()
    if divergence is not None:
        record["divergence"] = divergence
    if error is not None:
        record["error"] = f"{type(error).__name__}: {error}"
    if traceback is not None:
        record["traceback"] = traceback
    record["final"] = dict(record["history"][-1]) if record["history"] else None
    return record


#: The columns of :func:`load_runs`: one row per record (:func:`_summary_row`).
RUN_COLUMNS = [
    "run_id", "status", "table", "dataset", "arch", "norm", "epochs", "seed", "amp", "synthetic", "data_source",
    "test_acc", "test_top5", "test_loss", "train_acc", "train_loss", "train_time_s", "eval_time_s", "images_per_s",
    "peak_mem_mb", "device_type", "device_name", "cpu_bf16_isa", "machine_type", "machine_id", "num_threads",
    "keep_freed_memory", "timing_mixed",
    "torch_version", "git_commit", "git_dirty", "started_at", "finished_at", "epochs_done", "diverged_step", "error",
    "label", "note", "path",
]

#: The columns of :func:`load_histories`: the run id and these :data:`EPOCH_FIELDS`.
HISTORY_COLUMNS = [
    "run_id", "epoch", "train_loss", "train_acc", "test_loss", "test_acc", "test_top5", "lr",
    "train_time_s", "eval_time_s", "images_per_s", "peak_mem_mb",
]


def utc_now() -> str:
    """The current UTC time, ISO 8601 with seconds."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _json_safe(value):
    """Non-finite floats become the strings "nan" / "inf" / "-inf" (strict JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def _umask_file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


#: The mode an ordinary ``open`` would give a new file under this process's umask.
_FILE_MODE = _umask_file_mode()


def write_json_atomic(path: str | Path, payload: dict) -> Path:
    """Write ``payload`` as JSON to ``path`` so that readers never see a partial file.

    The text goes to a temporary file in the same folder, is flushed and fsync'ed, and then
    ``os.replace`` swaps it in (atomic on POSIX within one file system).
    A full disk or a folder that cannot be written raises :class:`RecordWriteError` naming the
    file; the previous version of the file, if any, is left as it was.
    """
    path = Path(path)
    text = json.dumps(_json_safe(payload), indent=2, sort_keys=False, allow_nan=False) + "\n"
    temp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(handle, _FILE_MODE)  # mkstemp's 0600 would lock others out of a shared runs folder
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_name, path)
    except OSError as error:
        if temp_name is not None:
            Path(temp_name).unlink(missing_ok=True)
        raise RecordWriteError(f"cannot write {path} ({error.strerror or error}); free disk space or make "
                               f"{path.parent} writable (or choose another folder), then rerun the same command") \
            from error
    except BaseException:
        if temp_name is not None:
            Path(temp_name).unlink(missing_ok=True)
        raise
    return path


class RecordWriteError(OSError):
    """A record could not be written (disk full, read-only or missing folder); names the file."""


def record_path(run_id: str, root: str | Path | None = None) -> Path:
    return Path(root if root is not None else runs_dir()) / f"{run_id}.json"


def attempts_dir(root: str | Path | None = None) -> Path:
    """Where superseded completed records and unfinished reruns live: ``<runs>/attempts``."""
    return Path(root if root is not None else runs_dir()) / "attempts"


def archive_record(record: dict, root: str | Path | None = None) -> Path:
    """Keep ``record`` as ``<root>/attempts/<run_id>.<its started_at>.json`` and return that file.
    Once: an archive with the same content already there counts; another archived record is never
    overwritten (a ``-2``, ``-3``... suffix)."""
    stamp = str(record.get("started_at", "unknown")).replace(":", "").replace("-", "").replace("+0000", "Z")
    archive = attempts_dir(root) / f"{record['run_id']}.{stamp}.json"
    count = 1
    while archive.exists() and read_record(archive) != record:
        count += 1
        archive = archive.with_name(f"{record['run_id']}.{stamp}-{count}.json")
    if not archive.exists():
        write_json_atomic(archive, record)
    return archive


def keep_unfinished_record(path: str | Path) -> None:
    """Before a run starts over from step 0 where an unfinished record with finished epochs lies
    (its process killed on a machine that is gone with its checkpoint, or the checkpoint deleted),
    archive that record (:func:`archive_record`), as a replaced completed record is archived, so
    the learning curve it holds is never written over."""
    path = Path(path)
    if not path.is_file():
        return
    record = read_record(path)
    if record.get("status") != "completed" and record.get("history"):
        archive_record(record, path.parent if path.parent.name != "attempts" else path.parent.parent)


def read_record(path: str | Path) -> dict:
    """Read and check one record; a ValueError names the file and the fix if it is damaged
    (not JSON, truncated, not a record) or was written by a newer schema than this code reads."""
    path = Path(path)
    fix = "restore it from git (`git checkout -- <file>`) or delete it and rerun that configuration"
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"run record {path} is damaged: not valid JSON ({error}); {fix}") from error
    except UnicodeDecodeError as error:
        raise ValueError(f"run record {path} is damaged: not UTF-8 text; {fix}") from error
    except OSError as error:  # unreadable (permissions), or vanished since it was listed
        raise ValueError(f"run record {path} cannot be read ({error.strerror or error}); make it readable, or "
                         f"{fix}") from error
    if not isinstance(record, dict) or not isinstance(record.get("run_id"), str) \
            or record.get("status") not in STATUSES or not isinstance(record.get("config"), dict):
        raise ValueError(f"run record {path} is damaged: it lacks a run_id, a known status {STATUSES} or a config; "
                         f"{fix}")
    wrong = [f"{key} ({type(record[key]).__name__}, not {' or '.join(t.__name__ for t in kinds)})"
             for key, kinds in _FIELD_TYPES.items()
             if key in record and record[key] is not None and not isinstance(record[key], kinds)]
    history = record.get("history")
    if isinstance(history, list) and not all(isinstance(entry, dict) for entry in history):
        wrong.append("history (an entry that is not an object)")
    if wrong:
        raise ValueError(f"run record {path} is damaged: wrongly typed field(s) {', '.join(wrong)}; {fix}")
    version = record.get("schema_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= SCHEMA_VERSION:
        raise ValueError(f"run record {path} has schema_version {version!r}, which this ndlib (reads 1 to "
                         f"{SCHEMA_VERSION}) does not know; update ndlib (git pull) or delete the record")
    return record


def completed_record(run_id: str, root: str | Path | None = None) -> dict | None:
    """The completed record of ``run_id``, or None (missing, or not completed)."""
    path = record_path(run_id, root)
    if not path.is_file():
        return None
    record = read_record(path)
    return record if record["status"] == "completed" else None


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=project_root(), capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.rstrip() if done.returncode == 0 else None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _source_digest() -> str:
    """SHA-256 over the package's ``.py`` files (relative path and bytes): which code ran."""
    import ndlib

    package = Path(ndlib.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def machine_id() -> str | None:
    """An anonymous identifier of the machine instance this process runs on: the first 12 hex
    digits of the SHA-256 of the kernel's boot id (Linux), which changes at every boot.

    Why: machines of one type (the same CPU name, core count and hostname) can differ
    by about twofold in speed when they are virtual machines on shared hosts, so a training time is
    only comparable with another measured on the same instance.  Two runs with the same id ran
    on one machine, with no reboot in between.  None where the system gives no boot id."""
    try:
        boot_id = _BOOT_ID.read_text().strip()
    except OSError:
        return None
    return hashlib.sha256(boot_id.encode()).hexdigest()[:12] if boot_id else None


#: How :func:`machine_type` writes a CPU's native bf16 instruction set (``cpu_bf16_isa``).
_BF16_ISA_WORDS = {"amx_bf16": "AMX", "avx512_bf16": "AVX512-BF16", "none": "no native bf16"}


def machine_type(device_type: str | None, device_name: str | None, cpu_bf16_isa: str | None) -> str | None:
    """The kind of machine a timing belongs to: the device name, and for a CPU whose record names
    its native bf16 instruction set (:func:`ndlib.devices.cpu_bf16_isa`) that set too, e.g.
    ``"AMD EPYC (AVX512-BF16)"``.  A record written before the field existed keeps the bare name,
    so it is never matched with a CPU of the same name whose ISA is known (one name has covered
    CPUs with and without native bf16, and bf16 steps differ tenfold between them)."""
    if not isinstance(device_name, str):
        return None
    if device_type != "cpu" or not isinstance(cpu_bf16_isa, str):
        return device_name
    return f"{device_name} ({_BF16_ISA_WORDS.get(cpu_bf16_isa, cpu_bf16_isa)})"


@functools.cache
def this_machine_type(device_type: str = "cpu") -> str | None:
    """:func:`machine_type` of this machine's ``device_type`` (``"cpu"`` or ``"cuda"``), as a
    record written here would give it; None for a device this machine does not have.  Cached:
    ``campaign status`` asks once per planned run, and the answer cannot change in a process."""
    if device_type == "cpu":
        from ndlib.devices import cpu_bf16_isa

        return machine_type("cpu", _cpu_name(), cpu_bf16_isa())
    import torch

    if device_type == "cuda" and torch.cuda.is_available():
        return machine_type("cuda", torch.cuda.get_device_name(), None)
    return None


def process_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine (one we may not signal counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def environment_info(device) -> dict:
    """Versions, git state and hardware, for the record (what produced these numbers)."""
    import torch
    import torchvision

    import ndlib
    from ndlib.devices import cpu_bf16_isa

    device = torch.device(device)
    # Dirty = modified tracked files anywhere but results/ (the records a campaign clone rewrites as its
    # runs progress are data, not code), or untracked files inside the package.
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results")
    untracked = _git("status", "--porcelain", "--untracked-files=all", "--", "ndlib")
    cuda = device.type == "cuda"
    return {
        "ndlib_version": ndlib.__version__,
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status) or bool(untracked),
        "git_status": None if status is None else status.splitlines()
        + [line for line in (untracked or "").splitlines() if line.startswith("??")],
        "ndlib_source_sha256": _source_digest(),
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
        "python_version": platform.python_version(),
        "cuda_version": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device_type": device.type,
        "device_name": torch.cuda.get_device_name(device) if cuda else _cpu_name(),
        "gpu_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "cpu_name": _cpu_name(),
        "cpu_bf16_isa": cpu_bf16_isa(),
        "cpu_count": os.cpu_count(),
        "num_threads": torch.get_num_threads(),
        "machine_id": machine_id(),
        "platform": platform.platform(),
        "pid": os.getpid(),
        "load_avg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def load_records(root: str | Path | None = None) -> list[dict]:
    """Every record under ``root`` (default ``<project>/results/runs``), sorted by run id."""
    folder = Path(root) if root is not None else runs_dir()
    if not folder.is_dir():
        return []
    records = []
    for path in sorted(folder.glob("*.json")):
        record = read_record(path)
        record["_path"] = str(path)
        records.append(record)
    return records


#: The settings that change how long a training step takes, without changing its result: a run
#: whose training segments (its first start and each resume) differ in one of them has a
#: training time that belongs to no single setting.
TIMING_SETTINGS = ("device_type", "device_name", "machine_id", "num_threads", "keep_freed_memory", "world_size")


def training_segment(environment: dict, from_step: int) -> dict:
    """One training segment of a run, for the record's ``segments`` list: the global step it
    started from, when, and the :data:`TIMING_SETTINGS` it ran under (from the record's
    ``environment`` as the process measured it)."""
    return {"from_step": int(from_step), "started_at": utc_now(),
            **{key: environment.get(key) for key in TIMING_SETTINGS}}


def timing_settings_mixed(record: dict) -> bool:
    """Whether the record's training time mixes settings: True when two of its ``segments``
    (one per start or resume, :func:`training_segment`) both know a :data:`TIMING_SETTINGS`
    value and differ in it, e.g. a run started at 1 thread and resumed at 2, or resumed on
    another machine instance.  Its accuracy is unaffected; its time belongs to no single
    setting, so timing tables leave it out.  An unknown value (a segment resumed from a
    checkpoint written before segments were recorded, or before ``machine_id`` was) and
    records without segments (written before they existed) count as not mixed: nothing says
    they are."""
    segments = record.get("segments") or []
    for key in TIMING_SETTINGS:
        if len({segment.get(key) for segment in segments if segment.get(key) is not None}) > 1:
            return True
    return False


def record_machine_id(record: dict) -> str | None:
    """The machine instance (:func:`machine_id`) a run's whole training time was measured on:
    the id every training segment recorded, or None when any segment did not record one
    (records and checkpoints written before the field existed) or when they differ."""
    segments = record.get("segments") or []
    ids = {segment.get("machine_id") for segment in segments}
    return ids.pop() if len(ids) == 1 else None


def _summary_row(record: dict) -> dict:
    config, final, env = record.get("config", {}), record.get("final") or {}, record.get("environment", {})
    history = record.get("history", [])
    source = record.get("data_source") or {}
    return {
        "run_id": record.get("run_id"),
        "status": record.get("status"),
        "table": record.get("table"),
        "dataset": config.get("dataset"),
        "arch": config.get("arch"),
        "norm": config.get("norm"),
        "epochs": config.get("epochs"),
        "seed": config.get("seed"),
        "amp": bool(config.get("amp", False)),  # bfloat16 autocast; absent: written before it existed
        "synthetic": bool(source.get("synthetic", config.get("synthetic", False))),
        "data_source": source.get("kind"),
        "test_acc": final.get("test_acc"),
        "test_top5": final.get("test_top5"),
        "test_loss": final.get("test_loss"),
        "train_acc": final.get("train_acc"),
        "train_loss": final.get("train_loss"),
        "train_time_s": sum(h.get("train_time_s", 0.0) for h in history) if history else None,
        "eval_time_s": sum(h.get("eval_time_s", 0.0) for h in history) if history else None,
        "images_per_s": final.get("images_per_s"),
        "peak_mem_mb": max((h.get("peak_mem_mb") or 0.0 for h in history), default=None) if history else None,
        "device_type": env.get("device_type"),
        "device_name": env.get("device_name"),
        "cpu_bf16_isa": env.get("cpu_bf16_isa"),  # absent: written before it existed
        "machine_type": machine_type(env.get("device_type"), env.get("device_name"), env.get("cpu_bf16_isa")),
        "machine_id": record_machine_id(record),
        "num_threads": env.get("num_threads"),
        "keep_freed_memory": bool(env.get("keep_freed_memory", False)),  # absent: written before it existed
        "timing_mixed": timing_settings_mixed(record),
        "torch_version": env.get("torch_version"),
        "git_commit": env.get("git_commit"),
        "git_dirty": env.get("git_dirty"),
        "started_at": record.get("started_at"),
        "finished_at": record.get("finished_at"),
        "epochs_done": len(history),
        "diverged_step": (record.get("divergence") or {}).get("step"),
        "error": record.get("error"),
        "label": record.get("label"),
        "note": config.get("note"),
        "path": record.get("_path"),
    }


def load_runs(root: str | Path | None = None) -> pd.DataFrame:
    """One row per run (columns :data:`RUN_COLUMNS`); final-epoch metrics, times summed over epochs.

    ``test_acc`` etc. come from the last completed epoch (for a diverged or interrupted run,
    the last epoch that finished).  Empty DataFrame with the same columns when there are no records.
    """
    rows = [_summary_row(record) for record in load_records(root)]
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def load_histories(root: str | Path | None = None) -> pd.DataFrame:
    """Per-epoch history of every run in long form (columns :data:`HISTORY_COLUMNS`)."""
    rows = []
    for record in load_records(root):
        for entry in record.get("history", []):
            rows.append({"run_id": record.get("run_id"), **{k: entry.get(k) for k in HISTORY_COLUMNS[1:]}})
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS)
