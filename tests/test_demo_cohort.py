"""The demo's phantom cohort is reused only when it is the one asked for."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ratgan.demo import demo_cohort
from ratgan.errors import RatganError


def _scans(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*.nii.gz"))
        if "all" not in p.relative_to(folder).parts
    }


def test_another_seed_rewrites_the_cohort_and_the_same_seed_reuses_it(tmp_path):
    data = tmp_path / "phantom"
    demo_cohort(data, 2, 1, seed=0, progress=False)
    demo_cohort(data, 2, 1, seed=1, progress=False)
    demo_cohort(tmp_path / "fresh", 2, 1, seed=1, progress=False)
    assert _scans(data) == _scans(tmp_path / "fresh")  # seed 1's subjects, not seed 0's
    assert json.loads((data / "phantom.json").read_text())["seed"] == 1
    stamp = (data / "train" / "images" / "sub-000.nii.gz").stat().st_mtime_ns
    demo_cohort(data, 2, 1, seed=1, progress=False)
    assert (data / "train" / "images" / "sub-000.nii.gz").stat().st_mtime_ns == stamp


def test_a_cohort_without_its_record_is_rewritten(tmp_path):
    """An interrupted move leaves no phantom.json: the files are not trusted."""
    data = tmp_path / "phantom"
    demo_cohort(data, 2, 1, seed=0, progress=False)
    (data / "train" / "images" / "sub-000.nii.gz").write_bytes(b"half a file")
    (data / "phantom.json").unlink()
    demo_cohort(data, 2, 1, seed=0, progress=False)
    demo_cohort(tmp_path / "fresh", 2, 1, seed=0, progress=False)
    assert _scans(data) == _scans(tmp_path / "fresh")


@pytest.mark.parametrize(
    "change, named",
    [
        ({"seed": 1}, "train.seed"),
        ({"config": "demo32"}, "model."),
        ({"subjects": 4}, "the phantom cohort"),
    ],
)
def test_a_rerun_that_asks_for_another_demo_is_refused_before_any_work(tmp_path, change, named):
    from ratgan.demo import run_demo

    args = dict(subjects=3, heldout=2, iterations=2, n_synthetic=2, seed=0, progress=False)
    run_demo(tmp_path, config="tiny", codes="prior", **args)
    before = _scans(tmp_path / "phantom"), (tmp_path / "run" / "config.yaml").read_bytes()
    with pytest.raises(RatganError, match=named) as caught:
        run_demo(tmp_path, **{"config": "tiny", "codes": "prior", **args, **change})
    assert str(tmp_path) in str(caught.value)
    assert (_scans(tmp_path / "phantom"), (tmp_path / "run" / "config.yaml").read_bytes()) == before
    # the same demo with more iterations goes on
    run_demo(tmp_path, config="tiny", codes="prior", **{**args, "iterations": 3})


class _Started(Exception):
    """Raised where the demo would lock its folder and start work."""


def test_a_kde_width_with_prior_codes_is_refused_by_the_api_as_by_the_cli(tmp_path, monkeypatch):
    """run_demo(codes="prior", kde_width=0.5) drew prior codes and ignored the width without a
    word, where ``ratgan demo --codes prior --kde-width 0.5`` is refused."""
    import ratgan.demo
    from ratgan.cli import main

    def started(*args: object, **kwargs: object) -> None:
        raise _Started

    monkeypatch.setattr(ratgan.demo, "FolderLock", started)  # no demo runs in this test
    out = tmp_path / "demo"
    with pytest.raises(RatganError, match=r"^--kde-width 0.5 is for --codes kde; ") as caught:
        ratgan.demo.run_demo(out, codes="prior", kde_width=0.5, progress=False)
    assert str(caught.value).count(". ") == 0 and str(caught.value).endswith(".")
    assert not out.exists()
    # prior codes without a width, and kde codes with or without one, go on to the work
    for kwargs in ({"codes": "prior"}, {"codes": "kde"}, {"codes": "kde", "kde_width": 0.5}):
        with pytest.raises(_Started):
            ratgan.demo.run_demo(out, progress=False, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(_Started):
        main(["demo", "--out", str(out), "--codes", "prior", "--no-progress"])
    assert main(["demo", "--out", str(out), "--codes", "prior", "--kde-width", "0.5"]) == 2
