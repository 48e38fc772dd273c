"""Checkpoints holding the whole training state, written atomically.

A checkpoint is written to ``ckpt_XXXXXXX.pt.tmp`` in the run's ``checkpoints/`` folder, flushed
and fsync'ed, then renamed: a process killed at any moment leaves either the previous complete
checkpoints or the new complete one, never a half-written file under a checkpoint name.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import torch

from ratgan import __version__
from ratgan.errors import RatganError

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^ckpt_(\d{7})\.pt$")


def checkpoint_path(run_dir: Path, iteration: int) -> Path:
    """Where the checkpoint of ``iteration`` lives inside a run folder."""
    return Path(run_dir) / CHECKPOINT_DIR / f"ckpt_{iteration:07d}.pt"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run, oldest first (temporary files are not listed)."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _NAME.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


class _PausingWriter:
    """File wrapper that sleeps once after ``pause_after`` bytes.

    Only used when the environment variable RATGAN_TEST_CHECKPOINT_PAUSE="ITERATION:SECONDS" is
    set, so that a test can SIGKILL a real training process in the middle of writing the
    checkpoint of ITERATION.
    """

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


def save_checkpoint(run_dir: Path, iteration: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Write ``state`` (plus version and iteration) atomically; keep the newest ``keep`` files."""
    final = checkpoint_path(run_dir, iteration)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(final.name + ".tmp")
    payload = {"format": 1, "ratgan_version": __version__, "iteration": iteration, **state}
    pause = os.environ.get("RATGAN_TEST_CHECKPOINT_PAUSE", "")
    with open(tmp, "wb") as handle:
        target: Any = handle
        if pause and int(pause.split(":")[0]) == iteration:
            target = _PausingWriter(handle, pause_after=4096, seconds=float(pause.split(":")[1]))
        torch.save(payload, target)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    for _, old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return final


BEST = "best"
"""Name of the checkpoint kept by the quality metric during training (checkpoints/best.pt)."""


def named_checkpoint_path(run_dir: Path, name: str) -> Path:
    """Where a named checkpoint (``best``) of a run lives."""
    return Path(run_dir) / CHECKPOINT_DIR / f"{name}.pt"


def save_named_checkpoint(run_dir: Path, name: str, iteration: int, state: dict[str, Any]
                          ) -> Path:
    """Write a checkpoint under a name outside the rotation (temporary file, fsync, rename)."""
    final = named_checkpoint_path(run_dir, name)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(final.name + ".tmp")
    payload = {"format": 1, "ratgan_version": __version__, "iteration": iteration, **state}
    with open(tmp, "wb") as handle:
        torch.save(payload, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    return final


def resolve_checkpoint(run_dir: Path, which: str | Path | None) -> Path:
    """``None``/``latest``: the newest checkpoint; ``best``: checkpoints/best.pt; else a path."""
    if which is None or str(which) == "latest":
        path = latest_checkpoint(run_dir)
        if path is None:
            raise RatganError(f"run folder {run_dir} holds no checkpoint yet.")
        return path
    if str(which) == BEST:
        path = named_checkpoint_path(run_dir, BEST)
        if not path.is_file():
            raise RatganError(f"run folder {run_dir} has no {CHECKPOINT_DIR}/{BEST}.pt: it was "
                              "trained without train.eval_every, or no evaluation has run yet.")
        return path
    path = Path(which)
    if not path.is_file():
        raise RatganError(f"checkpoint {path} does not exist.")
    return path


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu", mmap: bool = False
                    ) -> dict[str, Any]:
    """Read one checkpoint file; a damaged file gives a RatganError naming it.

    ``mmap`` maps the file instead of reading it: tensors are paged in when used, so a reader
    that needs one network does not read them all.
    """
    try:
        state = torch.load(path, map_location=map_location, weights_only=False, mmap=mmap)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for damaged files
        raise RatganError(f"checkpoint {path} cannot be read ({type(exc).__name__}).") from None
    if not isinstance(state, dict) or "iteration" not in state:
        raise RatganError(f"checkpoint {path} is not a ratgan checkpoint.")
    return state


def latest_checkpoint(run_dir: Path, remove_leftovers: bool = False) -> Path | None:
    """The newest complete checkpoint of a run, or None.

    ``remove_leftovers`` deletes ``.tmp`` files of interrupted writes: only for the trainer that
    owns the run (when resuming), never for a reader, which would delete the temporary file of a
    checkpoint that a running training is writing.
    """
    folder = Path(run_dir) / CHECKPOINT_DIR
    if remove_leftovers and folder.is_dir():
        for leftover in folder.glob("*.pt.tmp"):
            leftover.unlink(missing_ok=True)
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def capture_rng_state() -> dict[str, Any]:
    """The global RNG states (CPU and CUDA) that a resumed run restores."""
    state: dict[str, Any] = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["torch_cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``capture_rng_state`` captured (CUDA states only where CUDA exists)."""
    torch.set_rng_state(state["torch_cpu"])
    if "torch_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["torch_cuda"])
