"""Run claims: never two workers training one configuration.

A worker (``train``, a ``grid`` worker, a campaign lane) holds ``<runs_dir>/.claims/<run_id>.claim``
for as long as it trains that run.  The claim is an exclusive ``fcntl.flock`` on the file, not
the file's existence, so:

* taking it is atomic: of two workers that open the same file, the kernel gives the lock to one;
* a dead worker's claim frees itself: the kernel drops a process's locks when it exits, however it
  exits (SIGKILL, a crash, a reboot), so no pid has to be judged alive or dead;
* after taking the lock the worker checks that the file it locked is still the one at the path
  (same inode): a worker that released and unlinked the claim meanwhile cannot hand a second
  worker a lock on a deleted file while a third one locks a new file;
* only the holder removes the file, while still holding the lock.

The claims live beside the records they protect (``<runs_dir>/.claims``), so two checkouts that
share one runs folder share the claims too.  The file's text says who holds it (host, pid, lane,
when), for people; nothing reads it to decide.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
from pathlib import Path
from typing import Iterator

from ndlib.paths import runs_dir as default_runs_dir

__all__ = ["ClaimTaken", "claim", "claims_folder", "holder"]


class ClaimTaken(RuntimeError):
    """Another live worker holds the claim."""


def claims_folder(runs_dir: str | Path | None = None) -> Path:
    """Where the claims of the runs in ``runs_dir`` live: ``<runs_dir>/.claims``."""
    return Path(runs_dir if runs_dir is not None else default_runs_dir()) / ".claims"


def holder(run_id: str, folder: str | Path) -> dict | None:
    """Who holds ``run_id``'s claim (the file's text), or None when nobody does."""
    path = Path(folder) / f"{run_id}.claim"
    try:
        handle = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    with os.fdopen(handle) as stream:
        try:
            fcntl.flock(stream.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            try:
                return json.loads(stream.read() or "{}")
            except json.JSONDecodeError:
                return {}
        return None  # nobody holds the lock: a leftover file


@contextlib.contextmanager
def claim(run_id: str, folder: str | Path, **about) -> Iterator[Path]:
    """Hold ``<folder>/<run_id>.claim`` while the block runs; :class:`ClaimTaken` if a live worker does.

    ``about`` (e.g. ``lane=1``) is written into the file beside the host, pid and time."""
    from ndlib.records import utc_now

    folder = Path(folder)
    path = folder / f"{run_id}.claim"
    while True:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            handle = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        except (FileNotFoundError, FileExistsError):
            # another worker removed the emptied folder between our mkdir and open, or created it and
            # removed it again within our mkdir (pathlib then raises FileExistsError): try again
            continue
        except OSError as error:
            from ndlib.records import RecordWriteError

            raise RecordWriteError(f"cannot write the claim {path} ({error.strerror or error}); make the runs "
                                   "folder writable or pass another --runs-dir") from error
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(handle)
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            owner = holder(run_id, folder)
            raise ClaimTaken(f"{run_id} is claimed by {owner or 'another worker'} ({path})") from None
        try:
            same = os.fstat(handle).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(handle)  # the file was released and removed between our open and our lock: try again
    try:
        text = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "claimed_at": utc_now(), **about})
        os.ftruncate(handle, 0)
        os.pwrite(handle, text.encode(), 0)
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # still holding the lock: nobody else can have taken this file
        os.close(handle)
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty: leave no trace in the runs folder
