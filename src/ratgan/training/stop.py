"""Stop a training run cleanly on Ctrl-C or SIGTERM: finish the iteration, save a checkpoint.

Without this, Ctrl-C (or a job scheduler's SIGTERM) raised ``KeyboardInterrupt`` in the middle of
a step and everything since the last regular checkpoint was lost.  Inside :class:`StopRequest`
the first SIGINT or SIGTERM only sets a flag (one the process was started ignoring, as a shell
starts background jobs with SIGINT, stays ignored); the training loop looks at it after each
iteration, logs the partial window, writes a checkpoint at that iteration boundary (so that
``--resume`` continues bit-exactly, as from any checkpoint) and raises :class:`TrainingStopped`.
A second Ctrl-C while that is under way interrupts at once, as before.

Handlers can only be installed from the main thread; elsewhere (a notebook's worker thread)
the context does nothing and Ctrl-C behaves as without it.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any

from ratgan.errors import RatganError

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingStopped(RatganError):
    """The run was stopped by a signal after saving a checkpoint it can resume from."""

    exit_code = 130
    label = ""  # a stopped run is not an error


class StopRequest:
    """Context manager turning the first SIGINT/SIGTERM into :attr:`requested`."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        """Whether a stop signal arrived."""
        return self.signal is not None

    @property
    def name(self) -> str:
        """The arrived signal's name (``SIGINT``, ``SIGTERM``), or an empty string."""
        return "" if self.signal is None else signal.Signals(self.signal).name

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without the checkpoint
        self.signal = signum

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
                # A signal the caller ignores stays ignored (a shell starts background jobs
                # with SIGINT ignored, as Python itself respects).
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


def stopped_message(name: str, it: int, run_dir: object) -> str:
    """The one sentence a stopped run reports."""
    by = name or "a signal to another process"
    return (
        f"stopped by {by} after iteration {it}; its checkpoint is saved, continue with "
        f"`ratgan train --resume --out {run_dir}`."
    )
