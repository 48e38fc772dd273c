"""The moving average of G: StyleGAN's half-life rule, buffers, checkpoints and generation."""

import numpy as np
import pytest
import torch
from torch import nn

from ratgan.config import load_config
from ratgan.training.ema import GeneratorEMA


class _Net(nn.Module):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.full((3,), value))
        self.register_buffer("stat", torch.full((2,), value))


def test_half_life_in_images_halves_the_distance_to_the_trained_weights():
    source, average = _Net(1.0), _Net(0.0)
    ema = GeneratorEMA(average, _Net(0.0), half_life_images=40)  # starts as a copy of _Net(0)
    # 10 updates of batch 4 = 40 images = one half-life: the average moves half-way to 1.
    for k in range(10):
        ema.update(source, batch_size=4, images_seen=4 * (k + 1))
    assert torch.allclose(average.w, torch.full((3,), 0.5), atol=1e-6)
    for k in range(10, 20):
        ema.update(source, batch_size=4, images_seen=4 * (k + 1))
    assert torch.allclose(average.w, torch.full((3,), 0.75), atol=1e-6)
    # Buffers are copied, not averaged.
    assert torch.equal(average.stat, source.stat)


def test_rampup_shortens_the_half_life_early_in_training():
    ema = GeneratorEMA(_Net(0.0), _Net(0.0), half_life_images=10_000, rampup=0.05)
    # After 400 images the half-life is min(10000, 0.05 * 400) = 20 images.
    assert ema.beta(4, 400) == pytest.approx(0.5 ** (4 / 20))
    assert ema.beta(4, 10**7) == pytest.approx(0.5 ** (4 / 10_000))


def test_a_run_with_ema_stores_it_and_generation_uses_it_by_default(phantom_dir, tmp_path):
    from ratgan.generation import generate_scans
    from ratgan.generation.sample import load_generator
    from ratgan.training import checkpoint as ckpt
    from ratgan.training.run import train

    cfg = load_config(
        "tiny",
        {"train.iterations": 4, "train.checkpoint_every": 4, "train.ema_half_life_images": 4},
    )
    run = tmp_path / "run"
    result = train(cfg, phantom_dir, run, progress=False)
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(run))
    raw, avg = state["networks"]["G"], state["ema"]["G"]
    assert raw.keys() == avg.keys()
    # After 4 iterations the average lags the trained weights.
    assert any(not torch.equal(raw[k], avg[k]) for k in raw)
    trained = result.networks.generator.state_dict()
    assert all(torch.equal(trained[k].cpu(), raw[k]) for k in raw)

    ema_g = load_generator(run, device="cpu")
    raw_g = load_generator(run, device="cpu", weights="raw")
    assert ema_g.weights == "ema" and raw_g.weights == "raw"
    for k, v in ema_g.generator.state_dict().items():
        assert torch.equal(v, avg[k])
    for k, v in raw_g.generator.state_dict().items():
        assert torch.equal(v, raw[k])

    a = generate_scans(run, 2, tmp_path / "ema", device="cpu", progress=False)
    b = generate_scans(run, 2, tmp_path / "raw", device="cpu", progress=False, weights="raw")
    from ratgan.data.io import read_scan

    assert not np.array_equal(read_scan(a[0]).data, read_scan(b[0]).data)
