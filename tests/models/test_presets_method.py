"""The presets build exactly the networks of docs/method.md §2 (parameter counts and layer types).

Expected counts come from the layer list of docs/method.md section 2, not from the modules.
Networks are built on the meta device: structure only, no memory and no forward pass.
"""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from ratgan.config import load_config
from ratgan.models import build_networks

K3 = 3 * 3 * 3  # generator conv kernels
K4 = 4 * 4 * 4  # generator stem, discriminator / encoder kernels


def expected_counts(
    latent: int,
    batch_g: bool,
    batch_de: tuple[bool, bool],
    batch_c: bool,
    channels: int = 1,
    widths: tuple[int, ...] = (64, 128, 256, 512),
    hidden: int = 4096,
) -> dict[str, int]:
    """Parameter counts from the layer list of docs/method.md section 2.

    G: ConvTranspose3d(L, w_deep, k4) then k3 convs down the widths to C, no biases; BatchNorm3d
    (2 per channel) after every layer but the last.  D/E: k4 convs C -> widths -> 1 or L, with
    biases; BatchNorm3d after convs 2..n.  C: Linear L -> h -> h -> 1 with biases, BatchNorm1d
    after the hidden layers.  Instance norm is affine=False: no parameters.
    """
    g_widths = list(reversed(widths))
    g = latent * g_widths[0] * K4
    for cin, cout in zip(g_widths, g_widths[1:] + [channels], strict=True):
        g += cin * cout * K3
    if batch_g:
        g += 2 * sum(g_widths)

    def trunk(out: int, batch: bool) -> int:
        chans = [channels, *widths, out]
        n = sum(cin * cout * K4 + cout for cin, cout in pairwise(chans))
        return n + (2 * sum(widths[1:]) if batch else 0)

    c = latent * hidden + hidden + hidden * hidden + hidden + hidden * 1 + 1
    if batch_c:
        c += 2 * hidden * 2
    return {"G": g, "E": trunk(latent, batch_de[1]), "D": trunk(1, batch_de[0]), "C": c}


# preset -> (latent, G batch norm?, (D batch?, E batch?), C batch norm?)
PRESET_TABLE = {
    "alpha-wgan-adni": (1000, True, (True, True), True),
    "sigmarat1": (500, False, (False, False), True),
    "sigmarat2": (500, False, (False, False), False),
}

# preset -> (G norm, G activation, D norm, E norm, C has BatchNorm1d, spectral-norm networks)
LAYER_TABLE = {
    "alpha-wgan-adni": (nn.BatchNorm3d, nn.ReLU, nn.BatchNorm3d, nn.BatchNorm3d, True, set()),
    "sigmarat1": (
        nn.InstanceNorm3d,
        nn.LeakyReLU,
        nn.InstanceNorm3d,
        nn.InstanceNorm3d,
        True,
        {"G", "E", "D", "C"},
    ),
    "sigmarat2": (nn.InstanceNorm3d, nn.LeakyReLU, None, nn.InstanceNorm3d, False, {"D", "C"}),
}

WEIGHTED = (nn.Conv3d, nn.ConvTranspose3d, nn.Linear)
NORMS = (nn.BatchNorm3d, nn.InstanceNorm3d, nn.BatchNorm1d)


def meta_networks(name: str, **overrides):
    cfg = load_config(name).model
    for key, value in overrides.items():
        setattr(cfg, key, value)
    with torch.device("meta"):
        return cfg, build_networks(cfg)


def of_type(module: nn.Module, types) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, types)]


def test_hand_arithmetic_matches_one_written_out_total():
    # alpha-wgan-adni G, term by term: 1000*512*64 + (512*256 + 256*128 + 128*64 + 64*1)*27
    # + 2*(512+256+128+64)
    assert expected_counts(*PRESET_TABLE["alpha-wgan-adni"])["G"] == (
        32_768_000 + 3_538_944 + 884_736 + 221_184 + 1_728 + 1_920
    )


@pytest.mark.parametrize("name", list(PRESET_TABLE))
def test_parameter_counts_match_the_method_doc(name):
    _, nets = meta_networks(name)
    assert nets.parameter_counts() == expected_counts(*PRESET_TABLE[name])


@pytest.mark.parametrize("name", list(PRESET_TABLE))
def test_parameter_counts_128_and_32(name):
    latent, bg, bde, bc = PRESET_TABLE[name]
    _, nets = meta_networks(name, volume_size=128)
    assert nets.parameter_counts() == expected_counts(
        latent, bg, bde, bc, widths=(32, 64, 128, 256, 512)
    )
    _, nets = meta_networks(name, volume_size=32)
    assert nets.parameter_counts() == expected_counts(latent, bg, bde, bc, widths=(128, 256, 512))


@pytest.mark.parametrize("name", list(LAYER_TABLE))
def test_layer_types_match_the_method_doc(name):
    g_norm, g_act, d_norm, e_norm, c_batch, sn = LAYER_TABLE[name]
    cfg, nets = meta_networks(name)
    G, E, D, C = (nets.as_dict()[k] for k in "GEDC")

    # Generator: stem + 4 up blocks, norm + activation after all but the last, tanh, no biases.
    assert [type(m) for m in of_type(G, NORMS)] == [g_norm] * 4
    acts = of_type(G, (nn.ReLU, nn.LeakyReLU))
    assert [type(m) for m in acts] == [g_act] * 4
    if g_act is nn.LeakyReLU:  # the published G uses nn.LeakyReLU() with its default slope
        assert all(m.negative_slope == 0.01 for m in acts)
    assert len(of_type(G, nn.Tanh)) == 1
    ups = of_type(G, nn.Upsample)
    assert len(ups) == 4 and all(u.mode == "nearest" and u.scale_factor == 2 for u in ups)
    convs = of_type(G, WEIGHTED)
    assert [isinstance(m, nn.ConvTranspose3d) for m in convs] == [True] + [False] * 4
    assert all(m.bias is None for m in convs)

    # D and E: 5 convs with bias, LeakyReLU(0.2) after the first 4, norm after convs 2-4.
    for net, norm, out in ((D, d_norm, 1), (E, e_norm, cfg.latent_dim)):
        convs = of_type(net, nn.Conv3d)
        assert [(m.kernel_size, m.stride, m.padding) for m in convs] == (
            [((4,) * 3, (2,) * 3, (1,) * 3)] * 4 + [((4,) * 3, (1,) * 3, (0,) * 3)]
        )
        assert [m.out_channels for m in convs] == [64, 128, 256, 512, out]
        assert all(m.bias is not None for m in convs)
        assert [type(m) for m in of_type(net, NORMS)] == ([norm] * 3 if norm else [])
        acts = of_type(net, (nn.ReLU, nn.LeakyReLU))
        assert [type(m) for m in acts] == [nn.LeakyReLU] * 4
        assert all(m.negative_slope == 0.2 for m in acts)

    # C: Linear L -> 4096 -> 4096 -> 1 with bias, LeakyReLU(0.2), BatchNorm1d per the table.
    lins = of_type(C, nn.Linear)
    assert [(m.in_features, m.out_features) for m in lins] == [
        (cfg.latent_dim, 4096),
        (4096, 4096),
        (4096, 1),
    ]
    assert all(m.bias is not None for m in lins)
    assert [type(m) for m in of_type(C, NORMS)] == ([nn.BatchNorm1d] * 2 if c_batch else [])
    assert [m.negative_slope for m in of_type(C, nn.LeakyReLU)] == [0.2, 0.2]

    # Instance norm is affine=False (published nn.InstanceNorm3d(c) default).
    for net in (G, E, D):
        for m in of_type(net, nn.InstanceNorm3d):
            assert not m.affine and not m.track_running_stats

    # Spectral norm on every conv/linear of exactly the listed networks, nowhere else.
    for key, net in nets.as_dict().items():
        for m in of_type(net, WEIGHTED):
            wrapped = parametrize.is_parametrized(m, "weight")
            assert wrapped == (key in sn), (name, key, m)
            if wrapped:
                assert type(m.parametrizations.weight[0]).__name__ == "_SpectralNorm"


@pytest.mark.parametrize("size,scales", [(32, 3), (64, 4), (128, 5)])
def test_block_count_follows_volume_size(size, scales):
    _, nets = meta_networks("sigmarat2", volume_size=size)
    assert len(of_type(nets.generator, nn.Upsample)) == scales
    for net in (nets.discriminator, nets.encoder):
        strides = [m.stride for m in of_type(net, nn.Conv3d)]
        assert strides == [(2, 2, 2)] * scales + [(1, 1, 1)]
