"""Generation throughput of `ratgan generate`: scans per second, batched, one model load.

    python benchmarks/generate_speed.py [--presets sigmarat2] [--n 32] [--device cpu]
                                        [--batch-sizes 1 8] [--precisions fp32 bf16]

For each preset a full-size run is trained for one iteration on a 16-subject phantom cohort
(the weights' values do not change the cost), then, in one process on one device:
  * `generate_scans` (what `ratgan generate` calls) writes --n NIfTI scans for every batch size
    and precision: scans/s end to end (model load, sampling, inverse preprocessing, .nii.gz
    writing, manifest), and scans/s of the network alone (the same batches through
    ``sample_volumes`` without writing);
  * a naive loop for contrast: per scan, reload the checkpoint, sample one code, write the file.
Every figure is measured in this run; nothing is assumed.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

from ratgan.config import load_config
from ratgan.data.phantom import write_cohort
from ratgan.generation import generate_scans
from ratgan.generation.sample import latent_codes, load_generator, sample_volumes, scan_seed
from ratgan.training.run import train


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def network_rate(run: Path, device: str, precision: str, batch_size: int, n: int) -> float:
    """Scans/s of G alone (codes in, volumes on the host), after one warm-up batch."""
    loaded = load_generator(run, device=device, precision=precision)
    batches = [
        latent_codes(
            [scan_seed(0, i) for i in range(s, s + batch_size)], loaded.config.model.latent_dim
        )
        for s in range(0, n, batch_size)
    ]
    sample_volumes(loaded, batches[0])
    _sync(loaded.device)
    t0 = time.perf_counter()
    for z in batches:
        sample_volumes(loaded, z)  # returns host numpy: includes the device -> host copy
    return len(batches) * batch_size / (time.perf_counter() - t0)


def end_to_end_rate(
    run: Path, out: Path, device: str, precision: str, batch_size: int, n: int
) -> float:
    """Scans/s of generate_scans writing n files (its model load included)."""
    generate_scans(
        run,
        batch_size,
        out / "warmup",
        device=device,
        precision=precision,
        batch_size=batch_size,
        progress=False,
    )  # first-call kernels, page cache
    t0 = time.perf_counter()
    generate_scans(
        run,
        n,
        out / "timed",
        device=device,
        precision=precision,
        batch_size=batch_size,
        progress=False,
    )
    seconds = time.perf_counter() - t0
    shutil.rmtree(out)
    return n / seconds


def naive_rate(run: Path, out: Path, device: str, precision: str, n: int) -> float:
    """Scans/s when every scan reloads the model and is sampled alone."""
    t0 = time.perf_counter()
    for i in range(n):
        generate_scans(
            run,
            1,
            out / f"scan{i}",
            seed=i,
            device=device,
            precision=precision,
            batch_size=1,
            progress=False,
        )
    seconds = time.perf_counter() - t0
    shutil.rmtree(out)
    return n / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["sigmarat2"])
    parser.add_argument("--n", type=int, default=32, help="scans per measurement")
    parser.add_argument("--naive-n", type=int, default=4, help="scans for the naive loop")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ratgan-genbench-"))
    data = work / "phantom"
    write_cohort(data, subjects=16, seed=0, progress=False)
    dev = torch.device(args.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    print(
        f"device={args.device} ({name}) threads={torch.get_num_threads()} n={args.n} "
        f"torch={torch.__version__}"
    )
    for preset in args.presets:
        run = work / f"run-{preset}"
        cfg = load_config(
            preset,
            {
                "train.iterations": 1,
                "train.batch_size": 2,
                "train.checkpoint_every": 1,
                "train.sample_every": 1000,
                "train.device": args.device,
            },
        )
        train(cfg, data, run, progress=False)
        print(f"{preset}:")
        for precision in args.precisions:
            for bs in args.batch_sizes:
                net = network_rate(run, args.device, precision, bs, args.n)
                e2e = end_to_end_rate(run, work / "out", args.device, precision, bs, args.n)
                print(
                    f"  {precision} batch {bs:3d}: {e2e:8.2f} scans/s end to end "
                    f"(.nii.gz written), network alone {net:8.2f} scans/s",
                    flush=True,
                )
            naive = naive_rate(run, work / "naive", args.device, precision, args.naive_n)
            print(
                f"  {precision} naive (reload per scan, batch 1): {naive:8.2f} scans/s", flush=True
            )
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
