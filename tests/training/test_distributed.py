"""Multi-process training with torchrun on the CPU (gloo): the structure GPU users rely on."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
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


def _recording_steps(monkeypatch) -> list[tuple[float, int]]:
    """(sum of the first batch, images seen after the step) for every training step."""
    from ratgan.training.alphagan import AlphaGANStep

    seen: list[tuple[float, int]] = []
    step = AlphaGANStep.__call__

    def call(self, x1, x2):
        parts = step(self, x1, x2)
        seen.append((float(x1.double().sum()), self.images_seen))
        return parts

    monkeypatch.setattr(AlphaGANStep, "__call__", call)
    return seen


def test_two_ranks_hold_identical_weights_and_rank0_alone_writes(
    phantom_dir, tmp_path, monkeypatch, capsys
):
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
    # Each rank draws its own output noise, and the log is the mean over both ranks' losses.
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert len(ranks[1]["noise"]) > 0  # (rank 0 also draws for its sample montages)
    assert not set(ranks[0]["noise"]) & set(ranks[1]["noise"])
    logged = [json.loads(line)["eg_total"] for line in lines]
    both = [(x + y) / 2 for x, y in zip(ranks[0]["eg_total"], ranks[1]["eg_total"], strict=True)]
    assert ranks[0]["eg_total"] != ranks[1]["eg_total"]
    assert logged == pytest.approx(both, rel=1e-5)

    # Resume the two-process run in one process (another world size): it says so, and goes on
    # with fresh streams, not a replay of the run's first batches, counting the images seen.
    cfg = load_config("tiny", {"train.iterations": 5, "model.g_output_noise": True})
    steps = _recording_steps(monkeypatch)
    result = train(cfg, None, run, resume=True, progress=False)
    assert result.iteration == 5
    assert [i for i, _ in ckpt.list_checkpoints(run)] == [3, 5]
    assert "written by 2 process(es) and the run goes on with 1" in capsys.readouterr().err
    batch = cfg.train.batch_size
    assert [n for _, n in steps] == [3 * 2 * batch + batch, 3 * 2 * batch + 2 * batch]
    resumed = [x for x, _ in steps]
    steps.clear()
    train(cfg, phantom_dir, tmp_path / "fresh", progress=False)
    assert all(x != y for x, y in zip(resumed, [x for x, _ in steps[:2]], strict=True))
