"""Regression tests for the review of the quality options (each failed before its fix)."""

import json
import math

import pytest
import torch

from ratgan.config import load_config


def _scripted_factory(values):
    scripted = iter(values)

    def factory(cfg, run_dir):
        return lambda generator, device: {
            "frechet": 1.0,
            "rbf_mmd2": 0.1,
            "precision": next(scripted),
            "recall": 0.0,
        }

    return factory


def _quality_rows(run):
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("kind") == "quality"]


def test_best_checkpoint_moves_on_ties_and_ignores_nan(phantom_dir, tmp_path):
    """Precision stuck at 0 used to keep the first evaluation for ever; a NaN first value
    used to lock best.pt (no value compares better than NaN)."""
    from ratgan.training import checkpoint as ckpt
    from ratgan.training.run import train

    cfg = load_config(
        "tiny",
        {
            "train.iterations": 8,
            "train.eval_every": 2,
            "train.checkpoint_every": 8,
            "train.eval_metric": "precision",
        },
    )
    run = tmp_path / "run"
    train(
        cfg,
        phantom_dir,
        run,
        progress=False,
        probe_factory=_scripted_factory([math.nan, 0.0, 0.0, math.nan]),
    )
    assert [r["best"] for r in _quality_rows(run)] == [False, True, True, False]
    best = ckpt.load_checkpoint(run / "checkpoints" / "best.pt")
    assert best["iteration"] == 6


def test_is_improvement_rules():
    from ratgan.training.run import is_improvement

    assert is_improvement(3.0, {}, lower_is_better=True)
    assert not is_improvement(math.nan, {}, lower_is_better=True)
    assert is_improvement(9.0, {"value": math.nan}, lower_is_better=True)
    assert is_improvement(2.0, {"value": 2.0}, lower_is_better=True)  # a tie moves
    assert not is_improvement(2.1, {"value": 2.0}, lower_is_better=True)
    assert not is_improvement(0.4, {"value": 0.5}, lower_is_better=False)


def _tracked_by_precision(iterations: int) -> dict:
    """Overrides of a tiny run evaluated every 2 iterations by precision, checkpointed every 4."""
    return {
        "train.iterations": iterations,
        "train.eval_every": 2,
        "train.checkpoint_every": 4,
        "train.eval_metric": "precision",
    }


def test_a_best_checkpoint_written_after_the_resumed_one_is_discarded(phantom_dir, tmp_path):
    """The run is killed after best.pt at iteration 6 but before the checkpoint at 8: the
    resumed run replays 5..8 differently, so that best.pt must not survive."""
    from ratgan.training import checkpoint as ckpt
    from ratgan.training.run import train

    over = _tracked_by_precision(6)
    run = tmp_path / "run"
    train(
        load_config("tiny", over),
        phantom_dir,
        run,
        progress=False,
        probe_factory=_scripted_factory([0.1, 0.2, 0.3]),
    )
    assert ckpt.load_checkpoint(run / "checkpoints" / "best.pt")["iteration"] == 6
    # simulate the kill: the checkpoint of iteration 6 never reached the disk
    (run / "checkpoints" / "ckpt_0000006.pt").unlink()
    cfg = load_config("tiny", {**over, "train.iterations": 8})
    train(
        cfg, None, run, resume=True, progress=False, probe_factory=_scripted_factory([0.05, 0.01])
    )
    best = ckpt.load_checkpoint(run / "checkpoints" / "best.pt")
    # resumed from 4 (best record: 0.2 at 4): evaluations at 6 (0.05) and 8 (0.01).  The old
    # best.pt of 6 (0.3) is gone, and the first evaluation after the resume writes a fresh one;
    # without the fix best.pt would still be the abandoned one (0.3 beats both).
    rows = _quality_rows(run)
    assert [r["iteration"] for r in rows] == [2, 4, 6, 8]
    assert rows[2]["best"] is True
    assert best["iteration"] == 6 and best["best"]["value"] == 0.05


def test_demo_ema_ramp_up_forgets_the_random_initial_weights():
    """The weight of G's initial weights in the average after 750 iterations: with a fixed
    half-life of 800 images at batch 4 it is 0.5 ** (3000 / 800) = 7.4 %; with the ramp-up it
    must be negligible."""
    from ratgan.training.ema import GeneratorEMA

    cfg = load_config("demo")
    assert cfg.train.ema_rampup > 0
    net = torch.nn.Linear(1, 1)
    ema = GeneratorEMA(
        torch.nn.Linear(1, 1), net, cfg.train.ema_half_life_images, cfg.train.ema_rampup
    )
    b = cfg.train.batch_size
    weight = math.prod(ema.beta(b, b * t) for t in range(1, 751))
    fixed = 0.5 ** (750 * b / cfg.train.ema_half_life_images)
    assert fixed == pytest.approx(0.074, abs=0.001)
    assert weight < 1e-3


def test_output_noise_parameters_have_no_weight_decay():
    """AdamW's decay pulled the noise slope and offset towards 0, i.e. std softplus(0)=0.69."""
    from ratgan.models import build_networks
    from ratgan.training.alphagan import build_optimizers

    cfg = load_config("tiny", {"model.g_output_noise": True})
    assert cfg.optim.name == "adamw" and cfg.optim.weight_decay > 0
    nets = build_networks(cfg.model)
    opt = build_optimizers(nets, cfg)["G"]
    noise = nets.generator.output_noise
    decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert decay[id(noise.slope)] == 0.0 and decay[id(noise.offset)] == 0.0
    conv = next(nets.generator.net.parameters())
    assert decay[id(conv)] == cfg.optim.weight_decay
    # with zero gradients, one AdamW step leaves the noise parameters exactly unchanged
    before = noise.offset.detach().clone()
    for p in nets.generator.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.equal(noise.offset.detach(), before)


def test_output_noise_std_is_bounded():
    from ratgan.models.generator import OutputNoise

    noise = OutputNoise()
    with torch.no_grad():
        noise.offset.fill_(1.0)  # softplus(100) = 100 without a bound
    std = noise.std(torch.zeros(3))
    assert torch.all(std <= OutputNoise.MAX_STD) and torch.all(std > 0.5)


def test_a_flip_off_the_left_right_axis_is_warned(caplog):
    # a cohort stored ARS (axis 0 front to back) was mirrored front to back by the default
    # augment.flip_axis 0, silently
    from ratgan.config import load_config
    from ratgan.training.run import warn_flips_off_left_right

    cfg = load_config("sigmarat2")
    with caplog.at_level("WARNING", logger="ratgan.training.run"):
        warn_flips_off_left_right(cfg, ["RAS"] * 3)
    assert caplog.text == ""
    with caplog.at_level("WARNING", logger="ratgan.training.run"):
        warn_flips_off_left_right(cfg, ["ARS"] * 3)
    assert "orientation ARS, whose left-right axis is voxel axis 1" in caplog.text
    assert "augment.flip_axis 0" in caplog.text
    caplog.clear()
    cfg.augment.flip_axis = 1
    with caplog.at_level("WARNING", logger="ratgan.training.run"):
        warn_flips_off_left_right(cfg, ["ARS"] * 3)
    assert caplog.text == ""


class _ReferencedProbe:
    """A scripted probe that names the reference scans it scores against (as the tracking
    probe does with ``reference``)."""

    def __init__(self, values, reference):
        self.values, self.reference = iter(values), reference

    def __call__(self, generator, device):
        return {"frechet": 1.0, "rbf_mmd2": 0.1, "precision": next(self.values), "recall": 0.0}


@pytest.mark.parametrize("second_reference", ["A", "B"])
def test_best_is_chosen_afresh_when_a_resume_scores_against_other_reference_scans(
    phantom_dir, tmp_path, capsys, second_reference
):
    """The scans of train.eval_real can change between sittings (a folder or glob that gained
    scans): a value measured against them is no measure against the old ones, so the best
    record of the first sitting must not decide best.pt.  Known answer, by hand: first
    sitting (reference A) precision 0.1 at 2 and 0.2 at 4, best 0.2 at 4; the resumed sitting
    scores 0.05 at 6 and 0.01 at 8.  Against A again, neither beats 0.2: best.pt stays at 4.
    Against B, 0.05 at 6 is the best measured against B (0.01 is worse): best.pt moves to 6.
    Before the fix best.pt stayed at 4 in both cases, chosen against A."""
    from ratgan.training import checkpoint as ckpt
    from ratgan.training.run import train

    over = _tracked_by_precision(4)
    run = tmp_path / "run"
    train(
        load_config("tiny", over),
        phantom_dir,
        run,
        progress=False,
        probe_factory=lambda cfg, run_dir: _ReferencedProbe([0.1, 0.2], "A"),
    )
    capsys.readouterr()
    cfg = load_config("tiny", {**over, "train.iterations": 8})
    train(
        cfg,
        None,
        run,
        resume=True,
        progress=False,
        probe_factory=lambda cfg, run_dir: _ReferencedProbe([0.05, 0.01], second_reference),
    )
    best = ckpt.load_checkpoint(run / "checkpoints" / "best.pt")
    rows = _quality_rows(run)
    assert [r["iteration"] for r in rows] == [2, 4, 6, 8]
    err = capsys.readouterr().err
    if second_reference == "A":
        assert [r["best"] for r in rows] == [True, True, False, False]
        assert best["iteration"] == 4 and best["best"]["value"] == 0.2
        assert "reference" not in err
    else:
        assert [r["best"] for r in rows] == [True, True, True, False]
        assert best["iteration"] == 6 and best["best"]["value"] == 0.05
        assert best["best"]["reference"] == "B"
        assert "other reference scans" in err
