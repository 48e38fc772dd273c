"""A profiler splits a training iteration into the parts benchmarks/demo_iteration.py reports."""

from torch.profiler import ProfilerActivity, profile

from ratgan.config import load_config
from ratgan.evaluation.tracking import quality_probe_factory
from ratgan.training.run import train


def test_one_profiled_iteration_carries_every_part_label(phantom_dir, tmp_path):
    cfg = load_config(
        "tiny",
        {
            "train.iterations": 1,
            "train.eval_every": 0,
            "ada.enabled": True,
            "train.ema_half_life_images": 8,
        },
    )
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train(
            cfg, phantom_dir, tmp_path / "run", progress=False, probe_factory=quality_probe_factory
        )
    counts = {e.key: e.count for e in prof.key_averages() if e.key.startswith("ratgan.")}
    assert counts == {
        "ratgan.data": 1,
        "ratgan.eg": 1,
        "ratgan.ema": 1,
        "ratgan.d_inputs": 1,
        "ratgan.d": 1,
        "ratgan.c": 1,
    }
