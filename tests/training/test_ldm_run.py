"""A latent diffusion run end to end on tiny volumes: train -> resume -> generate.

Known answers: a run killed after any checkpoint and resumed has the same losses, weights and
generated scans as the uninterrupted run (at the stage boundary and inside stage 2); a scan
depends only on its seed; the files carry the reference scan's header.
"""

import json
import math
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from ratgan.cli import main
from ratgan.config import load_config
from ratgan.errors import RatganError
from ratgan.generation import generate_scans
from ratgan.training import checkpoint as ckpt
from ratgan.training.ldm import train_ldm


def _cfg(**over):
    base = {"train.iterations": 6, "train.keep_checkpoints": 10, "train.sample_every": 3}
    base.update(over)
    return load_config("ldm-tiny", base)


def _metrics(run: Path) -> list[dict]:
    return [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]


def _strip_time(rows: list[dict]) -> list[dict]:
    drop = {"seconds", "cpu_seconds", "eval_seconds"}
    return [{k: v for k, v in r.items() if k not in drop} for r in rows]


@pytest.fixture(scope="module")
def full_run(phantom_dir, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("ldm") / "full"
    train_ldm(_cfg(), phantom_dir, run, progress=False)
    return run


def test_the_run_folder_has_the_gan_layout(full_run):
    names = {p.name for p in full_run.iterdir()}
    assert {"config.yaml", "data.json", "metrics.jsonl", "loss_curves.png", "samples"} <= names
    assert [i for i, _ in ckpt.list_checkpoints(full_run)] == [2, 4, 6]
    assert (full_run / "samples" / "iter_0000003.png").is_file()
    rows = _metrics(full_run)
    assert [r["stage"] for r in rows] == ["autoencoder"] * 2 + ["diffusion"] * 4
    cpu = [r["cpu_seconds"] for r in rows]
    assert all(c > 0 for c in cpu) and cpu == sorted(cpu)
    state = ckpt.load_checkpoint(ckpt.checkpoint_path(full_run, 6))
    assert state["config"]["family"] == "ldm" and "model" not in state["config"]
    assert set(state["networks"]) == {"autoencoder", "unet"} and "ema" in state
    # The latents the UNet learns are scaled to unit variance (fixed at the stage boundary).
    mu, sigma = state["latents"]["posterior"].chunk(2, dim=1)
    z = (mu + sigma * torch.randn(mu.shape, generator=torch.Generator().manual_seed(0))) * float(
        state["latents"]["scale"]
    )
    assert abs(float(z.std()) - 1.0) < 1e-4


@pytest.mark.parametrize("killed_after", [2, 4])
def test_a_resumed_run_equals_the_uninterrupted_one(full_run, phantom_dir, tmp_path, killed_after):
    part = tmp_path / "part"
    shutil.copytree(full_run, part)
    for it, path in ckpt.list_checkpoints(part):
        if it > killed_after:
            path.unlink()  # as a process killed after the checkpoint of `killed_after`
    train_ldm(_cfg(), None, part, resume=True, progress=False)
    assert _strip_time(_metrics(part)) == _strip_time(_metrics(full_run))
    a = ckpt.load_checkpoint(ckpt.checkpoint_path(full_run, 6))
    b = ckpt.load_checkpoint(ckpt.checkpoint_path(part, 6))
    for group in ("networks", "ema"):
        for net, weights in a[group].items():
            for key, value in weights.items():
                assert torch.equal(value, b[group][net][key]), (group, net, key)
    assert b["cpu_seconds"] > 0  # the CPU time of both sittings (not compared: timing)
    ga = generate_scans(full_run, 2, tmp_path / "ga", progress=False)
    gb = generate_scans(part, 2, tmp_path / "gb", progress=False)
    for x, y in zip(ga, gb, strict=True):
        assert np.array_equal(nib.load(x).get_fdata(), nib.load(y).get_fdata())


def test_generation_is_deterministic_per_scan_and_carries_the_real_header(
    full_run, phantom_dir, tmp_path
):
    three = generate_scans(full_run, 3, tmp_path / "a", seed=7, batch_size=2, progress=False)
    one = generate_scans(full_run, 1, tmp_path / "b", seed=7, batch_size=2, progress=False)
    assert np.array_equal(nib.load(three[0]).get_fdata(), nib.load(one[0]).get_fdata())
    other = generate_scans(full_run, 1, tmp_path / "c", seed=8, batch_size=2, progress=False)
    assert not np.array_equal(nib.load(one[0]).get_fdata(), nib.load(other[0]).get_fdata())
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    rec = manifest["scans"][0]
    assert (rec["family"], rec["sampler"], rec["steps"], rec["weights"]) == (
        "ldm",
        "ddim",
        4,
        "ema",
    )
    reference = nib.load(rec["reference"])
    img = nib.load(three[0])
    assert img.shape == reference.shape
    assert np.array_equal(img.affine, reference.affine)
    assert img.header.get_zooms() == reference.header.get_zooms()


def test_generate_cli_takes_sampler_and_steps_and_refuses_them_for_a_gan(
    full_run, phantom_dir, tmp_path, capsys
):
    out = tmp_path / "ddpm"
    argv = ["generate", str(full_run), "--n", "1", "--out", str(out), "--no-progress"]
    assert main([*argv, "--sampler", "ddpm", "--steps", "1000"]) == 0
    rec = json.loads((out / "manifest.json").read_text())["scans"][0]
    assert (rec["sampler"], rec["steps"]) == ("ddpm", 1000)
    assert main([*argv, "--steps", "1001"]) == 2
    assert "--steps must be between 1 and 1000 (got 1001)" in capsys.readouterr().err
    gan = tmp_path / "gan"
    cfg = load_config("tiny", {"train.iterations": 1})
    from ratgan.training.run import train

    train(cfg, phantom_dir, gan, progress=False)
    assert (
        main(["generate", str(gan), "--n", "1", "--out", str(tmp_path / "g"), "--steps", "5"]) == 2
    )
    assert "--sampler and --steps are for latent diffusion runs" in capsys.readouterr().err


def test_generation_refuses_an_unknown_precision_before_writing(full_run, tmp_path):
    # An alpha-GAN run refuses it; an ldm run sampled in fp32 and recorded "fp32" instead.
    out = tmp_path / "out"
    with pytest.raises(RatganError, match="precision must be fp32 or bf16 \\(got 'fp16'\\)"):
        generate_scans(full_run, 1, out, precision="fp16", progress=False)
    assert not out.exists()


def test_an_autoencoder_stage_checkpoint_cannot_sample(phantom_dir, tmp_path):
    run = tmp_path / "run"
    train_ldm(_cfg(**{"train.iterations": 3, "train.checkpoint_every": 2}), phantom_dir, run, False)
    ckpt.checkpoint_path(run, 3).unlink()
    with pytest.raises(RatganError, match="from the autoencoder stage"):
        generate_scans(run, 1, tmp_path / "out", progress=False)


def test_quality_tracking_writes_the_floor_and_sample_lines(phantom_dir, tmp_path):
    from ratgan.data.phantom import write_cohort

    run = tmp_path / "run"
    held = tmp_path / "held"  # other subjects: training scans are refused as train.eval_real
    write_cohort(held, subjects=2, seed=321, progress=False)
    assert main(
        ["train", "--config", "ldm-tiny", "--data", str(phantom_dir), "--out", str(run),
         "--eval-every", "2", "--eval-real", str(held), "--no-progress"]
    ) == 0  # fmt: skip
    assert load_config(str(run / "config.yaml")).train.eval_real == str(held.resolve())
    rows = _metrics(run)
    kinds = [(r["iteration"], r.get("kind")) for r in rows if "kind" in r]
    assert kinds == [(2, "reconstruction"), (4, "quality")]
    for row in rows:
        assert "cpu_seconds" in row
    assert (run / "checkpoints" / "best.pt").is_file()
    assert (run / "quality_curves.png").is_file()


def test_config_errors_name_their_field():
    cases = {
        "ldm.diffusion.steps must be in [1, 1000] (got 0)": {"ldm.diffusion.steps": 0},
        "ldm.autoencoder.iterations must be below train.iterations": {"train.iterations": 2},
        "data.target_shape [16, 16, 10] must be positive multiples of 4": {
            "data.target_shape": [16, 16, 10]
        },
        "model is not used by an ldm config": {"model.latent_dim": 3},
        "ldm.diffusion.attention_levels must have one entry per level": {
            "ldm.diffusion.attention_levels": [True]
        },
        "train.channels_last must be false for an ldm run": {"train.channels_last": True},
        "ldm.autoencoder.kl_weight must be >= 0": {"ldm.autoencoder.kl_weight": -1.0},
    }
    for message, override in cases.items():
        with pytest.raises(RatganError) as exc:
            load_config("ldm-tiny", override)
        assert message in str(exc.value), (message, str(exc.value))
    with pytest.raises(RatganError, match="ldm is only used with family: ldm"):
        load_config("tiny", {"ldm.diffusion.steps": 3})


def test_gan_configs_read_and_write_as_before():
    cfg = load_config("sigmarat2")
    assert cfg.family == "alphagan"
    assert "ldm" not in cfg.to_dict() and "family" not in cfg.to_dict()


def test_segbench_sees_which_real_scans_an_ldm_run_trained_on(full_run, phantom_dir):
    from ratgan.segmentation.labels import gan_overlap

    scans = sorted((phantom_dir / "images").glob("*.nii*"))
    overlap = gan_overlap(full_run, scans[:2])
    assert overlap["checked"] and len(overlap["files"]) == 2


def test_the_gan_loop_refuses_an_ldm_config(phantom_dir, tmp_path):
    from ratgan.training.run import train

    with pytest.raises(RatganError, match="ldm-tiny is a latent diffusion config"):
        train(load_config("ldm-tiny"), phantom_dir, tmp_path / "run", progress=False)


def test_resume_without_a_checkpoint_starts_again_without_the_dead_runs_files(
    phantom_dir, tmp_path, capsys
):
    run = tmp_path / "run"
    cfg = _cfg(**{"train.iterations": 4, "train.checkpoint_every": 4, "train.sample_every": 2})
    train_ldm(cfg, phantom_dir, run, progress=False)
    ckpt.checkpoint_path(run, 4).rename(run / "checkpoints" / "best.pt")  # killed before it
    capsys.readouterr()
    train_ldm(_cfg(**{"train.iterations": 3}), None, run, resume=True, progress=False)
    assert "holds no checkpoint yet; starting from iteration 0" in capsys.readouterr().err
    assert [r["iteration"] for r in _metrics(run)] == [1, 2, 3]
    samples = sorted(p.name for p in (run / "samples").iterdir())
    assert samples == ["iter_0000002.png", "iter_0000003.png"]  # not the dead run's 4
    assert not (run / "checkpoints" / "best.pt").exists()


def test_best_checkpoint_moves_on_ties_and_ignores_nan_as_in_the_gan_loop(phantom_dir, tmp_path):
    scripted = iter([0.5, math.nan, 0.0, 0.0, math.nan])  # the first one: the autoencoder floor

    def factory(cfg, run_dir):
        return lambda volumes: {
            "frechet": 1.0,
            "rbf_mmd2": 0.1,
            "precision": next(scripted),
            "recall": 0.0,
        }

    run = tmp_path / "run"
    over = {
        "train.iterations": 10,
        "train.eval_every": 2,
        "train.eval_samples": 4,
        "train.eval_metric": "precision",
        "train.checkpoint_every": 10,
        "train.sample_every": 100,
    }
    train_ldm(_cfg(**over), phantom_dir, run, progress=False, probe_factory=factory)
    quality = [r for r in _metrics(run) if r.get("kind") == "quality"]
    assert [r["best"] for r in quality] == [False, True, True, False]
    assert ckpt.load_checkpoint(run / "checkpoints" / "best.pt")["iteration"] == 8


class _ReferencedProbe:
    """A scripted volume probe that names its reference scans, as the tracking probe does."""

    def __init__(self, values, reference):
        self.values, self.reference = iter(values), reference

    def __call__(self, volumes):
        return {"frechet": 1.0, "rbf_mmd2": 0.1, "precision": next(self.values), "recall": 0.0}


def test_a_resume_against_other_reference_scans_chooses_best_afresh(phantom_dir, tmp_path):
    # By hand: the first sitting (reference A) logs the floor at 2, precision 0.1 at 4 and
    # 0.2 at 6 (best.pt: 6); resumed against reference B, 0.05 at 8 is the best measured
    # against B and 0.01 at 10 is not.  Before, 0.2 against A kept best.pt at 6.
    run = tmp_path / "run"
    over = {
        "train.iterations": 6,
        "train.eval_every": 2,
        "train.eval_samples": 4,
        "train.eval_metric": "precision",
        "train.checkpoint_every": 6,
        "train.sample_every": 100,
    }
    first = _ReferencedProbe([0.5, 0.1, 0.2], "A")
    train_ldm(_cfg(**over), phantom_dir, run, progress=False, probe_factory=lambda c, r: first)
    assert ckpt.load_checkpoint(run / "checkpoints" / "best.pt")["iteration"] == 6
    second = _ReferencedProbe([0.05, 0.01], "B")
    cfg = _cfg(**{**over, "train.iterations": 10})
    train_ldm(cfg, None, run, resume=True, progress=False, probe_factory=lambda c, r: second)
    quality = [r for r in _metrics(run) if r.get("kind") == "quality"]
    assert [(r["iteration"], r["best"]) for r in quality] == [
        (4, True),
        (6, True),
        (8, True),
        (10, False),
    ]
    best = ckpt.load_checkpoint(run / "checkpoints" / "best.pt")
    assert best["iteration"] == 8 and best["best"]["reference"] == "B"


def test_logged_seconds_continue_across_a_resume(phantom_dir, tmp_path):
    run = tmp_path / "run"
    train_ldm(_cfg(**{"train.iterations": 4}), phantom_dir, run, progress=False)
    before = _metrics(run)[-1]["seconds"]
    result = train_ldm(_cfg(), None, run, resume=True, progress=False)
    seconds = [r["seconds"] for r in _metrics(run)]
    assert seconds == sorted(seconds) and seconds[4] >= before > 0
    assert result.seconds >= seconds[-1]


def test_resume_skips_an_unreadable_latest_checkpoint_as_the_gan_does(
    full_run, phantom_dir, tmp_path, capsys
):
    part = tmp_path / "part"
    shutil.copytree(full_run, part)
    for it, path in ckpt.list_checkpoints(part):
        if it > 4:
            path.unlink()  # killed after the checkpoint of iteration 4 ...
    latest = ckpt.checkpoint_path(part, 4)
    with open(latest, "r+b") as handle:  # ... which was cut short, e.g. by a full disk
        handle.truncate(latest.stat().st_size // 2)
    capsys.readouterr()
    train_ldm(_cfg(), None, part, resume=True, progress=False)
    err = capsys.readouterr().err
    assert f"checkpoint {latest} cannot be read" in err
    assert "resuming from ckpt_0000002.pt instead" in err
    # resumed from iteration 2, the run is the uninterrupted one
    assert _strip_time(_metrics(part)) == _strip_time(_metrics(full_run))
    a = ckpt.load_checkpoint(ckpt.checkpoint_path(full_run, 6))
    b = ckpt.load_checkpoint(ckpt.checkpoint_path(part, 6))
    for net, weights in a["networks"].items():
        for key, value in weights.items():
            assert torch.equal(value, b["networks"][net][key]), (net, key)
