"""Every command line README.md shows runs, on a tiny phantom cohort with tiny settings.

The commands are read from the README itself (its ``bash`` code blocks and inline code spans
that start with ``ratgan `` and give options), so README and CLI cannot drift apart: a new
command in the README either runs here or needs an entry in ``EXCEPTIONS`` with its reason.
The ``benchmarks/`` scripts the README shows run here too, each with tiny settings, or name
the test that runs them in ``BENCHMARK_EXCEPTIONS``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ratgan.cli import main
from ratgan.training import checkpoint as ckpt

README = Path(__file__).resolve().parents[1] / "README.md"

# Steps (parts of a command between '&&') that are not executed, with the reason.
EXCEPTIONS = {
    "python3 -m venv .venv": "creates a virtual environment; CI installs the same way",
    ". .venv/bin/activate": "activates that environment",
    "pip install": "installs packages; CI runs exactly this installation",
    "python -m pytest -q": "runs this test suite",
    "ruff ": "lint and format checks; .ci/run runs them on every submission",
    "mypy": "the type check; .ci/run runs it on every submission",
    "torchrun": "test_readme_torchrun_command_runs runs it with two processes",
}

# Settings that make each subcommand tiny; appended (argparse keeps the last value given).
TINY = {
    "demo": [
        "--subjects",
        "4",
        "--heldout",
        "4",
        "--iterations",
        "2",
        "--n-synthetic",
        "2",
        "--no-progress",
    ],
    "train": ["--no-progress"],
    "generate": ["--n", "2", "--no-progress"],
    "evaluate": [
        "--comparisons",
        "30",
        "--msssim-comparisons",
        "6",
        "--split-repeats",
        "2",
        "--no-figures",
        "--no-progress",
    ],
    # The README's GAN trained on scans/, the same tiny cohort as labelled/: segbench rightly
    # refuses that overlap unless told; one atlas suffices for a 4-scan cohort.
    "segbench": [
        "--allow-overlap",
        "--atlases",
        "1",
        "--tests",
        "1,2",
        "--seeds",
        "1",
        "--shape",
        "16",
        "16",
        "8",
        "--channels",
        "4,8",
        "--max-epochs",
        "2",
        "--patience",
        "2",
        "--gate-margin",
        "50",
        "--no-progress",
    ],  # a 2-iteration model passes the quality gate only so
    "turing create": ["--n-real", "2", "--n-per-model", "2"],
    "turing serve": ["--port", "0"],
    "phantom": ["--subjects", "2", "--no-progress"],
    "label": ["--k", "2", "--workers", "1", "--no-progress"],
    "show": [],
}


# Scripts of benchmarks/ the README shows (`python benchmarks/X.py ...` or just
# `benchmarks/X.py`): the settings that make each tiny (appended: argparse keeps the last
# value given) and what its output must show; or why a test elsewhere runs it instead.
BENCHMARKS = {
    "train_step.py": (
        ["--presets", "tiny", "--iterations", "1"],
        [r"tiny: GFLOP/iteration", r"TFLOP/s .*peak +\d+ MB", r"speed-up: [\d.]+x"],
    ),
    "demo_iteration.py": (
        ["--config", "tiny", "--iterations", "1", "--threads", "1"],
        [r"(?m)^base +1 +[\d.]+ +[\d.]+ +1\.00x"],
    ),
    "generate_speed.py": (
        ["--presets", "tiny", "--n", "2", "--naive-n", "1", "--batch-sizes", "2"],
        [r"fp32 batch +2: .* scans/s end to end", r"bf16 naive .* scans/s"],
    ),
}
BENCHMARK_EXCEPTIONS = {
    "branch_run.py": "branches a trained run; tests/training/test_branch_run.py runs its main",
}


def readme_benchmarks() -> dict[str, list[str]]:
    """The benchmarks/ scripts README.md's prose shows, each with the arguments it gives."""
    prose = re.sub(r"```.*?```", "", README.read_text(), flags=re.DOTALL)
    found: dict[str, list[str]] = {}
    for span in re.findall(r"`(?:python )?(benchmarks/[^`\n]+)`", prose):
        script, *args = shlex.split(span)
        found.setdefault(Path(script).name, args)
    return found


def readme_commands() -> list[str]:
    """Command lines of README.md: its bash blocks' lines and inline `ratgan ...` spans."""
    text = README.read_text()
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL):
        lines += [ln.split("  #")[0].strip() for ln in block.splitlines() if ln.strip()]
    prose = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    # inline spans with options are command lines; `ratgan evaluate` alone names a command
    lines += [
        span
        for span in re.findall(r"`([^`\n]+)`", prose)
        if span.startswith("ratgan ") and " --" in span
    ]
    return list(dict.fromkeys(lines))


def _exception(step: str) -> str | None:
    return next((why for start, why in EXCEPTIONS.items() if step.startswith(start)), None)


def _subcommand(argv: list[str]) -> str:
    return " ".join(argv[:2]) if argv[0] == "turing" else argv[0]


def _tiny(argv: list[str], cohort: Path) -> list[str]:
    """The README's arguments made tiny: tiny preset, 2 iterations, small counts."""
    argv = [
        str(next((cohort / "images").iterdir()))
        if a == "scans/sub-01.nii.gz"
        else "tiny"
        if a == "PRESET"
        else a
        for a in argv
    ]
    if argv[0] == "train" and "--resume" not in argv:
        at = argv.index("--config") + 1
        ldm = argv[at].startswith("ldm")  # a latent diffusion run stays one, made tiny
        argv[at] = "ldm-tiny" if ldm else "tiny"
        if "--dry-run" not in argv:
            # ldm-tiny's autoencoder takes 2 iterations, its diffusion stage the rest
            argv += ["--iterations", "4" if ldm else "2"]
    return argv + TINY[_subcommand(argv)]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    from ratgan.data.phantom import write_cohort

    out = tmp_path_factory.mktemp("readme") / "scans"
    write_cohort(out, subjects=4, seed=3, progress=False)
    return out


def _serve_and_stop(ratgan: list[str], argv: list[str]) -> None:
    """Start `ratgan turing serve`, wait until it listens, stop it with Ctrl-C (SIGINT)."""
    proc = subprocess.Popen(
        [*ratgan, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = proc.stdout.readline()
        assert first.startswith("Serving "), first + proc.stderr.read()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "Server stopped." in out


def test_every_readme_command_runs(cohort, tmp_path, monkeypatch, ratgan_with_ctrl_c):
    monkeypatch.chdir(tmp_path)
    os.symlink(cohort, "scans")  # the README's scans/ and labelled/: the phantom cohort
    os.symlink(cohort, "labelled")
    os.symlink(cohort, "heldout")  # the README's held-out real scans
    commands = readme_commands()
    assert any("--resume" in c for c in commands) and any("turing serve" in c for c in commands)
    ran, skipped, used = [], [], set()
    for command in commands:
        for step in (s.strip() for s in command.split("&&")):
            why = _exception(step)
            if why is not None:
                skipped.append(step)
                used.add(next(k for k in EXCEPTIONS if step.startswith(k)))
                continue
            words = shlex.split(step)
            assert words[0] == "ratgan", f"README step {step!r} is neither run nor excepted"
            argv = _tiny(words[1:], cohort)
            if _subcommand(argv) == "turing serve":
                _serve_and_stop(ratgan_with_ctrl_c, argv)
            else:
                assert main(argv) == 0, f"README command failed: {step}"
            ran.append(step)
    assert set(EXCEPTIONS) == used, "an exception no longer matches any README command"
    assert len(ran) >= 11, ran
    _assert_readme_outputs(tmp_path)


def readme_run_folder() -> list[str]:
    """The paths of README.md's "A run folder" listing (``runs/sr2/...``)."""
    block = README.read_text().split("### A run folder", 1)[1].split("```")[1]
    return [ln.split()[0] for ln in block.splitlines() if ln.startswith("runs/")]


def _assert_readme_outputs(root: Path) -> None:
    """What the README says its commands write, after `test_every_readme_command_runs`."""
    assert (root / "demo" / "report.md").is_file()  # `ratgan demo --out demo`
    assert (root / "sub-01.png").is_file()  # `ratgan show ... --out sub-01.png`
    cohort = root / "cohort"  # `ratgan phantom --out cohort`: scans and label maps
    assert len(list((cohort / "images").glob("*.nii.gz"))) == 2
    assert len(list((cohort / "labels").glob("*.nii.gz"))) == 2
    listing = readme_run_folder()
    assert len(listing) >= 6, listing
    for run in ("runs/sr2", "runs/demo", "runs/ldm"):  # every run has the listed files
        for path in listing:
            where = root / path.replace("runs/sr2", run, 1)
            if path.endswith("/"):
                assert where.is_dir() and any(where.iterdir()), where
                if path.endswith("/samples/"):  # PNG montages, not NIfTI scans
                    assert {f.suffix for f in where.iterdir()} == {".png"}, where
            else:
                assert where.is_file(), where
    # `--eval-every 300   # metrics.jsonl, quality_curves.png, checkpoints/best.pt`
    assert (root / "runs/demo/quality_curves.png").is_file()
    assert (root / "runs/demo/checkpoints/best.pt").is_file()
    assert '"kind": "quality"' in (root / "runs/demo/metrics.jsonl").read_text()
    # `--codes kde`: the near-copy check's file beside the scans
    assert (root / "kde" / "near_copies.json").is_file()
    assert not (root / "synthetic" / "near_copies.json").exists()  # a prior set: not checked
    # `--steps 50   # DDIM; sampler and steps in the manifest`
    settings = json.loads((root / "ldm-scans" / "manifest.json").read_text())["settings"]
    assert (settings["sampler"], settings["steps"]) == ("ddim", 50)
    # `ratgan label`: one label map per scan, under the scan's name
    scans = sorted(p.name for p in (root / "synthetic").glob("*.nii.gz"))
    assert scans and sorted(p.name for p in (root / "synthetic-labels").glob("*.nii.gz")) == scans
    for report in ("eval", "eval-ldm"):  # `ratgan evaluate`: Table 2 and more
        assert (root / report / "report.md").is_file()
    for name in ("table.md", "results.json", "dice.png"):  # `ratgan segbench`: Table 4
        assert (root / "seg" / name).is_file()
    assert (root / "study" / "study.sqlite").is_file()  # `ratgan turing create`


def test_readme_resume_command_keeps_the_stored_run(cohort, tmp_path, monkeypatch):
    """A run of a non-default preset and flags, resumed with the README's own command."""
    monkeypatch.chdir(tmp_path)
    os.symlink(cohort, "scans")
    (resume,) = [c for c in readme_commands() if "--resume" in c]
    run = Path(shlex.split(resume)[shlex.split(resume).index("--out") + 1])
    assert (
        main(
            [
                "train",
                "--config",
                "tiny",
                "--data",
                "scans/",
                "--out",
                str(run),
                "--iterations",
                "4",
                "--seed",
                "5",
                "--batch-size",
                "3",
                "--precision",
                "bf16",
                "--no-progress",
            ]
        )
        == 0
    )
    # Leave the run as a process killed between the checkpoints of iterations 2 and 4 does.
    ckpt.checkpoint_path(run, 4).unlink()
    done = subprocess.run(
        [sys.executable, "-m", *shlex.split(resume), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "trained 4 iterations" in done.stdout  # not the default preset's 200,000
    for train in (
        yaml.safe_load((run / "config.yaml").read_text())["train"],
        ckpt.load_checkpoint(ckpt.checkpoint_path(run, 4))["config"]["train"],
    ):
        assert (train["iterations"], train["seed"], train["batch_size"], train["precision"]) == (
            4,
            5,
            3,
            "bf16",
        )


def test_resume_states_allowed_overrides_and_refuses_the_others(cohort, tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--config",
                "tiny",
                "--data",
                str(cohort),
                "--out",
                str(run),
                "--iterations",
                "2",
                "--no-progress",
            ]
        )
        == 0
    )
    capsys.readouterr()
    for flags in (
        ["--seed", "1"],
        ["--batch-size", "4"],
        ["--precision", "bf16"],
        ["--config", "tiny"],
        ["--data", str(cohort)],
        ["--eval-real", str(cohort)],
    ):
        assert main(["train", "--out", str(run), "--resume", *flags]) == 2
        err = capsys.readouterr().err
        assert f"{flags[0]} cannot be given with --resume" in err, err
        assert err.count("\n") == 1  # one sentence
    resume = ["train", "--out", str(run), "--resume", "--iterations", "4", "--eval-every", "4"]
    assert main([*resume, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "resume: train.iterations 2 -> 4 (--iterations" in out
    assert "resume: train.eval_every 0 -> 4 (--eval-every" in out
    assert "trained 4 iterations" in out
    stored = yaml.safe_load((run / "config.yaml").read_text())["train"]
    assert (stored["iterations"], stored["eval_every"]) == (4, 4)
    assert [i for i, _ in ckpt.list_checkpoints(run)] == [2, 4]
    assert main(["train", "--out", str(run), "--resume", "--iterations", "3"]) == 2
    assert "has reached iteration 4, beyond the iteration target 3" in capsys.readouterr().err


def test_dry_run_needs_neither_out_nor_data(capsys):
    assert main(["train", "--config", "tiny", "--dry-run"]) == 0
    assert "name: tiny" in capsys.readouterr().out
    assert main(["train", "--config", "tiny"]) == 2
    assert "--out is required" in capsys.readouterr().err


def test_the_readme_benchmarks_are_the_ones_run_here():
    shown = readme_benchmarks()
    assert "train_step.py" in shown and "demo_iteration.py" in shown, shown
    assert set(shown) == set(BENCHMARKS) | set(BENCHMARK_EXCEPTIONS), shown


@pytest.mark.parametrize("script", sorted(BENCHMARKS))
def test_readme_benchmark_command_runs(script, tmp_path):
    """The README's `python benchmarks/...` command, made tiny, runs and prints its figures."""
    args = readme_benchmarks().get(script)
    if args is None:
        pytest.skip(f"README.md no longer shows benchmarks/{script}")
    tiny, expected = BENCHMARKS[script]
    done = subprocess.run(
        [sys.executable, f"benchmarks/{script}", *args, *tiny],
        cwd=README.parent,
        env={**os.environ, "TMPDIR": str(tmp_path)},  # the scripts' own temporary folders
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for pattern in expected:
        assert re.search(pattern, done.stdout), (pattern, done.stdout)


def test_readme_torchrun_command_runs(cohort, tmp_path):
    """The README's `torchrun ... -m ratgan train ...`: two processes, the tiny preset."""
    (command,) = [c for c in readme_commands() if c.startswith("torchrun ")]
    words = shlex.split(command)
    at = words.index("-m")
    assert words[at + 1] == "ratgan", command
    launcher = words[1:at]
    launcher[launcher.index("--nproc_per_node") + 1] = "2"  # the machine's two cores
    os.symlink(cohort, tmp_path / "scans")
    done = subprocess.run(
        # torchrun is `python -m torch.distributed.run`; --standalone: a free local port
        [sys.executable, "-m", "torch.distributed.run", "--standalone", *launcher, "-m", "ratgan"]
        + _tiny(words[at + 2 :], cohort),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("trained 2 iterations") == 2  # both processes trained
    run = tmp_path / words[words.index("--out") + 1]
    assert [i for i, _ in ckpt.list_checkpoints(run)] == [2]
    assert ckpt.load_checkpoint(ckpt.checkpoint_path(run, 2))["world_size"] == 2
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2  # rank 0 alone writes
