"""The output folder of a generation: one set of scans, never a mixture.

A generation owns its folder through ``manifest.json``, written *before* the first scan with
``"complete": false`` and the settings that define the set (run, checkpoint and its iteration,
weights, seed, reference, precision, batch size, file prefix), and rewritten with
``"complete": true`` and every scan's record once all files are in place.  A later generation
into the same folder is allowed only when the folder holds nothing but such a set (its
manifest, its scan files and label maps, leftovers of its killed writers) and the settings
agree; it then writes the set again in full and removes the files beyond its ``n``, so the
files and the manifest always describe the same set.  Anything else — real scans, another
run's or another seed's scans, a manifest of an older ratgan — is refused before anything is
written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ratgan.atomic import atomic_write_json, leftovers
from ratgan.errors import RatganError

MANIFEST = "manifest.json"
LABELS_DIR = "labels"
COPY_REPORT = "near_copies.json"
"""The copy check's report (:mod:`ratgan.evaluation.copy_check`), written beside the scans by
``ratgan generate --copy-check``: part of the set, and removed when the set is rewritten."""


def _scan_name(prefix: str) -> re.Pattern[str]:
    """File names of a generation's scans: PREFIX_00012.nii or .nii.gz."""
    return re.compile(rf"^{re.escape(prefix)}_(\d{{5}})\.nii(\.gz)?$")


def is_complete_set(folder: str | Path) -> bool:
    """Whether ``folder`` holds a finished generation (its manifest says ``complete``).

    A manifest without the ``complete`` field was written by a ratgan that wrote it last,
    after every scan, so it counts as complete too.
    """
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return False
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and bool(manifest.get("complete", True))


def refuse_unfinished(folders: Iterable[str | Path], what: str) -> None:
    """Raise RatganError, naming ``what`` (e.g. a set's name) and the folder, when one of
    ``folders`` holds a ``ratgan generate`` output whose manifest does not say complete: a
    killed generation leaves fewer scans than asked for, and a reader must not take them for
    the set.  Folders without a manifest (scans from elsewhere) pass."""
    for folder in sorted({Path(f) for f in folders}):
        if (folder / MANIFEST).is_file() and not is_complete_set(folder):
            raise RatganError(
                f"{what}: folder {folder} holds an unfinished or unreadable generation (its "
                f"{MANIFEST} does not say complete: true); rerun `ratgan generate` into it to "
                "finish the set."
            )


@dataclass
class OutputFolder:
    """The checked output folder of one generation; :meth:`claim` before writing a scan."""

    path: Path
    prefix: str
    previous: dict[str, Any] | None
    """The manifest of the set the folder holds now, or None for an empty or new folder."""

    @classmethod
    def inspect(cls, path: str | Path, prefix: str) -> OutputFolder:
        """Check that ``path`` is a folder (or can become one) holding nothing but an earlier
        generation with ``prefix``; raises RatganError naming what else is there."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise RatganError(f"--out {path} is a file, not a folder for the scans.")
        if not path.exists():
            return cls(path, prefix, None)
        foreign = _foreign_entries(path, prefix)
        if foreign:
            shown = ", ".join(foreign[:3]) + (" ..." if len(foreign) > 3 else "")
            raise RatganError(
                f"output folder {path} already holds {len(foreign)} "
                f"{'entry' if len(foreign) == 1 else 'entries'} that ratgan generate did not "
                f"write ({shown}); synthetic scans must not be mixed with other files: "
                "choose an empty or new --out."
            )
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            # label maps too: a reader pairs labels/NAME with the new scan NAME, so a map left
            # by another set would be taken for the new scan's
            pattern = _scan_name(prefix)
            ours = [p.name for p in sorted(path.iterdir()) if pattern.match(p.name)]
            if (path / LABELS_DIR).is_dir():
                ours += [
                    f"{LABELS_DIR}/{p.name}"
                    for p in sorted((path / LABELS_DIR).iterdir())
                    if pattern.match(p.name)
                ]
            if ours:
                raise RatganError(
                    f"output folder {path} holds {len(ours)} scan files or label maps such as "
                    f"{ours[0]} but no {MANIFEST}, so nothing says which generation wrote "
                    "them; choose an empty or new --out."
                )
            return cls(path, prefix, None)
        return cls(path, prefix, _read_manifest(manifest_path))

    def claim(self, settings: dict[str, Any], n: int, run: str) -> None:
        """Take the folder for the set ``settings`` of ``n`` scans: refuse another set's folder,
        write the incomplete manifest and remove what the new set does not contain."""
        if self.previous is not None:
            _check_same_set(self.path, self.previous, settings)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RatganError(
                f"cannot create output folder {self.path} ({exc.strerror or exc})."
            ) from None
        atomic_write_json(self.path / MANIFEST, _manifest(run, n, settings, [], complete=False))
        (self.path / COPY_REPORT).unlink(missing_ok=True)  # it described the earlier set
        self._remove_beyond(n)

    def finish(self, settings: dict[str, Any], n: int, run: str, records: list[dict]) -> None:
        """Write the complete manifest: the set is whole."""
        atomic_write_json(self.path / MANIFEST, _manifest(run, n, settings, records, True))

    def _remove_beyond(self, n: int) -> None:
        """Delete the scans and label maps of the earlier set with an index >= ``n``, and the
        temporary files that killed writers left."""
        pattern = _scan_name(self.prefix)
        for folder in (self.path, self.path / LABELS_DIR):
            if not folder.is_dir():
                continue
            for leftover in leftovers(folder, f"{self.prefix}_*"):
                leftover.unlink(missing_ok=True)
            for path in folder.iterdir():
                match = pattern.match(path.name)
                if match and int(match.group(1)) >= n:
                    path.unlink(missing_ok=True)
        for leftover in leftovers(self.path, MANIFEST):
            leftover.unlink(missing_ok=True)


def _manifest(
    run: str, n: int, settings: dict[str, Any], records: list[dict], complete: bool
) -> dict[str, Any]:
    return {
        "run": run,
        "n": n,
        "seed": settings["seed"],
        "complete": complete,
        "settings": settings,
        "scans": records,
    }


def _foreign_entries(path: Path, prefix: str) -> list[str]:
    """Entries of ``path`` (and of its labels/ folder) that a generation with ``prefix`` does
    not write: anything but its manifest, scans and label maps.  Hidden entries (the writers'
    temporary files among them) are not counted: no reader of scan folders lists them."""
    pattern = _scan_name(prefix)
    foreign = []
    for entry in sorted(path.iterdir()):
        name = entry.name
        if name.startswith("."):  # hidden: never listed as a scan (ratgan.data.io)
            continue
        if name in (MANIFEST, COPY_REPORT) and entry.is_file():
            continue
        if name == LABELS_DIR and entry.is_dir():
            foreign += [
                f"{LABELS_DIR}/{p.name}"
                for p in sorted(entry.iterdir())
                if not (p.name.startswith(".") or (p.is_file() and pattern.match(p.name)))
            ]
            continue
        if not (entry.is_file() and pattern.match(name)):
            foreign.append(name + ("/" if entry.is_dir() else ""))
    return foreign


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RatganError(
            f"{path} cannot be read ({type(exc).__name__}), so nothing says which "
            "generation wrote the folder; choose an empty or new --out."
        ) from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("settings"), dict):
        raise RatganError(
            f"{path} was written by an older ratgan and does not record the settings of its "
            "scans, so a new generation cannot tell whether it would mix two sets; choose an "
            "empty or new --out."
        )
    return manifest


def _check_same_set(path: Path, previous: dict[str, Any], settings: dict[str, Any]) -> None:
    """Raise unless the folder's set was made with ``settings`` (``n`` may differ)."""
    old = previous["settings"]
    # every key of either side: a setting only one kind of set has (kde's codes and width)
    # differs from its absence
    keys = list(settings) + [k for k in old if k not in settings]
    changed = [k for k in keys if old.get(k) != settings.get(k)]
    if changed:
        diffs = "; ".join(f"{k} {old.get(k)} -> {settings.get(k)}" for k in changed)
        raise RatganError(
            f"output folder {path} holds the scans of another generation ({diffs}); writing "
            "into it would mix two sets: choose an empty or new --out, or the same settings "
            "to complete or replace that set."
        )
