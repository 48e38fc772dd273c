"""The types every stage of the segmentation benchmark shares: the options, their resolved
settings and the benchmark's state.

They sit below ``bench`` (which runs the stages) and the stage modules ``labels``,
``runner`` and ``report`` (which read them), so that none of those imports another to know
these types.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ratgan.devices import select_device
from ratgan.digests import FileDigests
from ratgan.errors import RatganError
from ratgan.segmentation.atlas import AtlasParams
from ratgan.segmentation.data import Box, SegSet
from ratgan.segmentation.plan import TESTS, Split
from ratgan.segmentation.train import TrainSettings
from ratgan.segmentation.unet import PRESETS, UNetConfig

LABEL_SOURCES = ("atlas", "teacher", "joint")
"""Where the synthetic scans' label maps come from (``--labels``)."""

MODES = {
    # narrow U-Net on the brain's bounding box at full resolution, a fixed step budget
    "cpu": {
        "channels": PRESETS["cpu"],
        "downsample": 1,
        "crop": "brain",
        "max_epochs": 1000,
        "max_steps": 400,
        "patience": 20,
        "batch_size": 4,
        "lr": 2e-3,
        "precision": "bf16",
        "seeds": 5,
    },
    # the paper's U-Net on whole full-resolution volumes, the paper's lr and patience
    "full": {
        "channels": PRESETS["full"],
        "downsample": 1,
        "crop": "none",
        "max_epochs": 500,
        "max_steps": 0,
        "patience": 50,
        "batch_size": 4,
        "lr": 5e-4,
        "precision": "bf16",
        "seeds": 2,
    },
}


DEFAULT_SYN_ITERATIONS: tuple[int, ...] = AtlasParams().syn_iterations
"""The atlas labeller's SyN iterations per level."""

LEGACY_OPTIONS: dict[str, Any] = {"syn_iterations": list(DEFAULT_SYN_ITERATIONS), "reference": None}
"""What a benchmark folder written before an option existed was made with."""


@dataclass
class BenchOptions:
    """Everything that defines a benchmark; ``None`` fields take the mode's default."""

    real: str
    synthetic: str
    out: str
    seeds: int | None = None
    """Repetitions of each test (cpu: 5, full: 2)."""
    mode: str = "cpu"
    labels: str = "atlas"
    """``atlas`` (ANTs registration of labelled real training scans), ``teacher`` (a U-Net
    trained on the real training split: circular) or ``joint`` (label maps written by a joint
    model)."""
    atlases: int = 5
    """Atlases per synthetic scan (``atlas`` labels)."""
    syn_iterations: tuple[int, ...] = DEFAULT_SYN_ITERATIONS
    """SyN iterations per level of the atlas registration (shrink factors ..., 4, 2, 1)."""
    workers: int = 2
    """Processes for atlas registration."""
    allow_overlap: bool = False
    """Run the benchmark even if the GAN run was trained on real test scans."""
    tests: list[int] | None = None
    shape: tuple[int, int, int] = (64, 64, 40)
    """Full-resolution shape every scan is centre padded/cropped to."""
    downsample: int | None = None
    crop: str | None = None
    """``brain``: train and predict inside the box holding every real training/validation
    brain (the rest is background); ``none``: whole volumes."""
    channels: tuple[int, ...] | None = None
    max_epochs: int | None = None
    max_steps: int | None = None
    """Cap on optimiser steps per network; 0 for none."""
    patience: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    loss: str = "dice"
    precision: str | None = None
    device: str = "auto"
    split_seed: int = 0
    test_fraction: float = 0.2
    val_fraction: float = 0.15
    gate_margin: float = 0.1
    gate_probe: int = 8
    """Atlas labelling stops when none of the first ``gate_probe`` synthetic scans labelled
    passes the quality gate (0: label every scan regardless)."""
    volume_index: int | None = None
    reference: str | None = None
    progress: bool = True

    def resolved(self) -> BenchSettings:
        """A copy with the mode's defaults filled in; raises RatganError on bad values."""
        self._check_mode_and_labels()
        kw = asdict(self)
        for key, value in MODES[self.mode].items():
            if kw.get(key) is None:
                kw[key] = value
        kw["channels"] = tuple(kw["channels"])
        kw["syn_iterations"] = tuple(int(n) for n in kw["syn_iterations"])
        kw["shape"] = tuple(int(s) for s in kw["shape"])
        out = BenchSettings(**kw)
        out.check()
        return out

    def _check_mode_and_labels(self) -> None:
        """The mode (whose defaults resolving reads) and the source of synthetic labels."""
        if self.mode not in MODES:
            raise RatganError(f"--mode must be one of {', '.join(MODES)} (got {self.mode!r}).")
        if self.labels not in LABEL_SOURCES:
            raise RatganError(
                f"--labels must be one of {', '.join(LABEL_SOURCES)} (got {self.labels!r})."
            )

    def fingerprint(self) -> dict[str, Any]:
        """The options that change results: a rerun into the same folder must match them (the
        contents of the files they name are compared separately, see ``BenchState.data``)."""
        keys = (
            "real",
            "synthetic",
            "mode",
            "labels",
            "atlases",
            "syn_iterations",
            "shape",
            "downsample",
            "crop",
            "channels",
            "max_epochs",
            "max_steps",
            "patience",
            "batch_size",
            "lr",
            "loss",
            "precision",
            "split_seed",
            "test_fraction",
            "val_fraction",
            "gate_margin",
            "volume_index",
        )
        d = asdict(self)
        out = {k: d[k] for k in keys}
        # the kind of device the networks train on (cpu, cuda, mps), not the name asked for:
        # "auto" means another device on another machine, and a resumed benchmark must not pair
        # seeds trained on a GPU with seeds trained on the CPU (their kernels round differently)
        out["device_type"] = select_device(self.device).type
        out["real"] = str(Path(self.real).resolve())
        out["synthetic"] = str(Path(self.synthetic).resolve())
        out["reference"] = str(Path(self.reference).resolve()) if self.reference else None
        return json.loads(json.dumps(out))


@dataclass(kw_only=True)
class BenchSettings(BenchOptions):
    """Resolved :class:`BenchOptions`: the same fields, every mode default filled in."""

    seeds: int
    downsample: int
    crop: str
    channels: tuple[int, ...]
    max_epochs: int
    max_steps: int
    patience: int
    batch_size: int
    lr: float
    precision: str

    def resolved(self) -> BenchSettings:
        """Already resolved: ``self``, checked (so that either class can start a benchmark)."""
        self.check()
        return self

    def check(self) -> None:
        """Raise RatganError on the first value out of range or not among the choices."""
        self._check_mode_and_labels()
        self._check_counts()
        self._check_choices()

    def _check_counts(self) -> None:
        """The numeric options."""
        if self.seeds < 1:
            raise RatganError(f"--seeds must be at least 1 (got {self.seeds}).")
        if self.atlases < 1 or self.workers < 1:
            raise RatganError("--atlases and --workers must be at least 1.")
        if not self.syn_iterations or min(self.syn_iterations) < 0:
            raise RatganError(
                "--syn-iterations takes one count >= 0 per registration level "
                f"(got {list(self.syn_iterations)})."
            )
        if self.downsample < 1 or any(s % self.downsample for s in self.shape):
            raise RatganError(
                f"--downsample {self.downsample} must divide every side of "
                f"--shape {list(self.shape)}."
            )
        for name in ("max_epochs", "patience", "batch_size"):
            if getattr(self, name) < 1:
                raise RatganError(f"--{name.replace('_', '-')} must be at least 1.")

    def _check_choices(self) -> None:
        """The options that name one of a few choices (and the step cap)."""
        if self.crop not in ("brain", "none"):
            raise RatganError(f"--crop must be brain or none (got {self.crop!r}).")
        if self.max_steps < 0:
            raise RatganError("--max-steps must be >= 0 (0: no cap).")
        if self.gate_probe < 0:
            raise RatganError("--gate-probe must be >= 0 (0: no probe).")
        if self.loss not in ("dice", "dice_ce"):
            raise RatganError(f"--loss must be dice or dice_ce (got {self.loss!r}).")
        if self.precision not in ("fp32", "bf16"):
            raise RatganError(f"--precision must be fp32 or bf16 (got {self.precision!r}).")
        # checked here, not only by the plan: the plan is drawn once the synthetic pool has
        # been generated, labelled and gated, minutes or hours of work for a typo
        unknown = sorted(set(self.tests or ()) - {t.number for t in TESTS})
        if unknown:
            raise RatganError(f"--tests: unknown test numbers {unknown}; tests are 1 to 10.")

    def settings(self) -> TrainSettings:
        """Training settings of every network of the benchmark."""
        return TrainSettings(
            max_epochs=self.max_epochs,
            patience=self.patience,
            batch_size=self.batch_size,
            lr=self.lr,
            loss=self.loss,
            precision=self.precision,
            device=self.device,
            max_steps=self.max_steps or None,
        )

    def net(self, box: Box | None = None) -> UNetConfig:
        """The U-Net of every test (built for the working shape: crop, then pooling)."""
        full = [b - a for a, b in box] if box is not None else list(self.shape)
        x, y, z = (s // self.downsample for s in full)
        return UNetConfig(channels=self.channels, input_shape=(x, y, z))


@dataclass
class BenchState:
    """What every stage of a benchmark reads: options, the real set and its split, the
    brain box, the synthetic scans needed, the data's digests, the atlases and the GAN
    overlap check."""

    opt: BenchSettings
    out: Path
    real: SegSet
    split: Split
    box: Box | None
    needed: int
    overlap: dict[str, Any]
    data: dict[str, Any] = field(default_factory=dict)
    """Content digests of the data (``real``, ``synthetic``, ``reference``): a rerun into the
    same folder must match them."""
    digest: FileDigests = field(default_factory=FileDigests)
    """SHA-256 of files, each read once per benchmark call (the data's record, the overlap
    check and the teacher's label cache compare the same files)."""
    atlases: list = field(default_factory=list)
    atlas_params: Any = None
    log_lines: list[str] = field(default_factory=list)

    @property
    def split_names(self) -> dict[str, list[str]]:
        """The split (``train``, ``val``, ``test``) by the real scans' file names."""
        return {k: [self.real.names[i] for i in v] for k, v in self.split.to_dict().items()}

    def log(self, text: str) -> None:
        """Print a progress line (kept for the summary)."""
        self.log_lines.append(text)
        if self.opt.progress:
            from tqdm.auto import tqdm

            tqdm.write(text)
