"""Training of the segmentation U-Net with early stopping on a validation split of real scans.

As in the paper (docs/method.md §6): Adam, lr 5e-4, a multi-class Dice loss, and early stopping
on the validation loss with the best weights restored; the epoch cap and patience are
settings so that a CPU run stays affordable.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from ratgan.atomic import atomic_path
from ratgan.devices import select_device
from ratgan.errors import RatganError
from ratgan.segmentation.metrics import make_loss
from ratgan.segmentation.unet import SegUNet, UNetConfig, build_unet

if TYPE_CHECKING:
    from ratgan.segmentation.data import Box


@dataclass
class TrainSettings:
    """How one segmentation network is trained."""

    max_epochs: int = 500
    patience: int = 50
    """Stop after this many epochs without a lower validation loss."""
    batch_size: int = 4
    lr: float = 5e-4
    loss: str = "dice"
    precision: str = "fp32"
    """``bf16`` runs the network under bfloat16 autocast (fast on AMX/AVX512-BF16 CPUs, GPUs)."""
    device: str = "auto"
    min_epochs: int = 1
    max_steps: int | None = None
    """Cap on optimiser steps (a CPU budget); None: epochs and patience alone decide."""

    def to_dict(self) -> dict:
        """Plain dict for JSON."""
        return asdict(self)


@dataclass
class TrainResult:
    """A trained network (best validation weights) and its history."""

    model: SegUNet
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float = math.inf
    seconds: float = 0.0
    steps: int = 0

    @property
    def epochs(self) -> int:
        """Epochs run."""
        return len(self.history)


def _autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


@torch.no_grad()
def validation_loss(
    model: SegUNet,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable,
    batch_size: int,
    device: torch.device,
    precision: str,
) -> float:
    """Mean loss over the batches of (x, y) in eval mode."""
    model.eval()
    total, n = 0.0, 0
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size].to(device)
        yb = y[start : start + batch_size].to(device)
        with _autocast(device, precision):
            logits = model(xb)
        total += float(loss_fn(logits.float(), yb)) * xb.shape[0]
        n += xb.shape[0]
    return total / max(n, 1)


def train_segmenter(
    x: torch.Tensor,
    y: torch.Tensor,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    net: UNetConfig,
    settings: TrainSettings,
    seed: int = 0,
    augment: Callable | None = None,
    progress: bool = False,
    desc: str = "train",
) -> TrainResult:
    """Train a U-Net on (x, y) and keep the weights with the lowest validation loss.

    ``x``: (N, 1, X, Y, Z) float scans, ``y``: (N, 1, X, Y, Z) int64 labels, on the CPU;
    ``augment(images, labels) -> (images, labels)`` is applied to each training batch.
    """
    from tqdm.auto import tqdm

    device = select_device(settings.device)
    torch.manual_seed(seed)  # weights and dropout
    model = build_unet(net).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr)
    loss_fn = make_loss(settings.loss)
    order = torch.Generator().manual_seed(seed)
    result = TrainResult(model=model)
    best_state = copy.deepcopy(model.state_dict())
    wait = 0
    t0 = time.perf_counter()
    n = x.shape[0]
    steps = 0
    bar = tqdm(
        range(settings.max_epochs), desc=desc, unit="epoch", disable=not progress, leave=False
    )
    for epoch in bar:
        model.train()
        perm = torch.randperm(n, generator=order)
        running, seen = 0.0, 0
        for start in range(0, n, settings.batch_size):
            if settings.max_steps is not None and steps >= settings.max_steps:
                break
            steps += 1
            idx = perm[start : start + settings.batch_size]
            xb, yb = x[idx], y[idx]
            if augment is not None:
                xb, yb = augment(xb, yb)
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            with _autocast(device, settings.precision):
                logits = model(xb)
            loss = loss_fn(logits.float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            running += float(loss.detach()) * len(idx)
            seen += len(idx)
        val = validation_loss(
            model, x_val, y_val, loss_fn, settings.batch_size, device, settings.precision
        )
        result.history.append(
            {
                "epoch": epoch + 1,
                "steps": steps,
                "train_loss": running / max(seen, 1),
                "val_loss": val,
            }
        )
        if val < result.best_val_loss:
            result.best_val_loss, result.best_epoch, wait = val, epoch + 1, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            wait += 1
        bar.set_postfix(
            loss=f"{running / max(seen, 1):.3f}", val=f"{val:.3f}", best=result.best_epoch
        )
        if wait >= settings.patience and epoch + 1 >= settings.min_epochs:
            break
        if settings.max_steps is not None and steps >= settings.max_steps:
            break
    if result.best_epoch == 0:  # no epoch scored a finite validation loss
        raise RatganError(
            f"segmentation training ({desc}): the validation loss was not finite in any of its "
            f"{len(result.history)} epochs (last {result.history[-1]['val_loss']}), so the "
            "network never trained; lower the learning rate or check the scans for extreme values."
        )
    model.load_state_dict(best_state)
    model.eval()
    result.steps = steps
    result.seconds = time.perf_counter() - t0
    return result


@torch.no_grad()
def predict(
    model: SegUNet,
    x: torch.Tensor,
    batch_size: int = 4,
    precision: str = "fp32",
    out_shape: tuple[int, int, int] | None = None,
) -> torch.Tensor:
    """Label maps (N, 1, ...) int64 on the CPU; logits are upsampled (trilinear) to
    ``out_shape`` first when it differs from the input's shape."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size].to(device)
        with _autocast(device, precision):
            logits = model(xb)
        logits = logits.float()
        if out_shape is not None and tuple(logits.shape[2:]) != tuple(out_shape):
            logits = F.interpolate(
                logits, size=tuple(out_shape), mode="trilinear", align_corners=False
            )
        out.append(logits.argmax(1, keepdim=True).cpu())
    return torch.cat(out)


def save_model(path, result: TrainResult, extra: dict | None = None) -> None:
    """Write the network (weights + architecture) atomically."""
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(
            {
                "net": result.model.cfg.to_dict(),
                "state": result.model.state_dict(),
                "history": result.history,
                "best_epoch": result.best_epoch,
                **(extra or {}),
            },
            tmp,
        )


def load_model(path, device: str = "auto") -> tuple[SegUNet, dict]:
    """Rebuild a network saved by :func:`save_model`; returns (model in eval mode, record)."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    fields: dict[str, Any] = {
        k: (tuple(v) if isinstance(v, list) else v) for k, v in state["net"].items()
    }
    cfg = UNetConfig(**fields)
    model = build_unet(cfg)
    model.load_state_dict(state["state"])
    return model.to(select_device(device)).eval(), state


def _spatial_shape(x: torch.Tensor) -> tuple[int, int, int]:
    """(X, Y, Z) of an (N, C, X, Y, Z) batch."""
    _, _, sx, sy, sz = x.shape
    return (int(sx), int(sy), int(sz))


def segment(
    model: SegUNet,
    images: torch.Tensor,
    box: Box | None = None,
    downsample: int = 1,
    precision: str = "fp32",
    batch_size: int = 4,
) -> torch.Tensor:
    """Full-volume label maps (N, 1, X, Y, Z) for full-resolution scans: the network sees the
    ``box`` crop pooled by ``downsample``; its logits are upsampled to the crop and the crop
    is placed in a background volume."""
    from ratgan.segmentation.data import crop, downsample_images, paste

    cropped = crop(images, box)
    pred = predict(
        model,
        downsample_images(cropped, downsample),
        batch_size,
        precision,
        out_shape=_spatial_shape(cropped),
    )
    return paste(pred, box, _spatial_shape(images))
