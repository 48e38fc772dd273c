"""File-level helpers of the labellers and the benchmark: content digests of scans and label
maps (what a rerun compares with what it was made from), and the check that scans whose label
maps are written by file name do not share one."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from ratgan.digests import file_sha256
from ratgan.errors import RatganError


def entry_digests(
    entries: Iterable, digest: Callable[[str | Path], str] = file_sha256
) -> dict[str, str]:
    """One digest per scan entry (``.image``, ``.label`` or None) of the scan's and its label
    map's bytes (each file's from ``digest``), keyed by the scan's resolved path."""
    out = {}
    for e in entries:
        parts = [digest(e.image), digest(e.label) if e.label is not None else ""]
        out[str(Path(e.image).resolve())] = hashlib.sha256(":".join(parts).encode()).hexdigest()
    return out


def describe_changes(old: dict[str, str], new: dict[str, str], shown: int = 3) -> str:
    """What differs between two :func:`entry_digests` records, by file name, e.g. ``2 added
    (a.nii.gz, b.nii.gz), 1 changed (c.nii.gz)``; empty when they agree."""

    def names(keys: list[str]) -> str:
        listed = ", ".join(Path(k).name for k in keys[:shown])
        return listed + (f" and {len(keys) - shown} more" if len(keys) > shown else "")

    groups = (
        ("added", sorted(set(new) - set(old))),
        ("removed", sorted(set(old) - set(new))),
        ("changed", sorted(k for k in set(old) & set(new) if old[k] != new[k])),
    )
    return ", ".join(f"{len(keys)} {what} ({names(keys)})" for what, keys in groups if keys)


def check_unique_names(
    paths: Sequence[str | Path],
    what: str = "scans to label",
    why: str = "label maps are written by file name, so one would overwrite the other",
) -> None:
    """Raise RatganError when two of ``paths`` (``what``) share a file name, saying ``why``
    that matters (default: their label maps are written by file name)."""
    seen: dict[str, Path] = {}
    for p in map(Path, paths):
        if p.name in seen:
            raise RatganError(
                f"two {what} share the file name {p.name} ({seen[p.name]} and {p}); {why}, "
                "so rename one of them."
            )
        seen[p.name] = p
