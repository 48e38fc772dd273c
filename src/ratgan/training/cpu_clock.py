"""The CPU time of a training run, summed over every sitting of a resumed run.

Wall-clock seconds depend on whatever else the machine runs; the process's CPU time (every
thread, user + system) measures the compute a run consumed, so runs trained on a shared
machine, or in several sittings with ``--resume``, can be compared at equal compute.  Every
metrics.jsonl line carries it as ``cpu_seconds`` and every checkpoint stores it.
"""

from __future__ import annotations

import time


class CpuClock:
    """Process CPU time, continued from ``already`` seconds of earlier sittings."""

    def __init__(self, already: float = 0.0) -> None:
        self.offset = float(already) - time.process_time()

    def __call__(self) -> float:
        """CPU seconds of the run so far (rounded to milliseconds)."""
        return round(self.offset + time.process_time(), 3)
