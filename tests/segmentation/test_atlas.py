"""Atlas labelling with ANTs on small synthetic volumes whose true label maps are known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ratgan.data.io import list_scans, read_label, read_scan
from ratgan.errors import RatganError
from ratgan.segmentation import atlas as atlas_mod
from ratgan.segmentation.atlas import AtlasParams, fuse_majority, label_scans, make_atlases
from ratgan.segmentation.metrics import dice_scores

from .conftest import write_cohort

pytest.importorskip("ants")

SHAPE = (24, 24, 12)
FAST = AtlasParams(k=3, syn_iterations=(20, 10))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """Six labelled atlases and three targets whose true labels sit in truth/."""
    root = tmp_path_factory.mktemp("atlas")
    write_cohort(root / "atlases", 6, seed=0, shape=SHAPE)
    write_cohort(root / "targets", 3, seed=5, shape=SHAPE, prefix="target")
    return root


def test_fuse_majority_votes_and_breaks_ties_towards_the_smaller_class():
    maps = np.array([[[[1, 2, 3, 0]]], [[[1, 2, 2, 3]]], [[[2, 0, 3, 3]]], [[[2, 3, 1, 0]]]])
    # voxel 0: 1,1,2,2 tie -> 1; voxel 1: 2,2,0,3 -> 2; voxel 2: 3,2,3,1 -> 3; 3: 0,3,3,0 -> 0
    assert fuse_majority(maps)[0, 0].tolist() == [1, 2, 3, 0]


def test_labels_match_the_truth_are_seeded_and_cached(cohort, tmp_path, monkeypatch):
    atlases = make_atlases(list_scans(cohort / "atlases"), k=3, seed=0)
    targets = sorted((cohort / "targets" / "images").glob("*.nii.gz"))
    out = label_scans(targets, atlases, tmp_path / "a", FAST, workers=1, progress=False)
    assert [p.name for p in out] == [t.name for t in targets]
    for t, p in zip(targets, out, strict=True):
        scan = read_scan(t)
        lab = read_label(p, scan)  # same shape and affine as its scan, values 0-3
        truth = read_label(cohort / "targets" / "labels" / t.name, scan)
        d = dice_scores(lab, truth)
        assert d["global"][0] > 0.8, d
        assert min(d[c][0] for c in ("GM", "WM", "CSF")) > 0.5, d
    # the same inputs give the same maps in a fresh folder (seeded, one ITK thread)
    again = label_scans(targets, atlases, tmp_path / "b", FAST, workers=1, progress=False)
    for p, q in zip(out, again, strict=True):
        assert np.array_equal(
            read_label(p, read_scan(targets[0])), read_label(q, read_scan(targets[0]))
        )

    # a rerun with the same cache registers nothing
    def no_registration(*args, **kwargs):
        raise AssertionError("registered although the label map is cached")

    monkeypatch.setattr(atlas_mod, "atlas_label", no_registration)
    label_scans(
        targets,
        atlases,
        tmp_path / "c",
        FAST,
        cache_dir=tmp_path / "a" / ".cache",
        workers=1,
        progress=False,
    )
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [t.name for t in targets]
    # other parameters are another key: the cache does not answer for them
    with pytest.raises(AssertionError, match="cached"):
        label_scans(
            targets,
            atlases,
            tmp_path / "d",
            AtlasParams(k=3, seed=1),
            cache_dir=tmp_path / "a" / ".cache",
            workers=1,
            progress=False,
        )


def test_process_pool_gives_the_same_maps(cohort, tmp_path):
    atlases = make_atlases(list_scans(cohort / "atlases"), k=1, seed=0)
    targets = sorted((cohort / "targets" / "images").glob("*.nii.gz"))[:2]
    params = AtlasParams(k=1, syn_iterations=(5,))
    serial = label_scans(targets, atlases, tmp_path / "s", params, workers=1, progress=False)
    pooled = label_scans(targets, atlases, tmp_path / "p", params, workers=2, progress=False)
    for t, a, b in zip(targets, serial, pooled, strict=True):
        scan = read_scan(t)
        assert np.array_equal(read_label(a, scan), read_label(b, scan))


def test_a_preset_itk_thread_count_changes_nothing(cohort, tmp_path, monkeypatch):
    """ITK's multi-threaded sums depend on the thread count: the labeller runs one thread
    per registration whatever the environment says, so the labels do not depend on it."""
    atlases = make_atlases(list_scans(cohort / "atlases"), k=3, seed=0)
    targets = sorted((cohort / "targets" / "images").glob("*.nii.gz"))[:2]
    plain = label_scans(targets, atlases, tmp_path / "a", FAST, workers=2, progress=False)
    monkeypatch.setenv(atlas_mod.ITK_THREADS, "2")
    preset = label_scans(targets, atlases, tmp_path / "b", FAST, workers=2, progress=False)
    for t, a, b in zip(targets, plain, preset, strict=True):
        scan = read_scan(t)
        assert np.array_equal(read_label(a, scan), read_label(b, scan))


def test_too_few_atlases_is_one_clear_error(cohort):
    with pytest.raises(RatganError, match="needs 9 labelled scans but only 6"):
        make_atlases(list_scans(cohort / "atlases"), k=9)


def test_syn_iterations_reach_the_registration_and_the_cli_default_is_the_labellers(
    cohort, tmp_path, monkeypatch
):
    import ants

    from ratgan.cli import main
    from ratgan.cli.label import register
    from ratgan.segmentation.state import DEFAULT_SYN_ITERATIONS

    seen = []
    real = ants.registration

    def recording(*args, **kwargs):
        seen.append(kwargs["reg_iterations"])
        return real(*args, **kwargs)

    monkeypatch.setattr(ants, "registration", recording)
    atlases = make_atlases(list_scans(cohort / "atlases"), k=1, seed=0)
    target = sorted((cohort / "targets" / "images").glob("*.nii.gz"))[:1]
    label_scans(target, atlases, tmp_path / "a", AtlasParams(k=1, syn_iterations=(7, 3)),
                workers=1, progress=False)  # fmt: skip
    assert seen == [(7, 3)]
    # `ratgan label --syn-iterations` builds the same parameters
    args = ["label", "--atlas", str(cohort / "atlases"), "--scans", str(target[0]), "--k", "1"]
    assert main([*args, "--out", str(tmp_path / "b"), "--syn-iterations", "6", "2",
                 "--workers", "1", "--no-progress"]) == 0  # fmt: skip
    assert seen[-1] == (6, 2)
    # the atlases behind the maps are recorded, for segbench's check of test-scan atlases
    import json

    from ratgan.digests import file_sha256

    record = json.loads((tmp_path / "b" / ".atlases.json").read_text())["atlases"]
    assert [a["sha256"] for a in record] == [file_sha256(a.image) for a in atlases]
    # the defaults of the labeller, of `ratgan label` and of `ratgan segbench` agree
    import argparse

    sub = argparse.ArgumentParser().add_subparsers()
    register(sub)
    defaults = sub.choices["label"].parse_args(["--atlas", "a", "--scans", "b", "--out", "c"])
    assert tuple(defaults.syn_iterations) == AtlasParams().syn_iterations
    assert AtlasParams().syn_iterations == DEFAULT_SYN_ITERATIONS


def test_volume_index_is_part_of_the_cache_key(cohort, tmp_path, monkeypatch):
    """Volume 1 of a 4-D scan labelled after volume 0 into the same OUT gets its own labels."""
    import hashlib
    import json

    from ratgan.data.io import write_nifti
    from ratgan.digests import file_sha256

    from .conftest import AFFINE, tiny_subject

    rng = np.random.default_rng(7)
    vols = np.stack([tiny_subject(rng, SHAPE)[0] for _ in range(3)], -1)
    target = write_nifti(tmp_path / "scans" / "t4d.nii.gz", vols, AFFINE)
    atlases = make_atlases(list_scans(cohort / "atlases"), k=1, seed=0)
    seen = []

    def fake(target, atlases, params, volume_index=None):
        # the label map tells which volume was registered: 1 + its index
        seen.append(volume_index)
        return np.full(SHAPE, 1 + (volume_index or 0), np.uint8)

    monkeypatch.setattr(atlas_mod, "atlas_label", fake)
    out = tmp_path / "out"
    for vi in (0, 1):
        (path,) = label_scans([target], atlases, out, FAST, workers=1, volume_index=vi,
                              progress=False)  # fmt: skip
        assert np.unique(read_label(path, read_scan(target, vi))).tolist() == [1 + vi]
    assert seen == [0, 1]
    keys = {atlas_mod.cache_key(target, atlases, FAST, vi) for vi in (None, 0, 1)}
    assert len(keys) == 3
    # the default (None: the mean of a 4-D scan) keeps the key it had before
    old = hashlib.sha256(file_sha256(target).encode())
    old.update(atlases[0].digest.encode())
    old.update(json.dumps(FAST.to_dict(), sort_keys=True).encode())
    assert atlas_mod.cache_key(target, atlases, FAST) == old.hexdigest()[:32]


@pytest.mark.parametrize(
    "scans, out",
    [
        ("targets/images", "targets/images"),  # --out is the scans folder
        ("targets/images", "targets/labels/../images"),  # the same, spelt otherwise
        ("atlases/images", "atlases/labels"),  # the atlas label maps
        ("atlases/images/sub-000.nii.gz", "atlases/images"),  # an atlas scan
    ],
)
def test_an_out_that_would_overwrite_an_input_is_refused(
    cohort, tmp_path, monkeypatch, capsys, scans, out
):
    import shutil

    from ratgan.cli import main

    root = tmp_path / "c"
    shutil.copytree(cohort, root)
    before = {p: p.read_bytes() for p in root.rglob("*.nii.gz")}

    def no_registration(*args, **kwargs):
        raise AssertionError("registered although --out is refused")

    monkeypatch.setattr(atlas_mod, "atlas_label", no_registration)
    args = ["label", "--atlas", str(root / "atlases"), "--scans", str(root / scans)]
    assert main([*args, "--out", str(root / out), "--k", "1", "--workers", "1",
                 "--no-progress"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "would overwrite the input file" in err and len(err.strip().splitlines()) == 1
    assert {p: p.read_bytes() for p in root.rglob("*.nii.gz")} == before
    # label_scans itself refuses it too (segbench calls it directly)
    atlases = make_atlases(list_scans(root / "atlases"), k=1, seed=0)
    targets = [e.image for e in list_scans(root / scans)]
    with pytest.raises(RatganError, match="would overwrite the input file"):
        label_scans(targets, atlases, root / out, FAST, workers=1, progress=False)
