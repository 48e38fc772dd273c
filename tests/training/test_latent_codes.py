"""benchmarks/latent_codes.py: the Gaussian fitted to the encoder's codes against a known
answer, and one run of the benchmark on a two-iteration tiny run."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from ratgan.config import load_config
from ratgan.training.run import train


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("latent_codes")


def test_codes_drawn_from_the_fit_have_the_covariance_of_the_codes(bench):
    rng = np.random.default_rng(0)
    true_cov = np.diag([4.0, 1.0, 0.25]) + 0.3
    codes = rng.multivariate_normal([1.0, -2.0, 0.5], true_cov, size=4000)
    mean, cov, shrinkage = bench.fit_gaussian(codes)
    assert np.allclose(mean, [1.0, -2.0, 0.5], atol=0.1)
    assert np.allclose(cov, true_cov, atol=0.2) and 0 <= shrinkage < 0.05
    drawn = bench.gaussian_codes(mean, cov, list(range(4000)), 3).double().numpy()
    assert np.allclose(drawn.mean(0), mean, atol=0.1)
    assert np.allclose(np.cov(drawn.T), cov, atol=0.25)
    # Fewer codes than dimensions: the shrunk covariance is still positive definite.
    few = rng.standard_normal((8, 20))
    _, cov_few, shrink_few = bench.fit_gaussian(few)
    assert np.linalg.eigvalsh(cov_few).min() > 0 and shrink_few > 0


def test_benchmark_on_a_tiny_run(bench, phantom_dir, tmp_path):
    over = {"train.iterations": 2, "train.sample_every": 100, "model.e_standardise": True}
    run = tmp_path / "run"
    train(load_config("tiny", over), phantom_dir, run, progress=False)
    out = tmp_path / "out"
    summary = bench.main(
        [str(run), "--heldout", str(phantom_dir / "images"), "--out", str(out), "--n", "3"]
    )
    reference = nib.load(sorted((phantom_dir / "images").glob("*.nii.gz"))[0])
    for name in bench.SETS:
        files = sorted((out / name).glob("synthetic_*.nii.gz"))
        assert len(files) == 3, name
        img = nib.load(files[0])
        assert img.shape == reference.shape and np.allclose(img.affine, reference.affine)
    # The prior set is what `ratgan generate` writes with the same seed.
    from ratgan.generation import generate_scans

    generate_scans(run, 3, tmp_path / "gen", seed=1, progress=False, device="cpu")
    a = nib.load(out / "prior" / "synthetic_00000.nii.gz").get_fdata()
    b = nib.load(tmp_path / "gen" / "synthetic_00000.nii.gz").get_fdata()
    assert np.allclose(a, b, atol=1e-4 * np.abs(b).max())
    assert json.loads((out / "codes.json").read_text()) == summary
    assert summary["iteration"] == 2 and summary["train_code_length_ratio"] > 0
    assert torch.isfinite(torch.tensor(summary["covariance_top_eigenvalues"])).all()
    assert 0 < summary["train_code_top_share"] <= 1 and 0 < summary["prior_code_top_share"] < 1

    only = tmp_path / "only"
    codes = bench.main(
        [str(run), "--heldout", str(phantom_dir / "images"), "--out", str(only), "--codes-only"]
    )
    assert sorted(p.name for p in only.iterdir()) == ["codes.json"]
    assert codes["train_code_top_share"] == summary["train_code_top_share"]

    # --prior-scales adds G(s z) sets; with s = 1 it is the prior set, and --sets keeps only it.
    scaled = tmp_path / "scaled"
    bench.main(
        [str(run), "--heldout", str(phantom_dir / "images"), "--out", str(scaled), "--n", "3"]
        + ["--prior-scales", "1", "--sets", "prior-x1"]
    )
    assert sorted(p.name for p in scaled.iterdir()) == ["codes.json", "prior-x1"]
    c = nib.load(scaled / "prior-x1" / "synthetic_00000.nii.gz").get_fdata()
    assert np.array_equal(c, a)

    # --kde-widths 0: G(E(x_j)), so each scan is the reconstruction of one of the run's six
    # training scans (--n 6 makes recon-train all six).
    kde = tmp_path / "kde"
    bench.main(
        [str(run), "--heldout", str(phantom_dir / "images"), "--out", str(kde), "--n", "6"]
        + ["--kde-widths", "0", "--sets", "kde-0", "recon-train"]
    )
    recon = [nib.load(f).get_fdata() for f in sorted((kde / "recon-train").glob("*.nii.gz"))]
    for f in sorted((kde / "kde-0").glob("*.nii.gz")):
        v = nib.load(f).get_fdata()
        assert any(np.allclose(v, r, atol=1e-4 * np.abs(r).max()) for r in recon)


def test_no_output_noise_removes_exactly_the_seeds_noise_draw(bench, phantom_dir, tmp_path):
    # G's output noise starts at std softplus(-5) ~ 0.007, added after the tanh here: the
    # noisy scan minus the noise-free one is that std times the seed's own noise draw.
    from ratgan.generation.sample import output_noise, scan_seed

    over = {
        "train.iterations": 2, "train.sample_every": 100,
        "model.g_output_noise": True, "model.g_output_noise_after_tanh": True,
    }  # fmt: skip
    run = tmp_path / "run"
    train(load_config("tiny", over), phantom_dir, run, progress=False)
    common = [str(run), "--heldout", str(phantom_dir / "images"), "--n", "2", "--sets", "prior"]
    bench.main([*common, "--out", str(tmp_path / "noisy")])
    bench.main([*common, "--out", str(tmp_path / "clean"), "--no-output-noise"])
    noisy = nib.load(tmp_path / "noisy" / "prior" / "synthetic_00000.nii.gz").get_fdata()
    clean = nib.load(tmp_path / "clean" / "prior" / "synthetic_00000.nii.gz").get_fdata()
    # the seed's draw in network space, taken to the scan's space as the benchmark's export
    # does (inverse_preprocess is affine in the intensities, so zero maps to the offset)
    from ratgan.data.transforms import inverse_preprocess
    from ratgan.generation.sample import _reference, load_generator

    cfg = load_generator(run, "latest", device="cpu").config
    _, info = _reference(run, None, cfg)
    draw = output_noise([scan_seed(1, 0)], (1, *cfg.model.volume_shape))[0, 0].numpy()
    draw = inverse_preprocess(draw, info) - inverse_preprocess(np.zeros_like(draw), info)
    diff = noisy - clean
    assert diff.std() > 0
    inside = np.abs(clean - clean.mean()) < 3 * clean.std()  # away from the clamp at +-1
    assert np.corrcoef(diff[inside].ravel(), draw[inside].ravel())[0, 1] > 0.99


def test_optimised_codes_fit_the_scans_better_than_the_encoders(bench, phantom_dir, tmp_path):
    # a generator frozen, its codes refined by gradient descent on the error against the
    # scans: the error falls from E's codes, and the refined set is written beside the others
    over = {"train.iterations": 2, "train.sample_every": 100, "model.g_output_noise": True}
    run = tmp_path / "run"
    train(load_config("tiny", over), phantom_dir, run, progress=False)
    from ratgan.generation.sample import load_generator

    loaded = load_generator(run, "latest", device="cpu")
    scans = torch.rand(2, 1, *loaded.config.model.volume_shape) * 2 - 1
    codes = torch.randn(2, loaded.config.model.latent_dim)
    before = [p.clone() for p in loaded.generator.parameters()]
    refined, history = bench.optimise_codes(loaded.generator, scans, codes, 30, False)
    assert history[-1] < 0.99 * history[0] and refined.shape == codes.shape
    after = list(loaded.generator.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))  # G frozen
    args = [str(run), "--heldout", str(phantom_dir / "images"), "--n", "2"]
    bench.main([*args, "--out", str(tmp_path / "o"), "--optimise-codes", "3",
                "--sets", "recon-train", "recon-train-opt", "--no-output-noise"])  # fmt: skip
    assert len(list((tmp_path / "o" / "recon-train-opt").glob("synthetic_*.nii.gz"))) == 2


def test_raw_weights_give_the_scans_generate_writes_with_raw_weights(bench, phantom_dir, tmp_path):
    # the benchmark's prior set is `ratgan generate`'s sampling; with --weights raw both must use
    # G's trained weights, not its moving average (which a run with an EMA keeps apart)
    from ratgan.generation.sample import generate_scans

    over = {"train.iterations": 3, "train.sample_every": 100, "train.ema_half_life_images": 2}
    run = tmp_path / "run"
    train(load_config("tiny", over), phantom_dir, run, progress=False)
    common = [str(run), "--heldout", str(phantom_dir / "images"), "--n", "2", "--sets", "prior"]
    bench.main([*common, "--out", str(tmp_path / "raw"), "--weights", "raw"])
    bench.main([*common, "--out", str(tmp_path / "ema")])
    generate_scans(run, 2, tmp_path / "gen", seed=1, device="cpu", progress=False, weights="raw")
    name = "synthetic_00000.nii.gz"
    raw = nib.load(tmp_path / "raw" / "prior" / name).get_fdata()
    ema = nib.load(tmp_path / "ema" / "prior" / name).get_fdata()
    assert np.allclose(raw, nib.load(tmp_path / "gen" / name).get_fdata(), atol=1e-5)
    assert np.abs(raw - ema).max() > 1e-3
