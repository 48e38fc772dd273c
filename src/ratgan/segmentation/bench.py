"""The downstream segmentation benchmark (paper Table 4): ten tests over K seeds, resumable.

Output folder::

    OUT/segbench.json      options, the real split (file names), labels, GAN overlap check
    OUT/plan.json          per seed and test: the real and synthetic scans trained on
    OUT/synthetic/         scans generated from a run folder (round-00, round-01, ...)
    OUT/atlas/             atlas label maps of synthetic scans (labels/), of the real test
                           scans (test-labels/, the labeller's own accuracy) and their cache
    OUT/teacher/           teacher.pt and labels/ (``--labels teacher``)
    OUT/quality_gate.json  tissue-fraction ranges, per-scan verdicts, acceptance rate
    OUT/runs.json          every finished (test, seed): scores, epochs, time (atomic rewrite)
    OUT/results.json       mean +- std per test, paired comparisons with test 1, collapses
    OUT/table.md           Table 4 shaped: mean +- std, then the paired statistics
    OUT/dice.png           bar chart with error bars

A rerun with the same options skips every (test, seed) already in ``runs.json``; one whose
data differ (the bytes of a real scan or label map, of a synthetic scan or of the newest
checkpoint of a run given as ``--synthetic``, of ``--reference``, or the real split) is
refused, since what the folder holds was made from the old data.  The work is
split in modules: the plan and state here, the synthetic pool and its labels in
:mod:`~ratgan.segmentation.labels`, the test networks in :mod:`~ratgan.segmentation.runner`
and the reports in :mod:`~ratgan.segmentation.report`.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from ratgan.atomic import atomic_write_json
from ratgan.digests import FileDigests
from ratgan.errors import RatganError
from ratgan.folder_lock import FolderLock, remove_if_empty
from ratgan.data.dataset import refuse_duplicate_volumes
from ratgan.segmentation.data import (
    SegSet,
    brain_box,
    check_one_space,
    find_entries,
    load_set,
)
from ratgan.segmentation.files import check_unique_names, describe_changes, entry_digests
from ratgan.segmentation.labels import (
    Pool,
    check_overlap,
    check_synthetic_source,
    empty_pool,
    synthetic_pool,
)
from ratgan.segmentation.plan import (
    TESTS,
    PlannedTest,
    build_plan,
    halves,
    make_split,
    synthetic_needed,
)
from ratgan.segmentation.report import write_reports
from ratgan.segmentation.runner import network_inputs, run_test
from ratgan.segmentation.state import (
    LEGACY_OPTIONS,
    MODES,
    BenchOptions,
    BenchSettings,
    BenchState,
)

__all__ = ["MODES", "BenchOptions", "BenchSettings", "BenchState", "Benchmark", "run_benchmark"]

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- files


def read_runs(out: Path) -> list[dict]:
    """Finished (test, seed) records of a benchmark folder."""
    path = Path(out) / "runs.json"
    if not path.is_file():
        return []
    try:
        return json.loads(path.read_text())["runs"]
    except (json.JSONDecodeError, KeyError) as exc:
        raise RatganError(f"{path} is damaged ({exc}); delete it to rerun every test.") from None


def check_folder(out: Path, fingerprint: dict[str, Any]) -> None:
    """Raise if ``out`` is a file or holds a benchmark made with other options (the folder
    itself is created only once every input has been checked, by :func:`prepare`)."""
    if out.exists() and not out.is_dir():
        raise RatganError(f"--out {out} is a file, not a folder for the benchmark.")
    state_path = out / "segbench.json"
    if state_path.is_file():
        old = json.loads(state_path.read_text()).get("options", {})
        # a folder written before the device was recorded: its device is unknown, so accepted
        old = {**LEGACY_OPTIONS, "device_type": fingerprint.get("device_type"), **old}
        diff = [k for k in fingerprint if old.get(k) != fingerprint[k]]
        if diff:
            changes = ", ".join(f"{k}: {old.get(k)} -> {fingerprint[k]}" for k in diff)
            raise RatganError(
                f"output folder {out} holds a benchmark made with other "
                f"options ({changes}); use a new --out or the same options."
            )


def load_real(opt: BenchSettings) -> tuple[list, SegSet]:
    """The labelled real scan entries and the scans at full resolution; warns naming the real
    scans left out for lack of a label map."""
    found = find_entries(opt.real)
    entries = [e for e in found if e.label is not None]
    skipped = [e.image.name for e in found if e.label is None]
    if skipped:
        listed = ", ".join(skipped[:10]) + (f" and {len(skipped) - 10} more" * (len(skipped) > 10))
        log.warning(
            "%d of %d real scans in %s have no label map and are left out of the benchmark: "
            "%s (label maps go in labels/ with the scans' file names, or in a CSV's label column)",
            len(skipped),
            len(found),
            opt.real,
            listed,
        )
    if len(entries) < 4:
        raise RatganError(
            f"real set {opt.real} holds {len(entries)} scans with label "
            "maps; the benchmark needs at least 4 (labels/ beside images/)."
        )
    real = load_set(entries, opt.shape, opt.volume_index, progress=opt.progress, desc="real scans")
    check_one_space(real, "real scan")
    refuse_duplicate_volumes(real.images_paths, real.images, "real scan")
    return entries, real


def data_digests(
    opt: BenchSettings, entries: list, needed: int, digest: FileDigests | None = None
) -> dict[str, Any]:
    """Content digests of what the benchmark is made from: the labelled real scans and their
    label maps, the synthetic scans (those of a folder or CSV; the newest checkpoint of a run
    folder; None when no test needs any) and the ``--reference`` scan (None: the first real).
    ``digest`` hashes each file (one :class:`FileDigests` per call reads each file once)."""
    from ratgan.runs import is_run_folder
    from ratgan.training.checkpoint import latest_checkpoint

    digest = digest or FileDigests()
    synthetic: dict[str, str] | None = None
    if needed and is_run_folder(opt.synthetic):
        ckpt = latest_checkpoint(Path(opt.synthetic))
        synthetic = {} if ckpt is None else {str(ckpt.resolve()): digest(ckpt)}
    elif needed:
        synthetic = entry_digests(find_entries(opt.synthetic), digest)
    reference = None
    if opt.reference:
        if not Path(opt.reference).is_file():
            raise RatganError(f"--reference {opt.reference} is not a file.")
        reference = digest(opt.reference)
    return {"real": entry_digests(entries, digest), "synthetic": synthetic, "reference": reference}


def check_data(out: Path, opt: BenchSettings, data: dict[str, Any], split: dict) -> None:
    """Raise if ``out`` holds a benchmark made from other data than ``data`` (the digests of
    :func:`data_digests`) or another real ``split`` (file names); a folder written before the
    digests were recorded is not checked.  Fills ``data['synthetic']`` from the folder when no
    test of this call needs synthetic scans, so that a later call still compares them."""
    from ratgan.runs import is_run_folder

    state_path = out / "segbench.json"
    if not state_path.is_file():
        return
    state = json.loads(state_path.read_text())
    old = state.get("data")
    if old is None:
        return
    if data["synthetic"] is None:
        data["synthetic"] = old.get("synthetic")
    changed = []
    if old.get("real") != data["real"]:
        diff = describe_changes(old.get("real") or {}, data["real"])
        changed.append(f"the scans or label maps of --real {opt.real} differ ({diff})")
    elif state.get("split", split) != split:
        changed.append(f"the real split differs (test scans {', '.join(split['test'])})")
    if old.get("synthetic") is not None and old["synthetic"] != data["synthetic"]:
        diff = describe_changes(old["synthetic"], data["synthetic"])
        if is_run_folder(opt.synthetic):
            changed.append(
                f"the run --synthetic {opt.synthetic} has another newest checkpoint ({diff})"
            )
        else:
            changed.append(f"the synthetic scans of --synthetic {opt.synthetic} differ ({diff})")
    if old.get("reference") != data["reference"] and old.get("reference") is not None:
        changed.append(f"the --reference scan {opt.reference} changed")
    if changed:
        raise RatganError(
            f"output folder {out} holds a benchmark made from other data: "
            f"{'; '.join(changed)}; its finished runs and synthetic labels belong to the old "
            "data, so use a new --out to benchmark the data as they are now."
        )


# --------------------------------------------------------------------------- the benchmark


def prepare(options: BenchOptions) -> BenchState:
    """Resolve the options, check the folder, load and split the real set, check that the GAN
    saw no test scan, that a folder of synthetic scans is a finished set holding enough of
    them, and that a folder holding a benchmark was made from the same data, and pick the
    atlases; then create the folder.  Nothing is trained or generated."""
    opt = options.resolved()
    out = Path(opt.out)
    check_folder(out, opt.fingerprint())
    entries, real = load_real(opt)
    check_unique_names(
        real.images_paths,
        "real scans",
        "the benchmark records its split and per-scan results by file name (a reordered list "
        "would swap test and training scans unnoticed)",
    )
    split = make_split(len(real), opt.split_seed, opt.test_fraction, opt.val_fraction)
    r = len(split.train)
    box = (
        brain_box(
            real.label_maps()[split.train + split.val],
            multiple=2 ** (len(opt.channels) - 1) * opt.downsample,
        )
        if opt.crop == "brain"
        else None
    )
    wanted = opt.tests or [t.number for t in TESTS]
    needed = max(halves(t.synth_halves, r) for t in TESTS if t.number in wanted)
    digest = FileDigests()
    if needed:  # the cheap checks first: the overlap check reads every file
        check_synthetic_source(opt.synthetic, needed, len(split.train))
    overlap = (
        check_overlap(
            opt.synthetic,
            [real.images_paths[i] for i in split.test + split.val],
            opt.allow_overlap,
            digest,
        )
        if needed
        else {"checked": False, "needed": False, "files": []}
    )
    data = data_digests(opt, entries, needed, digest)
    state = BenchState(opt, out, real, split, box, needed, overlap, data, digest)
    check_data(out, opt, data, state.split_names)
    if needed and opt.labels == "atlas":
        from ratgan.segmentation.atlas import AtlasParams, make_atlases

        state.atlas_params = AtlasParams(
            k=opt.atlases, seed=opt.split_seed, syn_iterations=opt.syn_iterations
        )
        state.atlases = make_atlases(
            [entries[i] for i in split.train], opt.atlases, seed=opt.split_seed
        )
    out.mkdir(parents=True, exist_ok=True)
    return state


class Benchmark:
    """One benchmark folder: the state is prepared on construction, :meth:`run` does the
    work (synthetic pool, pending tests, reports)."""

    def __init__(self, options: BenchOptions) -> None:
        out = Path(options.out)
        self.created = not out.exists()
        self.state = prepare(options)
        self.opt = self.state.opt
        self.out = self.state.out

    def write_state(self, pool: Pool) -> None:
        """segbench.json: options, split, counts, labels, box, gate and overlap."""
        s = self.state
        r = len(s.split.train)
        record: dict[str, Any] = {
            "options": self.opt.fingerprint(),
            "data": s.data,
            "split": s.split_names,
            "counts": {
                "real_labelled": len(s.real),
                "train": r,
                "val": len(s.split.val),
                "test": len(s.split.test),
                "synthetic_pool": len(pool.scans),
                "synthetic_needed_all_tests": synthetic_needed(r),
            },
            "labels": pool.labels,
            "atlas": pool.atlas,
            "overlap": s.overlap,
            "box": None if s.box is None else [list(b) for b in s.box],
            "network_input": list(self.opt.net(s.box).input_shape),
            "quality_gate": {
                k: pool.gate[k] for k in ("acceptance_rate", "n_checked", "n_accepted")
            },
        }
        path = self.out / "segbench.json"
        if not s.needed and path.is_file():
            # a rerun of real-data tests only (--tests 1 --seeds 6): the synthetic tests
            # finished earlier keep the record of their pool, labels, gate and overlap check
            old = json.loads(path.read_text())
            if old.get("labels", "none") != "none":
                for key in ("labels", "atlas", "overlap", "quality_gate"):
                    record[key] = old.get(key)
                record["counts"]["synthetic_pool"] = old["counts"]["synthetic_pool"]
        atomic_write_json(path, record)

    def pool(self) -> Pool:
        """The labelled, screened synthetic scans the tests need."""
        s = self.state
        pool = synthetic_pool(s) if s.needed else empty_pool(self.opt.shape)
        if len(pool.scans) < s.needed:
            raise RatganError(
                f"only {len(pool.scans)} synthetic scans passed the quality gate "
                f"(acceptance {pool.gate['acceptance_rate']:.0%}) but the tests need "
                f"{s.needed} for {len(s.split.train)} real training scans; add scans to "
                f"{self.opt.synthetic} or pass a run folder so that more are generated."
            )
        return pool

    def plans(self, n_pool: int) -> list[PlannedTest]:
        """Every (test, seed) of the benchmark, seed-major."""
        out = []
        for seed in range(self.opt.seeds):
            out += build_plan(self.state.split, n_pool, seed, self.opt.tests)
        return out

    def write_plan(
        self, plans: list[PlannedTest], pool: SegSet, finished: set[tuple[int, int]]
    ) -> None:
        """plan.json: the scans each (test, seed) trains on, by file name. The rows of runs
        ``finished`` by an earlier call stay as that call wrote them (the pool of a run folder,
        and so the plan drawn from it, grows when a call asks for tests that need more
        synthetic scans), and so do rows of runs this call does not plan."""
        real, split = self.state.real, self.state.split
        path = self.out / "plan.json"
        old_rows = json.loads(path.read_text())["runs"] if path.is_file() else []
        kept = {(r["test"], r["seed"]): r for r in old_rows}
        new_rows = [
            {
                "test": p.number,
                "seed": p.seed,
                "name": p.name,
                "paper": p.paper,
                "augment": p.augment,
                "real": [real.names[i] for i in p.real],
                "synthetic": [pool.names[i] for i in p.synthetic],
            }
            for p in plans
        ]
        for row in new_rows:
            key = (row["test"], row["seed"])
            if key not in finished or key not in kept:
                kept[key] = row
        rows = sorted(kept.values(), key=lambda r: (r["seed"], r["test"]))
        atomic_write_json(
            path,
            {
                "test_split": [real.names[i] for i in split.test],
                "val_split": [real.names[i] for i in split.val],
                "runs": rows,
            },
        )

    def run(self) -> dict:
        """Run every pending (test, seed), then write the reports; returns results.json.

        A failure keeps what the benchmark wrote (a rerun continues from it, and
        quality_gate.json says why scans were rejected), but not an --out that this call
        created and left empty.  The folder is locked against other ratgan processes
        (:mod:`ratgan.folder_lock`), and checked again under the lock: another benchmark may
        have written it since :func:`prepare` checked it."""
        with FolderLock(self.out, "ratgan segbench"):
            try:
                self._check_again()
                return self._run()
            except BaseException:
                if self.created:
                    remove_if_empty(self.out)
                raise

    def _check_again(self) -> None:
        """:func:`prepare`'s checks of what the folder holds."""
        check_folder(self.out, self.opt.fingerprint())
        check_data(self.out, self.opt, self.state.data, self.state.split_names)

    def _run(self) -> dict:
        from tqdm.auto import tqdm

        t0 = time.perf_counter()
        s = self.state
        pool = self.pool()
        self.write_state(pool)
        plans = self.plans(len(pool.scans))
        runs = read_runs(self.out)
        done = {(r["test"], r["seed"]) for r in runs}
        self.write_plan(plans, pool.scans, done)
        real_lo = network_inputs(s.real, s.box, self.opt.downsample)
        pool_lo = (
            network_inputs(pool.scans, s.box, self.opt.downsample) if len(pool.scans) else None
        )
        todo = [p for p in plans if (p.number, p.seed) not in done]
        if done:
            s.log(
                f"{len(plans) - len(todo)} of {len(plans)} (test, seed) runs already "
                f"finished in {self.out / 'runs.json'}; skipping them"
            )
        bar = tqdm(todo, desc="segbench", unit="run", disable=not self.opt.progress)
        for p in bar:
            bar.set_postfix(test=p.number, seed=p.seed, data=p.name)
            record = run_test(s, real_lo, pool_lo, p)
            runs = [
                r for r in read_runs(self.out) if (r["test"], r["seed"]) != (p.number, p.seed)
            ] + [record]
            runs.sort(key=lambda r: (r["seed"], r["test"]))
            atomic_write_json(self.out / "runs.json", {"runs": runs})
            s.log(
                f"test {p.number} seed {p.seed} ({p.name}): global Dice "
                f"{record['scores']['global']:.4f} after {record['epochs']} epochs, "
                f"{record['seconds']:.0f} s"
            )
        return write_reports(self.out, runs, self.opt, wall=time.perf_counter() - t0, ran=len(todo))


def run_benchmark(options: BenchOptions) -> dict:
    """Run (or resume) a benchmark and write its reports; returns the results."""
    return Benchmark(options).run()
