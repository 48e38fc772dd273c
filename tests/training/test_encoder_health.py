"""Encoder health numbers on hand-built encoders and generators with known answers."""

import numpy as np
import pytest
import torch
from torch import nn

from ratgan.training.encoder_health import encoder_health


class ConstantEncoder(nn.Module):
    """Every scan gets the same code: a collapsed encoder."""

    def forward(self, x):
        return torch.ones(len(x), 8) * 3.0


class FlattenEncoder(nn.Module):
    """The code is the scan itself (64 voxels): an encoder that keeps everything."""

    def forward(self, x):
        return x.flatten(1)


class Decoder(nn.Module):
    """G(z): the code reshaped back into a volume, with the (output, clean) convention."""

    def __init__(self, template: torch.Tensor | None = None):
        super().__init__()
        self.template = template

    def forward(self, z, return_clean=False):
        out = (
            self.template.expand(len(z), -1, -1, -1, -1)
            if self.template is not None
            else (z.view(len(z), 1, 4, 4, 4))
        )
        return (out, out) if return_clean else out


def test_a_collapsed_encoder_and_a_template_generator():
    torch.manual_seed(0)
    scans = torch.randn(6, 1, 4, 4, 4)
    template = scans.mean(0, keepdim=True)
    h = encoder_health(ConstantEncoder(), Decoder(template), scans)
    assert h["code_cosine"] == pytest.approx(1.0)
    assert h["code_length_ratio"] == pytest.approx(3.0)
    assert h["rec_std"] == pytest.approx(0.0, abs=1e-7)
    # answering with the mean scan is exactly the mean-scan baseline
    s = scans.numpy()
    baseline = ((s - s.mean(0, keepdims=True)) ** 2).mean()
    assert h["rec_mse"] == pytest.approx(baseline, rel=1e-5)
    assert h["mean_scan_mse"] == pytest.approx(baseline, rel=1e-5)
    assert h["real_std"] == pytest.approx(np.std(s, axis=0, ddof=1).mean(), rel=1e-5)


def test_a_perfect_autoencoder_of_independent_scans():
    torch.manual_seed(1)
    scans = torch.randn(40, 1, 4, 4, 4)
    h = encoder_health(FlattenEncoder(), Decoder(), scans)
    assert h["rec_mse"] == 0.0
    assert h["rec_std"] == pytest.approx(h["real_std"])
    assert abs(h["code_cosine"]) < 0.05  # independent Gaussian scans: near-orthogonal codes
    assert h["code_length_ratio"] == pytest.approx(1.0, abs=0.1)


def test_health_restores_training_mode():
    e, g = FlattenEncoder().train(), Decoder().train()
    encoder_health(e, g, torch.randn(3, 1, 4, 4, 4))
    assert e.training and g.training


class LineEncoder(nn.Module):
    """Codes on one line through the origin, on both sides: cosine near 0, yet collapsed."""

    def forward(self, x):
        direction = torch.linspace(-1, 1, 8)
        return x.flatten(1)[:, :1] * direction


def test_codes_on_a_line_show_in_the_top_share_not_in_the_cosine():
    torch.manual_seed(2)
    scans = torch.randn(16, 1, 4, 4, 4)
    line = encoder_health(LineEncoder(), Decoder(torch.zeros(1, 1, 4, 4, 4)), scans)
    assert line["code_top_share"] == pytest.approx(1.0)
    assert abs(line["code_cosine"]) < 0.3
    spread = encoder_health(FlattenEncoder(), Decoder(), scans)
    assert spread["code_top_share"] < 0.3
    # Prior codes of the same shape spread as the independent scans' codes do (64 dims) and,
    # in the line encoder's 8 dims, far from one axis.
    assert spread["prior_top_share"] < 0.3 and line["prior_top_share"] < 0.5


class NoisyDecoder(Decoder):
    """G(z) with output noise drawn from the global stream, as G does when given no noise."""

    def forward(self, z, return_clean=False):
        clean = z.view(len(z), 1, 4, 4, 4)
        out = clean + torch.randn(clean.shape)
        return (out, clean) if return_clean else out


def test_health_draws_nothing_from_the_global_stream():
    # An evaluation due in one run and not in its resumed twin (another --eval-every) drew
    # G's output noise from the global stream and changed every later draw of the training.
    scans = torch.rand(4, 1, 4, 4, 4)
    torch.manual_seed(3)
    expected = torch.rand(5)
    torch.manual_seed(3)
    encoder_health(FlattenEncoder(), NoisyDecoder(), scans)
    assert torch.equal(torch.rand(5), expected)
