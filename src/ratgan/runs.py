"""A training run's folder: the one place that knows its layout.

Run folder layout::

    RUN/config.yaml        resolved config (what --resume and generation rebuild from)
    RUN/data.json          the training scans, their content digests and preprocessing
    RUN/metrics.jsonl      one line per logging interval: iteration, time, mean losses
    RUN/loss_curves.png    the loss curves (like the paper's Fig. 8)
    RUN/samples/           montages of generated scans every sample_every iterations (Fig. 9)
    RUN/checkpoints/       ckpt_XXXXXXX.pt: networks, optimisers, iteration, RNG, config, version
    RUN/tensorboard/       TensorBoard event files (only with train.tensorboard)

Training writes a run folder; generation, evaluation and segmentation read it through here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ratgan.atomic import atomic_write_json
from ratgan.config import Config, config_from_dict, save_config
from ratgan.errors import RatganError

CONFIG_FILE = "config.yaml"
DATA_FILE = "data.json"
METRICS_FILE = "metrics.jsonl"
LOSS_CURVES_FILE = "loss_curves.png"
QUALITY_CURVES_FILE = "quality_curves.png"
BEST_CHECKPOINT = "best.pt"
SAMPLES_DIR = "samples"
CHECKPOINT_DIR = "checkpoints"
TENSORBOARD_DIR = "tensorboard"


@dataclass(frozen=True)
class RunPaths:
    """Where each part of the run folder ``root`` lives."""

    root: Path

    @property
    def config(self) -> Path:
        """The resolved config (YAML)."""
        return self.root / CONFIG_FILE

    @property
    def data(self) -> Path:
        """The training scans and their preprocessing (JSON)."""
        return self.root / DATA_FILE

    @property
    def metrics(self) -> Path:
        """The logged losses, one JSON line per logging interval, and the quality lines
        (``"kind": "quality"``) of ``train.eval_every``."""
        return self.root / METRICS_FILE

    @property
    def loss_curves(self) -> Path:
        """The loss-curve figure."""
        return self.root / LOSS_CURVES_FILE

    @property
    def quality_curves(self) -> Path:
        """The feature-space metrics figure of ``train.eval_every``."""
        return self.root / QUALITY_CURVES_FILE

    @property
    def best_checkpoint(self) -> Path:
        """The checkpoint kept by ``train.eval_metric`` (checkpoints/best.pt)."""
        return self.checkpoints / BEST_CHECKPOINT

    @property
    def samples(self) -> Path:
        """The folder of sample montages."""
        return self.root / SAMPLES_DIR

    @property
    def checkpoints(self) -> Path:
        """The folder of checkpoints."""
        return self.root / CHECKPOINT_DIR

    @property
    def tensorboard(self) -> Path:
        """The folder of TensorBoard event files."""
        return self.root / TENSORBOARD_DIR

    def sample(self, iteration: int) -> Path:
        """The sample montage of ``iteration``."""
        return self.samples / f"iter_{iteration:07d}.png"


def run_paths(run_dir: str | Path) -> RunPaths:
    """The layout of the run folder ``run_dir``."""
    return RunPaths(Path(run_dir))


def is_run_folder(path: str | Path) -> bool:
    """Whether ``path`` is a training run folder (a config and a checkpoints folder)."""
    paths = run_paths(path)
    return paths.config.is_file() and paths.checkpoints.is_dir()


@dataclass(frozen=True)
class RunScan:
    """One training scan of a run (absolute paths)."""

    image: str
    label: str | None = None
    orientation: str | None = None
    """Its voxel axes' world directions (e.g. ``RAS``); None in runs written before it was
    recorded.  Generation refuses a reference scan of another orientation."""
    voxel_size: tuple[float, float, float] | None = None
    """Its voxel size in world units (from its affine); None in runs written before it was
    recorded.  Generation refuses a reference scan of another voxel size."""
    sha256: str | None = None
    """The SHA-256 of the image file's bytes when the run started; None in runs written before
    it was recorded.  A resume refuses a scan whose content changed since."""
    label_sha256: str | None = None
    """The same for the label map (None without one, or in older runs)."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of one entry (``orientation``, ``voxel_size`` and the digests only
        where recorded)."""
        out: dict[str, Any] = {"image": self.image, "label": self.label}
        if self.orientation is not None:
            out["orientation"] = self.orientation
        if self.voxel_size is not None:
            out["voxel_size"] = [float(v) for v in self.voxel_size]
        if self.sha256 is not None:
            out["sha256"] = self.sha256
        if self.label_sha256 is not None:
            out["label_sha256"] = self.label_sha256
        return out


@dataclass
class RunData:
    """The data record of a run: the data source, its scans and their preprocessing infos."""

    source: str
    entries: list[RunScan]
    infos: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored in data.json."""
        return {
            "source": self.source,
            "entries": [e.to_dict() for e in self.entries],
            "infos": self.infos,
        }


def write_run_config(run_dir: str | Path, cfg: Config) -> Path:
    """Store the resolved config in a run folder (atomically); returns its path."""
    path = run_paths(run_dir).config
    save_config(cfg, path)
    return path


def read_run_config(run_dir: str | Path) -> Config:
    """The resolved config stored in a run folder."""
    import yaml

    path = run_paths(run_dir).config
    if not path.is_file():
        raise RatganError(f"{run_dir} is not a ratgan run folder (no {CONFIG_FILE}).")
    return config_from_dict(yaml.safe_load(path.read_text()))


def write_run_data(run_dir: str | Path, data: RunData) -> Path:
    """Store the data record in a run folder (atomically); returns its path."""
    return atomic_write_json(run_paths(run_dir).data, data.to_dict())


def _voxel_size(value: Any) -> tuple[float, float, float]:
    """A recorded voxel size as three floats (TypeError/ValueError for anything else)."""
    x, y, z = (float(v) for v in value)
    return (x, y, z)


def _digest(value: Any) -> str | None:
    """A recorded digest as a string (ValueError for anything else), None where absent."""
    if value is not None and not isinstance(value, str):
        raise ValueError(f"a digest must be a string (got {value!r})")
    return value


def read_run_data(run_dir: str | Path) -> RunData:
    """The data record of a run: source, scan entries and their preprocessing infos."""
    path = run_paths(run_dir).data
    if not path.is_file():
        raise RatganError(f"{run_dir} is not a ratgan run folder (no {DATA_FILE}).")
    try:
        raw = json.loads(path.read_text())
        return RunData(
            source=str(raw["source"]),
            entries=[
                RunScan(
                    e["image"],
                    e.get("label"),
                    e.get("orientation"),
                    None if e.get("voxel_size") is None else _voxel_size(e["voxel_size"]),
                    _digest(e.get("sha256")),
                    _digest(e.get("label_sha256")),
                )
                for e in raw["entries"]
            ],
            infos=list(raw.get("infos", [])),
        )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise RatganError(f"{path} is damaged ({type(exc).__name__}: {exc}).") from None
