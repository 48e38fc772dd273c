"""Checkpoints holding the whole training state, written atomically.

A checkpoint is written through ``ratgan.atomic`` (a hidden temporary file in the run's
``checkpoints/`` folder, flushed and fsync'ed, then renamed): a process killed at any moment
leaves either the previous complete checkpoints or the new complete one, never a half-written
file under a checkpoint name.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from ratgan import __version__
from ratgan.atomic import atomic_path, leftovers
from ratgan.errors import RatganError
from ratgan.runs import run_paths

_NAME = re.compile(r"^ckpt_(\d{7})\.pt$")


def checkpoint_path(run_dir: Path, iteration: int) -> Path:
    """Where the checkpoint of ``iteration`` lives inside a run folder."""
    return run_paths(run_dir).checkpoints / f"ckpt_{iteration:07d}.pt"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run, oldest first (temporary files are not listed)."""
    return checkpoints_in(run_paths(run_dir).checkpoints)


def checkpoints_in(folder: Path) -> list[tuple[int, Path]]:
    """(iteration, path) of the ``ckpt_NNNNNNN.pt`` files in ``folder`` (a run's
    ``checkpoints/`` or a copy of them), oldest first; none when it does not exist."""
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _NAME.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def save_checkpoint(run_dir: Path, iteration: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Write ``state`` (plus version and iteration) atomically; keep the newest ``keep`` files."""
    final = checkpoint_path(run_dir, iteration)
    final.parent.mkdir(parents=True, exist_ok=True)
    _write(final, iteration, state)
    for _, old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return final


def _write_failed(final: Path, exc: OSError) -> str:
    """The one sentence for a checkpoint that could not be written."""
    kept = [path.name for _, path in list_checkpoints(final.parent.parent)]
    head = f"cannot write checkpoint {final} ({exc.strerror or exc}); "
    if not kept:
        return head + "no earlier checkpoint exists."
    return head + (
        f"the previous checkpoint {kept[-1]} is kept intact, and --resume continues "
        "from it once the problem is solved."
    )


def save_best_checkpoint(run_dir: Path, iteration: int, state: dict[str, Any]) -> Path:
    """Write checkpoints/best.pt (outside the rotation), atomically."""
    final = run_paths(run_dir).best_checkpoint
    final.parent.mkdir(parents=True, exist_ok=True)
    _write(final, iteration, state)
    return final


def discard_best_after(run_dir: Path, iteration: int) -> bool:
    """Remove checkpoints/best.pt when it was written after ``iteration`` (the checkpoint a run
    resumes from): it belongs to the abandoned continuation, which the resumed run replays
    differently.  True when it was removed (an unreadable best.pt is removed too)."""
    path = run_paths(run_dir).best_checkpoint
    if not path.is_file():
        return False
    try:
        written_at = int(load_checkpoint(path, mmap=True)["iteration"])
    except RatganError:
        written_at = iteration + 1
    if written_at <= iteration:
        return False
    path.unlink()
    return True


def _write(final: Path, iteration: int, state: dict[str, Any]) -> None:
    payload = {"format": 1, "ratgan_version": __version__, "iteration": iteration, **state}
    try:
        with atomic_path(final) as tmp:  # removes the temporary file on any error
            torch.save(payload, tmp)
    except OSError as exc:  # a full disk, a quota, a vanished folder...
        raise RatganError(_write_failed(final, exc)) from None


def resolve_checkpoint(run_dir: Path, which: str | Path | None) -> Path:
    """``None``/``latest``: the newest checkpoint; ``best``: checkpoints/best.pt; else a path."""
    if which is None or str(which) == "latest":
        path = latest_checkpoint(run_dir)
        if path is None:
            raise RatganError(f"run folder {run_dir} holds no checkpoint yet.")
        return path
    if str(which) == "best":
        path = run_paths(run_dir).best_checkpoint
        if not path.is_file():
            raise RatganError(
                f"run folder {run_dir} has no {path.name} in its checkpoints: it "
                "was trained without train.eval_every, or no evaluation ran yet."
            )
        return path
    path = Path(which)
    if not path.is_file():
        raise RatganError(f"checkpoint {path} does not exist.")
    return path


def load_checkpoint(
    path: Path, map_location: str | torch.device = "cpu", mmap: bool = False
) -> dict[str, Any]:
    """Read one checkpoint file; a damaged file gives a RatganError naming it.

    ``mmap`` maps the file instead of reading it: tensors are paged in when used, so a reader
    that needs one network does not read them all.
    """
    try:
        state = torch.load(path, map_location=map_location, weights_only=False, mmap=mmap)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for damaged files
        first = str(exc).strip().split(". ")[0].splitlines()[0][:120] if str(exc).strip() else ""
        reason = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        raise RatganError(f"checkpoint {path} cannot be read ({reason}).") from None
    if not isinstance(state, dict) or "iteration" not in state:
        raise RatganError(f"checkpoint {path} is not a ratgan checkpoint.")
    return state


def latest_checkpoint(run_dir: Path, remove_leftovers: bool = False) -> Path | None:
    """The newest complete checkpoint of a run, or None.

    ``remove_leftovers`` deletes the temporary files of interrupted writes: only for the trainer
    that owns the run (when resuming), never for a reader, which would delete the temporary file
    of a checkpoint that a running training is writing.
    """
    if remove_leftovers:
        for leftover in leftovers(run_paths(run_dir).checkpoints, "ckpt_*.pt"):
            leftover.unlink(missing_ok=True)
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def newest_readable_checkpoint(
    run_dir: Path, map_location: str | torch.device = "cpu"
) -> tuple[Path, dict[str, Any], list[str]] | None:
    """The newest checkpoint of a run that can be read, for the trainer resuming it: (its path,
    its state, one sentence per newer checkpoint skipped because it cannot be read), or None
    when the run has no checkpoint.  Removes the temporary files of interrupted writes (see
    :func:`latest_checkpoint`); raises RatganError when no checkpoint can be read.
    """
    latest_checkpoint(run_dir, remove_leftovers=True)
    skipped: list[str] = []
    for _, path in reversed(list_checkpoints(run_dir)):
        try:
            return path, load_checkpoint(path, map_location=map_location), skipped
        except RatganError as exc:
            skipped.append(str(exc).rstrip("."))
    if skipped:
        raise RatganError(f"no checkpoint of {run_dir} can be read: {'; '.join(skipped)}.")
    return None


def capture_rng_state() -> dict[str, Any]:
    """The global RNG states (CPU and CUDA) that a resumed run restores."""
    state: dict[str, Any] = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["torch_cuda"] = torch.cuda.get_rng_state_all()
    return state


def rng_state_tensor(state: torch.Tensor) -> torch.Tensor:
    """A stored RNG state as every torch generator's ``set_state`` takes it, CUDA ones too: a
    CPU uint8 tensor, whichever device the checkpoint was mapped to when it was loaded (a run
    resumed on a GPU loads its checkpoint there)."""
    return state.detach().to("cpu", torch.uint8)


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``capture_rng_state`` captured (CUDA states only where CUDA exists)."""
    torch.set_rng_state(rng_state_tensor(state["torch_cpu"]))
    if "torch_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([rng_state_tensor(s) for s in state["torch_cuda"]])
