"""A flip that ADA applies to half of what the critic sees must not make G draw flipped scans."""

import numpy as np

from ratgan.config import load_config


def _lopsided_cohort(folder, n: int = 12, seed: int = 0) -> None:
    """16^3 volumes with a bright block always in the left half (axis 0) and a dim right half."""
    import nibabel as nib

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for i in range(n):
        vol = rng.normal(0.1, 0.02, (16, 16, 16)).astype(np.float32)
        x0, y0, z0 = rng.integers(1, 4), rng.integers(3, 9), rng.integers(3, 9)
        vol[x0:x0 + 5, y0:y0 + 5, z0:z0 + 5] += 1.0
        nib.save(nib.Nifti1Image(vol, np.eye(4)), folder / f"s{i:02d}.nii.gz")


def test_flip_at_p_half_in_the_critic_does_not_leak_into_generated_scans(tmp_path):
    from ratgan.generation.sample import latent_codes, load_generator, sample_volumes
    from ratgan.training.run import train

    data = tmp_path / "data"
    _lopsided_cohort(data)
    over = {"data.downsample": 1, "train.iterations": 150, "train.batch_size": 4,
            "train.checkpoint_every": 150, "train.log_every": 50, "train.sample_every": 1000,
            "augment.mode": "none", "ada.enabled": True, "ada.adaptive": False, "ada.p": 0.5,
            "ada.flip": True, "ada.translate": 0.0, "ada.brightness": 0.0, "ada.contrast": 0.0}
    train(load_config("tiny", over), data, tmp_path / "run", progress=False)
    loaded = load_generator(tmp_path / "run", device="cpu")
    vols = sample_volumes(loaded, latent_codes(list(range(32)), loaded.config.model.latent_dim))
    left = vols[:, 0, :8].mean(axis=(1, 2, 3))
    right = vols[:, 0, 8:].mean(axis=(1, 2, 3))
    # Every real scan has its block on the left; a leaking flip would put half of the
    # generated blocks on the right.
    assert (left > right + 0.05).mean() >= 0.9, (left - right)
