"""One ratgan process per output folder: a second one is refused while the first writes, and
the folder is free again once the first has exited, however it ended (ratgan.folder_lock)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ratgan.cli import main
from ratgan.errors import RatganError
from ratgan.folder_lock import LOCK_FILE, FolderLock

HOLDER = textwrap.dedent(
    """
    import sys, time
    from ratgan.folder_lock import FolderLock

    with FolderLock(sys.argv[1], "ratgan train") as lock:
        lock.create()
        print("held", flush=True)
        time.sleep(600)
    """
)


@contextmanager
def held_elsewhere(folder: Path) -> Iterator[subprocess.Popen]:
    """Another process holding ``folder`` (created if missing) until the block ends."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _refused(capsys: pytest.CaptureFixture[str], folder: Path, holder: subprocess.Popen) -> None:
    """The command said, in one sentence, that ``folder`` is in use by ``holder``."""
    err = capsys.readouterr().err
    assert f"{folder} is in use by another ratgan process (pid {holder.pid} " in err, err
    assert "`ratgan train`" in err and "wait for it to finish or stop it" in err
    assert err.count(". ") == 0 and err.rstrip().endswith(".")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ratgan.data.phantom import write_cohort

    out = tmp_path_factory.mktemp("phantom")
    write_cohort(out, subjects=6, seed=7, progress=False)
    return out


@pytest.fixture(scope="module")
def run(cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lock") / "run"
    args = ["train", "--config", "tiny", "--data", str(cohort), "--out", str(out)]
    assert main([*args, "--iterations", "2", "--no-progress"]) == 0
    return out


def test_a_resume_is_refused_while_another_process_trains_and_runs_once_it_was_killed(run, capsys):
    before = _files(run)
    with held_elsewhere(run) as holder:
        args = ["train", "--resume", "--out", str(run), "--iterations", "3", "--no-progress"]
        assert main(args) == 2
        _refused(capsys, run, holder)
        # nothing written: the holder's lock file aside, the run is byte for byte as it was
        assert {k: v for k, v in _files(run).items() if k != LOCK_FILE} == before
        holder.send_signal(signal.SIGKILL)  # no cleanup runs: the kernel drops the lock
        holder.wait()
        assert main(args) == 0
    assert "ckpt_0000003.pt" in {p.name for p in (run / "checkpoints").iterdir()}
    assert not (run / LOCK_FILE).exists()  # removed when the resume let go


def test_a_new_run_into_a_folder_in_use_is_refused_and_writes_nothing(cohort, tmp_path, capsys):
    out = tmp_path / "run"
    with held_elsewhere(out) as holder:
        args = ["train", "--config", "tiny", "--data", str(cohort), "--out", str(out)]
        assert main([*args, "--iterations", "1", "--no-progress"]) == 2
        _refused(capsys, out, holder)
        assert [p.name for p in out.iterdir()] == [LOCK_FILE]


def test_generate_is_refused_while_another_process_writes_the_set(run, tmp_path, capsys):
    out = tmp_path / "syn"
    args = ["generate", str(run), "--n", "2", "--out", str(out), "--no-progress"]
    with held_elsewhere(out) as holder:
        assert main(args) == 2
        _refused(capsys, out, holder)
        assert [p.name for p in out.iterdir()] == [LOCK_FILE]
    assert main(args) == 0  # the holder has exited: the folder is free
    assert sorted(p.name for p in out.iterdir()) == [
        "manifest.json",
        "synthetic_00000.nii.gz",
        "synthetic_00001.nii.gz",
    ]


class Reached(Exception):
    """The command got past the point where it should have been refused."""


def _reached(*args: object, **kwargs: object) -> None:
    raise Reached


@pytest.fixture(scope="module")
def synthetic(run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lock") / "syn"
    assert main(["generate", str(run), "--n", "4", "--out", str(out), "--no-progress"]) == 0
    return out


def _others(
    cohort: Path, run: Path, synthetic: Path, out: Path
) -> dict[str, tuple[list[str], str]]:
    """Command line, and the function the command calls only once it holds its folder, made
    to raise ``Reached`` (so that the test stays fast when a command does not lock)."""
    real, syn, out_ = str(cohort), str(synthetic), str(out)
    return {
        "label": (
            ["label", "--atlas", real, "--scans", str(cohort / "images"), "--out", out_]
            + ["--k", "1", "--workers", "1", "--no-progress"],
            "ratgan.segmentation.atlas.atlas_label",
        ),
        "segbench": (
            ["segbench", "--real", real, "--synthetic", str(run), "--out", out_]
            + ["--tests", "1", "--seeds", "1", "--shape", "16", "16", "8", "--no-progress"],
            "ratgan.segmentation.bench.Benchmark._run",
        ),
        "evaluate": (
            ["evaluate", "--real", real, "--synthetic", f"m={syn}", "--out", out_, "--no-progress"],
            "ratgan.evaluation.prepare.resolve_source",
        ),
        "demo": (
            ["demo", "--out", out_, "--subjects", "4", "--heldout", "2", "--no-progress"],
            "ratgan.demo.demo_cohort",
        ),
        "turing create": (
            ["turing", "create", "--real", real, "--synthetic", f"m={syn}"]
            + ["--n-real", "2", "--n-per-model", "2", "--raters", "1", "--out", out_],
            "ratgan.turing.study._write_study",
        ),
        "phantom": (
            ["phantom", "--out", out_, "--subjects", "2", "--no-progress"],
            "ratgan.data.phantom.write_cohort",
        ),
    }


@pytest.mark.parametrize(
    "command", ["label", "segbench", "evaluate", "demo", "turing create", "phantom"]
)
def test_every_other_command_is_refused_for_a_folder_in_use(
    command, cohort, run, synthetic, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "out"
    args, target = _others(cohort, run, synthetic, out)[command]
    monkeypatch.setattr(target, _reached)
    with held_elsewhere(out) as holder:
        assert main(args) == 2
        _refused(capsys, out, holder)
        assert [p.name for p in out.iterdir()] == [LOCK_FILE]
    with pytest.raises(Reached):  # free again: the command goes on to its work
        main(args)


def test_a_folder_made_by_another_process_after_the_checks_is_refused(tmp_path):
    out = tmp_path / "new"
    with FolderLock(out, "ratgan generate") as lock:  # not there yet: nothing to lock
        message = f"{out} was created by another process while this command checked its inputs"
        with held_elsewhere(out), pytest.raises(RatganError, match=message):
            lock.create()
        with pytest.raises(RatganError, match=message):  # made, and let go, meanwhile
            lock.create()


def test_nested_locks_of_one_process_share_the_folder_and_leave_it_as_it_was(tmp_path):
    out = tmp_path / "demo"
    with FolderLock(out, "ratgan demo") as outer:
        outer.create()
        with FolderLock(out, "ratgan evaluate") as inner:  # the same folder: re-entrant
            inner.create()
            with FolderLock(out / "run", "ratgan train") as train:
                train.create()
                assert (out / "run" / LOCK_FILE).is_file()
            assert not (out / "run" / LOCK_FILE).exists()
        assert (out / LOCK_FILE).is_file()  # the outer command still holds it
        code = "import sys\nfrom ratgan.folder_lock import FolderLock\n"
        code += "FolderLock(sys.argv[1], 'x').__enter__()"
        other = subprocess.run(
            [sys.executable, "-c", code, str(out)], capture_output=True, text=True
        )
        assert "is in use by another ratgan process" in other.stderr
        assert f"pid {os.getpid()}" in other.stderr and "`ratgan demo`" in other.stderr
    assert [p.name for p in out.iterdir()] == ["run"]


def test_a_lock_file_left_by_a_killed_process_trips_no_folder_check(cohort, run, tmp_path):
    """A holder killed by SIGKILL leaves its (unlocked) lock file; no check counts it."""
    from ratgan.generation import generate_scans

    syn, fresh = tmp_path / "syn", tmp_path / "fresh"
    generate_scans(run, 2, syn, progress=False)
    for folder in (syn, fresh):
        with held_elsewhere(folder):
            pass  # killed
        assert (folder / LOCK_FILE).is_file()
    assert len(generate_scans(run, 2, syn, progress=False)) == 2  # still the set's folder
    args = ["train", "--config", "tiny", "--data", str(cohort), "--out", str(fresh)]
    assert main([*args, "--iterations", "1", "--no-progress"]) == 0  # not an earlier run's
    assert not (syn / LOCK_FILE).exists() and not (fresh / LOCK_FILE).exists()
