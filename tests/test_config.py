"""Configs: every shipped preset validates, errors name their field, overrides apply."""

import pytest

from ratgan.config import augment_range_problems, config_from_dict, load_config, preset_names
from ratgan.errors import RatganError


def test_every_shipped_preset_validates():
    names = preset_names()
    assert {"alpha-wgan-adni", "sigmarat1", "sigmarat2", "tiny", "demo"} <= set(names)
    for name in names:
        assert load_config(name).name == name


def test_errors_are_collected_and_name_each_field():
    with pytest.raises(RatganError) as exc:
        config_from_dict({"model": {"latent_dim": "big", "colour": 1}, "optim": {"name": "sgd"}})
    text = str(exc.value)
    assert "model.latent_dim must be an integer" in text
    assert "model.colour is not a known field" in text
    assert "optim.name must be one of" in text


def test_semantic_errors_name_the_field():
    with pytest.raises(RatganError, match=r"model\.volume_size must be 4 \* 2\*\*k"):
        load_config("sigmarat2", {"model.volume_size": 48, "data.target_shape": [48, 48, 48]})
    with pytest.raises(RatganError, match="model.channels must be 4"):
        load_config("sigmarat2", {"data.label_channels": True})


def test_type_and_value_errors_are_reported_together_once_each(tmp_path):
    # A value error beside a type error used to go unreported until the type error was fixed.
    path = tmp_path / "bad.yaml"
    path.write_text(
        "base: sigmarat2\nmodel: {latent_dim: -3, volume_size: big}\n"
        "train: {precision: fp16}\noptim: {lr: 0}\n"
    )
    with pytest.raises(RatganError) as exc:
        load_config(str(path))
    problems = str(exc.value).removeprefix("invalid config: ").rstrip(".").split("; ")
    assert sorted(p.split()[0] for p in problems) == [
        "model.latent_dim",
        "model.volume_size",
        "optim.lr",
        "train.precision",
    ]
    assert "model.latent_dim must be a positive integer (got -3)" in problems
    # the mistyped volume_size is reported once, as a type problem, not again as a value one
    assert "model.volume_size must be an integer (got 'big')" in problems


def test_overrides_and_yaml_base(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("base: sigmarat1\ntrain: {batch_size: 8}\n")
    cfg = load_config(str(path), {"train.iterations": 5})
    assert cfg.name == "mine" and cfg.train.batch_size == 8 and cfg.train.iterations == 5
    assert cfg.model.spectral_norm == ["G", "E", "D", "C"]


def test_a_folder_named_like_a_preset_does_not_shadow_it(tmp_path, monkeypatch):
    (tmp_path / "demo").mkdir()  # e.g. the output folder of `ratgan demo --out demo`
    monkeypatch.chdir(tmp_path)
    assert load_config("demo").name == "demo"


def test_a_relative_base_is_read_next_to_the_file_that_names_it(tmp_path, monkeypatch):
    exp = tmp_path / "exp"
    (exp / "shared").mkdir(parents=True)
    (exp / "shared" / "common.yaml").write_text("base: tiny\ntrain: {batch_size: 3}\n")
    (exp / "child.yaml").write_text("base: shared/common.yaml\ntrain: {seed: 5}\n")
    (exp / "long").write_text("base: sigmarat1\ntrain: {batch_size: 7}\n")  # a file, no suffix
    (exp / "other.yaml").write_text("base: long\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(str(exp / "child.yaml"))
    assert (cfg.name, cfg.train.batch_size, cfg.train.seed) == ("child", 3, 5)
    assert cfg.model.volume_size == 16  # the tiny preset, two bases down
    # a file beside the YAML wins over the preset of its name, as for --config
    assert load_config(str(exp / "other.yaml")).train.batch_size == 7
    (exp / "long").unlink()
    assert (
        load_config(str(exp / "other.yaml")).train.iterations
        == load_config("long").train.iterations
    )


def test_every_value_check_names_its_field_in_a_fixed_order():
    bad = {
        "model": {
            "volume_size": 48,
            "channels": 0,
            "leaky_slope": 1.0,
            "spectral_norm": ["G", "G"],
        },
        "loss": {"gp": -1},
        "optim": {"lr": 0, "betas": [0.9, 1.0], "weight_decay": -0.1},
        "augment": {"flip_prob": 1.5, "flip_axis": 3, "zoom_range": [1.2, 1.1]},
        "data": {"downsample": 0},
        "train": {"batch_size": 1, "ema_rampup": -1, "eval_every": -1, "eval_samples": 3},
        "ada": {"p": 2, "interval": 0, "contrast": -1},
    }
    with pytest.raises(RatganError) as exc:
        config_from_dict(bad)
    assert str(exc.value).removeprefix("invalid config: ").rstrip(".").split("; ") == [
        "model.volume_size must be 4 * 2**k and at least 8 (got 48)",
        "model.channels must be a positive integer (got 0)",
        "model.leaky_slope must be in [0, 1) (got 1.0)",
        "model.spectral_norm lists a network twice",
        "loss.gp must be >= 0 (got -1.0)",
        "optim.lr must be > 0 (got 0.0)",
        "optim.betas must lie in [0, 1) (got [0.9, 1.0])",
        "optim.weight_decay must be >= 0 (got -0.1)",
        "augment.flip_prob must be a probability in [0, 1] (got 1.5)",
        "augment.flip_axis must be 0, 1 or 2 (got 3)",
        "augment.zoom_range must be [low, high] with 0 < low <= high (got [1.2, 1.1])",
        "data.target_shape [64, 64, 64] must equal model.volume_size 48 on every axis",
        "data.downsample must be a positive integer (got 0)",
        "model.channels must be 1 when data.label_channels is false (got 0)",
        "train.ema_rampup must be >= 0 (got -1.0)",
        "train.eval_every must be >= 0 (got -1)",
        "train.eval_samples must be at least 4 (got 3)",
        "ada.p must be in [0, 1] (got 2.0)",
        "ada.interval must be a positive integer (got 0)",
        "ada.contrast must be >= 0 (got -1.0)",
        "train.batch_size must be >= 2 when model.c_norm is batch",
    ]


def test_an_unknown_key_of_any_spelling_is_reported():
    # A key starting with a non-word character used to crash the message filter.
    with pytest.raises(RatganError, match=r"^invalid config: -x is not a known field\.$"):
        config_from_dict({"-x": 1})


def test_nan_and_out_of_range_strengths_are_refused():
    # NaN passed every "v < 0" check: an all-NaN EMA of G, brightness augmentation silently
    # off; an intensity factor of 10 (a percentage) blanked 14 of 32 augmented volumes, and a
    # rotation range of 3 (degrees) turned volumes by up to 172 degrees
    nan = float("nan")
    bad = {
        "augment": {"intensity_factor": 10, "rotate_range": 3, "noise_std": nan},
        "train": {"ema_half_life_images": nan},
        "ada": {"brightness": nan},
        "optim": {"lr": nan},
    }
    with pytest.raises(RatganError) as exc:
        config_from_dict(bad)
    text = str(exc.value)
    # the strengths are refused when a run starts (a stored run with them stays readable)
    bad = {"augment": bad.pop("augment")}
    cfg = config_from_dict(bad)
    text += "; ".join(augment_range_problems(cfg))
    for field in (
        "optim.lr must be > 0 (got nan)",
        "augment.intensity_factor must be in [0, 1) (got 10.0)",
        "augment.rotate_range is in radians and must be in [0, pi/2] (got 3.0",
        "augment.noise_std must be >= 0 (got nan)",
        "train.ema_half_life_images must be >= 0 (got nan)",
        "ada.brightness must be >= 0 (got nan)",
    ):
        assert field in text, field


def test_the_options_beyond_the_paper_are_in_the_presets_the_readme_names():
    # README, "Using it on your scans": the encoder's standardised and whitened codes and D's
    # minibatch standard deviation are on in demo and long; trilinear up-sampling and the
    # full-resolution output conv in long only; none of them in the three paper presets.
    for name in ("alpha-wgan-adni", "sigmarat1", "sigmarat2", "demo", "long"):
        m = load_config(name).model
        paper = name not in ("demo", "long")
        assert (m.e_standardise, m.e_whiten, m.d_mbstd_group > 0) == (not paper,) * 3, name
        long = name == "long"
        assert (m.g_upsample == "trilinear", m.g_final_conv > 0) == (long, long), name
