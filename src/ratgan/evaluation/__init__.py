"""ratgan.evaluation: the paper's quantitative protocol (Table 2), distribution distances in a
3D feature space, memorisation checks, and the report (Markdown, JSON, figures).

``run_evaluation`` is what ``ratgan evaluate`` calls; the pieces are importable on their own:
``metrics`` (pairwise metrics), ``pairs`` (random pairings), ``features`` (random feature
space and set distances), ``anatomy`` (the anatomy feature space: a segmentation network
trained on the real labels), ``anatomy_stage`` (it as one more ``FeatureSpace``),
``corruptions`` (known corruptions for validating feature spaces), ``memorisation``,
``authors`` (the published code's computation), ``protocol`` (the stages and ``evaluate``),
``results`` (the typed result), ``report``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import TypedDict


from ratgan.errors import RatganError
from ratgan.evaluation.metrics import MSSSIMSettings
from ratgan.evaluation.prepare import ScanSet
from ratgan.evaluation.protocol import FeatureSpace, evaluate
from ratgan.evaluation.results import EvaluationResult
from ratgan.evaluation.settings import EvaluationSettings
from ratgan.folder_lock import FolderLock

#: Names the report gives the real rows; a synthetic set under one of them replaced the real
#: scans in the spectra table and the held-out scans in the voxel statistics' target row.
RESERVED_SET_NAMES = frozenset({"real", "held-out", "held-out real", "reference"})

__all__ = [
    "EvaluationResult",
    "EvaluationSettings",
    "FeatureSpace",
    "MSSSIMSettings",
    "evaluate",
    "evaluate_sets",
    "run_evaluation",
]


def run_evaluation(
    real: str | Path,
    synthetic: Mapping[str, str | Path],
    out_dir: str | Path,
    heldout: str | Path | None = None,
    settings: EvaluationSettings | None = None,
    n_generate: int | None = None,
    figures: bool = True,
    feature_spaces: list[FeatureSpace] | None = None,
) -> EvaluationResult:
    """Evaluate synthetic sets against real scans and write the report into ``out_dir``.

    ``real``: the real (training) scans — folder, glob or CSV.  ``synthetic``: name -> source,
    where a source is a folder/glob/CSV of NIfTI scans or a trained run folder (``n_generate``
    scans, default as many as there are real scans, are then generated into
    ``out_dir/generated/NAME`` first).  ``heldout``: optional real scans the generator never
    saw, used for the reference row.  ``feature_spaces``: where set-level distances are
    measured (default: the fixed random 3D features, then the anatomy space fitted on the real
    scans' label maps, skipped with the reason when there are none or ``settings.anatomy`` is
    False).  Returns the result (its numbers are also in ``metrics.json``).  ``out_dir`` is
    locked against other ratgan processes while the evaluation writes there
    (:mod:`ratgan.folder_lock`).
    """
    from ratgan.evaluation.prepare import load_set, resolve_source
    from ratgan.evaluation.report import write_report

    settings = settings or EvaluationSettings()
    out_dir = Path(out_dir)
    if not synthetic:
        raise RatganError("give at least one synthetic set (--synthetic NAME=DIR).")
    names = list(synthetic)
    if len(set(names)) != len(names):
        raise RatganError("two synthetic sets share a name; give each NAME=DIR a distinct NAME.")
    taken = [n for n in names if n.strip().lower() in RESERVED_SET_NAMES]
    if taken:
        raise RatganError(
            f"synthetic set name {taken[0]!r} is the report's name for real scans "
            f"({', '.join(sorted(RESERVED_SET_NAMES))} are taken); choose another NAME."
        )
    t0 = time.perf_counter()
    real_set = load_set("real", real, progress=settings.progress)
    if len(real_set) < 2:
        raise RatganError(f"real source {real} holds {len(real_set)} scan; at least 2 are needed.")
    try:
        settings.msssim.scales_for(real_set.shape)
    except ValueError as exc:
        raise RatganError(f"{exc}; use --msssim-kernel or --msssim-scales to fit.") from None
    held_set = (
        load_set("held-out", heldout, real_set.shape, settings.progress, None, real_set.voxel_size)
        if heldout is not None
        else None
    )
    if held_set is not None:
        _refuse_overlap(real_set, held_set)
    with FolderLock(out_dir, "ratgan evaluate") as lock:
        sets = []
        for name, source in synthetic.items():
            src, run = resolve_source(
                name,
                source,
                out_dir,
                n_generate or len(real_set),
                # one seed for every run: the same codes through each model, and a run's scans
                # do not change with its position in --synthetic (seed + k made them)
                settings.seed,
                real_set.paths[0],
                settings.device,
                settings.progress,
                lock,
            )
            s = load_set(
                name, src, real_set.shape, settings.progress, None, real_set.voxel_size, "note"
            )
            _warn_overlap(s, [real_set] + ([held_set] if held_set is not None else []))
            if len(s) < 2:
                raise RatganError(
                    f"synthetic set {name!r} holds {len(s)} scan; at least 2 are "
                    "needed (MS-SSIM compares scans inside a set)."
                )
            s.generated_from = run
            sets.append(s)
        load_s = time.perf_counter() - t0
        t = time.perf_counter()
        if feature_spaces is None:
            from ratgan.evaluation.anatomy_stage import anatomy_space
            from ratgan.evaluation.protocol import default_feature_spaces

            feature_spaces = [*default_feature_spaces(settings), anatomy_space(real_set, settings)]
        fit_s = time.perf_counter() - t
        result = evaluate(real_set, sets, settings, held_set, feature_spaces)
        result.timing_s["loading"] = load_s
        result.timing_s["feature spaces: fit"] = fit_s
        t = time.perf_counter()
        lock.create()  # a new report folder is made here, every input checked
        write_report(result, out_dir, figures=figures)
        result.timing_s["report"] = time.perf_counter() - t
        from ratgan.evaluation.report import write_json

        write_json(result, out_dir / "metrics.json")
        return result


def _refuse_overlap(real: ScanSet, heldout: ScanSet) -> None:
    """Raise RatganError when the held-out set shares scans with the real set (the same file
    or identical content): they would no longer be scans the generator never saw."""
    from ratgan.digests import shared_files
    from ratgan.evaluation.prepare import describe_pairs

    shared = shared_files(heldout.paths, real.paths)
    if not shared:
        # the same image saved another way (int16 with a slope, say) has other bytes: compare
        # the prepared volumes, as the near-copy check calls a real scan twice
        from ratgan.evaluation import memorisation as mem

        pairs = mem.same_images(heldout.volumes, real.volumes)
        shared = [(heldout.paths[i], real.paths[j]) for i, j in pairs]
    if shared:
        raise RatganError(
            f"{len({p for p, _ in shared})} held-out scans are also real (training) scans, "
            f"the same file or the same image ({describe_pairs(shared)}); --heldout must "
            "hold only scans the generator never saw."
        )


def _warn_overlap(synthetic: ScanSet, real_sets: list[ScanSet]) -> None:
    """Warn (and note in the report) when a synthetic set holds real or held-out scans: the
    near-copy check flags them, but a copied real file is a mistake the user must see."""
    from ratgan.digests import FileDigests, shared_files
    from ratgan.evaluation.prepare import describe_pairs, log

    digest = FileDigests()  # the synthetic files are compared with each real set
    for other in real_sets:
        shared = shared_files(synthetic.paths, other.paths, digest)
        if not shared:
            continue
        what = "real (training)" if other.name == "real" else other.name
        text = (
            f"{len({p for p, _ in shared})} scans of synthetic set {synthetic.name!r} are "
            f"{what} scans, the same file or identical content: {describe_pairs(shared)}"
        )
        log.warning("%s", text)
        synthetic.notes.append(text)


class QuickCounts(TypedDict, total=False):
    """The comparison counts that ``quick`` overrides in ``EvaluationSettings``."""

    comparisons: int
    msssim_comparisons: int
    split_repeats: int


QUICK = QuickCounts(comparisons=2_100, msssim_comparisons=210, split_repeats=5)
"""Reduced comparison counts for ``quick`` evaluations (the demo): a tenth of the paper's."""


def evaluate_sets(
    real: str | Path,
    synthetic: dict[str, str | Path],
    out: str | Path,
    seed: int = 0,
    progress: bool = True,
    quick: bool = False,
    heldout: str | Path | None = None,
    device: str = "cpu",
    anatomy: bool = True,
) -> dict:
    """Evaluate and report, for callers such as ``ratgan demo``.

    Returns ``result`` (the ``EvaluationResult``), ``table_markdown`` (the paper-style table,
    the distribution distances in every feature space, the directional spectra and the
    near-copy check),
    ``report`` (path of report.md) and ``figures`` (title -> PNG path).  ``quick`` uses a
    tenth of the paper's comparisons (``QUICK``), which the report states; ``anatomy`` False
    skips the anatomy feature space (which trains a network when the real scans have label
    maps and none is cached or bundled; see docs/evaluation.md).
    """
    from ratgan.evaluation.report import (
        PAPER_COLUMNS,
        feature_section,
        memorisation_section,
        spectra_section,
        table,
    )

    settings = EvaluationSettings(
        seed=seed, progress=progress, device=device, anatomy=anatomy, **(QUICK if quick else {})
    )
    result = run_evaluation(real, synthetic, out, heldout=heldout, settings=settings)
    out = Path(out)
    figures = {
        "montage": out / "montage.png",
        "per-voxel mean and std maps": out / "mean_std_maps.png",
        "intensity histograms": out / "intensity_histograms.png",
        "memorisation": out / "memorisation.png",
        "power spectra along each axis": out / "spectra.png",
    }
    sections = [
        table(result, PAPER_COLUMNS),
        feature_section(result),
        spectra_section(result),
        memorisation_section(result, "###"),
    ]
    tables = "\n\n".join(sections)
    return {
        "result": result,
        "table_markdown": tables,
        "report": out / "report.md",
        "figures": figures,
    }
