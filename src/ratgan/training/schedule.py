"""What a training iteration triggers besides its step: logging, checkpoint, samples,
quality evaluation (shared by the alpha-GAN and the latent diffusion loops)."""

from __future__ import annotations

from dataclasses import dataclass

from ratgan.config import TrainConfig


@dataclass(frozen=True)
class Due:
    """What an iteration triggers besides the training step itself."""

    log: bool
    checkpoint: bool
    sample: bool
    evaluate: bool

    @classmethod
    def at(cls, it: int, t_cfg: TrainConfig) -> Due:
        """The schedule of iteration ``it``; the last iteration triggers everything configured."""
        last = it == t_cfg.iterations
        return cls(
            log=it % t_cfg.log_every == 0 or last,
            checkpoint=it % t_cfg.checkpoint_every == 0 or last,
            sample=it % t_cfg.sample_every == 0 or last,
            evaluate=bool(t_cfg.eval_every) and (it % t_cfg.eval_every == 0 or last),
        )

    def stopping(self) -> Due:
        """This iteration's schedule when the run stops after it: log the partial window and
        write a checkpoint to resume from, whatever else was due."""
        return Due(log=True, checkpoint=True, sample=self.sample, evaluate=self.evaluate)
