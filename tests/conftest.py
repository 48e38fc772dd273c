"""Shared test settings: small thread counts so that tests behave on a 2-core machine."""

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

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


@pytest.fixture(scope="session")
def load_benchmark() -> Callable[[str], ModuleType]:
    """Import a script of benchmarks/ by name (the folder is not a package)."""

    def load(name: str) -> ModuleType:
        path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None, path
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        return module

    return load
