"""Fixtures of the Turing test tests: small scan folders, studies and a live server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ratgan.data.io import read_scan, write_nifti
from ratgan.turing.study import Study, create_study

AFFINE = np.diag([0.375, 0.375, 0.5, 1.0])


def write_random_scans(folder: Path, n: int, seed: int, shape=(16, 16, 8), scale=1.0) -> list[Path]:
    """Blob-shaped random volumes (a bright ellipsoid in noise), written as NIfTI."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    paths = []
    for i in range(n):
        radius = sum((g / rng.uniform(0.5, 0.8)) ** 2 for g in grid)
        data = np.where(radius < 1, 100.0, 10.0) + rng.normal(0, 5, shape)
        paths.append(
            write_nifti(folder / f"scan{i:02d}.nii.gz", (data * scale).astype(np.float32), AFFINE)
        )
    return paths


def perturbed_copies(real: Path, out: Path, seed: int) -> list[Path]:
    """'Synthetic' scans: smoothed, noisier copies of real scans, on a different intensity scale."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    paths = []
    for path in sorted(real.glob("*.nii.gz")):
        scan = read_scan(path)
        data = gaussian_filter(scan.data, 0.8) + rng.normal(0, 0.05 * scan.data.std(), scan.shape)
        paths.append(
            write_nifti(
                out / f"fake_{path.name}", (3.0 * data + 50).astype(np.float32), scan.affine
            )
        )
    return paths


@pytest.fixture
def small_study_args(tmp_path: Path) -> dict:
    """create_study's arguments (all but the folder) for 3 real and 2 + 2 synthetic 16x16x8
    scans and 2 raters; the scans are written once per test."""
    write_random_scans(tmp_path / "real", 4, seed=1)
    write_random_scans(tmp_path / "m1", 3, seed=2, scale=7.0)
    write_random_scans(tmp_path / "m2", 3, seed=3, scale=0.01)
    return {
        "real": tmp_path / "real",
        "synthetic": [("m1", tmp_path / "m1"), ("m2", tmp_path / "m2")],
        "n_real": 3,
        "n_per_model": 2,
        "raters": ["alice", "bob"],
        "seed": 5,
    }


@pytest.fixture
def small_study(tmp_path: Path, small_study_args: dict) -> Study:
    """The study that ``small_study_args`` describes."""
    path, _ = create_study(tmp_path / "study", **small_study_args)
    return Study(path)


def phantom_study(root: Path, raters: list[str], seed: int = 0) -> Study:
    """A study of 2 real phantom scans (64x64x40) and 2 perturbed copies of other phantoms."""
    from ratgan.data.phantom import write_cohort

    write_cohort(root / "cohort", subjects=4, seed=seed, progress=False)
    images = sorted((root / "cohort" / "images").glob("*.nii.gz"))
    (root / "real").mkdir()
    (root / "source").mkdir()
    for i, image in enumerate(images):
        os.replace(image, root / ("real" if i < 2 else "source") / image.name)
    perturbed_copies(root / "source", root / "synthetic", seed=seed + 1)
    path, _ = create_study(
        root / "study",
        real=root / "real",
        synthetic=[("alphaGAN", root / "synthetic")],
        n_real=2,
        n_per_model=2,
        raters=raters,
        seed=seed,
    )
    return Study(path)


class LiveServer:
    """`ratgan turing serve STUDY --port 0` in a subprocess."""

    def __init__(self, study: Study):
        self.study = study
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ratgan",
                "turing",
                "serve",
                str(study.path.parent),
                "--port",
                "0",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        deadline = time.monotonic() + 60
        self.base = None
        lines = []
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            lines.append(line)
            match = re.search(r"on (http://127\.0\.0\.1:\d+)/", line)
            if match:
                self.base = match.group(1)
                break
        if self.base is None:
            self.stop()
            raise RuntimeError("server did not start:\n" + "".join(lines))

    def rater_url(self, name: str) -> str:
        """The private link of a rater on this server."""
        return dict(self.study.links(self.base)[1])[name]

    @property
    def admin_url(self) -> str:
        """The admin link on this server."""
        return self.study.links(self.base)[0]

    def stop(self) -> None:
        """Terminate the server process."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process.stdout.close()


@pytest.fixture
def scan_writer():
    """The function that writes random scans (see write_random_scans)."""
    return write_random_scans


@pytest.fixture(scope="module")
def phantom_server(tmp_path_factory):
    """A live server of a fresh phantom study with raters 'alice' and 'bob' (one per module)."""
    study = phantom_study(tmp_path_factory.mktemp("phantom"), ["alice", "bob"])
    server = LiveServer(study)
    yield server
    server.stop()


@pytest.fixture
def carol_server(tmp_path):
    """A live server of a new phantom study whose one rater is 'carol' (one per test)."""
    server = LiveServer(phantom_study(tmp_path, ["carol"], seed=4))
    yield server
    server.stop()
