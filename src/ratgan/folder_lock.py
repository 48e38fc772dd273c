"""One writer per output folder: an advisory lock that a command holds while it writes.

Two ratgan processes writing one folder (``train --resume`` launched again while the run still
trains, two ``generate`` into one set) would silently mix their outputs.  Every command that
writes a folder holds :class:`FolderLock` on it: an exclusive, non-blocking ``fcntl.flock`` on
the hidden file ``FOLDER/.ratgan.lock``, into which the holder writes its pid, host, command
and start time; a second process is refused with a sentence naming the folder and the holder.

Why flock and not a lock-file library: ``filelock`` is in most environments only as a
dependency of torch (ratgan does not declare it), it does not record or report the holder, and
it gives no way to take a lock only once a folder exists; this module needs the standard
library only.

The kernel releases a flock when the process exits, however it ends (SIGKILL, a crash, the
machine's power aside: then nothing runs), so there are no stale locks to detect: a lock file
left by a killed process is simply locked again.  The holder removes the file when it lets go
(while still holding it; a process that opened the old file meanwhile notices that the path
names another file and tries again), so a finished command leaves its folder as it was.  Forked
children share the lock (and keep it while they live); ``exec``-ed ones do not inherit it.

A folder is locked as soon as it exists: at once when the command starts (before its checks
of what the folder holds), else by :meth:`FolderLock.create` when the command, its inputs
checked, creates it; a folder that another process created in between is refused, so no
command writes into a folder it has not checked.  Locks are re-entrant per process (a module
registry), because flock on a second descriptor of the same file conflicts with the first:
``ratgan demo`` holds its folder while the stages it runs lock theirs.  Where ``fcntl`` does
not exist (Windows) nothing is locked, and where the file system does not support flock (some
network file systems) a warning says so and the command goes on unlocked.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from types import TracebackType

from ratgan.errors import RatganError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, see the module docstring
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

LOCK_FILE = ".ratgan.lock"
"""The lock file's name inside a locked folder (hidden: no folder check counts it)."""

_held: dict[str, list[int]] = {}
"""Folders this process holds, by real path: [lock file descriptor, nesting depth]."""
_registry = threading.Lock()


class FolderLock:
    """Exclusive use of ``folder`` by this process for the ``with`` block (see the module).

    Entering locks the folder if it exists; :meth:`create` creates and locks it before the
    first write into a folder that did not exist then.  ``enabled=False`` (the other ranks of a
    torchrun training, which share rank 0's folder) locks nothing."""

    def __init__(self, folder: str | Path, command: str, enabled: bool = True) -> None:
        self.folder = Path(folder)
        self.command = command
        self.enabled = enabled and fcntl is not None
        self.created = False
        """Whether :meth:`create` made the folder (a failed command may then remove it)."""
        self._key: str | None = None

    def __enter__(self) -> FolderLock:
        if self.enabled and self.folder.is_dir():
            self._acquire()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

    def create(self) -> None:
        """Create the folder (and its parents) and lock it; nothing to do when held already.

        A folder that appeared since the command started (made by another process, which
        this command's checks did not see) is refused."""
        if self._key is not None:
            return
        try:
            self.folder.mkdir(parents=True)
            self.created = True
        except FileExistsError:
            if not self.folder.is_dir():
                raise RatganError(f"--out {self.folder} is a file, not a folder.") from None
            if self.enabled and not _is_held(self.folder):
                raise RatganError(
                    f"output folder {self.folder} was created by another process while this "
                    "command checked its inputs; run the command again to check it."
                ) from None
        except OSError as exc:
            raise RatganError(
                f"cannot create output folder {self.folder} ({exc.strerror or exc})."
            ) from None
        if self.enabled:
            self._acquire()

    def release(self) -> None:
        """Let go of the folder (the lock file is removed when the outermost holder lets go)."""
        key, self._key = self._key, None
        if key is None:
            return
        with _registry:
            entry = _held[key]
            entry[1] -= 1
            if entry[1] > 0:
                return
            del _held[key]
            path = Path(key) / LOCK_FILE
            if _names(path, entry[0]):  # not if a cleanup already removed the folder
                path.unlink(missing_ok=True)
            os.close(entry[0])

    def _acquire(self) -> None:
        key = os.path.realpath(self.folder)
        with _registry:
            if key in _held:
                _held[key][1] += 1
            else:
                fd = _lock(Path(key) / LOCK_FILE, self.folder, self.command)
                if fd is None:
                    return
                _held[key] = [fd, 1]
        self._key = key


def _is_held(folder: Path) -> bool:
    """Whether this process holds ``folder``'s lock."""
    with _registry:
        return os.path.realpath(folder) in _held


def _lock(path: Path, folder: Path, command: str) -> int | None:
    """Lock ``path`` (created if missing) and record the holder in it; its descriptor, or None
    where the file system cannot lock.  Refuses when another process holds it."""
    for _ in range(20):  # a holder letting go removes the file: lock the path's new file
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise RatganError(
                f"cannot lock output folder {folder} ({exc.strerror or exc}): ratgan writes "
                f"{LOCK_FILE} into it while it writes there."
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _holder(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                log.warning(
                    "%s cannot be locked against other ratgan processes (%s); going on "
                    "without the lock",
                    folder,
                    exc.strerror or exc,
                )
                return None
            raise RatganError(
                f"output folder {folder} is in use by another ratgan process ({holder}); wait "
                "for it to finish or stop it, then run this command again."
            ) from None
        if _names(path, fd):
            record = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "command": command,
                "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            }
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
            return fd
        os.close(fd)
    raise RatganError(f"output folder {folder} is in use by other ratgan processes; try again.")


def _names(path: Path, fd: int) -> bool:
    """Whether ``path`` still names the open file ``fd``."""
    try:
        st, fst = os.stat(path), os.fstat(fd)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (fst.st_dev, fst.st_ino)


def _holder(fd: int) -> str:
    """Who holds the lock, as its file records it (a holder may not have written it yet)."""
    try:
        record = json.loads(os.pread(fd, 4096, 0).decode())
        return (
            f"pid {record['pid']} on {record['host']}, `{record['command']}` "
            f"since {record['since']}"
        )
    except (OSError, ValueError, KeyError, TypeError):
        return "its pid not yet recorded"


def remove_if_empty(folder: Path) -> None:
    """Remove ``folder`` when it holds nothing but this process's lock file (a command that
    created it and failed before writing)."""
    if not folder.is_dir() or any(p.name != LOCK_FILE for p in folder.iterdir()):
        return
    (folder / LOCK_FILE).unlink(missing_ok=True)
    folder.rmdir()
