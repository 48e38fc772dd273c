"""The code discriminator C: a critic on latent codes (docs/method.md section 2)."""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from ratgan.config import ModelConfig
from ratgan.models.layers import maybe_spectral, to_sphere


class CodeDiscriminator(nn.Module):
    """MLP L -> c_hidden -> c_hidden -> 1 scoring latent codes (B, L) -> (B, 1).

    Each hidden layer is Linear [-> BatchNorm1d when ``c_norm`` is ``batch``] -> LeakyReLU.
    Linear layers keep their bias, as in both published codes.  With BatchNorm1d, training
    mode needs batches of at least two codes.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        sn = "C" in cfg.spectral_norm
        self.sphere = cfg.latent_norm == "sphere"
        h = cfg.c_hidden
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        prev = cfg.latent_dim
        for i in (1, 2):
            block: list[nn.Module] = [maybe_spectral(nn.Linear(prev, h), sn)]
            if cfg.c_norm == "batch":
                block.append(nn.BatchNorm1d(h))
            block.append(nn.LeakyReLU(cfg.leaky_slope))
            layers[f"fc{i}"] = nn.Sequential(*block)
            prev = h
        layers["head"] = maybe_spectral(nn.Linear(prev, 1), sn)
        self.net = nn.Sequential(layers)

    def forward(self, z: Tensor) -> Tensor:
        """(B, L) codes -> (B, 1) scores (codes put on the sphere first with ``latent_norm``)."""
        out: Tensor = self.net(to_sphere(z) if self.sphere else z)
        return out
