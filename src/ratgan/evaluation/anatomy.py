"""An anatomy feature space: a small 3D segmentation network trained on the real labelled scans.

The random feature space of ``features`` responds to intensity and texture at four scales; it
scores blurred real scans as completely unlike real ones and cannot tell where tissue is.  As
FID borrows a network trained for another task (classification), this space borrows one trained
to *segment* the real scans (background / GM / WM / CSF, or whatever labels the real set has),
so its features encode which tissue is where.  Nothing is downloaded: the network is trained
here, seeded, on the real set itself, until it segments held-out labelled real scans well
(every tissue's Dice at least ``target_dice``, default 0.8, checked every ``check_every``
steps, at most ``steps``), and cached on disk keyed by the content hash of the volumes and
labels and by the settings, so the cost is paid once per real set.

Network (``AnatomyNet``, plain torch; MONAI's UNets run two instance-normalised convolutions at
full resolution per level, 6-15 s per two-volume training step on a 2-core CPU, so a lighter
net is written here): an encoder of four 3x3x3 convolutions (widths 8, 16, 32, 64 by default,
the last three with stride 2, LeakyReLU 0.1) and a decoder that upsamples the deepest level
three times with skip connections back to full resolution and predicts class logits there,
for a cross-entropy + soft Dice loss.  (Logits at half resolution, upsampled, were cheaper per
step but their WM and CSF Dice grew more slowly: 0.69 / 0.71 after 600 steps on held-out
phantom scans, against 0.70 / 0.73 after 300 with the full-resolution head, the same CPU
time; the thin WM ribbon needs the full-resolution skip.)

Feature vector of a volume (``AnatomyFeatures.features``):
* *what*: the per-channel spatial mean of each of the four encoder levels (8 + 16 + 32 + 64);
* *where*: the predicted probability of every non-background class, average-pooled to a coarse
  grid (``grid``, default 4 x 4 x 3: cells of 16 x 16 x 13 voxels of a 64 x 64 x 40 scan).
Features that hardly vary across the real scans (below ``min_spread`` of their block's median
std, the median taken no lower than 1 % of the block's largest std: tissue maps of cells outside
the head) are dropped when the space is fitted, and the kept
ones are **standardised with the mean and std of those same scans** (the fitting set): the
features leave ``features`` already z-scored.  Re-standardising them with a small reference
subset instead (as the random space is) blows up the features that hardly vary among its few
scans: with a 10-scan reference three random subsets gave Fréchet distances of 109,653,
103,472 and 318 for the same held-out scans, three tissue-map features carrying 99 % of it.

API::

    from ratgan.evaluation.anatomy import fit_anatomy_features, set_distances
    space = fit_anatomy_features(real_volumes, real_labels, seed=0, cache_dir=None)
    f_real = space.features(real_volumes)        # (N, X, Y, Z) in [0, 1] -> (N, F) float64
    f_fake = space.features(fake_volumes)
    set_distances(f_real, f_fake, standardise=False)  # {"fd", "rbf_mmd2", "precision", ...}

``real_volumes``: float (N, X, Y, Z) prepared as the evaluation prepares scans (rescaled to
[0, 1], cropped to the real shape); ``real_labels``: integer (N, X, Y, Z), 0 = background.
Without labels there is no anatomy space: ``ratgan evaluate`` then skips its rows and says so
in the report (a self-supervised objective would learn texture as readily as anatomy, which is
what this space exists to avoid).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ratgan.atomic import atomic_path
from ratgan.errors import RatganError
from ratgan.evaluation import features as feat

CACHE_VERSION = 2
"""Bumped whenever the network, its training or its features change (part of the cache key)."""
BUNDLED_DIR = Path(__file__).with_name("networks")
"""Networks shipped with ratgan, named by their cache key like the cache's files: the one
fitted on the demo's training cohort (built-in phantom, seed 0, subjects 0-63), so that
`ratgan demo` shows the anatomy space without the ~11 minutes of fitting its 15-minute budget
has no room for.  It was fitted by ``fit_anatomy_features`` itself; the key covers the prepared
volumes, labels, seed and settings, so it is found only for exactly that real set, and
``tests/evaluation/test_anatomy_bundled.py`` fails if the cohort, the settings or
``CACHE_VERSION`` change without refitting it."""
MAX_CLASSES = 32


@dataclass(frozen=True)
class AnatomySettings:
    """How the anatomy network is built and trained (all part of the cache key)."""

    widths: tuple[int, int, int, int] = (8, 16, 32, 64)
    steps: int = 4000
    """The most training steps; training stops earlier once ``target_dice`` is reached."""
    batch_size: int = 2
    lr: float = 3e-3
    target_dice: float = 0.8
    """Stop once every tissue class's Dice on the held-out labelled scans reaches this."""
    check_every: int = 100
    """Steps between two measurements of the held-out Dice."""
    validation: float = 0.2
    """Share of the labelled scans held out from training to measure the Dice on (none when
    fewer than 2 would be left to train on: then all ``steps`` are run)."""
    grid: tuple[int, int, int] = (4, 4, 3)
    """Cells of the pooled probability maps along x, y, z (not part of the cache key)."""
    min_spread: float = 0.1
    """Features whose std over the real scans is below this fraction of their block's
    median std are dropped (tissue maps of cells outside the head are always 0; z-scored,
    their noise would dominate every distance)."""
    dice_weight: float = 1.0
    threads: int | None = None
    """torch threads while fitting/extracting (None: leave torch's setting)."""

    def key(self) -> dict:
        """The settings that change the trained network (the cache key)."""
        d = asdict(self)
        for k in ("threads", "grid", "min_spread"):
            d.pop(k)
        return d


class AnatomyNet(nn.Module):
    """Small 3D encoder-decoder segmentation network (see the module docstring)."""

    def __init__(self, n_classes: int, widths: tuple[int, ...] = (8, 16, 32, 64)) -> None:
        super().__init__()
        w0, w1, w2, w3 = widths
        self.enc = nn.ModuleList(
            [
                nn.Conv3d(1, w0, 3, padding=1),
                nn.Conv3d(w0, w1, 3, stride=2, padding=1),
                nn.Conv3d(w1, w2, 3, stride=2, padding=1),
                nn.Conv3d(w2, w3, 3, stride=2, padding=1),
            ]
        )
        self.dec2 = nn.Conv3d(w3 + w2, w2, 3, padding=1)
        self.dec1 = nn.Conv3d(w2 + w1, w1, 3, padding=1)
        self.dec0 = nn.Conv3d(w1 + w0, w0, 3, padding=1)
        self.head = nn.Conv3d(w0, n_classes, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Full-resolution class logits and the four encoder activations of x (B, 1, X, Y, Z)."""
        levels = []
        for conv in self.enc:
            x = F.leaky_relu(conv(x), 0.1)
            levels.append(x)
        e0, e1, e2, e3 = levels
        d = e3
        for conv, skip in ((self.dec2, e2), (self.dec1, e1), (self.dec0, e0)):
            d = F.interpolate(d, size=skip.shape[2:], mode="trilinear", align_corners=False)
            d = F.leaky_relu(conv(torch.cat([d, skip], 1)), 0.1)
        return self.head(d), levels


def _soft_dice_loss(probs: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """1 - mean soft Dice over the non-background classes present in the batch."""
    dims = (0, 2, 3, 4)
    inter = (probs * onehot).sum(dims)[1:]
    denom = (probs + onehot).sum(dims)[1:]
    present = onehot.sum(dims)[1:] > 0
    dice = (2 * inter + 1e-5) / (denom + 1e-5)
    return 1 - dice[present].mean() if present.any() else probs.sum() * 0


def content_key(
    volumes: np.ndarray, labels: np.ndarray, seed: int, settings: AnatomySettings
) -> str:
    """SHA-256 of the training volumes and labels (as float32 / uint8), seed and settings."""
    h = hashlib.sha256()
    vols = np.ascontiguousarray(volumes, dtype=np.float32)
    labs = np.ascontiguousarray(labels, dtype=np.uint8)
    h.update(
        json.dumps(
            {
                "shape": list(vols.shape),
                "seed": int(seed),
                "v": CACHE_VERSION,
                "settings": settings.key(),
            },
            sort_keys=True,
        ).encode()
    )
    h.update(vols.tobytes())
    h.update(labs.tobytes())
    return h.hexdigest()


def default_cache_dir() -> Path:
    """``$RATGAN_CACHE/anatomy``, else ``$XDG_CACHE_HOME/ratgan/anatomy`` or ~/.cache/...."""
    root = os.environ.get("RATGAN_CACHE")
    if root:
        return Path(root) / "anatomy"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "ratgan" / "anatomy"


@dataclass
class AnatomyFeatures:
    """A trained anatomy network and how to turn volumes into feature vectors."""

    net: AnatomyNet
    n_classes: int
    seed: int
    settings: AnatomySettings
    key: str
    fit_seconds: float = 0.0
    cached: bool = False
    source: str = "trained"
    """``trained`` (now), ``cache`` (the on-disk cache) or ``bundled`` (``BUNDLED_DIR``)."""
    history: list[float] = field(default_factory=list)
    """Training loss every 10 steps."""
    train_dice: dict[str, float] = field(default_factory=dict)
    """Dice of the final network on (up to 8 of) its own training scans, per class."""
    val_dice: dict[str, float] = field(default_factory=dict)
    """Dice of the final network on the held-out labelled scans, per class (empty when
    there were too few scans to hold any out)."""
    curve: list[dict] = field(default_factory=list)
    """``{"step", "dice"}`` at every held-out check: the training curve."""
    steps_run: int = 0
    n_validation: int = 0
    keep: np.ndarray | None = None
    """Indices of the raw features kept (those that vary across the real scans)."""
    mu: np.ndarray | None = None
    sd: np.ndarray | None = None
    """Mean and std of the kept features over the real (fitting) scans."""

    @property
    def reached(self) -> bool:
        """Whether every tissue's held-out Dice reached ``settings.target_dice``."""
        vals = [v for v in self.val_dice.values() if not np.isnan(v)]
        return bool(vals) and min(vals) >= self.settings.target_dice

    @property
    def raw_dim(self) -> int:
        """Length of a feature vector before dropping constant features."""
        gx, gy, gz = self.settings.grid
        return sum(self.settings.widths) + (self.n_classes - 1) * gx * gy * gz

    @property
    def dim(self) -> int:
        """Length of a feature vector."""
        return self.raw_dim if self.keep is None else len(self.keep)

    def features(self, volumes: np.ndarray, batch_size: int = 4) -> np.ndarray:
        """Features (N, dim) float64 of volumes (N, X, Y, Z) in [0, 1], standardised with
        the fitting set's mean and std (once the space is fitted)."""
        raw = self.raw_features(volumes, batch_size)
        kept = raw if self.keep is None else raw[:, self.keep]
        if self.mu is None or self.sd is None:
            return kept
        return (kept - self.mu) / self.sd

    def choose_features(self, fitting_volumes: np.ndarray) -> None:
        """Keep the features that vary across the fitting scans (see ``min_spread``) and
        record their mean and std there, by which every set is then standardised."""
        raw = self.raw_features(fitting_volumes)
        self.keep = varying_features(raw.std(axis=0), sum(self.settings.widths), self.settings)
        self.mu, self.sd = feat.standardiser(raw[:, self.keep])

    @torch.no_grad()
    def raw_features(self, volumes: np.ndarray, batch_size: int = 4) -> np.ndarray:
        """All features (N, raw_dim) float64 of volumes (N, X, Y, Z) in [0, 1]."""
        vols = np.asarray(volumes, dtype=np.float32)
        if vols.ndim != 4:
            raise RatganError(
                f"anatomy features need volumes (N, X, Y, Z); got shape {list(vols.shape)}."
            )
        self.net.eval()
        out = []
        with _threads(self.settings.threads):
            for s in range(0, len(vols), batch_size):
                x = torch.from_numpy(vols[s : s + batch_size])[:, None]
                logits, levels = self.net(x)
                means = [lv.mean(dim=(2, 3, 4)) for lv in levels]
                probs = torch.softmax(logits, 1)[:, 1:]
                where = F.adaptive_avg_pool3d(probs, self.settings.grid).flatten(1)
                out.append(torch.cat([*means, where], 1))
        return torch.cat(out).double().numpy() if out else np.zeros((0, self.raw_dim))

    @torch.no_grad()
    def segment(self, volumes: np.ndarray) -> np.ndarray:
        """Predicted label maps (N, X, Y, Z) uint8 of volumes in [0, 1]."""
        self.net.eval()
        out = []
        for v in np.asarray(volumes, dtype=np.float32):
            logits, _ = self.net(torch.from_numpy(v)[None, None])
            out.append(logits.argmax(1)[0].numpy().astype(np.uint8))
        return np.stack(out)

    def describe(self) -> dict:
        """The space's definition and training facts, for reports."""
        return {
            "kind": "anatomy: encoder + coarse tissue maps of a segmentation net trained "
            "on the real labelled scans",
            "widths": list(self.settings.widths),
            "grid": list(self.settings.grid),
            "classes": self.n_classes,
            "dim": self.dim,
            "raw_dim": self.raw_dim,
            "seed": self.seed,
            "steps": self.steps_run,
            "max_steps": self.settings.steps,
            "batch_size": self.settings.batch_size,
            "lr": self.settings.lr,
            "target_dice": self.settings.target_dice,
            "reached_target": self.reached,
            "n_validation": self.n_validation,
            "cache_key": self.key[:16],
            "cached": self.cached,
            "source": self.source,
            "fit_seconds": self.fit_seconds,
            "train_dice": self.train_dice,
            "val_dice": self.val_dice,
            "curve": self.curve,
            "final_loss": self.history[-1] if self.history else None,
            "standardisation": "z-score with the real (fitting) scans' mean and std",
        }


#: The spread floor's median is taken no lower than this share of the block's largest spread.
MEDIAN_FLOOR_OF_MAX = 0.01


def varying_features(sd: np.ndarray, n_encoder: int, settings: AnatomySettings) -> np.ndarray:
    """Indices of the features kept: in each block (the first ``n_encoder`` encoder means,
    then the tissue maps), those whose spread ``sd`` over the fitting scans exceeds
    ``settings.min_spread`` times the block's median spread.  The median is taken no lower than
    ``MEDIAN_FLOOR_OF_MAX`` of the block's largest spread: when most grid cells lie outside the
    head (a field of view much larger than the brain), the median is that of always-empty cells,
    about 0, and would keep features whose spread is rounding noise, which z-scoring then blows
    up to dominate every distance.  On the built-in cohort the median is 3x that floor, so
    nothing changes there."""
    keep = []
    for block in (np.arange(n_encoder), np.arange(n_encoder, len(sd))):
        if len(block):
            spread = sd[block]
            median = max(float(np.median(spread)), MEDIAN_FLOOR_OF_MAX * float(spread.max()))
            keep.append(block[spread > settings.min_spread * median])
    return np.concatenate(keep)


class _threads:
    """Temporarily set torch's thread count (None: no change)."""

    def __init__(self, n: int | None) -> None:
        self.n: int | None = n
        self.old: int | None = None

    def __enter__(self) -> None:
        if self.n:
            self.old = torch.get_num_threads()
            torch.set_num_threads(self.n)

    def __exit__(self, *exc) -> None:
        if self.old:
            torch.set_num_threads(self.old)


def _check(volumes: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    vols = np.asarray(volumes, dtype=np.float32)
    labs = np.asarray(labels)
    if vols.ndim != 4 or labs.shape != vols.shape:
        raise RatganError(
            f"anatomy features need volumes and labels of one shape (N, X, Y, Z); "
            f"got {list(vols.shape)} and {list(labs.shape)}."
        )
    if len(vols) < 2:
        raise RatganError(f"anatomy features need at least 2 labelled real scans; got {len(vols)}.")
    if not np.issubdtype(labs.dtype, np.integer) and not np.all(np.mod(labs, 1) == 0):
        raise RatganError("anatomy labels must be integer label values.")
    lo, hi = int(labs.min()), int(labs.max())
    if lo < 0 or hi >= MAX_CLASSES or hi < 1:
        raise RatganError(
            f"anatomy labels must lie in 0..{MAX_CLASSES - 1} with at least one "
            f"tissue (non-zero) label; got {lo}..{hi}."
        )
    return vols, labs.astype(np.int64), hi + 1


def _dice(pred: np.ndarray, ref: np.ndarray, n_classes: int) -> dict[str, float]:
    out = {}
    for c in range(1, n_classes):
        p, r = pred == c, ref == c
        den = p.sum() + r.sum()
        out[str(c)] = float(2 * (p & r).sum() / den) if den else float("nan")
    return out


def validation_split(n: int, seed: int, share: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the training and held-out labelled scans (seeded): ``round(share * n)``
    held out, none when fewer than 2 would be left to train on."""
    order = np.random.default_rng([seed, 3030]).permutation(n)
    n_val = int(round(share * n))
    if n_val < 1 or n - n_val < 2:
        return np.sort(order), order[:0]
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def fit_anatomy_features(
    real_volumes: np.ndarray,
    real_labels: np.ndarray,
    seed: int = 0,
    settings: AnatomySettings | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = False,
) -> AnatomyFeatures:
    """Train (or load from ``cache_dir``) the anatomy network on labelled real volumes.

    A share of the scans (``settings.validation``) is held out; training stops once every
    tissue's Dice on them reaches ``settings.target_dice`` (or after ``settings.steps``).
    Training is seeded by ``seed`` (weights, split and batch order) and does not touch
    torch's global random state.  The kept features and their standardisation come from all
    the real volumes.  ``cache_dir`` None disables the cache; otherwise the network is stored
    there as ``<content key>.pt`` (written to a temporary file, then renamed).  A network
    with the same key in ``BUNDLED_DIR`` is loaded when the cache has none.
    """
    settings = settings or AnatomySettings()
    vols, labs, n_classes = _check(real_volumes, real_labels)
    key = content_key(vols, labs, seed, settings)
    with torch.random.fork_rng(devices=[]):  # its default init draws from the global stream
        net = AnatomyNet(n_classes, settings.widths)
    path = Path(cache_dir) / f"{key}.pt" if cache_dir is not None else None
    bundled = BUNDLED_DIR / f"{key}.pt"
    found = [(p, name) for p, name in ((path, "cache"), (bundled, "bundled")) if p and p.is_file()]
    if found:
        stored, source = found[0]
        blob = torch.load(stored, map_location="cpu", weights_only=False)
        net.load_state_dict(blob["state"])
        space = AnatomyFeatures(net, n_classes, seed, settings, key, cached=True, source=source)
        for name in ("fit_seconds", "history", "train_dice", "val_dice", "curve"):
            setattr(space, name, blob[name])
        space.steps_run, space.n_validation = blob["steps_run"], blob["n_validation"]
        with _threads(settings.threads):
            space.choose_features(vols)
        return space
    train, val = validation_split(len(vols), seed, settings.validation)
    t0 = time.perf_counter()
    space = AnatomyFeatures(net, n_classes, seed, settings, key, n_validation=len(val))
    with _threads(settings.threads):
        _train(space, vols[train], labs[train], vols[val], labs[val], progress)
    space.fit_seconds = time.perf_counter() - t0
    sub = train[: min(len(train), 8)]
    space.train_dice = _dice(space.segment(vols[sub]), labs[sub], n_classes)
    with _threads(settings.threads):
        space.choose_features(vols)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            torch.save(
                {
                    "state": net.state_dict(),
                    "fit_seconds": space.fit_seconds,
                    "history": space.history,
                    "train_dice": space.train_dice,
                    "val_dice": space.val_dice,
                    "curve": space.curve,
                    "steps_run": space.steps_run,
                    "n_validation": space.n_validation,
                    "settings": settings.key(),
                    "seed": seed,
                },
                tmp,
            )
    return space


def _train(
    space: AnatomyFeatures,
    vols: np.ndarray,
    labs: np.ndarray,
    val_vols: np.ndarray,
    val_labs: np.ndarray,
    progress: bool,
) -> None:
    """Train ``space.net`` on (vols, labs) until every tissue's Dice on the held-out scans
    reaches the target (checked every ``check_every`` steps) or ``steps`` have run; fills
    the space's history, curve, held-out Dice and step count."""
    from tqdm.auto import tqdm

    net, settings, n_classes = space.net, space.settings, space.n_classes
    gen = torch.Generator().manual_seed(space.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(space.seed)
        for m in net.modules():
            if isinstance(m, nn.Conv3d):
                m.reset_parameters()
    # a constant learning rate: the run does not depend on the step cap, so a run that stops
    # at the target is the same whatever the cap (a schedule would tie it to the cap)
    opt = torch.optim.Adam(net.parameters(), lr=settings.lr)
    x_all = torch.from_numpy(vols)[:, None]
    y_all = torch.from_numpy(labs)
    bs = min(settings.batch_size, len(vols))
    order = torch.randperm(len(vols), generator=gen)
    pos = 0
    bar = tqdm(range(settings.steps), desc="anatomy net", disable=not progress, leave=False)
    for step in bar:
        net.train()
        if pos + bs > len(order):
            order, pos = torch.randperm(len(vols), generator=gen), 0
        idx = order[pos : pos + bs]
        pos += bs
        x, y = x_all[idx], y_all[idx]
        logits, _ = net(x)  # full resolution
        loss = F.cross_entropy(logits, y)
        if settings.dice_weight:
            onehot = F.one_hot(y, n_classes).permute(0, 4, 1, 2, 3).float()
            loss = loss + settings.dice_weight * _soft_dice_loss(torch.softmax(logits, 1), onehot)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        space.steps_run = step + 1
        if step % 10 == 0 or step == settings.steps - 1:
            space.history.append(float(loss.detach()))
        last = step == settings.steps - 1
        if len(val_vols) and ((step + 1) % settings.check_every == 0 or last):
            space.val_dice = _dice(space.segment(val_vols), val_labs, n_classes)
            space.curve.append({"step": step + 1, "dice": space.val_dice})
            bar.set_postfix(min_dice=min(space.val_dice.values()))
            if space.reached:
                break
    net.eval()


SET_DISTANCES = ("fd", "rbf_mmd2", "precision", "recall", "density", "coverage")


def set_distances(
    reference: np.ndarray, other: np.ndarray, k: int = 3, standardise: bool = True
) -> dict[str, float]:
    """Fréchet distance, RBF-MMD^2, k-NN precision, recall, density and coverage of ``other``
    against ``reference``.

    Both feature matrices (n, d) are z-scored with the reference's mean and std (unless
    ``standardise`` is False: anatomy features come standardised by their fitting set) and
    the RBF bandwidth is the reference's median pairwise distance, exactly as ``ratgan
    evaluate`` does for each split (``features`` holds the estimators).  Works for either
    feature space.
    """
    if len(reference) < 3 or len(other) < 3:
        raise RatganError("set distances need at least 3 scans per set.")
    mu, sd = feat.standardiser(reference) if standardise else (0.0, 1.0)
    za, zb = (reference - mu) / sd, (other - mu) / sd
    p, r = feat.precision_recall(za, zb, k)
    density, coverage = feat.density_coverage(za, zb, k)
    return {
        "fd": feat.frechet_distance(za, zb),
        "rbf_mmd2": feat.rbf_mmd2(za, zb, feat.median_bandwidth(za)),
        "precision": p,
        "recall": r,
        "density": density,
        "coverage": coverage,
    }
