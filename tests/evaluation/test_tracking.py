"""The quality probe of ``train.eval_every``: known answers on real and flat volumes."""

import numpy as np
import pytest
import torch
from torch import nn

from ratgan.config import load_config
from ratgan.data.transforms import preprocess
from ratgan.evaluation.tracking import quality_probe_factory, volume_probe_factory
from ratgan.errors import RatganError
from ratgan.runs import RunData, RunScan, write_run_data

from .conftest import brains, write_set

SHAPE = (32, 32, 20)


class _Replay(nn.Module):
    """A stand-in generator that returns given network-space volumes, whatever the code."""

    def __init__(self, volumes: np.ndarray) -> None:
        super().__init__()
        self.volumes = torch.from_numpy(volumes)[:, None]
        self.calls = 0

    def forward(self, z, noise=None):
        out = self.volumes[self.calls * len(z) : (self.calls + 1) * len(z)]
        self.calls += 1
        return out


@pytest.fixture()
def probe_setup(tmp_path):
    vols = brains(8, seed=1, shape=SHAPE)
    paths = sorted(write_set(tmp_path / "real", vols).glob("*.nii*"))
    pre = [preprocess(v, (32, 32, 32)) for v in vols]
    run = tmp_path / "run"
    run.mkdir()
    write_run_data(
        run,
        RunData(
            source=str(tmp_path / "real"),
            entries=[RunScan(str(p)) for p in paths],
            infos=[info.to_dict() for _, info in pre],
        ),
    )
    cfg = load_config(
        "tiny",
        {
            "model.volume_size": 32,
            "data.target_shape": [32, 32, 32],
            "data.downsample": 1,
            "train.eval_samples": 8,
        },
    )
    return cfg, run, np.stack([v for v, _ in pre])


def test_the_probe_scores_the_training_scans_themselves_as_perfect(probe_setup):
    cfg, run, network_space = probe_setup
    probe = quality_probe_factory(cfg, run)
    scores = probe(_Replay(network_space), torch.device("cpu"))
    # Known answer: the generated set is the reference set.
    assert scores["precision"] == 1.0 and scores["recall"] == 1.0
    assert scores["coverage"] == 1.0 and scores["density"] >= 1.0  # extra keys of the record
    assert abs(scores["frechet"]) < 1e-2  # float32 features, rank-deficient covariances


def test_the_probe_scores_flat_volumes_as_far_from_real(probe_setup):
    cfg, run, network_space = probe_setup
    probe = quality_probe_factory(cfg, run)
    perfect = probe(_Replay(network_space), torch.device("cpu"))
    flat = np.full_like(network_space, -1.0)
    flat[:, 8:24, 8:24, 8:24] = 0.5
    bad = probe(_Replay(flat), torch.device("cpu"))
    assert bad["precision"] == 0.0 and bad["recall"] == 0.0
    assert bad["density"] == 0.0 and bad["coverage"] == 0.0
    assert bad["frechet"] > 100 * max(perfect["frechet"], 1e-3)
    assert bad["rbf_mmd2"] > perfect["rbf_mmd2"] + 0.1


def test_eval_real_makes_held_out_scans_the_reference(probe_setup, tmp_path):
    cfg, run, _ = probe_setup
    held = brains(8, seed=2, shape=SHAPE)
    cfg.train.eval_real = str(write_set(tmp_path / "held", held))
    probe = volume_probe_factory(cfg, run)
    # Known answers: the held-out scans score perfectly against themselves, the training
    # scans (other subjects) do not coincide with them.
    itself = probe(list(held))
    assert itself["precision"] == 1.0 and itself["recall"] == 1.0
    assert abs(itself["frechet"]) < 1e-2
    training = probe(list(brains(8, seed=1, shape=SHAPE)))
    assert training["frechet"] > 100 * max(abs(itself["frechet"]), 1e-4)


@pytest.mark.parametrize(
    ("stored", "match"),
    [
        ("las", r"orientation LAS but the run's training scans .* are in RAS"),
        ("coarse", r"voxel size 0.75 x 0.75 x 1 but the run's training scans .* 0.375 x 0.375"),
        ("short", r"shape \[32, 32, 16\] but the run's training scans .* \[32, 32, 20\]"),
    ],
)
def test_eval_real_scans_outside_the_training_space_are_refused(
    probe_setup, tmp_path, stored, match
):
    # The probe compares generated scans (in the training scans' voxel order and grid) voxel
    # by voxel with these: the training scans themselves stored as LAS scored precision 0
    # and Fréchet 980 instead of 1 and 0; another voxel size or shape passed unnoticed.
    from ratgan.data.io import write_nifti

    cfg, run, _ = probe_setup
    vols = brains(8, seed=1, shape=SHAPE)
    held = tmp_path / "held"
    held.mkdir()
    affine = np.diag([0.375, 0.375, 0.5, 1.0])
    if stored == "las":  # the same anatomy in the world, stored left-right reversed
        vols = vols[:, ::-1]
        affine[0, 0], affine[0, 3] = -0.375, 0.375 * (SHAPE[0] - 1)
    elif stored == "coarse":
        affine[:3, :3] *= 2
    else:
        vols = vols[..., 2:18]
    for i, v in enumerate(vols):
        write_nifti(held / f"held_{i}.nii.gz", v * 1000.0, affine)
    cfg.train.eval_real = str(held)
    with pytest.raises(RatganError, match=r"train.eval_real scan .*held_0.nii.gz .*" + match):
        volume_probe_factory(cfg, run)


def test_a_missing_eval_real_is_named(probe_setup, tmp_path):
    cfg, run, _ = probe_setup
    cfg.train.eval_real = str(tmp_path / "nowhere")
    with pytest.raises(RatganError, match="train.eval_real: scan source .*nowhere does not exist"):
        volume_probe_factory(cfg, run)


@pytest.mark.parametrize("how", ["same files", "copied bytes", "saved again"])
def test_eval_real_scans_that_are_training_scans_are_refused(probe_setup, tmp_path, how):
    # train.eval_real is the held-out reference ("the honest figure"); a training scan in it
    # makes every tracked metric, and the best.pt chosen on it, partly a score on the scans the
    # run trains on.  Known answer: 6 new subjects plus 2 of the 8 training scans must be
    # refused, naming a training scan; with the 6 new subjects alone the probe is built.
    import shutil

    cfg, run, _ = probe_setup
    training = sorted((tmp_path / "real").glob("*.nii*"))
    held = write_set(tmp_path / "held", brains(6, seed=2, shape=SHAPE), prefix="held")
    cfg.train.eval_real = str(held)
    volume_probe_factory(cfg, run)  # no overlap: accepted
    if how == "same files":
        cfg.train.eval_real = str(tmp_path / "mixed.csv")
        rows = [*sorted(held.glob("*.nii*")), training[3], training[5]]
        (tmp_path / "mixed.csv").write_text("image\n" + "".join(f"{p}\n" for p in rows))
    elif how == "copied bytes":
        for i in (3, 5):
            shutil.copy(training[i], held / f"copy_{i}.nii.gz")
    else:  # the same images saved again, uncompressed as int16 with a slope: other bytes
        import nibabel as nib

        for i in (3, 5):
            img = nib.load(training[i])
            again = nib.Nifti1Image(img.get_fdata(), img.affine)
            again.set_data_dtype(np.int16)
            nib.save(again, held / f"again_{i}.nii")
    with pytest.raises(RatganError, match=r"train.eval_real .*training scan.*scan_003.nii.gz"):
        volume_probe_factory(cfg, run)


def test_the_probe_names_its_reference_scans(probe_setup, tmp_path):
    # The trainer keeps ``reference`` with the best record and chooses best.pt afresh when a
    # resumed probe names other scans.  Known answers: the same held-out scans (rebuilt, or
    # listed in another order by a CSV) are the same reference; one scan replaced by another
    # subject, or one more scan, is another; the training scans are another again.
    cfg, run, _ = probe_setup
    held_vols = brains(6, seed=2, shape=SHAPE)
    held = write_set(tmp_path / "held", held_vols, prefix="held")
    cfg.train.eval_real = str(held)
    first = quality_probe_factory(cfg, run).reference
    assert volume_probe_factory(cfg, run).reference == first
    listed = tmp_path / "reversed.csv"
    listed.write_text("image\n" + "".join(f"{p}\n" for p in sorted(held.glob("*.nii*"))[::-1]))
    cfg.train.eval_real = str(listed)
    assert volume_probe_factory(cfg, run).reference == first
    cfg.train.eval_real = str(held)
    write_set(tmp_path / "held", brains(7, seed=3, shape=SHAPE)[6:], prefix="held_more")
    more = volume_probe_factory(cfg, run).reference
    (held / "held_more_000.nii.gz").unlink()
    write_set(tmp_path / "held", brains(6, seed=3, shape=SHAPE)[:1], prefix="held")
    replaced = volume_probe_factory(cfg, run).reference
    cfg.train.eval_real = None
    training = volume_probe_factory(cfg, run).reference
    assert len({first, more, replaced, training}) == 4
