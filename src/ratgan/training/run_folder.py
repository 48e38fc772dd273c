"""The run folder: checked before a run starts or resumes, written only once its data has been
read, removed again if a new run fails before its first checkpoint, its metrics log cut back to
the checkpoint a run resumes from.

A run without a checkpoint cannot be resumed or sampled, so what a failed start wrote
(config.yaml, data.json, the first metrics and sample montages) would only mislead: a later
``--resume`` would find a config but no data record, ``generate`` a run without weights.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ratgan.atomic import atomic_write_text
from ratgan.config import Config
from ratgan.data.dataset import Cohort
from ratgan.errors import RatganError
from ratgan.runs import (
    RunData,
    RunScan,
    read_run_config,
    run_paths,
    write_run_config,
    write_run_data,
)
from ratgan.training import checkpoint as ckpt


def write_new_run(run_dir: Path, cfg: Config, source: str | Path, cohort: Cohort) -> None:
    """Create the run folder with its resolved config and data record (the training scans,
    their orientations and preprocessing)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    write_run_config(run_dir, cfg)
    orientations: list[str | None] = [*cohort.orientations] or [None] * len(cohort.entries)
    write_run_data(
        run_dir,
        RunData(
            source=str(source),
            entries=[
                RunScan(
                    str(Path(e.image).resolve()),
                    None if e.label is None else str(Path(e.label).resolve()),
                    orientation,
                )
                for e, orientation in zip(cohort.entries, orientations, strict=True)
            ],
            infos=[i.to_dict() for i in cohort.infos],
        ),
    )


class NewRunGuard:
    """What the run folder held before a new run started, so that a run failing before its
    first checkpoint can remove what it added (and the folder, if it created it)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.existed = run_dir.is_dir()
        self.before = {p.name for p in run_dir.iterdir()} if self.existed else set()

    def discard_if_unfinished(self) -> None:
        """Remove what the run added, unless it wrote a checkpoint (then it can be resumed)."""
        if not self.run_dir.is_dir() or ckpt.list_checkpoints(self.run_dir):
            return
        if not self.existed:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            return
        for path in self.run_dir.iterdir():
            if path.name in self.before:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def prepare_run_dir(run_dir: Path, cfg: Config, resume: bool, write: bool) -> Config:
    """Check the run folder (every rank); on resume, store a changed iteration target (rank 0
    only).  A new run's folder is written once its data has been read (``write_new_run``)."""
    has_ckpt = bool(ckpt.list_checkpoints(run_dir))
    if resume:
        if not run_paths(run_dir).config.is_file():
            raise RatganError(f"--resume: {run_dir} holds no run to resume.")
        # The stored config wins: only the iteration target, the device and the evaluation
        # interval (which does not change the training) may change.
        stored = read_run_config(run_dir)
        keys = ("iterations", "device", "eval_every")
        changed = any(getattr(stored.train, k) != getattr(cfg.train, k) for k in keys)
        for key in keys:
            setattr(stored.train, key, getattr(cfg.train, key))
        found = ckpt.list_checkpoints(run_dir)
        if found and found[-1][0] > stored.train.iterations:
            raise RatganError(
                f"--resume: the run in {run_dir} has reached iteration "
                f"{found[-1][0]}, beyond the iteration target "
                f"{stored.train.iterations}."
            )
        if changed and write:
            write_run_config(run_dir, stored)  # the run folder states its new target
        return stored.validate()
    if has_ckpt:
        raise RatganError(
            f"run folder {run_dir} already holds checkpoints; pass --resume to "
            "continue it or choose another --out."
        )
    if run_dir.exists() and not run_dir.is_dir():
        raise RatganError(f"--out {run_dir} is a file, not a run folder.")
    return cfg


def truncate_metrics(path: Path, iteration: int) -> None:
    """Drop log lines written after the checkpoint a run resumes from."""
    if not path.is_file():
        return
    keep = [
        ln
        for ln in path.read_text().splitlines()
        if ln.strip() and json.loads(ln)["iteration"] <= iteration
    ]
    atomic_write_text(path, "".join(ln + "\n" for ln in keep))
