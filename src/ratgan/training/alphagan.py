"""One alpha-GAN iteration as three named phases (docs/method.md section 3).

(1) encoder/generator step on a batch, (2) discriminator step on the next batch with x~ from the
just-updated E and G, (3) code-discriminator step on that batch's codes.

Each phase is a small ``nn.Module`` whose registered submodules are exactly the networks it
trains and whose ``forward`` returns ``(loss, parts)``.  That is what DistributedDataParallel
needs: one wrapped forward per phase, every wrapped parameter receiving a gradient, and the
gradient-penalty's double backward happening inside that forward, so its parameter gradients
are all-reduced with the rest.  The critics a phase only reads are held outside its module
tree.  Nothing here synchronises with the host: the losses stay on the device.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.profiler import record_function

from ratgan.config import Config, LossConfig
from ratgan.models import Networks
from ratgan.models.generator import OutputNoise
from ratgan.training import losses
from ratgan.training.disc_augment import DiscriminatorAugment
from ratgan.training.ema import GeneratorEMA


def build_optimizers(nets: Networks, cfg: Config) -> dict[str, torch.optim.Optimizer]:
    """One Adam/AdamW optimiser per network, with the preset's hyper-parameters."""
    o = cfg.optim
    cls = torch.optim.AdamW if o.name == "adamw" else torch.optim.Adam
    beta1, beta2 = o.betas
    # foreach kernels batch the per-parameter updates: the default on CUDA, asked for here so
    # that the CPU gets them too.
    return {
        key: cls(
            _param_groups(net),
            lr=o.lr,
            betas=(beta1, beta2),
            eps=o.eps,
            weight_decay=o.weight_decay,
            foreach=True,
        )
        for key, net in nets.as_dict().items()
    }


def _param_groups(net: nn.Module) -> list[dict[str, Any]]:
    """The optimiser's parameter groups of ``net``: the output-noise parameters of G (a scalar
    slope and offset whose zero is not "no noise") get no weight decay, which would pull the
    noise std towards softplus(0) = 0.69; every other parameter is one group as before."""
    noise_ids = {id(p) for m in net.modules() if isinstance(m, OutputNoise) for p in m.parameters()}
    rest = [p for p in net.parameters() if id(p) not in noise_ids]
    if not noise_ids:
        return [{"params": rest}]
    noise = [p for p in net.parameters() if id(p) in noise_ids]
    return [{"params": rest}, {"params": noise, "weight_decay": 0.0}]


@contextlib.contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """Stop parameter gradients of ``modules`` (critics that a phase reads but does not train)."""
    flags = [[p.requires_grad for p in m.parameters()] for m in modules]
    for m in modules:
        m.requires_grad_(False)
    try:
        yield
    finally:
        for m, fl in zip(modules, flags, strict=True):
            for p, f in zip(m.parameters(), fl, strict=True):
                p.requires_grad_(f)


def compile_with_fallback(module: nn.Module) -> None:
    """Replace ``module.forward`` by a torch.compile'd one; eager again if compiling fails.

    The forward method is compiled in place (not the module wrapped) so that state_dict keys,
    and with them checkpoints, are the same with and without compilation.
    """
    eager = module.forward
    compiled = torch.compile(eager)

    def forward(*args: Any, **kwargs: Any) -> Any:
        try:
            return compiled(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - any compiler failure means: run eagerly
            warnings.warn(
                f"torch.compile failed for {type(module).__name__} "
                f"({type(exc).__name__}); running it eagerly.",
                stacklevel=2,
            )
            module.forward = eager
            return eager(*args, **kwargs)

    module.forward = forward


def _score(net: nn.Module, x: Tensor) -> Tensor:
    return losses.widen(net(x).reshape(-1))


def _scores(net: nn.Module, fuse: bool, *xs: Tensor) -> list[Tensor]:
    """Critic scores of several inputs, in one call when no layer mixes samples."""
    if fuse:
        return list(torch.split(_score(net, torch.cat(xs)), [len(x) for x in xs]))
    return [_score(net, x) for x in xs]


class _Phase(nn.Module):
    """Common settings of the three phases."""

    def __init__(self, cfg: Config, device_type: str) -> None:
        super().__init__()
        self.cfg = cfg
        self.device_type = device_type
        m = cfg.model
        # Running several inputs through a network in one call is the same mathematics only
        # when no layer mixes samples: batch norm does; instance norm and no norm do not.
        self.fuse_g, self.fuse_d, self.fuse_c = (
            m.g_norm != "batch",
            m.d_norm != "batch",
            m.c_norm != "batch",
        )

    def amp(self) -> contextlib.ExitStack:
        """bf16 autocast when the config asks for it, and spectral-normalised weights cached.

        ``parametrize.cached`` computes each W / sigma(W) (one power iteration) once for the
        phase instead of at every critic call; gradients flow through the cached tensor.
        """
        stack = contextlib.ExitStack()
        stack.enter_context(parametrize.cached())
        stack.enter_context(
            torch.autocast(
                self.device_type, dtype=torch.bfloat16, enabled=self.cfg.train.precision == "bf16"
            )
        )
        return stack

    def generate_pair(
        self, generator: nn.Module, z_e: Tensor, z_r: Tensor
    ) -> tuple[Tensor, Tensor]:
        """G(z_e), G(z_r) as the critic sees them (with G's output noise, if any)."""
        if self.fuse_g:
            out = generator(torch.cat([z_e, z_r]))
            return out[: len(z_e)], out[len(z_e) :]
        return generator(z_e), generator(z_r)

    def generate_pair_with_clean(
        self, generator: nn.Module, z_e: Tensor, z_r: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """G(z_e), G(z_r) and the noise-free G(z_e) that the reconstruction losses compare."""
        if self.fuse_g:
            out, clean = generator(torch.cat([z_e, z_r]), return_clean=True)
            return out[: len(z_e)], out[len(z_e) :], clean[: len(z_e)]
        x_rec, x_rec_clean = generator(z_e, return_clean=True)
        return x_rec, generator(z_r), x_rec_clean


def _identity(x: Tensor, rng: torch.Generator | None = None) -> Tensor:
    return x


def label_keep(x: Tensor, dropout: float, rng: torch.Generator | None) -> Tensor | None:
    """Which volumes of the batch ``x`` keep their tissue channels for the critic
    (``model.d_label_dropout``); None, and no random draw, when none can be dropped."""
    if dropout == 0 or x.shape[1] == 1:
        return None
    return torch.rand(len(x), device=x.device, generator=rng) >= dropout


def critic_view(x: Tensor, label_scale: float, keep: Tensor | None = None) -> Tensor:
    """What the critic sees of a (possibly augmented) batch: a joint model's tissue channels
    multiplied by ``model.d_label_scale`` and zeroed where ``keep`` is False; the scan, and
    one-channel batches, as they are."""
    if (label_scale == 1 and keep is None) or x.shape[1] == 1:
        return x
    tissue = x[:, 1:] * label_scale
    if keep is not None:
        tissue = tissue * keep.view(-1, *([1] * (x.dim() - 1))).to(tissue.dtype)
    return torch.cat([x[:, :1], tissue], dim=1)


class EncoderGeneratorPhase(_Phase):
    """Trains E and G: L_GD - E[C(z_e)] + the preset's reconstruction terms (eqs. 1-6)."""

    def __init__(
        self, nets: Networks, cfg: Config, device_type: str, augment: nn.Module | None = None
    ) -> None:
        super().__init__(cfg, device_type)
        self.encoder, self.generator = nets.encoder, nets.generator
        # Read, not trained (and outside the module tree, so DDP does not wrap them).
        self._critics = (nets.discriminator, nets.code_discriminator, augment or _identity)
        self.keep_samples = cfg.optim.critic_reuses_eg_samples
        self.samples: tuple[Tensor, Tensor, Tensor] | None = None
        """With ``optim.critic_reuses_eg_samples``: the last forward's detached (z_e, x_rec,
        x_gen), for the critics' phases."""

    def forward(
        self, x: Tensor, z_r: Tensor, rng: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        d, c, augment = self._critics
        with frozen(d, c), self.amp():
            z_e = self.encoder(x).reshape(len(x), -1)
            x_rec, x_gen, x_rec_clean = self.generate_pair_with_clean(self.generator, z_e, z_r)
            scale = self.cfg.model.d_label_scale
            keep = label_keep(x_rec, self.cfg.model.d_label_dropout, rng)
            d_rec, d_gen = _scores(
                d,
                self.fuse_d,
                critic_view(augment(x_rec, rng), scale, keep),
                critic_view(augment(x_gen, rng), scale, keep),
            )
            c_enc = _score(c, z_e)
        if self.keep_samples:
            self.samples = (z_e.detach(), x_rec.detach(), x_gen.detach())
        return losses.encoder_generator_loss(
            d_rec, d_gen, c_enc, losses.widen(x), losses.widen(x_rec_clean), self.cfg.loss
        )


class DiscriminatorPhase(_Phase):
    """Trains D: E[D(x~_e)] + E[D(x~_r)] - 2 E[D(x)] + lambda (GP(x, x~_e) + GP(x, x~_r))."""

    def __init__(
        self,
        nets: Networks,
        cfg: Config,
        device_type: str,
        augment: DiscriminatorAugment | None = None,
    ) -> None:
        super().__init__(cfg, device_type)
        self.discriminator = nets.discriminator
        self._augment = (augment,)  # outside the module tree: DDP must not broadcast its state

    def forward(
        self, x: Tensor, x_rec: Tensor, x_gen: Tensor, rng: torch.Generator | None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        d = self.discriminator
        (augment,) = self._augment
        if augment is not None:
            x, x_rec, x_gen = augment(x, rng), augment(x_rec, rng), augment(x_gen, rng)
        # Before the penalty's interpolation (its budget), and one drop draw per batch position,
        # so that each interpolate lies between volumes that both have, or both lack, labels.
        scale = self.cfg.model.d_label_scale
        keep = label_keep(x, self.cfg.model.d_label_dropout, rng)
        x, x_rec, x_gen = (critic_view(v, scale, keep) for v in (x, x_rec, x_gen))
        with self.amp():
            d_real, d_rec, d_gen = _scores(d, self.fuse_d, x, x_rec, x_gen)
            if augment is not None:
                augment.observe(d_real, torch.cat([d_rec, d_gen]))
            if self.fuse_d:
                # Both penalties in one pass: a mean over 2B samples, so the sum is twice it.
                gp = 2 * losses.gradient_penalty(
                    d, torch.cat([x, x]), torch.cat([x_rec, x_gen]), rng
                )
            else:
                gp = losses.gradient_penalty(d, x, x_rec, rng) + losses.gradient_penalty(
                    d, x, x_gen, rng
                )
        return losses.discriminator_loss(d_real, d_rec, d_gen, losses.widen(gp), self.cfg.loss)


class CodeDiscriminatorPhase(_Phase):
    """Trains C: E[C(z_e)] - E[C(z_r)] + lambda GP_C."""

    def __init__(self, nets: Networks, cfg: Config, device_type: str) -> None:
        super().__init__(cfg, device_type)
        self.code_discriminator = nets.code_discriminator

    def forward(
        self, z_e: Tensor, z_r: Tensor, rng: torch.Generator | None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        c = self.code_discriminator
        with self.amp():
            c_enc, c_rand = _scores(c, self.fuse_c, z_e, z_r)
            gp = losses.gradient_penalty(c, z_r, z_e, rng)
        return losses.code_discriminator_loss(c_enc, c_rand, losses.widen(gp), self.cfg.loss)


class AlphaGANStep:
    """One training iteration: the three phases with their optimisers.

    ``wrap`` turns each phase module into what runs it (identity in one process,
    DistributedDataParallel under torchrun).
    """

    def __init__(
        self,
        nets: Networks,
        optimizers: dict[str, torch.optim.Optimizer],
        cfg: Config,
        device: torch.device,
        rng: torch.Generator,
        wrap: Callable[[nn.Module], nn.Module] = lambda module: module,
        ema: GeneratorEMA | None = None,
        augment: DiscriminatorAugment | None = None,
    ) -> None:
        self.nets, self.opt, self.cfg, self.device, self.rng = nets, optimizers, cfg, device, rng
        self.ema, self.augment = ema, augment
        self.images_seen = 0
        """Images of the whole job (all ranks) seen so far; drives the EMA's ramp-up."""
        self.world_size = 1
        if cfg.train.compile:
            compile_with_fallback(nets.generator)
            compile_with_fallback(nets.encoder)
        self._eg_phase = EncoderGeneratorPhase(nets, cfg, device.type, augment)
        self.eg = wrap(self._eg_phase)
        self.d = wrap(DiscriminatorPhase(nets, cfg, device.type, augment))
        self.c = wrap(CodeDiscriminatorPhase(nets, cfg, device.type))
        self._helper = _Phase(cfg, device.type)  # shared settings for the no-grad forwards
        self.memory_format = (
            torch.channels_last_3d if cfg.train.channels_last else torch.contiguous_format
        )

    def set_loss(self, loss: LossConfig) -> None:
        """Train the next iterations with these reconstruction weights (``loss.at``: the
        gradient difference loss's finishing phase); the critics' penalty weight is not
        scheduled."""
        if loss != self._eg_phase.cfg.loss:
            self._eg_phase.cfg = dataclasses.replace(self._eg_phase.cfg, loss=loss)

    def _z(self, n: int) -> Tensor:
        return torch.randn(n, self.cfg.model.latent_dim, device=self.device, generator=self.rng)

    def _update(self, keys: tuple[str, ...], total: Tensor) -> None:
        for key in keys:
            self.opt[key].zero_grad(set_to_none=True)
        # torch leaves Tensor.backward unannotated.
        total.backward()  # type: ignore[no-untyped-call]
        for key in keys:
            self.opt[key].step()

    def __call__(self, x1: Tensor, x2: Tensor) -> dict[str, Tensor]:
        """One full iteration on two consecutive batches; returns detached scalar losses.

        Each part runs under a ``record_function`` label ("ratgan.eg", "ratgan.ema",
        "ratgan.d_inputs", "ratgan.d", "ratgan.c"), so a profiler can split an iteration.
        """
        with record_function("ratgan.eg"):
            z_r_eg = self._z(len(x1))
            total, eg_parts = self.eg(x1, z_r_eg, self.rng)
            self._update(("E", "G"), total)
            if self.cfg.optim.double_generator_step:
                self.opt["G"].step()  # the published code steps G twice with the same gradients
        self.images_seen += len(x1) * self.world_size
        if self.ema is not None:
            with record_function("ratgan.ema"):
                self.ema.update(self.nets.generator, len(x1) * self.world_size, self.images_seen)

        if self._eg_phase.samples is not None:
            # optim.critic_reuses_eg_samples: the E/G phase's codes and volumes, detached.
            z_e, x_rec, x_gen = self._eg_phase.samples
            z_e, z_r = losses.widen(z_e), z_r_eg
            self._eg_phase.samples = None
        else:
            # x~ for the discriminator from the just-updated E and G, on the next batch.
            with record_function("ratgan.d_inputs"), torch.no_grad(), self._helper.amp():
                z_e = losses.widen(self.nets.encoder(x2).reshape(len(x2), -1))
                z_r = self._z(len(x2))
                x_rec, x_gen = self._helper.generate_pair(self.nets.generator, z_e, z_r)
        x_rec = losses.widen(x_rec).contiguous(memory_format=self.memory_format)
        x_gen = losses.widen(x_gen).contiguous(memory_format=self.memory_format)
        with record_function("ratgan.d"):
            total, d_parts = self.d(x2, x_rec, x_gen, self.rng)
            self._update(("D",), total)

        with record_function("ratgan.c"):
            total, c_parts = self.c(z_e, z_r, self.rng)
            self._update(("C",), total)

        out = {f"eg_{k}": v for k, v in eg_parts.items()}
        out.update({f"d_{k}": v for k, v in d_parts.items()})
        out.update({f"c_{k}": v for k, v in c_parts.items()})
        if self.augment is not None:
            out["ada_p"] = self.augment.p.detach().clone()
            self.augment.adjust(len(x2))
        return out
