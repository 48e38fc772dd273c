"""Seeds derived from other seeds, for random streams that must not overlap.

Adding an offset (``seed + 2**32``) does not give another stream: torch's CPU generator keeps
only the low 32 bits of a seed, and small offsets make neighbouring seeds' streams coincide.
NumPy's ``SeedSequence`` mixes all the numbers into one 32-bit seed instead.
"""

from __future__ import annotations

import numpy as np


def derived_seed(*parts: int) -> int:
    """A 32-bit seed mixed from non-negative ``parts`` (e.g. a scan's seed and a stream
    number): other parts give an unrelated seed, the same parts the same one."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, dtype=np.uint32)[0])
