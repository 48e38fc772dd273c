"""benchmarks/ada_signal.py: the overfitting signals against known answers, and one run of the
benchmark on a two-iteration tiny run."""

import csv
import math

import numpy as np
import pytest

from ratgan.config import load_config
from ratgan.errors import RatganError
from ratgan.training.run import train


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("ada_signal")


def test_r_v_is_where_held_out_scores_fall_between_training_and_generated(bench):
    # A critic scoring every training scan 2, every held-out scan 1, every generated scan 0.
    assert bench.overfitting_ratio([2, 2, 2], [1, 1], [0, 0, 0, 0]) == pytest.approx(0.5)
    assert bench.overfitting_ratio([2, 2], [2, 2], [0, 0]) == 0.0  # held-out like training
    assert bench.overfitting_ratio([2, 2], [0, 0], [0, 0]) == 1.0  # held-out like generated
    assert bench.overfitting_ratio([3, 1], [1.5, 0.5], [-1, -3]) == pytest.approx(1 / 4)
    assert math.isnan(bench.overfitting_ratio([1, 1], [0, 0], [1, 1]))  # no scale


def test_r_t_counts_real_scores_above_the_mean_generated_score(bench):
    assert bench.centred_sign([[3.0, 4.0, 5.0]], [[0.0, 1.0, 2.0]]) == 1.0
    assert bench.centred_sign([[-3.0, -2.0]], [[0.0, 1.0]]) == -1.0
    # Centred on the mean (1), not per pair: 2 above, 0 below.
    assert bench.centred_sign([[2.0, 0.0]], [[1.5, 0.5]]) == 0.0
    # Shifting every score by a constant changes nothing (a Wasserstein critic has no zero).
    assert bench.centred_sign([[102.0, 100.0, 103.0]], [[101.0, 101.0]]) == pytest.approx(1 / 3)
    # Batch by batch, each real batch against its own fakes' mean, as training accumulates it.
    assert bench.centred_sign([[2.0], [0.0]], [[1.0], [-1.0]]) == 1.0


def test_auc_is_the_chance_that_a_training_scan_outscores_a_held_out_one(bench):
    assert bench.outscore([2.0, 2.0], [1.0, 1.0, 1.0]) == 1.0
    assert bench.outscore([1.0, 1.0], [2.0]) == 0.0
    assert bench.outscore([1.0, 2.0], [1.0, 2.0]) == 0.5  # ties count half
    assert bench.outscore([0.0, 3.0], [1.0, 2.0]) == 0.5
    assert bench.outscore([3.0, 4.0, 0.0], [1.0, 2.0]) == pytest.approx(4 / 6)


def test_signals_of_constant_scores(bench):
    scores = {
        "train": np.full(4, 2.0),
        "held": np.full(4, 1.0),
        "gen": np.zeros(4),
        "rec": np.full(4, -1.0),
    }
    out = bench.signals(scores, batch=2, seed=0)
    assert out["r_v"] == pytest.approx(0.5)
    assert out["r_v_lo"] == pytest.approx(0.5) and out["r_v_hi"] == pytest.approx(0.5)
    assert out["r_t"] == 1.0 and out["r_t_train"] == 1.0
    assert out["r_v_train"] == pytest.approx(0.4)
    assert out["auc_held"] == 1.0  # fakes average -0.5: (2 - 1) / (2 + 0.5)
    assert (out["d_train"], out["d_held"], out["d_gen"], out["d_rec"]) == (2.0, 1.0, 0.0, -1.0)


def test_spread_keeps_first_and_last_evenly(bench):
    picked = bench.spread(list(range(20)), 12)
    assert len(picked) == 12 and picked[0] == 0 and picked[-1] == 19
    assert max(np.diff(picked)) - min(np.diff(picked)) <= 1
    assert bench.spread([1, 2, 3], 12) == [1, 2, 3] and bench.spread([1, 2, 3], 0) == [1, 2, 3]


def test_benchmark_on_a_tiny_run(bench, phantom_dir, tmp_path):
    over = {
        "train.iterations": 2,
        "train.checkpoint_every": 1,
        "train.sample_every": 100,
        "train.keep_checkpoints": 10,
        "ada.enabled": True,
        "ada.p": 0.5,  # augmented and plain inputs then differ
    }
    run = tmp_path / "run"
    train(load_config("tiny", over), phantom_dir, run, progress=False)
    out = tmp_path / "out"
    rows = bench.main([str(run), "--heldout", str(phantom_dir), "--out", str(out), "--n", "4"])
    with (out / "ada_signal.csv").open() as handle:
        written = list(csv.DictReader(handle))
    assert [int(r["iteration"]) for r in written] == [1, 2] == [r["iteration"] for r in rows]
    numbers = [k for k in written[0] if k not in ("run", "checkpoint")]
    assert all(math.isfinite(float(r[k])) for r in written for k in numbers)
    assert all(-1 <= float(r["r_t"]) <= 1 and -1 <= float(r["r_t_aug"]) <= 1 for r in written)
    assert (out / "ada_signal.png").stat().st_size > 0

    empty = tmp_path / "empty"
    (empty / "checkpoints").mkdir(parents=True)
    with pytest.raises(RatganError, match="has no checkpoints"):
        bench.main([str(empty), "--heldout", str(phantom_dir), "--out", str(out)])
    with pytest.raises(RatganError, match="holds no scans"):
        bench.main([str(run), "--heldout", str(empty), "--out", str(out)])
