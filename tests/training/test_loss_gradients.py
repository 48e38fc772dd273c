"""benchmarks/loss_gradients.py: the terms' gradients add up to the gradient of the objective
the trainer minimises, a term's norm scales with its weight, and the command runs on a tiny
run."""

import copy
import csv

import pytest
import torch

from ratgan.config import load_config
from ratgan.training.run import train


@pytest.fixture(scope="module")
def tiny_run(phantom_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("gradients") / "run"
    over = {"train.iterations": 2, "train.sample_every": 100, "loss.l1": 1.0}
    train(load_config("tiny", over), phantom_dir, run, progress=False)
    return run


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("loss_gradients")


def test_terms_add_up_to_the_trainers_objective(bench, tiny_run):
    nets, cfg, _ = bench.load(tiny_run, "latest", torch.device("cpu"))
    torch.manual_seed(0)
    x = torch.rand(2, 1, *([cfg.model.volume_size] * 3)) * 2 - 1
    z_r = torch.randn(2, cfg.model.latent_dim)
    terms, total = bench.term_losses(nets, cfg, x, z_r)
    assert set(terms) == set(bench.TERMS)
    for net in (nets.generator, nets.encoder):
        params = list(net.parameters())
        summed = sum(bench.gradient(v, params) for v in terms.values())
        whole = bench.gradient(total, params)
        assert whole.norm() > 0
        assert torch.allclose(summed, whole, rtol=1e-4, atol=1e-6 * float(whole.abs().max()))


def test_a_terms_norm_scales_with_its_weight(bench, tiny_run):
    nets, cfg, _ = bench.load(tiny_run, "latest", torch.device("cpu"))
    x = torch.rand(2, 1, *([cfg.model.volume_size] * 3)) * 2 - 1
    z_r = torch.randn(2, cfg.model.latent_dim)
    # Training mode: D's spectral norm and E's running statistics move with every call, so each
    # measurement starts from its own copy of the same networks.
    torch.manual_seed(1)
    one = bench.batch_norms(copy.deepcopy(nets), cfg, x, z_r)
    cfg.loss.gdl *= 3
    cfg.loss.mse = 0.0
    torch.manual_seed(1)  # the same output noise
    three = bench.batch_norms(copy.deepcopy(nets), cfg, x, z_r)
    for net in ("G", "E"):
        assert three[net]["gdl"] == pytest.approx(3 * one[net]["gdl"], rel=1e-4)
        assert three[net]["mse"] == 0.0 and one[net]["mse"] > 0
        assert three[net]["adv_gen"] == pytest.approx(one[net]["adv_gen"], rel=1e-5)
    # C reads E's codes only, and G's own parameters do not enter it.
    assert one["G"]["code"] == 0.0 and one["E"]["code"] > 0


def test_command_on_a_tiny_run(bench, tiny_run, tmp_path, capsys):
    out = tmp_path / "norms.csv"
    norms = bench.main([str(tiny_run), "--batches", "2", "--csv", str(out)])
    printed = capsys.readouterr().out
    assert "| gdl |" in printed and "iteration 2" in printed
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 2 * (len(bench.TERMS) + 1)
    assert {r["network"] for r in rows} == {"G", "E"}
    assert all(float(r["gradient_norm"]) >= 0 for r in rows)
    assert norms["G"]["total"] > 0
    with pytest.raises(SystemExit):
        bench.main([str(tiny_run), "--batches", "50"])
