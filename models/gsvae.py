"""The dual-latent Gumbel-Softmax VAE of docs/ALGORITHMS.md §1: one conv encoder, two categorical latent layers,
two mirrored decoders whose mean is the reconstruction."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from popvae.models.configs import GSVAEConfig
from popvae.models.gumbel import bce_per_image, gumbel_softmax, kl_to_uniform
from popvae.models.networks import ConvDecoder, conv_encoder, feature_side
from popvae.models.registry import register


@register("gsvae", GSVAEConfig)
class GSVAE(nn.Module):
    stochastic = True

    def __init__(self, config: GSVAEConfig) -> None:
        super().__init__()
        self.config = c = config
        side = feature_side(c.image_size, len(c.widths))
        self.tau = 1.0  # set by the member each epoch; a plain attribute so weight broadcasts never carry it
        self.encoder = conv_encoder(c.in_channels, c.widths)
        feat = c.widths[-1] * side * side
        self.shapes = ((c.z1_vars, c.z1_categories), (c.z2_vars, c.z2_categories))
        self.heads = nn.ModuleList(nn.Linear(feat, v * k) for v, k in self.shapes)
        self.decoders = nn.ModuleList(ConvDecoder(v * k, c.in_channels, c.widths, side) for v, k in self.shapes)

    def logits(self, x: Tensor) -> list[Tensor]:
        h = self.encoder(x)  # float32 logits even under bf16 autocast: sampling at low tau and the KL need the bits
        return [head(h).float().view(-1, v, k) for head, (v, k) in zip(self.heads, self.shapes)]

    def _noise(self, sample: bool | None) -> bool:
        return (self.training or self.config.eval_noise) if sample is None else sample

    def forward(self, x: Tensor, sample: bool | None = None, noise: Sequence[Tensor] | None = None,
                tau: float | Tensor | None = None, hard: bool = False) -> dict[str, Tensor | list[Tensor]]:
        """`noise`: the Gumbel draws g of z1 and z2 made by the caller (then used whatever `sample` says); `tau` overrides
        self.tau. A pack (population/pack.py) passes both, each member's own, through vmap. `hard`: the discrete code
        (`hard_codes`, no noise, no tau) instead of the relaxed one."""
        logits = self.logits(x)
        if hard:
            z = self._hard(logits)
        else:
            tau = self.tau if tau is None else tau
            draws = [self._noise(sample)] * len(logits) if noise is None else noise
            z = torch.cat([gumbel_softmax(lg, tau, g).flatten(1) for lg, g in zip(logits, draws)], 1)
        return {"logits": logits, "z": z, "recon": self.decode(z)}

    def reconstructions(self, x: Tensor, tau: float | Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The noise-free reconstructions from the relaxed code (at `tau`, default self.tau) and from the hard code,
        from one encoder pass: the learning curve scores both every generation."""
        logits = self.logits(x)
        tau = self.tau if tau is None else tau
        relaxed = torch.cat([gumbel_softmax(lg, tau, False).flatten(1) for lg in logits], 1)
        return self.decode(relaxed), self.decode(self._hard(logits))

    @staticmethod
    def _hard(logits: list[Tensor]) -> Tensor:
        return torch.cat([one_hot_argmax(lg).flatten(1) for lg in logits], 1)

    def loss(self, x: Tensor, noise: Sequence[Tensor] | None = None, tau: float | Tensor | None = None,
             hard: bool = False) -> dict[str, Tensor]:
        """Eq. 10: BCE summed over pixels + KL(q(z1)||U) + KL(q(z2)||U), averaged over the batch (`hard`: the BCE of the
        reconstruction from hard codes, what `select_on: val_hard` scores)."""
        out = self(x, noise=noise, tau=tau, hard=hard)
        rec = bce_per_image(out["recon"], x).mean()
        kl1, kl2 = (kl_to_uniform(lg).mean() for lg in out["logits"])
        return {"total": rec + kl1 + kl2, "reconstruction": rec, "kl_z1": kl1, "kl_z2": kl2}

    def make_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.config.lr)

    # --- the AutoEncoder protocol (models/protocol.py) ---
    def encode(self, x: Tensor) -> Tensor:
        """The noise-free relaxed code softmax(logits / tau) of both layers, concatenated."""
        return torch.cat([gumbel_softmax(lg, self.tau, noise=False).flatten(1) for lg in self.logits(x)], 1)

    def decode(self, z: Tensor) -> Tensor:
        z1, z2 = z.split([v * k for v, k in self.shapes], dim=1)
        return 0.5 * (self.decoders[0](z1) + self.decoders[1](z2))

    def hard_codes(self, x: Tensor) -> Tensor:
        """The discrete code a GS-VAE promises: one-hot argmax of each categorical, both layers concatenated (the
        tau -> 0 limit of `encode`). At the high taus populations reach, the relaxed code is nearly uniform and
        the decoder reads it as a continuous one; this is what the model's discrete code alone reconstructs from."""
        return self._hard(self.logits(x))

    def reconstruct(self, x: Tensor, sample: bool = False, hard: bool = False) -> Tensor:
        """The reconstruction from the relaxed code (with Gumbel noise when `sample`), or from `hard_codes`."""
        return self(x, sample=sample, hard=hard)["recon"]


def one_hot_argmax(logits: Tensor) -> Tensor:
    """One-hot of the argmax over the last dim, in the logits' dtype (vmap-safe: no in-place scatter)."""
    return F.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)
