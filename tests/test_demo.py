"""`ratgan demo` end to end with a very short training run."""

import json

from ratgan.cli import main


def test_demo_writes_its_report_and_figures(tmp_path, capsys):
    out = tmp_path / "demo"
    assert (
        main(
            [
                "demo",
                "--out",
                str(out),
                "--subjects",
                "6",
                "--heldout",
                "4",
                "--iterations",
                "2",
                "--n-synthetic",
                "4",
                "--no-progress",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["report"] == str(
        out / "report.md"
    )
    report = (out / "report.md").read_text()
    for linked in (
        "figures/real_vs_synthetic.png",
        "figures/axial_montage.png",
        "run/loss_curves.png",
        "run/quality_curves.png",
    ):
        assert f"]({linked})" in report and (out / linked).is_file()
    assert "## Evaluation" in report and "| total |" in report
    # both feature spaces and the spectra (6 labelled real scans are too few for the anatomy
    # network, so its section says why it was skipped) and the spectra figure
    assert "In a fixed random 3D convolutional feature space" in report
    assert "### Feature space: anatomy" in report and "only 6 labelled real scans" in report
    assert "directional artefacts" in report and "| *real* |" in report
    assert "](evaluation/spectra.png)" in report and (out / "evaluation/spectra.png").is_file()
    assert len(list((out / "synthetic").glob("*.nii.gz"))) == 4
    # The GAN trained on the 6 training subjects only; the 4 held-out ones are the reference.
    data = json.loads((out / "run" / "data.json").read_text())
    trained = sorted(e["image"].rsplit("/", 1)[-1] for e in data["entries"])
    assert trained == [f"sub-{i:03d}.nii.gz" for i in range(6)]
    held = sorted(p.name for p in (out / "phantom" / "heldout" / "images").glob("*.nii.gz"))
    assert held == [f"sub-{i:03d}.nii.gz" for i in range(6, 10)]
    assert "held-out" in report
    # The scans come from the kernel density around the training scans' codes, said so, and
    # the memorisation table that checks them is in the report.
    manifest = json.loads((out / "synthetic" / "manifest.json").read_text())
    assert {(s["codes"], s["kde_width"]) for s in manifest["scans"]} == {("kde", 1.5)}
    assert "kernel density of width 1.5" in report and "## Memorisation" in report
