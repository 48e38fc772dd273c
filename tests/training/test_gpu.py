"""CUDA paths of training and generation (run only where a GPU is present: `-m gpu`)."""

import pytest
import torch

from ratgan.config import load_config
from ratgan.models import build_networks
from ratgan.training.alphagan import AlphaGANStep, build_optimizers

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


def _losses(device: str, precision: str, channels_last: bool) -> list[dict[str, float]]:
    cfg = load_config("tiny", {"train.precision": precision, "train.channels_last": channels_last})
    torch.manual_seed(0)
    nets = build_networks(cfg.model).place(device, channels_last)
    fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
    dev = torch.device(device)
    step = AlphaGANStep(
        nets, build_optimizers(nets, cfg), cfg, dev, torch.Generator(device=dev).manual_seed(1)
    )
    data = torch.Generator().manual_seed(2)
    out = []
    for _ in range(5):
        x1, x2 = (
            (torch.rand(2, 1, 16, 16, 16, generator=data) * 2 - 1)
            .to(dev)
            .contiguous(memory_format=fmt)
            for _ in range(2)
        )
        out.append({k: float(v) for k, v in step(x1, x2).items()})
    return out


def test_cuda_fp32_step_matches_cpu_for_the_first_iteration():
    # CUDA and CPU random generators draw different z, so compare the first iteration's
    # reconstruction terms: they depend on x and the shared initial weights alone
    # (x_rec = G(E(x)), and instance norm keeps the fused z_e/z_r batch independent).
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    cpu = _losses("cpu", "fp32", False)[0]
    gpu = _losses("cuda", "fp32", False)[0]
    for key in ("eg_mse", "eg_gdl"):
        assert abs(cpu[key] - gpu[key]) <= 1e-3 * abs(cpu[key]) + 1e-5, (key, cpu, gpu)


def test_cuda_bf16_channels_last_losses_are_finite_and_track_fp32():
    fp32 = _losses("cuda", "fp32", False)
    bf16 = _losses("cuda", "bf16", True)
    for a, b in zip(fp32, bf16, strict=True):
        for key, value in a.items():
            assert torch.isfinite(torch.tensor(b[key])), key
            assert abs(value - b[key]) <= 0.05 * abs(value) + 0.05, (key, value, b[key])


def test_a_cuda_run_resumes_from_its_checkpoint(tmp_path):
    # A run resumed on a GPU maps its checkpoint there, RNG states included, but every torch
    # generator's set_state takes a CPU uint8 tensor: resuming a CUDA run once failed with
    # "RNG state must be a torch.ByteTensor".
    from ratgan.data.phantom import write_cohort
    from ratgan.training import checkpoint as ckpt
    from ratgan.training.run import train

    data = tmp_path / "phantom"
    write_cohort(data, subjects=4, seed=7, progress=False)
    over = {"train.iterations": 2, "train.checkpoint_every": 2, "train.device": "cuda"}
    run = tmp_path / "run"
    train(load_config("tiny", over), data, run, progress=False)
    train(
        load_config("tiny", {**over, "train.iterations": 4}), None, run, resume=True, progress=False
    )
    assert ckpt.load_checkpoint(run / "checkpoints" / "ckpt_0000004.pt")["iteration"] == 4
