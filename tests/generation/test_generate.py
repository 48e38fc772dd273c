"""Generation: determinism, header/affine copy, manifest, joint scan+label export."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from ratgan.config import load_config
from ratgan.data.io import read_scan
from ratgan.errors import RatganError
from ratgan.generation import generate_scans
from ratgan.training.run import train


@pytest.fixture(scope="module")
def tiny_run(phantom_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    train(load_config("tiny", {"train.iterations": 2}), phantom_dir, run, progress=False)
    return run


def _reference(phantom_dir):
    return min((phantom_dir / "images").glob("*.nii*"))


def test_same_seed_gives_identical_files_and_other_seeds_differ(tiny_run, tmp_path):
    a = generate_scans(tiny_run, 3, tmp_path / "a", seed=5, progress=False, batch_size=2)
    b = generate_scans(tiny_run, 5, tmp_path / "b", seed=5, progress=False, batch_size=2)
    c = generate_scans(tiny_run, 3, tmp_path / "c", seed=6, progress=False, batch_size=2)
    assert a[0].read_bytes() == (tmp_path / "b" / a[0].name).read_bytes()
    for pa, pb, pc in zip(a, b, c, strict=False):  # b's last two have no partner
        va, vb, vc = (read_scan(p).data for p in (pa, pb, pc))
        assert np.array_equal(va, vb)
        assert not np.array_equal(va, vc)


def test_a_scans_output_noise_is_not_its_code():
    """Code and output noise of one scan come from two streams of its seed: with the streams
    apart, the noise's first voxels are not the code (they were, for every seed, while the
    noise was seeded with seed + 2**32, which torch's CPU generator cuts to the seed), and over
    many scans the two are uncorrelated (known answer: independent N(0, 1) draws)."""
    from ratgan.generation.sample import latent_codes, output_noise, scan_seed

    seeds = [scan_seed(0, i) for i in range(64)]
    codes = latent_codes(seeds, 16)
    noise = output_noise(seeds, (1, 4, 4, 2)).reshape(64, -1)[:, :16]
    assert not torch.equal(codes, noise)
    r = np.corrcoef(codes.flatten().numpy(), noise.flatten().numpy())[0, 1]
    assert abs(r) < 0.1  # 1,024 pairs: |r| of independent draws stays below 0.1 (4 sigma)
    # the noise itself is still a function of the seed alone
    assert torch.equal(output_noise(seeds[:2], (1, 4, 4, 2)), output_noise(seeds, (1, 4, 4, 2))[:2])


def test_files_carry_the_reference_header_affine_shape_and_range(tiny_run, phantom_dir, tmp_path):
    ref = read_scan(_reference(phantom_dir))
    paths = generate_scans(tiny_run, 2, tmp_path / "g", seed=0, progress=False)
    for path in paths:
        scan = read_scan(path)
        assert scan.data.shape == ref.data.shape == (64, 64, 40)
        assert np.allclose(scan.affine, ref.affine)
        for field in ("qform_code", "sform_code", "pixdim", "datatype", "dim"):
            assert np.array_equal(scan.header[field], ref.header[field]), field
        assert ref.data.min() - 1e-3 <= scan.data.min()
        assert scan.data.max() <= ref.data.max() * (1 + 1e-3)
    manifest = json.loads((tmp_path / "g" / "manifest.json").read_text())
    assert [r["file"] for r in manifest["scans"]] == [p.name for p in paths]
    assert all(
        r["iteration"] == 2 and r["checkpoint"].endswith("ckpt_0000002.pt")
        for r in manifest["scans"]
    )
    assert len({r["seed"] for r in manifest["scans"]}) == 2


def test_files_do_not_carry_the_references_identifying_metadata(tiny_run, phantom_dir, tmp_path):
    src = nib.load(_reference(phantom_dir))
    img = nib.Nifti1Image(np.asanyarray(src.dataobj), src.affine, src.header)
    img.header["descrip"] = b"rat R17 2021-03-02"
    img.header["aux_file"], img.header["db_name"] = b"R17.lut", b"lab-db"
    img.header["cal_min"], img.header["cal_max"] = 0.0, 4000.0
    img.header.extensions.append(nib.nifti1.Nifti1Extension(6, b"PatientName=R17"))
    nib.save(img, tmp_path / "ref.nii.gz")
    ref = nib.load(tmp_path / "ref.nii.gz")
    assert len(ref.header.extensions) == 1
    (path,) = generate_scans(
        tiny_run, 1, tmp_path / "g", reference=tmp_path / "ref.nii.gz", progress=False
    )
    out = nib.load(path)
    assert out.header["descrip"].item() == b"ratgan synthetic"
    assert out.header["aux_file"].item() == out.header["db_name"].item() == b""
    assert out.header["cal_min"] == out.header["cal_max"] == 0
    assert len(out.header.extensions) == 0
    np.testing.assert_allclose(out.affine, ref.affine, atol=1e-6)
    assert out.header.get_zooms() == ref.header.get_zooms()
    assert out.get_data_dtype() == ref.get_data_dtype()
    for field in ("qform_code", "sform_code"):
        assert out.header[field] == ref.header[field], field


def test_no_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(RatganError, match="no checkpoint"):
        generate_scans(tmp_path, 1, tmp_path / "out", progress=False)


def test_joint_generation_writes_a_label_map_aligned_with_its_scan(
    phantom_dir, tmp_path, monkeypatch
):
    cfg = load_config(
        "tiny", {"train.iterations": 2, "model.channels": 4, "data.label_channels": True}
    )
    run = tmp_path / "run"
    train(cfg, phantom_dir, run, progress=False)

    # Replace the untrained generator's output by a volume whose scan channel is bright
    # exactly where its GM channel is on, so alignment of the two exports can be checked.
    from ratgan.generation import sample

    def fake_sample(loaded, z, noise=None):
        s = loaded.config.model.volume_size
        out = -np.ones((len(z), 4, s, s, s), dtype=np.float32)
        out[:, 0, 4:9, 5:12, 6:10] = 1.0
        out[:, 1, 4:9, 5:12, 6:10] = 1.0
        return out

    monkeypatch.setattr(sample, "sample_volumes", fake_sample)
    paths = generate_scans(run, 1, tmp_path / "g", seed=0, progress=False)
    scan = read_scan(paths[0])
    labels = read_scan(tmp_path / "g" / "labels" / paths[0].name)
    assert labels.data.shape == scan.data.shape
    assert np.allclose(labels.affine, scan.affine)
    bright = scan.data > (scan.data.min() + scan.data.max()) / 2
    gm = labels.data == 1
    assert gm.sum() > 0
    overlap = (bright & gm).sum() / (bright | gm).sum()
    assert overlap > 0.8
    assert set(np.unique(labels.data)) <= {0, 1}
    manifest = json.loads((tmp_path / "g" / "manifest.json").read_text())
    assert manifest["scans"][0]["label"] == f"labels/{paths[0].name}"


def test_precision_override_is_recorded_and_stays_close(tiny_run, tmp_path):
    fp32 = generate_scans(tiny_run, 2, tmp_path / "fp32", seed=1, progress=False)
    bf16 = generate_scans(tiny_run, 2, tmp_path / "bf16", seed=1, progress=False, precision="bf16")
    manifest = json.loads((tmp_path / "bf16" / "manifest.json").read_text())
    assert {r["precision"] for r in manifest["scans"]} == {"bf16"}
    for a, b in zip(fp32, bf16, strict=True):
        va, vb = read_scan(a).data, read_scan(b).data
        assert not np.array_equal(va, vb)  # bf16 really ran
        assert np.abs(va - vb).max() <= 0.05 * (va.max() - va.min())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"precision": "fp16"}, "precision"),
        ({"batch_size": 0}, "batch-size"),
        ({"writers": -1}, "writers"),
    ],
)
def test_bad_generation_options_are_clear_errors(tiny_run, tmp_path, kwargs, match):
    with pytest.raises(RatganError, match=match):
        generate_scans(tiny_run, 1, tmp_path / "out", progress=False, **kwargs)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_generating_leaves_a_running_trainings_temporary_checkpoint_alone(tiny_run, tmp_path):
    # A trainer writes a temporary file, then renames it; a reader must not delete it meanwhile.
    from ratgan.atomic import atomic_path
    from ratgan.training import checkpoint as ckpt

    final = ckpt.checkpoint_path(tiny_run, 4)
    with pytest.raises(KeyboardInterrupt), atomic_path(final) as partial:  # a write in progress
        partial.write_bytes(b"being written")
        generate_scans(tiny_run, 1, tmp_path / "g", progress=False)
        assert partial.exists()
        raise KeyboardInterrupt  # the trainer is killed: its write never completes
    assert not final.exists()


def test_sigmarat1_shaped_generator_with_spectral_norm_loads_exactly(phantom_dir, tmp_path):
    # G is rebuilt on the meta device and its tensors assigned from the (memory-mapped) file:
    # the spectral-norm vectors must come back too, giving the trained network's outputs.
    import torch

    from ratgan.generation.sample import load_generator
    from ratgan.training import checkpoint as ckpt

    cfg = load_config("tiny", {"train.iterations": 1, "model.spectral_norm": ["G", "E", "D", "C"]})
    result = train(cfg, phantom_dir, tmp_path / "run", progress=False)
    loaded = load_generator(tmp_path / "run", device="cpu")
    trained = result.networks.generator.eval()
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "run"))
    assert set(loaded.generator.state_dict()) == set(state["networks"]["G"])
    z = torch.randn(3, cfg.model.latent_dim)
    with torch.no_grad():
        assert torch.equal(loaded.generator(z), trained(z))


def test_a_model_with_fewer_slices_trains_tracks_and_writes_scans_of_the_source_shape(
    phantom_dir, tmp_path
):
    """64x64x40 scans pooled by 4 (16x16x10) padded to 16x16x12 instead of 16^3: training
    (sample figures and quality probe included) runs and the scans come back at 64x64x40 with
    the reference's affine."""
    from ratgan.evaluation.tracking import quality_probe_factory

    cfg = load_config(
        "tiny",
        {
            "model.volume_depth": 12,
            "data.target_shape": [16, 16, 12],
            "model.g_output_noise": True,
            "train.iterations": 2,
            "train.eval_every": 2,
            "train.eval_samples": 4,
        },
    )
    run = tmp_path / "run"
    train(cfg, phantom_dir, run, progress=False, probe_factory=quality_probe_factory)
    ref = read_scan(_reference(phantom_dir))
    for path in generate_scans(run, 2, tmp_path / "g", seed=0, progress=False):
        scan = read_scan(path)
        assert scan.data.shape == ref.data.shape == (64, 64, 40)
        assert np.allclose(scan.affine, ref.affine)
        assert np.isfinite(scan.data).all() and scan.data.std() > 0


def test_slices_cut_to_fit_the_model_are_warned_at_training_and_generation(
    phantom_dir, tmp_path, caplog
):
    """16x16x10 pooled scans into 16x16x8 volumes: one slice cut at each end (4 source slices),
    said when training reads the scans and again when scans are generated, which are empty
    there."""
    import logging

    cfg = load_config(
        "tiny",
        {"model.volume_depth": 8, "data.target_shape": [16, 16, 8], "train.iterations": 2},
    )
    run = tmp_path / "run"
    with caplog.at_level(logging.WARNING):
        train(cfg, phantom_dir, run, progress=False)
    assert any("2 slices off axis 2" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        (path,) = generate_scans(run, 1, tmp_path / "g", seed=0, progress=False)
    (record,) = [r for r in caplog.records if "empty" in r.getMessage()]
    assert "2 slices of axis 2" in record.getMessage()
    data = read_scan(path).data
    assert data.shape == (64, 64, 40)
    # pooled slices 0 and 9 are empty; trilinear upsampling by 4 blends them into source
    # slices 2-3 and 36-37, so slices 0-1 and 38-39 are exactly zero
    assert not data[..., :2].any() and not data[..., 38:].any()
    assert data[..., 4:36].std() > 0


def _copy_run(run, to):
    import shutil

    shutil.copytree(run, to)
    return to


def test_a_checkpoint_of_a_run_trained_on_other_scans_is_refused(tiny_run, tmp_path):
    # A run trained on the same subjects stored LPS wrote its scans with this run's RAS
    # reference: mirrored in the world, without a word.
    other = _copy_run(tiny_run, tmp_path / "other")
    record = json.loads((other / "data.json").read_text())
    for entry in record["entries"]:  # other files (stored LPS, say), other contents
        entry["image"] = str(tmp_path / "lps" / Path(entry["image"]).name)
        entry["sha256"] = "0" * 64
        entry["orientation"] = "LPS"
    (other / "data.json").write_text(json.dumps(record))
    foreign = sorted((other / "checkpoints").glob("ckpt_*.pt"))[-1]
    with pytest.raises(RatganError, match=r"belongs to run .*other.*trained on other scans"):
        generate_scans(tiny_run, 1, tmp_path / "out", checkpoint=foreign, progress=False)
    assert not (tmp_path / "out").exists()
    # a copy of the same run (same scans) is its own run's checkpoint in all but the path
    same = _copy_run(tiny_run, tmp_path / "same")
    record = json.loads((same / "data.json").read_text())
    record["source"] = "/through/a/symlink"  # how the scans were named does not matter
    for entry in record["entries"]:
        entry.pop("sha256", None)  # nor a record written before digests
    (same / "data.json").write_text(json.dumps(record))
    copied = sorted((same / "checkpoints").glob("ckpt_*.pt"))[-1]
    assert generate_scans(tiny_run, 1, tmp_path / "ok", checkpoint=copied, progress=False)


def test_a_checkpoint_outside_a_run_folder_is_used_with_a_warning(tiny_run, tmp_path, caplog):
    import shutil

    loose = tmp_path / "loose.pt"
    shutil.copy(sorted((tiny_run / "checkpoints").glob("ckpt_*.pt"))[-1], loose)
    with caplog.at_level("WARNING", logger="ratgan.generation.sample"):
        generate_scans(tiny_run, 1, tmp_path / "out", checkpoint=loose, progress=False)
    assert "not in a run folder" in caplog.text


@pytest.mark.parametrize("dtype", [np.float32, np.int16])
def test_a_model_that_gives_nan_writes_no_scan_of_it(tiny_run, phantom_dir, tmp_path, dtype):
    # One NaN weight in G's last layer: the scan was written all NaN, or, with an integer
    # reference, all 0, and the manifest said complete.
    broken = _copy_run(tiny_run, tmp_path / "broken")
    path = sorted((broken / "checkpoints").glob("ckpt_*.pt"))[-1]
    state = torch.load(path, weights_only=False)
    for weights in (state["networks"]["G"], state.get("ema", {}).get("G", {})):
        if weights:
            name = [k for k, v in weights.items() if v.is_floating_point()][-1]
            weights[name].fill_(float("nan"))
    torch.save(state, path)
    ref = read_scan(_reference(phantom_dir))
    from ratgan.data.io import write_nifti

    reference = write_nifti(tmp_path / "ref.nii.gz", ref.data, ref.affine, ref.header, dtype=dtype)
    with pytest.raises(RatganError, match=r"NaN or infinite voxels for scan 0 \(seed \d+\)"):
        generate_scans(broken, 2, tmp_path / "out", reference=reference, progress=False)
    assert not list((tmp_path / "out").glob("synthetic_*"))
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["complete"] is False


def test_no_two_scans_of_a_set_share_a_seed():
    from ratgan.generation.sample import scan_seed
    from ratgan.seeds import derived_seed

    # derived_seed's 32 bits gave scans 1805 and 3645 of --seed 39 one seed: the same scan twice
    assert derived_seed(39, 1805) == derived_seed(39, 3645)
    seeds = [scan_seed(39, i) for i in range(3646)]
    assert len(set(seeds)) == len(seeds)
    assert seeds[3645] == derived_seed(39, 3645, 1)
    # every other scan keeps the seed it had
    assert all(seeds[i] == derived_seed(39, i) for i in range(3645))


def test_a_negative_seed_is_one_sentence_before_any_file(tiny_run, tmp_path):
    with pytest.raises(RatganError, match="--seed must be 0 or more"):
        generate_scans(tiny_run, 1, tmp_path / "out", seed=-1, progress=False)
    assert not (tmp_path / "out").exists()
