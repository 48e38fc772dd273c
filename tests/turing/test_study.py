"""Study creation and the answer store: draws, blinding identifiers, final answers."""

import contextlib
import dataclasses
import errno
import os
import re
import sqlite3
import stat
import threading
from pathlib import Path

import numpy as np
import pytest

from ratgan.data.io import write_nifti
from ratgan.errors import RatganError
from ratgan.turing.study import Study, create_study


def test_study_draws_and_orders(small_study, tmp_path):
    records = small_study.records()
    by_rater = {}
    for r in records:
        by_rater.setdefault(r.rater, []).append(r)
    assert set(by_rater) == {"alice", "bob"}
    scans = {r.scan_id: r.source for r in records}
    assert sorted(scans.values()) == ["m1", "m1", "m2", "m2", "real", "real", "real"]
    for items in by_rater.values():
        assert [r.position for r in items] == list(range(1, 8))
        assert sorted(r.scan_id for r in items) == sorted(scans)
        assert all(r.answer is None for r in items)
    assert [r.scan_id for r in by_rater["alice"]] != [r.scan_id for r in by_rater["bob"]]

    with sqlite3.connect(small_study.path) as conn:
        public = [row[0] for row in conn.execute("SELECT public_id FROM item")]
        tokens = [row[0] for row in conn.execute("SELECT token FROM rater")]
    assert len(set(public)) == 14 and all(re.fullmatch(r"[0-9a-f]{32}", p) for p in public)
    assert len(set(tokens + [small_study.meta["admin_token"]])) == 3
    assert small_study.layout == {"n_slices": 8, "tile_width": 16, "tile_height": 16, "columns": 3}
    links = (small_study.path.parent / "links.txt").read_text()
    assert all(t in links for t in tokens) and small_study.meta["admin_token"] in links


def _orders(study):
    """Each rater's sequence of scan files, and the order of the scan rows."""
    by_rater = {}
    for r in study.records():
        by_rater.setdefault(r.rater, []).append(r.path)
    with sqlite3.connect(study.path) as conn:
        rows = [row[0] for row in conn.execute("SELECT path FROM scan ORDER BY id")]
    return by_rater, rows


def test_identical_arguments_draw_the_same_scans_in_unpredictable_orders(
    small_study, small_study_args, tmp_path
):
    # The seed chooses the scans; the orders come from the OS's secure source, so knowing the
    # seed, the folders and one's own rater number does not give the answer key away.
    again = Study(create_study(tmp_path / "again", **small_study_args)[0])
    (first, rows1), (second, rows2) = _orders(small_study), _orders(again)
    assert sorted(rows1) == sorted(rows2)  # the same 7 scans (3 of the 4 real ones)
    # 7 scans: identical orders for both raters by chance has probability 1 / 5040**2.
    assert first != second
    assert again.meta["admin_token"] != small_study.meta["admin_token"]


def test_study_and_links_files_are_owner_only_from_their_first_byte(
    small_study_args, tmp_path, monkeypatch
):
    from ratgan.turing import study as study_module

    modes = {}
    real_replace = os.replace

    def watching(src, dst):
        modes[Path(dst).name] = stat.S_IMODE(os.stat(src).st_mode)  # before the final name
        return real_replace(src, dst)

    old_umask = os.umask(0)  # a permissive umask must not matter
    try:
        monkeypatch.setattr(study_module.os, "replace", watching)
        create_study(tmp_path / "s", **small_study_args)
    finally:
        os.umask(old_umask)
    assert modes == {"links.txt": 0o600, "study.sqlite": 0o600}
    for name in ("links.txt", "study.sqlite"):
        assert stat.S_IMODE((tmp_path / "s" / name).stat().st_mode) == 0o600
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["links.txt", "study.sqlite"]


def test_a_create_that_cannot_write_leaves_nothing_behind(small_study_args, tmp_path, monkeypatch):
    from ratgan.turing import study as study_module

    real_fsync = os.fsync

    def full_disk(fd):  # the links file is written; the study file hits a full disk
        if os.readlink(f"/proc/self/fd/{fd}").split("/")[-1].startswith(".study.sqlite."):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(study_module.os, "fsync", full_disk)
    with pytest.raises(RatganError, match=r"cannot write the study .*\(No space left on device\)"):
        create_study(tmp_path / "s", **small_study_args)
    assert not (tmp_path / "s").exists()
    (tmp_path / "kept").mkdir()
    with pytest.raises(RatganError, match="nothing was left behind"):
        create_study(tmp_path / "kept", **small_study_args)
    assert list((tmp_path / "kept").iterdir()) == []


def test_the_python_3_10_database_copy_makes_the_same_study(
    small_study, small_study_args, tmp_path, monkeypatch
):
    # Python 3.10 has no sqlite3.Connection.serialize; its backup-based copy must build a
    # study with the same tables and rows (tokens, orders and identifiers are drawn anew).
    from ratgan.turing import study as study_module

    monkeypatch.setattr(study_module, "_database_bytes", study_module._database_bytes_by_backup)
    path, _ = create_study(tmp_path / "copy", **small_study_args)
    copy = Study(path)
    assert sorted(p.name for p in (tmp_path / "copy").iterdir()) == ["links.txt", "study.sqlite"]
    assert {k: v for k, v in copy.meta.items() if k not in ("admin_token", "created_at")} == {
        k: v for k, v in small_study.meta.items() if k not in ("admin_token", "created_at")
    }
    assert [r.name for r in copy.raters()] == ["alice", "bob"]

    def content(study):
        return sorted((r.rater, r.source, r.path, r.answer) for r in study.records())

    assert content(copy) == content(small_study) and len(content(copy)) == 14


def test_scans_are_shown_in_one_canonical_orientation(tmp_path, scan_writer):
    # The same image stored as RAS and as LAS (x axis flipped in the voxels and the affine)
    # is the same anatomy; both must render to the same picture, not one mirrored.
    (ras,) = scan_writer(tmp_path / "real", 1, seed=1)
    from ratgan.data.io import canonical_scan, read_scan

    scan = read_scan(ras)
    assert not np.array_equal(scan.data, scan.data[::-1])
    las = np.diag([-0.375, 0.375, 0.5, 1.0])
    las[0, 3] = 0.375 * (scan.shape[0] - 1)  # the same world position of every voxel
    write_nifti(tmp_path / "syn" / "a.nii.gz", scan.data[::-1].copy(), las)
    # (create_study refuses these two as one scan in two sources: test_hostile.py; the
    # renderer it calls is checked on them directly)
    from ratgan.turing.study import _render_scans

    rendered, _, warnings = _render_scans([("real", ras), ("m", tmp_path / "syn" / "a.nii.gz")])
    assert len(warnings) == 1 and "1 LAS, 1 RAS" in warnings[0]
    pngs = {source: png for source, _, png in rendered}
    assert pngs["real"] == pngs["m"]
    # An affine without an orientation (a zero column: NIfTI writers refuse it, hand-made
    # headers may hold it) is refused with the file's name.
    scan.affine = np.diag([0.375, 0.0, 0.5, 1.0])
    with pytest.raises(RatganError, match=r"a\.nii\.gz cannot be reoriented.*singular"):
        canonical_scan(dataclasses.replace(scan, path=Path("a.nii.gz")))


def test_a_four_d_scan_shown_as_its_mean_is_warned_about(tmp_path, scan_writer):
    # A 4-D file is shown as the mean of its volumes (less noisy than one volume): the user is
    # told, naming the file, since that alone can tell a real scan from a generated one.
    (three_d,) = scan_writer(tmp_path / "real", 1, seed=1)
    from ratgan.data.io import read_scan
    from ratgan.turing.study import _render_scans

    scan = read_scan(three_d)
    rng = np.random.default_rng(0)
    four_d = np.stack([scan.data + rng.normal(0, 0.1, scan.shape) for _ in range(3)], axis=-1)
    write_nifti(tmp_path / "syn" / "b.nii.gz", four_d.astype(np.float32), scan.affine)
    _, _, warnings = _render_scans([("real", three_d), ("m", tmp_path / "syn" / "b.nii.gz")])
    assert len(warnings) == 1 and "b.nii.gz, 3 volumes" in warnings[0], warnings
    _, _, warnings = _render_scans([("real", three_d)])
    assert warnings == []


def test_create_refuses_bad_requests(tmp_path, scan_writer):
    scan_writer(tmp_path / "real", 2, seed=1)
    scan_writer(tmp_path / "syn", 2, seed=2)
    scan_writer(tmp_path / "big", 1, seed=3, shape=(16, 16, 10))
    ok = {
        "real": tmp_path / "real",
        "synthetic": [("m", tmp_path / "syn")],
        "n_real": 1,
        "n_per_model": 1,
        "raters": 1,
    }
    with pytest.raises(RatganError, match="--n-real asks for 3 scans"):
        create_study(tmp_path / "s1", **{**ok, "n_real": 3})
    with pytest.raises(RatganError, match="shape"):
        create_study(tmp_path / "s2", **{**ok, "synthetic": [("m", tmp_path / "big")]})
    with pytest.raises(RatganError, match="model name"):
        create_study(tmp_path / "s3", **{**ok, "synthetic": [("real", tmp_path / "syn")]})
    # names that would repeat a Table 3 row or column, or the organiser's link line
    for model in ("Answered", "expertise"):
        with pytest.raises(RatganError, match="reserved"):
            create_study(tmp_path / "s3", **{**ok, "synthetic": [(model, tmp_path / "syn")]})
    for rater in ("All raters", "admin "):
        with pytest.raises(RatganError, match="reserved"):
            create_study(tmp_path / "s3", **{**ok, "raters": ["alice", rater]})
    with pytest.raises(RatganError, match="overlap"):
        create_study(
            tmp_path / "s4",
            **{**ok, "synthetic": [("m", tmp_path / "real")], "n_real": 2, "n_per_model": 2},
        )
    # the rating page loads everything from the site root: a base URL with a path would
    # print links that all fail, so it is refused before anything is written
    for bad in ("http://host/turing", "http://host:80/?a=1", "host:8765", "ftp://host"):
        with pytest.raises(RatganError, match="--base-url"):
            create_study(tmp_path / "s6", **{**ok, "base_url": bad})
    assert not (tmp_path / "s6").exists()
    path, _ = create_study(tmp_path / "s5", **{**ok, "base_url": "https://host:8000/"})
    assert Study(path).links()[0].startswith("https://host:8000/admin/")
    with pytest.raises(RatganError, match="--base-url"):
        Study(path).links("http://proxy/turing")
    with pytest.raises(RatganError, match="already exists"):
        create_study(tmp_path / "s5", **ok)
    with pytest.raises(RatganError, match="not a Turing test study"):
        Study(tmp_path / "nothing.sqlite")


def _answers(study):
    with sqlite3.connect(study.path) as conn:
        return conn.execute(
            "SELECT item_id, answer, answered_at FROM answer ORDER BY item_id"
        ).fetchall()


def test_answers_are_final_and_in_order(small_study):
    alice, bob = small_study.raters()
    first = small_study.state(alice)["item"]["id"]
    with sqlite3.connect(small_study.path) as conn:
        later = conn.execute(
            "SELECT public_id FROM item WHERE rater_id = ? AND position = 2", (alice.id,)
        ).fetchone()[0]
    assert small_study.submit(alice, later, "real").status == "not_current"
    assert small_study.submit(bob, first, "real").status == "unknown"  # alice's item, bob's token
    assert small_study.image(bob, first) is None and small_study.image(alice, later) is None
    assert small_study.image(alice, first)[:4] == b"\x89PNG"

    assert small_study.submit(alice, first, "synthetic").saved
    stored = _answers(small_study)
    assert small_study.submit(alice, first, "real").status == "already_answered"
    assert small_study.submit(alice, first, "real").same_answer is False
    assert small_study.submit(alice, first, "synthetic").same_answer is True  # a resent answer
    assert _answers(small_study) == stored and len(stored) == 1
    assert small_study.image(alice, first) is None  # an answered scan is not shown again
    state = small_study.state(alice)
    assert state["done"] == 1 and state["item"]["id"] == later

    with sqlite3.connect(small_study.path) as conn:
        for statement in ("UPDATE answer SET answer = 'real'", "DELETE FROM answer"):
            with pytest.raises(sqlite3.IntegrityError, match="answers are final"):
                conn.execute(statement)
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("INSERT INTO answer VALUES (?, 'real', 'now', NULL)", (stored[0][0],))
    assert _answers(small_study) == stored


def test_simultaneous_submissions_store_exactly_one_answer(small_study):
    alice = small_study.raters()[0]
    item = small_study.state(alice)["item"]["id"]
    results, barrier = [], threading.Barrier(6)

    def submit(answer):
        barrier.wait()
        results.append(small_study.submit(alice, item, answer).status)

    threads = [threading.Thread(target=submit, args=(a,)) for a in ["real", "synthetic"] * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["already_answered"] * 5 + ["saved"]
    assert len(_answers(small_study)) == 1


def _public_id(study, rater, position):
    with sqlite3.connect(study.path) as conn:
        return conn.execute(
            "SELECT public_id FROM item WHERE rater_id = ? AND position = ?", (rater.id, position)
        ).fetchone()[0]


def test_progress_and_current_scan_agree_when_another_tab_answers_meanwhile(
    small_study, monkeypatch
):
    """A rater with the study open in two tabs: tab B's answer may be saved (by another server
    thread) while tab A's /state is being read. The state must still be one moment's: the scan
    it names is the first unanswered one of the answers it counts, so the page's "scan done+1
    of total" is the scan on screen and the progress bar counts each answer once.

    The other tab's answer is made to land between any two database statements of the read."""
    alice = small_study.raters()[0]
    other_tab = Study(small_study.path)
    connect = small_study.connect
    landed = []

    class Connection:
        """A connection on which the other tab answers once, before the second statement."""

        def __init__(self, conn):
            self.conn, self.statements = conn, 0

        def execute(self, *args):
            self.statements += 1
            if self.statements == 2 and not landed:
                landed.append(other_tab.submit(alice, _public_id(small_study, alice, 1), "real"))
            return self.conn.execute(*args)

    @contextlib.contextmanager
    def interleaved():
        with connect() as conn:
            yield Connection(conn)

    monkeypatch.setattr(small_study, "connect", interleaved)
    state = small_study.state(alice)
    monkeypatch.undo()
    if not landed:  # a read of one statement: the answer lands after it
        landed.append(other_tab.submit(alice, _public_id(small_study, alice, 1), "real"))
    assert landed[0].saved
    assert state["item"]["id"] == _public_id(small_study, alice, state["done"] + 1)
    assert small_study.state(alice)["done"] == 1  # the other tab's answer, counted once
    assert small_study.submit(alice, _public_id(small_study, alice, 1), "real").status == (
        "already_answered"
    )
    assert small_study.state(alice)["done"] == 1


def test_rater_tokens_are_compared_in_constant_time(small_study, monkeypatch):
    """A token compared by SQL's = (or a dict) stops at its first wrong byte, so response
    times could let a client find a token byte by byte. Every rater's token must be compared
    with hmac.compare_digest, whether the given token matches one, nearly matches or not."""
    import hmac

    alice, bob = small_study.raters()
    compared, original = [], hmac.compare_digest

    def compare_digest(a, b):
        compared.append({bytes(a), bytes(b)})
        return original(a, b)

    monkeypatch.setattr("ratgan.turing.study.hmac.compare_digest", compare_digest)
    tokens = {r.token.encode() for r in (alice, bob)}
    for given, owner in (
        (bob.token, bob),
        (alice.token, alice),
        (alice.token[:-1] + ("A" if alice.token[-1] != "A" else "B"), None),
        (alice.token[:-1], None),
        (alice.token + "x", None),
        ("x" * 32, None),
        ("", None),
        ("é" * 32, None),
    ):
        compared.clear()
        assert small_study.rater_by_token(given) == owner, given
        # every rater's token against the given one, none skipped after a match
        assert sorted(compared, key=sorted) == sorted(
            ({given.encode(), t} for t in tokens), key=sorted
        ), given


def test_finished_rater(small_study):
    bob = small_study.raters()[1]
    for _ in range(7):
        assert small_study.submit(bob, small_study.state(bob)["item"]["id"], "real").saved
    state = small_study.state(bob)
    assert state == {"rater": "bob", "total": 7, "done": 7, "finished": True, "item": None}


def test_create_refuses_an_unfinished_generation_folder(tmp_path, scan_writer):
    """A folder an interrupted `ratgan generate` left (manifest.json not complete) holds part
    of a set; before, its scans were drawn as if the set were finished."""
    scan_writer(tmp_path / "real", 2, seed=1)
    scan_writer(tmp_path / "gen", 2, seed=2)
    (tmp_path / "gen" / "manifest.json").write_text('{"complete": false, "n": 100}')
    args = {"real": tmp_path / "real", "n_real": 1, "n_per_model": 1, "raters": 1}
    with pytest.raises(
        RatganError, match=r"model 'm': folder .*gen holds an unfinished.*rerun `ratgan generate`"
    ):
        create_study(tmp_path / "s", synthetic=[("m", tmp_path / "gen")], **args)
    assert not (tmp_path / "s").exists()
    (tmp_path / "gen" / "manifest.json").write_text('{"complete": true, "n": 2}')
    create_study(tmp_path / "s", synthetic=[("m", tmp_path / "gen")], **args)


def test_create_refuses_scans_of_another_voxel_size(tmp_path, scan_writer):
    """The same anatomy at another voxel size looks larger or smaller: refused, naming the
    first such file, whether or not the seed would draw it (RAS order, within 5 %)."""
    scan_writer(tmp_path / "real", 2, seed=1)
    scan_writer(tmp_path / "syn", 2, seed=2)
    data = np.random.default_rng(0).random((16, 16, 8)).astype(np.float32)
    write_nifti(tmp_path / "syn" / "z.nii.gz", data, np.diag([0.75, 0.75, 1.0, 1.0]))
    args = {"real": tmp_path / "real", "n_real": 1, "n_per_model": 1, "raters": 1}
    with pytest.raises(
        RatganError,
        match=r"model 'm' scan .*z\.nii\.gz has voxel size 0\.75 x 0\.75 x 1 but the real "
        r"scans have 0\.375 x 0\.375 x 0\.5",
    ):
        create_study(tmp_path / "s", synthetic=[("m", tmp_path / "syn")], **args)
    # an LAS scan of the same voxel size, and 2 % off, are fine
    las = np.diag([-0.375, 0.375, 0.51, 1.0])
    (tmp_path / "syn" / "z.nii.gz").unlink()
    write_nifti(tmp_path / "syn" / "z.nii.gz", data, las)
    create_study(tmp_path / "s", synthetic=[("m", tmp_path / "syn")], **args)


def test_a_journal_left_by_a_previous_study_is_refused_not_replayed(small_study, small_study_args):
    # A server killed during a write leaves study.sqlite-journal, which SQLite replays into
    # whatever database next bears the name. If that study file was removed (or moved away)
    # and a new study created in its place, the old pages were written over the new study's
    # scan table: the answer key no longer matched the items (known answer: the fresh study's
    # own scan rows), silently.
    folder = small_study.path.parent
    journal = folder / "study.sqlite-journal"
    conn = sqlite3.connect(small_study.path, isolation_level=None)
    try:
        conn.execute("PRAGMA cache_size = 2")  # spill pages: the journal becomes hot
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE scan SET png = zeroblob(length(png))")
        hot = journal.read_bytes()
        conn.execute("ROLLBACK")
    finally:
        conn.close()
    small_study.path.unlink()
    (folder / "links.txt").unlink()
    journal.write_bytes(hot)  # what the killed server left beside the removed study

    with pytest.raises(RatganError, match=r"study\.sqlite-journal .*previous study"):
        create_study(folder, **small_study_args)
    assert journal.read_bytes() == hot  # kept: it may still be needed by the moved study
    assert not small_study.path.exists()
