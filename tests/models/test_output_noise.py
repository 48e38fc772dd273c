"""G's optional output noise: off by default, seeded when given, clean output alongside."""

import pytest
import torch

from ratgan.config import load_config
from ratgan.errors import RatganError
from ratgan.models import build_networks


def _generator(
    noise: bool,
    after_tanh: bool = False,
    per_scan: bool = False,
    level_spread: bool = False,
    extra: dict | None = None,
):
    overrides = {
        "model.g_output_noise": noise,
        "model.g_output_noise_after_tanh": after_tanh,
        "model.g_output_noise_per_scan": per_scan,
        "model.g_output_noise_level_spread": level_spread,
        **(extra or {}),
    }
    cfg = load_config("tiny", overrides).model
    torch.manual_seed(0)
    return build_networks(cfg).generator.eval(), cfg


def test_without_output_noise_the_generator_is_deterministic_and_clean_equals_output():
    g, cfg = _generator(False)
    z = torch.randn(2, cfg.latent_dim)
    out, clean = g(z, return_clean=True)
    assert out is clean
    assert torch.equal(g(z), g(z))
    assert not any("output_noise" in k for k in g.state_dict())


def test_output_noise_adds_the_learned_std_before_tanh():
    g, cfg = _generator(True)
    z = torch.randn(2, cfg.latent_dim)
    noise = torch.randn(2, 1, 16, 16, 16)
    out, clean = g(z, noise=noise, return_clean=True)
    # Known answer at initialisation: std = softplus(0 * pre - 5), so
    # atanh(out) - atanh(clean) = softplus(-5) * noise.
    expected = torch.nn.functional.softplus(torch.tensor(-5.0)) * noise
    diff = torch.atanh(out.clamp(-1 + 1e-6, 1 - 1e-6)) - torch.atanh(
        clean.clamp(-1 + 1e-6, 1 - 1e-6)
    )
    assert torch.allclose(diff, expected, atol=1e-4)
    # The same noise gives the same scan; other noise another one.
    assert torch.equal(g(z, noise=noise), g(z, noise=noise))
    assert not torch.equal(g(z, noise=noise), g(z, noise=torch.randn_like(noise)))


def test_output_noise_strength_is_trained():
    g, cfg = _generator(True)
    z = torch.randn(2, cfg.latent_dim)
    g(z).pow(2).sum().backward()
    assert g.output_noise.offset.grad is not None and g.output_noise.offset.grad != 0


def test_output_noise_after_tanh_adds_to_the_image_and_clamps():
    g, cfg = _generator(True, after_tanh=True)
    z = torch.randn(2, cfg.latent_dim)
    noise = torch.randn(2, 1, 16, 16, 16)
    noise[0, 0, 8, 8, 8] = 1e4  # one extreme draw: reaches the top of the range exactly
    out, clean = g(z, noise=noise, return_clean=True)
    # Known answer at initialisation: std = softplus(-5) everywhere, added after the tanh.
    expected = (clean + torch.nn.functional.softplus(torch.tensor(-5.0)) * noise).clamp(-1, 1)
    assert torch.allclose(out, expected, atol=1e-6)
    assert out[0, 0, 8, 8, 8] == 1.0
    assert out.min() >= -1.0 and out.max() <= 1.0


@pytest.mark.parametrize(
    "option",
    ["g_output_noise_after_tanh", "g_output_noise_per_scan", "g_output_noise_level_spread"],
)
def test_output_noise_options_need_output_noise(option):
    with pytest.raises(RatganError, match=f"{option} needs"):
        load_config("tiny", {f"model.{option}": True})


def test_per_scan_noise_level_follows_the_code():
    g, cfg = _generator(True, after_tanh=True, per_scan=True)
    assert torch.equal(g.output_noise.per_scan, torch.zeros(cfg.latent_dim))  # starts off
    with torch.no_grad():
        g.output_noise.per_scan[0] = 1.0
    z = torch.zeros(2, cfg.latent_dim)
    z[0, 0], z[1, 0] = 2.0, -2.0
    noise = torch.ones(2, 1, 16, 16, 16) * 1e-3  # small: nothing reaches the clamp
    out, clean = g(z, noise=noise, return_clean=True)
    # Known answer: std = softplus(-5 + w . z) = softplus(-3) for scan 0, softplus(-7) for 1
    sp = torch.nn.functional.softplus
    assert torch.allclose(out[0] - clean[0], sp(torch.tensor(-3.0)) * noise[0], atol=1e-7)
    assert torch.allclose(out[1] - clean[1], sp(torch.tensor(-7.0)) * noise[1], atol=1e-7)
    g(torch.randn(2, cfg.latent_dim)).pow(2).sum().backward()
    assert g.output_noise.per_scan.grad is not None and g.output_noise.per_scan.grad.abs().sum() > 0


def test_scan_levels_are_standard_normal_and_read_off_each_scans_noise():
    from ratgan.models.generator import OutputNoise

    # Known answer: a draw of ones has level n / sqrt(n) = sqrt(n).
    assert torch.allclose(OutputNoise.scan_levels(torch.ones(1, 1, 4, 4, 4)), torch.tensor([8.0]))
    torch.manual_seed(0)
    u = OutputNoise.scan_levels(torch.randn(4000, 1, 8, 8, 8))
    assert abs(u.mean()) < 0.05 and abs(u.std() - 1.0) < 0.05  # N(0, 1): 4,000 draws


def test_noise_level_spread_starts_off_and_scales_each_scans_noise():
    sp = torch.nn.functional.softplus
    g, cfg = _generator(True, after_tanh=True, level_spread=True)
    g0, _ = _generator(True, after_tanh=True)
    z = torch.randn(2, cfg.latent_dim)
    noise = torch.randn(2, 1, 16, 16, 16) * 1e-2
    # At the start (s = 0) the option changes nothing: the same weights give the same scans.
    g0.load_state_dict({k: v for k, v in g.state_dict().items() if "level_spread" not in k})
    assert torch.equal(g(z, noise=noise), g0(z, noise=noise))
    with torch.no_grad():
        g.output_noise.level_spread.fill_(0.01)  # GAIN * s = 1
    out, clean = g(z, noise=noise, return_clean=True)
    u = noise.flatten(1).sum(1) / noise[0].numel() ** 0.5
    for b in range(2):  # Known answer: std = softplus(-5 + u_b) for scan b
        expected = sp(-5.0 + u[b]) * noise[b]
        assert torch.allclose(out[b] - clean[b], expected, atol=1e-6)
    g(z).pow(2).sum().backward()
    assert g.output_noise.level_spread.grad is not None and g.output_noise.level_spread.grad != 0


@pytest.mark.parametrize("after_tanh", [False, True])
def test_a_joint_models_label_channels_get_no_noise_and_its_scan_channel_does(after_tanh):
    """The noise stands for the scanner's: only channel 0 (the scan) carries it, and it is
    exactly what a one-channel generator would add to that channel for the same draw."""
    overrides = {
        "model.g_output_noise": True,
        "model.g_output_noise_after_tanh": after_tanh,
        "model.channels": 4,
        "data.label_channels": True,
    }
    cfg = load_config("tiny", overrides).model
    torch.manual_seed(0)
    g = build_networks(cfg).generator.eval()
    with torch.no_grad():
        g.output_noise.offset.fill_(0.0)  # a std (softplus(0) = 0.69) that cannot hide
    z = torch.randn(2, cfg.latent_dim)
    noise = torch.randn(2, 4, 16, 16, 16)
    out, clean = g(z, noise=noise, return_clean=True)
    assert torch.equal(out[:, 1:], clean[:, 1:])
    std = g.output_noise.std(torch.zeros(()))
    if after_tanh:
        want = (clean[:, :1] + std * noise[:, :1]).clamp(-1, 1)
    else:
        want = torch.tanh(torch.atanh(clean[:, :1].clamp(-1 + 1e-6, 1 - 1e-6)) + std * noise[:, :1])
    assert (out[:, :1] - clean[:, :1]).abs().mean() > 0.1
    assert torch.allclose(out[:, :1], want, atol=1e-3)


@pytest.mark.parametrize("gain", [10.0, 100.0])
def test_the_noise_gain_sets_how_far_one_adam_step_moves_the_noise_level(gain):
    """Known answer: the std starts at softplus(-5) whatever the gain, and one Adam step of
    learning rate lr moves the offset by lr, so the softplus argument moves by gain * lr."""
    from ratgan.models.generator import OutputNoise

    noise = OutputNoise(gain=gain)
    pre = torch.zeros(1, 1, 4, 4, 4)
    start = noise.std(pre)
    assert torch.allclose(start, torch.nn.functional.softplus(torch.tensor(-5.0)))
    opt = torch.optim.Adam(noise.parameters(), lr=1e-3)
    (-noise.std(pre).sum()).backward()  # a critic that rewards more noise
    opt.step()
    moved = torch.log(torch.expm1(noise.std(pre)[0, 0, 0, 0, 0])) - (-5.0)  # inverse softplus
    assert moved.item() == pytest.approx(gain * 1e-3, rel=1e-3)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_a_noise_gain_that_is_not_positive_is_refused(bad):
    with pytest.raises(RatganError, match="model.g_output_noise_gain must be > 0"):
        load_config("tiny", {"model.g_output_noise": True, "model.g_output_noise_gain": bad})


def test_the_config_default_gain_is_the_generators():
    from ratgan.config import ModelConfig
    from ratgan.models.generator import OutputNoise

    assert ModelConfig().g_output_noise_gain == OutputNoise.DEFAULT_GAIN


def _joint(hard: bool):
    joint = {"model.channels": 4, "data.label_channels": True, "model.g_hard_labels": hard}
    return _generator(True, after_tanh=True, extra=joint)


def test_hard_labels_show_one_hot_tissue_channels_with_the_soft_gradient():
    """Known answer: each voxel's tissue channels are +1 for the largest soft channel (none
    where all are below 0) and -1 elsewhere; the scan channel is the soft generator's."""
    soft_g, cfg = _joint(False)
    hard_g, _ = _joint(True)
    z = torch.randn(2, cfg.latent_dim)
    noise = torch.randn(2, 4, 16, 16, 16)
    soft, soft_clean = soft_g(z, noise=noise, return_clean=True)
    hard, hard_clean = hard_g(z, noise=noise, return_clean=True)
    assert torch.equal(hard_clean, soft_clean)  # the reconstruction losses see the soft channels
    assert torch.equal(hard[:, :1], soft[:, :1])
    tissues = hard[:, 1:]
    assert set(tissues.unique().tolist()) <= {-1.0, 1.0}
    assert int((tissues > 0).sum(1).max()) <= 1  # at most one tissue per voxel
    best, idx = soft[:, 1:].max(1)
    want = torch.where(best > 0, idx + 1, 0)  # 0 background, 1-3 the tissues
    got = torch.where((tissues > 0).any(1), tissues.argmax(1) + 1, 0)
    assert torch.equal(got, want)
    # Straight through: the tissue channels' gradient reaches G as the soft channels' would.
    weights = torch.randn_like(tissues)
    (tissues * weights).sum().backward()
    (soft[:, 1:] * weights).sum().backward()
    for a, b in zip(hard_g.parameters(), soft_g.parameters(), strict=True):
        if b.grad is not None and b.grad.abs().sum() > 0:
            assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-6)


def test_hard_labels_need_label_channels():
    with pytest.raises(RatganError, match="model.g_hard_labels needs label channels"):
        load_config("tiny", {"model.g_hard_labels": True})


def _joint_critic_setup(option: dict, n: int):
    """A tiny joint model with ``option``, a list filled with every input D sees, and a batch
    of ``n`` volumes: a scan in [-1, 1] and tissue channels of exact +-1."""
    cfg = load_config(
        "tiny",
        {"model.channels": 4, "data.label_channels": True, "train.precision": "fp32", **option},
    )
    torch.manual_seed(0)
    nets = build_networks(cfg.model)
    seen: list[torch.Tensor] = []
    nets.discriminator.register_forward_hook(lambda m, args, out: seen.append(args[0].detach()))
    s = cfg.model.volume_size
    x = torch.cat(
        [
            torch.rand(n, 1, s, s, s) * 2 - 1,
            torch.where(torch.rand(n, 3, s, s, s) < 0.3, 1.0, -1.0),
        ],
        1,
    )
    return cfg, nets, seen, x


def test_the_critic_sees_the_tissue_channels_scaled_in_both_phases_and_in_its_penalty():
    """model.d_label_scale: every volume D scores, the penalty's interpolates included, has its
    tissue channels multiplied by the scale and its scan channel as it was."""
    from ratgan.training.alphagan import DiscriminatorPhase, EncoderGeneratorPhase

    cfg, nets, seen, x = _joint_critic_setup({"model.d_label_scale": 0.25}, 2)
    x_rec, x_gen = x.flip(2), x.flip(3)  # stand-ins with exact +-1 tissue channels
    DiscriminatorPhase(nets, cfg, "cpu")(x, x_rec, x_gen, torch.Generator().manual_seed(0))
    assert len(seen) >= 2  # the scores and the penalty's interpolates
    for batch in seen:
        assert batch[:, 1:].abs().max() <= 0.25 + 1e-6
    real_seen = [b for b in seen if b.shape[0] >= 2 and torch.equal(b[:2, :1], x[:, :1])]
    assert real_seen and torch.equal(real_seen[0][:2, 1:], x[:, 1:] * 0.25)
    seen.clear()
    EncoderGeneratorPhase(nets, cfg, "cpu")(x, torch.randn(2, cfg.model.latent_dim))
    assert seen and all(b[:, 1:].abs().max() <= 0.25 + 1e-6 for b in seen)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"model.d_label_scale": 0.0}, "model.d_label_scale must be > 0"),
        ({"model.d_label_scale": 0.5}, "model.d_label_scale needs label channels"),
    ],
)
def test_a_label_scale_without_label_channels_or_not_positive_is_refused(overrides, message):
    with pytest.raises(RatganError, match=message):
        load_config("tiny", overrides)


def test_label_dropout_zeroes_whole_volumes_tissue_channels_at_the_asked_rate():
    """model.d_label_dropout: each volume D scores has its tissue channels either untouched or
    exactly zero, the same batch positions in the real and both generated batches (so the
    penalty's interpolates pair like with like), the scan untouched; over many draws the
    dropped share matches the probability; at 0 nothing is drawn."""
    from ratgan.training.alphagan import DiscriminatorPhase, EncoderGeneratorPhase, label_keep

    s = 8
    x = torch.cat(
        [torch.rand(6, 1, s, s, s), torch.where(torch.rand(6, 3, s, s, s) < 0.3, 1.0, -1.0)], 1
    )
    rng = torch.Generator().manual_seed(0)
    before = rng.get_state()
    assert label_keep(x, 0.0, rng) is None and torch.equal(rng.get_state(), before)
    assert label_keep(x[:, :1], 0.5, rng) is None
    keeps = torch.stack([label_keep(x, 0.3, rng) for _ in range(2000)])
    assert abs(1 - keeps.float().mean().item() - 0.3) < 0.02

    cfg, nets, seen, x = _joint_critic_setup({"model.d_label_dropout": 0.5}, 4)
    x_rec, x_gen = x.flip(2), x.flip(3)
    DiscriminatorPhase(nets, cfg, "cpu")(x, x_rec, x_gen, torch.Generator().manual_seed(1))
    scores = seen[0]  # real, rec and gen in one fused call
    assert scores.shape[0] == 12
    dropped = [bool((b[1:] == 0).all()) for b in scores]
    kept = [
        torch.equal(b[1:], ref[1:])
        for b, ref in zip(scores, torch.cat([x, x_rec, x_gen]), strict=True)
    ]
    assert all(
        d != k for d, k in zip(dropped, kept, strict=True)
    )  # each volume: all of it, or none
    assert dropped[:4] == dropped[4:8] == dropped[8:]  # one draw per batch position
    assert 0 < sum(dropped[:4]) < 4  # this seed drops some and keeps some
    assert torch.equal(scores[:, :1], torch.cat([x, x_rec, x_gen])[:, :1])
    seen.clear()
    EncoderGeneratorPhase(nets, cfg, "cpu")(
        x, torch.randn(4, cfg.model.latent_dim), torch.Generator().manual_seed(1)
    )
    eg = seen[0]  # G(z_e) and G(z_r) in one call: each is a tanh, so never exactly zero
    eg_dropped = [bool((b[1:] == 0).all()) for b in eg]
    assert eg_dropped[:4] == eg_dropped[4:] and 0 < sum(eg_dropped[:4]) < 4


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"model.d_label_dropout": 1.0}, r"model.d_label_dropout must be in \[0, 1\)"),
        ({"model.d_label_dropout": float("nan")}, r"model.d_label_dropout must be in \[0, 1\)"),
        ({"model.d_label_dropout": 0.5}, "model.d_label_dropout needs label channels"),
    ],
)
def test_a_label_dropout_outside_0_1_or_without_label_channels_is_refused(overrides, message):
    with pytest.raises(RatganError, match=message):
        load_config("tiny", overrides)
