"""Labels for synthetic scans from a teacher: a U-Net trained on the real labelled scans.

This replaces the authors' SPM12 step for models that generate scans only.  The teacher sees
the real training split only (validation split for early stopping), never a test scan, so
that no test-scan information reaches the benchmark through the synthetic labels.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from ratgan.errors import RatganError
from ratgan.segmentation.data import Box, SegSet, crop, downsample_images, downsample_labels
from ratgan.segmentation.train import (
    TrainResult,
    TrainSettings,
    load_model,
    save_model,
    train_segmenter,
)
from ratgan.segmentation.unet import SegUNet, UNetConfig


def train_teacher(
    train: SegSet,
    val: SegSet,
    net: UNetConfig,
    settings: TrainSettings,
    downsample: int = 1,
    box: Box | None = None,
    seed: int = 0,
    progress: bool = False,
) -> TrainResult:
    """Train the teacher on full-resolution real scans (cropped to ``box``, pooled by
    ``downsample``)."""

    def prep(s: SegSet) -> tuple[torch.Tensor, torch.Tensor]:
        return (
            downsample_images(crop(s.images, box), downsample),
            downsample_labels(crop(s.label_maps(), box), downsample),
        )

    return train_segmenter(
        *prep(train), *prep(val), net, settings, seed=seed, progress=progress, desc="teacher"
    )


def data_digest(train: SegSet, val: SegSet) -> str:
    """SHA-256 of the names, scans and label maps (as preprocessed) a teacher trains on."""
    h = hashlib.sha256()
    for s in (train, val):
        h.update(json.dumps(list(s.names)).encode())
        for t in (s.images, s.label_maps()):
            h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def teacher_recipe(
    net: UNetConfig,
    settings: TrainSettings,
    downsample: int = 1,
    box: Box | None = None,
    seed: int = 0,
) -> dict:
    """How a teacher is built, trained and applied: its network, training settings (all but
    the device, which only chooses where it runs), input crop, pooling and seed."""
    train = {k: v for k, v in settings.to_dict().items() if k != "device"}
    recipe = {
        "net": net.to_dict(),
        "train": train,
        "downsample": int(downsample),
        "box": None if box is None else [list(b) for b in box],
        "seed": int(seed),
    }
    return json.loads(json.dumps(recipe))


def teacher_key(data: str, recipe: dict) -> str:
    """SHA-256 of what makes a teacher's label maps: its ``data`` (:func:`data_digest` of its
    training and validation sets) and its :func:`teacher_recipe`."""
    text = json.dumps({"data": data, "recipe": recipe}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def cached_teacher(
    path: Path,
    train: SegSet,
    val: SegSet,
    net: UNetConfig,
    settings: TrainSettings,
    downsample: int = 1,
    box: Box | None = None,
    seed: int = 0,
    progress: bool = False,
    data: str | None = None,
) -> SegUNet:
    """The teacher saved at ``path``, trained and saved first when it is not there; raises
    RatganError when the saved one was trained on other scans or label maps (a teacher saved
    before the digest was recorded is checked by the scans' names) or by another
    :func:`teacher_recipe` (not checked for a teacher saved before the recipe was recorded).
    ``data`` is :func:`data_digest` of ``train`` and ``val`` when the caller has it already
    (it hashes every scan and label map), else it is computed here."""
    path = Path(path)
    digest = data if data is not None else data_digest(train, val)
    recipe = teacher_recipe(net, settings, downsample, box, seed)
    if path.is_file():
        model, record = load_model(path, settings.device)
        saved = record.get("data")
        same = (
            saved == digest
            if saved
            else (record.get("train"), record.get("val")) == (list(train.names), list(val.names))
        )
        if not same:
            raise RatganError(
                f"teacher {path} was trained on other real scans or label maps than the "
                "training and validation split of --real now holds; use a new --out."
            )
        if record.get("recipe", recipe) != recipe:
            raise RatganError(
                f"teacher {path} was made with other settings (network, training options, "
                "crop, downsampling or seed) than this benchmark's; use a new --out or the "
                "same options."
            )
        return model
    result = train_teacher(train, val, net, settings, downsample, box, seed, progress)
    save_model(
        path,
        result,
        {
            "data": digest,
            "recipe": recipe,
            "train": train.names,
            "val": val.names,
        },
    )
    return result.model


def saved_box(record: dict) -> Box | None:
    """The crop box a teacher saved by :func:`cached_teacher` was trained and is applied in,
    from its ``record`` (what :func:`~ratgan.segmentation.train.load_model` returns): its
    recipe's, or for a teacher saved before the recipe was recorded, its ``box``."""
    recipe = record.get("recipe")
    box = recipe.get("box") if isinstance(recipe, dict) else record.get("box")
    if box is None:
        return None
    (a, b), (c, d), (e, f) = box
    return ((int(a), int(b)), (int(c), int(d)), (int(e), int(f)))


def saved_downsample(record: dict) -> int:
    """The pooling factor a teacher saved by :func:`cached_teacher` was trained with and must
    be applied with (its recipe's; 1 for a teacher saved before the recipe was recorded)."""
    recipe = record.get("recipe")
    return int(recipe.get("downsample", 1)) if isinstance(recipe, dict) else 1
