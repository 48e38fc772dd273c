"""End to end: `ratgan segbench` on tiny volumes, the files it writes, and resuming."""

import json
from pathlib import Path

import pytest

from ratgan.cli import main

FAST = [
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
    "--batch-size",
    "4",
    "--no-progress",
]
FILES = (
    "segbench.json",
    "plan.json",
    "quality_gate.json",
    "runs.json",
    "results.json",
    "table.md",
    "dice.png",
)


def _segbench(real, synthetic, out) -> list[str]:
    """The start of a `ratgan segbench` command line."""
    return ["segbench", "--real", str(real), "--synthetic", str(synthetic), "--out", str(out)]


def _runs(out):
    return json.loads((out / "runs.json").read_text())["runs"]


def test_joint_labels_end_to_end_and_rerun_skips_finished_tests(
    tiny_real, tiny_synthetic, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "bench"
    args = [
        *_segbench(tiny_real, tiny_synthetic, out),
        "--tests",
        "1,2",
        "--seeds",
        "1",
        "--labels",
        "joint",
        *FAST,
    ]
    assert main(args) == 0
    for name in FILES:
        assert (out / name).is_file(), name
    assert not (out / "teacher").exists()  # joint labels: no teacher needed
    state = json.loads((out / "segbench.json").read_text())
    assert state["labels"] == "joint"
    gate = json.loads((out / "quality_gate.json").read_text())
    assert state["counts"] == {
        "real_labelled": 12,
        "train": 8,
        "val": 2,
        "test": 2,
        "synthetic_pool": gate["n_accepted"],
        "synthetic_needed_all_tests": 16,
    }
    runs = _runs(out)
    assert [(r["test"], r["seed"]) for r in runs] == [(1, 0), (2, 0)]
    assert [(r["n_real"], r["n_synthetic"]) for r in runs] == [(8, 0), (8, 4)]
    assert all(0 <= r["scores"]["global"] <= 1 for r in runs)
    plan = json.loads((out / "plan.json").read_text())
    for row in plan["runs"]:
        assert not set(row["real"]) & set(plan["test_split"])
    table = (out / "table.md").read_text()
    assert "| Tests | Test1 | Test2 |" in table and "Global Dice" in table and "**" in table
    results = json.loads((out / "results.json").read_text())
    assert [t["test"] for t in results["tests"]] == [1, 2]
    assert gate["n_checked"] == 12 and gate["n_accepted"] >= 4
    assert gate["acceptance_rate"] == gate["n_accepted"] / 12

    # rerun: nothing is trained again
    from ratgan.segmentation import runner

    def boom(*a, **k):
        raise AssertionError("a finished test was trained again")

    monkeypatch.setattr(runner, "train_segmenter", boom)
    capsys.readouterr()
    assert main(args) == 0
    assert _runs(out) == runs
    # more seeds: only the new (test, seed) pairs run
    monkeypatch.undo()
    assert main(args + ["--seeds", "2"]) == 0
    assert [(r["test"], r["seed"]) for r in _runs(out)] == [(1, 0), (2, 0), (1, 1), (2, 1)]
    assert [r for r in _runs(out) if r["seed"] == 0] == runs
    rows = json.loads((out / "results.json").read_text())["tests"]
    assert rows[0]["seeds"] == [0, 1]


def test_other_options_into_the_same_folder_is_a_user_error(
    tiny_real, tiny_synthetic, tmp_path, capsys
):
    out = tmp_path / "bench"
    base = [*_segbench(tiny_real, tiny_synthetic, out), "--tests", "1", "--seeds", "1", *FAST]
    assert main(base) == 0
    capsys.readouterr()
    assert main(base + ["--lr", "0.01"]) == 2
    assert "other options" in capsys.readouterr().err


def test_a_folder_trained_on_another_kind_of_device_is_not_resumed_here(
    tiny_real, tiny_synthetic, tmp_path, capsys
):
    """Seeds trained on a GPU and seeds trained on the CPU are not paired in one benchmark; a
    folder written before the device was recorded resumes."""
    out = tmp_path / "bench"
    base = [*_segbench(tiny_real, tiny_synthetic, out), "--tests", "1", "--seeds", "1", *FAST]
    assert main(base) == 0
    state_path = out / "segbench.json"
    state = json.loads(state_path.read_text())
    assert state["options"]["device_type"] == "cpu"
    state["options"]["device_type"] = "cuda"  # as if made on a GPU machine
    state_path.write_text(json.dumps(state))
    capsys.readouterr()
    assert main(base + ["--seeds", "2"]) == 2
    assert "device_type: cuda -> cpu" in capsys.readouterr().err
    assert len(_runs(out)) == 1
    del state["options"]["device_type"]  # as written before the device was recorded
    state_path.write_text(json.dumps(state))
    assert main(base + ["--seeds", "2"]) == 0
    assert len(_runs(out)) == 2


def test_teacher_labels_synthetic_scans_without_labels(tiny_real, tmp_path, cohort_writer):
    syn = cohort_writer(
        tmp_path / "unlabelled", 10, seed=4, layout="flat", with_labels=False, prefix="synthetic"
    )
    out = tmp_path / "bench"
    assert (
        main(
            [
                *_segbench(tiny_real, syn, out),
                "--tests",
                "2",
                "--seeds",
                "1",
                "--gate-margin",
                "50",
                "--labels",
                "teacher",
                *FAST,
            ]
        )
        == 0
    )
    assert (out / "teacher" / "teacher.pt").is_file()
    labels = sorted((out / "teacher" / "labels").glob("*.nii.gz"))
    assert [p.name for p in labels] == sorted(p.name for p in syn.glob("*.nii.gz"))
    gate = json.loads((out / "quality_gate.json").read_text())
    assert gate["labels"] == "teacher" and gate["n_checked"] == 10
    assert _runs(out)[0]["n_synthetic"] == 4
    assert "circular" in (out / "table.md").read_text()


def test_dry_run_prints_the_plan(tiny_real, tiny_synthetic, tmp_path, capsys):
    assert main([*_segbench(tiny_real, tiny_synthetic, tmp_path / "b"), "--dry-run", *FAST]) == 0
    text = capsys.readouterr().out
    assert "train 8, validation 2, test 2; 5 seeds; synthetic labels: atlas" in text
    assert "test 10:" in text
    assert not (tmp_path / "b").exists()


def test_too_few_accepted_synthetic_scans_is_a_user_error(
    tiny_real, tmp_path, cohort_writer, capsys
):
    syn = cohort_writer(tmp_path / "few", 3, seed=2, layout="flat", prefix="synthetic")
    code = main(
        [
            *_segbench(tiny_real, syn, tmp_path / "b"),
            "--tests",
            "2",
            "--gate-margin",
            "50",
            "--labels",
            "joint",
            *FAST,
        ]
    )
    assert code == 2
    assert "need 4" in capsys.readouterr().err


def test_real_only_tests_need_no_synthetic_scans(tiny_real, tmp_path, cohort_writer):
    syn = cohort_writer(tmp_path / "nolabels", 2, seed=2, layout="flat", with_labels=False)
    out = tmp_path / "b"
    assert main([*_segbench(tiny_real, syn, out), "--tests", "1,10", "--seeds", "1", *FAST]) == 0
    assert [r["test"] for r in _runs(out)] == [1, 10]
    assert not (out / "teacher").exists()


def test_atlas_labels_statistics_and_the_labellers_accuracy(tiny_real, tiny_synthetic, tmp_path):
    """Default labels: the synthetic scans' own label maps are ignored, atlases label them;
    the report carries the labeller's Dice on the real test scans and the paired statistics."""
    out = tmp_path / "bench"
    assert (
        main(
            [
                *_segbench(tiny_real, tiny_synthetic, out),
                "--tests",
                "1,2",
                "--seeds",
                "2",
                "--atlases",
                "2",
                "--workers",
                "1",
                "--gate-margin",
                "50",
                *FAST,
            ]
        )
        == 0
    )
    state = json.loads((out / "segbench.json").read_text())
    assert state["labels"] == "atlas" and state["atlas"]["k"] == 2
    assert len(state["atlas"]["atlases"]) == 2
    assert set(state["atlas"]["atlases"]) <= set(state["split"]["train"])
    acc = state["atlas"]["accuracy"]
    assert len(acc["GM"]["per_scan"]) == 2 and acc["global"]["mean"] > 0.5
    labels = sorted(p.name for p in (out / "atlas" / "labels").glob("*.nii.gz"))
    assert labels == sorted(p.name for p in tiny_synthetic.glob("*.nii.gz"))
    results = json.loads((out / "results.json").read_text())
    comp = {(c["test"], c["score"]): c for c in results["comparisons"]}
    assert comp[(2, "global")]["n_pairs"] == 4  # 2 seeds x 2 test scans
    assert comp[(2, "GM")]["verdict"] in ("helped", "hurt", "no detectable difference")
    assert results["collapses"]["count"] == len(results["collapses"]["runs"])
    table = (out / "table.md").read_text()
    assert (
        "p (seed signs; exact to 16 seeds, then 100,000 draws)" in table
        and "atlas registration" in table
    )
    assert "The synthetic folder holds none of the real test and validation scans" in table


def test_labels_outside_0_to_3_are_one_clear_error(tiny_real, tmp_path, capsys):
    import numpy as np

    from ratgan.data.io import read_scan, write_nifti

    bad = tiny_real / "labels" / "sub-003.nii.gz"
    scan = read_scan(tiny_real / "images" / "sub-003.nii.gz")
    data = np.zeros(scan.shape, np.uint8)
    data[0, 0, 0] = 7
    write_nifti(bad, data, scan.affine, dtype=np.uint8)
    assert main([*_segbench(tiny_real, tiny_real, tmp_path / "b"), "--tests", "1", *FAST]) == 2
    err = capsys.readouterr().err
    assert "sub-003.nii.gz holds values [7]" in err


def test_syn_iterations_enter_the_options_and_old_folders_resume_with_the_old_default(
    tiny_real, tiny_synthetic, tmp_path, capsys
):
    """A folder written before --syn-iterations existed has no such option: it was made with
    20 10 5, so a rerun with that default resumes it and one with other counts is refused."""
    out = tmp_path / "bench"
    base = [*_segbench(tiny_real, tiny_synthetic, out), "--tests", "1", "--seeds", "1", *FAST]
    assert main(base) == 0
    state_path = out / "segbench.json"
    state = json.loads(state_path.read_text())
    assert state["options"]["syn_iterations"] == [20, 10, 5]
    del state["options"]["syn_iterations"]  # as written before the option existed
    state_path.write_text(json.dumps(state))
    capsys.readouterr()
    assert main(base + ["--syn-iterations", "20", "10", "20"]) == 2  # the old folder as it is
    err = capsys.readouterr().err
    assert "other options" in err and "syn_iterations: [20, 10, 5] -> [20, 10, 20]" in err
    assert main(base) == 0  # and with the default it resumes
    assert main(base + ["--out", str(tmp_path / "b"), "--syn-iterations", "20", "-1"]) == 2
    assert "--syn-iterations takes one count >= 0 per registration level" in (
        capsys.readouterr().err
    )


STEPS = ["--max-steps", "2", "--gate-margin", "50"]


def _shift(path, voxels: int = 4) -> None:
    """Rewrite a scan with its brain shifted along x (other content, same file name)."""
    import numpy as np

    from ratgan.data.io import read_scan, write_nifti

    scan = read_scan(path)
    write_nifti(path, np.roll(scan.data, voxels, axis=0), scan.affine)


def test_a_rerun_with_other_real_or_synthetic_scans_is_refused(
    tiny_real, tiny_synthetic, tmp_path, cohort_writer, capsys
):
    """Same paths and options, other file contents: finished runs, the teacher and its label
    maps belong to the old data, so the rerun is refused naming what changed."""
    out = tmp_path / "bench"
    args = [*_segbench(tiny_real, tiny_synthetic, out), "--tests", "2", "--seeds", "1"]
    args += ["--labels", "joint", *STEPS, *FAST]
    assert main(args) == 0
    runs = _runs(out)
    capsys.readouterr()

    _shift(tiny_synthetic / "synthetic-003.nii.gz")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--synthetic" in err and "1 changed (synthetic-003.nii.gz)" in err
    assert "--real" not in err and "use a new --out" in err

    _shift(tiny_synthetic / "synthetic-003.nii.gz", -4)  # the old content again: resumes
    assert main(args) == 0 and _runs(out) == runs
    capsys.readouterr()

    more = cohort_writer(tmp_path / "more", 1, seed=9, prefix="new")
    for sub in ("images", "labels"):
        (more / sub / "new-000.nii.gz").rename(tiny_real / sub / "new-000.nii.gz")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--real" in err and "1 added (new-000.nii.gz)" in err and "use a new --out" in err
    assert _runs(out) == runs
    data = json.loads((out / "segbench.json").read_text())["data"]
    assert len(data["real"]) == 12 and len(data["synthetic"]) == 12


def _saved_teacher(tiny_real, path):
    """A one-step teacher saved at ``path``: (train, val, net, settings) it was made with."""
    from ratgan.segmentation.data import find_entries, load_set
    from ratgan.segmentation.teacher import cached_teacher
    from ratgan.segmentation.train import TrainSettings
    from ratgan.segmentation.unet import UNetConfig

    real = load_set(find_entries(tiny_real), (16, 16, 8))
    train, val = real.subset(range(6)), real.subset([6, 7])
    net = UNetConfig(channels=(4, 8), input_shape=(16, 16, 8))
    settings = TrainSettings(max_epochs=1, patience=1, batch_size=4, max_steps=1, device="cpu")
    cached_teacher(path, train, val, net, settings)
    return train, val, net, settings


def test_a_teacher_trained_on_other_real_scans_is_refused(tiny_real, tmp_path):
    from ratgan.errors import RatganError
    from ratgan.segmentation.teacher import cached_teacher

    path = tmp_path / "teacher.pt"
    train, val, net, settings = _saved_teacher(tiny_real, path)
    cached_teacher(path, train, val, net, settings)  # the same scans: read back
    other = train.with_labels(torch_roll(train.label_maps()))
    with pytest.raises(RatganError, match="trained on other real scans"):
        cached_teacher(path, other, val, net, settings)


def torch_roll(labels):
    """Label maps shifted by one voxel along x (other content, same names)."""
    import torch

    return torch.roll(labels, 1, dims=2)


def _stopped_teacher_bench(tiny_real, tmp_path, cohort_writer):
    """A teacher-labelled benchmark of 6 unlabelled scans, left as one stopped in its pool
    leaves it (no segbench.json, no runs.json): (synthetic folder, out, its arguments)."""
    syn = cohort_writer(
        tmp_path / "unlabelled", 6, seed=4, layout="flat", with_labels=False, prefix="synthetic"
    )
    out = tmp_path / "bench"
    args = [*_segbench(tiny_real, syn, out), "--tests", "2", "--seeds", "1"]
    args += ["--labels", "teacher", *STEPS, *FAST]
    assert main(args) == 0
    for name in ("segbench.json", "runs.json"):
        (out / name).unlink()
    return syn, out, args


def test_teacher_label_maps_of_changed_synthetic_scans_are_made_again(
    tiny_real, tmp_path, cohort_writer, monkeypatch
):
    """A benchmark stopped after its teacher labelled the synthetic scans (before segbench.json
    was written) and rerun after a scan changed: only that scan is labelled again."""
    from ratgan.segmentation import train as train_mod

    syn, out, args = _stopped_teacher_bench(tiny_real, tmp_path, cohort_writer)
    _shift(syn / "synthetic-002.nii.gz")
    segmented = []
    segment = train_mod.segment
    monkeypatch.setattr(
        train_mod,
        "segment",
        lambda m, x, *a, **k: segmented.append(len(x)) or segment(m, x, *a, **k),
    )
    assert main(args) == 0
    assert segmented == [1]


@pytest.mark.parametrize("change", [["--lr", "0.01"], ["--crop", "none"]])
def test_a_teacher_and_its_labels_made_with_other_settings_are_not_reused(
    tiny_real, tmp_path, cohort_writer, capsys, change
):
    """A benchmark stopped after its teacher labelled the synthetic scans (before segbench.json
    recorded the options) and rerun with another learning rate or crop: the saved teacher and
    its label maps were made by another labeller, so they must not be taken for this one's."""
    syn, out, args = _stopped_teacher_bench(tiny_real, tmp_path, cohort_writer)
    capsys.readouterr()
    assert main(args + change) == 2
    assert "other settings" in capsys.readouterr().err


def test_a_saved_teacher_keeps_its_box_once_in_its_recipe(tiny_real, tmp_path):
    """teacher.pt records the crop box in its recipe (which the reuse check compares) and
    nowhere else, and saved_box reads it back."""
    from ratgan.segmentation.teacher import cached_teacher, saved_box
    from ratgan.segmentation.train import load_model

    train, val, net, settings = _saved_teacher(tiny_real, tmp_path / "plain.pt")
    box = ((2, 14), (2, 14), (0, 8))
    cached_teacher(tmp_path / "boxed.pt", train, val, net, settings, box=box)
    for name, want in (("plain.pt", None), ("boxed.pt", box)):
        _, record = load_model(tmp_path / name, "cpu")
        assert "box" not in record
        assert record["recipe"]["box"] == (None if want is None else [list(b) for b in want])
        assert saved_box(record) == want


def test_a_saved_teacher_is_refused_for_other_training_settings(tiny_real, tmp_path):
    from dataclasses import replace

    from ratgan.errors import RatganError
    from ratgan.segmentation.teacher import cached_teacher
    from ratgan.segmentation.unet import UNetConfig

    path = tmp_path / "teacher.pt"
    train, val, net, settings = _saved_teacher(tiny_real, path)
    cached_teacher(path, train, val, net, replace(settings, device="auto"))  # same teacher
    for other in (
        dict(settings=replace(settings, lr=0.5)),
        dict(net=UNetConfig(channels=(8, 16), input_shape=(16, 16, 8))),
        dict(downsample=2),
        dict(seed=3),
    ):
        kw = dict(net=net, settings=settings) | other
        with pytest.raises(RatganError, match="other settings"):
            cached_teacher(path, train, val, **kw)


def test_a_teacher_label_map_overwritten_before_its_record_is_not_taken_for_the_old_scan(
    tiny_real, tmp_path, cohort_writer, monkeypatch
):
    """A rerun after synthetic-002 and -003 changed dies after writing -002's new label map but
    before teacher/labels.json is rewritten; synthetic-002 is then restored. Its label map on
    disk is the changed scan's, so it must be made again: the rerun's map equals the first's."""
    import numpy as np

    from ratgan.data import io
    from ratgan.errors import RatganError
    from ratgan.segmentation import train as train_mod

    # a labeller that follows the scan, so that the two scans' label maps differ
    monkeypatch.setattr(train_mod, "segment", lambda m, x, *a, **k: (x > 0).long())
    syn, out, args = _stopped_teacher_bench(tiny_real, tmp_path, cohort_writer)
    label = out / "teacher" / "labels" / "synthetic-002.nii.gz"
    first = np.asarray(io.nib.load(label).dataobj)
    original = (syn / "synthetic-002.nii.gz").read_bytes()
    _shift(syn / "synthetic-002.nii.gz")
    _shift(syn / "synthetic-003.nii.gz")
    write = io.write_nifti

    def dies_at_the_second_label_map(path, *a, **k):
        if Path(path).name == "synthetic-003.nii.gz":
            raise RatganError("disk full")
        return write(path, *a, **k)

    monkeypatch.setattr(io, "write_nifti", dies_at_the_second_label_map)
    assert main(args) == 2
    assert not np.array_equal(np.asarray(io.nib.load(label).dataobj), first)  # overwritten
    monkeypatch.setattr(io, "write_nifti", write)
    (syn / "synthetic-002.nii.gz").write_bytes(original)
    assert main(args) == 0
    np.testing.assert_array_equal(np.asarray(io.nib.load(label).dataobj), first)


def test_teacher_labels_refuse_synthetic_scans_that_share_a_file_name(
    tiny_real, tmp_path, subject_maker, capsys
):
    """Teacher label maps are written by file name: sub0/scan.nii.gz ... sub5/scan.nii.gz
    would share one label map."""
    import numpy as np

    from ratgan.data.io import write_nifti

    rng = np.random.default_rng(3)
    rows = ["image"]
    for i in range(6):
        image, _ = subject_maker(rng)
        write_nifti(tmp_path / "syn" / f"sub{i}" / "scan.nii.gz", image, np.eye(4))
        rows.append(f"sub{i}/scan.nii.gz")
    csv = tmp_path / "syn" / "list.csv"
    csv.write_text("\n".join(rows) + "\n")
    out = tmp_path / "bench"
    args = [*_segbench(tiny_real, csv, out), "--tests", "2", "--seeds", "1"]
    assert main([*args, "--labels", "teacher", *STEPS, *FAST]) == 2
    err = capsys.readouterr().err
    assert "share the file name scan.nii.gz" in err and "rename" in err
    assert not (out / "teacher").exists()


def test_real_scans_that_share_a_file_name_are_refused(tiny_real, tmp_path, capsys):
    """The split and the per-scan results are recorded by file name: a CSV listing a/scan and
    b/scan could swap test and training scans unnoticed when reordered."""
    import shutil

    rows = ["image,label"]
    for i, image in enumerate(sorted((tiny_real / "images").glob("*.nii.gz"))):
        label = tiny_real / "labels" / image.name
        if i < 2:  # two subjects under one file name, in their own folders
            folder = tmp_path / "dup" / f"site{i}"
            folder.mkdir(parents=True)
            shutil.copy(image, folder / "scan.nii.gz")
            shutil.copy(label, folder / "scan_labels.nii.gz")
            image, label = folder / "scan.nii.gz", folder / "scan_labels.nii.gz"
        rows.append(f"{image},{label}")
    csv = tmp_path / "real.csv"
    csv.write_text("\n".join(rows) + "\n")
    out = tmp_path / "bench"
    assert main([*_segbench(csv, tiny_real, out), "--tests", "1", "--seeds", "1"]) == 2
    err = capsys.readouterr().err
    assert "two real scans share the file name scan.nii.gz" in err and "rename" in err
    assert not out.exists()


def test_real_scans_without_a_label_map_are_named_in_a_warning(tiny_real, tmp_path, caplog):
    from ratgan.segmentation.bench import load_real
    from ratgan.segmentation.state import BenchOptions

    (tiny_real / "labels" / "sub-004.nii.gz").unlink()
    opt = BenchOptions(
        real=str(tiny_real), synthetic=str(tiny_real), out=str(tmp_path / "o"), shape=(16, 16, 8)
    )
    with caplog.at_level("WARNING"):
        entries, real = load_real(opt.resolved())
    assert len(entries) == len(real) == 11
    assert "1 of 12 real scans" in caplog.text and "sub-004.nii.gz" in caplog.text


def test_the_reference_scan_enters_the_options_and_the_data(
    tiny_real, tiny_synthetic, tmp_path, capsys
):
    import shutil

    ref = tmp_path / "ref.nii.gz"
    shutil.copy(tiny_real / "images" / "sub-000.nii.gz", ref)
    out = tmp_path / "bench"
    base = [*_segbench(tiny_real, tiny_synthetic, out), "--tests", "1", "--seeds", "1", *FAST]
    assert main(base) == 0
    capsys.readouterr()
    assert main(base + ["--reference", str(ref)]) == 2
    err = capsys.readouterr().err
    assert "other options" in err and f"reference: None -> {ref.resolve()}" in err

    out2 = tmp_path / "bench2"
    args = [*_segbench(tiny_real, tiny_synthetic, out2), "--tests", "1", "--seeds", "1"]
    args += ["--reference", str(ref), *FAST]
    assert main(args) == 0
    state = json.loads((out2 / "segbench.json").read_text())
    assert state["options"]["reference"] == str(ref.resolve())
    _shift(ref)
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--reference" in err and "ref.nii.gz changed" in err and "use a new --out" in err


def test_a_new_checkpoint_of_the_synthetic_run_is_other_data(tiny_real, tmp_path):
    """A run folder as --synthetic: its newest checkpoint stands for the scans generated from
    it; a call whose tests need no synthetic scans keeps the recorded digest."""
    from ratgan.errors import RatganError
    from ratgan.segmentation.bench import check_data, data_digests
    from ratgan.segmentation.data import find_entries
    from ratgan.segmentation.state import BenchOptions

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("{}\n")
    (run / "checkpoints" / "ckpt_0000002.pt").write_bytes(b"two")
    out = tmp_path / "bench"
    opt = BenchOptions(real=str(tiny_real), synthetic=str(run), out=str(out)).resolved()
    entries = find_entries(tiny_real)
    first = data_digests(opt, entries, 4)
    assert [p.rsplit("/", 1)[1] for p in first["synthetic"]] == ["ckpt_0000002.pt"]
    split = {"train": ["a"], "val": ["b"], "test": ["c"]}
    out.mkdir()
    (out / "segbench.json").write_text(json.dumps({"split": split, "data": first}))
    check_data(out, opt, data_digests(opt, entries, 4), split)  # nothing changed
    (run / "checkpoints" / "ckpt_0000004.pt").write_bytes(b"four")
    with pytest.raises(RatganError, match="has another newest checkpoint .1 added"):
        check_data(out, opt, data_digests(opt, entries, 4), split)
    real_only = data_digests(opt, entries, 0)
    check_data(out, opt, real_only, split)
    assert real_only["synthetic"] == first["synthetic"]
    with pytest.raises(RatganError, match="the real split differs"):
        check_data(out, opt, first, {**split, "test": ["a"]})


def test_a_rerun_of_real_tests_only_keeps_the_synthetic_tests_records(
    tiny_real, tiny_synthetic, tmp_path
):
    # --tests 1 --seeds 2 after a full run rewrote segbench.json as if there were no
    # synthetic scans (labels none, gate 0 of 0) and plan.json without test 2
    out = tmp_path / "bench"
    base = [*_segbench(tiny_real, tiny_synthetic, out), "--labels", "joint", *FAST]
    assert main([*base, "--tests", "1,2", "--seeds", "1"]) == 0
    before = json.loads((out / "segbench.json").read_text())
    plan_before = json.loads((out / "plan.json").read_text())["runs"]
    assert main([*base, "--tests", "1", "--seeds", "2"]) == 0
    after = json.loads((out / "segbench.json").read_text())
    for key in ("labels", "overlap", "quality_gate"):
        assert after[key] == before[key], key
    assert after["counts"]["synthetic_pool"] == before["counts"]["synthetic_pool"]
    rows = json.loads((out / "plan.json").read_text())["runs"]
    assert [(r["test"], r["seed"]) for r in rows] == [(1, 0), (2, 0), (1, 1)]
    assert rows[1] == plan_before[1]  # test 2 as it was trained
    assert "No synthetic scans were needed" not in (out / "table.md").read_text()


@pytest.mark.parametrize("tests", ["2,11", "0"])
def test_unknown_test_numbers_are_refused_before_the_folder_is_made(
    tiny_real, tiny_synthetic, tmp_path, capsys, tests
):
    """Tests are 1 to 10: --tests 2,11 labelled and gated the synthetic pool (and wrote the
    folder) before the plan refused 11, and --tests 0 ended in a bare ValueError."""
    out = tmp_path / "bench"
    args = [*_segbench(tiny_real, tiny_synthetic, out), "--tests", tests, "--seeds", "1"]
    assert main([*args, "--labels", "joint", *STEPS, *FAST]) == 2
    err = capsys.readouterr().err
    assert f"unknown test numbers [{tests.split(',')[-1]}]" in err and "1 to 10" in err
    assert not out.exists()
