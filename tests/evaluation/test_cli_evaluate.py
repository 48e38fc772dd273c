"""`ratgan evaluate` end to end on a few small volumes: the files it writes and its errors."""

import json

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
