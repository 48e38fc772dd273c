"""The latent diffusion networks and schedules: known answers, independent of MONAI's tests."""

import math

import numpy as np
import pytest
import torch

from ratgan.config import load_config
from ratgan.models.ldm import (
    build_autoencoder,
    build_scheduler,
    build_unet,
    initial_noise,
    latent_shape,
    sample_latent_diffusion,
)


@pytest.fixture()
def cfg():
    return load_config("ldm-tiny")


def _smooth_volumes(n: int, shape=(16, 16, 12)) -> torch.Tensor:
    """Blobs in [-1, 1] that a small autoencoder can learn: a Gaussian ball per volume."""
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    vols = []
    rng = np.random.default_rng(0)
    for _ in range(n):
        centre = rng.uniform(5, 7, size=3) * np.array(shape) / 12
        ball = np.exp(-(((grid - centre) ** 2).sum(-1)) / 18.0)
        vols.append(2 * ball - 1)
    return torch.tensor(np.stack(vols)[:, None], dtype=torch.float32)


def test_latent_and_output_shapes_on_tiny_volumes(cfg):
    ae = build_autoencoder(cfg)
    x = _smooth_volumes(2)
    mu, sigma = ae.encode(x)
    # ldm-tiny: two levels (one x2 downsampling), two latent channels.
    assert latent_shape(cfg) == (2, 8, 8, 6)
    assert tuple(mu.shape) == tuple(sigma.shape) == (2, *latent_shape(cfg))
    assert bool((sigma > 0).all())
    assert tuple(ae.decode(mu).shape) == tuple(x.shape)
    unet = build_unet(cfg)
    out = unet(mu, timesteps=torch.tensor([0, 999]))
    assert out.shape == mu.shape


def test_autoencoder_round_trip_learns_the_volumes(cfg):
    torch.manual_seed(0)
    ae = build_autoencoder(cfg)
    x = _smooth_volumes(2)
    baseline = float((x - x.mean()).abs().mean())  # predicting the mean intensity
    opt = torch.optim.Adam(ae.parameters(), lr=3e-3)
    for _ in range(150):
        mu, sigma = ae.encode(x)
        rec = ae.decode(mu)
        loss = (rec - x).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        err = float((ae.decode(ae.encode(x)[0]) - x).abs().mean())
    assert err < 0.25 * baseline, (err, baseline)


def _alphas_cumprod(section) -> np.ndarray:
    """The scaled-linear schedule of the LDM papers, computed here from its definition."""
    betas = np.linspace(section.beta_start**0.5, section.beta_end**0.5, section.train_timesteps)
    return np.cumprod(1.0 - betas**2)


def test_the_schedule_is_the_scaled_linear_one(cfg):
    sched = build_scheduler(cfg.ldm.diffusion)
    ours = _alphas_cumprod(cfg.ldm.diffusion)
    assert np.allclose(sched.alphas_cumprod.double().numpy(), ours, rtol=1e-5, atol=1e-7)


def test_a_ddim_step_with_the_true_noise_recovers_x0(cfg):
    section = cfg.ldm.diffusion
    abar = _alphas_cumprod(section)
    sched = build_scheduler(section, "ddim")
    sched.set_timesteps(50)
    gen = torch.Generator().manual_seed(1)
    x0 = torch.randn(2, 2, 8, 8, 6, generator=gen, dtype=torch.float64)
    eps = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    stride = section.train_timesteps // 50
    for t in (979, 500, 21):
        xt = math.sqrt(abar[t]) * x0 + math.sqrt(1 - abar[t]) * eps
        prev, pred_x0 = sched.step(eps, t, xt)
        assert torch.allclose(pred_x0, x0, atol=1e-5)
        # DDIM (eta 0) moves to the same x0 and noise at the previous timestep.
        a_prev = abar[t - stride]
        expected = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps
        assert torch.allclose(prev, expected, atol=1e-5)


class _Oracle(torch.nn.Module):
    """A 'UNet' that knows x0: it returns the exact noise of x_t (eq. 4 of DDPM, inverted)."""

    def __init__(self, x0: torch.Tensor, abar: np.ndarray) -> None:
        super().__init__()
        self.x0 = x0
        self.abar = torch.tensor(abar, dtype=torch.float32)
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives the module a device

    def forward(self, x, timesteps):
        a = self.abar[timesteps].view(-1, *([1] * (x.ndim - 1)))
        return (x - a.sqrt() * self.x0) / (1 - a).sqrt()


class _Identity(torch.nn.Module):
    def decode(self, z):
        return z


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_sampling_with_an_oracle_ends_at_x0(cfg, sampler):
    section = cfg.ldm.diffusion
    scale = 2.0
    # x0 / scale inside (-1, 1), where the final clip to the network range changes nothing
    x0 = (torch.rand(2, 2, 8, 8, 6, generator=torch.Generator().manual_seed(2)) - 0.5) * 3.6
    oracle = _Oracle(x0, _alphas_cumprod(section))
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(3))
    steps = 20 if sampler == "ddim" else section.train_timesteps
    out = sample_latent_diffusion(
        _Identity(), oracle, build_scheduler(section, sampler), noise, scale, steps, seeds=[5, 6]
    )
    assert torch.allclose(out, x0 / scale, atol=1e-3)


def test_decoded_volumes_are_clipped_to_the_network_range(cfg):
    from ratgan.models.ldm import decode

    ae = build_autoencoder(cfg)
    with torch.no_grad():
        for p in ae.decoder.parameters():
            p.mul_(40.0)  # an overshooting decoder
        raw = ae.decode(torch.randn(1, *latent_shape(cfg)))
        out = decode(ae, torch.randn(1, *latent_shape(cfg)))
    assert float(raw.abs().max()) > 1.0  # the decoder itself is unbounded
    assert float(out.min()) >= -1.0 and float(out.max()) <= 1.0


class _RecordingOracle(_Oracle):
    """The oracle of x0 that also records each x_t it is called with (and predicts v when the
    schedule does)."""

    def __init__(self, x0: torch.Tensor, abar: np.ndarray, prediction: str) -> None:
        super().__init__(x0, abar)
        self.prediction = prediction
        self.seen: list[tuple[int, torch.Tensor]] = []

    def forward(self, x, timesteps):
        self.seen.append((int(timesteps[0]), x.clone()))
        eps = super().forward(x, timesteps)
        if self.prediction == "epsilon":
            return eps
        a = self.abar[timesteps].view(-1, *([1] * (x.ndim - 1)))
        return a.sqrt() * eps - (1 - a).sqrt() * self.x0


def _oracle_chain(cfg, prediction: str, sampler: str, steps: int, scans: int):
    """Sample ``scans`` latents with the recording oracle of known x0 (seeds 11, 12, ...):
    (abar, x0, the oracle with every x_t it was handed, the output)."""
    section = cfg.ldm.diffusion
    section.prediction = prediction
    abar = _alphas_cumprod(section)
    x0 = torch.rand(scans, 2, 16, 16, 12, generator=torch.Generator().manual_seed(2)) - 0.5
    oracle = _RecordingOracle(x0, abar, prediction)
    seeds = list(range(11, 11 + scans))
    noise = initial_noise(seeds, tuple(x0.shape[1:]))
    out = sample_latent_diffusion(
        _Identity(), oracle, build_scheduler(section, sampler), noise, 1.0, steps, seeds=seeds
    )
    assert len(oracle.seen) == steps
    return abar, x0, oracle, out


@pytest.mark.parametrize(
    ("prediction", "steps"),
    [("epsilon", 1000), ("epsilon", 50), ("epsilon", 10), ("v_prediction", 50)],
)
def test_ddpm_visits_the_forward_marginals_in_any_number_of_steps(cfg, prediction, steps):
    # Known answer (DDPM eq. 4): with the true x0, a correct reverse chain holds x_t at
    # N(sqrt(abar_t) x0, (1 - abar_t) I) at every timestep it visits, whatever its stride.
    # The initial noise is generation's, from the scans' seeds: DDPM's per-step noise must be
    # independent of it (its first draw was the initial noise itself on a CPU), and fewer
    # steps than training timesteps must still step between the timesteps they visit.
    abar, x0, oracle, _ = _oracle_chain(cfg, prediction, "ddpm", steps, scans=4)
    for t, x in oracle.seen[1:]:  # the first is the initial noise itself
        residual = x - math.sqrt(abar[t]) * x0
        ratio = float(residual.std()) / math.sqrt(1 - abar[t])
        assert abs(ratio - 1) < 0.05, (t, ratio)


@pytest.mark.parametrize(
    ("prediction", "steps"),
    [("epsilon", 50), ("epsilon", 10), ("epsilon", 4), ("epsilon", 37), ("v_prediction", 10)],
)
def test_ddim_visits_the_forward_marginals_in_any_number_of_steps(cfg, prediction, steps):
    # Known answer (DDIM eq. 12, eta 0): with the true x0 the chain keeps its first noise
    # direction, x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, at every timestep it visits.
    # MONAI's DDIM step goes from t to t - 1000 // steps while its set_timesteps visits
    # linspace(999, 0, steps): with 10 steps the UNet was handed x at t=11's noise as t=0
    # (3.9x the noise it is told), and the scans kept the rest of it.
    abar, x0, oracle, out = _oracle_chain(cfg, prediction, "ddim", steps, scans=2)
    first_t, first_x = oracle.seen[0]
    eps = (first_x.double() - math.sqrt(abar[first_t]) * x0) / math.sqrt(1 - abar[first_t])
    for t, x in oracle.seen[1:]:
        expected = math.sqrt(abar[t]) * x0 + math.sqrt(1 - abar[t]) * eps
        assert torch.allclose(x.double(), expected, atol=1e-4), t
    assert torch.allclose(out, x0, atol=1e-4)


def test_ddpm_step_matches_monai_at_consecutive_timesteps(cfg):
    # Independent reference: MONAI's DDPMScheduler.step, which draws its noise with the same CPU
    # generator. The step is ratgan's own at every stride (so that its noise can be drawn on the
    # CPU whatever the device); at t -> t - 1 it must be MONAI's step.
    from ratgan.models.ldm import _ddpm_step

    sched = build_scheduler(cfg.ldm.diffusion, "ddpm")
    sched.set_timesteps(sched.num_train_timesteps)
    x = torch.randn(1, 2, 8, 8, 6, generator=torch.Generator().manual_seed(0))
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    for t in (999, 500, 10, 1):
        ours = _ddpm_step(sched, eps, t, t - 1, x, torch.Generator().manual_seed(7))
        ref = sched.step(eps, t, x, generator=torch.Generator().manual_seed(7))[0]
        assert torch.allclose(ours, ref, atol=1e-5), t


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_ddpm_scans_of_one_seed_are_the_same_on_cpu_and_cuda(cfg):
    # The per-step noise is drawn on the CPU: CUDA's generator gives other numbers for a seed.
    section = cfg.ldm.diffusion
    x0 = torch.rand(2, 2, 8, 8, 6, generator=torch.Generator().manual_seed(2)) - 0.5
    seeds = [3, 4]
    noise = initial_noise(seeds, tuple(x0.shape[1:]))
    outs = []
    for device in ("cpu", "cuda"):
        oracle = _Oracle(x0.to(device), _alphas_cumprod(section)).to(device)
        oracle.abar = oracle.abar.to(device)
        sched = build_scheduler(section, "ddpm")
        out = sample_latent_diffusion(_Identity(), oracle, sched, noise, 1.0, 10, seeds=seeds)
        outs.append(out.cpu())
    assert torch.allclose(outs[0], outs[1], atol=1e-4)


class _GaussianDenoiser(torch.nn.Module):
    """The Bayes-optimal network for latents x0 ~ N(0, sd^2 I): with v_t = abar_t sd^2 + 1 -
    abar_t, E[eps | x_t] = sqrt(1 - abar_t) x_t / v_t and E[x0 | x_t] = sqrt(abar_t) sd^2 x_t /
    v_t.  Its output is rounded to bf16, as the UNet's is under the presets' autocast (the
    smallest error any bf16 network makes)."""

    def __init__(self, abar: torch.Tensor, prediction: str, sd: float) -> None:
        super().__init__()
        self.abar, self.prediction, self.var = abar.double(), prediction, sd**2
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, timesteps):
        a = self.abar[timesteps].view(-1, *([1] * (x.ndim - 1))).to(x.dtype)
        v = a * self.var + 1 - a
        eps, x0 = (1 - a).sqrt() * x / v, a.sqrt() * self.var * x / v
        out = eps if self.prediction == "epsilon" else a.sqrt() * eps - (1 - a).sqrt() * x0
        return out.bfloat16().float()


@pytest.mark.parametrize("schedule", ["scaled_linear_beta", "linear_beta", "cosine"])
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_every_accepted_schedule_samples_a_gaussian_from_its_optimal_bf16_network(
    schedule, prediction
):
    # Known answer: for x0 ~ N(0, sd^2 I) and the optimal predictor, DDIM (eta 0) is linear:
    # each step multiplies x by (sqrt(abar_prev abar_t) sd^2 + sqrt((1 - abar_prev)(1 -
    # abar_t))) / (abar_t sd^2 + 1 - abar_t), so the sample is their product times the noise.
    # The cosine schedule's last beta is clipped to 0.999 (abar_999 ~ 2e-9): an epsilon
    # network's error was multiplied by about 600 in the first of 50 steps, and bf16 rounding
    # alone left an error as large as the samples; such a config is refused, every other one
    # samples the known answer.
    from ratgan.errors import RatganError

    over = {"ldm.diffusion.schedule": schedule, "ldm.diffusion.prediction": prediction}
    try:
        section = load_config("ldm-tiny", over).ldm.diffusion
    except RatganError as exc:
        assert (schedule, prediction) == ("cosine", "epsilon"), str(exc)
        assert "schedule cosine needs ldm.diffusion.prediction v_prediction" in str(exc)
        return
    sd, steps = 0.5, 50
    sched = build_scheduler(section, "ddim")
    abar = sched.alphas_cumprod.double()
    seeds = list(range(8))
    noise = initial_noise(seeds, (2, 8, 8, 6))
    denoiser = _GaussianDenoiser(abar, prediction, sd)
    # scale 10: the latent / scale lies inside the decoder clip of [-1, 1]
    out = 10 * sample_latent_diffusion(
        _Identity(), denoiser, sched, noise, 10.0, steps, seeds=seeds
    )
    visited = [int(t) for t in sched.timesteps]
    factor = 1.0
    for t, prev in zip(visited, [*visited[1:], -1], strict=True):
        a_prev, a_t = float(abar[prev]) if prev >= 0 else 1.0, float(abar[t])
        turn = math.sqrt(a_prev * a_t) * sd**2 + math.sqrt((1 - a_prev) * (1 - a_t))
        factor *= turn / (a_t * sd**2 + 1 - a_t)
    error = (out.double() - factor * noise.double()).pow(2).mean().sqrt()
    assert float(error) < 0.01 * sd, (schedule, prediction, float(error))


def test_decode_keeps_non_finite_voxels_visible():
    """The clip to [-1, 1] keeps NaN but would turn an infinite voxel into a plausible +-1:
    decode makes both NaN, so generation's non-finite check refuses the scan."""
    from ratgan.models.ldm import decode

    class Overflowing(torch.nn.Module):
        def decode(self, z: torch.Tensor) -> torch.Tensor:
            out = z.clone()
            out[0, 0, 0, 0, 0] = float("inf")
            out[0, 0, 0, 0, 1] = float("-inf")
            out[0, 0, 0, 0, 2] = float("nan")
            return out

    z = torch.full((1, 1, 2, 2, 3), 3.0)
    out = decode(Overflowing(), z)
    assert torch.isnan(out[0, 0, 0, 0, :3]).all()
    assert (out[0, 0, 0, 0, 3:] == 1.0).all() and (out[0, 0, 1] == 1.0).all()
