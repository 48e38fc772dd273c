"""Our training iteration against a reference-style one, in one process on one device.

    python benchmarks/train_step.py [--presets sigmarat2] [--iterations 3] [--device cpu]

(a) ours: the cohort resident on the device, batched augmentation there, bf16 autocast,
    channels-last 3D, the discriminator step's E/G forwards without a graph, fused critic
    calls where no batch norm mixes samples, G's upsample+conv pairs as transposed convs,
    spectral-normalised weights computed once per phase, foreach optimisers, no per-step
    host sync (tests/training/test_step_matches_literal.py: the same mathematics).
(b) reference-style, following the published loop: fp32, default memory layout, a DataLoader
    with 2 workers and per-sample CPU augmentation (MONAI) re-created every step, E and G
    forwards recomputed with a graph in the discriminator step, every critic call separate,
    G's literal nearest-upsample then conv.
Same architecture, batch size 4, same data.  Prints seconds per iteration, the ratio, peak
memory (CUDA: allocator peak; CPU: the process's peak resident set; each measurement runs
in a fresh process) and achieved TFLOP/s (FLOPs of one iteration counted once with
torch.utils.flop_counter's formulas: the published formulation's count for the reference-style
loop, the count ours really executes for ours, whose generator runs each upsample+conv pair as
one equivalent transposed conv with 27/8 fewer multiply-adds; the model-equivalent rate divides
the published count by our time).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import flop_registry

from ratgan.config import Config, load_config
from ratgan.data.augment import BatchAugmenter
from ratgan.data.dataset import EndlessBatches, load_cohort
from ratgan.data.phantom import write_cohort
from ratgan.models import Networks, build_networks
from ratgan.training import losses
from ratgan.training.alphagan import AlphaGANStep, build_optimizers, frozen
from ratgan.training.host_memory import keep_freed_host_memory


class PerSampleAugmented(Dataset):
    """Per-sample CPU augmentation as in the published code (MONAI transforms, numpy in)."""

    def __init__(self, volumes: np.ndarray, cfg: Config) -> None:
        from monai.transforms import (
            Compose,
            RandAffine,
            RandFlip,
            RandGaussianNoise,
            RandRotate,
            RandScaleIntensity,
            RandZoom,
        )

        a = cfg.augment
        self.volumes = volumes
        self.transform = Compose(
            [
                RandRotate(
                    range_x=a.rotate_range,
                    range_y=a.rotate_range,
                    range_z=a.rotate_range,
                    prob=a.rotate_prob,
                    padding_mode="zeros",
                ),
                RandFlip(prob=a.flip_prob, spatial_axis=a.flip_axis),
                RandScaleIntensity(factors=a.intensity_factor, prob=a.intensity_prob),
                RandZoom(
                    min_zoom=a.zoom_range[0],
                    max_zoom=a.zoom_range[1],
                    prob=a.zoom_prob,
                    mode="nearest",
                ),
                RandGaussianNoise(prob=a.noise_prob, std=a.noise_std),
                RandAffine(
                    prob=a.translate_prob, translate_range=a.translate_range, padding_mode="zeros"
                ),
            ]
        )

    def __len__(self) -> int:
        return len(self.volumes)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.as_tensor(self.transform(self.volumes[i])).float()


def reference_iteration(
    nets: Networks, opt: dict, cfg: Config, dataset: Dataset, device: torch.device
) -> None:
    """One iteration in the published code's style (see the module docstring)."""
    E, G, D, C = nets.encoder, nets.generator, nets.discriminator, nets.code_discriminator
    B, L = cfg.train.batch_size, cfg.model.latent_dim

    def batch() -> torch.Tensor:  # the published loop re-creates its loader every step
        loader = DataLoader(dataset, batch_size=B, shuffle=True, num_workers=2, drop_last=True)
        return next(iter(loader)).to(device)

    x = batch()
    z_r = torch.randn(B, L, device=device)
    with frozen(D, C):
        z_e = E(x).reshape(B, -1)
        x_rec, x_gen = G(z_e), G(z_r)
        total, _ = losses.encoder_generator_loss(
            D(x_rec).reshape(-1), D(x_gen).reshape(-1), C(z_e).reshape(-1), x, x_rec, cfg.loss
        )
    opt["E"].zero_grad()
    opt["G"].zero_grad()
    total.backward()
    opt["E"].step()
    opt["G"].step()
    opt["G"].step()

    x = batch()
    z_r = torch.randn(B, L, device=device)
    z_e = E(x).reshape(B, -1)  # recomputed with a graph, as published
    x_rec, x_gen = G(z_e), G(z_r)
    gp = losses.gradient_penalty(D, x, x_rec.detach()) + losses.gradient_penalty(
        D, x, x_gen.detach()
    )
    total, _ = losses.discriminator_loss(
        D(x).reshape(-1), D(x_rec.detach()).reshape(-1), D(x_gen.detach()).reshape(-1), gp, cfg.loss
    )
    opt["D"].zero_grad()
    total.backward()
    opt["D"].step()

    gp = losses.gradient_penalty(C, z_r, z_e.detach())
    total, _ = losses.code_discriminator_loss(
        C(z_e.detach()).reshape(-1), C(z_r).reshape(-1), gp, cfg.loss
    )
    opt["C"].zero_grad()
    total.backward()
    opt["C"].step()
    float(total.detach())  # the published loop logs with .item() every step


def _reset_peak(device: torch.device) -> None:
    """Start a new peak-memory window: the CUDA allocator's, or the process's VmHWM on Linux."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        return
    # Writing 5 to clear_refs resets the peak resident set size (Linux >= 4.0); elsewhere the
    # figure is the process's peak so far (ru_maxrss).
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _time(fn, iterations: int, device: torch.device) -> float:
    _reset_peak(device)
    fn()  # warm-up (inside the memory window: the first step allocates the optimiser state)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iterations):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / iterations


def _setup(preset: str, ours: bool, device: torch.device, data: Path, extra: dict | None = None):
    over = {"train.batch_size": 4}
    if not ours:
        over.update(
            {
                "train.precision": "fp32",
                "train.channels_last": False,
                "model.g_fused_upsample": False,
            }
        )
    else:
        over.update({"train.precision": "bf16", "train.channels_last": True})
    cfg = load_config(preset, {**over, **(extra or {})})
    torch.manual_seed(0)
    nets = build_networks(cfg.model).place(device, cfg.train.channels_last)
    opt = build_optimizers(nets, cfg)
    cohort = load_cohort(data, cfg.data, progress=False)
    return cfg, nets, opt, cohort


class _FlopCount(TorchDispatchMode):
    """Sums FLOPs with torch.utils.flop_counter's formulas (its registry).

    FlopCounterMode itself tracks modules with backward hooks that refuse the double backward
    of the gradient penalty, so this mode applies the same registry without the tracker.
    """

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func._overloadpacket
        if packet in flop_registry:
            self.total += flop_registry[packet](*args, **kwargs, out_val=out)
        return out


def count_flops(preset: str, device: torch.device, data: Path, fused_upsample: bool) -> int:
    """FLOPs of one iteration in fp32, with G's upsample+conv fused (what ours executes) or
    literal (what the published formulation, and so the reference-style loop, executes)."""
    cfg, nets, opt, cohort = _setup(
        preset, True, device, data, {"model.g_fused_upsample": fused_upsample}
    )
    cfg.train.precision = "fp32"
    step = AlphaGANStep(nets, opt, cfg, device, torch.Generator(device=device).manual_seed(0))
    x = cohort.images[:4].to(device)
    with _FlopCount() as counter:
        step(x, x)
    return counter.total


def time_ours(
    preset: str, device: torch.device, data: Path, iterations: int
) -> tuple[float, float]:
    """Seconds per iteration and peak memory (MB) of our training iteration."""
    torch.backends.cudnn.benchmark = True  # as `ratgan train` sets it on CUDA
    if device.type == "cpu":
        keep_freed_host_memory()  # as `ratgan train` does on a CPU
    cfg, nets, opt, cohort = _setup(preset, True, device, data)
    stream = EndlessBatches(
        cohort, 4, seed=0, device=device, augmenter=BatchAugmenter(cfg.augment, seed=1)
    )
    step = AlphaGANStep(nets, opt, cfg, device, torch.Generator(device=device).manual_seed(0))

    def iteration() -> None:
        out = step(
            next(stream)[0].contiguous(memory_format=torch.channels_last_3d),
            next(stream)[0].contiguous(memory_format=torch.channels_last_3d),
        )
        float(out["c_total"])  # one sync per timed iteration, so the timing is honest

    return _time(iteration, iterations, device), _peak_mb(device)


def time_reference(
    preset: str, device: torch.device, data: Path, iterations: int
) -> tuple[float, float]:
    """Seconds per iteration and peak memory (MB) of the reference-style iteration."""
    torch.backends.cudnn.benchmark = False  # PyTorch's default, which the published code kept
    cfg, nets, opt, cohort = _setup(preset, False, device, data)
    dataset = PerSampleAugmented(cohort.images.numpy(), cfg)
    seconds = _time(
        lambda: reference_iteration(nets, opt, cfg, dataset, device), iterations, device
    )
    return seconds, _peak_mb(device)


def _in_fresh_process(fn, *args):
    """Run one measurement in its own process: process-wide settings (`ratgan train`'s host
    allocator tuning, cuDNN autotuning) and peak memory do not leak between measurements."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.SimpleQueue()
    # Not a Pool: its daemonic workers may not start the reference loop's DataLoader workers.
    proc = ctx.Process(target=_measure, args=(queue, multiprocessing.get_start_method(), fn, args))
    proc.start()
    result = queue.get()
    proc.join()
    if isinstance(result, BaseException):
        raise result
    return result


def _measure(queue, start_method: str, fn, args) -> None:
    # A spawned child inherits "spawn" as its default; give the DataLoader the parent's
    # default back (fork on Linux, as the published code ran).
    multiprocessing.set_start_method(start_method, force=True)
    try:
        queue.put(fn(*args))
    except BaseException as exc:  # noqa: BLE001 - handed to the parent, which re-raises it
        queue.put(exc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["sigmarat2"])
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    parser.add_argument("--plot", type=Path, help="also draw them as a bar chart (PNG)")
    args = parser.parse_args()
    device = torch.device(args.device)
    rows = []
    # The benchmark cohort lives in a folder removed at the end, even when a measurement fails.
    with tempfile.TemporaryDirectory(prefix="ratgan-bench-") as tmp:
        data = Path(tmp) / "phantom"
        write_cohort(data, subjects=16, seed=0, progress=False)
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
        print(
            f"device={args.device} ({name}) threads={torch.get_num_threads()} batch=4 "
            f"iterations={args.iterations} torch={torch.__version__}"
        )
        for preset in args.presets:
            published = count_flops(preset, device, data, fused_upsample=False)
            executed = count_flops(preset, device, data, fused_upsample=True)

            ref, ref_mem = _in_fresh_process(time_reference, preset, device, data, args.iterations)
            ours, ours_mem = _in_fresh_process(time_ours, preset, device, data, args.iterations)
            print(
                f"{preset}: GFLOP/iteration {published / 1e9:.1f} as published (the "
                f"reference-style loop executes these), {executed / 1e9:.1f} executed by ours "
                "(fused upsample+conv)"
            )
            print(
                f"  reference-style fp32 : {ref:8.3f} s/it  {published / ref / 1e12:7.3f} TFLOP/s"
                f"{'':31}peak {ref_mem:8.0f} MB"
            )
            print(
                f"  ours (bf16, resident): {ours:8.3f} s/it  {executed / ours / 1e12:7.3f} TFLOP/s "
                f"executed ({published / ours / 1e12:7.3f} model-equivalent)  "
                f"peak {ours_mem:8.0f} MB"
            )
            print(f"  speed-up: {ref / ours:.2f}x", flush=True)
            rows.append(
                {
                    "preset": preset,
                    "reference_s": ref,
                    "ours_s": ours,
                    "published_gflop": published / 1e9,
                    "executed_gflop": executed / 1e9,
                    "reference_peak_mb": ref_mem,
                    "ours_peak_mb": ours_mem,
                }
            )
    header = {
        "device": args.device,
        "name": name,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "iterations": args.iterations,
        "batch": 4,
    }
    if args.json:
        args.json.write_text(json.dumps({**header, "rows": rows}, indent=2))
    if args.plot:
        plot(rows, header, args.plot)


def plot(rows: list[dict], header: dict, out: Path) -> None:
    """Seconds per iteration, reference-style against ours, one pair of bars per preset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.9 * len(rows) + 2.5, 3.6), dpi=120)
    xs = np.arange(len(rows))
    ref = [r["reference_s"] for r in rows]
    ours = [r["ours_s"] for r in rows]
    ax.bar(xs - 0.2, ref, 0.4, label="published-style loop (fp32)", color="#9a9a9a")
    ax.bar(xs + 0.2, ours, 0.4, label="ratgan (bf16)", color="#2a7ab8")
    for x, a, b in zip(xs, ref, ours, strict=True):
        ax.text(x + 0.2, b, f"{a / b:.2f}x", ha="center", va="bottom", fontsize=9)
    ax.set_xticks(xs, [r["preset"] for r in rows])
    ax.set_ylabel("seconds per iteration (batch 4)")
    ax.set_title(
        f"Training iteration on {header['name']} ({header['device']}, "
        f"{header['threads']} threads, torch {header['torch']})",
        fontsize=9,
    )
    ax.legend(frameon=False, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


if __name__ == "__main__":
    main()
