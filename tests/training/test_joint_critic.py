"""benchmarks/joint_critic.py: the channel swaps and input gradients against critics whose
answers are known, and the command on a tiny joint run."""

import pytest
import torch
from torch import nn

from ratgan.config import load_config
from ratgan.training.run import train


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("joint_critic")


@pytest.fixture(scope="module")
def joint_run(phantom_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("joint") / "run"
    over = {
        "train.iterations": 2,
        "train.sample_every": 100,
        "model.channels": 4,
        "data.label_channels": True,
        "model.g_output_noise": True,
        "model.g_output_noise_after_tanh": True,
    }
    train(load_config("tiny", over), phantom_dir, run, progress=False)
    return run


class _Critic(nn.Module):
    """A critic that scores each volume by a fixed weighted sum of its voxels."""

    def __init__(self, weights: torch.Tensor) -> None:
        super().__init__()
        self.weights = weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.weights).flatten(1).sum(1)


class _Nets:
    def __init__(self, critic: nn.Module) -> None:
        self.discriminator = critic


def test_swaps_follow_a_critic_that_reads_only_the_labels(bench):
    cfg = load_config("tiny", {"model.channels": 4, "data.label_channels": True})
    weights = torch.zeros(1, 4, 4, 4, 4)
    weights[:, 1:] = 1.0  # the scan channel counts for nothing
    real = torch.cat(
        [torch.rand(3, 1, 4, 4, 4), torch.where(torch.rand(3, 3, 4, 4, 4) < 0.3, 1.0, -1.0)], 1
    )
    generated = torch.rand(3, 4, 4, 4, 4) * 1.6 - 0.8
    got = bench.scores(_Nets(_Critic(weights)), cfg, real, generated)
    assert got["generated scan + real labels"] == pytest.approx(got["real"])
    assert got["real scan + generated labels"] == pytest.approx(got["generated"])
    assert got["real labels x 0.9"] == pytest.approx(0.9 * got["real"])
    # One-hot: each voxel's largest channel at +1 where it is above 0, the rest -1.
    best, idx = generated[:, 1:].max(1, keepdim=True)
    one_hot = torch.where((torch.arange(3).view(1, 3, 1, 1, 1) == idx) & (best > 0), 1.0, -1.0)
    assert got["generated labels one-hot"] == pytest.approx(float(one_hot.flatten(1).sum(1).mean()))


def test_input_gradients_of_a_linear_critic_are_its_weights_norms(bench):
    cfg = load_config("tiny", {"model.channels": 4, "data.label_channels": True})
    weights = torch.randn(1, 4, 4, 4, 4)
    got = bench.input_gradients(_Nets(_Critic(weights)), cfg, torch.randn(2, 4, 4, 4, 4))
    want = weights.pow(2).flatten(2).sum(2).sqrt()[0]
    assert got == pytest.approx(want.tolist(), rel=1e-5)


def test_the_command_runs_on_a_joint_run_and_prints_every_block(bench, joint_run, capsys):
    result = bench.main([str(joint_run), "--scans", "2"])
    out = capsys.readouterr().out
    assert result["iteration"] == 2
    assert "generated scan + real labels" in out and "output noise scaled" in out
    assert len(result["gradient real"]) == 4 and list(result["noise"]) == list(bench.NOISE_SCALES)
    # G's own noise at scale 0 is the clean output: a second run of the block agrees exactly.
    nets, cfg, _ = bench.load_networks(joint_run)
    z = torch.randn(2, cfg.model.latent_dim)
    first = bench.noise_response(nets, cfg, z, 5)
    assert bench.noise_response(nets, cfg, z, 5) == first
    assert nets.generator.output_noise.std.__func__ is type(nets.generator.output_noise).std
