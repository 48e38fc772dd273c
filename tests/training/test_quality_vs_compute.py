"""benchmarks/quality_vs_compute.py finds the checkpoints that can sample: a GAN run's rotating
and archived ones, and a latent diffusion run's from its second stage on."""

import shutil
from pathlib import Path

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


def test_summarise_reads_density_and_coverage_of_both_spaces(load_benchmark):
    bench = load_benchmark("quality_vs_compute")
    stat = {"mean": 0.25, "std": 0.0, "values": [0.25]}
    row = {"fd": stat, "precision": stat, "recall": stat}
    metrics = {
        "reference_row": "real",
        "rows": {"real": {"msssim": stat}, "run@1": {"msssim": stat}},
        "feature_spaces": [
            {
                "name": "random 3D conv",
                "rows": {"run@1": {**row, "density": 1.5, "coverage": stat}},
            },
            {"name": "anatomy", "rows": {"run@1": row}},  # a report older than the columns
        ],
    }
    out = bench.summarise(metrics, "run@1")
    assert out["random_density"] == 1.5 and out["random_coverage"] == 0.25
    assert out["anatomy_density"] != out["anatomy_density"]  # NaN where not measured
    assert {"random_density", "random_coverage", "anatomy_density", "anatomy_coverage"} <= set(
        bench.COLUMNS
    )


def test_every_kth_checkpoint_keeps_the_last_one(load_benchmark):
    every_kth = load_benchmark("quality_vs_compute").every_kth
    kept = [(i, Path(f"ckpt_{i}.pt")) for i in (1000, 2000, 3000, 3320)]
    assert [i for i, _ in every_kth(kept, 2)] == [1000, 3000, 3320]
    assert [i for i, _ in every_kth(kept, 3)] == [1000, 3320]
    assert [i for i, _ in every_kth(kept, 1)] == [1000, 2000, 3000, 3320]
    assert every_kth([], 2) == []


def test_seeds_combine_to_means_and_the_frechet_spread(load_benchmark, tmp_path):
    import numpy as np

    bench = load_benchmark("quality_vs_compute")
    rows = [
        {"random_fd": 120.0, "anatomy_fd": 150.0, "msssim": 0.81},
        {"random_fd": 140.0, "anatomy_fd": 160.0, "msssim": 0.80},
        {"random_fd": 110.0, "anatomy_fd": 170.0, "msssim": 0.82},
    ]
    out = bench.combine_seeds(rows)
    assert out["seeds"] == 3
    assert out["random_fd"] == np.mean([120, 140, 110])
    assert np.isclose(out["random_fd_sd"], np.std([120, 140, 110], ddof=1))
    assert np.isclose(out["anatomy_fd_sd"], 10.0)
    assert np.isclose(out["msssim"], 0.81)
    one = bench.combine_seeds(rows[:1])
    assert one["random_fd"] == 120.0 and one["random_fd_sd"] != one["random_fd_sd"]  # NaN
    # seed 1 keeps the report names written before --seeds existed
    assert bench.set_name(Path("r/long"), 500, 1) == "long@500"
    assert bench.set_name(Path("r/long"), 500, 2) == "long@500~seed2"
    # the plot draws a band where a spread exists and a plain line where it does not
    plotted = [
        {"run": "a", "cpu_hours": h, **{k: 1.0 for k in bench.COLUMNS[3:]}, "random_fd_sd": sd}
        for h, sd in ((0.5, 0.2), (1.0, float("nan")))
    ]
    bench.plot(plotted, tmp_path / "q.png")
    assert (tmp_path / "q.png").stat().st_size > 0
