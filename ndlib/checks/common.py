"""What the checks share: one-line errors, strict JSON files, the description of the environment,
and a stand-in ``torchvision`` where none is installed.

The JSON writing and the environment come from :mod:`ndlib.records` (the run records' own
writer and description), imported on use: ``ndlib.records`` needs pandas, which a GPU machine's
own Python may lack, and the layer and model checks must run there all the same.  Without it the
JSON goes through a temporary file renamed over the target (not fsync'ed) and the environment has
only the keys this module adds.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import importlib.metadata
import json
import math
import os
import platform
import sys
import types
from pathlib import Path
from typing import Iterator

import torch

from ndlib.paths import scrub_paths

__all__ = ["one_line", "jsonable", "write_json", "utc_now", "module_version", "torchvision_placeholder",
           "environment"]


def _records():
    """:mod:`ndlib.records`, or None where it cannot be imported (pandas missing)."""
    try:
        from ndlib import records
    except ImportError:
        return None
    return records


def one_line(error: BaseException) -> str:
    """``"TypeName: first line of the message"``."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".strip()


def jsonable(value):
    """Non-finite floats as strings (JSON has no NaN / Infinity), tuples as lists, keys, paths and
    any other object that JSON cannot hold as text, the rest as is."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float)):
        return value
    return str(value)


def write_json(path: str | Path, payload: dict) -> Path:
    """Write ``payload`` (through :func:`jsonable`) as strict JSON, atomically: with
    :func:`ndlib.records.write_json_atomic` (a temporary file, fsync'ed, renamed over ``path``).
    This machine's absolute paths (in tracebacks, output folders) become placeholders
    (:func:`ndlib.paths.scrub_paths`), as in run records: the files are meant to be committed."""
    payload = scrub_paths(jsonable(payload))
    records = _records()
    if records is not None:
        return records.write_json_atomic(path, payload)
    path = Path(path)  # no pandas here: a temporary file renamed over the target, still atomic
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
    temp.replace(path)
    return path


def utc_now() -> str:
    """:func:`ndlib.records.utc_now` (ISO 8601 with seconds), also where records cannot be imported."""
    records = _records()
    if records is not None:
        return records.utc_now()
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def module_version(name: str) -> str | None:
    """The installed version of distribution ``name`` (from its metadata, without importing it),
    or None where it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


@contextlib.contextmanager
def torchvision_placeholder() -> Iterator[bool]:
    """A stand-in ``torchvision`` module (``__version__ = "not installed"``) while the block runs,
    when the real one cannot be imported; yields whether the stand-in is in place."""
    if module_version("torchvision") is not None:
        yield False
        return
    placeholder = types.ModuleType("torchvision")
    placeholder.__version__ = "not installed"
    previous = sys.modules.get("torchvision")
    sys.modules["torchvision"] = placeholder
    try:
        yield True
    finally:
        if previous is None:
            sys.modules.pop("torchvision", None)
        else:
            sys.modules["torchvision"] = previous


def environment(device: str | torch.device) -> dict:
    """What ran: :func:`ndlib.records.environment_info` (versions, git commit and state, hardware;
    it imports torchvision, so call this under :func:`torchvision_placeholder`), the short keys the
    summary reads (``python``, ``torch``, ``cuda``, ``cudnn``, ``device``, ``torchvision``, ...) and,
    on a GPU, its name, compute capability and memory.  Without pandas only the short keys and the
    GPU's, with ``git_commit`` None and ``records_environment`` saying why."""
    device = torch.device(device)
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device": str(device),
        "device_name": platform.processor() or platform.machine(),
        "git_commit": None,
        "torchvision": module_version("torchvision") or "not installed",
        "numpy": module_version("numpy") or "not installed",
        "pandas": module_version("pandas") or "not installed",
        "cpu_count": os.cpu_count(),
    }
    records = _records()
    if records is None:
        info["records_environment"] = "unavailable: ndlib.records cannot be imported (pandas missing?)"
    else:
        try:
            info.update(records.environment_info(device))
        except Exception as error:  # noqa: BLE001 - describing the machine must not stop the check
            info["records_environment"] = f"unavailable: {one_line(error)}"
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(device_name=props.name, compute_capability=f"{props.major}.{props.minor}",
                    device_memory_gib=round(props.total_memory / 2**30, 1), gpu_count=torch.cuda.device_count())
    return info
