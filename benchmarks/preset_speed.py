"""Seconds per training iteration of each preset at batch 4, fp32 vs bf16, on this machine.

    python benchmarks/preset_speed.py [--presets sigmarat2 demo] [--iterations 3] [--device cpu]

Random volumes stand in for data (the data path is not what is timed); each figure is the
mean over --iterations timed iterations after one warm-up iteration.
"""

from __future__ import annotations

import argparse
import time

import torch

from ratgan.config import load_config
from ratgan.models import build_networks
from ratgan.training.alphagan import AlphaGANStep, build_optimizers
from ratgan.training.host_memory import keep_freed_host_memory


def seconds_per_iteration(
    preset: str,
    precision: str,
    iterations: int,
    device: str,
    batch_size: int = 4,
    channels_last: bool = True,
) -> float:
    cfg = load_config(
        preset,
        {
            "train.precision": precision,
            "train.batch_size": batch_size,
            "train.channels_last": channels_last,
        },
    )
    dev = torch.device(device)
    torch.manual_seed(0)
    nets = build_networks(cfg.model).place(dev, channels_last)
    fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
    step = AlphaGANStep(
        nets, build_optimizers(nets, cfg), cfg, dev, torch.Generator(device=dev).manual_seed(0)
    )
    x = torch.rand(batch_size, cfg.model.channels, *cfg.model.volume_shape, device=dev) * 2 - 1
    x = x.contiguous(memory_format=fmt)
    step(x, x)  # warm-up
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iterations):
        out = step(x, x)
    float(out["d_total"])  # wait for the device
    return (time.perf_counter() - t0) / iterations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--presets", nargs="+", default=["alpha-wgan-adni", "sigmarat1", "sigmarat2", "demo"]
    )
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cpu":
        keep_freed_host_memory()  # as `ratgan train` does on a CPU
    print(
        f"device={args.device} threads={torch.get_num_threads()} batch=4 "
        f"iterations={args.iterations} torch={torch.__version__}"
    )
    print(f"{'preset':<18}{'fp32 s/it':>12}{'bf16 s/it':>12}{'bf16 speed-up':>15}")
    for preset in args.presets:
        fp32 = seconds_per_iteration(preset, "fp32", args.iterations, args.device)
        bf16 = seconds_per_iteration(preset, "bf16", args.iterations, args.device)
        print(f"{preset:<18}{fp32:>12.3f}{bf16:>12.3f}{fp32 / bf16:>14.2f}x", flush=True)


if __name__ == "__main__":
    main()
