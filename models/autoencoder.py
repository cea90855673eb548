"""What the robust-autoencoder families share: the protocol's defaults, the training interface, the pixel error.

A family subclasses `TrainableAE`, defines `encode`, `decode` and `loss(x) -> {"total": ..., part: ...}`;
the trainer in population/ needs nothing else (plus the optional adversarial hooks a family offers).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from popvae.models.networks import Sigmoid32, mlp


def pixel_sse(x_hat: Tensor, x: Tensor) -> Tensor:
    """Squared error summed over pixels, per example (B,): the scale the regulariser weights are tuned against."""
    return (x_hat - x).pow(2).flatten(1).sum(1)


def gaussian_sample(mu: Tensor, logvar: Tensor) -> Tensor:
    """The reparameterised draw mu + sigma * eps, differentiable in mu and logvar."""
    return mu + torch.randn_like(mu) * (0.5 * logvar).exp()


class TrainableAE(nn.Module):
    """Deterministic by default: `reconstruct` is decode(encode(x)); stochastic families override it."""

    stochastic = False

    def encode(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def decode(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def reconstruct(self, x: Tensor, sample: bool = False) -> Tensor:
        return self.decode(self.encode(x))

    def loss(self, x: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def make_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.config.lr)


class GaussianPosterior:
    """Mixin for families whose encoder outputs (mu, logvar) stacked: the code is mu, a sampled
    reconstruction draws from N(mu, sigma^2). VAE and RAVEN share it."""

    stochastic = True

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.encoder(x).float().chunk(2, dim=1)  # float32 under bf16 autocast: the KL and sampling need it
        return mu, logvar

    def encode(self, x: Tensor) -> Tensor:
        return self.posterior(x)[0]

    def reconstruct(self, x: Tensor, sample: bool = False) -> Tensor:
        return self.decode(gaussian_sample(*self.posterior(x)) if sample else self.encode(x))


def mlp_image_encoder(in_channels: int, image_size: int, hidden: tuple[int, ...], out_dim: int,
                      act: str = "relu") -> nn.Sequential:
    """Flatten the image, then fully connected layers to `out_dim`."""
    return nn.Sequential(nn.Flatten(), mlp([in_channels * image_size * image_size, *hidden, out_dim], act=act))


def mlp_image_decoder(latent_dim: int, out_channels: int, image_size: int, hidden: tuple[int, ...],
                      act: str = "relu") -> nn.Sequential:
    """The MLP encoder's mirror, sigmoid pixels reshaped to (C, H, W)."""
    return nn.Sequential(
        mlp([latent_dim, *reversed(hidden), out_channels * image_size * image_size], act=act, final=Sigmoid32),
        nn.Unflatten(1, (out_channels, image_size, image_size)),
    )
