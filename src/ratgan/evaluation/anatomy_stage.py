"""The anatomy feature space as a stage of ``ratgan evaluate``: rows and a report section.

``anatomy_rows`` reads the real scans' label maps, fits (or loads from the cache) the anatomy
network of ``ratgan.evaluation.anatomy`` and computes RBF-MMD^2, Fréchet distance and k-NN
precision/recall of every set with exactly the splits and subsampling of the random feature
space (``protocol.set_level``).  Without label maps for every real scan, or with fewer than
``MIN_LABELLED`` real scans, the stage is skipped and says why; ``anatomy_markdown`` turns the
result into the report's section.
"""

from __future__ import annotations

import time

import numpy as np

from ratgan.evaluation.prepare import ScanSet, centre_crop

MIN_LABELLED = 10
"""Fewer labelled real scans than this train no anatomy network (too little to learn from)."""
NETWORK = None
"""``AnatomySettings`` of the network ``ratgan evaluate`` trains (None: the defaults)."""
COLUMNS = {
    "rbf_mmd": ("RBF-MMD² ↓", "min"),
    "fd": ("Fréchet ↓", "min"),
    "precision": ("precision ↑", "max"),
    "recall": ("recall ↑", "max"),
}


def real_labels(real: ScanSet) -> tuple[np.ndarray | None, str | None]:
    """Label maps (n, X, Y, Z) of the real set cropped like its scans, or (None, reason)."""
    from ratgan.data.io import list_scans, read_label, read_scan
    from ratgan.errors import RatganError

    try:
        by_image = {str(e.image): e.label for e in list_scans(real.source)}
    except RatganError:  # e.g. volumes built in memory, with no files behind them
        return None, f"the real source {real.source} lists no scan files to find label maps for"
    labels = [by_image.get(str(p)) for p in real.paths]
    missing = sum(lab is None for lab in labels)
    if missing:
        return None, (f"{missing} of {len(labels)} real scans have no label map (a labels/ "
                      "folder beside images/, or a CSV label column), so no anatomy network "
                      "can be trained")
    out = np.empty((len(labels), *real.shape), dtype=np.int64)
    for i, (img, lab) in enumerate(zip(real.paths, labels)):
        out[i] = centre_crop(read_label(lab, read_scan(img)), real.shape)
    return out, None


def anatomy_rows(real: ScanSet, heldout: ScanSet | None, synthetic: list[ScanSet],
                 settings, rng: np.random.Generator) -> dict:
    """The anatomy space's set-level distances of every set, keyed like the report's rows.

    Returns ``{"info": {...}, "rows": {row name: {metric: {mean, std, values}}}}`` or
    ``{"info": {"skipped": reason}}``.  ``settings`` is the ``EvaluationSettings``.
    """
    from ratgan.evaluation.anatomy import default_cache_dir, fit_anatomy_features
    from ratgan.evaluation.protocol import set_level

    if not getattr(settings, "anatomy", True):
        return {"info": {"skipped": "turned off (--no-anatomy)"}}
    labels, reason = real_labels(real)
    if labels is None:
        return {"info": {"skipped": reason}}
    if len(real) < MIN_LABELLED:
        return {"info": {"skipped": f"only {len(real)} labelled real scans; the anatomy "
                                    f"network needs at least {MIN_LABELLED}"}}
    t0 = time.perf_counter()
    space = fit_anatomy_features(real.volumes, labels, seed=settings.feature_seed,
                                 settings=NETWORK, cache_dir=default_cache_dir(),
                                 progress=settings.progress)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    f_real = space.features(real.volumes)
    f_held = space.features(heldout.volumes) if heldout is not None else None
    f_syn = {s.name: space.features(s.volumes) for s in synthetic}
    level = set_level(f_real, f_held, f_syn, settings, rng)
    info = {**space.describe(), **level.pop("_info"), "fit_or_load_s": fit_s,
            "features_s": time.perf_counter() - t0}
    return {"info": info, "rows": level}


def anatomy_markdown(results: dict) -> str:
    """The report section of the anatomy space ('' when the evaluation has none)."""
    from ratgan.evaluation.report import table

    anat = results.get("anatomy")
    if anat is None:
        return ""
    info = anat["info"]
    head = "## Beyond the paper: distances in an anatomy feature space\n\n"
    if "skipped" in info:
        return head + f"*Skipped: {info['skipped']}.*\n"
    if "rows" not in anat or not anat["rows"]:
        return head + "*Skipped: too few scans for set-level distances.*\n"
    ref = results["reference_row"]
    rows = {ref: {"role": "reference", **anat["rows"]["reference"]}}
    rows.update({n: {"role": "synthetic", **r} for n, r in anat["rows"].items()
                 if n != "reference"})
    dice = ", ".join(f"label {k} {v:.2f}" for k, v in info.get("train_dice", {}).items())
    return head + (
        f"The encoder and coarse tissue-probability maps of a small 3D segmentation network "
        f"trained on the real scans' label maps ({info['dim']} features: encoder widths "
        f"{info['widths']}, tissue maps pooled to {'x'.join(map(str, info['grid']))} cells; "
        f"{info['steps']} steps, seed {info['seed']}, "
        f"{'loaded from the cache' if info['cached'] else 'trained now'}; Dice on its training "
        f"scans per label: {dice}). Unlike the random space it responds to where tissue is "
        f"rather than to noise texture (docs/evaluation.md shows both on known corruptions). "
        f"Same splits and subsets as above.\n\n"
        + table({"rows": rows, "reference_row": ref}, COLUMNS) + "\n")
