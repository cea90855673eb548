"""The dual-latent Gumbel-Softmax VAE of docs/ALGORITHMS.md §1: one conv encoder, two categorical latent layers,
two mirrored decoders whose mean is the reconstruction."""

from __future__ import annotations

from collections.abc import Sequence

import torch
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
        h = self.encoder(x)
        return [head(h).view(-1, v, k) for head, (v, k) in zip(self.heads, self.shapes)]

    def _noise(self, sample: bool | None) -> bool:
        return (self.training or self.config.eval_noise) if sample is None else sample

    def forward(self, x: Tensor, sample: bool | None = None, noise: Sequence[Tensor] | None = None,
                tau: float | Tensor | None = None) -> dict[str, Tensor | list[Tensor]]:
        """`noise`: the Gumbel draws g of z1 and z2 made by the caller (then used whatever `sample` says); `tau` overrides
        self.tau. A pack (population/pack.py) passes both, each member's own, through vmap."""
        logits = self.logits(x)
        tau = self.tau if tau is None else tau
        draws = [self._noise(sample)] * len(logits) if noise is None else noise
        zs = [gumbel_softmax(lg, tau, g).flatten(1) for lg, g in zip(logits, draws)]
        return {"logits": logits, "z": torch.cat(zs, 1), "recon": self.decode(torch.cat(zs, 1))}

    def loss(self, x: Tensor, noise: Sequence[Tensor] | None = None, tau: float | Tensor | None = None) -> dict[str, Tensor]:
        """Eq. 10: BCE summed over pixels + KL(q(z1)||U) + KL(q(z2)||U), averaged over the batch."""
        out = self(x, noise=noise, tau=tau)
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

    def reconstruct(self, x: Tensor, sample: bool = False) -> Tensor:
        return self(x, sample=sample)["recon"]
