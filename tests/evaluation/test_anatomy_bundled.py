"""The anatomy network shipped for `ratgan demo` is the one its default cohort would fit."""

import numpy as np

from ratgan.demo import demo_cohort
from ratgan.evaluation.anatomy import (
    BUNDLED_DIR,
    AnatomySettings,
    content_key,
    fit_anatomy_features,
)
from ratgan.evaluation.anatomy_stage import real_labels
from ratgan.evaluation.prepare import load_set


def test_the_demo_cohort_loads_the_bundled_network_and_it_segments_unseen_scans(tmp_path):
    # the demo's defaults: 64 training and 32 held-out phantom subjects, seed 0
    train_dir, held_dir = demo_cohort(tmp_path / "phantom", 64, 32, 0, False)
    real = load_set("real", train_dir, progress=False)
    labels, reason = real_labels(real)
    assert reason is None and labels is not None
    key = content_key(real.volumes, labels, 0, AnatomySettings())
    # Fails when the phantom, the preparation, AnatomySettings or CACHE_VERSION change: then
    # refit with `ratgan evaluate --real <demo>/phantom/train ...` and copy the cache's
    # <key>.pt into src/ratgan/evaluation/networks/ (delete the old one).
    assert (BUNDLED_DIR / f"{key}.pt").is_file(), f"no bundled network for key {key}"
    assert len(list(BUNDLED_DIR.glob("*.pt"))) == 1

    empty_cache = tmp_path / "cache"
    space = fit_anatomy_features(real.volumes, labels, seed=0, cache_dir=empty_cache)
    assert space.source == "bundled" and space.cached and space.reached
    assert not empty_cache.exists()  # loaded, nothing trained or written

    # Known answer: the phantom's own label maps of held-out subjects the network never saw.
    held = load_set("held", held_dir, real.shape, progress=False)
    held_labels, _ = real_labels(held)
    assert held_labels is not None
    pred = space.segment(held.volumes[:6])
    for tissue in (1, 2, 3):
        p, r = pred == tissue, held_labels[:6] == tissue
        dice = 2 * np.logical_and(p, r).sum() / (p.sum() + r.sum())
        assert dice > 0.75, (tissue, dice)
