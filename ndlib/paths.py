"""Where the project's folders are, wherever the code runs from.

Notebooks are executed with their own folder as the working directory (nbval, papermill,
jupyter-book), so relative paths like ``results/runs`` would point to the wrong place.
:func:`project_root` finds the repository root instead: the first folder, walking up from the
current directory, that holds both ``pyproject.toml`` and ``ndlib/``; failing that, the folder
above the installed package (an editable install lives in the repository).

Records are portable: :func:`portable_path` stores a path inside the project relative to its
root, and :func:`scrub_paths` replaces this machine's absolute paths in free text (an error, a
traceback, a note) by placeholders, so nothing committed names a machine's filesystem.
"""
from __future__ import annotations

import os
import re
import sys
import tempfile
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


# --------------------------------------------------------------------------------------
# Portable paths
# --------------------------------------------------------------------------------------
def portable_path(path: str | Path | None) -> str | None:
    """``path`` relative to the project root when it lies inside it (``data``), else
    :func:`scrub_paths` of it (``<tmp>/...``, ``<outside the project>/name``)."""
    if path is None:
        return None
    root = project_root()
    given = Path(path).expanduser()
    for candidate in (Path(os.path.abspath(given)), given.resolve()):  # a link inside the project stays inside
        try:
            return candidate.relative_to(root).as_posix() or "."
        except ValueError:
            continue
    resolved = given.resolve()
    scrubbed = _replace_known_prefixes(str(resolved))
    return scrubbed if scrubbed != str(resolved) else f"<outside the project>/{resolved.name}"


def _path_placeholders() -> list[tuple[str, str]]:
    """Absolute prefixes this machine has and what replaces them, longest first."""
    pairs = {str(project_root()): "<project>", tempfile.gettempdir(): "<tmp>", str(Path.home()): "~"}
    for prefix in {sys.prefix, sys.base_prefix, sys.exec_prefix}:
        pairs[prefix] = "<python>"
    pairs = {prefix: name for prefix, name in pairs.items() if prefix and prefix != "/"}
    return sorted(pairs.items(), key=lambda item: -len(item[0]))


def _replace_known_prefixes(text: str) -> str:
    for prefix, name in _path_placeholders():
        text = text.replace(prefix, name)
    return text


# Any other absolute path in free text (an error, a traceback, a note): "/" not preceded by a word
# character, ":" (URLs), "/", "~", ">" or "." (relative paths and placeholders), then at least two
# components; it keeps only its last component.
_OTHER_ABSOLUTE = re.compile(r"(?<![\w:/~>.])(/(?:[^\s/'\"<>:]+/)+)([^\s/'\"<>:,;)]*)")


def scrub_paths(value):
    """A copy of ``value`` (str, or dicts/lists of them) whose absolute paths of this machine
    are replaced: the project root by ``<project>``, the temporary folder by ``<tmp>``, the
    Python installation by ``<python>``, the home folder by ``~``, and any other absolute path
    by ``<path>/`` and its last component (``/scratch/alice/ck/last.pt`` -> ``<path>/last.pt``)."""
    if isinstance(value, str):
        return _OTHER_ABSOLUTE.sub(lambda match: f"<path>/{match.group(2)}", _replace_known_prefixes(value))
    if isinstance(value, dict):
        return {key: scrub_paths(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub_paths(item) for item in value]
    return value
