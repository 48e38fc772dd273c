"""The real server (`ratgan turing serve` under waitress): blind responses over HTTP, one answer
per item under simultaneous requests, and localhost by default."""

import json
import sqlite3
import threading
import urllib.error
import urllib.request

from ratgan.turing.render import ALLOWED_PNG_CHUNKS, png_chunks


def _get(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, dict(response.headers.items()), response.read()


def _post(url, payload):
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def _current(study, rater):
    """(public id, truth) of the rater's current item, read from the answer key."""
    with sqlite3.connect(study.path) as conn:
        return conn.execute(
            "SELECT item.public_id, scan.source FROM item JOIN scan ON scan.id = item.scan_id "
            "JOIN rater ON rater.id = item.rater_id LEFT JOIN answer ON answer.item_id = item.id "
            "WHERE rater.name = ? AND answer.item_id IS NULL ORDER BY item.position LIMIT 1",
            (rater,),
        ).fetchone()


def test_server_binds_localhost(phantom_server):
    assert phantom_server.base.startswith("http://127.0.0.1:")


def test_served_slices_of_real_and_synthetic_scans_are_indistinguishable(phantom_server):
    study, url = phantom_server.study, phantom_server.rater_url("alice")
    served = {}
    while True:
        current = _current(study, "alice")
        if current is None:
            break
        item, source = current
        status, state_headers, body = _get(f"{url}/state")
        assert json.loads(body)["item"]["id"] == item
        status, headers, png = _get(f"{url}/img/{item}")
        assert status == 200
        served.setdefault("real" if source == "real" else "synthetic", []).append(
            (headers, png, state_headers)
        )
        assert _post(f"{url}/answer", {"item": item, "answer": "real"}) == 200
    assert len(served["real"]) == 2 and len(served["synthetic"]) == 2

    def form(headers):
        return sorted((k, v) for k, v in headers.items() if k != "Date")

    (real_headers, real_png, real_state), (syn_headers, syn_png, syn_state) = (
        served["real"][0],
        served["synthetic"][0],
    )
    assert form(real_headers) == form(syn_headers)
    assert sorted(real_headers) == sorted(syn_headers)  # same header names, Date included
    assert (
        real_headers["Content-Type"] == "image/png" and real_headers["Cache-Control"] == "no-store"
    )
    assert form(real_state) == form(syn_state)
    assert len(real_png) == len(syn_png) == int(real_headers["Content-Length"])
    assert png_chunks(real_png) == png_chunks(syn_png)
    assert {kind for kind, _ in png_chunks(real_png)} <= ALLOWED_PNG_CHUNKS
    assert real_png[:33] == syn_png[:33]  # PNG signature and IHDR: size, depth, colour type
    assert real_png != syn_png  # the pixels, and only they, differ
    for headers, png, _ in served["real"] + served["synthetic"]:
        assert form(headers) == form(real_headers) and len(png) == len(real_png)


def test_a_double_submission_stores_one_answer(phantom_server):
    study, url = phantom_server.study, phantom_server.rater_url("bob")
    item, _ = _current(study, "bob")
    barrier, statuses = threading.Barrier(4), []

    def post(answer):
        barrier.wait()
        statuses.append(_post(f"{url}/answer", {"item": item, "answer": answer}))

    threads = [threading.Thread(target=post, args=(a,)) for a in ("real", "synthetic") * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200, 409, 409, 409]
    with sqlite3.connect(study.path) as conn:
        assert conn.execute(
            "SELECT COUNT(*) FROM answer JOIN item ON item.id = answer.item_id "
            "WHERE item.public_id = ?",
            (item,),
        ).fetchone() == (1,)
