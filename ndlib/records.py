"""Run records: one JSON file per run in ``results/runs/<run_id>.json``, and loaders for the book.

A record is written atomically (a temporary file in the same folder, flushed and fsync'ed,
then ``os.replace``), so a reader sees either the previous complete version or the new one,
never half a file.  The trainer writes it at the start (status ``running``), after every
epoch, and at the end (``completed``, ``diverged``, ``interrupted`` or ``failed``).  A
``running`` record whose process was killed stays ``running``: it is never counted as done.

All accuracies are in percent.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import platform
import socket
import subprocess
import tempfile
from pathlib import Path

import pandas as pd

from ndlib.paths import project_root, runs_dir

__all__ = [
    "STATUSES",
    "RUN_COLUMNS",
    "HISTORY_COLUMNS",
    "write_json_atomic",
    "read_record",
    "record_path",
    "environment_info",
    "utc_now",
    "load_records",
    "load_runs",
    "load_histories",
]

STATUSES = ("running", "completed", "diverged", "interrupted", "failed")

RUN_COLUMNS = [
    "run_id", "status", "table", "dataset", "arch", "norm", "epochs", "seed", "synthetic", "data_source",
    "test_acc", "test_top5", "train_acc", "train_loss", "train_time_s", "eval_time_s", "images_per_s",
    "peak_mem_mb", "device_type", "device_name", "num_threads", "torch_version", "git_commit", "git_dirty",
    "started_at", "finished_at", "epochs_done", "diverged_step", "error", "label", "note", "path",
]

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


def write_json_atomic(path: str | Path, payload: dict) -> Path:
    """Write ``payload`` as JSON to ``path`` so that readers never see a partial file.

    The text goes to a temporary file in the same folder, is flushed and fsync'ed, and then
    ``os.replace`` swaps it in (atomic on POSIX within one file system).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_json_safe(payload), indent=2, sort_keys=False, allow_nan=False) + "\n"
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return path


def record_path(run_id: str, root: str | Path | None = None) -> Path:
    return Path(root if root is not None else runs_dir()) / f"{run_id}.json"


def read_record(path: str | Path) -> dict:
    """Read one record; a ValueError names the file if it is not valid JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"run record {path} is not valid JSON ({error}); delete it or rerun that configuration") from error


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


def environment_info(device) -> dict:
    """Versions, git state and hardware, for the record (what produced these numbers)."""
    import torch
    import torchvision

    import ndlib

    device = torch.device(device)
    # Dirty = modified tracked files anywhere, or untracked files inside the package.
    status = _git("status", "--porcelain", "--untracked-files=no")
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
        "cpu_count": os.cpu_count(),
        "num_threads": torch.get_num_threads(),
        "hostname": socket.gethostname(),
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
        "synthetic": bool(source.get("synthetic", config.get("synthetic", False))),
        "data_source": source.get("kind"),
        "test_acc": final.get("test_acc"),
        "test_top5": final.get("test_top5"),
        "train_acc": final.get("train_acc"),
        "train_loss": final.get("train_loss"),
        "train_time_s": sum(h.get("train_time_s", 0.0) for h in history) if history else None,
        "eval_time_s": sum(h.get("eval_time_s", 0.0) for h in history) if history else None,
        "images_per_s": final.get("images_per_s"),
        "peak_mem_mb": max((h.get("peak_mem_mb") or 0.0 for h in history), default=None) if history else None,
        "device_type": env.get("device_type"),
        "device_name": env.get("device_name"),
        "num_threads": env.get("num_threads"),
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
