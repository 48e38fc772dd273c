"""`ratgan evaluate` end to end on a few small volumes: the files it writes and its errors."""

import json
from pathlib import Path

import numpy as np
import pytest

from ratgan.cli import main
from ratgan.cli.evaluate import parse_sets
from ratgan.errors import RatganError

FAST = [
    "--comparisons",
    "300",
    "--msssim-comparisons",
    "30",
    "--split-repeats",
    "2",
    "--no-progress",
]
FIGURES = [
    "montage.png",
    "mean_std_maps.png",
    "intensity_histograms.png",
    "memorisation.png",
    "spectra.png",
]


def test_evaluate_writes_report_json_and_figures(kit, tiny_sets, capsys):
    tmp = tiny_sets["tmp"]
    # a network-space set: 32 slices, the 20 source slices in the middle (6 padded each side)
    padded = np.zeros((6, 32, 32, 32), dtype=np.float32)
    padded[..., 6:26] = kit.brains(6, 5)
    kit.write_set(tmp / "padded", padded)
    out = tmp / "report"
    rc = main(
        [
            "evaluate",
            "--real",
            str(tiny_sets["real"]),
            "--synthetic",
            f"noise={tiny_sets['noise']}",
            f"padded={tmp / 'padded'}",
            "--heldout",
            str(tiny_sets["heldout"]),
            "--out",
            str(out),
            "--seed",
            "3",
            *FAST,
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| noise |" in printed and "NCC ↑" in printed
    for name in ["report.md", "metrics.json", *FIGURES]:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name

    data = json.loads((out / "metrics.json").read_text())
    ref = data["reference_row"]
    assert list(data["rows"]) == [ref, "noise", "padded"]
    # the spectral stage: every set, and uniform noise has far more fine detail than brains
    spectra = data["spectra"]
    assert list(spectra) == ["real", "held-out real", "noise", "padded"]
    assert spectra["noise"]["band_power"] > 10 * spectra["real"]["band_power"]
    assert "directional artefacts" in (out / "report.md").read_text()
    for row in data["rows"].values():
        for key in (
            "msssim",
            "ncc",
            "mae",
            "mmd",
            "psnr",
            "rmse",
            "rbf_mmd",
            "fd",
            "precision",
            "recall",
            "density",
            "coverage",
            "intensity_w1",
            "mean_map_rmse",
            "std_map_rmse",
            "tail_gap",
            "memorisation",
        ):
            assert key in row
        assert row["ncc"]["comparisons"] == 300 and row["msssim"]["comparisons"] == 30
    assert data["settings"]["seed"] == 3 and data["settings"]["msssim"]["data_range"] == 1.0
    assert data["sets"]["padded"]["shape"] == [32, 32, 20]
    assert "centre-cropped" in data["sets"]["padded"]["notes"][0]
    assert data["sets"]["held-out"]["n"] == 6
    # the cropped brains are close to real, the noise is not
    assert data["rows"]["padded"]["ncc"]["mean"] > 0.8 > data["rows"]["noise"]["ncc"]["mean"]

    md = (out / "report.md").read_text()
    lines = [ln for ln in md.splitlines() if ln.startswith("| ")]
    header = lines[0]
    assert "MS-SSIM" in header and "NCC ↑" in header and "MAE ↓" in header and "MMD ↓" in header
    # the distribution-distance table shows density and coverage beside precision and recall
    distance_header = next(ln for ln in lines if "Fréchet ↓" in ln)
    assert "| recall ↑ | density (≈ 1) | coverage ↑ |" in distance_header
    for row in data["rows"].values():
        assert set(row["coverage"]) >= {"mean", "std", "values", "ci"}
    assert lines[1].startswith(f"| *{ref}*")  # the reference row comes first
    assert "**" in lines[3] and "**" not in lines[2]  # padded (brains) beats noise: bold
    assert "Protocol: **ratgan**" in md
    # 6-scan subsets in 176 features: said out loud; distinct pairs behind the draws listed
    assert "Unstable estimate" in md and "6 scans in 176 features" in md
    distinct = data["rows"]["noise"]["ncc"]["distinct_pairs"]
    assert (
        f"| noise | 30 | {data['rows']['noise']['msssim']['distinct_pairs']} | 300 | "
        f"{distinct} |" in md
    )
    assert data["protocol"] == "ratgan"
    memo = data["rows"][ref]["memorisation"]
    assert memo["target_false_positive_rate"] == 0.01 and 0 < memo["threshold"] < 1


def test_authors_protocol_is_named_in_the_report(tiny_sets, capsys):
    out = tiny_sets["tmp"] / "authors"
    rc = main(
        [
            "evaluate",
            "--real",
            str(tiny_sets["real"]),
            "--synthetic",
            f"noise={tiny_sets['noise']}",
            "--heldout",
            str(tiny_sets["heldout"]),
            "--out",
            str(out),
            "--protocol",
            "authors",
            "--no-figures",
            *FAST,
        ]
    )
    assert rc == 0
    assert "protocol: authors" in capsys.readouterr().out
    data = json.loads((out / "metrics.json").read_text())
    assert data["protocol"] == "authors" and data["protocol_details"]["epochs"] == 100
    assert data["protocol_details"]["padded_shape"] == [32, 32, 32]
    ncc = data["rows"]["noise"]["ncc"]
    assert ncc["epochs"] == 100 and ncc["std_over"] == "epoch averages"
    assert ncc["comparisons"] == 100 * 5  # 10 real scans: 5 batches of 2 per epoch
    md = (out / "report.md").read_text()
    assert "the authors' protocol" in md and "std over the epoch averages" in md


def test_bare_source_is_named_after_its_folder():
    assert parse_sets(["a=/x/y", "/data/demo_run/"]) == {"a": "/x/y", "demo_run": "/data/demo_run/"}
    with pytest.raises(RatganError):
        parse_sets(["a=/x", "a=/y"])
    with pytest.raises(RatganError, match="reference"):
        parse_sets(["/data/reference/"])


def test_errors_are_one_sentence(kit, tiny_sets, capsys):
    tmp = tiny_sets["tmp"]
    kit.write_set(tmp / "small", kit.brains(3, 9, shape=(16, 16, 10)))
    rc = main(
        [
            "evaluate",
            "--real",
            str(tiny_sets["real"]),
            "--synthetic",
            f"small={tmp / 'small'}",
            "--out",
            str(tmp / "r"),
            *FAST,
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "scan_000.nii.gz" in err and "real scans' space" in err
    rc = main(
        [
            "evaluate",
            "--real",
            str(tiny_sets["real"]),
            "--synthetic",
            f"x={tmp / 'missing'}",
            "--out",
            str(tmp / "r"),
            *FAST,
        ]
    )
    assert rc == 2 and "does not exist" in capsys.readouterr().err


def test_run_folder_source_generates_first(kit, tiny_sets, monkeypatch):
    import ratgan.generation

    tmp = tiny_sets["tmp"]
    run = tmp / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("name: fake\n")
    calls = []

    def fake_generate(run_dir, n, out_dir, seed=0, reference=None, **kw):
        calls.append((run_dir, n, seed, reference))
        return list(kit.write_set(out_dir, kit.brains(n, 40 + seed), "synthetic").iterdir())

    monkeypatch.setattr(ratgan.generation, "generate_scans", fake_generate)
    out = tmp / "report"
    rc = main(
        [
            "evaluate",
            "--real",
            str(tiny_sets["real"]),
            "--synthetic",
            f"demo={run}",
            "--out",
            str(out),
            "--n-generate",
            "5",
            "--no-figures",
            *FAST,
        ]
    )
    assert rc == 0
    assert calls and calls[0][0] == run and calls[0][1] == 5
    assert calls[0][3].name == "scan_000.nii.gz"  # header copied from a real scan
    data = json.loads((out / "metrics.json").read_text())
    assert data["sets"]["demo"]["generated_from"] == str(run)
    assert data["sets"]["demo"]["n"] == 5
    assert (out / "generated" / "demo").is_dir()
    # a run's scans do not depend on its place in --synthetic (seed + position made them)
    calls.clear()
    sets = [f"first={tiny_sets['noise']}", f"demo={run}"]
    assert (
        _evaluate(tiny_sets["real"], sets, tmp / "second", "--n-generate", "5", "--seed", "3") == 0
    )
    assert [c[2] for c in calls] == [3]


def test_evaluate_sets_for_the_demo(tiny_sets):
    from ratgan.evaluation import evaluate_sets

    out = tiny_sets["tmp"] / "demo-eval"
    res = evaluate_sets(
        real=tiny_sets["real"],
        synthetic={"demo": tiny_sets["heldout"]},
        out=out,
        seed=0,
        progress=False,
        quick=True,
    )
    assert res["report"] == out / "report.md" and res["report"].is_file()
    assert "| demo |" in res["table_markdown"] and "Fréchet" in res["table_markdown"]
    assert all(p.is_file() for p in res["figures"].values())
    assert res["result"].rows["demo"].metrics["ncc"]["comparisons"] == 2_100


def _evaluate(real, synthetic: list[str], out, *extra: str) -> int:
    """``ratgan evaluate`` without figures or the anatomy space, with the FAST counts."""
    return main(
        [
            "evaluate",
            "--real",
            str(real),
            "--synthetic",
            *synthetic,
            "--out",
            str(out),
            "--no-figures",
            "--no-anatomy",
            *extra,
            *FAST,
        ]
    )


def test_copies_stored_in_another_orientation_are_caught(kit, tmp_path, caplog):
    """Copies of real scans stored x-flipped with an LAS affine (the same image in the world)
    are near-copies: every scan is reoriented to RAS before any comparison.  Before, the
    flipped arrays were compared voxel by voxel with RAS ones and all 4 copies passed."""
    from ratgan.data.io import write_nifti

    vols = kit.brains(8, 21)
    vols[:, :10, 12:20, 6:12] += 0.4  # an off-centre structure: a mirrored brain differs
    real = kit.write_set(tmp_path / "real", vols)
    las = np.diag([-0.375, 0.375, 0.5, 1.0])
    las[0, 3] = 0.375 * (vols.shape[1] - 1)  # every voxel at the same world position
    for i in range(4):
        write_nifti(tmp_path / "las" / f"copy_{i}.nii.gz", vols[i][::-1] * 1000.0, las)
    out = tmp_path / "report"
    with caplog.at_level("WARNING"):
        assert _evaluate(real, [f"las={tmp_path / 'las'}"], out) == 0
    data = json.loads((out / "metrics.json").read_text())
    memo = data["rows"]["las"]["memorisation"]
    assert memo["near_copies"] == 4
    assert [Path(f["nearest_training_scan"]).name for f in memo["flagged"]] == [
        f"scan_{i:03d}.nii.gz" for i in range(4)
    ]
    assert data["sets"]["las"]["notes"] == ["4 scans reoriented to RAS (4 from LAS)"]
    assert "4 of 4 scans of set 'las' are stored in another orientation" in caplog.text


def test_an_unfinished_generation_folder_is_refused(kit, tiny_sets, capsys):
    tmp = tiny_sets["tmp"]
    part = kit.write_set(tmp / "part", kit.brains(3, 4), "gen")
    (part / "manifest.json").write_text('{"complete": false, "n": 100}')
    rc = _evaluate(tiny_sets["real"], [f"part={part}"], tmp / "r")
    err = capsys.readouterr().err
    assert rc == 2 and f"folder {part} holds an unfinished" in err
    assert "rerun `ratgan generate` into it" in err and not (tmp / "r").exists()
    (part / "manifest.json").write_text('{"complete": true, "n": 3}')
    assert _evaluate(tiny_sets["real"], [f"part={part}"], tmp / "r") == 0


def test_a_set_from_a_pooling_run_is_warned_about(kit, tiny_sets, caplog):
    """Scans of a run that pools its scans (tiny: by 4) are compared at full resolution, where
    its best copies of training scans can escape: evaluate says so, naming the run."""
    from ratgan.config import load_config, save_config

    tmp = tiny_sets["tmp"]
    runs = {}
    for preset, factor in (("tiny", 4), ("demo", 1)):
        run = tmp / f"run-{preset}"
        (run / "checkpoints").mkdir(parents=True)
        cfg = load_config(preset)
        assert cfg.data.downsample == factor
        save_config(cfg, run / "config.yaml")
        gen = kit.write_set(tmp / f"gen-{preset}", kit.brains(3, 4), "gen")
        (gen / "manifest.json").write_text(json.dumps({"complete": True, "run": str(run)}))
        runs[preset] = gen
    with caplog.at_level("WARNING"):
        assert _evaluate(tiny_sets["real"], [f"pooled={runs['tiny']}"], tmp / "r1") == 0
    assert "set 'pooled' comes from run" in caplog.text and "pools its scans by 4" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert _evaluate(tiny_sets["real"], [f"full={runs['demo']}"], tmp / "r2") == 0
    assert "pools its scans" not in caplog.text


def test_overlapping_sources_are_refused_or_warned(kit, tiny_sets, capsys, caplog):
    """A held-out set sharing a real scan (same file or a byte copy) is refused naming it; a
    synthetic set holding a real scan is evaluated, with a warning naming it."""
    import shutil

    tmp, real = tiny_sets["tmp"], tiny_sets["real"]
    rc = _evaluate(real, [f"noise={tiny_sets['noise']}"], tmp / "r", "--heldout", str(real))
    err = capsys.readouterr().err
    assert rc == 2 and "10 held-out scans are also real (training) scans" in err
    held = kit.write_set(tmp / "held", kit.brains(3, 8), "held")
    shutil.copy(real / "scan_003.nii.gz", held / "renamed.nii.gz")
    rc = _evaluate(real, [f"noise={tiny_sets['noise']}"], tmp / "r", "--heldout", str(held))
    err = capsys.readouterr().err
    assert rc == 2 and "1 held-out scans" in err
    assert f"{held / 'renamed.nii.gz'} = {real / 'scan_003.nii.gz'}" in err

    syn = kit.write_set(tmp / "syn", kit.brains(3, 9), "syn")
    shutil.copy(real / "scan_005.nii.gz", syn / "copied.nii.gz")
    out = tmp / "ok"
    with caplog.at_level("WARNING"):
        rc = _evaluate(real, [f"syn={syn}"], out, "--heldout", str(tiny_sets["heldout"]))
    assert rc == 0
    text = "1 scans of synthetic set 'syn' are real (training) scans"
    assert text in caplog.text and f"{syn / 'copied.nii.gz'} = {real / 'scan_005.nii.gz'}" in (
        caplog.text
    )
    data = json.loads((out / "metrics.json").read_text())
    assert any(text in note for note in data["sets"]["syn"]["notes"])
    assert data["rows"]["syn"]["memorisation"]["near_copies"] >= 1


def test_a_run_without_figures_removes_the_old_ones(tiny_sets):
    out = tiny_sets["tmp"] / "report"
    out.mkdir()
    for name in FIGURES:  # what an earlier run with figures left
        (out / name).write_bytes(b"old")
    assert _evaluate(tiny_sets["real"], [f"noise={tiny_sets['noise']}"], out) == 0
    assert not any((out / name).exists() for name in FIGURES)
    md = (out / "report.md").read_text()
    assert "## Figures" not in md and ".png" not in md


def test_scans_of_another_voxel_size_are_refused(kit, tiny_sets, capsys):
    from ratgan.data.io import write_nifti

    tmp = tiny_sets["tmp"]
    for i, v in enumerate(kit.brains(3, 6)):
        write_nifti(tmp / "big" / f"scan_{i:03d}.nii.gz", v * 1000.0, np.diag([0.75, 0.75, 1, 1]))
    rc = _evaluate(tiny_sets["real"], [f"big={tmp / 'big'}"], tmp / "r")
    err = capsys.readouterr().err
    assert rc == 2 and f"{tmp / 'big' / 'scan_000.nii.gz'} of set 'big'" in err
    assert "voxel size 0.75 x 0.75 x 1 but the real scans have 0.375 x 0.375 x 0.5" in err


def test_blank_scans_are_refused_as_real_and_noted_as_synthetic(kit, tiny_sets, capsys, caplog):
    # A blank real scan lifted the near-copy threshold (3 of 12 copies flagged instead of 12);
    # blank synthetic scans entered every metric unmentioned, and an all-blank set crashed.
    tmp = tiny_sets["tmp"]
    real = kit.write_set(
        tmp / "real_blank", np.concatenate([kit.brains(6, 1), np.zeros((1, *kit.shape))])
    )
    rc = _evaluate(real, [f"noise={tiny_sets['noise']}"], tmp / "r1")
    err = capsys.readouterr().err
    assert rc == 2 and "scan_006.nii.gz of set 'real' holds the same value (0)" in err
    empty = kit.write_set(tmp / "empty", np.zeros((3, *kit.shape)))
    rc = _evaluate(tiny_sets["real"], [f"empty={empty}"], tmp / "r2")
    assert rc == 2 and "every scan of set 'empty' (3, such as" in capsys.readouterr().err
    some = kit.write_set(
        tmp / "some", np.concatenate([kit.brains(3, 4), np.zeros((1, *kit.shape))])
    )
    with caplog.at_level("WARNING"):
        assert _evaluate(tiny_sets["real"], [f"some={some}"], tmp / "r3") == 0
    notes = json.loads((tmp / "r3" / "metrics.json").read_text())["sets"]["some"]["notes"]
    assert "1 blank scans (one value in every voxel)" in notes
    assert "1 of 4 scans of set 'some'" in caplog.text


@pytest.mark.parametrize("name", ["real", "held-out", "held-out real", "Reference"])
def test_a_synthetic_set_may_not_take_a_real_rows_name(tiny_sets, capsys, name):
    # 'real' replaced the real scans in the spectra table, 'held-out real' the held-out
    # scans in the voxel statistics' target row
    rc = _evaluate(tiny_sets["real"], [f"{name}={tiny_sets['noise']}"], tiny_sets["tmp"] / "r")
    assert rc == 2 and "names a row of real scans" in capsys.readouterr().err
    from ratgan.evaluation import evaluate_sets

    with pytest.raises(RatganError, match="report's name for real scans"):
        evaluate_sets(tiny_sets["real"], {name: tiny_sets["noise"]}, tiny_sets["tmp"] / "r")


def test_a_training_scan_saved_again_is_not_a_held_out_scan(kit, tiny_sets, capsys):
    # other bytes (int16 with a slope), the same image: it passed as never seen
    from ratgan.data.io import read_scan, write_nifti

    tmp = tiny_sets["tmp"]
    held = kit.write_set(tmp / "held", kit.brains(3, 8), "held")
    scan = read_scan(tiny_sets["real"] / "scan_004.nii.gz")
    header = scan.header.copy()
    header.set_data_dtype(np.int16)
    header.set_slope_inter(0.05, 0.0)
    write_nifti(held / "resaved.nii.gz", scan.data, scan.affine, header)
    rc = _evaluate(
        tiny_sets["real"], [f"noise={tiny_sets['noise']}"], tmp / "r", "--heldout", str(held)
    )
    err = capsys.readouterr().err
    assert rc == 2 and "1 held-out scans are also real (training) scans" in err
    assert "resaved.nii.gz" in err and "scan_004.nii.gz" in err
