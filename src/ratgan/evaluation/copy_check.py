"""The near-copy check of a freshly generated set against its run's own training scans.

``ratgan generate --codes kde`` samples codes near the encoder's codes of the training scans,
and a narrow kernel reproduces training subjects: a privacy leak for a user whose scans are
animals' or patients' data.  So such a set is checked as it is written, with the memorisation
check of ``ratgan evaluate`` (:func:`ratgan.evaluation.protocol.memorisation_check`: the most
similar training scan of each generated scan, over shifts of up to 2 voxels, against a
threshold calibrated on the training scans' leave-one-out nearest neighbours), and the result
is stored beside the scans in ``near_copies.json``.  No held-out scans are needed.  Both
the training and the generated scans are compared as the run's networks see them (pooled by
its ``downsample`` and upsampled again, background outside its field of view): the closest a
generator can come to a training scan.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from ratgan.atomic import atomic_write_json
from ratgan.data.transforms import inverse_preprocess, preprocess
from ratgan.errors import RatganError
from ratgan.evaluation.prepare import load_paths
from ratgan.evaluation.protocol import memorisation_check
from ratgan.evaluation.settings import EvaluationSettings
from ratgan.generation.output import COPY_REPORT
from ratgan.runs import read_run_config, read_run_data, run_paths

REPORT_FILE = COPY_REPORT


def check_generated(
    run_dir: str | Path, scans: list[Path], out_dir: str | Path, progress: bool = False
) -> dict:
    """Check ``scans`` (generated from ``run_dir``) for near-copies of the run's training scans.

    Writes ``out_dir/near_copies.json`` atomically and returns its content: the threshold and
    its rule, the number and share of near-copies, and each flagged scan with its nearest
    training scan and their similarity.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    training = [Path(e.image) for e in read_run_data(run_dir).entries]
    for path in training:
        if not path.is_file():
            raise RatganError(
                f"{path}, a training scan recorded in {run_paths(run_dir).data}, no longer "
                "exists; the near-copy check compares the generated scans with every training "
                "scan (restore it, or generate with `--copy-check off`)."
            )
    if len(training) < 3:
        raise RatganError(
            f"{run_paths(run_dir).data} records {len(training)} training scans; the near-copy "
            "check calibrates its threshold on at least 3 (generate with `--copy-check off`)."
        )
    settings = EvaluationSettings(progress=progress, anatomy=False)
    # the training scans as the run read them: one volume of 4-D files if it took one
    data = read_run_config(run_dir).data
    # Both sides as the networks see them: a run that pools or crops its scans can at best
    # reproduce a training scan at its own resolution and field of view, which compared with
    # the full scans (against a threshold fitted on full scans) passed as a new subject.
    seen = partial(as_seen, target_shape=data.target_shape, downsample=data.downsample)
    real = load_paths(
        "training",
        training,
        str(run_dir),
        progress=progress,
        volume_index=data.volume_index,
        transform=seen,
    )
    generated = load_paths(
        "generated",
        list(scans),
        str(out_dir),
        real.shape,
        progress,
        real.voxel_size,
        "note",
        transform=seen,
    )
    memo = memorisation_check(real, None, [generated], settings)
    summary = memo.synthetic["generated"]
    result = {
        "run": str(run_dir.resolve()),
        "training_scans": len(real),
        "generated_scans": len(generated),
        "similarity": memo.reference["similarity"],
        "threshold": summary["threshold"],
        "threshold_rule": summary["threshold_rule"],
        "near_copies": summary["near_copies"],
        "fraction": summary["fraction"],
        "training_leave_one_out_near_copies": memo.reference["near_copies"],
        "nn_ncc_median": summary["nn_ncc_median"],
        "nn_ncc_max": summary["nn_ncc_max"],
        "training_leave_one_out_nn_ncc_mean": memo.reference["nn_ncc_mean"],
        "flagged": [{**f, "scan": Path(f["scan"]).name} for f in summary["flagged"]],
    }
    atomic_write_json(out_dir / REPORT_FILE, result)
    return result


def as_seen(volume: np.ndarray, target_shape: tuple[int, int, int], downsample: int) -> np.ndarray:
    """``volume`` as a run with this ``target_shape`` and ``downsample`` sees it, brought back
    to its own shape: pooled and upsampled again, and background outside the network's field
    of view (zero, or the scan's minimum when it is negative: the training's preprocessing
    followed by its inverse, as generate writes scans)."""
    vol, info = preprocess(volume, target_shape, downsample)
    return inverse_preprocess(vol, info)


def describe(result: dict) -> str:
    """One sentence for the terminal: how many near-copies, against what threshold."""
    n, total = result["near_copies"], result["generated_scans"]
    head = (
        f"near-copy check: {n} of {total} scans are more similar to a training scan than the "
        f"threshold {result['threshold']:.4f} (fitted on the {result['training_scans']} "
        "training scans' similarity to each other)"
    )
    if not n:
        return head + f"; details in {REPORT_FILE}."
    names = ", ".join(f["scan"] for f in result["flagged"][:5])
    more = f" and {n - 5} more" if n > 5 else ""
    return (
        head + f": {names}{more}. These scans may reproduce training subjects; a wider "
        f"--kde-width or --codes prior draws further from them (details in {REPORT_FILE})."
    )
