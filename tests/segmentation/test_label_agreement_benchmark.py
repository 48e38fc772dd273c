"""benchmarks/label_agreement.py: the teacher's segmentation against a folder's label maps.

The teacher here is a U-Net whose head is a constant (grey matter everywhere), saved with a
box, so that its segmentation is known exactly: grey matter inside the box, background
outside.  The Dice and the tissue shares are then checked against numpy on the label files."""

import numpy as np
import pytest
import torch

from ratgan.data.io import read_label, read_scan, write_nifti
from ratgan.segmentation.train import TrainResult, save_model
from ratgan.segmentation.unet import UNetConfig, build_unet

from .conftest import AFFINE, SHAPE, write_cohort

BOX = ((2, 14), (3, 13), (0, 8))


def _constant_teacher(path, record="recipe"):
    """``record``: ``recipe``, the box where segbench's teacher.pt keeps it, or ``legacy``,
    where a teacher.pt saved before the recipe was recorded kept it."""
    net = build_unet(UNetConfig(channels=(2, 4), input_shape=SHAPE, norm="instance"))
    head = [m for m in net.head.modules() if isinstance(m, torch.nn.Conv3d)][-1]
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([0.0, 5.0, 0.0, 0.0]))  # class 1 (GM) everywhere
    box = [list(b) for b in BOX]
    save_model(
        path, TrainResult(net), {"recipe": {"box": box}} if record == "recipe" else {"box": box}
    )
    return path


def _inside_box():
    inside = np.zeros(SHAPE, bool)
    inside[tuple(slice(a, b) for a, b in BOX)] = True
    return inside


@pytest.mark.parametrize("record", ["recipe", "legacy"])
def test_agreement_is_the_dice_against_the_teachers_known_segmentation(
    load_benchmark, tmp_path, record
):
    bench = load_benchmark("label_agreement")
    teacher = _constant_teacher(tmp_path / "teacher.pt", record)
    cohort = write_cohort(tmp_path / "c", 3, seed=5)
    inside = _inside_box()

    # labels equal to the teacher's segmentation: every score 1, GM share 1 in both
    match = tmp_path / "match"
    for image in sorted((cohort / "images").glob("*.nii.gz")):
        write_nifti(match / "images" / image.name, read_scan(image).data, AFFINE)
        write_nifti(match / "labels" / image.name, inside.astype(np.uint8), AFFINE, dtype=np.uint8)
    r = bench.agreement(teacher, match, SHAPE)
    assert r["n"] == 3 and r["global"] == 1.0 and r["GM"] == 1.0
    assert r["labels_GM"] == r["teacher_GM"] == 1.0 and r["teacher_WM"] == 0.0

    # the cohort's true labels: GM Dice and global Dice from numpy
    gm, glob, wm_share = [], [], []
    for image in sorted((cohort / "images").glob("*.nii.gz")):
        truth = read_label(cohort / "labels" / image.name, read_scan(image))
        t_gm = truth == 1
        gm.append(2 * (t_gm & inside).sum() / (t_gm.sum() + inside.sum()))
        glob.append(2 * (t_gm & inside).sum() / ((truth > 0).sum() + inside.sum()))
        wm_share.append((truth == 2).sum() / (truth > 0).sum())
    r = bench.agreement(teacher, cohort, SHAPE)
    # (MONAI computes the per-class Dice in float32)
    assert abs(r["GM"] - np.mean(gm)) < 1e-6 and abs(r["global"] - np.mean(glob)) < 1e-9
    assert abs(r["labels_WM"] - np.mean(wm_share)) < 1e-6
    assert r["WM"] == 0.0  # the teacher draws no white matter


def test_the_command_prints_one_row_per_folder(load_benchmark, tmp_path, capsys):
    bench = load_benchmark("label_agreement")
    teacher = _constant_teacher(tmp_path / "teacher.pt")
    real = write_cohort(tmp_path / "real", 2, seed=1)
    flat = write_cohort(tmp_path / "gen", 2, seed=2, layout="flat", prefix="synthetic")
    bench.main(["--teacher", str(teacher), "--shape", *map(str, SHAPE), f"r={real}", str(flat)])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert [row.split(" | ")[0] for row in rows[1:]] == ["| r", f"| {flat}"]
    assert all(row.split(" | ")[1] == "2" for row in rows[1:])


def test_a_teacher_trained_on_pooled_scans_sees_pooled_scans(load_benchmark, tmp_path, monkeypatch):
    """A teacher of ``segbench --downsample 2`` is built for the box pooled by 2 and segments
    scans that way in segbench; judged on full-resolution crops it would answer for anatomy
    twice the size it learned (the U-Net runs on any even shape, so nothing would fail)."""
    from ratgan.segmentation import train as train_mod

    bench = load_benchmark("label_agreement")
    pooled = tuple((b - a) // 2 for a, b in BOX)
    net = build_unet(UNetConfig(channels=(2, 4), input_shape=pooled, norm="instance"))
    box = [list(b) for b in BOX]
    path = tmp_path / "teacher.pt"
    save_model(path, TrainResult(net), {"recipe": {"box": box, "downsample": 2}})
    seen = []
    load = train_mod.load_model

    def load_and_watch(*a, **k):
        model, record = load(*a, **k)
        model.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape[2:])))
        return model, record

    monkeypatch.setattr(train_mod, "load_model", load_and_watch)
    bench.agreement(path, write_cohort(tmp_path / "c", 2, seed=5), SHAPE)
    assert seen and set(seen) == {pooled}
