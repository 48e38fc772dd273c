"""keep_freed_host_memory really keeps freed memory in the process (glibc)."""

import subprocess
import sys

import pytest

PROBE = """
import sys
from ratgan.training.host_memory import keep_freed_host_memory
if sys.argv[1] == "on":
    assert keep_freed_host_memory()

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

block = bytearray(256 * 2**20)  # zero-filled, so every page is touched
block = None
print(rss_mb())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tuning is Linux-only")
def test_freed_memory_stays_in_the_process_only_when_asked():
    def rss_after_free(mode: str) -> float:
        done = subprocess.run(
            [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True
        )
        return float(done.stdout.strip())

    default, kept = rss_after_free("off"), rss_after_free("on")
    assert kept - default > 200, (default, kept)  # the 256 MB block stayed resident
