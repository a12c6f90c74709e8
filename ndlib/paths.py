"""Where the project's folders are, wherever the code runs from.

Notebooks are executed with their own folder as the working directory (nbval, papermill,
jupyter-book), so relative paths like ``results/runs`` would point to the wrong place.
:func:`project_root` finds the repository root instead: the first folder, walking up from the
current directory, that holds both ``pyproject.toml`` and ``ndlib/``; failing that, the folder
above the installed package (an editable install lives in the repository).
"""
from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def _is_root(folder: Path) -> bool:
    return (folder / "pyproject.toml").is_file() and (folder / "ndlib").is_dir()


def project_root(start: str | Path | None = None) -> Path:
    """The repository root: walk up from ``start`` (default: the current directory)."""
    here = Path(start if start is not None else Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if _is_root(folder):
            return folder
    return _PACKAGE_DIR.parent


def runs_dir() -> Path:
    """Default folder of the run records (committed): ``<root>/results/runs``."""
    return project_root() / "results" / "runs"


def data_dir() -> Path:
    """Default dataset folder (git-ignored): ``<root>/data``."""
    return project_root() / "data"


def checkpoints_dir() -> Path:
    """Default checkpoint folder (git-ignored): ``<root>/checkpoints``."""
    return project_root() / "checkpoints"
