"""Run by test_fault_injection.py: ``ratgan`` with one fault injected from the test side.

    python faulty_ratgan.py FAULT MARKER ratgan-arguments...

When the process reaches the point that FAULT names (see ``FAULTS``), it creates the file
MARKER and sleeps, so that the test can SIGKILL it at exactly that moment.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _stall(marker: Path) -> None:
    marker.touch()
    time.sleep(600)


def _on_call(
    owner: Any, name: str, call: int, marker: Path, before: Callable[..., None] | None = None
) -> None:
    """Replace ``owner.name`` so that its ``call``-th call stalls (after ``before`` ran)."""
    real = getattr(owner, name)
    calls = {"n": 0}

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == call:
            if before is not None:
                before(real, *args, **kwargs)
            _stall(marker)
        return real(*args, **kwargs)

    setattr(owner, name, wrapped)


def _half_written_nifti(real_save: Callable, img: Any, filename: str) -> None:
    """Write the file, then cut it to half its size: a NIfTI killed in the middle of a write."""
    real_save(img, filename)
    size = Path(filename).stat().st_size
    with open(filename, "r+b") as handle:
        handle.truncate(size // 2)


def _install(fault: str, marker: Path) -> None:
    if fault == "generate-nifti":  # the second scan file, half written
        from ratgan.data import io

        _on_call(io.nib, "save", 2, marker, before=_half_written_nifti)
    elif fault == "label-second":  # the second registration of `ratgan label --workers 1`
        from ratgan.segmentation import atlas

        _on_call(atlas, "atlas_label", 2, marker)
    elif fault == "evaluate-figures":  # two figures of the report written, the third not
        from ratgan.evaluation import report

        _on_call(report, "figure_histograms", 1, marker)
    elif fault == "turing-render":  # rendering the second scan of the study
        from ratgan.turing import study

        _on_call(study, "render_scan", 2, marker)
    elif fault == "turing-rename":  # study file complete under its temporary name
        from ratgan import atomic
        from ratgan.turing import study

        real_fsync = atomic._fsync

        def fsync(path: Path) -> None:  # atomic_path: fsync, then rename
            real_fsync(path)
            if Path(path).name.startswith(f".{study.STUDY_FILENAME}."):
                _stall(marker)

        atomic._fsync = fsync
    else:
        raise SystemExit(f"unknown fault {fault}")


if __name__ == "__main__":
    _install(sys.argv[1], Path(sys.argv[2]))
    from ratgan.cli import main

    raise SystemExit(main(sys.argv[3:]))
