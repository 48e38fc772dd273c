"""Quality tracked while training: the probe that ``train.eval_every`` runs.

Every ``eval_every`` iterations the trainer hands its sampling generator (the moving average of
G when the run keeps one) to the probe built here.  The probe generates ``train.eval_samples``
scans from fixed codes and noise (the same at every evaluation, so the curve compares like with
like), maps them back to the source grid as ``ratgan generate`` does, prepares them as the
evaluation prepares every set (crop to the source shape, rescale to [0, 1]) and computes, in
the fixed random-convolution feature space of :mod:`ratgan.evaluation.features`, the Fréchet
distance, RBF-MMD², k-NN precision/recall and k-NN density/coverage (extra keys ``density``
and ``coverage``; ``train.eval_metric`` does not choose them) against the run's own training
scans.

Training scans are the reference by default because they are what the run can see;
``train.eval_real`` names held-out real scans to compare against instead (the honest figure,
as ``ratgan evaluate`` gives at the end), in the training scans' space (shape, orientation,
voxel size: they are compared voxel by voxel) and none of them a training scan (the same file,
identical bytes or the same image saved another way are refused).  A latent diffusion run
samples its scans itself and hands them to :func:`volume_probe_factory`'s probe.  With fewer
scans than the 176 features the Fréchet value carries a small-sample bias: compare it along
one run, not across runs with different numbers of scans.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ratgan.config import Config
from ratgan.errors import RatganError
from ratgan.evaluation import features as feat
from ratgan.evaluation.prepare import prepare_volume

if TYPE_CHECKING:
    from ratgan.data.io import Scan
    from ratgan.runs import RunData


def _real_volumes(run_dir: Path, cfg: Config) -> tuple[np.ndarray, list[dict]]:
    """The reference scans (``train.eval_real``, else the run's training scans), prepared,
    and the preprocessing records of the training scans."""
    from ratgan.data.io import list_scans, read_scan
    from ratgan.runs import read_run_data

    data = read_run_data(run_dir)
    images = [entry.image for entry in data.entries]
    if cfg.train.eval_real is not None:
        try:
            images = [str(e.image) for e in list_scans(cfg.train.eval_real)]
        except RatganError as exc:
            raise RatganError(f"train.eval_real: {exc}") from None
    vols = []
    for image in images:
        scan = read_scan(image, cfg.data.volume_index)
        if cfg.train.eval_real is not None:
            _check_eval_real(scan, data)
        vols.append(prepare_volume(scan.data, tuple(scan.data.shape[:3])))
    if len({v.shape for v in vols}) > 1:
        raise RatganError(f"train.eval_real: the scans of {cfg.train.eval_real} differ in shape.")
    stacked = np.stack(vols)
    if cfg.train.eval_real is not None:
        _refuse_training_scans(images, stacked, data, cfg.data.volume_index)
    return stacked, data.infos


def _refuse_training_scans(
    images: list[str], vols: np.ndarray, data: RunData, volume_index: int | None
) -> None:
    """Raise RatganError when a ``train.eval_real`` scan (``images``, prepared as ``vols``) is
    one of the run's training scans: the same file, identical bytes, or the same image saved
    another way (prepared volumes with NCC >= ``DUPLICATE_SIMILARITY``, as ``ratgan evaluate``
    compares its held-out scans).  The held-out reference would then score the generator
    partly on the scans it trains on, and best.pt would be chosen on that score."""
    from ratgan.data.io import read_scan
    from ratgan.digests import shared_files
    from ratgan.evaluation import memorisation as mem

    training = [entry.image for entry in data.entries]
    shared = shared_files(images, training)
    if not shared:  # one training scan in memory at a time: a cohort may be large
        for image in training:
            scan = read_scan(image, volume_index)
            one = prepare_volume(scan.data, tuple(scan.data.shape[:3]))[None]
            shared += [(Path(images[i]), Path(image)) for i, _ in mem.same_images(vols, one)]
    if shared:
        pairs = "; ".join(f"{held} is training scan {train}" for held, train in shared[:3])
        more = f" (and {len(shared) - 3} more)" if len(shared) > 3 else ""
        raise RatganError(
            f"train.eval_real holds {len(shared)} of the run's training scans: {pairs}{more}; "
            "the quality probe's held-out reference must be scans the run never trains on."
        )


def _check_eval_real(scan: Scan, data: RunData) -> None:
    """Raise RatganError unless a ``train.eval_real`` scan lies in the training scans' space
    (shape, orientation, voxel size): the probe compares it voxel by voxel with generated
    scans, which come out in that space."""
    from ratgan.generation.reference import training_space_mismatch

    mismatch = training_space_mismatch(scan, data)
    if mismatch is not None:
        what, clause = mismatch
        raise RatganError(
            f"train.eval_real scan {scan.path} {clause}; the quality probe compares it voxel "
            f"by voxel with scans generated in the training scans' space, so give held-out "
            f"scans of the training {what}."
        )


def reference_digest(volumes: np.ndarray) -> str:
    """SHA-256 naming a reference set by its prepared volumes (as float32), whatever their
    order: the trainer keeps it with the best record, so that a resume that reads other
    reference scans (``train.eval_real`` gained or changed scans) chooses best.pt afresh."""
    each = sorted(
        hashlib.sha256(np.ascontiguousarray(v, dtype=np.float32).tobytes()).hexdigest()
        for v in volumes
    )
    shape = json.dumps(list(np.shape(volumes)[1:]))
    return hashlib.sha256((shape + "".join(each)).encode()).hexdigest()


class _Scorer:
    """Feature-space distances of prepared volumes to the reference set of a run."""

    def __init__(self, cfg: Config, run_dir: Path) -> None:
        real, self.infos = _real_volumes(Path(run_dir), cfg)
        self.reference = reference_digest(real)
        """Which reference scans it scores against (:func:`reference_digest`)."""
        self.shape = real.shape[1:]
        self.extractor = feat.RandomConvFeatures(seed=0)
        real_f = feat.extract(real, self.extractor, progress=False)
        self.mu, self.sd = feat.standardiser(real_f)
        self.real_f = (real_f - self.mu) / self.sd
        self.sigma = feat.median_bandwidth(self.real_f)

    def __call__(self, source_volumes: list[np.ndarray]) -> dict[str, float]:
        """Fréchet distance, RBF-MMD², k-NN precision/recall and density/coverage of
        source-space volumes."""
        vols = np.stack([prepare_volume(v, self.shape) for v in source_volumes])
        fake_f = (feat.extract(vols, self.extractor, progress=False) - self.mu) / self.sd
        precision, recall = feat.precision_recall(self.real_f, fake_f)
        density, coverage = feat.density_coverage(self.real_f, fake_f)
        return {
            "frechet": feat.frechet_distance(self.real_f, fake_f),
            "rbf_mmd2": feat.rbf_mmd2(self.real_f, fake_f, self.sigma),
            "precision": precision,
            "recall": recall,
            "density": density,
            "coverage": coverage,
        }


def volume_probe_factory(
    cfg: Config, run_dir: Path
) -> Callable[[list[np.ndarray]], dict[str, float]]:
    """The probe of a latent diffusion run: it scores scans that the trainer samples and maps
    back to the source grid itself (reads the reference scans once)."""
    return _Scorer(cfg, run_dir)


def quality_probe_factory(
    cfg: Config, run_dir: Path
) -> Callable[[torch.nn.Module, torch.device], dict[str, float]]:
    """Build the probe of a run: reads the reference scans once, fixes codes and noise."""
    from ratgan.data.transforms import PreprocessInfo, inverse_preprocess

    scorer = _Scorer(cfg, run_dir)
    info = PreprocessInfo.from_dict(scorer.infos[0])
    n = cfg.train.eval_samples
    gen = torch.Generator().manual_seed(cfg.train.seed + 1_000_003)
    z = torch.randn(n, cfg.model.latent_dim, generator=gen)
    noise = torch.randn(n, cfg.model.channels, *cfg.model.volume_shape, generator=gen)
    bf16 = cfg.train.precision == "bf16"
    batch = 8

    @torch.no_grad()
    def probe(generator: torch.nn.Module, device: torch.device) -> dict[str, float]:
        fmt = torch.channels_last_3d if cfg.train.channels_last else torch.contiguous_format
        vols = []
        for start in range(0, n, batch):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                out = generator(
                    z[start : start + batch].to(device),
                    noise=noise[start : start + batch].to(device, memory_format=fmt),
                )
            vols += [inverse_preprocess(v[0], info) for v in out.float().cpu().numpy()]
        return scorer(vols)

    return _Probe(probe, scorer.reference)


class _Probe:
    """The probe of a GAN run, with the digest of its reference scans (``reference``)."""

    def __init__(
        self, fn: Callable[[torch.nn.Module, torch.device], dict[str, float]], reference: str
    ) -> None:
        self.fn = fn
        self.reference = reference

    def __call__(self, generator: torch.nn.Module, device: torch.device) -> dict[str, float]:
        """The metrics of ``generator``'s scans (see :func:`quality_probe_factory`)."""
        return self.fn(generator, device)
