"""Conventional augmentation of whole batches on their device (docs/method.md section 1).

Per sample and independently, each with its probability: rotation about each axis, flip along
one axis, intensity scaling, zoom, Gaussian noise and translation.  Parameters are drawn on the
host from a seeded numpy Generator (reproducible, resumable through ``state_dict``); the
voxels never leave the device.  Rotation, zoom and translation are folded into one affine
matrix per sample (built with MONAI's ``create_rotate``/``create_scale``/``create_translate``)
and the batch is resampled by one ``affine_grid``/``grid_sample`` call per interpolation mode,
so an augmented sample is interpolated once, and a label map goes through exactly the same
geometry with nearest-neighbour sampling.  (MONAI's Rand* transforms work on one channel-first
sample at a time with their own random state; composing them per sample would interpolate
several times and loop over the batch, hence this batched version built from MONAI's matrix
helpers and torch's resampler.)

Choices where the paper's pipeline (sequential MONAI dictionary transforms) left room:

* Geometry is in voxel units about the volume centre (the augmenter does not know the voxel
  size); the zoom is isotropic, ``z > 1`` enlarges the content.
* Images are resampled trilinearly, except samples whose geometry includes a zoom, which are
  sampled with nearest neighbour as the paper's zoom was.
* Flips are exact index reversals (``torch.flip``), not resampling.
* Intensity scaling multiplies the intensity above the background:
  ``x' = (x + 1) * (1 + f) - 1`` with ``f ~ U(-factor, factor)``, so the background stays -1.
* The field of view outside the volume is filled with -1 (images) and 0 (labels); after noise
  and scaling images are clamped to [-1, 1], the range the generator's tanh can produce.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms.utils import create_rotate, create_scale, create_translate

from ratgan.arrays import BoolArray, FloatArray
from ratgan.config import AugmentConfig

ROTATE, FLIP, INTENSITY, ZOOM, NOISE, TRANSLATE = range(6)
TRANSFORMS = ("rotate", "flip", "intensity", "zoom", "noise", "translate")


@dataclass
class AugmentParams:
    """Parameters drawn for one batch (host-side numpy arrays, one row per sample)."""

    apply: BoolArray
    """(B, 6) bool: rotate, flip, intensity, zoom, noise, translate."""
    angles: FloatArray
    """(B, 3) radians about axes 0, 1, 2."""
    intensity: FloatArray
    """(B,) factor f of ``(x + 1) * (1 + f) - 1``."""
    zoom: FloatArray
    """(B,) isotropic zoom factor."""
    shift: FloatArray
    """(B, 3) translation in voxels."""
    noise_seed: int


class BatchAugmenter:
    """Random conventional augmentation of (B, C, X, Y, Z) batches in [-1, 1], on their device."""

    def __init__(self, cfg: AugmentConfig, seed: int) -> None:
        self.cfg = cfg
        self.rng = np.random.default_rng(seed)

    # ------------------------------------------------------------------ parameters

    def _probabilities(self) -> FloatArray:
        c = self.cfg
        probs = np.array(
            [
                c.rotate_prob,
                c.flip_prob,
                c.intensity_prob,
                c.zoom_prob,
                c.noise_prob,
                c.translate_prob,
            ],
            dtype=np.float64,
        )
        if c.mode == "flip":
            probs = np.where(np.arange(6) == FLIP, probs, 0.0)
        elif c.mode == "none":
            probs = np.zeros(6)
        return probs

    def sample_params(self, batch: int) -> AugmentParams:
        """Draw the parameters of one batch; always consumes the same amount of randomness."""
        c, rng = self.cfg, self.rng
        apply = rng.random((batch, 6)) < self._probabilities()
        angles = rng.uniform(-1.0, 1.0, (batch, 3)) * float(c.rotate_range)
        intensity = rng.uniform(-1.0, 1.0, batch) * float(c.intensity_factor)
        zoom = rng.uniform(float(c.zoom_range[0]), float(c.zoom_range[1]), batch)
        shift = rng.uniform(-1.0, 1.0, (batch, 3)) * np.asarray(c.translate_range, np.float64)
        noise_seed = int(rng.integers(0, 2**62))
        return AugmentParams(apply, angles, intensity, zoom, shift, noise_seed)

    # ------------------------------------------------------------------ geometry

    @staticmethod
    def _theta(params: AugmentParams, rows: list[int], shape: tuple[int, int, int]) -> FloatArray:
        """(len(rows), 3, 4) affine_grid matrices (output -> input, normalised coordinates)."""
        size = np.asarray(shape, dtype=np.float64)
        to_vox = np.diag([*(size / 2.0), 1.0])  # align_corners=False: centred voxel = norm*N/2
        to_norm = np.diag([*(2.0 / size), 1.0])
        reverse = np.eye(4)[[2, 1, 0, 3]]  # grid's x indexes the last tensor axis
        out = []
        for b in rows:
            a = params.apply[b]
            m = np.eye(4)
            if a[TRANSLATE]:
                m = m @ create_translate(3, params.shift[b])
            if a[ROTATE]:
                m = m @ create_rotate(3, params.angles[b])
            if a[ZOOM]:
                m = m @ create_scale(3, [1.0 / params.zoom[b]] * 3)
            out.append((reverse @ to_norm @ m @ to_vox @ reverse)[:3])
        return np.stack(out).astype(np.float32)

    @staticmethod
    def _resample(x: torch.Tensor, theta: torch.Tensor, mode: str, fill: float) -> torch.Tensor:
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        # grid_sample pads with zeros: shift so that the padding value becomes `fill`
        return (
            F.grid_sample(x - fill, grid, mode=mode, padding_mode="zeros", align_corners=False)
            + fill
        )

    # ------------------------------------------------------------------ call

    def __call__(
        self, images: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Augment a batch; ``labels`` (B, 1, X, Y, Z) follow the images' geometry (nearest)."""
        if images.ndim != 5:
            raise ValueError(f"images must be (B, C, X, Y, Z), got {tuple(images.shape)}")
        if labels is not None and (
            labels.ndim != 5
            or labels.shape[0] != images.shape[0]
            or labels.shape[2:] != images.shape[2:]
        ):
            raise ValueError(
                f"labels {tuple(labels.shape)} do not match images {tuple(images.shape)}"
            )
        if self.cfg.mode == "none":
            return images, labels
        batch = images.shape[0]
        params = self.sample_params(batch)
        if not params.apply.any():
            return images, labels
        dev = images.device
        dtype = images.dtype
        x = images.float().clone()
        lab = labels.clone() if labels is not None else None

        flip_rows = np.flatnonzero(params.apply[:, FLIP]).tolist()
        if flip_rows:
            dim = 2 + int(self.cfg.flip_axis)
            x[flip_rows] = x[flip_rows].flip(dim)
            if lab is not None:
                lab[flip_rows] = lab[flip_rows].flip(dim)

        geo = params.apply[:, [ROTATE, ZOOM, TRANSLATE]].any(axis=1)
        sx, sy, sz = (int(s) for s in x.shape[2:])  # images are 5-D (checked above)
        shape = (sx, sy, sz)
        for mode, rows in (
            ("bilinear", np.flatnonzero(geo & ~params.apply[:, ZOOM])),
            ("nearest", np.flatnonzero(geo & params.apply[:, ZOOM])),
        ):
            rows = rows.tolist()
            if not rows:
                continue
            theta = torch.as_tensor(self._theta(params, rows, shape), device=dev)
            x[rows] = self._resample(x[rows], theta, mode, -1.0)
            if lab is not None:
                lab_f = self._resample(lab[rows].float(), theta, "nearest", 0.0)
                lab[rows] = torch.round(lab_f).to(lab.dtype)

        rows = np.flatnonzero(params.apply[:, INTENSITY]).tolist()
        if rows:
            s = torch.as_tensor(1.0 + params.intensity[rows], dtype=torch.float32, device=dev).view(
                -1, 1, 1, 1, 1
            )
            x[rows] = (x[rows] + 1.0) * s - 1.0
        rows = np.flatnonzero(params.apply[:, NOISE]).tolist()
        if rows:
            gen = torch.Generator(device=dev)
            gen.manual_seed(params.noise_seed)
            noise = torch.randn(
                (len(rows), *x.shape[1:]), generator=gen, device=dev, dtype=torch.float32
            )
            x[rows] = x[rows] + noise * float(self.cfg.noise_std)
        return x.clamp_(-1.0, 1.0).to(dtype), lab

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """The random generator's state (for resuming a run)."""
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state saved by :meth:`state_dict`."""
        self.rng.bit_generator.state = state["rng"]
