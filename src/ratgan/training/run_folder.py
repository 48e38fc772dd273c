"""The run folder: checked before a run starts or resumes, written only once its data has been
read, removed again if a new run fails before its first checkpoint, its metrics log, sample
montages and best.pt cut back to the checkpoint a run resumes from.

A run without a checkpoint cannot be resumed or sampled, so what a failed start wrote
(config.yaml, data.json, the first metrics and sample montages) would only mislead: a later
``--resume`` would find a config but no data record, ``generate`` a run without weights.  What
a run killed before its first checkpoint left (no cleanup can run then) is never mixed into a
new run: a new run refuses the folder, and ``--resume`` starts that run again from iteration 0
without its old metrics, montages and best.pt.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

from ratgan.atomic import atomic_write_text
from ratgan.config import Config, DataConfig, augment_range_problems
from ratgan.data.dataset import Cohort, load_entries
from ratgan.data.io import ScanEntry, list_scans
from ratgan.digests import file_sha256
from ratgan.errors import RatganError
from ratgan.folder_lock import FolderLock
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


def write_new_run(
    run_dir: Path, cfg: Config, source: str | Path, cohort: Cohort, lock: FolderLock
) -> None:
    """Create the run folder (locked by ``lock``: see :meth:`FolderLock.create`) with its
    resolved config and data record (the training scans, their content digests, orientations,
    voxel sizes and preprocessing)."""
    lock.create()
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
                    file_sha256(e.image),
                    None if e.label is None else file_sha256(e.label),
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
    start are not picked up (a warning says so); a recorded scan that is gone, whose bytes
    differ from their recorded digest, or (in runs recorded without digests) whose content no
    longer preprocesses to what was recorded, is an error, since the caller would otherwise
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
    _check_digests(data.entries, str(record), need)
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


def _check_digests(scans: list[RunScan], record: str, need: str) -> None:
    """Refuse a recorded file whose bytes differ from the digest recorded when the run started
    (runs recorded without digests are checked by their preprocessing only)."""
    for scan in scans:
        for path, digest in ((scan.image, scan.sha256), (scan.label, scan.label_sha256)):
            if path is not None and digest is not None and file_sha256(path) != digest:
                raise RatganError(
                    f"{path} has changed since the run started (its SHA-256 differs from the "
                    f"one {record} records: the file was replaced or edited); {need}."
                )


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
    first checkpoint can remove what it added (and the folder, if it created it).  Made once
    ``lock`` holds the folder, if it exists: its lock file is then kept."""

    def __init__(self, run_dir: Path, lock: FolderLock) -> None:
        self.run_dir = run_dir
        self.lock = lock
        self.existed = run_dir.is_dir()
        self.before = {p.name for p in run_dir.iterdir()} if self.existed else set()

    def discard_if_unfinished(self) -> None:
        """Remove what the run added, unless it wrote a checkpoint (then it can be resumed)."""
        if not self.run_dir.is_dir() or ckpt.list_checkpoints(self.run_dir):
            return
        if not self.existed:
            if self.lock.created:  # not a folder another process created meanwhile
                shutil.rmtree(self.run_dir, ignore_errors=True)
            return
        for path in self.run_dir.iterdir():
            if path.name in self.before:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


_RESUME_KEYS = ("iterations", "device", "eval_every")
"""The train settings a resume may change (the stored config wins for the rest)."""


def prepare_run_dir(run_dir: Path, cfg: Config, resume: bool, is_main: bool) -> Config:
    """Check the run folder (every rank; an earlier run's leftovers only on rank 0,
    ``is_main``, since other ranks could see what rank 0 has begun writing) and return the
    config to train with: on resume the stored one with the allowed changes, which
    :func:`write_resumed_config` stores once the resume's checks have passed.  A new run's
    folder is written once its data has been read (``write_new_run``)."""
    found = ckpt.list_checkpoints(run_dir)
    if resume:
        if not run_paths(run_dir).config.is_file():
            raise RatganError(f"--resume: {run_dir} holds no run to resume.")
        stored = _resumed_config(run_dir, cfg)
        _refuse_augment_ranges(stored)
        if found:
            _refuse_edited_config(run_dir, stored, found[-1][1])
        if found and found[-1][0] > stored.train.iterations:
            raise RatganError(
                f"--resume: the run in {run_dir} has reached iteration "
                f"{found[-1][0]}, beyond the iteration target "
                f"{stored.train.iterations}."
            )
        return stored.validate()
    _refuse_augment_ranges(cfg)
    if found:
        raise RatganError(
            f"run folder {run_dir} already holds checkpoints; pass --resume to "
            "continue it or choose another --out."
        )
    if run_dir.exists() and not run_dir.is_dir():
        raise RatganError(f"--out {run_dir} is a file, not a run folder.")
    left = earlier_run_files(run_dir) if is_main else []
    if left:
        raise RatganError(
            f"run folder {run_dir} holds files of an earlier run that stopped before its first "
            f"checkpoint ({', '.join(left)}); pass --resume to start that run again from "
            "iteration 0, or choose another --out."
        )
    return cfg


def _refuse_augment_ranges(cfg: Config) -> None:
    """Raise RatganError for augmentation strengths that would train on blank or turned
    volumes (:func:`ratgan.config.augment_range_problems`)."""
    problems = augment_range_problems(cfg)
    if problems:
        raise RatganError(f"invalid config: {'; '.join(problems)}.")


def _refuse_edited_config(run_dir: Path, stored: Config, checkpoint: Path) -> None:
    """Raise RatganError when the run's config.yaml differs from the config its newest
    checkpoint trained with, beyond what a resume may change.

    A hand edit of config.yaml between sittings took effect in part: an edited loss weight
    did, an edited learning rate did not (the optimiser's state, learning rate included, comes
    from the checkpoint), while the run recorded the edit as its setting. An unreadable
    checkpoint is left to the trainer, which falls back over it.
    """
    from ratgan.config import config_from_dict

    try:
        state = ckpt.load_checkpoint(checkpoint, mmap=True)
    except RatganError:
        return
    if "config" not in state:
        return
    trained = _with_resume_settings(config_from_dict(state["config"]), stored)
    changed = _changed_settings(trained, stored)
    if changed:
        diffs = "; ".join(f"{k} {old} -> {new}" for k, (old, new) in list(changed.items())[:5])
        raise RatganError(
            f"--resume: {run_paths(run_dir).config} differs from the config its checkpoint "
            f"{checkpoint.name} trained with ({diffs}); a resume continues the run as it was "
            "(the optimiser's state, learning rate included, comes from the checkpoint), so "
            "restore config.yaml, or start a new run from the checkpoint with "
            "benchmarks/branch_run.py."
        )


def _resumed_config(run_dir: Path, cfg: Config) -> Config:
    """The stored config wins on resume: only the iteration target, the device and the
    evaluation interval (which does not change the training) come from ``cfg``."""
    return _with_resume_settings(read_run_config(run_dir), cfg)


def _with_resume_settings(base: Config, source: Config) -> Config:
    """``base`` with the settings a resume may change taken from ``source``."""
    for key in _RESUME_KEYS:
        setattr(base.train, key, getattr(source.train, key))
    return base


def _changed_settings(old: Config, new: Config) -> dict[str, tuple[Any, Any]]:
    """The dotted settings whose value differs, with (old value, new value)."""
    before, after = _dotted(old), _dotted(new)
    return {k: (before.get(k), v) for k, v in after.items() if before.get(k) != v}


def settings_a_resume_would_ignore(run_dir: Path, cfg: Config) -> list[str]:
    """The dotted settings of ``cfg`` that differ from the run stored in ``run_dir`` and that
    a resume would not apply; empty when ``run_dir`` holds no run."""
    if not run_paths(run_dir).config.is_file():
        return []
    return list(_changed_settings(_resumed_config(run_dir, cfg), cfg))


def _dotted(cfg: Config) -> dict[str, Any]:
    """Every setting of ``cfg`` by its dotted name (``train.seed``)."""
    flat: dict[str, Any] = {}
    for section, value in cfg.to_dict().items():
        if isinstance(value, dict):
            flat.update({f"{section}.{key}": v for key, v in value.items()})
        else:
            flat[section] = value
    return flat


def write_resumed_config(run_dir: Path, cfg: Config) -> None:
    """Store the resumed run's config (a new iteration target, device or evaluation interval)
    when it differs from the stored one; called once the resume's checks have passed, so that
    a refused resume leaves the run's config.yaml as it was."""
    stored = read_run_config(run_dir)
    if any(getattr(stored.train, k) != getattr(cfg.train, k) for k in _RESUME_KEYS):
        write_run_config(run_dir, cfg)  # the run folder states its new target


_SAMPLE = re.compile(r"^iter_(\d{7})\.png$")


def sample_montages(run_dir: Path) -> list[tuple[int, Path]]:
    """(iteration, path) of the sample montages the trainer wrote into ``run_dir``, oldest
    first."""
    folder = run_paths(run_dir).samples
    if not folder.is_dir():
        return []
    return sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := _SAMPLE.match(p.name)))


def earlier_run_files(run_dir: Path) -> list[str]:
    """The files a trainer writes that ``run_dir`` already holds (relative names): what a run
    killed before its first checkpoint leaves behind."""
    paths = run_paths(run_dir)
    files = [paths.config, paths.data, paths.metrics, paths.loss_curves, paths.quality_curves]
    files += [paths.best_checkpoint] + [p for _, p in sample_montages(run_dir)]
    if paths.tensorboard.is_dir():
        files += [p for p in paths.tensorboard.iterdir() if p.is_file()]
    return [str(p.relative_to(run_dir)) for p in files if p.is_file()]


def no_checkpoint_message(run_dir: Path) -> str:
    """What ``--resume`` says of a run folder without a checkpoint."""
    return (
        f"resume: {run_dir} holds no checkpoint yet; starting from iteration 0 (the earlier "
        "metrics lines, sample montages and best.pt are dropped)"
    )


def rewind_run(run_dir: Path, iteration: int) -> bool:
    """Drop what the run folder holds from after ``iteration``, the checkpoint a run resumes
    from (0 when it has none): later metrics lines, sample montages and a later
    checkpoints/best.pt, all of an abandoned continuation.  True when best.pt was removed."""
    truncate_metrics(run_paths(run_dir).metrics, iteration)
    for it, path in sample_montages(run_dir):
        if it > iteration:
            path.unlink(missing_ok=True)
    return ckpt.discard_best_after(run_dir, iteration)


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
