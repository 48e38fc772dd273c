"""benchmarks/quality_vs_compute.py finds the checkpoints that can sample: a GAN run's rotating
and archived ones, and a latent diffusion run's from its second stage on."""

import shutil

from ratgan.config import load_config
from ratgan.training.ldm import train_ldm
from ratgan.training.run import train


def test_archived_checkpoints_join_the_rotating_ones(phantom_dir, tmp_path, load_benchmark):
    cfg = load_config(
        "tiny",
        {"train.iterations": 4, "train.checkpoint_every": 1, "train.keep_checkpoints": 2},
    )
    run = tmp_path / "gan"
    train(cfg, phantom_dir, run, progress=False)
    names = sorted(p.name for p in (run / "checkpoints").glob("ckpt_*.pt"))
    assert names == ["ckpt_0000003.pt", "ckpt_0000004.pt"]  # rotation removed 1 and 2
    archive = tmp_path / "archive" / "gan"
    archive.mkdir(parents=True)
    shutil.copy(run / "checkpoints" / "ckpt_0000003.pt", archive / "ckpt_0000001.pt")
    bench = load_benchmark("quality_vs_compute")
    assert [i for i, _ in bench.checkpoints(run)] == [3, 4]
    found = bench.checkpoints(run, tmp_path / "archive")
    assert [i for i, _ in found] == [1, 3, 4]
    assert found[0][1] == archive / "ckpt_0000001.pt"


def test_a_diffusion_run_is_evaluated_from_its_second_stage(phantom_dir, tmp_path, load_benchmark):
    cfg = load_config(
        "ldm-tiny",
        {"train.iterations": 4, "train.checkpoint_every": 1, "train.keep_checkpoints": 10},
    )
    assert cfg.ldm.autoencoder.iterations == 2
    run = tmp_path / "ldm"
    train_ldm(cfg, phantom_dir, run, progress=False)
    assert [i for i, _ in load_benchmark("quality_vs_compute").checkpoints(run)] == [3, 4]
