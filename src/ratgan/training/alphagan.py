"""One alpha-GAN iteration as three named phases (SPEC section 3).

(1) encoder/generator step on a batch, (2) discriminator step on the next batch with x~ from the
just-updated E and G, (3) code-discriminator step on that batch's codes.  The phases return
detached scalar tensors: nothing here synchronises with the host, so the loop can run ahead of
the device and read the numbers only at logging intervals.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from ratgan.config import Config
from ratgan.models import Networks
from ratgan.training import losses


def build_optimizers(nets: Networks, cfg: Config) -> dict[str, torch.optim.Optimizer]:
    """One Adam/AdamW optimiser per network, with the preset's hyper-parameters."""
    o = cfg.optim
    cls = torch.optim.AdamW if o.name == "adamw" else torch.optim.Adam
    extra: dict = {"weight_decay": o.weight_decay}
    out = {}
    for key, net in nets.as_dict().items():
        params = list(net.parameters())
        # foreach kernels batch the per-parameter updates; they are the default on CUDA
        # but must be asked for on the CPU.
        out[key] = cls(params, lr=o.lr, betas=tuple(o.betas), eps=o.eps, foreach=True, **extra)
    return out


@contextlib.contextmanager
def _frozen(*modules: nn.Module) -> Iterator[None]:
    """Stop parameter gradients of ``modules`` (they are inputs-only critics in this phase)."""
    flags = [[p.requires_grad for p in m.parameters()] for m in modules]
    for m in modules:
        m.requires_grad_(False)
    try:
        yield
    finally:
        for m, fl in zip(modules, flags):
            for p, f in zip(m.parameters(), fl):
                p.requires_grad_(f)


def _score(net: nn.Module, x: Tensor) -> Tensor:
    return net(x).reshape(-1).float()


class AlphaGANStep:
    """The alpha-GAN objectives of one preset applied to a set of networks and optimisers."""

    def __init__(self, nets: Networks, optimizers: dict[str, torch.optim.Optimizer], cfg: Config,
                 device: torch.device, rng: torch.Generator) -> None:
        self.nets, self.opt, self.cfg, self.device, self.rng = nets, optimizers, cfg, device, rng
        self.autocast = cfg.train.precision == "bf16"
        m = cfg.model
        # Running two inputs through a network in one call is only the same mathematics when
        # no layer mixes samples: batch norm does, instance norm and no norm do not.
        self._fuse_g = m.g_norm != "batch"
        self._fuse_d = m.d_norm != "batch"
        self._fuse_c = m.c_norm != "batch"
        self.memory_format = (torch.channels_last_3d if cfg.train.channels_last
                              else torch.contiguous_format)

    def _amp(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast)

    def _z(self, n: int) -> Tensor:
        return torch.randn(n, self.cfg.model.latent_dim, device=self.device, generator=self.rng)

    def _generate_pair(self, z_e: Tensor, z_r: Tensor) -> tuple[Tensor, Tensor]:
        g = self.nets.generator
        if self._fuse_g:
            out = g(torch.cat([z_e, z_r]))
            return out[: len(z_e)], out[len(z_e):]
        return g(z_e), g(z_r)

    def _critic_scores(self, *xs: Tensor) -> list[Tensor]:
        d = self.nets.discriminator
        if self._fuse_d:
            scores = _score(d, torch.cat(xs))
            return list(scores.split([len(x) for x in xs]))
        return [_score(d, x) for x in xs]

    def encoder_generator_phase(self, x: Tensor) -> dict[str, Tensor]:
        """Update E and G: L_GD - E[C(z_e)] + the preset's reconstruction terms."""
        n = self.nets
        z_r = self._z(len(x))
        with _frozen(n.discriminator, n.code_discriminator), self._amp():
            z_e = n.encoder(x).reshape(len(x), -1)
            x_rec, x_gen = self._generate_pair(z_e, z_r)
            d_rec, d_gen = self._critic_scores(x_rec, x_gen)
            c_enc = _score(n.code_discriminator, z_e)
        total, parts = losses.encoder_generator_loss(d_rec, d_gen, c_enc, x.float(),
                                                     x_rec.float(), self.cfg.loss)
        self.opt["E"].zero_grad(set_to_none=True)
        self.opt["G"].zero_grad(set_to_none=True)
        total.backward()
        self.opt["E"].step()
        self.opt["G"].step()
        if self.cfg.optim.double_generator_step:
            self.opt["G"].step()  # the published code steps G twice with the same gradients
        return {f"eg_{k}": v.detach() for k, v in parts.items()}

    def discriminator_phase(self, x: Tensor) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """Update D on a new batch; returns its losses and the codes (z_e, z_r) for phase 3."""
        n = self.nets
        with torch.no_grad(), self._amp():
            z_e = n.encoder(x).reshape(len(x), -1).float()
            z_r = self._z(len(x))
            x_rec, x_gen = self._generate_pair(z_e, z_r)
        x_rec = x_rec.float().contiguous(memory_format=self.memory_format)
        x_gen = x_gen.float().contiguous(memory_format=self.memory_format)
        with self._amp():
            d_real, d_rec, d_gen = self._critic_scores(x, x_rec, x_gen)
            critic = n.discriminator
            if self._fuse_d:
                # Both penalties in one pass: mean over 2B samples, so the sum is twice that.
                gp = 2 * losses.gradient_penalty(critic, torch.cat([x, x]),
                                                 torch.cat([x_rec, x_gen]), self.rng)
            else:
                gp = (losses.gradient_penalty(critic, x, x_rec, self.rng)
                      + losses.gradient_penalty(critic, x, x_gen, self.rng))
        total, parts = losses.discriminator_loss(d_real, d_rec, d_gen, gp.float(), self.cfg.loss)
        self.opt["D"].zero_grad(set_to_none=True)
        total.backward()
        self.opt["D"].step()
        return {f"d_{k}": v.detach() for k, v in parts.items()}, z_e, z_r

    def code_discriminator_phase(self, z_e: Tensor, z_r: Tensor) -> dict[str, Tensor]:
        """Update C: E[C(z_e)] - E[C(z_r)] + lambda * GP_C."""
        c = self.nets.code_discriminator
        with self._amp():
            if self._fuse_c:
                c_enc, c_rand = _score(c, torch.cat([z_e, z_r])).split([len(z_e), len(z_r)])
            else:
                c_enc, c_rand = _score(c, z_e), _score(c, z_r)
            gp = losses.gradient_penalty(c, z_r, z_e, self.rng)
        total, parts = losses.code_discriminator_loss(c_enc, c_rand, gp.float(), self.cfg.loss)
        self.opt["C"].zero_grad(set_to_none=True)
        total.backward()
        self.opt["C"].step()
        return {f"c_{k}": v.detach() for k, v in parts.items()}

    def __call__(self, x1: Tensor, x2: Tensor) -> dict[str, Tensor]:
        """One full iteration on two consecutive batches; returns detached scalar losses."""
        out = self.encoder_generator_phase(x1)
        d_parts, z_e, z_r = self.discriminator_phase(x2)
        out.update(d_parts)
        out.update(self.code_discriminator_phase(z_e, z_r))
        return out
