"""Type aliases for NumPy arrays, shared by every package's annotations.

The strict type check (docs/architecture.md, "Checks") refuses a bare ``np.ndarray``; these
names say what an array holds without repeating ``numpy.typing`` spellings everywhere.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

FloatArray: TypeAlias = npt.NDArray[np.floating[Any]]
"""An array of floats of any precision (a scan, a map of scores)."""

IntArray: TypeAlias = npt.NDArray[np.integer[Any]]
"""An array of integers of any width (a label map, indices)."""

BoolArray: TypeAlias = npt.NDArray[np.bool_]
"""A boolean array (a mask)."""

AnyArray: TypeAlias = npt.NDArray[Any]
"""An array whose dtype the function does not constrain."""
