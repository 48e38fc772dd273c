"""The ``ratgan`` command line: a thin layer that parses arguments and calls the packages.

Each module of this package registers its subcommands; heavy imports (torch, MONAI, the web
framework) happen inside the command functions so that ``ratgan --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ratgan import __version__
from ratgan.errors import RatganError

COMMAND_MODULES = ("data", "train", "evaluate", "segbench", "label", "turing")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="ratgan",
        description="Synthetic 3D rat brain MRI with a 3D alpha-GAN (Ferreira et al. 2022).",
    )
    parser.add_argument("--version", action="version", version=f"ratgan {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"ratgan.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ratgan`` console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except RatganError as exc:
        print(f"ratgan {args.command}: {exc.label}{exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"ratgan {args.command}: interrupted", file=sys.stderr)
        return 130
