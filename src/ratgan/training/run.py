"""A training run: the endless loop, logging, figures and checkpoints.

What it writes into the run folder (config, data record, metrics, loss curves, sample montages,
checkpoints) is described, and located, by ``ratgan.runs``.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, closing, nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import torch
from torch.profiler import record_function
from tqdm.auto import tqdm

from ratgan.config import Config, TrainConfig
from ratgan.data.augment import BatchAugmenter
from ratgan.data.dataset import Cohort, EndlessBatches, load_cohort
from ratgan.devices import select_device
from ratgan.errors import RatganError
from ratgan.folder_lock import FolderLock
from ratgan.models import Generator, Networks, build_networks
from ratgan.runs import run_paths
from ratgan.training import checkpoint as ckpt
from ratgan.training import distributed
from ratgan.training.alphagan import AlphaGANStep, build_optimizers
from ratgan.training.cpu_clock import CpuClock
from ratgan.training.disc_augment import DiscriminatorAugment
from ratgan.training.ema import GeneratorEMA
from ratgan.training.encoder_health import encoder_health
from ratgan.training.figures import plot_loss_curves, plot_quality_curves, save_sample_montage
from ratgan.training.inputs import model_input
from ratgan.training.host_memory import keep_freed_host_memory
from ratgan.training.run_folder import prepare_run_dir, rewind_run, write_resumed_config
from ratgan.training.schedule import Due
from ratgan.training.stop import StopRequest, TrainingStopped, stopped_message
from ratgan.training.run_folder import (
    NewRunGuard,
    load_recorded_cohort,
    no_checkpoint_message,
    write_new_run,
)

log = logging.getLogger(__name__)


class TrainingDiverged(RatganError):
    """A loss became NaN or Inf; the last good checkpoint is kept."""


QualityProbe = Callable[[torch.nn.Module, torch.device], dict[str, float]]
"""Scores a generator during training: (G in eval mode, device) -> metrics by name."""

ProbeFactory = Callable[[Config, Path], QualityProbe]
"""Builds the probe of a run (its config and folder, whose data.json names the real scans).

Training cannot import the evaluation package (data flows the other way), so the caller — the
CLI or the demo — hands in :func:`ratgan.evaluation.tracking.quality_probe_factory`."""

LOWER_IS_BETTER = {"frechet": True, "rbf_mmd2": True, "precision": False, "recall": False}


@dataclass
class TrainResult:
    """What a finished (or resumed-and-finished) run reports."""

    run_dir: Path
    iteration: int
    seconds: float
    """Training seconds, counted on across resumes (as in metrics.jsonl)."""
    last_losses: dict[str, float]
    networks: Networks
    rank: int = 0


def warn_flips_off_left_right(cfg: Config, orientations: list[str]) -> None:
    """Warn when a flip augmentation mirrors another axis than the scans' left-right one.

    The flips are the paper's left-right mirror (a brain is nearly symmetric that way), on a
    fixed voxel axis: 0 for the augmentation's default and always for ADA's. A cohort stored
    with axis 0 running front to back (ARS, say) was mirrored front to back instead.
    """
    if not orientations:
        return
    code = orientations[0]  # one for the whole cohort: load_entries refuses several
    left_right = next((i for i, letter in enumerate(code) if letter in "LR"), None)
    flips = []
    a = cfg.augment
    if a.mode in ("all", "flip") and a.flip_prob > 0 and a.flip_axis != left_right:
        flips.append(f"augment.flip_axis {a.flip_axis}")
    if cfg.ada.enabled and cfg.ada.flip and left_right != 0:
        flips.append("ada.flip (axis 0)")
    if flips:
        log.warning(
            "the scans are stored in orientation %s, whose left-right axis is voxel axis %s, "
            "but %s mirror(s) another axis: set augment.flip_axis to %s (and ada.flip to "
            "false), or reorient the scans",
            code,
            left_right,
            " and ".join(flips),
            left_right,
        )


def _shard(cohort: Cohort, info: distributed.DistInfo) -> Cohort:
    """This rank's share of the cohort: every world_size-th scan from its rank on."""
    if not info.enabled:
        return cohort
    if len(cohort) < info.world_size:
        raise RatganError(
            f"{len(cohort)} scans cannot be shared among {info.world_size} "
            "processes; use fewer processes or more scans."
        )
    idx = list(range(info.rank, len(cohort), info.world_size))
    return Cohort(
        images=cohort.images[idx],
        labels=None if cohort.labels is None else cohort.labels[idx],
        entries=[cohort.entries[i] for i in idx],
        infos=[cohort.infos[i] for i in idx],
    )


def train(
    cfg: Config,
    data_source: str | Path | None,
    run_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    probe_factory: ProbeFactory | None = None,
) -> TrainResult:
    """Train (or resume) an alpha-GAN run; see the module docstring for what it writes.

    Under torchrun each rank trains on its shard with DistributedDataParallel and rank 0
    alone writes; ``train.batch_size`` is then the batch of each rank.  With
    ``train.eval_every`` set, ``probe_factory`` builds the quality probe run every
    ``eval_every`` iterations (rank 0).
    """
    if cfg.family != "alphagan":
        raise RatganError(
            f"config {cfg.name} is a latent diffusion config (family: ldm): `ratgan train` "
            "trains it, `ratgan demo` and this alpha-GAN loop do not."
        )
    run_dir = Path(run_dir)
    device = select_device(cfg.train.device)
    info, device = distributed.setup(device)
    try:
        # rank 0 alone holds the run folder: the other ranks share it and write nothing there
        with FolderLock(run_dir, "ratgan train", enabled=info.is_main) as lock:
            return _train(
                cfg, data_source, run_dir, resume, progress, probe_factory, info, device, lock
            )
    finally:
        distributed.teardown(info)


def _train(
    cfg: Config,
    data_source: str | Path | None,
    run_dir: Path,
    resume: bool,
    progress: bool,
    probe_factory: ProbeFactory | None,
    info: distributed.DistInfo,
    device: torch.device,
    lock: FolderLock,
) -> TrainResult:
    """:func:`train` with the run folder locked by ``lock`` if it exists (else created and
    locked once the new run's data has been read)."""
    # after the lock: the guard's record of the folder holds the lock file, kept on failure
    guard = NewRunGuard(run_dir, lock) if not resume and info.is_main else None
    try:
        cfg = prepare_run_dir(run_dir, cfg, resume, is_main=info.is_main)
        if resume:
            cohort = load_recorded_cohort(
                run_dir, cfg.data, cfg.data.label_channels, progress and info.is_main
            )
        elif data_source is None:
            raise RatganError("--data is required to start a new run.")
        else:
            cohort = load_cohort(
                data_source,
                cfg.data,
                require_labels=cfg.data.label_channels,
                progress=progress and info.is_main,
            )
            if info.is_main:
                write_new_run(run_dir, cfg, data_source, cohort, lock)
                warn_flips_off_left_right(cfg, cohort.orientations)
        probe = None
        if cfg.train.eval_every and info.is_main:
            if probe_factory is None:
                raise RatganError(
                    "train.eval_every is set but no quality probe was given "
                    "(pass ratgan.evaluation.tracking.quality_probe_factory)."
                )
            probe = probe_factory(cfg, run_dir)
        result = _loop(
            cfg,
            _shard(cohort, info),
            cohort,
            run_dir,
            resume,
            progress and info.is_main,
            info,
            device,
            probe,
        )
        distributed.finish(info)
        return result
    except BaseException:
        if guard is not None:  # a new run that failed before its first checkpoint
            guard.discard_if_unfinished()
        raise


def _prepare_device(device: torch.device) -> None:
    """Per-device speed settings that do not change the mathematics."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    elif device.type == "cpu":
        keep_freed_host_memory()  # ~20 % faster 64^3 iterations on a CPU (see the module)


def _own_global_stream(info: distributed.DistInfo, seed: int) -> None:
    """Give each rank its own global random stream (G's output noise, the critic's
    augmentation draw from it): it was seeded alike on every rank for the same initial
    weights.  Rank 0 keeps a single process's stream."""
    if info.rank != 0:
        torch.manual_seed(distributed.rank_seed(seed, info.rank, 9))


def _health_input(whole: Cohort, cfg: Config, device: torch.device) -> torch.Tensor:
    """A fixed set of training scans, not augmented, for the encoder-health numbers: the
    cohort's first 16, whatever the number of processes (not this rank's share)."""
    n = min(16, len(whole))
    labels = None if whole.labels is None else whole.labels[:n].to(device)
    return model_input(whole.images[:n].to(device), labels, cfg)


def _resume(
    cfg: Config,
    run_dir: Path,
    nets: Networks,
    optimizers: dict[str, torch.optim.Optimizer],
    rng: torch.Generator,
    stream: EndlessBatches,
    info: distributed.DistInfo,
    ema: GeneratorEMA | None,
    augment: DiscriminatorAugment | None,
) -> tuple[int, dict[str, Any], dict[str, float]]:
    """Restore the newest readable checkpoint of ``run_dir``, if any: (its iteration, the best
    record, the run's wall and CPU seconds and the images its steps have seen so far, keyed
    ``seconds``, ``cpu_seconds`` and ``images_seen``).  An
    unreadable newer checkpoint (truncated, damaged) is skipped with a message naming it and
    why.

    Log lines, sample montages and a best.pt written after that checkpoint are dropped (rank
    0).  (0, {}, {}) when there is none: the run starts again from iteration 0, says so, and
    drops all of them (a run killed before its first checkpoint left them).  Only then, the
    resume's checks passed, is ``cfg`` (a new iteration target ...) stored in config.yaml.

    The checkpoint is read into host memory: ``load_state_dict`` puts each network's,
    optimiser's and module's state on its device, and the random generators' states must stay
    CPU tensors (a GPU run resumed from a GPU-mapped checkpoint once failed on them).
    """
    found = ckpt.newest_readable_checkpoint(run_dir, map_location="cpu")
    start, best, elapsed = 0, {}, {}
    if found is None and info.is_main:
        print(no_checkpoint_message(run_dir), file=sys.stderr)
    if found is not None:
        path, state, skipped = found
        if info.is_main:
            for message in skipped:
                print(f"resume: {message}; resuming from {path.name} instead", file=sys.stderr)
        _restore(state, nets, optimizers, rng, stream, info)
        _restore_extras(state, ema, augment)
        start = int(state["iteration"])
        best = dict(state.get("best") or {})
        elapsed = {k: float(state.get(k, 0.0)) for k in ("seconds", "cpu_seconds")}
        saved_batch = cfg.train.batch_size * int(state["world_size"])
        elapsed["images_seen"] = float(state.get("images_seen", start * saved_batch))
    if info.is_main:
        if rewind_run(run_dir, start):
            best = {}  # the record named a best.pt that a later one replaced: start afresh
        write_resumed_config(run_dir, cfg)
    return start, best, elapsed


def _check_finite(
    finite: torch.Tensor, info: distributed.DistInfo, it: int, steps: int, where: Path
) -> None:
    """Raise :class:`TrainingDiverged` unless every rank's losses of the last ``steps``
    iterations stayed finite (one host sync)."""
    if not distributed.all_finite(finite, info):
        raise TrainingDiverged(
            f"a loss became NaN or Inf between iterations {it - steps + 1} "
            f"and {it}; the last good checkpoint is kept in {where}."
        )


def _save_checkpoints(
    run_dir: Path, it: int, state: dict[str, Any], due: Due, improved: bool, t_cfg: TrainConfig
) -> None:
    """Write the best checkpoint when the quality improved, and at checkpoint iterations the
    regular checkpoint and the loss and quality curves (rank 0)."""
    paths = run_paths(run_dir)
    if improved:
        ckpt.save_best_checkpoint(run_dir, it, state)
    if due.checkpoint:
        ckpt.save_checkpoint(run_dir, it, state, keep=t_cfg.keep_checkpoints)
        plot_loss_curves(paths.metrics, paths.loss_curves)
        plot_quality_curves(paths.metrics, paths.quality_curves)


def _closing(writer: _ScalarWriter | None) -> AbstractContextManager[Any]:
    """Closes the TensorBoard writer on leaving, when there is one."""
    return nullcontext() if writer is None else closing(writer)


def _stop_now(
    stop: StopRequest, due: Due, info: distributed.DistInfo, device: torch.device
) -> bool:
    """Whether the run stops after this iteration: at once in one process; under torchrun at
    the next logging iteration, where every rank learns whether any rank got the signal."""
    if not info.enabled:
        return stop.requested
    return due.log and distributed.any_rank(stop.requested, info, device)


def _loop(
    cfg: Config,
    cohort: Cohort,
    whole: Cohort,
    run_dir: Path,
    resume: bool,
    progress: bool,
    info: distributed.DistInfo,
    device: torch.device,
    probe: QualityProbe | None = None,
) -> TrainResult:
    t_cfg = cfg.train
    paths = run_paths(run_dir)
    torch.manual_seed(t_cfg.seed)  # same initial weights on every rank
    _prepare_device(device)
    seed = partial(distributed.rank_seed, t_cfg.seed, info.rank)
    stream = EndlessBatches(
        cohort,
        t_cfg.batch_size,
        seed=seed(0),
        device=device,
        augmenter=BatchAugmenter(cfg.augment, seed=seed(1)),
        with_labels=cfg.data.label_channels,
    )
    nets = build_networks(cfg.model).place(device, t_cfg.channels_last)
    optimizers = build_optimizers(nets, cfg)
    ema = _build_ema(cfg, nets, device)
    augment = DiscriminatorAugment(cfg.ada).to(device) if cfg.ada.enabled else None
    rng = torch.Generator(device=device)
    rng.manual_seed(seed(2))
    _own_global_stream(info, t_cfg.seed)
    sample_z = torch.randn(
        4, cfg.model.latent_dim, generator=torch.Generator().manual_seed(t_cfg.seed + 3)
    )
    reference_info = whole.infos[0]
    health_x = _health_input(whole, cfg, device)

    start = 0
    best: dict[str, Any] = {}
    elapsed: dict[str, float] = {}
    if resume:
        start, best, elapsed = _resume(
            cfg, run_dir, nets, optimizers, rng, stream, info, ema, augment
        )
    clock = CpuClock(elapsed.get("cpu_seconds", 0.0))
    step = AlphaGANStep(
        nets,
        optimizers,
        cfg,
        device,
        rng,
        wrap=distributed.wrapper(info, device),
        ema=ema,
        augment=augment,
    )
    step.world_size = info.world_size
    step.images_seen = int(elapsed.get("images_seen", 0))  # 0 unless resumed
    sampler = ema.average if ema is not None else nets.generator

    writer = _tensorboard(run_dir) if t_cfg.tensorboard and info.is_main else None
    window: list[dict[str, torch.Tensor]] = []
    finite = torch.ones((), dtype=torch.bool, device=device)
    last: dict[str, float] = {}
    t0 = time.perf_counter() - elapsed.get("seconds", 0.0)  # go on across resumes
    bar = tqdm(
        total=t_cfg.iterations,
        initial=start,
        disable=not progress,
        unit="it",
        desc="train",
        dynamic_ncols=True,
    )
    with StopRequest() as stop, bar, _closing(writer):
        for it in range(start + 1, t_cfg.iterations + 1):
            with record_function("ratgan.data"):
                x1 = model_input(*next(stream), cfg)
                x2 = model_input(*next(stream), cfg)
            if cfg.loss.gdl_finish is not None:
                step.set_loss(cfg.loss.at(it))
            parts = step(x1, x2)
            finite &= torch.stack(list(parts.values())).isfinite().all()
            window.append(parts)
            bar.update(1)
            due = Due.at(it, t_cfg)
            stopping = _stop_now(stop, due, info, device)
            if stopping:
                due = due.stopping()
            if due.log or due.checkpoint:
                # One host sync per logging interval, none per step.
                _check_finite(finite, info, it, len(window), paths.checkpoints)
                means = _window_means(window, info)  # over every rank's batches
                if info.is_main:
                    last = _log(paths.metrics, it, means, time.perf_counter() - t0, writer, clock())
                    bar.set_postfix(_progress_losses(last))
                window = []
            if info.is_main and due.sample:
                save_sample_montage(
                    sampler, sample_z, reference_info, cfg, paths.sample(it), device
                )
            improved = False
            if due.evaluate and probe is not None:
                health = encoder_health(
                    nets.encoder, nets.generator, health_x, bf16=t_cfg.precision == "bf16"
                )
                improved = _evaluate(
                    probe, sampler, device, paths.metrics, it, cfg, best, clock, health
                )
            if due.checkpoint or due.evaluate:  # a collective: every rank takes part
                ranks = distributed.gather_objects(_rank_state(rng, stream), info)
            if info.is_main and (due.checkpoint or improved):
                state = _state(cfg, nets, optimizers, ranks, ema, augment, best)
                state["seconds"] = round(time.perf_counter() - t0, 3)
                state["cpu_seconds"] = clock()
                state["images_seen"] = step.images_seen
                _save_checkpoints(run_dir, it, state, due, improved, t_cfg)
            if stopping:
                raise TrainingStopped(stopped_message(stop.name, it, run_dir))
    return TrainResult(run_dir, t_cfg.iterations, time.perf_counter() - t0, last, nets, info.rank)


class _ScalarWriter(Protocol):
    """What the loop uses of TensorBoard's ``SummaryWriter`` (an optional dependency)."""

    def add_scalar(self, tag: str, scalar_value: float, global_step: int) -> Any:
        """Log one value of the curve ``tag``."""

    def close(self) -> None:
        """Flush and close the event file."""


def _progress_losses(last: dict[str, float]) -> dict[str, str]:
    """The totals the progress bar shows, from the latest logged means."""
    return {k: f"{last[k]:.3g}" for k in ("eg_total", "d_total", "c_total") if k in last}


def _build_ema(cfg: Config, nets: Networks, device: torch.device) -> GeneratorEMA | None:
    """The moving average of G, when ``train.ema_half_life_images`` asks for one."""
    if cfg.train.ema_half_life_images <= 0:
        return None
    fmt = torch.channels_last_3d if cfg.train.channels_last else torch.contiguous_format
    average = Generator(cfg.model).to(device)
    # torch's Module.to overloads omit memory_format, which it accepts.
    average = average.to(memory_format=fmt).eval()  # type: ignore[call-overload]
    return GeneratorEMA(
        average, nets.generator, cfg.train.ema_half_life_images, cfg.train.ema_rampup
    )


def is_improvement(value: float, best: dict[str, Any], lower_is_better: bool) -> bool:
    """Whether ``value`` of the tracked metric should replace the ``best`` record.

    A NaN never does; any finite value replaces a missing or NaN record; a tie does (the later
    checkpoint has trained longer: with precision and recall stuck at 0 the first evaluation
    would otherwise be kept for ever).
    """
    if math.isnan(value):
        return False
    old = float(best.get("value", math.nan))
    if math.isnan(old):
        return True
    return value <= old if lower_is_better else value >= old


def forget_other_reference(best: dict[str, Any], reference: str | None, iteration: int) -> None:
    """Empty the ``best`` record when it was measured against other reference scans than the
    probe's (``reference``: the probe's digest of its scans; None or a record without one: no
    check).  A resume reads ``train.eval_real`` again, and a folder or glob can have gained or
    changed scans since: values against other scans are not comparable, so best.pt is then
    chosen afresh among the evaluations against the current ones (said on stderr)."""
    old = best.get("reference")
    if reference is None or old is None or old == reference:
        return
    print(
        f"quality tracking: iteration {iteration} is scored against other reference scans "
        f"than best.pt (iteration {best.get('iteration')}) was chosen against (train.eval_real "
        "changed since); best.pt is chosen afresh from now on",
        file=sys.stderr,
    )
    best.clear()


def update_best(
    best: dict[str, Any], name: str, value: float, iteration: int, reference: str | None
) -> bool:
    """Record ``value`` of tracked metric ``name`` at ``iteration`` in ``best`` when it is an
    improvement (:func:`is_improvement`), after forgetting a record measured against other
    reference scans (:func:`forget_other_reference`); whether it was.  The GAN and the latent
    diffusion loops keep best.pt by this one rule."""
    forget_other_reference(best, reference, iteration)
    improved = is_improvement(value, best, LOWER_IS_BETTER[name])
    if improved:
        best.update({"metric": name, "value": value, "iteration": iteration})
        if reference is not None:
            best["reference"] = reference
    return improved


def _evaluate(
    probe: QualityProbe,
    sampler: torch.nn.Module,
    device: torch.device,
    metrics_path: Path,
    iteration: int,
    cfg: Config,
    best: dict[str, Any],
    clock: CpuClock | None = None,
    health: dict[str, float] | None = None,
) -> bool:
    """Run the quality probe, log its metrics (and the encoder's ``health``) on one line;
    True (and ``best`` updated) when the tracked metric improved."""
    t0 = time.perf_counter()
    was_training = sampler.training
    sampler.eval()
    try:
        metrics = probe(sampler, device)
    finally:
        sampler.train(was_training)
    name = cfg.train.eval_metric
    improved = update_best(
        best, name, float(metrics[name]), iteration, getattr(probe, "reference", None)
    )
    record = {
        "iteration": iteration,
        "kind": "quality",
        **metrics,
        **(health or {}),
        "eval_seconds": round(time.perf_counter() - t0, 3),
        "best": improved,
    }
    if clock is not None:
        record["cpu_seconds"] = clock()
    with open(metrics_path, "a") as handle:
        handle.write(json.dumps(record) + "\n")
    return improved


def _restore_extras(
    state: dict[str, Any], ema: GeneratorEMA | None, augment: DiscriminatorAugment | None
) -> None:
    """The EMA weights and the augmentation state, when the run has them."""
    if ema is not None:
        if "ema" not in state:
            raise RatganError(
                "the checkpoint has no moving average of G but the config asks "
                "for one (train.ema_half_life_images); resume with the run's own "
                "config."
            )
        ema.average.load_state_dict(state["ema"]["G"])
    if augment is not None and "ada" in state:
        augment.load_state_dict(state["ada"])


def _rank_state(rng: torch.Generator, stream: EndlessBatches) -> dict[str, Any]:
    """The random streams that differ between ranks."""
    return {
        "global": ckpt.capture_rng_state(),
        "train": rng.get_state().cpu(),
        "stream": stream.state_dict(),
    }


def _state(
    cfg: Config,
    nets: Networks,
    optimizers: dict[str, torch.optim.Optimizer],
    ranks: list[dict[str, Any]],
    ema: GeneratorEMA | None = None,
    augment: DiscriminatorAugment | None = None,
    best: dict[str, Any] | None = None,
) -> dict[str, Any]:
    state = {
        "config": cfg.to_dict(),
        "networks": {k: v.state_dict() for k, v in nets.as_dict().items()},
        "optimizers": {k: v.state_dict() for k, v in optimizers.items()},
        "world_size": len(ranks),
        "ranks": ranks,
    }
    if ema is not None:
        state["ema"] = {"G": ema.average.state_dict()}
    if augment is not None:
        state["ada"] = augment.state_dict()
    if best:
        state["best"] = dict(best)
    return state


def _restore(
    state: dict[str, Any],
    nets: Networks,
    optimizers: dict[str, torch.optim.Optimizer],
    rng: torch.Generator,
    stream: EndlessBatches,
    info: distributed.DistInfo,
) -> None:
    """Load a checkpoint; per-rank random streams only when the world size is unchanged."""
    for key, net in nets.as_dict().items():
        net.load_state_dict(state["networks"][key])
    for key, opt in optimizers.items():
        opt.load_state_dict(state["optimizers"][key])
    if int(state["world_size"]) == info.world_size:
        mine = state["ranks"][info.rank]
        ckpt.restore_rng_state(mine["global"])
        rng.set_state(ckpt.rng_state_tensor(mine["train"]))
        stream.load_state_dict(mine["stream"])
    else:
        # Another number of processes: shards differ, so each rank starts fresh random streams
        # (data order, augmentation, codes, noise) derived from the run's seed, the iteration
        # and the rank, none of them a replay of the run's first iterations; weights and
        # optimisers are restored.
        it, saved = int(state["iteration"]), int(state["world_size"])
        fresh = partial(
            distributed.resumed_seed, int(state["config"]["train"]["seed"]), it, info.rank
        )
        rng.manual_seed(fresh(7))
        torch.manual_seed(fresh(8))
        stream.reseed(fresh(0), fresh(1))
        if info.is_main:
            batch = stream.batch_size
            print(
                f"resume: the checkpoint was written by {saved} process(es) and the run goes on "
                f"with {info.world_size}: each process's data order, augmentation and noise "
                f"start afresh at iteration {it}, and a step now sees {batch * info.world_size} "
                f"scans over all processes instead of {batch * saved}.",
                file=sys.stderr,
            )


def _window_means(
    window: list[dict[str, torch.Tensor]], info: distributed.DistInfo
) -> dict[str, float]:
    """Each logged quantity's mean over the window's iterations and over every rank (one
    collective under torchrun; every rank must call it)."""
    keys = list(window[0])
    means = torch.stack([torch.stack([w[k] for w in window]) for k in keys]).float().mean(1)
    return dict(zip(keys, distributed.mean_over_ranks(means, info).tolist(), strict=True))


def _log(
    path: Path,
    iteration: int,
    values: dict[str, float],
    seconds: float,
    writer: _ScalarWriter | None,
    cpu_seconds: float | None = None,
) -> dict[str, float]:
    record = {"iteration": iteration, "seconds": round(seconds, 3), **values}
    if cpu_seconds is not None:
        record["cpu_seconds"] = cpu_seconds  # the run's CPU time over all its sittings
    with open(path, "a") as handle:
        handle.write(json.dumps(record) + "\n")
    if writer is not None:
        for k, v in values.items():
            writer.add_scalar(k, v, iteration)
    return values


def _tensorboard(run_dir: Path) -> _ScalarWriter:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise RatganError(
            "train.tensorboard is true but the tensorboard package is not "
            "installed (pip install tensorboard)."
        ) from None
    return SummaryWriter(str(run_paths(run_dir).tensorboard))
