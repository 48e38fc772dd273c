"""Quality tracked while training: the probe that ``train.eval_every`` runs.

Every ``eval_every`` iterations the trainer hands its sampling generator (the moving average of
G when the run keeps one) to the probe built here.  The probe generates ``train.eval_samples``
scans from fixed codes and noise (the same at every evaluation, so the curve compares like with
like), maps them back to the source grid as ``ratgan generate`` does, prepares them as the
evaluation prepares every set (crop to the source shape, rescale to [0, 1]) and computes, in
the fixed random-convolution feature space of :mod:`ratgan.evaluation.features`, the Fréchet
distance, RBF-MMD² and k-NN precision/recall against the run's own training scans.

Training scans are the reference because they are what the run can see; a held-out set gives
the honest final figure (``ratgan evaluate``).  With fewer scans than the 176 features the
Fréchet value carries a small-sample bias: compare it along one run, not across runs with
different numbers of scans.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ratgan.config import Config
from ratgan.evaluation import features as feat
from ratgan.evaluation.prepare import prepare_volume


def _real_volumes(run_dir: Path, cfg: Config) -> tuple[np.ndarray, list[dict]]:
    from ratgan.data.io import read_scan
    from ratgan.runs import read_run_data

    data = read_run_data(run_dir)
    vols = []
    for entry in data.entries:
        scan = read_scan(entry.image, cfg.data.volume_index)
        vols.append(prepare_volume(scan.data, tuple(scan.data.shape[:3])))
    return np.stack(vols), data.infos


def quality_probe_factory(
    cfg: Config, run_dir: Path
) -> Callable[[torch.nn.Module, torch.device], dict[str, float]]:
    """Build the probe of a run: reads the training scans once, fixes codes and noise."""
    from ratgan.data.transforms import PreprocessInfo, inverse_preprocess

    real, infos = _real_volumes(Path(run_dir), cfg)
    info = PreprocessInfo.from_dict(infos[0])
    extractor = feat.RandomConvFeatures(seed=0)
    real_f = feat.extract(real, extractor, progress=False)
    mu, sd = feat.standardiser(real_f)
    real_f = (real_f - mu) / sd
    sigma = feat.median_bandwidth(real_f)
    n = cfg.train.eval_samples
    gen = torch.Generator().manual_seed(cfg.train.seed + 1_000_003)
    z = torch.randn(n, cfg.model.latent_dim, generator=gen)
    size = cfg.model.volume_size
    noise = torch.randn(n, cfg.model.channels, size, size, size, generator=gen)
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
            for v in out.float().cpu().numpy():
                source = inverse_preprocess(v[0], info)
                vols.append(prepare_volume(source, real.shape[1:]))
        fake_f = (feat.extract(np.stack(vols), extractor, progress=False) - mu) / sd
        precision, recall = feat.precision_recall(real_f, fake_f)
        return {
            "frechet": feat.frechet_distance(real_f, fake_f),
            "rbf_mmd2": feat.rbf_mmd2(real_f, fake_f, sigma),
            "precision": precision,
            "recall": recall,
        }

    return probe
