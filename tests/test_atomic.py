"""ratgan.atomic: content arrives whole, a failed write leaves the old file and no litter."""

import json

import pytest

from ratgan.atomic import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    leftovers,
)


def test_written_content_is_read_back(tmp_path):
    atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01rat")
    atomic_write_text(tmp_path / "b.txt", "Gehirn µ\n")
    atomic_write_json(tmp_path / "c.json", {"k": [1, 2.5, None]})
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01rat"
    assert (tmp_path / "b.txt").read_text(encoding="utf-8") == "Gehirn µ\n"
    assert json.loads((tmp_path / "c.json").read_text()) == {"k": [1, 2.5, None]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.txt", "c.json"]


def test_a_new_version_replaces_the_old_one(tmp_path):
    target = tmp_path / "f.txt"
    atomic_write_text(target, "old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"


def test_a_failing_writer_leaves_the_previous_file_and_no_temporary_file(tmp_path):
    target = tmp_path / "scan.nii.gz"
    target.write_bytes(b"previous complete file")
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target, ".nii.gz") as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".nii.gz") and tmp != target
        tmp.write_bytes(b"half of the new")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"previous complete file"
    assert [p.name for p in tmp_path.iterdir()] == ["scan.nii.gz"]


def test_a_value_json_cannot_hold_leaves_the_previous_file(tmp_path):
    target = tmp_path / "m.json"
    target.write_text("{}")
    with pytest.raises(TypeError):
        atomic_write_json(target, {"bad": object()})
    assert target.read_text() == "{}"
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_leftovers_lists_only_temporary_files_of_the_named_targets(tmp_path):
    (tmp_path / "ckpt_0000002.pt").write_bytes(b"done")
    killed = atomic_path(tmp_path / "ckpt_0000004.pt")
    tmp = killed.__enter__()  # a writer killed inside the block never reaches its exit
    tmp.write_bytes(b"partial")
    other = atomic_path(tmp_path / "notes.txt")
    other_tmp = other.__enter__()
    other_tmp.write_bytes(b"partial")
    assert leftovers(tmp_path, "ckpt_*.pt") == [tmp]
    assert sorted(leftovers(tmp_path)) == sorted([tmp, other_tmp])
    assert leftovers(tmp_path / "missing") == []
