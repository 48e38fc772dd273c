"""`ratgan turing create|report` through the real command line parser."""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import urllib.request

from ratgan.cli import main
from ratgan.turing.study import Study


def test_create_prints_links_and_report_prints_table3(tmp_path, scan_writer, capsys):
    scan_writer(tmp_path / "real", 3, seed=1)
    scan_writer(tmp_path / "a", 2, seed=2)
    scan_writer(tmp_path / "b", 2, seed=3)
    code = main(
        [
            "turing",
            "create",
            "--real",
            str(tmp_path / "real"),
            "--synthetic",
            f"SigmaRat1={tmp_path / 'a'}",
            f"SigmaRat2={tmp_path / 'b'}",
            "--n-real",
            "2",
            "--n-per-model",
            "1",
            "--raters",
            "3",
            "--expertise",
            "High,Medium,Low",
            "--seed",
            "7",
            "--out",
            str(tmp_path / "study"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "4 scans, 3 raters" in out
    links = re.findall(
        r"^(rater\d|admin)\s+(http://127\.0\.0\.1:8765/(?:r|admin)/[\w-]+)$", out, re.MULTILINE
    )
    assert [name for name, _ in links] == ["rater1", "rater2", "rater3", "admin"]
    study = Study(tmp_path / "study")
    assert [r.expertise for r in study.raters()] == ["High", "Medium", "Low"]
    assert study.models == ["SigmaRat1", "SigmaRat2"]

    rater = study.raters()[0]
    study.submit(rater, study.state(rater)["item"]["id"], "synthetic")
    assert main(["turing", "report", str(tmp_path / "study"), "--csv", str(tmp_path / "csv")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^Right answers\s+[01]\s+0\s+0$", out, re.MULTILINE)
    assert re.search(r"^Answered\s+1/4\s+0/4\s+0/4$", out, re.MULTILINE)
    assert (tmp_path / "csv" / "table3.csv").is_file() and (
        tmp_path / "csv" / "answers.csv"
    ).is_file()


def test_user_errors_are_one_sentence(tmp_path, scan_writer, capsys):
    scan_writer(tmp_path / "real", 1, seed=1)
    code = main(
        [
            "turing",
            "create",
            "--real",
            str(tmp_path / "real"),
            "--synthetic",
            f"m={tmp_path / 'real'}",
            "--n-real",
            "5",
            "--raters",
            "2",
            "--out",
            str(tmp_path / "s"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "--n-real asks for 5 scans" in err
    # numpy refuses a negative seed: its ValueError escaped as a traceback
    scan_writer(tmp_path / "syn", 1, seed=2)
    create = ["turing", "create", "--real", str(tmp_path / "real"), "--n-real", "1"]
    create += ["--synthetic", f"m={tmp_path / 'syn'}", "--n-per-model", "1", "--raters", "1"]
    assert main([*create, "--seed", "-1", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "--seed must not be negative (got -1)" in err and err.count("\n") == 1
    assert "Traceback" not in err and not (tmp_path / "s").exists()
    assert main(["turing", "serve", str(tmp_path / "missing")]) == 2
    assert "is not a Turing test study" in capsys.readouterr().err


def test_port_and_host_are_checked_with_one_sentence(small_study, capsys):
    folder = str(small_study.path.parent)
    for flags, message in (
        (["--port", "70000"], "--port 70000 is not a port number (1-65535, or 0 for a free one)"),
        (["--port", "-1"], "--port -1 is not a port number"),
        (["--host", "999.1.1.1"], "--host 999.1.1.1 is neither an IP address nor a host name"),
    ):
        assert main(["turing", "serve", folder, *flags]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_serve_says_which_failed_listening_or_the_study(small_study, capsys):
    """A taken port is 'cannot listen'; a damaged study file is named as such, not blamed on
    the address."""
    import socket
    import sqlite3

    folder = str(small_study.path.parent)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["turing", "serve", folder, "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err and err.count("\n") == 1
    with sqlite3.connect(small_study.path) as conn:
        conn.execute("UPDATE meta SET value = 'not json' WHERE key = 'models'")
    assert main(["turing", "serve", folder, "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "is a damaged Turing test study" in err and "cannot listen" not in err
    assert err.count("\n") == 1 and "Traceback" not in err


def _serve_output(ratgan: list[str], study, *flags):
    """What `ratgan turing serve` prints before it is stopped with Ctrl-C."""
    proc = subprocess.Popen(
        [
            *ratgan,
            "turing",
            "serve",
            str(study.path.parent),
            "--port",
            "0",
            *flags,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    try:
        lines = [proc.stdout.readline()]
        while lines[-1] and not lines[-1].startswith(("admin", "Private links")):
            lines.append(proc.stdout.readline())  # the last line printed before it listens
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    return "".join(lines) + rest


def test_serve_prints_the_private_links_only_when_asked(small_study, ratgan_with_ctrl_c):
    secrets_ = [r.token for r in small_study.raters()] + [small_study.meta["admin_token"]]
    quiet = _serve_output(ratgan_with_ctrl_c, small_study)
    assert "Serving " in quiet and "--show-links" in quiet
    assert not any(token in quiet for token in secrets_)
    shown = _serve_output(ratgan_with_ctrl_c, small_study, "--show-links")
    assert all(token in shown for token in secrets_)


_SERVE_ON_A_NAME_WITH_TWO_ADDRESSES = textwrap.dedent(
    """
    import signal, socket, sys

    signal.signal(signal.SIGINT, signal.default_int_handler)
    resolve = socket.getaddrinfo


    def two_addresses(host, *args, **kwargs):
        # a host name with two addresses, as localhost is 127.0.0.1 and ::1 on many systems
        if host == "dual.test":
            return resolve("127.0.0.1", *args, **kwargs) + resolve("127.0.0.2", *args, **kwargs)
        return resolve(host, *args, **kwargs)


    socket.getaddrinfo = two_addresses
    from ratgan.cli import main

    sys.exit(main(["turing", "serve", sys.argv[1], "--host", "dual.test", "--port", "0"]))
    """
)


def test_serve_on_a_host_name_with_two_addresses(small_study):
    """waitress listens on every address of a host name; serve crashed there before
    (AttributeError: 'MultiSocketServer' object has no attribute 'effective_host')."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVE_ON_A_NAME_WITH_TWO_ADDRESSES, str(small_study.path.parent)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    try:
        lines, base = [], None
        while base is None and (line := proc.stdout.readline()):
            lines.append(line)
            if match := re.search(r" on (http://[^\s/]+)/ \(Ctrl-C to stop\)", line):
                base = match.group(1)
        assert base is not None, "".join(lines)
        # the printed address serves the study: a rater's state through their own token
        rater = small_study.raters()[0]
        with urllib.request.urlopen(f"{base}/r/{rater.token}/state", timeout=10) as response:
            assert json.load(response)["rater"] == rater.name
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0 and "Traceback" not in rest, rest
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
