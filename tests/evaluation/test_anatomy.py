"""The anatomy feature space: its API, its cache, its evaluate stage, its bad input."""

import json

import numpy as np
import torch
import pytest

from ratgan.errors import RatganError
from ratgan.evaluation import anatomy_stage
from ratgan.evaluation.anatomy import (
    AnatomySettings,
    content_key,
    fit_anatomy_features,
    set_distances,
    varying_features,
)

TINY = AnatomySettings(widths=(4, 4, 8, 8), steps=6, batch_size=2, grid=(2, 2, 2))


def labelled(kit, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Brain-like volumes and labels: 1 for the bright shell, 2 for the core, 0 outside."""
    vols = kit.brains(n, seed)
    labels = np.where(vols > 0.5, 2, np.where(vols > 0.05, 1, 0)).astype(np.uint8)
    return vols, labels


def test_features_shape_cache_and_seed(kit, tmp_path):
    vols, labels = labelled(kit, 4, 0)
    space = fit_anatomy_features(vols, labels, seed=3, settings=TINY, cache_dir=tmp_path)
    f = space.features(vols)
    assert space.raw_dim == 4 + 4 + 8 + 8 + 2 * 8 and 0 < space.dim <= space.raw_dim
    assert f.shape == (4, space.dim)
    # standardised by the fitting set: z-scores of the kept raw features over these scans
    raw = space.raw_features(vols)[:, space.keep]
    np.testing.assert_allclose(f, (raw - raw.mean(0)) / raw.std(0, ddof=1), rtol=1e-6)
    assert np.isfinite(f).all() and not space.cached
    assert len(list(tmp_path.glob("*.pt"))) == 1 and not list(tmp_path.glob("*.tmp"))
    state = torch.random.get_rng_state()
    again = fit_anatomy_features(vols, labels, seed=3, settings=TINY, cache_dir=tmp_path)
    assert again.cached and np.allclose(again.features(vols), f)
    # torch's global random stream is left as it was (a caller's own draws do not shift)
    assert torch.equal(torch.random.get_rng_state(), state)
    fit_anatomy_features(vols, labels, seed=5, settings=TINY)  # fitted afresh, not cached
    assert torch.equal(torch.random.get_rng_state(), state)
    # a retrained network with the same seed is the same network (no cache)
    fresh = fit_anatomy_features(vols, labels, seed=3, settings=TINY)
    assert np.allclose(fresh.features(vols), f, atol=1e-5)
    # the cache key follows the content, the seed and the settings
    keys = {
        content_key(vols, labels, 3, TINY),
        content_key(vols, labels, 4, TINY),
        content_key(vols[::-1], labels, 3, TINY),
        content_key(vols, labels, 3, AnatomySettings(steps=7)),
    }
    assert len(keys) == 4


def _dice(pred: np.ndarray, ref: np.ndarray, label: int) -> float:
    p, r = pred == label, ref == label
    return 2 * (p & r).sum() / (p.sum() + r.sum())


def test_training_stops_once_held_out_dice_reaches_the_target(kit):
    vols, labels = labelled(kit, 10, 5)
    easy = AnatomySettings(
        widths=(4, 8, 8, 8), steps=400, check_every=10, target_dice=0.6, grid=(2, 2, 2)
    )
    space = fit_anatomy_features(vols, labels, seed=1, settings=easy)
    assert space.n_validation == 2 and space.reached
    assert space.steps_run < easy.steps and space.steps_run % easy.check_every == 0
    assert [c["step"] for c in space.curve] == list(range(10, space.steps_run + 1, 10))
    # the held-out Dice it stopped on, recomputed here on the same held-out scans
    from ratgan.evaluation.anatomy import validation_split

    _, val = validation_split(10, 1, easy.validation)
    pred = space.segment(vols[val])
    for label in (1, 2):
        assert space.val_dice[str(label)] == pytest.approx(_dice(pred, labels[val], label))
        assert space.val_dice[str(label)] >= 0.6
    # an unreachable target runs every step and says so
    hard = AnatomySettings(widths=(4, 4, 8, 8), steps=8, check_every=4, target_dice=1.0)
    tired = fit_anatomy_features(vols, labels, seed=1, settings=hard)
    assert tired.steps_run == 8 and not tired.reached and len(tired.curve) == 2
    about = anatomy_stage.AnatomyExtractor(tired, 0.0).describe()["about"]
    assert "did NOT reach the target 1" in about


def test_varying_features_ignore_always_empty_cells_when_most_cells_are_empty():
    """Feature selection: with most tissue-map cells empty (spread ~1e-9, rounding noise) the
    block's median is no longer the floor's base, so those cells are dropped; with a few empty
    cells the rule is the plain min_spread x median one."""
    settings = AnatomySettings()
    enc = np.array([1.0, 2.0, 0.05, 3.0])  # 0.05 < 0.1 x median 1.5
    few_empty = np.array([1.0, 0.5, 2.0, 1e-9, 0.8])
    keep = varying_features(np.concatenate([enc, few_empty]), 4, settings)
    assert keep.tolist() == [0, 1, 3, 4, 5, 6, 8]
    most_empty = np.array([1.0, 2e-9, 1e-9, 3e-9, 0.5, 1e-9, 4e-3])
    keep = varying_features(np.concatenate([enc, most_empty]), 4, settings)
    # median 3e-9 would keep every cell; the floor 0.1 x 0.01 x 1.0 = 1e-3 keeps three
    assert keep.tolist() == [0, 1, 3, 4, 8, 10]


def test_set_distances_known_answers():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((40, 6))
    same = set_distances(a, a)
    assert same["fd"] == pytest.approx(0, abs=1e-8)
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    assert same["density"] == pytest.approx(1 + 1 / 3, abs=0.02)  # own centre + 3 neighbours
    far = set_distances(a, a + 50)
    assert far["fd"] > 1000 and far["precision"] == far["recall"] == 0.0
    assert far["density"] == far["coverage"] == 0.0
    assert far["rbf_mmd2"] > same["rbf_mmd2"]


def test_bad_input_is_one_sentence(kit):
    vols, labels = labelled(kit, 3, 0)
    with pytest.raises(RatganError, match="one shape"):
        fit_anatomy_features(vols, labels[:, :-1], settings=TINY)
    with pytest.raises(RatganError, match="non-zero"):
        fit_anatomy_features(vols, np.zeros_like(labels), settings=TINY)
    with pytest.raises(RatganError, match="at least 2"):
        fit_anatomy_features(vols[:1], labels[:1], settings=TINY)


def _write_labelled(kit, folder, vols, labels):
    from ratgan.data.io import write_nifti

    kit.write_set(folder / "images", vols)
    (folder / "labels").mkdir(parents=True)
    affine = np.diag([0.375, 0.375, 0.5, 1.0])
    for i, lab in enumerate(labels):
        write_nifti(folder / "labels" / f"scan_{i:03d}.nii.gz", lab, affine, dtype=np.uint8)
    return folder


def test_evaluate_reports_the_anatomy_space(kit, tiny_sets, tmp_path, monkeypatch):
    from ratgan.cli import main

    monkeypatch.setenv("RATGAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(anatomy_stage, "NETWORK", TINY)
    vols, labels = labelled(kit, anatomy_stage.MIN_LABELLED, 1)
    real = _write_labelled(kit, tmp_path / "labelled", vols, labels)
    fast = [
        "--comparisons",
        "100",
        "--msssim-comparisons",
        "10",
        "--split-repeats",
        "2",
        "--no-progress",
        "--no-figures",
    ]
    out = tmp_path / "eval"
    assert (
        main(
            [
                "evaluate",
                "--real",
                str(real),
                "--synthetic",
                f"noise={tiny_sets['noise']}",
                "--heldout",
                str(tiny_sets["heldout"]),
                "--out",
                str(out),
                *fast,
            ]
        )
        == 0
    )
    data = json.loads((out / "metrics.json").read_text())
    spaces = {f["name"]: f for f in data["feature_spaces"]}
    assert list(spaces) == ["random 3D conv", "anatomy"]
    anat = spaces["anatomy"]
    assert set(anat["rows"]) == {data["reference_row"], "noise"}
    for row in anat["rows"].values():
        assert {"fd", "rbf_mmd", "precision", "recall", "density", "coverage"} <= set(row)
    assert anat["max_steps"] == TINY.steps and anat["steps"] <= TINY.steps
    assert anat["raw_dim"] == 40 and anat["subset_size"] >= 3 and anat["n_validation"] == 2
    md = (out / "report.md").read_text()
    section = md.split("### Feature space: anatomy")[1].split("## Memorisation")[0]
    assert "segmentation net" in section and "| noise |" in section
    assert len(list((tmp_path / "cache" / "anatomy").glob("*.pt"))) == 1

    # unlabelled real scans: the section says why it is skipped
    out2 = tmp_path / "eval2"
    assert (
        main(
            [
                "evaluate",
                "--real",
                str(tiny_sets["real"]),
                "--synthetic",
                f"noise={tiny_sets['noise']}",
                "--out",
                str(out2),
                *fast,
            ]
        )
        == 0
    )
    data = json.loads((out2 / "metrics.json").read_text())
    anat = {f["name"]: f for f in data["feature_spaces"]}["anatomy"]
    assert "no label map" in anat["skipped"] and anat["rows"] == {}
    assert "Skipped: 10 of 10 real scans have no label map" in (out2 / "report.md").read_text()

    # labelled, but turned off: skipped with that reason, nothing trained
    out3 = tmp_path / "eval3"
    assert (
        main(
            [
                "evaluate",
                "--real",
                str(real),
                "--synthetic",
                f"noise={tiny_sets['noise']}",
                "--out",
                str(out3),
                "--no-anatomy",
                *fast,
            ]
        )
        == 0
    )
    data = json.loads((out3 / "metrics.json").read_text())
    assert {f["name"]: f for f in data["feature_spaces"]}["anatomy"][
        "skipped"
    ] == "turned off (--no-anatomy)"
    assert "Skipped: turned off (--no-anatomy)" in (out3 / "report.md").read_text()
