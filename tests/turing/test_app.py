"""The web app through Flask's test client: access control, final answers, blind responses."""

import csv
import io
import json
import sqlite3

import pytest

from ratgan.turing.app import create_app
from ratgan.turing.render import ALLOWED_PNG_CHUNKS, png_chunks


@pytest.fixture
def client(small_study):
    app = create_app(small_study.path.parent)
    app.testing = True
    return app.test_client()


def _tokens(study):
    alice, bob = study.raters()
    return alice.token, bob.token, study.meta["admin_token"]


def _answer(client, token, item, answer):
    return client.post(
        f"/r/{token}/answer", json={"item": item, "answer": answer, "elapsed_ms": 1200}
    )


def test_a_rater_reaches_only_their_own_session(client, small_study):
    alice, bob, admin = _tokens(small_study)
    bob_item = client.get(f"/r/{bob}/state").get_json()["item"]["id"]
    alice_item = client.get(f"/r/{alice}/state").get_json()["item"]["id"]
    assert client.get(f"/r/{alice}/img/{alice_item}").status_code == 200
    # Alice's token with Bob's item, Bob's token with Alice's item: as if it did not exist.
    assert client.get(f"/r/{alice}/img/{bob_item}").status_code == 404
    assert client.get(f"/r/{bob}/img/{alice_item}").status_code == 404
    assert _answer(client, alice, bob_item, "real").status_code == 404
    # Rater tokens do not open the admin page or exports, the admin token is no rater token.
    for token in (alice, bob, "x" * 32):
        for path in ("", "/table3.csv", "/answers.csv"):
            assert client.get(f"/admin/{token}{path}").status_code == 404
    assert client.get(f"/r/{admin}").status_code == 404
    assert client.get(f"/r/{admin}/state").status_code == 404
    assert client.get("/r/not-a-token-at-all-0000/state").status_code == 404
    assert client.get(f"/admin/{admin}").status_code == 200
    assert small_study.records()[0].answer is None  # nothing was written by the attempts


def test_a_submitted_answer_cannot_be_changed(client, small_study):
    alice = _tokens(small_study)[0]
    item = client.get(f"/r/{alice}/state").get_json()["item"]["id"]
    first = _answer(client, alice, item, "real")
    assert first.status_code == 200 and first.get_json() == {"status": "saved"}
    with sqlite3.connect(small_study.path) as conn:
        before = conn.execute("SELECT * FROM answer").fetchall()
    second = _answer(client, alice, item, "synthetic")
    assert second.status_code == 409 and second.get_json()["status"] == "already_answered"
    # the same answer again (its first reply lost): stored, and the reply says so
    again = _answer(client, alice, item, "real")
    assert again.status_code == 409
    assert again.get_json() == {"status": "already_saved", "error": "this answer was already saved"}
    with sqlite3.connect(small_study.path) as conn:
        assert conn.execute("SELECT * FROM answer").fetchall() == before
    assert before[0][1] == "real" and before[0][3] == 1200
    assert client.get(f"/r/{alice}/img/{item}").status_code == 404  # no going back
    assert client.get(f"/r/{alice}/state").get_json()["done"] == 1


def test_malformed_answers_are_rejected(client, small_study):
    alice = _tokens(small_study)[0]
    item = client.get(f"/r/{alice}/state").get_json()["item"]["id"]
    assert client.post(f"/r/{alice}/answer", data="answer=real").status_code == 400
    assert _answer(client, alice, item, "maybe").status_code == 400
    assert _answer(client, alice, "../../etc", "real").status_code == 400
    assert client.get(f"/r/{alice}/answer").status_code == 405
    assert small_study.records()[0].answer is None


def test_the_time_on_a_scan_is_stored_as_measured_or_refused(client, small_study):
    """elapsed_ms is the rater's data: 0 and fractions of a millisecond are stored as sent, an
    absent one as unknown; a value that is no time (negative, not a number, JSON true, which
    Python counts as the integer 1) is refused with a reason and the answer is not saved, so
    it can be sent again with its true time."""
    alice = _tokens(small_study)[0]

    def post(elapsed):
        item = client.get(f"/r/{alice}/state").get_json()["item"]["id"]
        body = json.dumps({"item": item, "answer": "real", "elapsed_ms": elapsed})
        return client.post(f"/r/{alice}/answer", data=body, content_type="application/json")

    for bad in (True, -1, -0.5, "1200", [1], float("nan"), float("inf")):
        response = post(bad)
        assert response.status_code == 400, bad
        assert "elapsed_ms" in response.get_json()["error"], bad
    assert small_study.records()[0].answer is None  # nothing saved by the refused answers
    for good in (0, 0.4, 1200, 10**10):
        assert post(good).status_code == 200, good
    item = client.get(f"/r/{alice}/state").get_json()["item"]["id"]
    assert (
        client.post(f"/r/{alice}/answer", json={"item": item, "answer": "real"}).status_code == 200
    )
    stored = [r.elapsed_ms for r in small_study.records() if r.rater == "alice"][:5]
    assert stored == [0, 0.4, 1200, 10**10, None]
    with pytest.raises(ValueError, match="elapsed_ms"):  # the library refuses it too
        small_study.submit(small_study.raters()[0], item, "real", elapsed_ms=True)


def _walk(client, token):
    """Answer every item of a rater, collecting (item id, image response, state JSON)."""
    seen = []
    while True:
        state = client.get(f"/r/{token}/state").get_json()
        if state["finished"]:
            return seen
        item = state["item"]["id"]
        seen.append((item, client.get(f"/r/{token}/img/{item}"), state))
        assert _answer(client, token, item, "real").status_code == 200


def test_responses_for_real_and_synthetic_scans_are_alike(client, small_study):
    alice, bob, _admin = _tokens(small_study)
    assert client.get(f"/r/{alice}").data == client.get(f"/r/{bob}").data
    seen = _walk(client, alice)
    truth = {r.position: r.truth for r in small_study.records() if r.rater == "alice"}
    kinds = {}
    for position, (item, image, state) in enumerate(seen, start=1):
        headers = sorted((k, v) for k, v in image.headers.items() if k != "Date")
        png = image.data
        chunks = png_chunks(png)
        assert {kind for kind, _ in chunks} <= ALLOWED_PNG_CHUNKS
        form = (
            tuple(headers),
            len(png),
            tuple(chunks),
            png[:33],
            tuple(sorted(state["item"])),
            tuple(v for k, v in sorted(state["item"].items()) if k != "id"),
            len(item),
        )
        kinds.setdefault(truth[position], set()).add(form)
    # Every image response, real or synthetic, has one and the same form.
    assert set(kinds) == {"real", "synthetic"}
    assert len(kinds["real"] | kinds["synthetic"]) == 1
    # A scan has a different identifier for every rater.
    bob_items = {item for item, _, _ in _walk(client, bob)}
    assert not bob_items & {item for item, _, _ in seen}


def test_admin_page_and_exports(client, small_study):
    alice, _bob, admin = _tokens(small_study)
    _walk(client, alice)
    page = client.get(f"/admin/{admin}").get_data(as_text=True)
    assert 'id="table3"' in page and "Fleiss" in page and "Right answers" in page
    export = client.get(f"/admin/{admin}/answers.csv")
    assert export.mimetype == "text/csv" and "attachment" in export.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(export.get_data(as_text=True))))
    assert [r["answer"] for r in rows if r["rater"] == "alice"] == ["real"] * 7
    assert all(r["answer"] == "" for r in rows if r["rater"] == "bob")
    table = list(
        csv.DictReader(io.StringIO(client.get(f"/admin/{admin}/table3.csv").get_data(as_text=True)))
    )
    assert table[0]["rater"] == "alice" and table[0]["right_answers"] == "3"
    assert table[0]["misclassified_m1"] == "2" and table[0]["misclassified_real"] == "0"


def test_security_headers(client, small_study):
    alice = _tokens(small_study)[0]
    page = client.get(f"/r/{alice}")
    assert page.headers["Cache-Control"] == "no-store"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert client.get("/static/rate.js").status_code == 200


def test_every_error_status_answers_in_json(client, small_study):
    alice = _tokens(small_study)[0]
    item = client.get(f"/r/{alice}/state").get_json()["item"]["id"]
    cases = {
        404: client.get("/r/not-a-token-at-all-0000/state"),
        405: client.get(f"/r/{alice}/answer"),
        413: client.post(f"/r/{alice}/answer", data="x" * 10_000, content_type="application/json"),
        409: (_answer(client, alice, item, "real"), _answer(client, alice, item, "real"))[1],
        400: client.post(f"/r/{alice}/answer", data="answer=real"),
    }
    for status, response in cases.items():
        assert response.status_code == status
        assert response.mimetype == "application/json", status
        assert isinstance(response.get_json()["error"], str), status


def test_csv_exports_neutralise_formulas(small_study_args, tmp_path):
    from ratgan.turing.stats import answers_csv, summarise, table3_csv
    from ratgan.turing.study import Study, create_study

    names = ['=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)", "plain"]
    path, _ = create_study(tmp_path / "s", **{**small_study_args, "raters": names})
    study = Study(path)
    for rater in study.raters():
        study.submit(rater, study.state(rater)["item"]["id"], "real")
    records = study.records()
    for text in (
        answers_csv(records),
        table3_csv(summarise(records, study.raters(), study.models)),
    ):
        cells = [c for row in csv.reader(io.StringIO(text)) for c in row]
        for name in names[:4]:
            assert name not in cells and "'" + name in cells
        assert "plain" in cells
        # numbers stay numbers, negative ones included
        assert not any(
            c.startswith("'") and c[1:].lstrip("-+").replace(".", "").isdigit() for c in cells
        )
