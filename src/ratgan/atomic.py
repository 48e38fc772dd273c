"""Atomic file writes: a file is either its previous complete version or the new complete one.

Every writer of the package goes through here.  The new content is written to a hidden
temporary file in the destination's folder (same file system, so the rename is atomic),
flushed to disk with fsync, then renamed over the destination with ``os.replace``; on any
exception the temporary file is removed and the previous file is left untouched.  The
temporary name is ``.NAME.<12 hex>.tmp[SUFFIX]``: unique, so concurrent writers never share
one, and recognisable, so that the owner of a folder can remove leftovers of a killed process
(:func:`leftovers`).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for a writer that needs a path (nibabel,
    torch.save, savefig, sqlite); when the block ends without error the file is fsync'ed and
    renamed to ``path``.  ``suffix`` ends the temporary name (e.g. ``.nii.gz`` for nibabel).

    The folder of ``path`` must exist.  The temporary file is created by the writer, so it
    gets the usual permissions (``tempfile.mkstemp`` would make it private).
    """
    path = Path(path)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp{suffix}"
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp, open(tmp, "xb") as handle:
        handle.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically and return the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(
    path: str | Path, data: Any, indent: int | None = 2, ensure_ascii: bool = True
) -> Path:
    """Write ``data`` as JSON to ``path`` atomically and return the path."""
    return atomic_write_text(path, json.dumps(data, indent=indent, ensure_ascii=ensure_ascii))


def leftovers(folder: str | Path, name_pattern: str = "*") -> list[Path]:
    """Temporary files that killed writers left in ``folder`` for destinations matching the
    glob ``name_pattern``.  Only the owner of the folder may delete them: a live writer's
    temporary file looks the same."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(folder.glob(f".{name_pattern}.*.tmp*"))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: str | Path) -> None:
    """Make the renames done in ``folder`` durable (where the platform can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder
        pass
    finally:
        os.close(fd)
