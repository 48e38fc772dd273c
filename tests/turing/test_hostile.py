"""The Turing test against careless users and hostile clients: overlapping sources, outputs
that are files, the answer key's file mode, formulas in CSV cells, and a server that greedy
or slow clients cannot tie up.  Every connection goes to 127.0.0.1."""

import csv
import io
import re
import shutil
import socket
import stat
import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest

from ratgan.cli import main
from ratgan.errors import RatganError
from ratgan.turing.study import Study, create_study


def _args(tmp_path, real, synthetic, **over):
    return {
        "real": real,
        "synthetic": synthetic,
        "n_real": 2,
        "n_per_model": 2,
        "raters": 1,
        **over,
    }


@pytest.mark.parametrize("seed", range(6))
def test_a_folder_given_as_real_and_synthetic_is_refused_whatever_the_seed(
    tmp_path, scan_writer, seed
):
    scan_writer(tmp_path / "syn", 8, seed=1)
    with pytest.raises(RatganError, match="the sources of a study must not overlap"):
        create_study(
            tmp_path / "s",
            **_args(tmp_path, tmp_path / "syn", [("m", tmp_path / "syn")], seed=seed),
        )
    assert not (tmp_path / "s").exists()


def test_a_copied_real_scan_among_synthetic_ones_is_found_by_content(tmp_path, scan_writer):
    real = scan_writer(tmp_path / "real", 8, seed=1)
    scan_writer(tmp_path / "syn", 8, seed=2)
    shutil.copy(real[5], tmp_path / "syn" / "renamed.nii.gz")
    with pytest.raises(
        RatganError, match=r"model 'm' scan .*renamed.nii.gz is the same scan as real"
    ):
        create_study(
            tmp_path / "s", **_args(tmp_path, tmp_path / "real", [("m", tmp_path / "syn")])
        )
    (tmp_path / "syn" / "renamed.nii.gz").unlink()
    with pytest.raises(RatganError, match="model 'b' scan .* same scan as model 'a'"):
        create_study(
            tmp_path / "s",
            **_args(
                tmp_path, tmp_path / "real", [("a", tmp_path / "syn"), ("b", tmp_path / "syn")]
            ),
        )


def test_a_real_scan_stored_flipped_among_synthetic_ones_is_found(tmp_path, scan_writer):
    """The same voxel values stored x-flipped with an LAS affine (other bytes, other size):
    the same scan on a rater's screen, so the same scan to the overlap check."""
    import nibabel as nib
    import numpy as np

    real = scan_writer(tmp_path / "real", 8, seed=1)
    scan_writer(tmp_path / "syn", 8, seed=2)
    img = nib.load(real[3])
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = img.shape[0] - 1
    las = nib.Nifti1Image(np.asarray(img.dataobj)[::-1], img.affine @ flip, img.header)
    nib.save(las, tmp_path / "syn" / "flipped.nii")
    assert nib.aff2axcodes(las.affine)[0] != nib.aff2axcodes(img.affine)[0]
    with pytest.raises(RatganError, match=r"model 'm' scan .*flipped.nii is the same scan as real"):
        create_study(
            tmp_path / "s", **_args(tmp_path, tmp_path / "real", [("m", tmp_path / "syn")])
        )


def _one_sentence(capsys, *words):
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    for word in words:
        assert word in err


def test_outputs_that_are_files_are_one_sentence(small_study, tmp_path, scan_writer, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    scan_writer(tmp_path / "r", 2, seed=8)
    scan_writer(tmp_path / "y", 2, seed=9)
    create = ["turing", "create", "--real", str(tmp_path / "r"), "--synthetic"]
    create += [f"m={tmp_path / 'y'}", "--n-real", "1", "--n-per-model", "1", "--raters", "1"]
    assert main([*create, "--out", str(afile)]) == 2
    _one_sentence(capsys, "--out", "is a file")
    assert main(["turing", "report", str(small_study.path.parent), "--csv", str(afile)]) == 2
    _one_sentence(capsys, "--csv", "is a file")
    assert afile.read_text() == "x"


def test_report_csv_files_are_owner_only_like_the_study(small_study, tmp_path):
    out = tmp_path / "csv"
    assert main(["turing", "report", str(small_study.path.parent), "--csv", str(out)]) == 0
    for name in ("table3.csv", "answers.csv"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o600, name


# Separators a spreadsheet may guess on import; a formula may start after any of them.
_SPLIT = re.compile(r"[,;\t|\r\n]")


def _formula_starts(text: str) -> list[str]:
    """Every piece a spreadsheet could read as a formula, splitting each CSV cell at every
    possible separator (an independent reading of the exported text)."""
    found = []
    for row in csv.reader(io.StringIO(text)):
        for cell in row:
            if cell[:1] in ("\t", "\r"):
                found.append(cell)
            for piece in _SPLIT.split(cell):
                head = piece.lstrip(' "')  # a quote before the formula hides nothing
                if head[:1] in ("=", "+", "-", "@") and not _is_number(head):
                    found.append(piece)
    return found


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def test_csv_formulas_are_neutralised_in_every_position(small_study_args, tmp_path):
    from ratgan.turing.stats import answers_csv, summarise, table3_csv

    names = ["x;=1+1", "a\t@SUM(A1)", "b|+cmd", "c; -2+3", 'd;"=HYPERLINK(1)"', "e\n=1", "plain"]
    path, _ = create_study(tmp_path / "s", **{**small_study_args, "raters": names})
    study = Study(path)
    for rater in study.raters():
        study.submit(rater, study.state(rater)["item"]["id"], "real")
    records = study.records()
    table = table3_csv(summarise(records, study.raters(), study.models))
    answers = answers_csv(records)
    assert "x;=1+1" in table.replace("'", "")  # the text is kept, only marked
    assert _formula_starts(table) == [] and _formula_starts(answers) == []


def _open(port):
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def test_a_large_body_is_refused_before_it_is_sent(phantom_server):
    port = int(phantom_server.base.rsplit(":", 1)[1])
    with _open(port) as sock:
        sock.sendall(
            b"POST /r/nothing/answer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 20971520\r\n\r\n"
        )
        sock.settimeout(2)  # waitress answers on the headers alone; no body byte is sent
        assert sock.recv(64).startswith(b"HTTP/1.1 413")


def test_stalled_connections_do_not_lock_raters_out(phantom_server):
    port = int(phantom_server.base.rsplit(":", 1)[1])
    stalled = []
    try:
        for _ in range(100):  # each sends the start of a request and never finishes it
            sock = _open(port)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
            stalled.append(sock)
        t0 = time.monotonic()
        with urllib.request.urlopen(phantom_server.base + "/", timeout=2) as response:
            assert response.status == 200
        assert time.monotonic() - t0 < 2
    finally:
        for sock in stalled:
            sock.close()


_SERVE_WITH_SHORT_DEADLINES = textwrap.dedent(
    """
    import sys
    from flask import Flask
    from ratgan.turing.server import ServerLimits, make_server

    app = Flask("t")
    app.add_url_rule("/", view_func=lambda: "ok")
    server = make_server(app, "127.0.0.1", 0, 2, ServerLimits(request_seconds=1, idle_seconds=1))
    print(server.effective_port, flush=True)
    server.run()
    """
)


def test_a_request_trickled_byte_by_byte_is_cut_off_at_its_deadline():
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVE_WITH_SHORT_DEADLINES], stdout=subprocess.PIPE, text=True
    )
    try:
        port = int(proc.stdout.readline())
        with _open(port) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\n")
            t0 = time.monotonic()
            closed = False
            while time.monotonic() - t0 < 5 and not closed:  # a header line every 0.2 s
                try:
                    sock.sendall(b"X-Slow: 1\r\n")
                    sock.settimeout(0.2)
                    closed = sock.recv(64) == b""
                except TimeoutError:
                    continue
                except OSError:  # reset by the server
                    closed = True
            assert closed, "the server kept a request open for 5 s"
            assert time.monotonic() - t0 < 3.5  # deadline 1 s, checked every second
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
            assert response.read() == b"ok"  # normal requests are served as before
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
