"""Multi-process training with torchrun on the CPU (gloo): the structure GPU users rely on."""

import subprocess
import sys
from pathlib import Path

import torch

from ratgan.config import load_config
from ratgan.training import checkpoint as ckpt
from ratgan.training.run import train

WORKER = Path(__file__).with_name("ddp_worker.py")


def _torchrun(*args: str) -> None:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(WORKER),
        *args,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, _tracebacks(done.stdout + done.stderr)


def _tracebacks(log: str) -> str:
    """Every traceback in a torchrun log (the workers' come first), without the warnings."""
    lines = log.splitlines()
    starts = [
        i
        for i, line in enumerate(lines)
        if line.startswith("Traceback") or "Traceback (most recent call last)" in line
    ]
    parts = ["\n".join(lines[i : i + 60]) for i in starts[:4]]
    return "\n---\n".join(parts) if parts else log[-4000:]


def test_gradient_penalty_gradients_are_averaged_across_ranks(tmp_path):
    _torchrun("gp", str(tmp_path))
    for rank in (0, 1):
        res = torch.load(tmp_path / f"gp_rank{rank}.pt")
        for got, expected in zip(res["got"], res["expected"], strict=True):
            assert torch.allclose(got, expected, rtol=1e-4, atol=1e-6)
        # The ranks' own gradients differ, so the check above can fail.
        assert any(
            not torch.allclose(o, e, rtol=1e-3)
            for o, e in zip(res["own"], res["expected"], strict=True)
        )


def test_two_ranks_hold_identical_weights_and_rank0_alone_writes(phantom_dir, tmp_path):
    run, out = tmp_path / "run", tmp_path / "out"
    out.mkdir()
    _torchrun("train", str(phantom_dir), str(run), str(out))
    a, b = torch.load(out / "rank0.pt"), torch.load(out / "rank1.pt")
    for net in ("G", "E", "D", "C"):
        for key, value in a[net].items():
            assert torch.equal(value, b[net][key]), (net, key)
    assert [i for i, _ in ckpt.list_checkpoints(run)] == [3]
    state = ckpt.load_checkpoint(ckpt.checkpoint_path(run, 3))
    assert state["world_size"] == 2 and len(state["ranks"]) == 2
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3  # one writer
    # Resume the two-process run in one process (another world size).
    result = train(
        load_config("tiny", {"train.iterations": 5}), None, run, resume=True, progress=False
    )
    assert result.iteration == 5
    assert [i for i, _ in ckpt.list_checkpoints(run)] == [3, 5]
