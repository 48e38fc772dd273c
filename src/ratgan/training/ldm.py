"""Training a latent diffusion run (docs/diffusion.md): two stages, one run folder.

Iterations 1 .. ``ldm.autoencoder.iterations`` train MONAI's AutoencoderKL on the scans (L1 +
KL, an optional patch adversarial term); then every training scan is encoded once (mean and
standard deviation of its latent, kept in the checkpoint), the scale that gives the latents
unit variance is fixed (Rombach et al. 2022), and the remaining iterations up to
``train.iterations`` train MONAI's DiffusionModelUNet to predict the noise added to a latent
drawn from each scan's posterior, with an EMA of its weights for sampling.

The run folder, checkpoints (atomic, rotated, ``best.pt``), exact resume, metrics.jsonl, loss
and quality curves and sample montages follow the GAN runs (``ratgan.runs``).  Every
metrics.jsonl line carries ``cpu_seconds``: the CPU time of the training process, summed over
every sitting of a resumed run, so that runs on a shared machine compare by compute.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.inferers import DiffusionInferer
from monai.losses import PatchAdversarialLoss
from tqdm.auto import tqdm

from ratgan.arrays import FloatArray
from ratgan.config import Config
from ratgan.data.augment import BatchAugmenter
from ratgan.data.dataset import Cohort, EndlessBatches, load_cohort
from ratgan.data.transforms import PreprocessInfo, inverse_preprocess
from ratgan.devices import select_device
from ratgan.errors import RatganError
from ratgan.folder_lock import FolderLock
from ratgan.models.ldm import (
    LatentDiffusion,
    build_latent_diffusion,
    build_scheduler,
    build_unet,
    decode,
    initial_noise,
    latent_shape,
    sample_latent_diffusion,
)
from ratgan.runs import run_paths
from ratgan.training import checkpoint as ckpt
from ratgan.training.cpu_clock import CpuClock
from ratgan.training.ema import GeneratorEMA
from ratgan.training.ldm_figures import plot_ldm_loss_curves, plot_ldm_quality_curves
from ratgan.training.run import (
    TrainingDiverged,
    update_best,
    warn_flips_off_left_right,
)
from ratgan.training.run_folder import (
    NewRunGuard,
    load_recorded_cohort,
    no_checkpoint_message,
    prepare_run_dir,
    rewind_run,
    write_new_run,
    write_resumed_config,
)
from ratgan.training.schedule import Due
from ratgan.training.stop import StopRequest, TrainingStopped, stopped_message

VolumeProbe = Callable[[list[FloatArray]], dict[str, float]]
"""Scores scans in the source space (cropped, real intensities) -> metrics by name."""

VolumeProbeFactory = Callable[[Config, Path], VolumeProbe]
"""Builds the probe of a run; the CLI hands in
:func:`ratgan.evaluation.tracking.volume_probe_factory` (training cannot import evaluation)."""

_MONTAGE_SCANS = 4


@dataclass
class LDMTrainResult:
    """What a finished (or resumed-and-finished) latent diffusion run reports."""

    run_dir: Path
    iteration: int
    seconds: float
    """Training seconds, counted on across resumes (as in metrics.jsonl)."""
    cpu_seconds: float
    last_losses: dict[str, float]
    networks: LatentDiffusion


def train_ldm(
    cfg: Config,
    data_source: str | Path | None,
    run_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    probe_factory: VolumeProbeFactory | None = None,
) -> LDMTrainResult:
    """Train (or resume) a latent diffusion run; see the module docstring for what it does."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise RatganError("an ldm run trains in one process; start it without torchrun.")
    run_dir = Path(run_dir)
    device = select_device(cfg.train.device)
    with FolderLock(run_dir, "ratgan train") as lock:
        return _train_ldm(cfg, data_source, run_dir, resume, progress, probe_factory, device, lock)


def _train_ldm(
    cfg: Config,
    data_source: str | Path | None,
    run_dir: Path,
    resume: bool,
    progress: bool,
    probe_factory: VolumeProbeFactory | None,
    device: torch.device,
    lock: FolderLock,
) -> LDMTrainResult:
    """:func:`train_ldm` with the run folder locked by ``lock`` if it exists (else created and
    locked once the new run's data has been read)."""
    guard = None if resume else NewRunGuard(run_dir, lock)  # after the lock: keeps its file
    try:
        cfg = prepare_run_dir(run_dir, cfg, resume, is_main=True)
        if resume:
            cohort = load_recorded_cohort(run_dir, cfg.data, progress=progress)
        elif data_source is None:
            raise RatganError("--data is required to start a new run.")
        else:
            cohort = load_cohort(data_source, cfg.data, progress=progress)
            # as for a GAN run: the folder (config and data record) only once the data is read
            write_new_run(run_dir, cfg, data_source, cohort, lock)
            warn_flips_off_left_right(cfg, cohort.orientations)
        probe = None
        if cfg.train.eval_every:
            if probe_factory is None:
                raise RatganError(
                    "train.eval_every is set but no quality probe was given "
                    "(pass ratgan.evaluation.tracking.volume_probe_factory)."
                )
            probe = probe_factory(cfg, run_dir)
        trainer = LDMTrainer(cfg, cohort, device)
        start = 0
        if resume:
            start = trainer.resume(run_dir)
            write_resumed_config(run_dir, cfg)  # only now that the resume's checks passed
        return trainer.run(run_dir, start, progress, probe)
    except BaseException:
        if guard is not None:  # a new run that failed before its first checkpoint
            guard.discard_if_unfinished()
        raise


class LDMTrainer:
    """The state of a latent diffusion run and its two kinds of training step."""

    def __init__(self, cfg: Config, cohort: Cohort, device: torch.device) -> None:
        t = cfg.train
        self.cfg, self.cohort, self.device = cfg, cohort, device
        self.bf16 = t.precision == "bf16"
        torch.manual_seed(t.seed)  # the networks' initial weights
        self.nets = build_latent_diffusion(cfg)
        for net in self.nets.as_dict().values():
            net.to(device)
        ae = cfg.ldm.autoencoder
        self.optimizers: dict[str, torch.optim.Optimizer] = {
            "autoencoder": torch.optim.Adam(self.nets.autoencoder.parameters(), lr=ae.lr),
            "unet": torch.optim.AdamW(self.nets.unet.parameters(), lr=cfg.ldm.diffusion.lr),
        }
        if self.nets.discriminator is not None:
            self.optimizers["discriminator"] = torch.optim.Adam(
                self.nets.discriminator.parameters(), lr=ae.lr
            )
        self.adv_loss = PatchAdversarialLoss(criterion="least_squares")
        self.stream = EndlessBatches(
            cohort,
            ae.batch_size,
            seed=t.seed,
            device=device,
            augmenter=BatchAugmenter(cfg.augment, seed=t.seed + 1),
        )
        self.rng = torch.Generator(device=device).manual_seed(t.seed + 2)
        self.scheduler = build_scheduler(cfg.ldm.diffusion)
        self.inferer = DiffusionInferer(self.scheduler)
        self.ema = self._build_ema()
        self.latents: torch.Tensor | None = None
        """(N, 2C, x, y, z): each training scan's posterior mean and standard deviation."""
        self.scale = 1.0
        self.latent_stream: EndlessBatches | None = None
        self.best: dict[str, Any] = {}
        self.clock = CpuClock()
        self.elapsed = 0.0
        """Wall seconds of the run's earlier sittings (restored on resume)."""
        self._t0 = time.perf_counter()

    # ------------------------------------------------------------------ state

    def _build_ema(self) -> GeneratorEMA | None:
        t = self.cfg.train
        if t.ema_half_life_images <= 0:
            return None
        average = build_unet(self.cfg).to(self.device).eval()
        return GeneratorEMA(average, self.nets.unet, t.ema_half_life_images, t.ema_rampup)

    @property
    def sampler(self) -> torch.nn.Module:
        """The UNet that sampling uses: the moving average when the run keeps one."""
        return self.ema.average if self.ema is not None else self.nets.unet

    def state(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue exactly."""
        state: dict[str, Any] = {
            "config": self.cfg.to_dict(),
            "networks": {k: v.state_dict() for k, v in self.nets.as_dict().items()},
            "optimizers": {k: v.state_dict() for k, v in self.optimizers.items()},
            "rng": {
                "global": ckpt.capture_rng_state(),
                "train": self.rng.get_state().cpu(),
                "stream": self.stream.state_dict(),
            },
            "cpu_seconds": self.clock(),
            "seconds": round(time.perf_counter() - self._t0, 3),
        }
        if self.ema is not None:
            state["ema"] = {"unet": self.ema.average.state_dict()}
        if self.latents is not None and self.latent_stream is not None:
            state["latents"] = {
                "posterior": self.latents.cpu(),
                "scale": self.scale,
                "stream": self.latent_stream.state_dict(),
            }
        if self.best:
            state["best"] = dict(self.best)
        return state

    def resume(self, run_dir: Path) -> int:
        """Restore the newest checkpoint of ``run_dir``; its iteration (0 when there is none:
        the run starts again and says so).

        An unreadable newer checkpoint (truncated, damaged) is skipped with a message naming it
        and why, as the GAN loop does.  Log lines, sample montages and a best.pt written after
        that checkpoint are dropped.
        """
        # read into host memory; load_state_dict and the explicit moves below place the states
        found = ckpt.newest_readable_checkpoint(run_dir, map_location="cpu")
        if found is None:
            print(no_checkpoint_message(run_dir), file=sys.stderr)
            rewind_run(run_dir, 0)
            return 0
        path, state, skipped = found
        for message in skipped:
            print(f"resume: {message}; resuming from {path.name} instead", file=sys.stderr)
        for key, net in self.nets.as_dict().items():
            net.load_state_dict(state["networks"][key])
        for key, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][key])
        if self.ema is not None:
            self.ema.average.load_state_dict(state["ema"]["unet"])
        ckpt.restore_rng_state(state["rng"]["global"])
        self.rng.set_state(ckpt.rng_state_tensor(state["rng"]["train"]))
        self.stream.load_state_dict(state["rng"]["stream"])
        if "latents" in state:
            lat = state["latents"]
            self._use_latents(lat["posterior"].to(self.device), float(lat["scale"]))
            assert self.latent_stream is not None
            self.latent_stream.load_state_dict(lat["stream"])
        self.best = dict(state.get("best") or {})
        self.clock = CpuClock(float(state.get("cpu_seconds", 0.0)))
        self.elapsed = float(state.get("seconds", 0.0))
        start = int(state["iteration"])
        if rewind_run(run_dir, start):
            self.best = {}  # the record named a best.pt that a later one replaced: start afresh
        return start

    # ------------------------------------------------------------------ steps

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def autoencoder_step(self, it: int) -> dict[str, torch.Tensor]:
        """One step of stage 1: L1 + KL (+ the patch adversarial term) and its critic."""
        ae_cfg = self.cfg.ldm.autoencoder
        ae, disc = self.nets.autoencoder, self.nets.discriminator
        x, _ = next(self.stream)
        with self._autocast():
            mu, sigma = ae.encode(x)
            eps = torch.randn(mu.shape, generator=self.rng, device=self.device)
            rec = ae.decode(mu + eps * sigma)
        rec, mu, sigma = rec.float(), mu.float(), sigma.float()
        l1 = (rec - x).abs().mean()
        kl_map = mu.pow(2) + sigma.pow(2) - torch.log(sigma.pow(2) + 1e-12) - 1
        kl = 0.5 * kl_map.sum(dim=(1, 2, 3, 4)).mean()
        loss = l1 + ae_cfg.kl_weight * kl
        parts = {"ae_l1": l1.detach(), "ae_kl": kl.detach()}
        adversarial = disc is not None and it > ae_cfg.adv_start
        if disc is not None:
            zero = torch.zeros((), device=self.device)
            parts |= {"ae_adv": zero, "d_loss": zero}
        if adversarial:
            assert disc is not None
            with self._autocast():
                fake = disc(rec)[-1]
            g_adv = self.adv_loss(fake.float(), target_is_real=True, for_discriminator=False)
            loss = loss + ae_cfg.adv_weight * g_adv
            parts["ae_adv"] = g_adv.detach()
        self._step("autoencoder", loss)
        if adversarial:
            assert disc is not None
            with self._autocast():
                fake, real = disc(rec.detach())[-1], disc(x)[-1]
            d_loss = 0.5 * (
                self.adv_loss(fake.float(), target_is_real=False, for_discriminator=True)
                + self.adv_loss(real.float(), target_is_real=True, for_discriminator=True)
            )
            self._step("discriminator", d_loss)
            parts["d_loss"] = d_loss.detach()
        return parts

    def _step(self, name: str, loss: torch.Tensor) -> None:
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]  # torch's stub
        opt.step()

    @torch.no_grad()
    def encode_cohort(self) -> None:
        """Stage 1 -> 2: each scan's posterior, and the scale giving the latents unit variance."""
        ae = self.nets.autoencoder.eval()
        ae.requires_grad_(False)
        parts = []
        for start in range(0, len(self.cohort), 8):
            x = self.cohort.images[start : start + 8].to(self.device)
            with self._autocast():
                mu, sigma = ae.encode(x)
            parts.append(torch.cat([mu.float(), sigma.float()], dim=1))
        posterior = torch.cat(parts)
        mu, sigma = posterior.chunk(2, dim=1)
        eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(self.cfg.train.seed))
        scale = 1.0 / float((mu + sigma * eps.to(mu.device)).std())
        self._use_latents(posterior, scale)

    def _use_latents(self, posterior: torch.Tensor, scale: float) -> None:
        self.nets.autoencoder.eval().requires_grad_(False)
        self.latents, self.scale = posterior, scale
        lat_cohort = Cohort(images=posterior, labels=None, entries=self.cohort.entries)
        self.latent_stream = EndlessBatches(
            lat_cohort, self.cfg.train.batch_size, seed=self.cfg.train.seed + 3, device=self.device
        )

    def diffusion_step(self, images_seen: int) -> dict[str, torch.Tensor]:
        """One step of stage 2: the UNet predicts the noise (or v) added to a scaled latent."""
        assert self.latent_stream is not None
        batch, _ = next(self.latent_stream)
        mu, sigma = batch.chunk(2, dim=1)
        eps = torch.randn(mu.shape, generator=self.rng, device=self.device)
        z = (mu + sigma * eps) * self.scale
        noise = torch.randn(z.shape, generator=self.rng, device=self.device)
        t = torch.randint(
            0, self.scheduler.num_train_timesteps, (len(z),), generator=self.rng, device=self.device
        )
        with self._autocast():
            pred = self.inferer(
                inputs=z, diffusion_model=self.nets.unet, noise=noise, timesteps=t
            ).float()
        if self.cfg.ldm.diffusion.prediction == "v_prediction":
            target = self.scheduler.get_velocity(z, noise, t)
        else:
            target = noise
        loss = F.mse_loss(pred, target)
        self._step("unet", loss)
        if self.ema is not None:
            self.ema.update(self.nets.unet, len(z), images_seen)
        return {"diff_mse": loss.detach()}

    # ------------------------------------------------------------------ sampling

    def sample(self, seeds: list[int]) -> FloatArray:
        """Network-space volumes (B, 1, X, Y, Z) from the sampling UNet, one per seed."""
        section = self.cfg.ldm.diffusion
        noise = initial_noise(seeds, latent_shape(self.cfg))
        out = []
        for start in range(0, len(seeds), 8):
            out.append(
                sample_latent_diffusion(
                    self.nets.autoencoder,
                    self.sampler.eval(),
                    build_scheduler(section, section.sampler),
                    noise[start : start + 8],
                    self.scale,
                    section.steps,
                    self.bf16,
                    seeds[start : start + 8],
                )
                .cpu()
                .numpy()
            )
        return np.concatenate(out)

    @torch.no_grad()
    def reconstruct(self, n: int) -> tuple[FloatArray, FloatArray]:
        """(first ``n`` training scans, their reconstructions through the posterior mean)."""
        ae = self.nets.autoencoder
        was = ae.training
        ae.eval()
        x = self.cohort.images[:n].to(self.device)
        try:
            with self._autocast():
                mu = ae.encode(x)[0]
            rec = decode(ae, mu.float(), self.bf16)
        finally:
            ae.train(was)
        return x.cpu().numpy(), rec.cpu().numpy()

    # ------------------------------------------------------------------ loop

    def run(
        self, run_dir: Path, start: int, progress: bool, probe: VolumeProbe | None
    ) -> LDMTrainResult:
        """Iterations ``start + 1 .. train.iterations`` of both stages."""
        t = self.cfg.train
        paths = run_paths(run_dir)
        ae_iters = self.cfg.ldm.autoencoder.iterations
        info = self.cohort.infos[0]
        window: list[dict[str, torch.Tensor]] = []
        last: dict[str, float] = {}
        t0 = self._t0 = time.perf_counter() - self.elapsed  # go on across resumes
        bar = tqdm(total=t.iterations, initial=start, disable=not progress, unit="it", desc="ldm")
        with StopRequest() as stop, bar:
            for it in range(start + 1, t.iterations + 1):
                if it <= ae_iters:
                    parts = self.autoencoder_step(it)
                else:
                    if self.latent_stream is None:
                        self.encode_cohort()
                    seen = (it - ae_iters) * t.batch_size
                    parts = self.diffusion_step(seen)
                window.append(parts)
                bar.update(1)
                due = Due.at(it, t)
                stopping = stop.requested  # read once: a signal during the save waits
                if stopping:
                    due = due.stopping()
                # The stage boundary ends a logging window: one line never mixes both stages.
                if due.log or due.checkpoint or it == ae_iters:
                    last = self._log(paths.metrics, it, window, time.perf_counter() - t0)
                    window = []
                if due.sample:
                    self._montage(paths.sample(it), it, info)
                improved = False
                if due.evaluate and probe is not None:
                    improved = self._evaluate(probe, paths.metrics, it, info)
                if due.checkpoint or improved:
                    self._save(run_dir, it, due.checkpoint, improved)
                if stopping:
                    raise TrainingStopped(stopped_message(stop.name, it, run_dir))
        return LDMTrainResult(
            run_dir, t.iterations, time.perf_counter() - t0, self.clock(), last, self.nets
        )

    def _log(
        self, path: Path, it: int, window: list[dict[str, torch.Tensor]], seconds: float
    ) -> dict[str, float]:
        keys = list(window[0])
        means = torch.stack([torch.stack([w[k] for w in window]) for k in keys]).float().mean(1)
        if not bool(means.isfinite().all()):
            raise TrainingDiverged(
                f"a loss became NaN or Inf between iterations {it - len(window) + 1} and "
                f"{it}; the last good checkpoint is kept in {path.parent / 'checkpoints'}."
            )
        values = dict(zip(keys, means.tolist(), strict=True))
        stage = "autoencoder" if it <= self.cfg.ldm.autoencoder.iterations else "diffusion"
        record = {
            "iteration": it,
            "stage": stage,
            "seconds": round(seconds, 3),
            "cpu_seconds": self.clock(),
            **values,
        }
        _append(path, record)
        return values

    def _montage(self, out_png: Path, it: int, info: PreprocessInfo) -> None:
        """Stage 1: real scans above their reconstructions; stage 2: fixed-noise samples."""
        from ratgan.viz import montage

        out_png.parent.mkdir(parents=True, exist_ok=True)
        if it <= self.cfg.ldm.autoencoder.iterations:
            real, rec = self.reconstruct(min(2, len(self.cohort)))
            rows = [
                [inverse_preprocess(v[0], info)]
                for pair in zip(real, rec, strict=True)
                for v in pair
            ]
            titles = [f"{k} {i}" for i in range(len(real)) for k in ("real", "recon")]
        else:
            seeds = [self.cfg.train.seed + 3 + i for i in range(_MONTAGE_SCANS)]
            rows = [[inverse_preprocess(v[0], info)] for v in self.sample(seeds)]
            titles = [f"sample {i}" for i in range(len(rows))]
        montage(rows, out_png, row_titles=titles, axis=2, n_slices=8)

    def _evaluate(self, probe: VolumeProbe, path: Path, it: int, info: PreprocessInfo) -> bool:
        """Stage 1: the reconstruction floor; stage 2: samples from fixed noise (best.pt)."""
        t0 = time.perf_counter()
        n = self.cfg.train.eval_samples
        if it <= self.cfg.ldm.autoencoder.iterations:
            real, rec = self.reconstruct(min(n, len(self.cohort)))
            metrics = probe([inverse_preprocess(v[0], info) for v in rec])
            metrics["recon_l1"] = float(np.abs(rec - real).mean())
            kind, improved = "reconstruction", False
        else:
            seeds = [self.cfg.train.seed + 1_000_003 + i for i in range(n)]
            metrics = probe([inverse_preprocess(v[0], info) for v in self.sample(seeds)])
            # best.pt by the GAN loop's rule (a tie moves it on, a NaN never takes it)
            name = self.cfg.train.eval_metric
            reference = getattr(probe, "reference", None)
            kind = "quality"
            improved = update_best(self.best, name, float(metrics[name]), it, reference)
        record = {
            "iteration": it,
            "kind": kind,
            **metrics,
            "eval_seconds": round(time.perf_counter() - t0, 3),
            "cpu_seconds": self.clock(),
            "best": improved,
        }
        _append(path, record)
        return improved

    def _save(self, run_dir: Path, it: int, regular: bool, improved: bool) -> None:
        paths = run_paths(run_dir)
        state = self.state()
        if improved:
            ckpt.save_best_checkpoint(run_dir, it, state)
        if regular:
            ckpt.save_checkpoint(run_dir, it, state, keep=self.cfg.train.keep_checkpoints)
            plot_ldm_loss_curves(paths.metrics, paths.loss_curves)
            plot_ldm_quality_curves(paths.metrics, paths.quality_curves)


def _append(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a") as handle:
        handle.write(json.dumps(record) + "\n")
