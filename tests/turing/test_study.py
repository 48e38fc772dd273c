"""Study creation and the answer store: draws, blinding identifiers, final answers."""

import re
import sqlite3
import threading

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


def test_the_draw_is_seeded_and_the_secrets_are_not(small_study, small_study_args, tmp_path):
    again, _ = create_study(tmp_path / "again", **small_study_args)
    first, second = small_study.records(), Study(again).records()
    assert [(r.rater, r.position, r.path) for r in first] == [
        (r.rater, r.position, r.path) for r in second
    ]
    assert Study(again).meta["admin_token"] != small_study.meta["admin_token"]


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
    with pytest.raises(RatganError, match="overlap"):
        create_study(
            tmp_path / "s4",
            **{**ok, "synthetic": [("m", tmp_path / "real")], "n_real": 2, "n_per_model": 2},
        )
    create_study(tmp_path / "s5", **ok)
    with pytest.raises(RatganError, match="already exists"):
        create_study(tmp_path / "s5", **ok)
    with pytest.raises(RatganError, match="not a Turing test study"):
        Study(tmp_path / "nothing.sqlite")


def test_orientation_mismatch_is_reported(tmp_path, scan_writer):
    scan_writer(tmp_path / "real", 1, seed=1)
    flipped = np.diag([-0.375, 0.375, 0.5, 1.0])
    write_nifti(tmp_path / "syn" / "a.nii.gz", np.ones((16, 16, 8), np.float32), flipped)
    _, warnings = create_study(
        tmp_path / "s",
        real=tmp_path / "real",
        synthetic=[("m", tmp_path / "syn")],
        n_real=1,
        n_per_model=1,
        raters=1,
    )
    assert len(warnings) == 1 and "orientation" in warnings[0]


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


def test_finished_rater(small_study):
    bob = small_study.raters()[1]
    for _ in range(7):
        assert small_study.submit(bob, small_study.state(bob)["item"]["id"], "real").saved
    state = small_study.state(bob)
    assert state == {"rater": "bob", "total": 7, "done": 7, "finished": True, "item": None}
