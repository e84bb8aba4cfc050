"""A run folder's lock: one process trains in a folder at a time.

The file ``run.lock`` names the process that holds the folder (PID, host, start time) and
carries an exclusive ``flock``. The kernel drops the ``flock`` when its process ends however
it ends (kill -9 included), so a lock left behind by a dead run is stale and simply taken
over; a live one is refused with the holder's PID. A ``run.lock`` that is a symbolic link is
refused, never written through. Where there is no ``flock`` (Windows), the file is written
but not enforced.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX
    fcntl = None

LOCK = "run.lock"


class RunFolderBusy(Exception):
    """Another live process trains in the run folder."""


def _holder(fd: int) -> str:
    """Who holds the lock, as the file tells it."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 4096) or b"{}")
        return f"PID {info['pid']} on {info['host']}, since {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not yet written its PID"


@contextlib.contextmanager
def held(run_dir):
    """Holds ``run_dir``'s lock for the ``with`` block; raises RunFolderBusy when a live
    process holds it, ValueError when ``run.lock`` is a symbolic link. The lock file is
    removed on the way out."""
    path = Path(run_dir) / LOCK
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as error:
            if error.errno in (errno.ELOOP, errno.EMLINK) and path.is_symlink():  # EMLINK: the BSDs' word for it
                raise ValueError(f"{path} is a symbolic link; gatedrnn writes no file through a link (it may point "
                                 "outside the folder): remove the link, then run again") from None  # fmt: skip
            raise
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise RunFolderBusy(f"{run_dir} is in use by another gatedrnn run ({holder}); wait for it to end, "
                                "or train into another --out") from None  # fmt: skip
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder removed the file as we opened it: lock the new one
    try:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode() + b"\n", 0)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # still holding the flock: no one else can have taken it
        os.close(fd)
