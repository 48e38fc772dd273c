"""The web app of a visual Turing test (Flask), served by waitress.

Routes (every secret is in the path; unknown or foreign tokens answer 404, as for any
missing page):

- ``/r/<rater token>``: the rating page (the same HTML for everyone);
- ``/r/<rater token>/state``: progress and the current item's opaque identifier;
- ``/r/<rater token>/img/<item id>``: the current item's sprite sheet (PNG), nothing else;
- ``/r/<rater token>/answer`` (POST, JSON): the answer to the current item, once, with the
  time on the scan stored as sent (400 when ``elapsed_ms`` is not a number >= 0; 409
  ``already_saved`` when the same answer to that item is stored already, as when a reply
  was lost and the page sent it again; 409 ``already_answered`` or ``not_current`` when this
  answer was not saved);
- ``/admin/<admin token>``: Table 3, accuracy, agreement and every answer;
- ``/admin/<admin token>/table3.csv`` and ``/answers.csv``: exports.
"""

from __future__ import annotations

import math
import os
import re
import socket
import sys
from collections.abc import Callable
from pathlib import Path

from flask import Flask, Response, abort, current_app, jsonify, render_template, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from ratgan.errors import RatganError
from ratgan.turing.stats import (
    CONFIDENCE,
    Summary,
    answers_csv,
    summarise,
    table3_csv,
    table3_rows,
)
from ratgan.turing.server import MAX_BODY, listening, make_server
from ratgan.turing.study import (
    ANSWERS,
    Rater,
    Record,
    Study,
    check_elapsed_ms,
    format_duration,
)

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_ITEM = re.compile(r"^[0-9a-f]{32}$")

_ERROR_TEXT = {
    404: "not found",
    405: "method not allowed",
    413: "request too large",
}

_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
}


def create_app(study: str | os.PathLike[str]) -> Flask:
    """The Flask application serving one study."""
    here = Path(__file__).parent
    app = Flask(
        "ratgan.turing",
        template_folder=str(here / "templates"),
        static_folder=str(here / "static"),
    )
    app.config["STUDY"] = Study(study)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.jinja_env.filters["num"] = _number
    app.jinja_env.filters["duration"] = format_duration
    app.after_request(_harden)
    app.register_error_handler(HTTPException, _http_error)
    for method, rule, view in _ROUTES:
        app.add_url_rule(rule, view_func=view, methods=[method])
    return app


# --------------------------------------------------------------------------- helpers


def _the_study() -> Study:
    """The study served by the application handling the current request."""
    study: Study = current_app.config["STUDY"]
    return study


def _rater_or_404(token: str) -> Rater:
    """The rater owning ``token``; 404 for a malformed or unknown token."""
    rater = _the_study().rater_by_token(token) if _TOKEN.match(token) else None
    if rater is None:
        abort(404)
    return rater


def _admin_or_404(token: str) -> None:
    """404 unless ``token`` is the study's admin token."""
    if not (_TOKEN.match(token) and _the_study().check_admin(token)):
        abort(404)


def _summary_for_admin() -> tuple[list[Record], Summary]:
    """Every record of the study and their summary (Table 3, accuracy, agreement)."""
    study = _the_study()
    records = study.records()
    return records, summarise(records, study.raters(), study.models, seed=study.seed)


def _harden(response: Response) -> Response:
    """Security headers on every response; nothing but static files may be cached."""
    response.headers.update(_SECURITY_HEADERS)
    if not request.path.startswith("/static/"):
        response.headers["Cache-Control"] = "no-store"
    return response


def _http_error(error: HTTPException) -> tuple[Response, int]:
    """Every error status (404, 405, 413 ...) answers in JSON, like the answer endpoint."""
    code = error.code or 500
    return jsonify(error=_ERROR_TEXT.get(code, error.name.lower())), code


# --------------------------------------------------------------------------- rater pages


def index() -> Response:
    """The bare root: a pointer to the private links, nothing else."""
    return Response(
        "This is a blinded visual Turing test. Open the private link you were given.\n",
        mimetype="text/plain",
    )


def favicon() -> tuple[str, int]:
    """No icon (and no 404 in the browser's console)."""
    return "", 204


def rate_page(token: str) -> str:
    """The rating page, the same HTML for every rater."""
    _rater_or_404(token)
    return render_template("rate.html")


def rate_state(token: str) -> Response:
    """Progress and the current item's opaque identifier."""
    return jsonify(_the_study().state(_rater_or_404(token)))


def rate_image(token: str, item: str) -> Response:
    """The current item's sprite sheet; 404 for any other item."""
    rater = _rater_or_404(token)
    png = _the_study().image(rater, item) if _ITEM.match(item) else None
    if png is None:
        abort(404)
    return Response(png, mimetype="image/png")


def rate_answer(token: str) -> tuple[Response, int]:
    """Record the answer (JSON: item, answer, elapsed_ms) to the current item, once."""
    rater = _rater_or_404(token)
    payload = request.get_json(silent=True) if request.is_json else None
    if not isinstance(payload, dict):
        return jsonify(error="expected a JSON object"), 400
    item, answer = payload.get("item"), payload.get("answer")
    if not isinstance(item, str) or not _ITEM.match(item) or answer not in ANSWERS:
        return jsonify(error="expected an item id and an answer 'real' or 'synthetic'"), 400
    try:
        elapsed = check_elapsed_ms(payload.get("elapsed_ms"))
    except ValueError as exc:  # not saved, so the answer can be sent again with its time
        return jsonify(error=str(exc)), 400
    result = _the_study().submit(rater, item, answer, elapsed)
    if result.saved:
        return jsonify(status="saved"), 200
    if result.status == "unknown":
        abort(404)
    if result.same_answer:  # a resent answer whose first reply was lost: it is stored
        return jsonify(status="already_saved", error="this answer was already saved"), 409
    return jsonify(status=result.status, error="this scan can no longer be answered"), 409


# --------------------------------------------------------------------------- admin pages


def admin_page(token: str) -> str:
    """Table 3, accuracy, agreement and every answer."""
    _admin_or_404(token)
    records, summary = _summary_for_admin()
    return render_template(
        "admin.html",
        token=token,
        study=_the_study(),
        summary=summary,
        table3=table3_rows(summary),
        records=records,
        confidence=int(CONFIDENCE * 100),
    )


def admin_table3(token: str) -> Response:
    """Table 3 as CSV."""
    _admin_or_404(token)
    return _csv_download(table3_csv(_summary_for_admin()[1]), "turing-table3.csv")


def admin_answers(token: str) -> Response:
    """Every answer as CSV."""
    _admin_or_404(token)
    return _csv_download(answers_csv(_summary_for_admin()[0]), "turing-answers.csv")


_ROUTES: tuple[tuple[str, str, Callable[..., ResponseReturnValue]], ...] = (
    ("GET", "/", index),
    ("GET", "/favicon.ico", favicon),
    ("GET", "/r/<token>", rate_page),
    ("GET", "/r/<token>/state", rate_state),
    ("GET", "/r/<token>/img/<item>", rate_image),
    ("POST", "/r/<token>/answer", rate_answer),
    ("GET", "/admin/<token>", admin_page),
    ("GET", "/admin/<token>/table3.csv", admin_table3),
    ("GET", "/admin/<token>/answers.csv", admin_answers),
)
"""Every page: HTTP method, URL rule and view (named as the endpoint)."""


def _number(value: float | None, digits: int = 3) -> str:
    if value is None or math.isnan(value):
        return "—"
    return f"{value:.{digits}f}"


def _csv_download(text: str, filename: str) -> Response:
    response = Response(text, mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _base_url(host: str, port: int) -> str:
    """The address that links start with for a socket bound to ``host``:``port``."""
    if host in ("0.0.0.0", "::"):
        host = socket.getfqdn()  # links must name a reachable host, not the wildcard
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def serve(
    study: str | os.PathLike[str],
    host: str = "127.0.0.1",
    port: int = 8765,
    threads: int = 8,
    show_links: bool = False,
) -> None:
    """Serve a study with waitress until interrupted.

    The private links are printed only with ``show_links`` (server output often ends up in
    logs); ``ratgan turing create`` printed them once and wrote them to the study's links file.
    The server's limits against slow or greedy clients are in :mod:`ratgan.turing.server`.
    """
    app = create_app(study)
    try:
        server = make_server(app, host, port, threads)
    except (OSError, ValueError) as exc:  # the address is taken, not ours, or not resolvable
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise RatganError(f"cannot listen on {host}:{port} ({reason})") from None
    base, *others = [_base_url(h, p) for h, p in listening(server)]
    print(f"Serving {app.config['STUDY'].path} on {base}/ (Ctrl-C to stop)", flush=True)
    for other in others:
        print(f"Also listening on {other}/", flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(
            "warning: listening beyond this computer without TLS; links are the only "
            "protection, send them privately",
            file=sys.stderr,
            flush=True,
        )
    if show_links:
        print(app.config["STUDY"].links_text(base), flush=True)
    else:
        print(
            "Private links: see the study's links.txt (adjust host and port to this server), "
            "or restart with --show-links.",
            flush=True,
        )
    try:
        server.run()  # returns on Ctrl-C
    finally:
        server.close()
        print("Server stopped.", flush=True)
