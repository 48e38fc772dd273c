"""The run folder: checked before a run starts or resumes, written only once its data has been
read, removed again if a new run fails before its first checkpoint, its metrics log cut back to
the checkpoint a run resumes from.

A run without a checkpoint cannot be resumed or sampled, so what a failed start wrote
(config.yaml, data.json, the first metrics and sample montages) would only mislead: a later
``--resume`` would find a config but no data record, ``generate`` a run without weights.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from ratgan.atomic import atomic_write_text
from ratgan.config import Config, DataConfig
from ratgan.data.dataset import Cohort, load_entries
from ratgan.data.io import ScanEntry, list_scans
from ratgan.errors import RatganError
from ratgan.runs import (
    RunData,
    RunScan,
    read_run_config,
    read_run_data,
    run_paths,
    write_run_config,
    write_run_data,
)
from ratgan.training import checkpoint as ckpt

log = logging.getLogger(__name__)


def write_new_run(run_dir: Path, cfg: Config, source: str | Path, cohort: Cohort) -> None:
    """Create the run folder with its resolved config and data record (the training scans,
    their orientations, voxel sizes and preprocessing)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    write_run_config(run_dir, cfg)
    orientations: list[str | None] = [*cohort.orientations] or [None] * len(cohort.entries)
    sizes: list[tuple[float, float, float] | None] = [*cohort.voxel_sizes] or [None] * len(
        cohort.entries
    )
    write_run_data(
        run_dir,
        RunData(
            # absolute, so that the record means the same from any working directory
            source=os.path.abspath(str(source)),
            entries=[
                RunScan(
                    str(Path(e.image).resolve()),
                    None if e.label is None else str(Path(e.label).resolve()),
                    orientation,
                    size,
                )
                for e, orientation, size in zip(cohort.entries, orientations, sizes, strict=True)
            ],
            infos=[i.to_dict() for i in cohort.infos],
        ),
    )


# Why a caller needs exactly the recorded scans: the end of its error sentences and of its
# warning when the data source changed.
_NEEDS = {
    "resume": (
        "the run can only resume on the scans it started with",
        "the resumed run continues on the {n} scans it started with",
    ),
    "kde": (
        "`--codes kde` encodes the scans the run trained on (restore the file, or generate with "
        "`--codes prior`)",
        "`--codes kde` encodes the {n} scans the run trained on",
    ),
}


def load_recorded_cohort(
    run_dir: Path,
    data_cfg: DataConfig,
    require_labels: bool = False,
    progress: bool = True,
    purpose: str = "resume",
) -> Cohort:
    """The scans a run started with, as its data.json records them.

    A resumed run continues on exactly these scans, from any working directory: its data
    stream's state indexes them; ``purpose="kde"`` reads them for generation's kernel-density
    codes, and the messages say so.  Scans added to or removed from the data source since the
    start are not picked up (a warning says so); a recorded scan that is gone, or whose content
    no longer preprocesses to what was recorded, is an error, since the caller would otherwise
    work on other data than the run trained on.
    """
    need, note = _NEEDS[purpose]
    data = read_run_data(run_dir)
    record = run_paths(run_dir).data
    entries = [
        ScanEntry(Path(e.image), None if e.label is None else Path(e.label)) for e in data.entries
    ]
    for e in entries:
        for path in (e.image, e.label):
            if path is not None and not path.is_file():
                raise RatganError(
                    f"{path}, a training scan recorded in {record}, no longer exists; {need}."
                )
    if require_labels and any(e.label is None for e in entries):
        raise RatganError(f"{record} records scans without label maps, but labels are required.")
    _warn_if_source_changed(data.source, entries, note)
    cohort = load_entries(entries, data_cfg, progress, str(record))
    infos = json.loads(json.dumps([i.to_dict() for i in cohort.infos]))
    if data.infos and len(data.infos) == len(infos):
        for entry, now, then in zip(entries, infos, data.infos, strict=True):
            changed = sorted(k for k in set(now) | set(then) if now.get(k) != then.get(k))
            if changed:
                raise RatganError(
                    f"{entry.image} has changed since the run started (its preprocessing "
                    f"gives other {', '.join(changed)} than {record} records: the file was "
                    "replaced, or ratgan's preprocessing changed); "
                    f"{need}."
                )
    return cohort


def _warn_if_source_changed(source: str, entries: list[ScanEntry], note: str) -> None:
    """Log when the run's data source now lists other scans than the run started with."""
    try:
        now = {str(e.image.resolve()) for e in list_scans(source)}
    except (RatganError, OSError):
        return  # the source moved or is gone: the recorded scans are what counts
    then = {str(e.image) for e in entries}
    if now != then:
        log.warning(
            "%s now lists %d scans (%d not in the run, %d of the run's missing from it); %s",
            source,
            len(now),
            len(now - then),
            len(then - now),
            note.format(n=len(then)),
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
