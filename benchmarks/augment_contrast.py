"""Benchmark: how much of real scans' tissue contrast a preset's conventional augmentation keeps.

    python benchmarks/augment_contrast.py --real REAL [--config long] [--draws 20] [--seed 0]

``REAL`` is a folder with ``images/`` and ``labels/`` (true GM/WM/CSF maps, 1/2/3).  The
conventional augmentation (``augment`` of the config: docs/method.md §1) resamples a scan
that it translates or rotates by trilinear interpolation, which dims structures one voxel
thin, and a generator trained on augmented scans is taught that dimmer rendering too (its
reconstruction targets and the critic's real scans are the augmented ones).  This measures
it: each scan preprocessed as training reads it, augmented with its label map (which the
augmenter moves by nearest neighbour, so each tissue is still where the label says), and the
contrasts CSF - GM and GM - WM measured as ``rendering_fidelity.py`` measures a rendering (in
units of the scan's brain standard deviation), as a share of the unaugmented scans':

- ``translate``, ``rotate``, ``zoom``: that transform alone, applied to every scan;
- ``preset``: the config's own probabilities, averaged over ``--draws`` passes over the scans
  (what training sees on average).

Not part of pass/fail (tests/data/test_augment_contrast.py runs it on a small phantom).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark below

from rendering_fidelity import tissue_measures  # noqa: E402

from ratgan.config import AugmentConfig, load_config  # noqa: E402
from ratgan.data.augment import BatchAugmenter  # noqa: E402

CONTRASTS = ("CSF-GM", "GM-WM")
_ALONE = {"translate": "translate_prob", "rotate": "rotate_prob", "zoom": "zoom_prob"}


def _contrasts(images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Mean contrasts of a (B, 1, X, Y, Z) batch with its label maps."""
    rows = [tissue_measures(images[i, 0].numpy(), labels[i, 0].numpy()) for i in range(len(images))]
    return {k: float(np.mean([r[k] for r in rows])) for k in CONTRASTS}


def contrast_shares(
    images: torch.Tensor, labels: torch.Tensor, augment: AugmentConfig, draws: int, seed: int
) -> dict[str, dict[str, float]]:
    """Each contrast's share of the unaugmented value, per transform alone and for ``augment``
    itself (mean over ``draws`` passes)."""
    base = _contrasts(images, labels)
    off = dict.fromkeys(
        ("rotate_prob", "flip_prob", "intensity_prob", "zoom_prob", "noise_prob", "translate_prob"),
        0.0,
    )
    out = {}
    for name, field in _ALONE.items():
        alone = dataclasses.replace(augment, mode="all", **{**off, field: 1.0})
        found = _contrasts(*BatchAugmenter(alone, seed)(images, labels))
        out[name] = {k: found[k] / base[k] for k in CONTRASTS}
    augmenter = BatchAugmenter(augment, seed)
    passes = [_contrasts(*augmenter(images, labels)) for _ in range(draws)]
    out["preset"] = {k: float(np.mean([p[k] for p in passes])) / base[k] for k in CONTRASTS}
    return out


def _load(real: Path, target_shape: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The scans preprocessed as training reads them, with their label maps padded alike."""
    import nibabel as nib

    from ratgan.data.transforms import center_pad_crop, preprocess

    files = sorted((real / "images").glob("*.nii*"))
    if not files:
        raise SystemExit(f"error: {real / 'images'} holds no NIfTI scans.")
    images, labels = [], []
    for f in files:
        lab_file = real / "labels" / f.name
        if not lab_file.is_file():
            raise SystemExit(f"error: {f} has no label map {lab_file}.")
        images.append(preprocess(nib.load(f).get_fdata(), target_shape)[0])
        lab = np.asarray(nib.load(lab_file).dataobj).astype(np.int64)
        labels.append(center_pad_crop(lab, target_shape, fill=0))
    return torch.from_numpy(np.stack(images))[:, None], torch.from_numpy(np.stack(labels))[:, None]


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--real", type=Path, required=True)
    parser.add_argument("--config", default="long", help="preset name or config file")
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    images, labels = _load(args.real, tuple(cfg.data.target_shape))
    shares = contrast_shares(images, labels, cfg.augment, args.draws, args.seed)
    print(f"{len(images)} scans; share of the unaugmented scans' contrast")
    print(f"{'augmentation':<14}" + "".join(f"{k:>9}" for k in CONTRASTS))
    for name, row in shares.items():
        print(f"{name:<14}" + "".join(f"{row[k]:>9.3f}" for k in CONTRASTS))
    return shares


if __name__ == "__main__":
    main()
