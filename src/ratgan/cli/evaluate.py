"""Subcommands of `ratgan` for evaluate (filled in by its owner)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the `ratgan` parser."""
