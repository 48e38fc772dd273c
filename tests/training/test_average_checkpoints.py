"""benchmarks/average_checkpoints.py: the averaged EMA generator is the mean of the named ones."""

import pytest
import torch

from ratgan.generation import generate_scans
from ratgan.training.checkpoint import checkpoint_path


def _ema(run, iteration):
    state = torch.load(checkpoint_path(run, iteration), map_location="cpu", weights_only=False)
    return state["ema"]["G"]


def test_the_average_is_the_mean_and_a_run_that_generates(ema_run, tmp_path, load_benchmark):
    bench = load_benchmark("average_checkpoints")
    out = tmp_path / "avg"
    bench.main([str(ema_run), "--iterations", "2", "4", "--out", str(out)])
    a, b, avg = _ema(ema_run, 2), _ema(ema_run, 4), _ema(out, 4)
    moved = 0
    for name, tensor in avg.items():
        if tensor.is_floating_point():
            expected = (a[name].double() + b[name].double()) / 2
            torch.testing.assert_close(tensor.double(), expected, rtol=1e-6, atol=1e-7)
            moved += int(not torch.equal(a[name], b[name]))
    assert moved > 0  # the two checkpoints differ, so the mean is neither of them
    written = generate_scans(out, 2, tmp_path / "gen", seed=1, device="cpu", progress=False)
    assert len(written) == 2 and all(p.is_file() for p in written)


def test_it_refuses_a_single_checkpoint_and_an_existing_folder(ema_run, tmp_path, load_benchmark):
    bench = load_benchmark("average_checkpoints")
    with pytest.raises(SystemExit, match="at least two"):
        bench.main([str(ema_run), "--iterations", "4", "--out", str(tmp_path / "x")])
    (tmp_path / "y").mkdir()
    with pytest.raises(SystemExit, match="exists"):
        bench.main([str(ema_run), "--iterations", "2", "4", "--out", str(tmp_path / "y")])
    with pytest.raises(SystemExit, match="no checkpoint of iteration 3"):
        bench.main([str(ema_run), "--iterations", "2", "3", "--out", str(tmp_path / "z")])
