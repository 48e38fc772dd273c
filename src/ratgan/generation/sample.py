"""Sampling a trained run and exporting NIfTI scans in a real scan's space (docs/method.md §4).

z ~ N(0, I) -> G -> crop to the source shape -> rescale from [-1, 1] to the source intensity
range -> NIfTI with the header and affine of a real reference scan, so that a synthetic file
carries the same metadata as a real one.  Each scan's code is drawn from its own seed, derived
from (seed, index), so any single scan can be regenerated from the manifest.
"""

from __future__ import annotations

import functools
import logging
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ratgan.config import Config
from ratgan.devices import select_device
from ratgan.errors import RatganError
from ratgan.folder_lock import FolderLock
from ratgan.generation.code_density import DEFAULT_KDE_WIDTH, kde_width_for
from ratgan.generation.output import OutputFolder
from ratgan.generation.reference import check_reference
from ratgan.models import Generator
from ratgan.runs import CHECKPOINT_DIR, RunData, read_run_config, read_run_data, run_paths
from ratgan.seeds import derived_seed
from ratgan.training import checkpoint as ckpt

log = logging.getLogger(__name__)

DESCRIP = "ratgan synthetic"
"""The descrip field of every generated NIfTI file."""


@dataclass
class LoadedGenerator:
    """A trained generator in eval mode and where it came from."""

    generator: torch.nn.Module
    config: Config
    checkpoint: Path
    iteration: int
    device: torch.device
    weights: str = "raw"
    """``ema`` (the moving average of G) or ``raw`` (the trained weights)."""


def load_generator(
    run_dir: str | Path,
    checkpoint: str | Path | None = None,
    device: str = "auto",
    precision: str | None = None,
    weights: str = "ema",
) -> LoadedGenerator:
    """Rebuild G from a checkpoint alone (its stored config) and load its weights.

    ``checkpoint`` is None or ``latest`` (the newest), ``best`` (checkpoints/best.pt, kept by
    ``train.eval_every``) or a file.  ``weights`` ``ema`` takes the moving average of G where
    the run keeps one (the raw weights otherwise); ``raw`` always takes the trained weights.
    ``precision`` ("fp32" or "bf16") overrides the run's ``train.precision`` for sampling.
    """
    run_dir = Path(run_dir)
    if weights not in ("ema", "raw"):
        raise RatganError(f"--weights must be ema or raw (got {weights!r}).")
    path = ckpt.resolve_checkpoint(run_dir, checkpoint)
    dev = select_device(device)
    # Memory-mapped: only G's tensors are read from a file that also holds E, D, C and the
    # optimiser states (about 11x G's size for the paper's models).
    state = ckpt.load_checkpoint(path, map_location="cpu", mmap=True)
    from ratgan.config import config_from_dict

    cfg = config_from_dict(state["config"]) if "config" in state else read_run_config(run_dir)
    if precision is not None:
        if precision not in ("fp32", "bf16"):
            raise RatganError(f"precision must be fp32 or bf16 (got {precision!r}).")
        cfg.train.precision = "bf16" if precision == "bf16" else "fp32"  # as a Literal
    with torch.device("meta"):  # no initialisation work: every tensor comes from the file
        generator = Generator(cfg.model)
    use_ema = weights == "ema" and "ema" in state
    generator.load_state_dict(state["ema"]["G"] if use_ema else state["networks"]["G"], assign=True)
    generator.to(dev).eval()
    return LoadedGenerator(
        generator, cfg, path, int(state["iteration"]), dev, "ema" if use_ema else "raw"
    )


class _ScanSeeds:
    """The scan seeds of one generation seed in index order, all distinct.

    ``derived_seed`` gives 32-bit seeds (torch's CPU generator takes no more), so two indices
    of one set share a seed, and would be the same scan, once in a while: with ``--seed 39``
    scans 1805 and 3645 did; about 1 % of 10,000-scan sets had such a pair. An index whose
    seed an earlier index already has takes ``derived_seed(seed, index, attempt)`` instead,
    so every other scan keeps its seed and a seed still depends on nothing but lower indices.
    """

    def __init__(self, seed: int):
        self.seed = seed
        self.seeds: list[int] = []
        self.used: set[int] = set()

    def __getitem__(self, index: int) -> int:
        while len(self.seeds) <= index:
            i, attempt = len(self.seeds), 0
            value = derived_seed(self.seed, i)
            while value in self.used:
                attempt += 1
                value = derived_seed(self.seed, i, attempt)
            self.seeds.append(value)
            self.used.add(value)
        return self.seeds[index]


@functools.lru_cache(maxsize=4)
def _scan_seeds(seed: int) -> _ScanSeeds:
    return _ScanSeeds(seed)


def scan_seed(seed: int, index: int) -> int:
    """The seed of scan ``index`` in a generation with ``seed`` (stable across n and batching),
    never that of another index of the same generation (see _ScanSeeds)."""
    if seed < 0 or index < 0:
        raise RatganError(
            f"a generation's seed and scan index must be 0 or more (got {seed}, {index})."
        )
    return _scan_seeds(seed)[index]


def latent_codes(seeds: list[int], latent_dim: int) -> torch.Tensor:
    """One N(0, I) code per seed, drawn on the CPU so that every device gives the same codes."""
    return torch.stack(
        [torch.randn(latent_dim, generator=torch.Generator().manual_seed(s)) for s in seeds]
    )


def output_noise(seeds: list[int], shape: tuple[int, ...]) -> torch.Tensor:
    """The per-voxel noise of each scan for a generator with output noise, from its seed.

    Its stream is seeded with :func:`noise_seed`, apart from the code's, so a scan stays
    reproducible from the manifest's seed alone.
    """
    return torch.stack(
        [torch.randn(shape, generator=torch.Generator().manual_seed(noise_seed(s))) for s in seeds]
    )


def noise_seed(seed: int) -> int:
    """The seed of the output noise of the scan whose code has ``seed``.

    It was ``seed + 2**32``, which torch's CPU generator cuts to the seed, so the noise stream
    was the code's own: a scan's first ``latent_dim`` noise voxels were its code.
    """
    return derived_seed(seed, 2)


@torch.no_grad()
def sample_volumes(
    loaded: LoadedGenerator, z: torch.Tensor, noise: torch.Tensor | None = None
) -> np.ndarray:
    """Network-space volumes (B, C, S, S, S) in [-1, 1] for the codes ``z`` (and the output
    noise ``noise`` of a generator that has it)."""
    bf16 = loaded.config.train.precision == "bf16"
    with torch.autocast(loaded.device.type, dtype=torch.bfloat16, enabled=bf16):
        out = loaded.generator(
            z.to(loaded.device), noise=None if noise is None else noise.to(loaded.device)
        )
    return out.float().cpu().numpy()


@dataclass
class _GanSource:
    """Scans of an alpha-GAN run: codes (and output noise) from each scan's seed through G.

    With ``centres`` (E's codes of the training scans), codes come from their kernel density
    of width ``kde_width`` instead of the prior (:mod:`ratgan.generation.code_density`).
    """

    loaded: LoadedGenerator
    centres: torch.Tensor | None = None
    kde_width: float = 0.0

    @property
    def config(self) -> Config:
        return self.loaded.config

    def sample(self, seeds: list[int]) -> np.ndarray:
        cfg = self.loaded.config
        noise = None
        if cfg.model.g_output_noise:
            noise = output_noise(seeds, (cfg.model.channels, *cfg.model.volume_shape))
        z = latent_codes(seeds, cfg.model.latent_dim)
        if self.centres is not None:
            from ratgan.generation.code_density import kde_codes

            z = kde_codes(self.centres, seeds, z, self.kde_width)
        return sample_volumes(self.loaded, z, noise)

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "checkpoint": str(self.loaded.checkpoint.resolve()),
            "iteration": self.loaded.iteration,
            "weights": self.loaded.weights,
        }
        if self.centres is not None:
            out.update(codes="kde", kde_width=self.kde_width)
        return out


def load_source(
    run_dir: Path,
    checkpoint: str | Path | None,
    device: str,
    precision: str | None,
    weights: str,
    sampler: str | None = None,
    steps: int | None = None,
    codes: str = "prior",
    kde_width: float = DEFAULT_KDE_WIDTH,
) -> Any:
    """What samples scans of a run, by the family in its checkpoint's config: an alpha-GAN's
    generator or a latent diffusion model (``sampler`` and ``steps`` are for the latter).
    ``codes`` ``kde`` draws an alpha-GAN's codes from the kernel density of width
    ``kde_width`` around its encoder's codes of the training scans."""
    from ratgan.generation.ldm import is_ldm_checkpoint, load_ldm

    if weights not in ("ema", "raw"):
        raise RatganError(f"--weights must be ema or raw (got {weights!r}).")
    if codes not in ("prior", "kde"):
        raise RatganError(f"--codes must be prior or kde (got {codes!r}).")
    if codes == "kde" and not kde_width > 0:
        raise RatganError(f"--kde-width must be positive (got {kde_width}).")
    path = ckpt.resolve_checkpoint(run_dir, checkpoint)
    check_checkpoint_of_run(run_dir, path)
    is_ldm, state = is_ldm_checkpoint(path)
    if is_ldm:
        if codes != "prior":
            raise RatganError(f"--codes kde is for alpha-GAN runs; {run_dir} is a diffusion run.")
        return load_ldm(path, state, device, precision, weights, sampler, steps)
    if sampler is not None or steps is not None:
        raise RatganError(
            f"--sampler and --steps are for latent diffusion runs; {run_dir} is an alpha-GAN run."
        )
    loaded = load_generator(run_dir, path, device, precision, weights)
    if codes == "prior":
        return _GanSource(loaded)
    from ratgan.generation.code_density import training_codes

    centres = training_codes(run_dir, loaded.checkpoint, loaded.config, loaded.device)
    return _GanSource(loaded, centres, kde_width)


def check_checkpoint_of_run(run_dir: Path, path: Path) -> None:
    """Refuse a checkpoint of a run that trained on other scans than ``run_dir``'s.

    The reference scan is checked against ``run_dir``'s training scans (and ``--codes kde``
    encodes them), so a checkpoint of another run would be written in the wrong space: a
    run trained on LPS scans, written with a RAS run's reference, came out mirrored. A
    checkpoint outside any run folder cannot be checked, which a warning says.
    """
    owner = path.parent.parent if path.parent.name == CHECKPOINT_DIR else None
    if owner is not None and owner.resolve() == run_dir.resolve():
        return
    if owner is None or not run_paths(owner).data.is_file():
        log.warning(
            "checkpoint %s is not in a run folder, so nothing checks that it was trained on "
            "the scans of %s, whose reference and training scans are used",
            path,
            run_dir,
        )
        return
    if not _same_scans(read_run_data(owner), read_run_data(run_dir)):
        raise RatganError(
            f"checkpoint {path} belongs to run {owner}, which trained on other scans than "
            f"{run_dir}; its scans would be written in {run_dir}'s space, so generate them "
            f"from its own run: ratgan generate {owner} --checkpoint {path}"
        )


def _same_scans(a: RunData, b: RunData) -> bool:
    """Whether two runs trained on the same scans: the same files (resolved paths), or the
    same recorded contents where both runs recorded every file's digest."""

    def paths(data: RunData) -> set[Path]:
        return {Path(e.image).resolve() for e in data.entries}

    def digests(data: RunData) -> set[str | None]:
        return {e.sha256 for e in data.entries}

    if paths(a) == paths(b):
        return True
    return None not in digests(a) | digests(b) and digests(a) == digests(b)


def _reference(run_dir: Path, reference: str | Path | None, cfg: Config) -> tuple[Any, Any]:
    """The reference scan (header, affine) and the preprocessing info that maps back to it;
    a reference outside the training scans' space (shape, orientation) is refused."""
    from ratgan.data.io import read_scan
    from ratgan.data.transforms import cropped_slices, preprocess

    data = read_run_data(run_dir)
    if reference is None:
        reference = data.entries[0].image
        if not Path(reference).is_file():
            raise RatganError(
                f"the run's first training scan {reference} is gone; pass "
                "--reference with a real scan to copy the header from."
            )
    scan = read_scan(reference, cfg.data.volume_index)
    check_reference(scan, data)
    _, info = preprocess(scan.data, cfg.data.target_shape, cfg.data.downsample)
    cut = cropped_slices(info, cfg.data.target_shape)
    if cut:
        log.warning(
            "the model's volumes (%s) are smaller than the reference scan %s (%s after pooling "
            "by %d): every synthetic scan is empty in the %s cut off to train it",
            "x".join(map(str, cfg.data.target_shape)),
            scan.path,
            "x".join(map(str, info.pooled_shape)),
            info.downsample,
            ", ".join(f"{n} slices of axis {a}" for a, n in cut.items()),
        )
    return scan, info


def _export(
    vol: np.ndarray,
    out_dir: Path,
    name: str,
    scan: Any,
    info: Any,
    record: dict[str, Any],
    with_labels: bool,
) -> tuple[dict[str, Any], Path]:
    """Write one network-space volume (and its label map) in the reference scan's space."""
    from ratgan.data.io import write_nifti
    from ratgan.data.transforms import channels_to_labels, inverse_labels, inverse_preprocess

    # write_nifti keeps the reference's geometry and datatype, not what identifies its subject
    image = inverse_preprocess(vol[0], info)
    path = write_nifti(out_dir / name, image, scan.affine, scan.header, description=DESCRIP)
    if with_labels:
        labels = channels_to_labels(torch.from_numpy(vol[None, 1:]))[0, 0].numpy()
        label_path = write_nifti(
            out_dir / "labels" / name,
            inverse_labels(labels, info).astype(np.uint8),
            scan.affine,
            scan.header,
            dtype=np.dtype(np.uint8),
            description=f"{DESCRIP} labels",
        )
        record["label"] = f"labels/{label_path.name}"
    return record, path


def generate_scans(
    run_dir: str | Path,
    n: int,
    out_dir: str | Path,
    seed: int = 0,
    reference: str | Path | None = None,
    batch_size: int = 8,
    device: str = "auto",
    checkpoint: str | Path | None = None,
    progress: bool = True,
    prefix: str = "synthetic",
    precision: str | None = None,
    writers: int | None = None,
    weights: str = "ema",
    sampler: str | None = None,
    steps: int | None = None,
    codes: str = "prior",
    kde_width: float | None = None,
    lock: FolderLock | None = None,
) -> list[Path]:
    """Write ``n`` synthetic scans (and label maps for joint models) plus ``manifest.json``.

    A latent diffusion run samples with ``sampler`` (ddim or ddpm) in ``steps`` steps (default:
    its config's); both are recorded per scan in the manifest.  An alpha-GAN run samples codes
    from the prior, or with ``codes="kde"`` from a kernel density of width ``kde_width``
    (default 1.5; a width with prior codes, which have none, is refused) around its encoder's
    codes of the training scans (:mod:`ratgan.generation.code_density`; check such a set for
    near-copies with ``ratgan evaluate``).

    One generator load, then ``batch_size`` codes per forward pass; ``precision`` overrides the
    run's ``train.precision`` (bf16 is faster on CPUs with AMX and on GPUs).  Files are written
    by ``writers`` threads (default: up to 8, one per CPU core) while the next batch is sampled:
    gzip compression releases the GIL, and on a GPU writing is otherwise the bottleneck.

    ``out_dir`` must be empty, new, or hold an earlier generation of the same run and settings
    (which is then completed or replaced whole); see :mod:`ratgan.generation.output`.  It is
    locked against other ratgan processes (:mod:`ratgan.folder_lock`) for the call, or by
    ``lock``, the caller's (entered) lock of ``out_dir``, which the caller holds on after it.
    """
    from tqdm.auto import tqdm

    if n < 1:
        raise RatganError(f"--n must be at least 1 (got {n}).")
    if seed < 0:
        raise RatganError(f"--seed must be 0 or more (got {seed}).")
    if batch_size < 1:
        raise RatganError(f"--batch-size must be at least 1 (got {batch_size}).")
    if writers is not None and writers < 1:
        raise RatganError(f"--writers must be at least 1 (got {writers}).")
    width = kde_width_for(codes, kde_width)  # a width with prior codes: refused before any folder
    writers = writers or max(1, min(8, os.cpu_count() or 1))
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    with ExitStack() as stack:
        if lock is None:
            lock = stack.enter_context(FolderLock(out_dir, "ratgan generate"))
        folder = OutputFolder.inspect(out_dir, prefix)  # before any work: refuse a foreign folder
        source = load_source(
            run_dir, checkpoint, device, precision, weights, sampler, steps, codes, width
        )
        cfg = source.config
        scan, info = _reference(run_dir, reference, cfg)
        settings = _set_settings(run_dir, source, scan.path, seed, batch_size, prefix)
        lock.create()  # a new folder is made here, every input checked
        folder.claim(settings, n, str(run_dir.resolve()))
        suffix = ".nii.gz" if str(scan.path).endswith(".gz") else ".nii"
        records, written = [], []
        bar = tqdm(total=n, disable=not progress, unit="scan", desc="generate")
        pending: deque[Future] = deque()

        def finish_oldest() -> None:
            record, path = pending.popleft().result()  # re-raises a writer's error
            records.append(record)
            written.append(path)
            bar.update(1)

        with ThreadPoolExecutor(writers, thread_name_prefix="ratgan-write") as pool:
            for start in range(0, n, batch_size):
                seeds = [scan_seed(seed, i) for i in range(start, min(n, start + batch_size))]
                # Every batch has the same size (the last one is padded with extra codes), so a
                # scan's values do not depend on n: kernels may sum in another order per batch size.
                padded = seeds + [scan_seed(seed, n + i) for i in range(batch_size - len(seeds))]
                volumes = source.sample(padded)
                _refuse_non_finite(volumes[: len(seeds)], seeds, start, source)
                # strict=False: the padding codes' volumes are dropped here.
                for offset, (s, vol) in enumerate(zip(seeds, volumes, strict=False)):
                    index = start + offset
                    name = f"{prefix}_{index:05d}{suffix}"
                    record = {
                        "file": name,
                        "index": index,
                        "seed": s,
                        "generation_seed": seed,
                        **source.record(),
                        "reference": str(scan.path),
                        "precision": cfg.train.precision,
                        "batch_size": batch_size,
                    }
                    pending.append(
                        pool.submit(
                            _export,
                            vol,
                            out_dir,
                            name,
                            scan,
                            info,
                            record,
                            bool(cfg.data.label_channels),
                        )
                    )
                while len(pending) > writers + batch_size:  # bounded memory: at most ~2 batches
                    finish_oldest()
            while pending:
                finish_oldest()
        bar.close()
        folder.finish(settings, n, str(run_dir.resolve()), records)
        return written


def _refuse_non_finite(volumes: np.ndarray, seeds: list[int], start: int, source: Any) -> None:
    """Raise RatganError when a sampled volume holds NaN or infinite voxels: written as an
    integer scan it would be silently all zero."""
    finite = np.isfinite(volumes.reshape(len(volumes), -1)).all(axis=1)
    if not finite.all():
        first = int(np.argmin(finite))
        raise RatganError(
            f"the model of {source.record()['checkpoint']} gave NaN or infinite voxels for "
            f"scan {start + first} (seed {seeds[first]}); its weights are damaged or training "
            "diverged, so the set stops here (its manifest says incomplete)."
        )


def _set_settings(
    run_dir: Path, source: Any, reference: Path, seed: int, batch_size: int, prefix: str
) -> dict[str, Any]:
    """What defines a generated set: two generations into one folder must agree on all of it
    (``n`` aside), or their scans would be a mixture of two sets.  ``source`` is what
    :func:`load_source` returns: its record names the checkpoint, weights (and sampler)."""
    return {
        "run": str(run_dir.resolve()),
        **source.record(),
        "seed": seed,
        "reference": str(Path(reference).resolve()),
        "precision": source.config.train.precision,
        "batch_size": batch_size,
        "prefix": prefix,
    }
