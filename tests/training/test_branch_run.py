"""benchmarks/branch_run.py: a branch continues the source's trajectory, changed only where set."""

import pytest
import torch

from ratgan.config import load_config
from ratgan.runs import read_run_config
from ratgan.training.checkpoint import checkpoint_path
from ratgan.training.run import train


def _state(run, iteration):
    return torch.load(checkpoint_path(run, iteration), map_location="cpu", weights_only=False)


def test_an_ema_branch_shares_the_raw_weights_and_not_the_average(
    ema_run, tmp_path, load_benchmark
):
    bench = load_benchmark("branch_run")
    out = tmp_path / "ema2"
    bench.main(
        [
            str(ema_run),
            "--iteration",
            "2",
            "--out",
            str(out),
            "--set",
            "train.ema_half_life_images=2",
        ]
    )
    cfg = read_run_config(out)
    assert cfg.train.ema_half_life_images == 2.0
    assert read_run_config(ema_run).train.ema_half_life_images == 64.0  # source untouched
    train(cfg, None, out, resume=True, progress=False)
    a, b = _state(ema_run, 4), _state(out, 4)
    for key, tensor in a["networks"]["G"].items():
        assert torch.equal(tensor, b["networks"]["G"][key]), key
    differs = [not torch.equal(t, b["ema"]["G"][k]) for k, t in a["ema"]["G"].items()]
    assert any(differs)


def test_a_learning_rate_branch_writes_the_rate_into_its_optimisers(
    ema_run, tmp_path, load_benchmark
):
    bench = load_benchmark("branch_run")
    out = tmp_path / "lr"
    bench.main([str(ema_run), "--iteration", "2", "--out", str(out), "--set", "optim.lr=1.0e-5"])
    rates = {g["lr"] for o in _state(out, 2)["optimizers"].values() for g in o["param_groups"]}
    assert rates == {1.0e-5}
    assert read_run_config(out).optim.lr == 1.0e-5
    train(read_run_config(out), None, out, resume=True, progress=False)
    a, b = _state(ema_run, 4)["networks"]["G"], _state(out, 4)["networks"]["G"]
    assert any(not torch.equal(t, b[k]) for k, t in a.items())


def test_an_unknown_field_is_refused(ema_run, tmp_path, load_benchmark):
    bench = load_benchmark("branch_run")
    with pytest.raises(SystemExit, match="no such field"):
        bench.main(
            [
                str(ema_run),
                "--iteration",
                "2",
                "--out",
                str(tmp_path / "x"),
                "--set",
                "train.ema_halflife=2",
            ]
        )
    assert not (tmp_path / "x").exists()


def test_a_latent_diffusion_run_is_refused_in_one_sentence(tmp_path, load_benchmark):
    # the parameter and optimiser re-layout is the alpha-GAN's: an ldm run failed with KeyError 'G'
    import yaml

    run = tmp_path / "ldm"
    checkpoint_path(run, 2).parent.mkdir(parents=True)
    checkpoint_path(run, 2).write_bytes(b"")
    (run / "config.yaml").write_text(yaml.safe_dump(load_config("ldm-tiny").to_dict()))
    bench = load_benchmark("branch_run")
    with pytest.raises(SystemExit, match="latent diffusion run: branch_run.py branches alpha-GAN"):
        bench.main([str(run), "--iteration", "2", "--out", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()


def test_set_values_are_read_as_yaml_and_exponents_without_a_dot_as_numbers(load_benchmark):
    bench = load_benchmark("branch_run")
    got = bench.parse_sets(["optim.lr=1e-4", "optim.betas=[0.5, 0.9]", "train.x=200", "m.n=adam"])
    assert got == {"optim.lr": 1e-4, "optim.betas": [0.5, 0.9], "train.x": 200, "m.n": "adam"}
    assert isinstance(got["optim.lr"], float)


def _noisy_run(phantom_dir, folder, per_scan: bool = False):
    """A 2-iteration tiny run with G's output noise (and optionally its per-scan level)."""
    cfg = load_config(
        "tiny",
        {
            "model.g_output_noise": True,
            "model.g_output_noise_per_scan": per_scan,
            "train.iterations": 2,
            "train.checkpoint_every": 2,
            "train.ema_half_life_images": 64.0,
        },
    )
    train(cfg, phantom_dir, folder, progress=False)
    return cfg


def _branch(bench, run, out, *extra):
    bench.main([str(run), "--iteration", "2", "--out", str(out), *extra])


def test_reinit_and_a_new_parameter_start_afresh_and_resume(phantom_dir, tmp_path, load_benchmark):
    bench = load_benchmark("branch_run")
    run = tmp_path / "noisy"
    cfg = _noisy_run(phantom_dir, run)
    src = _state(run, 2)
    # training moved the noise offset away from its initial value (-5 / 100)
    assert src["networks"]["G"]["output_noise.offset"] != -0.05
    out = tmp_path / "per_scan"
    _branch(
        bench,
        run,
        out,
        "--reinit",
        "G.output_noise",
        "--set",
        "model.g_output_noise_per_scan=true",
        "--set",
        "train.iterations=3",
    )
    new = _state(out, 2)
    for weights in (new["networks"]["G"], new["ema"]["G"]):
        assert weights["output_noise.offset"] == pytest.approx(-0.05)  # known initial value
        assert weights["output_noise.slope"] == 0
        assert torch.equal(weights["output_noise.per_scan"], torch.zeros(cfg.model.latent_dim))
    # every other weight and its optimiser state is the source's
    for key, tensor in src["networks"]["G"].items():
        if not key.startswith("output_noise"):
            assert torch.equal(tensor, new["networks"]["G"][key]), key
    opt = new["optimizers"]["G"]
    assert [len(g["params"]) for g in opt["param_groups"]] == [
        len(g["params"]) for g in src["optimizers"]["G"]["param_groups"]
    ][:1] + [3]  # the no-decay group gained the per-scan weights
    noise_ids = opt["param_groups"][1]["params"]
    assert not any(i in opt["state"] for i in noise_ids)  # fresh Adam moments
    rest = opt["param_groups"][0]["params"]
    for i in rest:
        assert torch.equal(
            opt["state"][i]["exp_avg"], src["optimizers"]["G"]["state"][i]["exp_avg"]
        )
    # and it trains on
    result = train(read_run_config(out), None, out, resume=True, progress=False)
    assert checkpoint_path(out, 3).is_file(), result


def test_switching_an_option_off_drops_its_parameters(phantom_dir, tmp_path, load_benchmark):
    bench = load_benchmark("branch_run")
    run = tmp_path / "per_scan"
    _noisy_run(phantom_dir, run, per_scan=True)
    out = tmp_path / "off"
    _branch(
        bench,
        run,
        out,
        "--set",
        "model.g_output_noise_per_scan=false",
        "--set",
        "train.iterations=3",
    )
    new = _state(out, 2)
    assert "output_noise.per_scan" not in new["networks"]["G"]
    assert [len(g["params"]) for g in new["optimizers"]["G"]["param_groups"]][1] == 2
    train(read_run_config(out), None, out, resume=True, progress=False)
    assert checkpoint_path(out, 3).is_file()


def test_a_gdl_finishing_phase_trains_as_a_branch_with_the_weight_changed(
    ema_run, phantom_dir, tmp_path, load_benchmark
):
    # Independent reference: the branch script copies the iteration-2 checkpoint, writes
    # loss.gdl=0.5 into the config, and the resume trains 3..4 with it; one run with
    # loss.gdl_finish=0.5 from iteration 3 must reach the same weights bit for bit.
    out = tmp_path / "branch"
    load_benchmark("branch_run").main(
        [str(ema_run), "--iteration", "2", "--out", str(out), "--set", "loss.gdl=0.5"]
    )
    train(read_run_config(out), None, out, resume=True, progress=False)
    over = {
        "train.iterations": 4,
        "train.checkpoint_every": 2,
        "train.keep_checkpoints": 10,
        "train.ema_half_life_images": 64.0,
        "loss.gdl_finish": 0.5,
        "loss.gdl_finish_from": 3,
    }
    phased = tmp_path / "phased"
    train(load_config("tiny", over), phantom_dir, phased, progress=False)
    a, b = _state(out, 4)["networks"]["G"], _state(phased, 4)["networks"]["G"]
    for key, tensor in a.items():
        assert torch.equal(tensor, b[key]), key
    # and the phase changes the training: the source run (gdl throughout) differs
    c = _state(ema_run, 4)["networks"]["G"]
    assert any(not torch.equal(t, c[k]) for k, t in b.items())
