"""The alpha-GAN objectives as pure tensor functions (docs/method.md section 3, paper eqs. 1-6).

Nothing here synchronises with the host (no ``.item()``).  Each objective returns
``(total, parts)``: ``total`` carries the autograd graph; ``parts`` holds the unweighted terms
(and ``total``) detached, for logging only.

Written by hand: MONAI has no WGAN-GP penalty and no 3-D gradient difference loss in this
form (sum reduction, absolute finite differences).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from monai.networks.layers.convutils import gaussian_1d
from monai.networks.layers.simplelayers import separable_filtering
from torch import Tensor

from ratgan.config import LossConfig

_GP_EPS = 1e-15


def widen(t: Tensor) -> Tensor:
    """Half-precision (bf16/fp16) tensors to float32; float32 and float64 unchanged.

    Losses are summed in at least float32 under autocast, without demoting a float64 run.
    """
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


def gradient_penalty(
    critic: Callable[[Tensor], Tensor],
    real: Tensor,
    fake: Tensor,
    generator: torch.Generator | None = None,
) -> Tensor:
    """WGAN-GP penalty mean((sqrt(||grad critic(x_hat)||^2 + 1e-15) - 1)^2).

    x_hat = a * real + (1 - a) * fake with one a ~ U(0, 1) per sample, drawn with
    ``generator`` (which must live on ``real``'s device).  ``real`` and ``fake`` are detached,
    so the penalty's gradient reaches only the critic's parameters; the graph of the input
    gradient is kept (``create_graph=True``).  Works for volumes (B, C, S, S, S) and codes (B, L).
    """
    real = real.detach()
    fake = fake.detach()
    shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    alpha = torch.rand(shape, generator=generator, device=real.device, dtype=real.dtype)
    x_hat = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    scores = critic(x_hat)
    (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    grad = widen(grad)
    sq_norm = grad.flatten(1).pow(2).sum(1)
    return (torch.sqrt(sq_norm + _GP_EPS) - 1).pow(2).mean()


def gradient_difference_loss(real: Tensor, fake: Tensor) -> Tensor:
    """Sum over the three spatial axes of (|d real| - |d fake|)^2, summed over voxels and batch.

    Forward finite differences along the last three axes of (B, C, X, Y, Z) tensors.  The
    gradient flows to ``fake`` (the published code turned this term into a float, so it never
    trained anything).  Computed in float32.
    """
    real = widen(real)
    fake = widen(fake)
    total = real.new_zeros(())
    for axis in (2, 3, 4):
        n = real.shape[axis]
        d_real = real.narrow(axis, 1, n - 1) - real.narrow(axis, 0, n - 1)
        d_fake = fake.narrow(axis, 1, n - 1) - fake.narrow(axis, 0, n - 1)
        total = total + (d_real.abs() - d_fake.abs()).pow(2).sum()
    return total


def gaussian_blur(t: Tensor, sigma: float) -> Tensor:
    """``t`` (B, C, X, Y, Z) blurred by a sampled Gaussian of ``sigma`` voxels along each spatial
    axis, truncated at 4 sigma, zero padding (scipy.ndimage.gaussian_filter's kernel with
    mode="constant"); differentiable.  MONAI's separable filter, with its sampled kernel, in
    ``t``'s precision even under autocast (a bf16 blur would add more error than the
    reconstruction error it measures late in training)."""
    kernel = _gaussian_kernel(float(sigma), t.device, t.dtype)
    with torch.autocast(device_type=t.device.type, enabled=False):
        return separable_filtering(t, [kernel] * 3)


@functools.lru_cache(maxsize=8)
def _gaussian_kernel(sigma: float, device: torch.device, dtype: torch.dtype) -> Tensor:
    """The 1-D kernel of ``gaussian_blur``, built (and copied to the device) once per setting
    rather than twice in every training iteration."""
    kernel = gaussian_1d(torch.tensor(sigma), truncated=4.0, approx="sampled")
    return kernel.to(device=device, dtype=dtype)


def _l1(real: Tensor, rec: Tensor) -> Tensor:
    return F.l1_loss(rec, real)


def _mse(real: Tensor, rec: Tensor) -> Tensor:
    return F.mse_loss(rec, real)


def _tissue_weighted(
    term: Callable[[Tensor, Tensor], Tensor], x: Tensor, x_rec: Tensor, weight: float, mean: bool
) -> Tensor:
    """``term`` of the scan channel plus ``weight`` times it of the tissue channels (divided by
    the weights' sum for a mean); at weight 1, or for one channel, ``term`` of the whole batch
    (the plain mean or sum over channels)."""
    if weight == 1 or x.shape[1] == 1:
        return term(x, x_rec)
    scan = term(x[:, :1], x_rec[:, :1])
    tissue = term(x[:, 1:], x_rec[:, 1:])
    n = x.shape[1] - 1
    if mean:
        return (scan + weight * n * tissue) / (1 + weight * n)
    return scan + weight * tissue


def reconstruction_loss(
    x: Tensor, x_rec: Tensor, loss: LossConfig
) -> tuple[Tensor, dict[str, Tensor]]:
    """loss.l1 * L1 + loss.mse * MSE + loss.gdl * GDL between ``x`` and its reconstruction.

    With ``loss.rec_blur_sigma`` > 0, L1 and MSE compare the two blurred by that Gaussian.

    L1 and MSE are means over all elements; GDL is the sum reduction of
    ``gradient_difference_loss``.  A joint model's tissue channels count ``loss.tissue_weight``
    times the scan channel in each.  Terms with weight 0 are still reported in ``parts`` but
    computed without a graph.
    """
    x, x_rec = widen(x), widen(x_rec)
    w = loss.tissue_weight
    # Blurred once for both terms; blur(x) - blur(x_rec) = blur(x - x_rec), a low-pass error.
    xb, xb_rec = (
        (gaussian_blur(x, loss.rec_blur_sigma), gaussian_blur(x_rec, loss.rec_blur_sigma))
        if loss.rec_blur_sigma > 0
        else (x, x_rec)
    )
    terms: dict[str, tuple[float, Callable[[], Tensor]]] = {
        "l1": (loss.l1, lambda: _tissue_weighted(_l1, xb, xb_rec, w, mean=True)),
        "mse": (loss.mse, lambda: _tissue_weighted(_mse, xb, xb_rec, w, mean=True)),
        "gdl": (
            loss.gdl,
            lambda: _tissue_weighted(gradient_difference_loss, x, x_rec, w, mean=False),
        ),
    }
    total = x_rec.new_zeros((), dtype=torch.float32)
    parts: dict[str, Tensor] = {}
    for name, (weight, fn) in terms.items():
        if weight:
            value = fn()
            total = total + weight * value
        else:
            with torch.no_grad():
                value = fn()
        parts[name] = value.detach()
    parts["total"] = total.detach()
    return total, parts


def encoder_generator_loss(
    d_rec: Tensor, d_gen: Tensor, c_enc: Tensor, x: Tensor, x_rec: Tensor, loss: LossConfig
) -> tuple[Tensor, dict[str, Tensor]]:
    """Loss of E and G (eqs. 1-6): L_GD - mean(C(z_e)) + reconstruction.

    L_GD = -mean(D(G(z_e))) - mean(D(G(z_r))), with ``d_rec`` = D(G(z_e)), ``d_gen`` = D(G(z_r))
    and ``c_enc`` = C(z_e); ``x_rec`` = G(z_e) is compared with the real batch ``x``.
    Parts: ``l_gd``, ``c_enc`` (= mean(C(z_e))), ``l1``, ``mse``, ``gdl``, ``total``.
    """
    l_gd = -widen(d_rec).mean() - widen(d_gen).mean()
    c_mean = widen(c_enc).mean()
    rec, rec_parts = reconstruction_loss(x, x_rec, loss)
    total = l_gd - c_mean + rec
    parts = {
        "l_gd": l_gd.detach(),
        "c_enc": c_mean.detach(),
        "l1": rec_parts["l1"],
        "mse": rec_parts["mse"],
        "gdl": rec_parts["gdl"],
        "total": total.detach(),
    }
    return total, parts


def discriminator_loss(
    d_real: Tensor, d_rec: Tensor, d_gen: Tensor, gp: Tensor, loss: LossConfig
) -> tuple[Tensor, dict[str, Tensor]]:
    """Loss of D: mean(D(G(z_e))) + mean(D(G(z_r))) - 2 mean(D(x)) + loss.gp * gp.

    ``gp`` is GP(real, G(z_e)) + GP(real, G(z_r)), computed by the caller.
    Parts: ``d_real``, ``d_rec``, ``d_gen`` (means), ``gp``, ``total``.
    """
    m_real, m_rec, m_gen = widen(d_real).mean(), widen(d_rec).mean(), widen(d_gen).mean()
    total = m_rec + m_gen - 2 * m_real + loss.gp * widen(gp)
    parts = {
        "d_real": m_real.detach(),
        "d_rec": m_rec.detach(),
        "d_gen": m_gen.detach(),
        "gp": gp.detach(),
        "total": total.detach(),
    }
    return total, parts


def code_discriminator_loss(
    c_enc: Tensor, c_rand: Tensor, gp: Tensor, loss: LossConfig
) -> tuple[Tensor, dict[str, Tensor]]:
    """Loss of C: mean(C(z_e)) - mean(C(z_r)) + loss.gp * gp, with gp = GP_C(z_e, z_r).

    Parts: ``c_enc``, ``c_rand`` (means), ``gp``, ``total``.
    """
    m_enc, m_rand = widen(c_enc).mean(), widen(c_rand).mean()
    total = m_enc - m_rand + loss.gp * widen(gp)
    parts = {
        "c_enc": m_enc.detach(),
        "c_rand": m_rand.detach(),
        "gp": gp.detach(),
        "total": total.detach(),
    }
    return total, parts
