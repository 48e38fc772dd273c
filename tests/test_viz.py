"""Figure helpers: orthogonal views and montages are written as valid PNG files, atomically."""

from __future__ import annotations

import ast
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

from ratgan import viz

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _volume(rng, shape=(24, 20, 12)) -> np.ndarray:
    zz, yy, xx = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape[::-1]], indexing="ij")
    ball = (xx**2 + yy**2 + zz**2 < 0.6).T.astype(np.float32)
    return 1000 * ball + rng.normal(0, 20, shape).astype(np.float32)


def _assert_png(path: Path) -> np.ndarray:
    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")], "temporary file left"
    return mpimg.imread(path)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_orthogonal_views_without_and_with_labels(tmp_path, rng):
    vols = [_volume(rng), _volume(rng)]
    plain = _assert_png(viz.orthogonal_views(vols, tmp_path / "a.png", titles=["one", "two"]))
    labels = [None, (vols[1] > 500).astype(np.uint8) * 3]
    overlay = _assert_png(viz.orthogonal_views(vols, tmp_path / "b.png", labels=labels,
                                               zooms=(0.375, 0.375, 0.5)))
    assert plain.shape[0] > plain.shape[1] / 3  # two rows of three panels
    assert overlay.shape[2] in (3, 4)


def test_orthogonal_views_uses_the_voxel_size_for_the_aspect(tmp_path, rng):
    vol = _volume(rng, (20, 20, 20))
    iso = mpimg.imread(viz.orthogonal_views([vol], tmp_path / "iso.png"))
    tall = mpimg.imread(viz.orthogonal_views([vol], tmp_path / "tall.png", zooms=(1, 1, 3)))
    # a thrice longer third axis makes the coronal and sagittal panels taller than wide
    assert tall.shape[0] / tall.shape[1] > 1.5 * iso.shape[0] / iso.shape[1]


def test_orthogonal_views_accepts_a_channel_axis_and_replaces_the_file(tmp_path, rng):
    out = tmp_path / "c.png"
    out.write_bytes(b"old")
    viz.orthogonal_views([_volume(rng)[None]], out)
    _assert_png(out)


def test_orthogonal_views_rejects_mismatched_inputs(tmp_path, rng):
    vol = _volume(rng)
    with pytest.raises(ValueError, match="shape"):
        viz.orthogonal_views([vol], tmp_path / "x.png", labels=[np.zeros((3, 3, 3))])
    with pytest.raises(ValueError, match="label maps"):
        viz.orthogonal_views([vol], tmp_path / "x.png", labels=[None, None])
    with pytest.raises(ValueError, match="3-D"):
        viz.orthogonal_views([vol[0]], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_montage_rows_of_slices(tmp_path, rng, axis):
    rows = [[_volume(rng)], [_volume(rng), _volume(rng)]]
    img = _assert_png(viz.montage(rows, tmp_path / "m.png", row_titles=["real", "synthetic"],
                                  axis=axis, n_slices=4))
    assert img.shape[1] > img.shape[0]  # rows of side-by-side slices


def test_montage_rejects_bad_arguments(tmp_path, rng):
    with pytest.raises(ValueError, match="axis"):
        viz.montage([[_volume(rng)]], tmp_path / "m.png", axis=3)
    with pytest.raises(ValueError, match="row titles"):
        viz.montage([[_volume(rng)]], tmp_path / "m.png", row_titles=["a", "b"])


def test_viz_imports_only_numpy_and_matplotlib():
    tree = ast.parse(Path(viz.__file__).read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            roots.add(node.module.split(".")[0])
    assert roots <= {"__future__", "os", "uuid", "collections", "pathlib", "numpy",
                     "matplotlib"}, roots
