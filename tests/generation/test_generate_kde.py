"""`ratgan generate --codes kde`: codes from a kernel density of the training scans' codes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from ratgan.config import load_config
from ratgan.errors import RatganError
from ratgan.generation import generate_scans
from ratgan.training.run import train

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "latent_codes.py"


@pytest.fixture(scope="module")
def tiny_run(phantom_dir, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("kde") / "run"
    over = {"train.iterations": 2, "train.sample_every": 100, "model.e_standardise": True}
    torch.manual_seed(0)
    train(load_config("tiny", over), phantom_dir, run, progress=False)
    return run


def _scans(folder: Path) -> list[np.ndarray]:
    return [nib.load(f).get_fdata() for f in sorted(folder.glob("synthetic_*.nii.gz"))]


def test_a_wide_kernel_is_the_prior_and_a_narrow_one_reconstructs_training_scans(
    tiny_run, phantom_dir, tmp_path
):
    prior = generate_scans(tiny_run, 3, tmp_path / "prior", seed=1, progress=False, device="cpu")
    wide = generate_scans(
        tiny_run, 3, tmp_path / "wide", seed=1, progress=False, device="cpu",
        codes="kde", kde_width=1e6,
    )  # fmt: skip
    # G ignores a code's length (bias-free stem, then instance norm): E(x_j) + 1e6 z is z.
    for a, b in zip(_scans(tmp_path / "prior"), _scans(tmp_path / "wide"), strict=True):
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.9999
    assert len(prior) == len(wide) == 3

    generate_scans(
        tiny_run, 6, tmp_path / "narrow", seed=1, progress=False, device="cpu",
        codes="kde", kde_width=1e-6,
    )  # fmt: skip
    # The reference: the benchmark's reconstructions G(E(x)) of all six training scans, its
    # scans read through its own path (a CSV listing and load_cohort) and encoded by its own
    # loop.
    spec = importlib.util.spec_from_file_location("latent_codes_bench", BENCH)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    ref = tmp_path / "ref"
    bench.main(
        [str(tiny_run), "--heldout", str(phantom_dir / "images"), "--out", str(ref)]
        + ["--n", "6", "--sets", "recon-train"]
    )
    recon = _scans(ref / "recon-train")
    narrow = _scans(tmp_path / "narrow")
    matched = [
        next(j for j, r in enumerate(recon) if np.allclose(v, r, atol=1e-3 * np.abs(r).max()))
        for v in narrow
    ]
    assert len(set(matched)) > 1  # the centres are drawn per scan, not one scan for all

    manifest = json.loads((tmp_path / "narrow" / "manifest.json").read_text())
    assert {(s["codes"], s["kde_width"]) for s in manifest["scans"]} == {("kde", 1e-6)}


def test_bad_kde_settings_are_refused_in_one_sentence(tiny_run, tmp_path):
    with pytest.raises(RatganError, match="--kde-width must be positive"):
        generate_scans(tiny_run, 1, tmp_path / "a", codes="kde", kde_width=0.0, progress=False)
    with pytest.raises(RatganError, match="--codes must be prior or kde"):
        generate_scans(tiny_run, 1, tmp_path / "b", codes="posterior", progress=False)
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").iterdir())


def test_a_kde_set_and_a_prior_set_never_share_a_folder(tiny_run, tmp_path):
    out = tmp_path / "set"
    generate_scans(tiny_run, 2, out, seed=3, progress=False, device="cpu")
    with pytest.raises(RatganError):
        generate_scans(
            tiny_run, 2, out, seed=3, progress=False, device="cpu", codes="kde", kde_width=2.0
        )
    manifest = json.loads((out / "manifest.json").read_text())
    assert all("codes" not in s for s in manifest["scans"])
    # and the other way round: a prior set replaced a kde set without a word
    kde = tmp_path / "kde"
    generate_scans(tiny_run, 2, kde, seed=3, progress=False, device="cpu", codes="kde")
    with pytest.raises(RatganError, match="codes kde -> None"):
        generate_scans(tiny_run, 2, kde, seed=3, progress=False, device="cpu")
    manifest = json.loads((kde / "manifest.json").read_text())
    assert all(s["codes"] == "kde" for s in manifest["scans"])


def test_a_missing_training_scan_is_named_with_what_kde_codes_need(phantom_dir, tmp_path):
    data = tmp_path / "data" / "images"
    data.mkdir(parents=True)
    for f in sorted((phantom_dir / "images").glob("*.nii.gz"))[:3]:
        (data / f.name).write_bytes(f.read_bytes())
    run = tmp_path / "run"
    over = {"train.iterations": 1, "train.sample_every": 100, "model.e_standardise": True}
    torch.manual_seed(0)
    train(load_config("tiny", over), data, run, progress=False)
    gone = sorted(data.glob("*.nii.gz"))[1]
    gone.unlink()
    out = tmp_path / "kde"
    with pytest.raises(RatganError) as err:
        generate_scans(run, 2, out, progress=False, device="cpu", codes="kde", kde_width=1.5)
    message = str(err.value)
    assert gone.name in message and "--codes kde" in message and "--codes prior" in message
    assert "resume" not in message
    assert not out.exists() or not any(out.glob("*.nii.gz"))
    # the prior needs no training scan
    generate_scans(run, 1, tmp_path / "prior", progress=False, device="cpu")


def test_the_copy_check_flags_copies_of_training_scans_and_not_new_subjects(
    tiny_run, phantom_dir, tmp_path
):
    from ratgan.data.io import read_scan
    from ratgan.data.phantom import write_cohort
    from ratgan.evaluation.copy_check import REPORT_FILE, check_generated

    train = sorted((phantom_dir / "images").glob("*.nii.gz"))
    new = write_cohort(tmp_path / "new", subjects=8, seed=999, progress=False)[6:]
    folder = tmp_path / "set"
    folder.mkdir()
    scans = []
    # A training scan moved by one voxel, another with its intensities scaled and offset (NCC
    # ignores both), and two subjects of another cohort that the run never saw.
    for name, source, edit in (
        ("a", train[0], lambda v: np.roll(v, 1, axis=0)),
        ("b", train[3], lambda v: 3.0 * v + 10.0),
        ("c", new[0], lambda v: v),
        ("d", new[1], lambda v: v),
    ):
        scan = read_scan(source)
        img = nib.Nifti1Image(edit(scan.data).astype(np.float32), scan.affine)
        nib.save(img, folder / f"synthetic_{name}.nii.gz")
        scans.append(folder / f"synthetic_{name}.nii.gz")
    result = check_generated(tiny_run, scans, folder)
    flagged = {f["scan"]: Path(f["nearest_training_scan"]).name for f in result["flagged"]}
    assert flagged == {"synthetic_a.nii.gz": train[0].name, "synthetic_b.nii.gz": train[3].name}
    assert (result["near_copies"], result["generated_scans"], result["training_scans"]) == (2, 4, 6)
    assert json.loads((folder / REPORT_FILE).read_text()) == result


def test_the_copy_check_flags_copies_at_the_run_s_own_resolution(tiny_run, phantom_dir, tmp_path):
    """The tiny preset pools scans by 4, so the closest a generator can come to a training scan
    is that scan pooled and upsampled again: exactly what generate writes for the scan's own
    network-space volume (the training's preprocessing and its inverse).  Compared with the
    full-resolution training scans, against a threshold fitted on full-resolution pairs, no
    such perfect copy was flagged."""
    from ratgan.data.io import read_scan
    from ratgan.data.phantom import write_cohort
    from ratgan.data.transforms import inverse_preprocess, preprocess
    from ratgan.evaluation.copy_check import check_generated
    from ratgan.runs import read_run_config

    data = read_run_config(tiny_run).data
    assert data.downsample == 4
    train = sorted((phantom_dir / "images").glob("*.nii.gz"))
    new = write_cohort(tmp_path / "new", subjects=8, seed=999, progress=False)[6:]
    folder = tmp_path / "set"
    folder.mkdir()
    scans = []
    # two perfect copies of training scans and two subjects the run never saw, all written
    # as the generator writes its volumes
    for name, source in (("a", train[0]), ("b", train[4]), ("c", new[0]), ("d", new[1])):
        scan = read_scan(source)
        vol, info = preprocess(scan.data, data.target_shape, data.downsample)
        img = nib.Nifti1Image(inverse_preprocess(vol, info), scan.affine)
        nib.save(img, folder / f"synthetic_{name}.nii.gz")
        scans.append(folder / f"synthetic_{name}.nii.gz")
    result = check_generated(tiny_run, scans, folder)
    flagged = {f["scan"]: Path(f["nearest_training_scan"]).name for f in result["flagged"]}
    assert flagged == {"synthetic_a.nii.gz": train[0].name, "synthetic_b.nii.gz": train[4].name}


def test_generate_checks_a_kde_set_for_near_copies_by_default(tiny_run, tmp_path, capsys):
    from ratgan.cli import main

    base = [str(tiny_run), "--n", "2", "--device", "cpu", "--no-progress"]
    assert main(["generate", *base, "--out", str(tmp_path / "kde"), "--codes", "kde"]) == 0
    said = capsys.readouterr().out
    assert "near-copy check: 0 of 2 scans" in said
    report = json.loads((tmp_path / "kde" / "near_copies.json").read_text())
    assert report["generated_scans"] == 2 and report["training_scans"] == 6
    assert main(["generate", *base, "--out", str(tmp_path / "prior")]) == 0
    assert not (tmp_path / "prior" / "near_copies.json").exists()
    assert "near-copy" not in capsys.readouterr().out
    off = ["--codes", "kde", "--copy-check", "off"]
    assert main(["generate", *base, "--out", str(tmp_path / "off"), *off]) == 0
    assert not (tmp_path / "off" / "near_copies.json").exists()
    assert main(["generate", *base, "--out", str(tmp_path / "on"), "--copy-check", "on"]) == 0
    assert (tmp_path / "on" / "near_copies.json").is_file()


def test_a_checked_kde_set_can_be_extended_and_its_report_follows_the_set(tiny_run, tmp_path):
    # near_copies.json, which generate itself writes, made the rerun refuse its own folder
    from ratgan.cli import main

    out = tmp_path / "kde"
    base = [str(tiny_run), "--device", "cpu", "--no-progress", "--out", str(out)]
    assert main(["generate", *base, "--n", "2", "--codes", "kde"]) == 0
    assert json.loads((out / "near_copies.json").read_text())["generated_scans"] == 2
    assert main(["generate", *base, "--n", "3", "--codes", "kde"]) == 0
    assert json.loads((out / "near_copies.json").read_text())["generated_scans"] == 3
    assert main(["generate", *base, "--n", "4", "--codes", "kde", "--copy-check", "off"]) == 0
    assert not (out / "near_copies.json").exists()  # it described the 3-scan set


def test_a_kde_width_without_codes_kde_is_refused_not_ignored(tiny_run, tmp_path, capsys):
    """--kde-width shapes --codes kde only: with prior codes it changed nothing, so a user who
    asked for width 0.5 got prior scans without a word."""
    from ratgan.cli import main

    out = tmp_path / "set"
    args = ["generate", str(tiny_run), "--n", "1", "--out", str(out), "--no-progress"]
    assert main([*args, "--kde-width", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1
    assert "--kde-width" in err and "--codes kde" in err
    assert not out.exists()
    assert main(args) == 0  # prior codes without a width are fine
    demo_out = tmp_path / "demo"
    demo = ["demo", "--out", str(demo_out), "--codes", "prior", "--kde-width", "0.5"]
    assert main([*demo, "--no-progress"]) == 2  # refused before the demo starts anything
    assert "--codes kde" in capsys.readouterr().err
    assert not demo_out.exists()


def test_the_api_refuses_a_kde_width_with_prior_codes_as_the_cli_does(tiny_run, tmp_path):
    """generate_scans(codes="prior", kde_width=0.5) wrote prior scans and ignored the width."""
    from ratgan.errors import RatganError
    from ratgan.generation import generate_scans

    out = tmp_path / "set"
    with pytest.raises(RatganError, match="--codes kde"):
        generate_scans(tiny_run, 1, out, codes="prior", kde_width=0.5, progress=False)
    assert not out.exists()
    assert len(generate_scans(tiny_run, 1, out, codes="prior", progress=False)) == 1
