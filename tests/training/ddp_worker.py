"""Run by torchrun from test_distributed.py: one rank of a 2-process CPU (gloo) job.

torchrun --standalone --nproc_per_node 2 ddp_worker.py train DATA RUN OUT
torchrun --standalone --nproc_per_node 2 ddp_worker.py gp OUT
"""

import gc
import os
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)


def train_mode(data: str, run: str, out: str) -> None:
    """Three iterations with G's output noise; each rank also saves its own losses and the
    sums of the noise fields it drew."""
    import json

    from ratgan.config import load_config
    from ratgan.models.generator import OutputNoise
    from ratgan.training.alphagan import AlphaGANStep
    from ratgan.training.run import train

    seen: dict[str, list[float]] = {"noise": [], "eg_total": []}
    draw, step = OutputNoise.noise, AlphaGANStep.__call__

    def noise(self, pre, *args, **kwargs):
        n = draw(self, pre, *args, **kwargs)
        seen["noise"].append(float(n.double().sum()))
        return n

    def call(self, x1, x2):
        parts = step(self, x1, x2)
        seen["eg_total"].append(float(parts["eg_total"]))
        return parts

    OutputNoise.noise, AlphaGANStep.__call__ = noise, call
    cfg = load_config(
        "tiny",
        {
            "train.iterations": 3,
            "train.checkpoint_every": 3,
            "train.log_every": 1,
            "model.g_output_noise": True,
        },
    )
    result = train(cfg, data, run, progress=False)
    torch.save(
        {k: v.state_dict() for k, v in result.networks.as_dict().items()},
        Path(out) / f"rank{result.rank}.pt",
    )
    (Path(out) / f"rank{result.rank}.json").write_text(json.dumps(seen))


def gp_mode(out: str) -> None:
    """D-phase gradients under DDP against the mean of the per-rank gradients without DDP."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from ratgan.config import load_config
    from ratgan.models import build_networks
    from ratgan.training.alphagan import DiscriminatorPhase

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    cfg = load_config("tiny", {"train.channels_last": False})
    s = cfg.model.volume_size

    def batch(r: int) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(100 + r)
        return [torch.rand(2, 1, s, s, s, generator=g) * 2 - 1 for _ in range(3)]

    def grads_of(phase, r: int) -> list[torch.Tensor]:
        phase.zero_grad(set_to_none=True)
        total, _ = phase(*batch(r), torch.Generator().manual_seed(7 + r))
        total.backward()
        return [p.grad.clone() for p in phase.parameters()]

    def fresh_phase() -> DiscriminatorPhase:
        # A fresh D per rank: spectral norm's power iteration updates its state every forward.
        torch.manual_seed(0)
        return DiscriminatorPhase(build_networks(cfg.model), cfg, "cpu")

    per_rank = [grads_of(fresh_phase(), r) for r in range(world)]
    expected = [torch.stack(g).mean(0) for g in zip(*per_rank, strict=True)]

    ddp = DistributedDataParallel(fresh_phase())
    got = grads_of(ddp, rank)
    torch.save(
        {"expected": expected, "got": got, "own": per_rank[rank]}, Path(out) / f"gp_rank{rank}.pt"
    )
    # DDP's reducer holds the process group: free it (and any cycle) first, so that destroying
    # the group really ends gloo's threads before the interpreter shuts down.
    del ddp
    gc.collect()
    dist.destroy_process_group()


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    assert int(os.environ["WORLD_SIZE"]) == 2
    {"train": train_mode, "gp": gp_mode}[mode](*args)
