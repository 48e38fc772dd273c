"""benchmarks/segbench_pair.py pairs two segbench runs only when they share their setup."""

import json

import pytest


def _write(folder, test_split, real, test1_dice=None):
    folder.mkdir()
    plan_runs = [{"test": 3, "seed": 0, "real": real}]
    runs = []
    if test1_dice is not None:
        plan_runs.append({"test": 1, "seed": 0, "real": real})
        runs.append({"test": 1, "seed": 0, "per_scan": {"global": test1_dice}})
    plan = {"test_split": test_split, "val_split": ["v.nii.gz"], "runs": plan_runs}
    (folder / "plan.json").write_text(json.dumps(plan))
    (folder / "runs.json").write_text(json.dumps({"runs": runs}))
    return folder


def _check(pair, a, b, tests):
    return pair.check_same_setup(a, b, pair._runs(a), pair._runs(b), tests)


def test_same_setup_passes_and_says_what_it_checked(tmp_path, load_benchmark):
    pair = load_benchmark("segbench_pair")
    a = _write(tmp_path / "a", ["t.nii.gz"], ["r1.nii.gz"])
    b = _write(tmp_path / "b", ["t.nii.gz"], ["r1.nii.gz"])
    assert _check(pair, a, b, [3]).endswith("test 1 not run in both, so not compared")
    c = _write(tmp_path / "c", ["t.nii.gz"], ["r1.nii.gz"], test1_dice=[0.9])
    d = _write(tmp_path / "d", ["t.nii.gz"], ["r1.nii.gz"], test1_dice=[0.8])
    assert _check(pair, c, d, [3]).endswith("identical in both runs: False")


def test_different_splits_or_real_scans_are_refused(tmp_path, load_benchmark):
    pair = load_benchmark("segbench_pair")
    a = _write(tmp_path / "a", ["t.nii.gz"], ["r1.nii.gz"])
    other_split = _write(tmp_path / "b", ["u.nii.gz"], ["r1.nii.gz"])
    other_real = _write(tmp_path / "c", ["t.nii.gz"], ["r2.nii.gz"])
    with pytest.raises(SystemExit, match="different test_splits"):
        _check(pair, a, other_split, [3])
    with pytest.raises(SystemExit, match="test 3, seed 0: .* different real scans"):
        _check(pair, a, other_real, [3])
