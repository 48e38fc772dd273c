"""Run by test_run.py: ``ratgan`` whose checkpoint write of one iteration stalls mid-file.

    python pausing_trainer.py ITERATION SECONDS train --config ... --out RUN ...

The pause is injected here, on the test side: ``torch.save`` is wrapped so that, when it writes
the checkpoint of ITERATION, it flushes and fsyncs the first 4096 bytes of the (temporary) file
and then sleeps SECONDS, long enough for the test to SIGKILL the process mid-write.
"""

import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from ratgan.cli import main


class _PausingWriter:
    """File wrapper that sleeps once after ``pause_after`` bytes have been written."""

    def __init__(self, handle: Any, pause_after: int, seconds: float) -> None:
        self._handle, self._left, self._seconds = handle, pause_after, seconds

    def write(self, data: bytes) -> int:
        written = self._handle.write(data)
        if self._left is not None:
            self._left -= written
            if self._left <= 0:
                self._handle.flush()
                os.fsync(self._handle.fileno())
                time.sleep(self._seconds)
                self._left = None
        return written

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


def _pausing_save(iteration: int, seconds: float):
    real_save = torch.save

    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        if (
            isinstance(obj, dict)
            and obj.get("iteration") == iteration
            and isinstance(f, (str, Path))
            and f".ckpt_{iteration:07d}.pt." in Path(f).name
        ):
            with open(f, "wb") as handle:
                real_save(obj, _PausingWriter(handle, 4096, seconds), *args, **kwargs)
            return
        real_save(obj, f, *args, **kwargs)

    return save


if __name__ == "__main__":
    torch.save = _pausing_save(int(sys.argv[1]), float(sys.argv[2]))
    raise SystemExit(main(sys.argv[3:]))
