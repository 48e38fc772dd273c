"""Quality tracked while training: eval_every, checkpoints/best.pt and --checkpoint best."""

import json

import pytest

from ratgan.config import load_config


def test_eval_every_logs_quality_keeps_the_best_checkpoint_and_generate_uses_it(
    phantom_dir, tmp_path, monkeypatch
):
    from ratgan.cli import main
    from ratgan.training import checkpoint as ckpt
    from ratgan.training.run import train

    scripted = iter([5.0, 3.0, 4.0])  # Fréchet at iterations 2, 4 and 6: the best is at 4

    def factory(cfg, run_dir):
        return lambda generator, device: {
            "frechet": next(scripted),
            "rbf_mmd2": 0.1,
            "precision": 0.5,
            "recall": 0.5,
        }

    cfg = load_config(
        "tiny", {"train.iterations": 6, "train.eval_every": 2, "train.checkpoint_every": 3}
    )
    run = tmp_path / "run"
    train(cfg, phantom_dir, run, progress=False, probe_factory=factory)
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    quality = [r for r in rows if r.get("kind") == "quality"]
    assert [r["iteration"] for r in quality] == [2, 4, 6]
    assert [r["best"] for r in quality] == [True, True, False]
    assert (run / "quality_curves.png").is_file()
    best = ckpt.load_checkpoint(run / "checkpoints" / "best.pt")
    assert best["iteration"] == 4 and best["best"] == {
        "metric": "frechet",
        "value": 3.0,
        "iteration": 4,
    }
    assert (
        main(
            [
                "generate",
                str(run),
                "--n",
                "1",
                "--out",
                str(tmp_path / "g"),
                "--checkpoint",
                "best",
                "--device",
                "cpu",
                "--no-progress",
            ]
        )
        == 0
    )
    manifest = json.loads((tmp_path / "g" / "manifest.json").read_text())
    assert manifest["scans"][0]["iteration"] == 4


def test_generate_best_without_an_evaluated_run_says_why(phantom_dir, tmp_path):
    from ratgan.errors import RatganError
    from ratgan.generation import generate_scans
    from ratgan.training.run import train

    train(
        load_config("tiny", {"train.iterations": 2}), phantom_dir, tmp_path / "run", progress=False
    )
    with pytest.raises(RatganError, match="eval_every"):
        generate_scans(
            tmp_path / "run", 1, tmp_path / "g", checkpoint="best", device="cpu", progress=False
        )


def test_cli_eval_every_runs_the_real_probe(phantom_dir, tmp_path):
    from ratgan.cli import main

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
                "2",
                "--eval-every",
                "2",
                "--no-progress",
            ]
        )
        == 0
    )
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    quality = [r for r in rows if r.get("kind") == "quality"]
    assert len(quality) == 1
    assert 0 <= quality[0]["precision"] <= 1 and quality[0]["frechet"] > 0
    assert (run / "checkpoints" / "best.pt").is_file()
