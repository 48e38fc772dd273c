"""Subcommands of `ratgan turing`: create, serve and report a blinded visual Turing test."""

from __future__ import annotations

import argparse

from ratgan.errors import RatganError


def _model_dir(text: str) -> tuple[str, str]:
    name, sep, folder = text.partition("=")
    if not sep or not name or not folder:
        raise argparse.ArgumentTypeError(f"expected NAME=DIR, got {text!r}")
    return name, folder


def _create(args: argparse.Namespace) -> int:
    from ratgan.turing.study import Study, create_study

    raters: int | list[str] = args.raters
    if args.rater_names:
        names = [n.strip() for n in args.rater_names.split(",")]
        if args.raters is not None and args.raters != len(names):
            raise RatganError(f"--raters {args.raters} but --rater-names gives {len(names)} names")
        raters = names
    elif args.raters is None:
        raise RatganError("give --raters N or --rater-names A,B,...")
    expertise = [e.strip() for e in args.expertise.split(",")] if args.expertise else None
    path, warnings = create_study(
        args.out,
        real=args.real,
        synthetic=args.synthetic,
        n_real=args.n_real,
        n_per_model=args.n_per_model,
        raters=raters,
        seed=args.seed,
        expertise=expertise,
        base_url=args.base_url,
    )
    for warning in warnings:
        print(f"warning: {warning}")
    study = Study(path)
    n_scans = len({r.scan_id for r in study.records()})
    print(f"Created {path}: {n_scans} scans, {len(study.raters())} raters.")
    print("Private links (send each rater only their own; keep the admin link to yourself):")
    print(study.links_text(args.base_url))
    print(f"(shown only now; also in {path.parent / 'links.txt'}, readable by you alone)")
    print(f"Start the server with: ratgan turing serve {args.out}")
    return 0


def _check_address(host: str, port: int) -> None:
    """One clear sentence for a port outside 0-65535 or a host that is no address."""
    import socket

    if not 0 <= port <= 65535:
        raise RatganError(f"--port {port} is not a port number (1-65535, or 0 for a free one)")
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError):
        raise RatganError(
            f"--host {host} is neither an IP address nor a host name this computer can resolve"
        ) from None


def _serve(args: argparse.Namespace) -> int:
    from ratgan.turing.app import serve

    _check_address(args.host, args.port)
    try:
        serve(
            args.study,
            host=args.host,
            port=args.port,
            threads=args.threads,
            show_links=args.show_links,
        )
    except KeyboardInterrupt:
        print("Server stopped.")
    return 0


def _report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ratgan.turing.stats import answers_csv, format_table3, summarise, table3_csv
    from ratgan.turing.study import Study, write_private

    study = Study(args.study)
    records = study.records()
    summary = summarise(records, study.raters(), study.models, seed=study.seed)
    print(format_table3(summary))
    if args.csv:
        out = Path(args.csv)
        if out.exists() and not out.is_dir():
            raise RatganError(f"--csv {out} is a file, not a folder for table3.csv and answers.csv")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RatganError(f"cannot create --csv folder {out} ({exc.strerror or exc})") from None
        # the answer key, like the study itself: readable by its owner only
        write_private(out / "table3.csv", table3_csv(summary).encode())
        write_private(out / "answers.csv", answers_csv(records).encode())
        print(f"wrote {out / 'table3.csv'} and {out / 'answers.csv'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `ratgan turing create|serve|report` to the `ratgan` parser."""
    turing = sub.add_parser(
        "turing",
        help="blinded visual Turing test with expert raters (paper Table 3)",
        description="Run a blinded visual Turing test: create a study, serve it to raters, "
        "and report Table 3.",
    )
    commands = turing.add_subparsers(dest="turing_command", metavar="ACTION", required=True)

    create = commands.add_parser(
        "create",
        help="draw scans and write a study with one private link per rater",
        description="Draw real and synthetic scans at random (seeded), shuffle them per rater "
        "(unseeded, secure), and store the study (answer key included) in STUDY/study.sqlite.",
    )
    create.add_argument(
        "--real",
        required=True,
        metavar="DIR",
        help="real scans: a folder, glob pattern or CSV file",
    )
    create.add_argument(
        "--synthetic",
        required=True,
        nargs="+",
        action="extend",
        type=_model_dir,
        metavar="NAME=DIR",
        help="synthetic scans of each model (folder, glob or CSV), under the name shown in Table 3",
    )
    create.add_argument("--n-real", type=int, default=20, help="real scans to draw (default 20)")
    create.add_argument(
        "--n-per-model", type=int, default=15, help="synthetic scans per model (default 15)"
    )
    create.add_argument("--raters", type=int, metavar="N", help="number of raters")
    create.add_argument("--rater-names", metavar="A,B,...", help="comma-separated rater names")
    create.add_argument(
        "--expertise",
        metavar="E1,E2,...",
        help="comma-separated expertise per rater (shown in Table 3)",
    )
    create.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed choosing which scans are drawn (default 0); the orders raters see come "
        "from the operating system's secure random source",
    )
    create.add_argument(
        "--base-url",
        default="http://127.0.0.1:8765",
        help="address the links start with: scheme, host and port, no path (default "
        "http://127.0.0.1:8765)",
    )
    create.add_argument("--out", required=True, metavar="STUDY", help="new folder for the study")
    create.set_defaults(func=_create)

    serve = commands.add_parser(
        "serve",
        help="serve a study to its raters",
        description="Serve the rating pages and the admin page of a study with waitress.",
    )
    serve.add_argument("study", metavar="STUDY", help="study folder (or its study.sqlite)")
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this computer only)",
    )
    serve.add_argument(
        "--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)"
    )
    serve.add_argument(
        "--show-links",
        action="store_true",
        help="print every rater's private link and the admin link with this server's address "
        "(off by default: server output often ends up in logs)",
    )
    serve.add_argument("--threads", type=int, default=8, help=argparse.SUPPRESS)
    serve.set_defaults(func=_serve)

    report = commands.add_parser(
        "report",
        help="print Table 3, accuracy and agreement; optionally write CSV files",
        description="Print the results of a study so far.",
    )
    report.add_argument("study", metavar="STUDY", help="study folder (or its study.sqlite)")
    report.add_argument("--csv", metavar="DIR", help="also write table3.csv and answers.csv here")
    report.set_defaults(func=_report)
