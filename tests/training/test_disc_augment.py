"""Critic augmentation (ADA): exact transforms, gradients, the adaptive rule, no leaking."""

import pytest
import torch

from ratgan.config import DiscriminatorAugmentConfig, load_config
from ratgan.training.disc_augment import DiscriminatorAugment


def _aug(**kw) -> DiscriminatorAugment:
    base = {"enabled": True, "flip": False, "translate": 0.0, "brightness": 0.0, "contrast": 0.0}
    base.update(kw)
    return DiscriminatorAugment(DiscriminatorAugmentConfig(**base))


def test_disabled_or_p_zero_is_the_identity():
    x = torch.randn(3, 1, 8, 8, 8)
    assert DiscriminatorAugment(DiscriminatorAugmentConfig(enabled=False))(x) is x
    full = DiscriminatorAugmentConfig(enabled=True, p=0.0)
    assert torch.equal(DiscriminatorAugment(full)(x, torch.Generator().manual_seed(0)), x)


def test_flip_mirrors_the_left_right_axis_of_about_half_the_selected_volumes():
    x = torch.randn(400, 1, 6, 5, 4)
    out = _aug(p=1.0, flip=True)(x, torch.Generator().manual_seed(0))
    flipped = (out == torch.flip(x, dims=[2])).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert bool((flipped | kept).all())  # each volume is either mirrored or untouched
    assert 0.4 < flipped.float().mean().item() < 0.6


def test_flip_at_p_half_keeps_mirrored_anatomy_distinguishable():
    """Non-leaking: what the critic sees of real scans (block on the left) and of mirrored
    generated scans (block on the right) must differ, or G could mirror anatomy unpunished.
    At p = 0.5 a quarter of the volumes are mirrored: 75 % left blocks for real scans, 25 % for
    mirrored ones (a plain flip with probability 0.5 would give 50 % for both)."""
    real = torch.zeros(4000, 1, 8, 2, 2)
    real[:, :, :4] = 1.0  # the block on the left
    mirrored = torch.flip(real, dims=[2])
    aug = _aug(p=0.5, flip=True)
    seen_real = aug(real, torch.Generator().manual_seed(0))[:, 0, :4].mean((1, 2, 3))
    seen_mirrored = aug(mirrored, torch.Generator().manual_seed(1))[:, 0, :4].mean((1, 2, 3))
    assert abs(seen_real.mean().item() - 0.75) < 0.03
    assert abs(seen_mirrored.mean().item() - 0.25) < 0.03


def test_translation_shifts_by_whole_voxels_reflecting_at_the_edge():
    aug = _aug(p=1.0, translate=0.25)
    x = torch.arange(8.0).view(1, 1, 8, 1, 1).expand(1, 1, 8, 8, 2).contiguous()
    shifted = aug._translate(x, 2, torch.tensor([2]))
    # Known answer: values move two voxels up the axis, the gap filled by reflection.
    assert shifted[0, 0, :, 0, 0].tolist() == [2, 1, 0, 1, 2, 3, 4, 5]
    back = aug._translate(x, 2, torch.tensor([-3]))
    assert back[0, 0, :, 0, 0].tolist() == [3, 4, 5, 6, 7, 6, 5, 4]
    # Random shifts stay within 0.25 * 8 = 2 voxels: the mean moves by at most 2.
    out = aug(x.expand(16, 1, 8, 8, 2).contiguous(), torch.Generator().manual_seed(1))
    moved = out[:, 0, :, 0, 0].mean(1) - x[0, 0, :, 0, 0].mean()
    assert moved.abs().max() <= 2.0 + 1e-6 and moved.abs().max() > 0


def test_brightness_and_contrast_change_intensities_not_geometry():
    x = torch.randn(4, 1, 8, 8, 8)
    out = _aug(p=1.0, brightness=0.2, contrast=0.5)(x, torch.Generator().manual_seed(0))
    for a, b in zip(x, out, strict=True):
        # An affine intensity map per volume: correlation 1 with the input.
        corr = torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1]
        assert corr > 0.9999


def test_intensity_transforms_leave_a_joint_models_tissue_channels_binary():
    """A joint model's GM/WM/CSF channels are label maps in {-1, 1}: brightness and contrast
    act on the scan's channel alone, and the flip moves the tissue channels with the scan."""
    scan = torch.randn(64, 1, 6, 5, 4)
    tissues = torch.where(torch.rand(64, 3, 6, 5, 4) < 0.3, 1.0, -1.0)
    x = torch.cat([scan, tissues], dim=1)
    out = _aug(p=1.0, flip=True, brightness=0.2, contrast=0.5)(x, torch.Generator().manual_seed(0))
    flipped = (out[:, 1:] == tissues.flip(2)).flatten(1).all(1)
    kept = (out[:, 1:] == tissues).flatten(1).all(1)
    assert bool((flipped | kept).all()) and 0 < int(flipped.sum()) < 64
    # The scan channel went through an affine intensity map (of its own flipped or kept self).
    for i in range(64):
        ref = scan[i, 0].flip(0) if flipped[i] else scan[i, 0]
        corr = torch.corrcoef(torch.stack([ref.flatten(), out[i, 0].flatten()]))[0, 1]
        assert corr > 0.9999 and not torch.allclose(ref, out[i, 0])


def test_gradients_flow_through_every_transform_to_the_generated_volume():
    aug = _aug(p=1.0, flip=True, translate=0.125, brightness=0.2, contrast=0.5)
    x = torch.randn(2, 1, 8, 8, 8, requires_grad=True)
    aug(x, torch.Generator().manual_seed(0)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_adaptive_p_follows_the_overfitting_signal_by_the_configured_step():
    aug = _aug(p=0.0, interval=2, speed_images=80, target=0.6, max_p=0.8)
    # Every real score above the generated mean: r_t = 1 > 0.6, so p rises by
    # batch * interval / speed_images = 4 * 2 / 80 = 0.1 every second iteration.
    for _ in range(4):
        aug.observe(torch.tensor([3.0, 2.0, 4.0, 5.0]), torch.tensor([0.0, 1.0]))
        aug.adjust(4)
    assert aug.p.item() == pytest.approx(0.2)
    for _ in range(40):
        aug.observe(torch.tensor([3.0] * 4), torch.tensor([0.0]))
        aug.adjust(4)
    assert aug.p.item() == pytest.approx(0.8)  # capped at max_p
    # Real scores below the generated mean: r_t = -1, p falls back (not below 0).
    for _ in range(40):
        aug.observe(torch.tensor([-3.0] * 4), torch.tensor([0.0]))
        aug.adjust(4)
    assert aug.p.item() == pytest.approx(0.0)


def test_state_round_trips_through_a_state_dict():
    aug = _aug(p=0.3)
    aug.observe(torch.tensor([1.0]), torch.tensor([0.0]))
    aug.adjust(4)
    other = _aug(p=0.0)
    other.load_state_dict(aug.state_dict())
    assert other.p.item() == pytest.approx(0.3) and other.steps == 1
    assert other.sign_sum.item() == aug.sign_sum.item()


def test_augmentation_reaches_only_the_critic(phantom_dir):
    """With every transform always on, the reconstruction terms of an iteration are exactly those
    of the same iteration without augmentation (same weights, batches and codes); the critic's
    scores differ."""
    from ratgan.models import build_networks
    from ratgan.training.alphagan import AlphaGANStep, build_optimizers

    def one_step(ada: bool) -> dict:
        over = {"ada.enabled": ada, "ada.p": 1.0, "ada.adaptive": False}
        cfg = load_config("tiny", over)
        torch.manual_seed(0)
        nets = build_networks(cfg.model)
        step = AlphaGANStep(
            nets,
            build_optimizers(nets, cfg),
            cfg,
            torch.device("cpu"),
            torch.Generator().manual_seed(1),
            augment=DiscriminatorAugment(cfg.ada) if ada else None,
        )
        gen = torch.Generator().manual_seed(2)
        x1 = torch.rand(2, 1, 16, 16, 16, generator=gen) * 2 - 1
        x2 = torch.rand(2, 1, 16, 16, 16, generator=gen) * 2 - 1
        torch.manual_seed(3)
        return step(
            x1.contiguous(memory_format=torch.channels_last_3d),
            x2.contiguous(memory_format=torch.channels_last_3d),
        )

    plain, augmented = one_step(False), one_step(True)
    for key in ("eg_mse", "eg_gdl", "eg_l1", "eg_c_enc"):
        assert torch.equal(plain[key], augmented[key]), key
    assert not torch.equal(plain["eg_l_gd"], augmented["eg_l_gd"])
    assert augmented["ada_p"].item() == 1.0
