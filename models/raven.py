"""RAVEN: a VAE trained on noise-augmented pairs (x, x' = x + noise) under the paired prior N(z; 0, I) N(z'; z, s^2 I).

One Gaussian encoder reads both views; the prior ties the noisy view's code to the clean one, so a
perturbed input is pulled towards the clean latent. The pair's ELBO reconstructs each view from
its own code and pays the closed-form KL of `models.regularisers.raven_kl`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from popvae.models.autoencoder import (
    GaussianPosterior,
    TrainableAE,
    gaussian_sample,
    mlp_image_decoder,
    mlp_image_encoder,
    pixel_sse,
)
from popvae.models.configs import RavenConfig
from popvae.models.registry import register
from popvae.models.regularisers import raven_kl


@register("raven", RavenConfig)
class Raven(GaussianPosterior, TrainableAE):
    def __init__(self, config: RavenConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.encoder = mlp_image_encoder(c.in_channels, c.image_size, c.hidden, 2 * c.latent_dim, act="prelu")
        self.decoder = mlp_image_decoder(c.latent_dim, c.in_channels, c.image_size, c.hidden, act="prelu")

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    def loss(self, x: Tensor) -> dict[str, Tensor]:
        x_noisy = (x + self.config.input_noise * torch.randn_like(x)).clamp(0, 1)
        (mu1, lv1), (mu2, lv2) = self.posterior(x), self.posterior(x_noisy)
        rec = pixel_sse(self.decode(gaussian_sample(mu1, lv1)), x).mean()
        rec_noisy = pixel_sse(self.decode(gaussian_sample(mu2, lv2)), x_noisy).mean()
        kl = raven_kl(mu1, lv1, mu2, lv2, self.config.pair_scale).mean()
        total = rec + rec_noisy + self.config.beta * kl
        return {"total": total, "reconstruction": rec, "reconstruction_noisy": rec_noisy, "kl": kl}

    def make_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.RAdam(self.parameters(), lr=self.config.lr)
