import numpy as np
import pytest

from ratgan.segmentation.quality_gate import QualityGate, tissue_fractions


def test_fractions_by_hand():
    y = np.zeros((1, 10, 10, 10), np.int64)
    y[0, :2] = 1  # 200 GM
    y[0, 2:3] = 2  # 100 WM
    y[0, 3, :5] = 3  # 50 CSF
    f = tissue_fractions(y)[0]
    assert f == pytest.approx([200 / 350, 100 / 350, 50 / 350, 350 / 1000])


def test_gate_rejects_implausible_and_accepts_plausible_scans(subject_maker):
    rng = np.random.default_rng(0)
    real = np.stack([subject_maker(rng)[1] for _ in range(20)])
    gate = QualityGate.fit(real, margin=0.1)
    plausible = np.stack([subject_maker(rng)[1] for _ in range(3)])
    no_csf = plausible[0].copy()
    no_csf[no_csf == 3] = 2  # CSF fraction 0: outside the real range
    all_gm = (plausible[1] > 0).astype(np.int64)  # brain of one tissue
    empty = np.zeros_like(plausible[2])  # no brain at all
    huge = np.ones_like(plausible[2])  # brain fills the volume
    res = gate.check(np.concatenate([plausible, np.stack([no_csf, all_gm, empty, huge])]))
    assert res.accepted.tolist() == [True] * 3 + [False] * 4
    assert res.acceptance_rate == pytest.approx(3 / 7)
    assert "CSF" in res.reasons[3] and "brain" in res.reasons[5]
    assert res.reasons[0] == ""
    d = gate.to_dict()
    assert d["fractions"] == ["GM", "WM", "CSF", "brain"] and len(d["low"]) == 4
