"""Content digests and the overlap check shared by evaluate, turing and segbench."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

import ratgan.digests as digests
from ratgan.digests import FileDigests, file_sha256, shared_files


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_file_sha256_matches_hashlib_on_a_file_larger_than_one_block(tmp_path: Path) -> None:
    data = bytes(range(256)) * 5000  # 1.28 MB: more than one 1 MiB block
    path = _write(tmp_path / "a.bin", data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()


def test_shared_files_finds_same_path_and_same_content_only(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.nii.gz", b"scan one")
    copy = _write(tmp_path / "renamed.nii.gz", b"scan one")
    same_size = _write(tmp_path / "other.nii.gz", b"scan two")  # equal length, other bytes
    link = tmp_path / "link.nii.gz"
    link.symlink_to(a)
    missing = tmp_path / "gone.nii.gz"
    pairs = shared_files([a], [copy, same_size, link, missing])
    assert pairs == [(a, copy), (a, link)]
    assert shared_files([same_size], [a, copy]) == []


def test_file_digests_reads_each_file_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = _write(tmp_path / "a", b"x" * 10)
    b = _write(tmp_path / "b", b"y" * 10)
    reads: list[Path] = []
    real = digests.file_sha256

    def counting(path: str | Path) -> str:
        reads.append(Path(path))
        return real(path)

    monkeypatch.setattr(digests, "file_sha256", counting)
    digest = FileDigests()
    shared_files([a], [b], digest)
    shared_files([b], [a], digest)
    assert digest(tmp_path / "." / "a") == hashlib.sha256(b"x" * 10).hexdigest()
    assert sorted(p.name for p in reads) == ["a", "b"]
