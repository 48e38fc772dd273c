"""Where a `demo` training iteration spends its time, and what makes it faster.

    python benchmarks/demo_iteration.py [--config demo] [--iterations 40] [--threads 2]
        [--variants base contiguous compile double-g-step no-whiten no-mbstd reuse] [--profile 10]

Each variant trains the preset with `ratgan.training.run.train` (the loop `ratgan train` runs:
batched augmentation, EMA, adaptive critic augmentation, output noise, bf16) on a 16-subject
phantom cohort, in a fresh process, for ``--iterations`` iterations after 10 warm-up ones; the
figure is wall and process CPU seconds per iteration between the log lines at iteration 10 and
the last (sampling, checkpointing and quality evaluation are scheduled outside that window; the
one quality evaluation at the end is reported separately as its own cost).  Variants:

* ``base``: the preset as it is;
* ``contiguous``: ``train.channels_last: false``;
* ``compile``: ``train.compile: true`` (G and E compiled; the first iteration's time is the
  compile cost, printed);
* ``double-g-step``: ``optim.double_generator_step: true`` (not the same training: the
  published code, and the paper presets, step G twice per iteration; `demo` once);
* ``no-whiten``: ``model.e_whiten: false`` (the codes' whitening, one 128 x 128 eigh per
  encoder call);
* ``no-mbstd``: ``model.d_mbstd_group: 0`` (the minibatch standard deviation in D);
* ``reuse``: ``optim.critic_reuses_eg_samples: true`` (not the same training: D and C train
  on the E/G phase's samples instead of new ones from the updated E and G);
* ``threads1``: one torch thread;
* ``cube``: ``model.volume_depth: null`` (64^3 volumes, the paper's cube, instead of the
  presets' 64 x 64 x 48: the 40-slice scans padded to 64 slices instead of 48);
* ``final-conv-32``: ``model.g_final_conv: 32`` (with ``--config long``: G's full-resolution
  conv 32 channels wide instead of 8);
* ``fp32``: ``train.precision: fp32`` (bf16 autocast is fast only where the CPU computes bf16
  convolutions natively, e.g. Intel AMX).

``--profile N`` also runs N iterations (warm-up included) of ``base`` under ``torch.profiler``
and prints the share of each part of the iteration (the ``record_function`` labels of
`ratgan.training.alphagan.AlphaGANStep` and of the loop's data step) and the top operators.
Compare variants only within one run of this script: the machine's speed drifts.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import tempfile
import time
from pathlib import Path

import torch

# Config overrides of each variant; "threads" (not a config key) sets torch's thread count.
VARIANTS: dict[str, dict] = {
    "base": {},
    "contiguous": {"train.channels_last": False},
    "compile": {"train.compile": True},
    "double-g-step": {"optim.double_generator_step": True},
    "no-whiten": {"model.e_whiten": False},
    "no-mbstd": {"model.d_mbstd_group": 0},
    "reuse": {"optim.critic_reuses_eg_samples": True},
    "threads1": {"threads": 1},
    "fp32": {"train.precision": "fp32"},
    "cube": {"model.volume_depth": None, "data.target_shape": [64, 64, 64]},
    "final-conv-32": {"model.g_final_conv": 32},
}
WARMUP = 10
LABELS = ("ratgan.data", "ratgan.eg", "ratgan.ema", "ratgan.d_inputs", "ratgan.d", "ratgan.c")


def _config(preset: str, overrides: dict, iterations: int):
    from ratgan.config import load_config

    total = WARMUP + iterations
    return load_config(
        preset,
        {
            "train.iterations": total,
            "train.log_every": WARMUP,
            "train.checkpoint_every": total,
            "train.sample_every": total,
            "train.eval_every": total,
            **overrides,
        },
    )


def _run_variant(args: tuple[str, str, dict, int, int, str]) -> dict:
    """Train one variant in this (fresh) process; seconds per iteration from metrics.jsonl."""
    preset, name, overrides, iterations, threads, data = args
    overrides = dict(overrides)
    torch.set_num_threads(overrides.pop("threads", threads))
    from ratgan.evaluation.tracking import quality_probe_factory
    from ratgan.training.run import train

    cfg = _config(preset, overrides, iterations)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        train(cfg, data, run, progress=False, probe_factory=quality_probe_factory)
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "kind" not in r]
    first = next(r for r in steps if r["iteration"] == WARMUP)
    last = steps[-1]
    n = last["iteration"] - WARMUP
    quality = next(r for r in rows if r.get("kind") == "quality")
    return {
        "variant": name,
        "threads": torch.get_num_threads(),
        "s_per_it": (last["seconds"] - first["seconds"]) / n,
        "cpu_s_per_it": (last["cpu_seconds"] - first["cpu_seconds"]) / n,
        "warmup_s": first["seconds"],
        "eval_s": quality["eval_seconds"],
    }


def _profile(preset: str, iterations: int, threads: int, data: str) -> None:
    """Run ``iterations`` of the preset under the profiler; print each part's share."""
    from torch.profiler import ProfilerActivity, profile

    from ratgan.training.run import train

    torch.set_num_threads(threads)
    cfg = _config(preset, {"train.eval_every": 0}, iterations - WARMUP)
    with tempfile.TemporaryDirectory() as tmp, profile(activities=[ProfilerActivity.CPU]) as prof:
        train(cfg, data, Path(tmp) / "run", progress=False)
    events = prof.key_averages()
    by_name = {e.key: e for e in events}
    parts = {k: by_name[k].cpu_time_total / by_name[k].count for k in LABELS if k in by_name}
    total = sum(parts.values())
    print(f"\nprofile of {iterations} iterations, warm-up included ({preset}, {threads} threads):")
    print(f"{'part':<20}{'ms per it':>12}{'share':>8}")
    for k, us in parts.items():
        print(f"{k:<20}{us / 1000:>12.1f}{us / total:>8.1%}")
    print(f"{'(sum)':<20}{total / 1000:>12.1f}")
    print("\ntop operators by self CPU time:")
    print(events.table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=40))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="demo")
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--profile", type=int, default=0, help="profiled iterations (0: none)")
    args = parser.parse_args()
    from ratgan.data.phantom import write_cohort

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "cohort"
        write_cohort(data, subjects=16, seed=0, progress=False)
        images = str(data / "images")
        print(
            f"{args.config}: {args.iterations} timed iterations after {WARMUP}, "
            f"torch {torch.__version__}, threads {args.threads} (each variant a fresh process)"
        )
        print(
            f"{'variant':<16}{'threads':>8}{'s/it':>8}{'CPU s/it':>10}"
            f"{'vs base':>9}{'first 10 it s':>15}{'one eval s':>12}"
        )
        ctx = multiprocessing.get_context("spawn")
        base = None
        for name in args.variants:
            t0 = time.perf_counter()
            with ctx.Pool(1) as pool:
                r = pool.map(
                    _run_variant,
                    [(args.config, name, VARIANTS[name], args.iterations, args.threads, images)],
                )[0]
            base = base or (r["s_per_it"] if name == "base" else None)
            ratio = f"{base / r['s_per_it']:.2f}x" if base else "-"
            print(
                f"{name:<16}{r['threads']:>8}{r['s_per_it']:>8.3f}{r['cpu_s_per_it']:>10.3f}"
                f"{ratio:>9}{r['warmup_s']:>15.1f}{r['eval_s']:>12.2f}"
                f"   ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
        if args.profile:
            with ctx.Pool(1) as pool:
                pool.apply(_profile, (args.config, args.profile, args.threads, images))


if __name__ == "__main__":
    main()
