"""A new run folder: written only once its data has been read, removed again if the run
fails before its first checkpoint.

A run without a checkpoint cannot be resumed or sampled, so what a failed start wrote
(config.yaml, data.json, the first metrics and sample montages) would only mislead: a later
``--resume`` would find a config but no data record, ``generate`` a run without weights.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ratgan.config import Config
from ratgan.data.dataset import Cohort
from ratgan.runs import RunData, RunScan, write_run_config, write_run_data
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
