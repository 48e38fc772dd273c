"""`ratgan train` / `ratgan generate` end to end through the real CLI entry point."""

from pathlib import Path

import pytest

from ratgan.cli import main


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory) -> Path:
    from ratgan.data.phantom import write_cohort

    out = tmp_path_factory.mktemp("phantom")
    write_cohort(out, subjects=4, seed=7, progress=False)
    return out


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_train_then_generate_writes_exactly_the_expected_files(phantom_dir, tmp_path):
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--config",
                "tiny",
                "--data",
                str(phantom_dir),
                "--out",
                str(run),
                "--iterations",
                "3",
                "--no-progress",
            ]
        )
        == 0
    )
    assert _files(run) == {
        "config.yaml",
        "data.json",
        "metrics.jsonl",
        "loss_curves.png",
        "samples/iter_0000002.png",
        "samples/iter_0000003.png",
        "checkpoints/ckpt_0000002.pt",
        "checkpoints/ckpt_0000003.pt",
    }
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3
    out = tmp_path / "gen"
    assert main(["generate", str(run), "--n", "2", "--out", str(out), "--no-progress"]) == 0
    assert _files(out) == {"synthetic_00000.nii.gz", "synthetic_00001.nii.gz", "manifest.json"}


def test_dry_run_prints_config_and_exact_parameter_counts(capsys):
    from ratgan.config import load_config
    from ratgan.models import build_networks

    assert main(["train", "--config", "sigmarat2", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    counts = build_networks(load_config("sigmarat2").model).parameter_counts()
    assert "name: sigmarat2" in printed and "spectral_norm:" in printed
    for key, count in counts.items():
        assert f"{key}: {count:,}" in printed


def test_config_errors_name_the_field(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: sigmarat2\nmodel: {latent_dim: -3}\ntrain: {precision: fp16}\n")
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "r"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "train.precision must be one of 'fp32', 'bf16' (got 'fp16')" in err
    assert "model.latent_dim must be a positive integer (got -3)" in err
    assert main(["train", "--config", "nonexistent-preset", "--out", "x", "--dry-run"]) == 2
    assert "neither a YAML file nor a preset" in capsys.readouterr().err


def test_a_relative_eval_real_glob_is_stored_as_an_absolute_pattern(capsys, tmp_path, monkeypatch):
    """A relative glob stored as given would, on a resume from another working directory,
    evaluate against other scans (or none)."""
    import os

    import yaml

    monkeypatch.chdir(tmp_path)
    assert main(["train", "--config", "tiny", "--eval-real", "held/*.nii.gz", "--dry-run"]) == 0
    printed = capsys.readouterr().out.split("\nparameters:")[0]
    stored = yaml.safe_load(printed)["train"]["eval_real"]
    assert stored == os.path.join(os.getcwd(), "held", "*.nii.gz")
    # the same from a config file (it was stored relative)
    (tmp_path / "mine.yaml").write_text("base: tiny\ntrain:\n  eval_real: held/*.nii.gz\n")
    assert main(["train", "--config", "mine.yaml", "--dry-run"]) == 0
    printed = capsys.readouterr().out.split("\nparameters:")[0]
    assert yaml.safe_load(printed)["train"]["eval_real"] == stored


def test_the_device_defaults_the_readme_gives():
    # README, "Set-up": train, generate, segbench and demo pick the GPU by themselves
    # (--device auto), evaluate computes on the CPU unless told otherwise.
    from ratgan.cli import build_parser
    from ratgan.config import load_config

    parser = build_parser()
    for argv in (
        ["generate", "run", "--out", "o"],
        ["segbench", "--real", "r", "--synthetic", "s", "--out", "o"],
        ["demo", "--out", "o"],
    ):
        assert parser.parse_args(argv).device == "auto", argv
    assert parser.parse_args(["train", "--out", "o"]).device is None  # the config's then
    assert load_config("sigmarat2").train.device == "auto"
    evaluate = ["evaluate", "--real", "r", "--synthetic", "a=s", "--out", "o"]
    assert parser.parse_args(evaluate).device == "cpu"
