"""A visual Turing test study stored in one SQLite file.

The file holds everything: the drawn scans (their rendered sprite sheets, origin and answer
key), the raters with their private tokens, each rater's shuffled list of items with opaque
random identifiers, and the answers. Answers are final: a unique key per item makes a second
answer impossible, triggers forbid updates and deletions, and each answer is written in one
transaction, so a double click or a crash can neither duplicate nor lose one.
"""

from __future__ import annotations

import hmac
import json
import math
import os
import re
import secrets
import sqlite3
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ratgan.arrays import IntArray
from ratgan.atomic import atomic_path, leftovers
from ratgan.digests import FileDigests, file_sha256, shared_files
from ratgan.errors import RatganError
from ratgan.folder_lock import FolderLock, remove_if_empty
from ratgan.turing.render import WINDOW_PERCENTILES, layout_for, render_scan

if TYPE_CHECKING:
    from ratgan.data.io import ScanEntry

SCHEMA_VERSION = 1
STUDY_FILENAME = "study.sqlite"
LINKS_FILENAME = "links.txt"
REAL = "real"
SYNTHETIC = "synthetic"
ANSWERS = (REAL, SYNTHETIC)
DEFAULT_BASE_URL = "http://127.0.0.1:8765"
RESERVED_RATER_NAMES = ("all raters", "admin")
"""Names taken by the pooled column of the results and by the organiser's link."""
RESERVED_MODEL_NAMES = ("expertise", "answered")
"""Row labels of Table 3 that a model name (letters, digits, '_', '.', '+', '-') could repeat."""

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE scan (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,        -- 'real' or the name of the model that generated it
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,        -- of the image file, for provenance
    png BLOB NOT NULL            -- the sprite sheet served to raters
);
CREATE TABLE rater (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    expertise TEXT NOT NULL DEFAULT '',
    token TEXT NOT NULL UNIQUE
);
CREATE TABLE item (
    id INTEGER PRIMARY KEY,
    rater_id INTEGER NOT NULL REFERENCES rater(id),
    position INTEGER NOT NULL,   -- 1-based order in which this rater sees the scans
    scan_id INTEGER NOT NULL REFERENCES scan(id),
    public_id TEXT NOT NULL UNIQUE,
    UNIQUE (rater_id, position),
    UNIQUE (rater_id, scan_id)
);
CREATE TABLE answer (
    item_id INTEGER PRIMARY KEY REFERENCES item(id),
    answer TEXT NOT NULL CHECK (answer IN ('real', 'synthetic')),
    answered_at TEXT NOT NULL,
    elapsed_ms INTEGER
);
CREATE TRIGGER answer_is_final_update BEFORE UPDATE ON answer
BEGIN SELECT RAISE(ABORT, 'answers are final'); END;
CREATE TRIGGER answer_is_final_delete BEFORE DELETE ON answer
BEGIN SELECT RAISE(ABORT, 'answers are final'); END;
"""

_CURRENT_ITEM = (
    "FROM item LEFT JOIN answer ON answer.item_id = item.id "
    "WHERE item.rater_id = ?1 AND answer.item_id IS NULL ORDER BY item.position LIMIT 1"
)
"""The FROM ... clause selecting a rater's current item (parameter 1: the rater's id): their
first unanswered one. Answers are accepted for it alone, so the answered items are always the
first ones."""

_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")


@dataclass(frozen=True)
class Rater:
    """One rater of a study."""

    id: int
    name: str
    expertise: str
    token: str


@dataclass(frozen=True)
class Record:
    """One item of one rater with its answer key and answer (None while unanswered)."""

    rater: str
    position: int
    scan_id: int
    source: str
    path: str
    answer: str | None
    answered_at: str | None
    elapsed_ms: float | None
    """Time on the scan in milliseconds as the page measured it (an int from the rating page,
    which rounds); None when not sent."""

    @property
    def filename(self) -> str:
        """The scan's file name without folders."""
        return Path(self.path).name

    @property
    def truth(self) -> str:
        """'real' or 'synthetic'."""
        return REAL if self.source == REAL else SYNTHETIC

    @property
    def correct(self) -> bool | None:
        """Whether the answer is right; None while unanswered."""
        return None if self.answer is None else self.answer == self.truth


@dataclass(frozen=True)
class SubmitResult:
    """Outcome of one answer submission: 'saved', 'already_answered', 'not_current' or 'unknown'."""

    status: str
    same_answer: bool | None = None
    """For 'already_answered': whether the stored answer is the one just submitted (a resent
    request whose first reply was lost), None for the other outcomes."""

    @property
    def saved(self) -> bool:
        """True when the answer was written."""
        return self.status == "saved"


def study_file(study: str | os.PathLike) -> Path:
    """The SQLite file of a study given its folder or the file itself."""
    path = Path(study)
    return path / STUDY_FILENAME if path.is_dir() else path


MAX_ELAPSED_MS = 2**63 - 1
"""The largest time on a scan stored (SQLite's largest integer), far beyond any real one."""


def check_elapsed_ms(value: object) -> float | None:
    """``value`` unchanged when it is a time on a scan in milliseconds (a number from 0 to
    ``MAX_ELAPSED_MS``), or None; ValueError saying why otherwise.

    0 and fractions of a millisecond are measurements like any other and are kept as they are.
    A bool is refused although Python counts True as the integer 1: stored, it would be a
    time of 1 ms that nobody measured.
    """
    if value is None:
        return None
    # NaN fails both comparisons and infinity the upper one
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"elapsed_ms must be a number of milliseconds, got {value!r:.40}")
    if not 0 <= value <= MAX_ELAPSED_MS:
        raise ValueError(
            f"elapsed_ms must be from 0 to {MAX_ELAPSED_MS} milliseconds, got {value!r:.40}"
        )
    return value


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _draw(
    entries: Sequence[ScanEntry], n: int, what: str, source: str, rng: np.random.Generator
) -> list[ScanEntry]:
    """``n`` of ``entries`` drawn without replacement, independently of their listing order."""
    if n < 0:
        raise RatganError(f"{what} must not be negative, got {n}")
    if n > len(entries):
        raise RatganError(f"{what} asks for {n} scans but {source} holds only {len(entries)}")
    order = sorted(entries, key=lambda e: str(e.image))
    picked: IntArray | list[int] = rng.choice(len(order), size=n, replace=False) if n else []
    return [order[int(i)] for i in picked]


def create_study(
    out: str | os.PathLike[str],
    real: str | os.PathLike[str],
    synthetic: Sequence[tuple[str, str | os.PathLike[str]]],
    n_real: int,
    n_per_model: int,
    raters: int | Sequence[str],
    seed: int = 0,
    expertise: Sequence[str] | None = None,
    base_url: str = DEFAULT_BASE_URL,
) -> tuple[Path, list[str]]:
    """Draw scans, render them, shuffle them per rater and write the study to ``out``.

    ``synthetic`` pairs a model name with a folder of its scans; ``raters`` is a count or a
    list of names. Returns the study file and a list of warnings for the user. ``seed`` only
    chooses which scans are drawn; their order for each rater, the tokens and the item
    identifiers come from the operating system's secure random source (``secrets``) and are
    stored in the study, so nothing a rater sees can be rebuilt from the seed.
    """
    out = Path(out)
    target = out / STUDY_FILENAME
    if out.exists() and not out.is_dir():
        raise RatganError(f"--out {out} is a file, not a folder for the study")
    _refuse_existing(target)
    names, levels = _rater_names(raters, expertise)
    models = _model_names(synthetic)
    if seed < 0:  # numpy's generators take non-negative seeds only
        raise RatganError(f"--seed must not be negative (got {seed})")
    base_url = check_base_url(base_url)

    rng = np.random.default_rng(seed)  # chooses which scans are drawn, nothing else
    drawn = _draw_scans(real, synthetic, n_real, n_per_model, rng)
    rendered, shape, warnings = _render_scans(drawn)
    # The scan rows and every rater's order come from the operating system's secure random
    # source, never from --seed: knowing the seed, the folders and one's own rater number must
    # not give the answer key away. The orders are stored in the database (table item).
    secure = secrets.SystemRandom()
    shuffled = secure.sample(rendered, len(rendered))

    layout = layout_for(shape)
    meta = {
        "schema_version": SCHEMA_VERSION,
        "created_at": _now(),
        "seed": seed,
        "admin_token": secrets.token_urlsafe(24),
        "models": json.dumps(models),
        "n_real": n_real,
        "n_per_model": n_per_model,
        "n_slices": layout.n_slices,
        "tile_width": layout.tile_width,
        "tile_height": layout.tile_height,
        "columns": layout.columns,
        "window_percentiles": json.dumps(list(WINDOW_PERCENTILES)),
        "base_url": base_url.rstrip("/"),
    }
    links_text, database = _build_database(meta, shuffled, names, levels, secure, base_url)
    with FolderLock(out, "ratgan turing create") as lock:
        _refuse_existing(target)  # written by another create since the check above
        _write_study(out, links_text, database, lock)
    return target, warnings


def _refuse_existing(target: Path) -> None:
    """Raise RatganError when ``target`` exists, or a journal of a previous study is beside it.

    SQLite replays a journal left by a process killed during a write (``-journal``, or
    ``-wal`` in WAL mode) into whatever database next bears the name: beside a new study it
    would write the old study's pages over the new one's. It is not removed either, since the
    old study, if it was moved away, still needs it.
    """
    if target.exists():
        raise RatganError(f"{target} already exists; choose another --out folder")
    for suffix in ("-journal", "-wal"):
        journal = target.with_name(target.name + suffix)
        if journal.exists():
            raise RatganError(
                f"{journal} is left by a previous study (its database is gone) and SQLite would "
                "replay it into the new study; choose another --out folder, or move it away "
                "with the study it belongs to"
            )


def _rater_names(
    raters: int | Sequence[str], expertise: Sequence[str] | None
) -> tuple[list[str], list[str]]:
    """The raters' names (``rater1``... for a count) and their expertise ('' when not given)."""
    names = [f"rater{i + 1}" for i in range(raters)] if isinstance(raters, int) else list(raters)
    if not names:
        raise RatganError("--raters must be at least 1")
    if len(set(names)) != len(names) or any(not n.strip() for n in names):
        raise RatganError("rater names must be unique and not empty")
    for name in names:  # a second "all raters" column in Table 3, a second "admin" link
        if name.strip().lower() in RESERVED_RATER_NAMES:
            raise RatganError(f"rater name {name!r} is reserved (the results' {name.strip()!r})")
    levels = list(expertise) if expertise else [""] * len(names)
    if len(levels) != len(names):
        raise RatganError(f"--expertise gives {len(levels)} values for {len(names)} raters")
    return names, levels


def _model_names(synthetic: Sequence[tuple[str, str | os.PathLike[str]]]) -> list[str]:
    """The model names of ``synthetic``, each valid, not 'real' and given once."""
    models = [str(name) for name, _ in synthetic]
    for name in models:
        if not _MODEL_NAME.match(name) or name.lower() == REAL:
            raise RatganError(
                f"model name {name!r} must be letters, digits, '_', '.', '+' or '-' and not 'real'"
            )
        if name.lower() in RESERVED_MODEL_NAMES:  # a second row of that name in Table 3
            raise RatganError(f"model name {name!r} is reserved (a row label of Table 3)")
    if len(set(models)) != len(models):
        raise RatganError("each --synthetic model name must be given once")
    return models


def _draw_scans(
    real: str | os.PathLike[str],
    synthetic: Sequence[tuple[str, str | os.PathLike[str]]],
    n_real: int,
    n_per_model: int,
    rng: np.random.Generator,
) -> list[tuple[str, Path]]:
    """(source, scan file) of every drawn scan: ``n_real`` real ones, then each model's.

    Every scan of every source is checked, so a model folder left unfinished by
    ``ratgan generate`` (:func:`_check_finished`), a scan of another voxel size
    (:func:`_check_voxel_sizes`) and sources that share a scan (:func:`_check_disjoint`) are
    refused whichever scans the seed would draw.
    """
    from ratgan.data.io import list_scans

    sources = [(REAL, real, n_real, "--n-real")] + [
        (name, folder, n_per_model, "--n-per-model") for name, folder in synthetic
    ]
    listed = [(source, list_scans(os.fspath(folder))) for source, folder, _, _ in sources]
    for (source, folder, _, _), (_, entries) in zip(sources[1:], listed[1:], strict=True):
        _check_finished(source, Path(folder), [Path(e.image) for e in entries])
    _check_voxel_sizes([(source, [Path(e.image) for e in entries]) for source, entries in listed])
    drawn: list[tuple[str, Path]] = []
    for (source, folder, n, what), (_, entries) in zip(sources, listed, strict=True):
        drawn += [(source, Path(e.image)) for e in _draw(entries, n, what, str(folder), rng)]
    if not drawn:
        raise RatganError("the study would be empty: raise --n-real or --n-per-model")
    _check_disjoint([(source, [Path(e.image) for e in entries]) for source, entries in listed])
    paths = [p.resolve() for _, p in drawn]
    if len(set(paths)) != len(paths):
        raise RatganError("the same scan file was drawn twice: a source lists it twice")
    return drawn


def _check_disjoint(sources: Sequence[tuple[str, Sequence[Path]]]) -> None:
    """Raise RatganError when two sources (real, each model) hold the same scan: the same
    file, or two files of the same voxel values in RAS order (a copy renamed, recompressed or
    stored in another orientation).  A scan in two sources would carry two answer keys, and a
    copied real scan among the synthetic ones would be scored as synthetic."""
    from ratgan.data.io import scan_content_sha256

    digest = FileDigests(scan_content_sha256)
    for later, (source, paths) in enumerate(sources):
        for earlier, earlier_paths in sources[:later]:
            shared = shared_files(paths, earlier_paths, digest, same_size_only=False)
            if shared:
                path, other = shared[0]
                raise RatganError(
                    f"{_source_name(source)} scan {path} is the same scan as "
                    f"{_source_name(earlier)} scan {other} (same file, or the same voxel "
                    "values in RAS order); the sources of a study must not overlap"
                )


def _check_finished(source: str, folder: Path, paths: Sequence[Path]) -> None:
    """Raise RatganError when a model's scans lie in a folder of an unfinished ``ratgan
    generate`` (its manifest.json does not say complete): the set is not the one asked for."""
    from ratgan.generation.output import refuse_unfinished

    folders = {p.parent for p in paths} | ({folder} if folder.is_dir() else set())
    refuse_unfinished(folders, _source_name(source))


def _check_voxel_sizes(sources: Sequence[tuple[str, Sequence[Path]]]) -> None:
    """Raise RatganError naming the first scan whose voxel size differs from the real scans'
    (their most common one) by more than ``VOXEL_SIZE_RTOL`` on some axis: the same anatomy
    at another voxel size looks larger or smaller, a cue that tells its source apart."""
    from collections import Counter

    from ratgan.data.dataset import VOXEL_SIZE_RTOL
    from ratgan.data.io import format_voxel_size, same_voxel_size, scan_ras_voxel_size

    sizes = [
        (source, path, scan_ras_voxel_size(path)) for source, paths in sources for path in paths
    ]
    real = [size for source, _, size in sizes if source == REAL]
    if not real:
        return
    common = Counter(format_voxel_size(size) for size in real).most_common(1)[0][0]
    reference = next(size for size in real if format_voxel_size(size) == common)
    for source, path, size in sizes:
        if not same_voxel_size(size, reference, VOXEL_SIZE_RTOL):
            raise RatganError(
                f"{_source_name(source)} scan {path} has voxel size {format_voxel_size(size)} "
                f"but the real scans have {format_voxel_size(reference)} (within "
                f"{VOXEL_SIZE_RTOL:.0%}); anatomy at another voxel size looks larger or smaller "
                "and gives its source away, so resample it (or leave it out)"
            )


def _source_name(source: str) -> str:
    return "real" if source == REAL else f"model {source!r}"


def _render_scans(
    drawn: Sequence[tuple[str, Path]],
) -> tuple[list[tuple[str, Path, bytes]], tuple[int, ...], list[str]]:
    """Each drawn scan's sprite sheet as (source, path, PNG), their one shared shape, and
    warnings for the user.

    Every scan is rendered once, in the closest canonical orientation (RAS): a scan stored as
    LAS would otherwise be shown mirrored, a cue that tells its source apart.
    """
    from ratgan.data.io import canonical_scan, orientation_code, read_scan

    warnings: list[str] = []
    rendered = []
    shape: tuple[int, ...] = ()
    first = None
    orientations: dict[str, int] = {}
    averaged: list[tuple[Path, int]] = []
    for source, path in drawn:
        stored = read_scan(path)
        data = np.asarray(stored.data)
        if stored.volumes > 1:
            averaged.append((path, stored.volumes))
        code = orientation_code(stored.affine)
        orientations[code] = orientations.get(code, 0) + 1
        data = np.asarray(canonical_scan(stored).data)
        if first is None:
            shape, first = data.shape, path
        elif data.shape != shape:
            raise RatganError(
                f"{path} has shape {data.shape} but {first} has {shape} (in RAS orientation); all "
                "scans of a study must share one shape, or the image size would tell them apart"
            )
        png, _ = render_scan(data)
        rendered.append((source, path, png))
    if averaged:
        # read_scan shows a 4-D file as the mean of its volumes: smoother and less noisy than
        # one volume (or a generated scan), a cue that can tell its source apart.
        path, volumes = averaged[0]
        warnings.append(
            f"{len(averaged)} scan file(s) hold several volumes (e.g. {path}, {volumes} "
            "volumes) and are shown as the mean of their volumes, which is less noisy than one "
            "volume and may give their source away; extract the volume the model was trained "
            "on (data.volume_index) into 3-D files first"
        )
    if len(orientations) > 1:
        found = ", ".join(f"{n} {code}" for code, n in sorted(orientations.items()))
        warnings.append(
            f"the scans are stored in several orientations ({found}); all are "
            "shown reoriented to RAS"
        )
    return rendered, shape, warnings


def _build_database(
    meta: dict[str, object],
    shuffled: Sequence[tuple[str, Path, bytes]],
    names: Sequence[str],
    levels: Sequence[str],
    secure: secrets.SystemRandom,
    base_url: str,
) -> tuple[str, bytes]:
    """The links text and the bytes of the study database, built in memory.

    Nothing touches the disk here, so a failed or killed create leaves no study file behind.
    """
    conn = sqlite3.connect(":memory:")
    try:
        conn.executescript(_SCHEMA)
        with conn:
            conn.executemany(
                "INSERT INTO meta VALUES (?, ?)", [(k, str(v)) for k, v in meta.items()]
            )
            scan_ids = _insert_scans(conn, shuffled)
            _insert_raters(conn, names, levels, scan_ids, secure)
        links_text = _links_text(conn, base_url)
        database = _database_bytes(conn)
    finally:
        conn.close()
    return links_text, database


def _insert_scans(
    conn: sqlite3.Connection, shuffled: Sequence[tuple[str, Path, bytes]]
) -> list[int | None]:
    """One scan row per rendered scan, in the given (shuffled) order; returns their ids."""
    scan_ids = []
    for source, path, png in shuffled:
        cur = conn.execute(
            "INSERT INTO scan (source, path, sha256, png) VALUES (?, ?, ?, ?)",
            (source, str(path.resolve()), file_sha256(path), png),
        )
        scan_ids.append(cur.lastrowid)
    return scan_ids


def _insert_raters(
    conn: sqlite3.Connection,
    names: Sequence[str],
    levels: Sequence[str],
    scan_ids: Sequence[int | None],
    secure: secrets.SystemRandom,
) -> None:
    """A rater row per name with a private token, and their own secure shuffle of the scans
    as items with random public identifiers."""
    for name, level in zip(names, levels, strict=True):
        cur = conn.execute(
            "INSERT INTO rater (name, expertise, token) VALUES (?, ?, ?)",
            (name, level, secrets.token_urlsafe(24)),
        )
        rater_id = cur.lastrowid
        order = secure.sample(scan_ids, len(scan_ids))
        for position, scan_id in enumerate(order, start=1):
            conn.execute(
                "INSERT INTO item (rater_id, position, scan_id, public_id) VALUES (?, ?, ?, ?)",
                (rater_id, position, scan_id, secrets.token_hex(16)),
            )


def _database_bytes(conn: sqlite3.Connection) -> bytes:
    """The whole database of ``conn`` as the contents of an SQLite file."""
    if sys.version_info >= (3, 11):
        return conn.serialize()
    return _database_bytes_by_backup(conn)


def _database_bytes_by_backup(conn: sqlite3.Connection) -> bytes:
    """``_database_bytes`` for Python 3.10, which has no ``Connection.serialize``: a backup
    into a file in a temporary folder that only this user can open (mode 0700), read back."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / STUDY_FILENAME
        copy = sqlite3.connect(path)
        try:
            conn.backup(copy)
        finally:
            copy.close()
        return path.read_bytes()


def _write_study(out: Path, links_text: str, database: bytes, lock: FolderLock) -> None:
    """Write the links file, then the study file, owner-only; nothing is left on failure.

    The links first, the study last: the study file's appearance is what completes a create.
    ``lock`` holds ``out`` (or creates and locks it) against other ratgan processes.
    """
    new_folder = not out.exists()
    links = out / LINKS_FILENAME
    if not new_folder:  # what a killed create may have left: temporary files
        for name in (STUDY_FILENAME, LINKS_FILENAME):
            for leftover in leftovers(out, name):
                leftover.unlink(missing_ok=True)
    lock.create()
    try:
        write_private(links, (links_text + "\n").encode())
        write_private(out / STUDY_FILENAME, database)
    except OSError as exc:
        links.unlink(missing_ok=True)
        if new_folder:
            remove_if_empty(out)
        raise RatganError(
            f"cannot write the study to {out} ({exc.strerror or exc}); nothing was left behind"
        ) from None


def _links_text(conn: sqlite3.Connection, base_url: str) -> str:
    admin = conn.execute("SELECT value FROM meta WHERE key = 'admin_token'").fetchone()[0]
    raters = [
        Rater(*row)
        for row in conn.execute("SELECT id, name, expertise, token FROM rater ORDER BY id")
    ]
    return format_links(base_url, admin, raters)


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, readable by its owner only from the first byte.

    The temporary file is created with mode 0600 by ``os.open`` (so no other user can open it
    between its creation and a later chmod); ``atomic_path`` fsyncs and renames it, and removes
    it on any error.
    """
    with atomic_path(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)


def format_links(base_url: str, admin_token: str, raters: Sequence[Rater]) -> str:
    """One line per rater with their private link, then the admin link."""
    base = base_url.rstrip("/")
    pairs = [(r.name, f"{base}/r/{r.token}") for r in raters]
    width = max([len(name) for name, _ in pairs] + [5])
    lines = [f"{name:<{width}}  {url}" for name, url in pairs]
    return "\n".join(lines + [f"{'admin':<{width}}  {base}/admin/{admin_token}"])


class Study:
    """Access to a study file; each method opens its own short-lived connection."""

    def __init__(self, study: str | os.PathLike):
        self.path = study_file(study)
        if not self.path.is_file():
            raise RatganError(f"{self.path} is not a Turing test study (no such file)")
        try:
            meta = self._meta()
        except sqlite3.DatabaseError as exc:
            raise RatganError(f"{self.path} is not a Turing test study ({exc})") from None
        if meta.get("schema_version") != str(SCHEMA_VERSION):
            raise RatganError(f"{self.path} is not a Turing test study of schema {SCHEMA_VERSION}")
        self.meta = meta
        try:
            models = json.loads(meta["models"])
            #: the study's --seed (which scans were drawn; seeds the results' permutations too)
            self.seed = int(meta.get("seed", 0))
        except (KeyError, TypeError, ValueError):
            models = None
        if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
            raise RatganError(
                f"{self.path} is a damaged Turing test study (its models or seed entry cannot "
                "be read)"
            )
        self.models: list[str] = models

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A connection in autocommit mode with foreign keys on; closed on exit."""
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA synchronous = FULL")
            yield conn
        finally:
            conn.close()

    def _meta(self) -> dict[str, str]:
        with self.connect() as conn:
            return dict(conn.execute("SELECT key, value FROM meta"))

    @property
    def layout(self) -> dict[str, int]:
        """Sprite layout shared by every scan of the study."""
        return {k: int(self.meta[k]) for k in ("n_slices", "tile_width", "tile_height", "columns")}

    def check_admin(self, token: str) -> bool:
        """Whether ``token`` is this study's admin token (constant-time comparison)."""
        return hmac.compare_digest(token.encode(), self.meta["admin_token"].encode())

    def raters(self) -> list[Rater]:
        """All raters in creation order."""
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT id, name, expertise, token FROM rater ORDER BY id"
            ).fetchall()
        return [Rater(*row) for row in rows]

    def rater_by_token(self, token: str) -> Rater | None:
        """The rater owning this token, or None.

        The token is compared with every rater's in constant time (``hmac.compare_digest``),
        never looked up by SQL's ``=`` or a dict: those stop at the first differing byte, and
        response times could then let a client find a token byte by byte.
        """
        given = token.encode()
        found = None
        for rater in self.raters():  # all of them, also after a match
            if hmac.compare_digest(given, rater.token.encode()):
                found = rater
        return found

    @staticmethod
    def _current(conn: sqlite3.Connection, rater_id: int) -> tuple[int, int, str, int] | None:
        """(id, position, public id, scan id) of the rater's first unanswered item, if any."""
        return conn.execute(
            f"SELECT item.id, item.position, item.public_id, item.scan_id {_CURRENT_ITEM}",
            (rater_id,),
        ).fetchone()

    def state(self, rater: Rater) -> dict:
        """What the rating page needs: progress and the current item, if any.

        One SQL statement reads both, so they are of one moment even while the rater answers
        in another tab (served by another thread): with two statements, an answer saved
        between them gave "4 answered" beside the 6th scan, which the page titled scan 5.
        """
        with self.connect() as conn:
            total, done, public_id = conn.execute(
                "SELECT COUNT(item.id), COUNT(answer.item_id), "
                f"(SELECT item.public_id {_CURRENT_ITEM}) FROM item "
                "LEFT JOIN answer ON answer.item_id = item.id WHERE item.rater_id = ?1",
                (rater.id,),
            ).fetchone()
        state = {"rater": rater.name, "total": total, "done": done, "finished": public_id is None}
        state["item"] = None if public_id is None else {"id": public_id, **self.layout}
        return state

    def image(self, rater: Rater, public_id: str) -> bytes | None:
        """The sprite sheet of the rater's current item, or None for any other identifier."""
        with self.connect() as conn:
            current = self._current(conn, rater.id)
            if current is None or not hmac.compare_digest(current[2].encode(), public_id.encode()):
                return None
            row = conn.execute("SELECT png FROM scan WHERE id = ?", (current[3],)).fetchone()
        return bytes(row[0])

    def submit(
        self, rater: Rater, public_id: str, answer: str, elapsed_ms: float | None = None
    ) -> SubmitResult:
        """Record the answer to the rater's current item in one transaction; never overwrites.

        ``elapsed_ms`` is stored as given (:func:`check_elapsed_ms` refuses what is no time).
        """
        if answer not in ANSWERS:
            raise ValueError(f"answer must be one of {ANSWERS}")
        check_elapsed_ms(elapsed_ms)
        with self.connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(
                    "SELECT item.id, answer.item_id, answer.answer FROM item "
                    "LEFT JOIN answer ON answer.item_id = item.id "
                    "WHERE item.rater_id = ? AND item.public_id = ?",
                    (rater.id, public_id),
                ).fetchone()
                if row is None:
                    result = SubmitResult("unknown")
                elif row[1] is not None:
                    result = SubmitResult("already_answered", same_answer=row[2] == answer)
                elif (current := self._current(conn, rater.id)) is None or current[0] != row[0]:
                    result = SubmitResult("not_current")
                else:
                    conn.execute(
                        "INSERT INTO answer (item_id, answer, answered_at, elapsed_ms) "
                        "VALUES (?, ?, ?, ?)",
                        (row[0], answer, _now(), elapsed_ms),
                    )
                    result = SubmitResult("saved")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return result

    def records(self) -> list[Record]:
        """Every item of every rater with its answer key, ordered by rater and position."""
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT rater.name, item.position, scan.id, scan.source, scan.path, "
                "answer.answer, answer.answered_at, answer.elapsed_ms FROM item "
                "JOIN rater ON rater.id = item.rater_id JOIN scan ON scan.id = item.scan_id "
                "LEFT JOIN answer ON answer.item_id = item.id "
                "ORDER BY rater.id, item.position"
            ).fetchall()
        return [Record(*row) for row in rows]

    def links(self, base_url: str | None = None) -> tuple[str, list[tuple[str, str]]]:
        """The admin link and one (rater name, private link) per rater."""
        base = self._base_url(base_url)
        admin = f"{base}/admin/{self.meta['admin_token']}"
        return admin, [(r.name, f"{base}/r/{r.token}") for r in self.raters()]

    def links_text(self, base_url: str | None = None) -> str:
        """The links as printed for the study organiser."""
        return format_links(self._base_url(base_url), self.meta["admin_token"], self.raters())

    def _base_url(self, base_url: str | None) -> str:
        """``base_url``, else the study's own, checked (:func:`check_base_url`)."""
        return check_base_url(base_url or self.meta.get("base_url") or DEFAULT_BASE_URL)


def check_base_url(url: str) -> str:
    """``url`` without a trailing slash, or RatganError when it cannot start working links:
    the rating page loads its files and answers from the site's root, so a URL with a path
    (a server behind a proxy under /turing, say) would print links that all fail."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise RatganError(f"--base-url {url!r} must start with http:// or https:// and a host")
    if parts.path.strip("/") or parts.query or parts.fragment:
        raise RatganError(
            f"--base-url {url!r} has a path, query or fragment; the study is served from the "
            "root of its address, so give scheme, host and port only (e.g. http://host:8765)"
        )
    return url.rstrip("/")


def format_duration(ms: float | None) -> str:
    """Milliseconds as 'm:ss' for tables; '' when unknown."""
    if ms is None or (isinstance(ms, float) and math.isnan(ms)):
        return ""
    seconds = round(ms / 1000)
    return f"{seconds // 60}:{seconds % 60:02d}"
