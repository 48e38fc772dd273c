"""The web app of a visual Turing test (Flask), served by waitress.

Routes (every secret is in the path; unknown or foreign tokens answer 404, as for any
missing page):

- ``/r/<rater token>``: the rating page (the same HTML for everyone);
- ``/r/<rater token>/state``: progress and the current item's opaque identifier;
- ``/r/<rater token>/img/<item id>``: the current item's sprite sheet (PNG), nothing else;
- ``/r/<rater token>/answer`` (POST, JSON): the answer to the current item, once;
- ``/admin/<admin token>``: Table 3, accuracy, agreement and every answer;
- ``/admin/<admin token>/table3.csv`` and ``/answers.csv``: exports.
"""

from __future__ import annotations

import math
import os
import re
import socket
import sys
from pathlib import Path

from flask import Flask, Response, abort, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from ratgan.turing.stats import (
    CONFIDENCE,
    answers_csv,
    summarise,
    table3_csv,
    table3_rows,
)
from ratgan.turing.study import ANSWERS, Rater, Study, format_duration

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


def create_app(study: str | os.PathLike) -> Flask:
    """The Flask application serving one study."""
    here = Path(__file__).parent
    app = Flask(
        "ratgan.turing",
        template_folder=str(here / "templates"),
        static_folder=str(here / "static"),
    )
    app.config["STUDY"] = Study(study)
    app.config["MAX_CONTENT_LENGTH"] = 4096
    app.jinja_env.filters["num"] = _number
    app.jinja_env.filters["duration"] = format_duration

    def the_study() -> Study:
        return app.config["STUDY"]

    def rater_or_404(token: str) -> Rater:
        rater = the_study().rater_by_token(token) if _TOKEN.match(token) else None
        if rater is None:
            abort(404)
        return rater

    def admin_or_404(token: str) -> None:
        if not (_TOKEN.match(token) and the_study().check_admin(token)):
            abort(404)

    @app.after_request
    def harden(response: Response) -> Response:
        response.headers.update(_SECURITY_HEADERS)
        if not request.path.startswith("/static/"):
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> tuple[Response, int]:
        # Every error status (404, 405, 413 ...) answers in JSON, like the answer endpoint.
        code = error.code or 500
        return jsonify(error=_ERROR_TEXT.get(code, error.name.lower())), code

    @app.get("/")
    def index() -> Response:
        return Response(
            "This is a blinded visual Turing test. Open the private link you were given.\n",
            mimetype="text/plain",
        )

    @app.get("/favicon.ico")
    def favicon() -> tuple[str, int]:
        return "", 204

    @app.get("/r/<token>")
    def rate_page(token: str) -> str:
        rater_or_404(token)
        return render_template("rate.html")

    @app.get("/r/<token>/state")
    def rate_state(token: str) -> Response:
        return jsonify(the_study().state(rater_or_404(token)))

    @app.get("/r/<token>/img/<item>")
    def rate_image(token: str, item: str) -> Response:
        rater = rater_or_404(token)
        png = the_study().image(rater, item) if _ITEM.match(item) else None
        if png is None:
            abort(404)
        return Response(png, mimetype="image/png")

    @app.post("/r/<token>/answer")
    def rate_answer(token: str) -> tuple[Response, int]:
        rater = rater_or_404(token)
        payload = request.get_json(silent=True) if request.is_json else None
        if not isinstance(payload, dict):
            return jsonify(error="expected a JSON object"), 400
        item, answer = payload.get("item"), payload.get("answer")
        elapsed = payload.get("elapsed_ms")
        if not isinstance(item, str) or not _ITEM.match(item) or answer not in ANSWERS:
            return jsonify(error="expected an item id and an answer 'real' or 'synthetic'"), 400
        if not (isinstance(elapsed, int) and 0 <= elapsed < 10**9):
            elapsed = None
        result = the_study().submit(rater, item, answer, elapsed)
        if result.saved:
            return jsonify(status="saved"), 200
        if result.status == "unknown":
            abort(404)
        return jsonify(status=result.status, error="this scan can no longer be answered"), 409

    def summary_for_admin():
        study = the_study()
        records = study.records()
        return records, summarise(records, study.raters(), study.models)

    @app.get("/admin/<token>")
    def admin_page(token: str) -> str:
        admin_or_404(token)
        records, summary = summary_for_admin()
        return render_template(
            "admin.html",
            token=token,
            study=the_study(),
            summary=summary,
            table3=table3_rows(summary),
            records=records,
            confidence=int(CONFIDENCE * 100),
        )

    @app.get("/admin/<token>/table3.csv")
    def admin_table3(token: str) -> Response:
        admin_or_404(token)
        return _csv_download(table3_csv(summary_for_admin()[1]), "turing-table3.csv")

    @app.get("/admin/<token>/answers.csv")
    def admin_answers(token: str) -> Response:
        admin_or_404(token)
        return _csv_download(answers_csv(summary_for_admin()[0]), "turing-answers.csv")

    return app


def _number(value: float | None, digits: int = 3) -> str:
    if value is None or math.isnan(value):
        return "—"
    return f"{value:.{digits}f}"


def _csv_download(text: str, filename: str) -> Response:
    response = Response(text, mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def serve(
    study: str | os.PathLike,
    host: str = "127.0.0.1",
    port: int = 8765,
    threads: int = 8,
    show_links: bool = False,
) -> None:
    """Serve a study with waitress until interrupted.

    The private links are printed only with ``show_links`` (server output often ends up in
    logs); ``ratgan turing create`` printed them once and wrote them to the study's links file.
    """
    from waitress import create_server

    app = create_app(study)
    server = create_server(app, host=host, port=port, threads=threads, ident="ratgan")
    bound_host, bound_port = server.effective_host, server.effective_port
    if bound_host in ("0.0.0.0", "::"):
        bound_host = socket.getfqdn()  # links must name a reachable host, not the wildcard
    shown_host = f"[{bound_host}]" if ":" in str(bound_host) else bound_host
    base = f"http://{shown_host}:{bound_port}"
    print(f"Serving {app.config['STUDY'].path} on {base}/ (Ctrl-C to stop)", flush=True)
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
