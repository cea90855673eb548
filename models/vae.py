"""Lu & Chen's generative autoencoders: Gaussian VAEs and deterministic DAEs with a KL, MMD or Shapiro-Wilk regulariser.

The VAE regularises its posterior (KL, optionally split beta-TCVAE style) or its sampled codes (MMD,
Shapiro-Wilk); the DAE twin outputs z directly and regularises the batch of codes the same way
(there is no posterior for a KL). Latent adversarial training (their Algorithm 1) is a config
switch: the trainer runs latent PGD on `latent_attack_objective` (attacks/ lives above models/)
and updates the decoder alone on `adversarial_decoder_loss` with `decoder_optimizer()`, the decoder's
own Adam (the trainer checkpoints its state beside the main optimizer's).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from popvae.models.autoencoder import GaussianPosterior, TrainableAE, gaussian_sample, pixel_sse
from popvae.models.configs import DAEConfig, LuChenConfig, VAEConfig
from popvae.models.networks import ConvDecoder, conv_encoder, feature_side
from popvae.models.registry import register
from popvae.models.regularisers import gaussian_kl, mmd_to_normal, shapiro_wilk_loss, tc_decomposition


class _LuChenAE(TrainableAE):
    """Conv encoder (BatchNorm, LeakyReLU) with a linear head of `heads` x latent_dim outputs, and its mirror."""

    def __init__(self, config: LuChenConfig, heads: int) -> None:
        super().__init__()
        self.config = config
        c = config
        side = feature_side(c.image_size, len(c.widths))
        self.encoder = nn.Sequential(
            conv_encoder(c.in_channels, c.widths, batch_norm=True, act="leaky_relu"),
            nn.Linear(c.widths[-1] * side * side, heads * c.latent_dim),
        )
        self.decoder = ConvDecoder(c.latent_dim, c.in_channels, c.widths, side, batch_norm=True, act="leaky_relu")
        self._decoder_opt: torch.optim.Optimizer | None = None

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    def _sample_regulariser(self, z: Tensor) -> dict[str, Tensor]:
        if self.config.regulariser == "mmd":
            return {"mmd": mmd_to_normal(z, self.config.mmd_kernel)}
        return {"swt": shapiro_wilk_loss(z)}

    def _total(self, x: Tensor, z: Tensor, regs: dict[str, Tensor], scale: dict[str, float] | None = None) -> dict[str, Tensor]:
        rec = pixel_sse(self.decode(z), x).mean()
        reg = sum((scale or {}).get(name, 1.0) * value for name, value in regs.items())
        return {"total": rec + self.config.weight * reg, "reconstruction": rec, **regs}

    def latent_attack_objective(self, x: Tensor) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
        """(z0 = E(x), per-example ||D(z) - x||^2): the reconstruction error a latent attack from z0 maximises."""
        z0 = self.encode(x).detach()
        return z0, lambda z: pixel_sse(self.decode(z), x)

    def adversarial_decoder_loss(self, x: Tensor, z_adv: Tensor) -> Tensor:
        """The reconstruction error of the decoder's output at the attacked latents: what the decoder-only update
        minimises."""
        return pixel_sse(self.decode(z_adv.detach()), x).mean()

    def decoder_optimizer(self) -> torch.optim.Optimizer:
        """The decoder's own Adam for the adversarial updates, made on first use."""
        if self._decoder_opt is None:
            self._decoder_opt = torch.optim.Adam(self.decoder.parameters(), lr=self.config.adv_lr)
        return self._decoder_opt


@register("vae", VAEConfig)
class VAE(GaussianPosterior, _LuChenAE):
    def __init__(self, config: VAEConfig) -> None:
        super().__init__(config, heads=2)

    def loss(self, x: Tensor) -> dict[str, Tensor]:
        c = self.config
        mu, logvar = self.posterior(x)
        z = gaussian_sample(mu, logvar)
        if c.regulariser != "kl":
            return self._total(x, z, self._sample_regulariser(z))
        if c.tc:
            return self._total(x, z, tc_decomposition(z, mu, logvar, c.dataset_size), {"tc": c.tc_beta})
        return self._total(x, z, {"kl": gaussian_kl(mu, logvar).mean()})


@register("dae", DAEConfig)
class DAE(_LuChenAE):
    def __init__(self, config: DAEConfig) -> None:
        super().__init__(config, heads=1)

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x).float()  # float32 under bf16 autocast: the regularisers need it

    def loss(self, x: Tensor) -> dict[str, Tensor]:
        z = self.encode(x)
        return self._total(x, z, self._sample_regulariser(z))
