"""GMM-regularised deterministic autoencoders (Saseendran et al.): the GMM-DAE and the adversarially trained Robust GMM-DAE.

The encoder is deterministic; its batch of latents is pushed towards a K-mode GMM prior by the KS
and covariance losses, each weighted by the inverse of its value on batches drawn from the prior
itself (so a perfect fit costs ~1 per regulariser whatever the batch size). The robust variant
also sees z_adv = E(x_adv) and ties it to z (two-point term, coupled covariance, eq. 11). Crafting
x_adv needs attacks/, which models/ may not import: `adversarial_objective` hands the trainer the
latent-displacement loss and `loss(x, x_adv)` takes the crafted batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from popvae.models.autoencoder import TrainableAE, mlp_image_decoder, mlp_image_encoder, pixel_sse
from popvae.models.configs import GMMDAEConfig, RobustGMMDAEConfig
from popvae.models.networks import ConvDecoder, conv_encoder, feature_side
from popvae.models.registry import register
from popvae.models.regularisers import (
    GMMPrior,
    coupled_covariance_loss,
    coupled_prior_pair,
    covariance_loss,
    inverse_mean_weights,
    ks_loss,
    two_point_loss,
)


def _networks(c: GMMDAEConfig) -> tuple[nn.Module, nn.Module]:
    arch = c.arch if c.arch != "auto" else ("mlp" if c.in_channels == 1 else "conv")
    if arch == "mlp":
        return (mlp_image_encoder(c.in_channels, c.image_size, c.hidden, c.latent_dim),
                mlp_image_decoder(c.latent_dim, c.in_channels, c.image_size, c.hidden))
    side = feature_side(c.image_size, len(c.widths))
    encoder = nn.Sequential(conv_encoder(c.in_channels, c.widths), nn.Linear(c.widths[-1] * side * side, c.latent_dim))
    return encoder, ConvDecoder(c.latent_dim, c.in_channels, c.widths, side)


@register("gmm-dae", GMMDAEConfig)
class GMMDAE(TrainableAE):
    def __init__(self, config: GMMDAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder, self.decoder = _networks(config)
        self.prior = GMMPrior.basis(config.latent_dim, config.modes, config.mode_scale)
        self._prior_cov = self.prior.covariance()
        self._weights: dict[int, dict[str, float]] = {}

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x).float()  # float32 under bf16 autocast: the regularisers need it

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    def regularisers(self, z: Tensor) -> dict[str, Tensor]:
        return {"ks": ks_loss(z, self.prior), "cov": covariance_loss(z, self._prior_cov)}

    def _prior_draws(self, n: int, generator: torch.Generator) -> tuple[Tensor, ...]:
        return (self.prior.sample(n, generator),)

    def loss_weights(self, batch_size: int) -> dict[str, float]:
        """Inverse mean of each regulariser on prior batches of this size; fixed seed, computed once per size."""
        if batch_size not in self._weights:
            g = torch.Generator().manual_seed(batch_size)
            self._weights[batch_size] = inverse_mean_weights(
                self.regularisers, lambda: self._prior_draws(batch_size, g), self.config.weight_batches)
        return self._weights[batch_size]

    def _total(self, x: Tensor, z: Tensor, regs: dict[str, Tensor]) -> dict[str, Tensor]:
        noise = self.config.z_noise if self.training else 0.0  # a training-time regulariser: eval losses are exact
        x_hat = self.decode(z + noise * torch.randn_like(z))
        rec = pixel_sse(x_hat, x).mean()
        weights = self.loss_weights(x.shape[0])
        total = rec + sum(weights[name] * value for name, value in regs.items())
        return {"total": total, "reconstruction": rec, **regs}

    def loss(self, x: Tensor) -> dict[str, Tensor]:
        z = self.encode(x)
        return self._total(x, z, self.regularisers(z))


@register("robust-gmm-dae", RobustGMMDAEConfig)
class RobustGMMDAE(GMMDAE):
    def regularisers(self, z: Tensor, z_adv: Tensor) -> dict[str, Tensor]:
        return {
            "ks": ks_loss(torch.cat([z, z_adv], 0), self.prior),
            "two_point": two_point_loss(z, z_adv, self.prior),
            "coupled_cov": coupled_covariance_loss(z, z_adv, self._prior_cov, self.config.coupling),
        }

    def _prior_draws(self, n: int, generator: torch.Generator) -> tuple[Tensor, ...]:
        return coupled_prior_pair(self.prior, n, self.config.coupling, generator)

    def adversarial_objective(self, x: Tensor) -> Callable[[Tensor], Tensor]:
        """Per-example ||E(x_adv) - E(x)||^2, the latent displacement the crafting attack maximises."""
        z = self.encode(x).detach()
        return lambda x_adv: (self.encode(x_adv) - z).pow(2).sum(1)

    def loss(self, x: Tensor, x_adv: Tensor | None = None) -> dict[str, Tensor]:
        """Eq. 11: clean reconstruction plus the weighted KS on [z; z_adv], two-point and coupled covariance terms."""
        if x_adv is None:
            raise ValueError("robust-gmm-dae needs the crafted batch x_adv (population.robust.craft_adversarial makes it)")
        z, z_adv = self.encode(x), self.encode(x_adv)
        return self._total(x, z, self.regularisers(z, z_adv))
