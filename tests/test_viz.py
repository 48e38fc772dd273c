"""Figure helpers: orthogonal views and montages are written as valid PNG files, atomically."""

from __future__ import annotations

import ast
from pathlib import Path

import matplotlib.colors as mcolors
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
    overlay = _assert_png(
        viz.orthogonal_views(vols, tmp_path / "b.png", labels=labels, zooms=(0.375, 0.375, 0.5))
    )
    assert plain.shape[0] > plain.shape[1] / 3  # two rows of three panels
    assert overlay.shape[0] > overlay.shape[1] / 3


def test_overlay_draws_each_class_in_its_colour_and_leaves_unlabelled_voxels_grey(tmp_path):
    # A mid-grey volume (window 0..1 set by one black voxel and a bright corner block, both off
    # the central planes) with bands along the slice axis z: GM below z=10, WM to 20, CSF to
    # 26, unlabelled above.  Coronal and sagittal planes show all four bands, axial only WM.
    n = 32
    vol = np.full((n, n, n), 0.5, np.float32)
    vol[:6, :6, :6] = 1.0
    vol[-1, -1, -1] = 0.0
    z = np.arange(n)[None, None, :]
    labels = np.broadcast_to(np.select([z < 10, z < 20, z < 26], [1, 2, 3], 0), vol.shape)
    img = mpimg.imread(viz.orthogonal_views([vol], tmp_path / "o.png", labels=[labels]))[..., :3]

    grey = np.full(3, 128 / 255)  # the grey colormap's colour of 0.5
    expected = {
        k: viz.LABEL_ALPHA * np.array(mcolors.to_rgb(viz.LABEL_COLOURS[k]))
        + (1 - viz.LABEL_ALPHA) * grey
        for k in (1, 2, 3)
    }
    expected[0] = grey

    def where(colour):
        return np.all(np.abs(img - colour) < 0.02, axis=-1)

    counts = {k: int(where(c).sum()) for k, c in expected.items()}
    # pixel areas follow the band widths: GM 2x10 rows of 32 voxels, WM 2x10 + a whole 32x32
    # axial plane, CSF 2x6, unlabelled 2x6 (all planes are drawn at one scale)
    per_voxel = counts[1] / 20 / n
    assert per_voxel > 50
    for k, voxels in {2: 20 * n + n * n, 3: 12 * n, 0: 12 * n}.items():
        assert counts[k] == pytest.approx(voxels * per_voxel, rel=0.1), (k, counts)
    # with origin at the bottom, GM (low z) is drawn below CSF (higher z), which is below grey
    rows = {k: np.nonzero(where(expected[k]))[0].mean() for k in (1, 3, 0)}
    assert rows[1] > rows[3] > rows[0]


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
    img = _assert_png(
        viz.montage(
            rows, tmp_path / "m.png", row_titles=["real", "synthetic"], axis=axis, n_slices=4
        )
    )
    assert img.shape[1] > img.shape[0]  # rows of side-by-side slices


def test_montage_rejects_bad_arguments(tmp_path, rng):
    with pytest.raises(ValueError, match="axis"):
        viz.montage([[_volume(rng)]], tmp_path / "m.png", axis=3)
    with pytest.raises(ValueError, match="row titles"):
        viz.montage([[_volume(rng)]], tmp_path / "m.png", row_titles=["a", "b"])


def test_viz_imports_only_numpy_matplotlib_and_ratgan_atomic():
    tree = ast.parse(Path(viz.__file__).read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            roots.add(node.module.split(".")[0])
    assert roots <= {
        "__future__",
        "collections",
        "pathlib",
        "typing",
        "numpy",
        "matplotlib",
        "ratgan",
    }, roots
