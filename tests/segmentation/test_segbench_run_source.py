"""`--synthetic RUN`: scans (and label maps of a joint model) are generated as needed."""

import json

from ratgan.cli import main


def test_run_folder_source_generates_joint_scans(tiny_real, tmp_path, capsys):
    from ratgan.config import load_config
    from ratgan.training.run import train

    run = tmp_path / "run"
    cfg = load_config(
        "tiny", {"train.iterations": 2, "model.channels": 4, "data.label_channels": True}
    )
    train(cfg, tiny_real, run, progress=False)
    out = tmp_path / "bench"
    args = [
        "segbench",
        "--real",
        str(tiny_real),
        "--synthetic",
        str(run),
        "--out",
        str(out),
        "--tests",
        "2",
        "--seeds",
        "1",
        "--gate-margin",
        "1000",
        "--labels",
        "joint",
        "--shape",
        "16",
        "16",
        "8",
        "--channels",
        "4,8",
        "--max-epochs",
        "1",
        "--no-progress",
    ]
    # the run was trained on every real scan, the test split included: refused, naming them
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    test_names = ["sub-007.nii.gz", "sub-008.nii.gz", "sub-006.nii.gz", "sub-010.nii.gz"]
    assert "was trained on 4 of the real test and validation scans" in err
    assert all(n in err for n in test_names) and "--allow-overlap" in err
    assert not (out / "synthetic").exists()
    assert main(args + ["--allow-overlap"]) == 0
    round0 = out / "synthetic" / "round-00"
    assert (round0 / "manifest.json").is_file()
    scans = sorted(round0.glob("*.nii.gz"))
    assert len(scans) >= 4
    assert sorted(p.name for p in (round0 / "labels").glob("*.nii.gz")) == [p.name for p in scans]
    state = json.loads((out / "segbench.json").read_text())
    assert state["labels"] == "joint"
    assert state["overlap"]["allowed"] and len(state["overlap"]["files"]) == 4
    assert (
        "WARNING: the GAN was trained on 4 of the real test and validation scans"
        in (out / "table.md").read_text()
    )
    assert not (out / "teacher").exists()

    # stopped before segbench.json was written, and the run got a newer checkpoint meanwhile:
    # the finished round belongs to the old checkpoint and must not be mixed into the new pool
    import shutil

    (out / "segbench.json").unlink()
    newest = sorted((run / "checkpoints").glob("ckpt_*.pt"))[-1]
    shutil.copy(newest, run / "checkpoints" / "ckpt_0000900.pt")
    capsys.readouterr()
    assert main(args + ["--allow-overlap"]) == 2
    err = capsys.readouterr().err
    assert "round-00 holds scans generated from checkpoint" in err and "ckpt_0000900.pt" in err

    # the same, but a rerun asks for another --reference header: the finished round carries
    # the first real scan's header and affine and must not join a pool written with another
    (run / "checkpoints" / "ckpt_0000900.pt").unlink()
    other = sorted((tiny_real / "images").glob("*.nii.gz"))[1]
    capsys.readouterr()
    assert main(args + ["--allow-overlap", "--reference", str(other)]) == 2
    err = capsys.readouterr().err
    assert "round-00 holds scans written with the reference scan" in err and other.name in err


def _joint_run(tiny_real, folder):
    """A two-iteration joint run (scan and label channels) trained on every real scan."""
    from ratgan.config import load_config
    from ratgan.training.run import train

    cfg = load_config(
        "tiny", {"train.iterations": 2, "model.channels": 4, "data.label_channels": True}
    )
    train(cfg, tiny_real, folder, progress=False)
    return folder


def _options(tiny_real, run, out, tests):
    from ratgan.segmentation.state import BenchOptions

    return BenchOptions(
        real=str(tiny_real),
        synthetic=str(run),
        out=str(out),
        tests=tests,
        seeds=1,
        labels="joint",
        allow_overlap=True,  # the tiny run saw every real scan
        gate_margin=1000,
        gate_probe=0,
        shape=(16, 16, 8),
        channels=(4, 8),
        max_epochs=1,
        progress=False,
    )


def test_rounds_are_generated_from_the_checkpoint_the_benchmark_recorded(tiny_real, tmp_path):
    """The run's training goes on while the benchmark runs and saves a newer checkpoint after
    segbench recorded the newest one: the scans must come from the recorded checkpoint (the
    one segbench.json names and a rerun compares), not from whichever is newest when a round
    is generated."""
    import shutil

    from ratgan.segmentation.bench import Benchmark

    run = _joint_run(tiny_real, tmp_path / "run")
    newest = sorted((run / "checkpoints").glob("ckpt_*.pt"))[-1]
    out = tmp_path / "bench"
    bench = Benchmark(_options(tiny_real, run, out, [2]))  # the data are recorded here
    shutil.copy(newest, run / "checkpoints" / "ckpt_0000900.pt")  # saved by the training
    bench.run()
    recorded = json.loads((out / "segbench.json").read_text())["data"]["synthetic"]
    manifest = json.loads((out / "synthetic" / "round-00" / "manifest.json").read_text())
    assert list(recorded) == [str(newest.resolve())]
    assert manifest["settings"]["checkpoint"] == str(newest.resolve())


def test_a_call_needing_fewer_synthetic_scans_keeps_every_finished_round(
    tiny_real, tmp_path, monkeypatch
):
    """A gate that rejects every other scan makes test 3 need two rounds; a later call for
    test 2 alone needs fewer scans than round-00 holds, yet its pool, quality_gate.json and
    segbench.json must stay those of both rounds: test 3's finished run trained on scans of
    round-01, whose verdicts would otherwise be dropped from the records."""
    import numpy as np

    from ratgan.segmentation.bench import Benchmark
    from ratgan.segmentation.quality_gate import QualityGate

    check = QualityGate.check

    def every_other(self, labels):
        res = check(self, labels)
        res.accepted = np.arange(len(res.accepted)) % 2 == 0
        res.reasons = ["" if ok else "GM fraction rejected by the test" for ok in res.accepted]
        return res

    monkeypatch.setattr(QualityGate, "check", every_other)
    run = _joint_run(tiny_real, tmp_path / "run")
    out = tmp_path / "bench"
    Benchmark(_options(tiny_real, run, out, [3])).run()
    rounds = sorted(p.name for p in (out / "synthetic").iterdir())
    assert rounds == ["round-00", "round-01"]
    gate = json.loads((out / "quality_gate.json").read_text())
    pool = json.loads((out / "segbench.json").read_text())["counts"]["synthetic_pool"]
    assert {r["round"] for r in gate["scans"]} == set(rounds)

    Benchmark(_options(tiny_real, run, out, [2])).run()
    assert json.loads((out / "quality_gate.json").read_text()) == gate
    assert json.loads((out / "segbench.json").read_text())["counts"]["synthetic_pool"] == pool
