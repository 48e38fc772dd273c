"""Content digests of files: what a rerun, a cache or an overlap check compares, so that a
file renamed, moved or replaced under the same name is recognised by its bytes."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hex), read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class FileDigests:
    """A digest of files (:func:`file_sha256` unless ``hash_file`` is given) that reads each
    file (by resolved path) once per instance: one command that checks the same files in
    several places (a rerun's record, an overlap check, a label cache) reads each file once.
    Keep an instance for one command only, since a file changed on disk meanwhile keeps its
    first digest."""

    def __init__(self, hash_file: Callable[[Path], str] | None = None) -> None:
        self._hash_file = hash_file
        self._known: dict[Path, str] = {}

    def __call__(self, path: str | Path) -> str:
        key = Path(path).resolve()
        if key not in self._known:
            self._known[key] = (self._hash_file or file_sha256)(key)
        return self._known[key]


def shared_files(
    a: Iterable[str | Path],
    b: Iterable[str | Path],
    digest: Callable[[str | Path], str] | None = None,
    same_size_only: bool = True,
) -> list[tuple[Path, Path]]:
    """The pairs (file of ``a``, file of ``b``) that are the same file (resolved path) or two
    files of identical content by ``digest`` (default: their bytes' SHA-256).  With
    ``same_size_only`` only files of equal size are compared, right for a digest of the bytes;
    pass False for a digest of decoded content (the same image compressed another way).  Files
    of ``b`` that do not exist are skipped; every file of ``a`` must exist."""
    digest = digest or FileDigests()
    by_size: dict[int, list[Path]] = {}
    for q in map(Path, b):
        if q.is_file():
            by_size.setdefault(q.stat().st_size if same_size_only else 0, []).append(q)
    out = []
    for p in map(Path, a):
        for q in by_size.get(p.stat().st_size if same_size_only else 0, []):
            if p.resolve() == q.resolve() or digest(p) == digest(q):
                out.append((p, q))
    return out
