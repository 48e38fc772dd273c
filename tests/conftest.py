"""Shared test settings: small thread counts so that tests behave on a 2-core machine."""

import sys

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def ratgan_with_ctrl_c() -> list[str]:
    """The command line that starts ``ratgan`` in a subprocess that stops on SIGINT (Ctrl-C).

    A process started in the background by a non-interactive shell ignores SIGINT, its
    children inherit that, and Python then keeps ignoring Ctrl-C: a test sending SIGINT to
    ``python -m ratgan`` would wait forever.  This restores Python's handler first.
    """
    code = (
        "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "sys.argv[0] = 'ratgan'; runpy.run_module('ratgan', run_name='__main__')"
    )
    return [sys.executable, "-c", code]
