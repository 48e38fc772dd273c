"""Typed configuration: presets, YAML files, overrides and validation that names the bad field.

A config is a tree of dataclasses.  ``load_config`` accepts a preset name (``sigmarat2``) or a
YAML path; a YAML file may start from a preset with ``base: sigmarat2`` and override any
field.  Every problem is collected and raised once, each naming its dotted field.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from ratgan.atomic import atomic_write_text
from ratgan.errors import RatganError

Norm = Literal["batch", "instance", "none"]
Activation = Literal["relu", "leaky_relu"]
Network = Literal["G", "E", "D", "C"]
Family = Literal["alphagan", "ldm"]


@dataclass
class ModelConfig:
    """Architecture of the four alpha-GAN networks (docs/method.md section 2)."""

    volume_size: int = 64
    """Side of the cubic volume the networks see: 4 * 2**k (32, 64, 128...)."""
    volume_depth: int | None = None
    """Size of the volume's last axis (the slices) when it differs from ``volume_size``: a
    multiple of 2**k (k up-sampling blocks), e.g. 48 for 64x64x40 EPI scans, so the networks
    do not spend a third of their work on the 24 empty slices that padding to 64^3 adds.  G's
    first layer and D's and E's last one then have kernels of depth ``volume_depth / 2**k``
    instead of 4.  None: a cube, as in the paper."""
    channels: int = 1
    """Channels of a volume: 1 for a scan, 4 for a scan plus GM/WM/CSF label channels."""
    latent_dim: int = 500
    g_width: int = 512
    """Channels after the generator's first layer; each up-sampling block halves them."""
    d_width: int = 512
    """Channels of the discriminator's deepest conv; shallower convs halve them."""
    e_width: int = 512
    """Channels of the encoder's deepest conv."""
    c_hidden: int = 4096
    """Width of the code discriminator's two hidden layers."""
    g_norm: Norm = "instance"
    g_activation: Activation = "leaky_relu"
    d_norm: Norm = "instance"
    e_norm: Norm = "instance"
    c_norm: Literal["batch", "none"] = "batch"
    spectral_norm: list[Network] = field(default_factory=list)
    leaky_slope: float = 0.2
    """Negative slope of the LeakyReLUs of D, E and C."""
    g_leaky_slope: float = 0.01
    """Negative slope of G's LeakyReLUs: the published G uses nn.LeakyReLU() (0.01)."""
    g_fused_upsample: bool = True
    """Run each of G's [nearest x2 upsample -> Conv3d(k3, p1)] pairs as one equivalent
    ConvTranspose3d(k4, s2, p1) built from the same weights: the same function and gradients
    (equal to rounding), 3.4x fewer FLOPs and no 8x-sized intermediate.  False runs the
    published formulation literally."""
    latent_norm: Literal["none", "sphere"] = "none"
    """Beyond the paper (docs/quality.md, "An encoder that encodes"): ``sphere`` puts every code
    on the sphere of radius sqrt(latent_dim) before any network reads it, z -> sqrt(L) z / |z|:
    G's input, E's output and C's input (prior codes too).  The published G ends its stem in
    instance norm, so it ignores a code's length, and a Wasserstein code critic is linear far
    from the prior: E then wins the code game by making every code long and alike (measured:
    cosine 0.9996 between subjects).  On the sphere E can only win by spreading its codes as
    the prior does.  ``none`` is the paper's."""
    e_standardise: bool = False
    """Beyond the paper: E's codes pass through a per-dimension standardisation over the batch
    (BatchNorm1d without affine parameters; running statistics in evaluation), so that they
    have the prior's mean 0 and variance 1 whatever the code critic does: codes cannot all be
    the same.  Applied before ``latent_norm``."""
    e_whiten: bool = False
    """Beyond the paper (needs ``e_standardise``): decorrelate the standardised codes with a
    running estimate of their correlation matrix (``models/whitening.py``), so that they have the
    prior's covariance, not only its per-dimension variance: standardised codes measured to
    collapse onto one direction."""
    g_upsample: Literal["nearest", "trilinear"] = "nearest"
    """How G's blocks double the resolution before their conv: ``nearest`` (the paper's) or
    ``trilinear`` (anti-aliased: nearest followed by a [1, 2, 1] / 4 blur along each axis, which
    removes the axis-aligned grid that nearest up-sampling draws; docs/quality.md)."""
    g_trilinear_blocks: int = 0
    """With ``g_upsample: trilinear``, how many of G's last up-sampling blocks use it (0: all);
    the deeper blocks keep the fast fused nearest form."""
    g_final_conv: int = 0
    """Beyond the paper: when > 0, G's last up-sampling block ends with this many channels
    (norm and activation after it) and one more Conv3d(k3, p1) at full resolution maps them to
    the output, so that fine detail can come from a nonlinearity at full resolution rather than
    from the up-sampling's replicas (StyleGAN's generators convolve after every up-sampling);
    0 is the paper's single output conv."""
    d_mbstd_group: int = 0
    """Beyond the paper: StyleGAN's minibatch standard deviation in D (a feature map of the
    spread over groups of this many volumes, appended before D's last conv) so that the critic
    can see a lack of diversity; 0 turns it off.  The batch must be a multiple of it."""
    d_label_scale: float = 1.0
    """A joint model (``channels`` > 1): the critic sees its tissue channels multiplied by this,
    real and generated alike, before the gradient penalty's interpolation, so that the penalty
    leaves it less slope to spend on the label maps (1 leaves them as they are).  Measured in
    docs/segbench-phantom.md: the joint critic's whole gap was in the tissue channels."""
    d_label_dropout: float = 0.0
    """A joint model: the probability that the critic sees a volume with its tissue channels
    zeroed (one draw per batch position, shared by the real volume and the two generated ones
    the gradient penalty pairs it with), so that on those volumes the critic must judge the
    scan alone, as a one-channel critic does; 0 never drops them."""
    g_output_noise: bool = False
    """Beyond the paper (docs/quality.md): add per-voxel Gaussian noise to G's output before the
    tanh, with a learned, intensity-dependent std (softplus(a * pre + b), starting at ~0), as
    StyleGAN's noise inputs give its generator stochastic detail.  Scanner noise is i.i.d. per
    voxel, which a convolutional generator cannot otherwise draw; reconstruction losses compare
    the noise-free output, the critics see the noisy one."""
    g_output_noise_after_tanh: bool = False
    """With ``g_output_noise``: add the noise to the tanh's output and clamp to [-1, 1] instead
    of adding it before the tanh, as scanner noise adds to the magnitude image.  Before the
    tanh, noise on bright voxels is squeezed by the tanh's flat top, so G cannot draw the
    extreme noise voxel that sets a real scan's maximum, and with it the min/max scaling that
    training and evaluation apply to every scan (docs/quality.md, "The brightest voxel")."""
    g_output_noise_per_scan: bool = False
    """With ``g_output_noise``: each scan's noise level also depends on its code (the std's
    softplus argument gains ``w . z``, w learned from zero), so scans can differ in SNR as
    scanners and sessions do; without it G gives every scan the same noise level."""
    g_output_noise_level_spread: bool = False
    """With ``g_output_noise``: the std's softplus argument gains ``GAIN * s * u`` (a factor
    ``exp(GAIN * s * u)`` where the std is small), u a standard normal drawn per scan (from that
    scan's own output-noise draw, so a seeded scan stays reproducible) and s one learned
    scalar, zero at the start: a spread of SNR between scans that G learns as one number,
    independent of the anatomy."""
    g_output_noise_gain: float = 100.0
    """With ``g_output_noise``: the learning-rate multiplier of the noise level (the std is
    ``softplus(gain * (a * pre + b))``).  Adam moves a parameter by about the learning rate per
    step whatever its gradient, so the gain sets how fast the noise level can move: at 100 and
    lr 2e-4 the softplus argument moves by up to 0.02 per step (docs/segbench-phantom.md: a
    joint model's noise level overshot to the bound within 500 steps)."""
    g_hard_labels: bool = False
    """A joint model (``channels`` > 1): the tissue channels that the critic sees and that
    generation writes are one-hot (+1 for the voxel's tissue, -1 elsewhere, as real label maps
    are), with the soft channels' gradient passed straight through.  Without it the tanh's
    channels never reach +-1 and a critic can separate real from generated on that alone
    (docs/segbench-phantom.md).  The reconstruction losses still compare the soft channels."""

    @property
    def n_scales(self) -> int:
        """Number of x2 up-sampling (G) or stride-2 (D, E) blocks: 64 -> 4, 32 -> 3, 128 -> 5."""
        return round(math.log2(self.volume_size / 4))

    @property
    def volume_shape(self) -> tuple[int, int, int]:
        """Shape (X, Y, Z) of one volume channel: ``volume_size`` twice, then the depth."""
        depth = self.volume_size if self.volume_depth is None else self.volume_depth
        return (self.volume_size, self.volume_size, depth)

    @property
    def coarsest_shape(self) -> tuple[int, int, int]:
        """Shape of G's first feature map and of D's and E's last: the volume / 2**n_scales."""
        return (4, 4, self.volume_shape[2] // 2**self.n_scales)

    def widths(self, deepest: int) -> list[int]:
        """Channel widths from shallow to deep for a trunk whose deepest layer has ``deepest``."""
        n = self.n_scales
        return [max(deepest >> (n - 1 - i), 1) for i in range(n)]


@dataclass
class LossConfig:
    """Weights of the alpha-GAN objectives (docs/method.md section 3, paper eqs. 1-6)."""

    l1: float = 0.0
    mse: float = 100.0
    """The reconstruction's L1 and MSE weights.  L1's optimum is the median of what a code
    leaves open, MSE's the mean (dim, for a thin structure not pinned to the voxel); L1 100
    in place of MSE 1,000 as a finishing phase of a `long`-type run drew the CSF no brighter
    (docs/segbench-phantom.md)."""
    gdl: float = 0.01
    gp: float = 100.0
    """lambda of the WGAN-GP penalties of D and C."""
    tissue_weight: float = 1.0
    """Beyond the paper, a joint model (``model.channels`` > 1): the weight of each tissue
    channel in the reconstruction terms, the scan channel's being 1 (L1 and MSE become weighted
    channel means, GDL a weighted channel sum; 1 is the plain mean and sum, 0 leaves the tissue
    channels to the critic).  The tissue channels' sharp +-1 edges made GDL about 50 times
    larger than for the scan alone (docs/segbench-phantom.md)."""
    rec_blur_sigma: float = 0.0
    """Beyond the paper: the L1 and MSE terms compare ``x`` and its reconstruction after both
    are blurred by a Gaussian of this standard deviation (voxels, every axis; 0: unblurred, as
    the paper).  Measured because a code that places thin structures a voxel off makes the
    unblurred MSE prefer a dim, spread-out rendering of them; blurred, it keeps the anatomy's
    placement at the coarse scale and leaves the fine detail to the critic.  The GDL is
    unchanged.  Measured at 1.0 as a 2,000-iteration finishing phase of a `long`-type run: no
    brighter CSF, no better placement than the plain continuation, and sampled scans further
    from held-out ones; in no preset (docs/segbench-phantom.md)."""
    gdl_finish: float | None = None
    """Beyond the paper: the GDL weight from iteration ``gdl_finish_from`` on (a finishing
    phase; None: ``gdl`` throughout).  Ten times ``gdl`` for the demo's last 300 iterations
    measured better in both feature spaces on two training seeds of three and worse on the
    third, the same weight from the start much worse (docs/quality.md); in no preset."""
    gdl_finish_from: int = 0
    """First iteration (1-based, absolute, so a resumed or extended run keeps the phase where it
    was) trained with ``gdl_finish``."""

    def at(self, iteration: int) -> LossConfig:
        """The weights that train ``iteration``."""
        if self.gdl_finish is None or iteration < self.gdl_finish_from:
            return self
        return replace(self, gdl=self.gdl_finish)


@dataclass
class OptimConfig:
    """Optimiser of all four networks."""

    name: Literal["adam", "adamw"] = "adamw"
    lr: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.01
    double_generator_step: bool = True
    """Reproduce the published code: step G's optimiser twice per iteration (same gradients)."""
    critic_reuses_eg_samples: bool = False
    """Beyond the paper: D and C train on the E/G phase's codes and volumes (detached, from E
    and G before their update) instead of new ones from the updated E and G on the second batch
    (the published order); D's real batch is still the second batch.  Saves one no-grad pass of
    E and G per iteration."""


@dataclass
class AugmentConfig:
    """Conventional augmentation (docs/method.md §1); each transform applied independently."""

    mode: Literal["all", "flip", "none"] = "all"
    rotate_prob: float = 0.1
    rotate_range: float = 0.052
    """Radians, about each axis."""
    flip_prob: float = 0.1
    flip_axis: int = 0
    intensity_prob: float = 0.1
    intensity_factor: float = 0.1
    zoom_prob: float = 0.1
    zoom_range: tuple[float, float] = (1.0, 1.1)
    noise_prob: float = 0.1
    noise_std: float = 0.01
    translate_prob: float = 0.1
    translate_range: tuple[float, float, float] = (4.0, 4.0, 0.0)
    """Voxels of the grid the networks see, per axis: after ``data.downsample`` pooling, so a
    run that pools by 2 shifts its scans by up to twice as many of their own voxels (the paper
    presets do not pool)."""


@dataclass
class DiscriminatorAugmentConfig:
    """Beyond the paper: non-leaking differentiable augmentation of everything D sees (ADA).

    Karras et al. 2020, "Training GANs with Limited Data": the same random transforms are
    applied to real and generated volumes just before the critic (and only there), each with
    probability ``p``; ``adaptive`` raises p while the critic separates the real batch too
    easily (r_t above ``target``) and lowers it otherwise.
    """

    enabled: bool = False
    p: float = 0.0
    """Starting probability of each transform (the fixed one when not adaptive)."""
    adaptive: bool = True
    target: float = 0.6
    """Target of the overfitting signal r_t = E[sign(D(x) - mean D(x~))] over an interval."""
    interval: int = 4
    """Iterations between two adjustments of p."""
    speed_images: int = 20_000
    """Images over which p can move from 0 to 1 (ADA's ada_kimg, scaled to short runs)."""
    max_p: float = 0.8
    """Upper bound of p: above ~0.8 flips and translations start to leak into G (ADA, sec. 2)."""
    flip: bool = True
    """Left-right flip (axis 0)."""
    translate: float = 0.125
    """Integer translation of up to this fraction of each in-plane side (0 disables)."""
    brightness: float = 0.2
    """Std of an additive intensity offset (0 disables)."""
    contrast: float = 0.5
    """Std of log2 of a multiplicative contrast factor about the volume mean (0 disables)."""


@dataclass
class DataConfig:
    """How scans are read and prepared for the networks."""

    target_shape: tuple[int, int, int] = (64, 64, 64)
    downsample: int = 1
    """Integer factor by which scans are average-pooled before padding (2 turns a 64x64x40
    scan into 32x32x20 for 32^3 CPU models); generation upsamples back."""
    volume_index: int | None = None
    """For 4D scans: which volume to take; None takes the temporal mean."""
    label_channels: bool = False
    """Train on scan + GM/WM/CSF label channels (joint generation); needs model.channels == 4."""


@dataclass
class TrainConfig:
    """The training run."""

    iterations: int = 200_000
    batch_size: int = 4
    seed: int = 0
    precision: Literal["fp32", "bf16"] = "fp32"
    device: str = "auto"
    log_every: int = 50
    sample_every: int = 1000
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    tensorboard: bool = False
    channels_last: bool = True
    compile: bool = False
    """torch.compile the generator and encoder (not D and C: the gradient penalty needs a
    double backward, which compiled graphs do not support); falls back to eager on failure."""
    ema_half_life_images: float = 0.0
    """Beyond the paper: keep an exponential moving average of G's weights with this half-life
    in images (StyleGAN: 10,000); 0 turns it off.  Generation uses the average by default."""
    ema_rampup: float = 0.0
    """When > 0, the half-life is at most ``ema_rampup`` x images seen so far (StyleGAN2-ADA)."""
    eval_every: int = 0
    """Every this many iterations, generate ``eval_samples`` scans and compute feature-space
    metrics against the training scans (metrics.jsonl, quality_curves.png, checkpoints/best.pt);
    0 turns it off."""
    eval_samples: int = 32
    eval_metric: Literal["frechet", "rbf_mmd2", "precision", "recall"] = "frechet"
    """The metric that chooses checkpoints/best.pt (lower is better for frechet and rbf_mmd2)."""
    eval_real: str | None = None
    """Real scans (folder, glob or CSV) the quality tracking compares against, for example
    held-out subjects (a training scan among them is refused); None compares against the
    run's own training scans."""


@dataclass
class AutoencoderSection:
    """Stage 1 of a latent diffusion run: MONAI's AutoencoderKL (docs/diffusion.md)."""

    channels: list[int] = field(default_factory=lambda: [32, 64, 64])
    """Channels per level; the latent is the volume downsampled by 2 ** (len - 1)."""
    num_res_blocks: int = 1
    latent_channels: int = 3
    norm_num_groups: int = 16
    attention: bool = False
    """Non-local attention in the encoder's and decoder's bottleneck."""
    iterations: int = 1000
    """Stage 1 length; the diffusion stage takes iterations ``train.iterations - this``."""
    batch_size: int = 4
    lr: float = 1e-4
    kl_weight: float = 1e-6
    """Weight of the KL term (summed over latent voxels, averaged over the batch) beside L1."""
    adv_weight: float = 0.0
    """Weight of the patch adversarial term (least squares, MONAI's PatchDiscriminator); 0
    turns it and the discriminator off."""
    adv_start: int = 0
    """Iteration from which the adversarial term is on (the usual warm-up with L1 only)."""
    disc_channels: int = 32
    disc_layers: int = 3


@dataclass
class DiffusionSection:
    """Stage 2 of a latent diffusion run: MONAI's DiffusionModelUNet on the scaled latents."""

    channels: list[int] = field(default_factory=lambda: [32, 64, 64])
    attention_levels: list[bool] = field(default_factory=lambda: [False, False, True])
    num_res_blocks: int = 1
    norm_num_groups: int = 16
    num_head_channels: int = 32
    lr: float = 1e-4
    train_timesteps: int = 1000
    schedule: Literal["scaled_linear_beta", "linear_beta", "cosine"] = "scaled_linear_beta"
    """MONAI's noise schedule; ``cosine`` only with ``prediction: v_prediction``."""
    beta_start: float = 0.0015
    beta_end: float = 0.0195
    prediction: Literal["epsilon", "v_prediction"] = "epsilon"
    sampler: Literal["ddim", "ddpm"] = "ddim"
    """Default sampler of generation and of the quality tracking."""
    steps: int = 50
    """Default number of sampling steps."""


@dataclass
class LDMSection:
    """A latent diffusion run (``family: ldm``): its two stages."""

    autoencoder: AutoencoderSection = field(default_factory=AutoencoderSection)
    diffusion: DiffusionSection = field(default_factory=DiffusionSection)


_GAN_SECTIONS = ("model", "loss", "optim", "ada")
"""Sections that only the alpha-GAN family uses (an ldm config leaves them out)."""


@dataclass
class Config:
    """A complete, resolved configuration: stored in every run folder and checkpoint."""

    name: str = "custom"
    family: Family = "alphagan"
    """``alphagan`` (the paper's models) or ``ldm`` (a 3D latent diffusion model)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    ada: DiscriminatorAugmentConfig = field(default_factory=DiscriminatorAugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    ldm: LDMSection = field(default_factory=LDMSection)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples become lists) suitable for YAML/JSON; only the sections
        of the config's family (an alpha-GAN config reads as it did before ldm existed)."""
        out: dict[str, Any] = _plain(dataclasses.asdict(self))
        unused = ("family", "ldm") if self.family == "alphagan" else _GAN_SECTIONS
        for key in unused:
            del out[key]
        return out

    def validate(self) -> Config:
        """Raise one RatganError listing every problem; return self when valid."""
        problems = _semantic_problems(self)
        if problems:
            raise RatganError("invalid config: " + "; ".join(problems) + ".")
        return self


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _failing(
    section: object,
    prefix: str,
    names: tuple[str, ...],
    fails: Callable[[Any], bool],
    requirement: str,
) -> list[str]:
    """``<prefix>.<name> <requirement> (got <value>)`` for each field whose value ``fails``."""
    return [
        f"{prefix}.{name} {requirement} (got {getattr(section, name)})"
        for name in names
        if fails(getattr(section, name))
    ]


# Tests of a bad value (written as the failing case, so that NaN fails exactly where a
# comparison with it is false).
def _below_one(v: Any) -> bool:
    return not v >= 1


def _negative(v: Any) -> bool:
    return not v >= 0  # NaN too: "v < 0" let it through (an all-NaN EMA of G followed)


def _outside_unit_interval(v: Any) -> bool:
    return not 0 <= v <= 1


def _outside_half_open_unit(v: Any) -> bool:
    return not 0 <= v < 1


def _joint_model_problems(m: ModelConfig) -> list[str]:
    """The options that act on a joint model's tissue channels."""
    p: list[str] = []
    if not m.d_label_scale > 0:  # (also refuses NaN)
        p.append(f"model.d_label_scale must be > 0 (got {m.d_label_scale})")
    elif m.d_label_scale != 1 and m.channels < 2:
        p.append("model.d_label_scale needs label channels (model.channels 4)")
    if not 0 <= m.d_label_dropout < 1:  # (also refuses NaN)
        p.append(f"model.d_label_dropout must be in [0, 1) (got {m.d_label_dropout})")
    elif m.d_label_dropout > 0 and m.channels < 2:
        p.append("model.d_label_dropout needs label channels (model.channels 4)")
    if m.g_hard_labels and m.channels < 2:
        p.append("model.g_hard_labels needs label channels (model.channels 4)")
    return p


def _model_problems(cfg: Config) -> list[str]:
    """Sizes, widths and slopes of the networks."""
    m = cfg.model
    p: list[str] = []
    if m.volume_size < 8 or m.volume_size / 4 != 2**m.n_scales:
        p.append(f"model.volume_size must be 4 * 2**k and at least 8 (got {m.volume_size})")
    elif m.volume_depth is not None and (
        m.volume_depth < 2**m.n_scales or m.volume_depth % 2**m.n_scales
    ):
        p.append(
            f"model.volume_depth must be a positive multiple of {2**m.n_scales} "
            f"(2**k for volume_size {m.volume_size}; got {m.volume_depth})"
        )
    widths = ("channels", "latent_dim", "g_width", "d_width", "e_width", "c_hidden")
    p += _failing(m, "model", widths, _below_one, "must be a positive integer")
    slopes = ("leaky_slope", "g_leaky_slope")
    p += _failing(m, "model", slopes, _outside_half_open_unit, "must be in [0, 1)")
    if len(set(m.spectral_norm)) != len(m.spectral_norm):
        p.append("model.spectral_norm lists a network twice")
    p += _failing(
        m,
        "model",
        ("g_trilinear_blocks", "d_mbstd_group", "g_final_conv"),
        _negative,
        "must be >= 0",
    )
    for option in (
        "g_output_noise_after_tanh",
        "g_output_noise_per_scan",
        "g_output_noise_level_spread",
    ):
        if getattr(m, option) and not m.g_output_noise:
            p.append(f"model.{option} needs model.g_output_noise: true")
    p += _joint_model_problems(m)
    if not m.g_output_noise_gain > 0:  # (also refuses NaN)
        p.append(f"model.g_output_noise_gain must be > 0 (got {m.g_output_noise_gain})")
    if m.d_mbstd_group and cfg.train.batch_size % m.d_mbstd_group:
        p.append(
            f"model.d_mbstd_group ({m.d_mbstd_group}) must divide train.batch_size "
            f"({cfg.train.batch_size})"
        )
    return p


def _loss_problems(cfg: Config) -> list[str]:
    """Loss weights are never negative."""
    weights = ("l1", "mse", "gdl", "gp", "tissue_weight", "rec_blur_sigma")
    p = _failing(cfg.loss, "loss", weights, _negative, "must be >= 0")
    if cfg.loss.rec_blur_sigma >= 0 and not math.isfinite(cfg.loss.rec_blur_sigma):
        p.append(f"loss.rec_blur_sigma must be finite (got {cfg.loss.rec_blur_sigma})")
    if cfg.loss.tissue_weight != 1 and cfg.model.channels < 2:
        p.append("loss.tissue_weight needs label channels (model.channels 4)")
    if cfg.loss.gdl_finish is not None:
        p += _failing(cfg.loss, "loss", ("gdl_finish",), _negative, "must be >= 0")
        p += _failing(cfg.loss, "loss", ("gdl_finish_from",), _below_one, "must be at least 1")
    return p


def _optim_problems(cfg: Config) -> list[str]:
    """Learning rate, Adam betas and weight decay."""
    o = cfg.optim
    p = _failing(o, "optim", ("lr",), lambda v: not v > 0, "must be > 0")
    if not all(0 <= b < 1 for b in o.betas):
        p.append(f"optim.betas must lie in [0, 1) (got {list(o.betas)})")
    p += _failing(o, "optim", ("weight_decay",), _negative, "must be >= 0")
    return p


def _augment_problems(cfg: Config) -> list[str]:
    """Probabilities, the flip axis and the zoom range of the conventional augmentation."""
    a = cfg.augment
    probs = (
        "rotate_prob",
        "flip_prob",
        "intensity_prob",
        "zoom_prob",
        "noise_prob",
        "translate_prob",
    )
    p = _failing(a, "augment", probs, _outside_unit_interval, "must be a probability in [0, 1]")
    p += _failing(a, "augment", ("flip_axis",), lambda v: v not in (0, 1, 2), "must be 0, 1 or 2")
    if not 0 < a.zoom_range[0] <= a.zoom_range[1] < math.inf:
        p.append(
            f"augment.zoom_range must be [low, high] with 0 < low <= high "
            f"(got {list(a.zoom_range)})"
        )
    return p


def augment_range_problems(cfg: Config) -> list[str]:
    """The strengths of the conventional augmentation outside what trains on sensible volumes.

    Checked when a run starts or resumes, not whenever a stored config is read: a run trained
    with such a value can still be generated from and evaluated.
    """
    a = cfg.augment
    # an intensity factor of 1 or more scales some volumes by (1 - f) <= 0: blank or inverted
    # (10, meant as a percentage, blanked 14 of 32 augmented volumes)
    p = _failing(a, "augment", ("intensity_factor",), _outside_half_open_unit, "must be in [0, 1)")
    if not 0 <= a.rotate_range <= math.pi / 2:
        p.append(
            f"augment.rotate_range is in radians and must be in [0, pi/2] (got {a.rotate_range}; "
            "the paper's 3 degrees are 0.052)"
        )
    p += _failing(a, "augment", ("noise_std",), lambda v: not 0 <= v < math.inf, "must be >= 0")
    if not all(0 <= t < math.inf for t in a.translate_range):
        p.append(f"augment.translate_range must be >= 0 voxels (got {list(a.translate_range)})")
    return p


def _data_problems(cfg: Config) -> list[str]:
    """The data's shape, pooling and channels agree with the model."""
    d, m = cfg.data, cfg.model
    p: list[str] = []
    if any(s < 1 for s in d.target_shape):
        p.append(f"data.target_shape must be positive (got {list(d.target_shape)})")
    elif tuple(d.target_shape) != m.volume_shape:
        if m.volume_depth is None:
            p.append(
                f"data.target_shape {list(d.target_shape)} must equal model.volume_size "
                f"{m.volume_size} on every axis"
            )
        else:
            p.append(
                f"data.target_shape {list(d.target_shape)} must equal the model's volume "
                f"{list(m.volume_shape)} (model.volume_size twice, then model.volume_depth)"
            )
    p += _failing(d, "data", ("downsample",), _below_one, "must be a positive integer")
    want_channels = 4 if d.label_channels else 1
    if m.channels != want_channels:
        p.append(
            f"model.channels must be {want_channels} when data.label_channels is "
            f"{str(d.label_channels).lower()} (got {m.channels})"
        )
    return p


def _train_problems(cfg: Config) -> list[str]:
    """Counts, intervals, EMA and evaluation settings of the run."""
    t = cfg.train
    counts = (
        "iterations",
        "batch_size",
        "log_every",
        "sample_every",
        "checkpoint_every",
        "keep_checkpoints",
    )
    p = _failing(t, "train", counts, _below_one, "must be a positive integer")
    ema = ("ema_half_life_images", "ema_rampup", "eval_every")
    p += _failing(t, "train", ema, _negative, "must be >= 0")
    p += _failing(t, "train", ("eval_samples",), lambda v: v < 4, "must be at least 4")
    return p


def _ada_problems(cfg: Config) -> list[str]:
    """Probabilities, intervals and strengths of the discriminator augmentation."""
    ada = cfg.ada
    p = _failing(ada, "ada", ("p", "target", "max_p"), _outside_unit_interval, "must be in [0, 1]")
    counts = ("interval", "speed_images")
    p += _failing(ada, "ada", counts, _below_one, "must be a positive integer")
    strengths = ("translate", "brightness", "contrast")
    p += _failing(ada, "ada", strengths, _negative, "must be >= 0")
    return p


def _batch_norm_problems(cfg: Config) -> list[str]:
    """Batch statistics (the code discriminator's batch norm, the encoder's standardised codes)
    need two codes per batch."""
    if cfg.train.batch_size < 2 and cfg.model.c_norm == "batch":
        return ["train.batch_size must be >= 2 when model.c_norm is batch"]
    if cfg.train.batch_size < 2 and cfg.model.e_standardise:
        return ["train.batch_size must be >= 2 when model.e_standardise is true"]
    if cfg.model.e_whiten and not cfg.model.e_standardise:
        return ["model.e_whiten needs model.e_standardise: true (it whitens standardised codes)"]
    return []


_SECTION_CHECKS: tuple[Callable[[Config], list[str]], ...] = (
    _model_problems,
    _loss_problems,
    _optim_problems,
    _augment_problems,
    _data_problems,
    _train_problems,
    _ada_problems,
    _batch_norm_problems,
)
"""The value checks, in the order their problems are reported."""


def _ldm_data_problems(cfg: Config) -> list[str]:
    """The data's shape suits both stages' downsampling; no label channels."""
    d, ae, un = cfg.data, cfg.ldm.autoencoder, cfg.ldm.diffusion
    p = _failing(d, "data", ("downsample",), _below_one, "must be a positive integer")
    factor = 2 ** max(len(ae.channels) - 1, 0) * 2 ** max(len(un.channels) - 1, 0)
    if any(s < 1 or s % factor for s in d.target_shape):
        p.append(
            f"data.target_shape {list(d.target_shape)} must be positive multiples of {factor} "
            "(the autoencoder's and the diffusion UNet's downsampling together)"
        )
    if d.label_channels:
        p.append("data.label_channels must be false for an ldm run (scans only)")
    return p


def _levels_problems(prefix: str, channels: list[int], groups: int) -> list[str]:
    """Channels per level: at least two levels, each a positive multiple of the norm groups."""
    if len(channels) < 2:
        return [f"{prefix}.channels must list at least two levels (got {channels})"]
    if groups < 1 or any(c < 1 or c % groups for c in channels):
        return [
            f"{prefix}.channels must be positive multiples of {prefix}.norm_num_groups "
            f"{groups} (got {channels})"
        ]
    return []


def _autoencoder_problems(cfg: Config) -> list[str]:
    """Stage 1: sizes, length, learning rate and loss weights."""
    ae, where = cfg.ldm.autoencoder, "ldm.autoencoder"
    p = _levels_problems(where, ae.channels, ae.norm_num_groups)
    counts = ("num_res_blocks", "latent_channels", "iterations", "batch_size")
    p += _failing(ae, where, counts + ("disc_channels", "disc_layers"), _below_one, "must be >= 1")
    p += _failing(ae, where, ("lr",), lambda v: v <= 0, "must be > 0")
    p += _failing(ae, where, ("kl_weight", "adv_weight", "adv_start"), _negative, "must be >= 0")
    if ae.iterations >= cfg.train.iterations:
        p.append(
            f"{where}.iterations must be below train.iterations (got {ae.iterations} and "
            f"{cfg.train.iterations}): the diffusion stage takes the iterations after it"
        )
    return p


def _diffusion_problems(cfg: Config) -> list[str]:
    """Stage 2: the UNet's levels and heads, the noise schedule and the sampling default."""
    un, where = cfg.ldm.diffusion, "ldm.diffusion"
    p = _levels_problems(where, un.channels, un.norm_num_groups)
    if len(un.attention_levels) != len(un.channels):
        p.append(f"{where}.attention_levels must have one entry per level of {where}.channels")
    elif any(
        a and c % un.num_head_channels
        for a, c in zip(un.attention_levels, un.channels, strict=True)
    ):
        p.append(f"{where}.num_head_channels must divide the channels of every attention level")
    counts = ("num_res_blocks", "num_head_channels", "train_timesteps")
    p += _failing(un, where, counts, _below_one, "must be >= 1")
    p += _failing(un, where, ("lr",), lambda v: v <= 0, "must be > 0")
    if not 0 < un.beta_start < un.beta_end < 1:
        p.append(
            f"{where}.beta_start and beta_end must satisfy 0 < start < end < 1 "
            f"(got {un.beta_start} and {un.beta_end})"
        )
    if un.schedule == "cosine" and un.prediction == "epsilon":
        # MONAI clips the cosine schedule's last beta to 0.999 (abar ~ 2e-9 at the last
        # timestep): the x0 implied by a predicted noise multiplies its error by sqrt((1 -
        # abar) / abar), about 600 in the first of 50 steps, and the latents are not clipped.
        p.append(
            f"{where}.schedule cosine needs {where}.prediction v_prediction: its last "
            "timestep keeps almost none of the latent, so an epsilon network's smallest error "
            "(bf16 rounding) swamps the samples"
        )
    if not 1 <= un.steps <= un.train_timesteps:
        p.append(f"{where}.steps must be in [1, {un.train_timesteps}] (got {un.steps})")
    return p


def _ldm_train_problems(cfg: Config) -> list[str]:
    """Options of the GAN loop that an ldm run does not offer."""
    t = cfg.train
    unsupported = ("tensorboard", "channels_last", "compile")
    return [f"train.{k} must be false for an ldm run" for k in unsupported if getattr(t, k)]


_LDM_CHECKS: tuple[Callable[[Config], list[str]], ...] = (
    _augment_problems,
    _ldm_data_problems,
    _train_problems,
    _ldm_train_problems,
    _autoencoder_problems,
    _diffusion_problems,
)
"""The value checks of an ldm config (the GAN's network sections are not used)."""


def _semantic_problems(cfg: Config) -> list[str]:
    """Every value problem of ``cfg`` (types are checked while parsing), one sentence each."""
    checks = _LDM_CHECKS if cfg.family == "ldm" else _SECTION_CHECKS
    return [problem for check in checks for problem in check(cfg)]


def _family_problems(data: dict[str, Any]) -> list[str]:
    """Sections given that the config's family does not use."""
    if not isinstance(data, dict):
        return []
    family = data.get("family", "alphagan")
    if family == "ldm":
        return [
            f"{k} is not used by an ldm config (family: ldm)" for k in _GAN_SECTIONS if k in data
        ]
    if "ldm" in data:
        return ["ldm is only used with family: ldm"]
    return []


# --------------------------------------------------------------------------- parsing


def _accepts_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _accepts_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_SCALARS: tuple[tuple[type, Callable[[Any], bool], str], ...] = (
    (bool, lambda value: isinstance(value, bool), "true or false"),
    (int, _accepts_int, "an integer"),
    (float, _accepts_number, "a number"),
    (str, lambda value: isinstance(value, str), "text"),
)
"""Scalar field types: which values each accepts, and how a problem describes it."""


def _check_literal(value: Any, tp: Any, where: str, problems: list[str]) -> Any:
    """A ``Literal[...]`` field: ``value`` must be one of its choices."""
    choices = typing.get_args(tp)
    if value not in choices:
        problems.append(f"{where} must be one of {', '.join(map(repr, choices))} (got {value!r})")
    return value


def _check_optional(value: Any, tp: Any, where: str, problems: list[str]) -> Any:
    """A union field (``X | None``): None when allowed, else checked as its first other type."""
    args = typing.get_args(tp)
    if value is None and type(None) in args:
        return None
    inner = [a for a in args if a is not type(None)]
    return _check_type(value, inner[0], where, problems)


def _check_sequence(value: Any, tp: Any, where: str, problems: list[str]) -> Any:
    """A ``list[X]``, ``tuple[X, ...]`` or fixed ``tuple[X, Y]`` field, item by item."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if not isinstance(value, (list, tuple)):
        problems.append(f"{where} must be a list (got {value!r})")
        return value
    if origin is tuple and args and args[-1] is not Ellipsis and len(value) != len(args):
        problems.append(f"{where} must have {len(args)} items (got {len(value)})")
        return value
    item_types = args if origin is tuple and Ellipsis not in args else [args[0]] * len(value)
    out = [
        _check_type(v, t, f"{where}[{i}]", problems)
        for i, (v, t) in enumerate(zip(value, item_types, strict=True))
    ]
    return tuple(out) if origin is tuple else out


def _check_scalar(value: Any, tp: Any, where: str, problems: list[str]) -> Any:
    """A bool, int, float or str field (a float field turns an integer into a float)."""
    for scalar, accepts, description in _SCALARS:
        if tp is scalar:
            if not accepts(value):
                problems.append(f"{where} must be {description} (got {value!r})")
                return value
            return float(value) if tp is float else value
    return value


def _check_type(value: Any, tp: Any, where: str, problems: list[str]) -> Any:
    """Coerce ``value`` to annotation ``tp`` or record a problem naming ``where``."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return _check_literal(value, tp, where, problems)
    if origin in (typing.Union, types.UnionType):
        return _check_optional(value, tp, where, problems)
    if origin in (list, tuple):
        return _check_sequence(value, tp, where, problems)
    return _check_scalar(value, tp, where, problems)


def _build(cls: type, data: dict[str, Any], where: str, problems: list[str]) -> Any:
    """Dataclass ``cls`` from ``data``; a problem for each unknown or mistyped field."""
    if not isinstance(data, dict):
        problems.append(f"{where or 'config'} must be a mapping (got {data!r})")
        return cls()
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            problems.append(f"{where + '.' if where else ''}{key} is not a known field")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        path = f"{where}.{f.name}" if where else f.name
        tp = hints[f.name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            kwargs[f.name] = _build(tp, data[f.name], path, problems)
            continue
        before = len(problems)
        value = _check_type(data[f.name], tp, path, problems)
        if len(problems) == before:
            kwargs[f.name] = value
        # else: the field keeps its default, so that the value checks can still run on the rest
    return cls(**kwargs)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def preset_names() -> list[str]:
    """Names of the presets shipped with the package."""
    root = resources.files("ratgan") / "presets"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def _read_yaml(path: Path | Any, label: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise RatganError(f"{label} is not valid YAML: {str(exc).splitlines()[0]}.") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RatganError(f"{label} must hold a mapping of config fields.")
    return data


def _raw(source: str, seen: tuple[str, ...] = (), folder: Path | None = None) -> dict[str, Any]:
    """The merged raw dict of a preset name or YAML path, following ``base:`` chains.

    A relative path is read from ``folder`` (the folder of the YAML file whose ``base:`` names
    it; the presets' folder for a preset's base), else from the working directory; a file
    found there wins over a preset of the same name, as it does for ``--config``.
    """
    path = Path(source) if folder is None else folder / source
    is_file = path.suffix in (".yaml", ".yml") or path.is_file()
    key = str(path.resolve()) if is_file else source
    if key in seen:
        raise RatganError(f"config base chain loops through {source!r}.")
    if is_file:
        if not path.is_file():
            named = "" if folder is None else f" (the base of a config file in {folder})"
            raise RatganError(f"config file {path}{named} does not exist.")
        data = _read_yaml(path, f"config file {path}")
        data.setdefault("name", path.stem)
        folder = path.parent
    elif source in preset_names():
        presets = resources.files("ratgan") / "presets"
        data = _read_yaml(presets / f"{source}.yaml", f"preset {source}")
        folder = Path(str(presets))  # a preset's base is another preset
    else:
        raise RatganError(
            f"config {source!r} is neither a YAML file nor a preset ({', '.join(preset_names())})."
        )
    base = data.pop("base", None)
    if base is not None:
        data = _merge(_raw(str(base), seen + (key,), folder), data)
    return data


def config_from_dict(data: dict[str, Any]) -> Config:
    """Build and validate a Config from a nested dict (unknown or mistyped fields are errors)."""
    problems = _family_problems(data)
    cfg = _build(Config, data, "", problems)
    # Value checks run even after type problems (a mistyped field holds its default); a value
    # problem that names a mistyped field is left out, it would only repeat the type problem.
    # (A problem whose field name starts with another character, e.g. an unknown key "-x",
    # names no field to leave out.)
    mistyped = [m.group(0) for p in problems if (m := re.match(r"[\w.]+", p))]
    problems += [
        p
        for p in _semantic_problems(cfg)
        if not any(re.search(rf"\b{re.escape(f)}\b", p) for f in mistyped)
    ]
    if problems:
        raise RatganError("invalid config: " + "; ".join(problems) + ".")
    return cfg


def load_config(source: str, overrides: dict[str, Any] | None = None) -> Config:
    """Load a preset name or YAML path, apply dotted ``overrides`` ({'train.iterations': 3})."""
    data = _raw(source)
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return config_from_dict(data)


def save_config(cfg: Config, path: Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
