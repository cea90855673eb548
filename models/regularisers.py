"""Latent regularisers and priors of the robust-autoencoder papers, as pure functions over (B, D) latents.

Everything here is differentiable in the latents and free of module state, so the same function
serves the model's loss, the weights estimated from the prior, and the tests computed by hand.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

from popvae.models.configs import Kernel

_LOG_2PI = math.log(2 * math.pi)


def normal_cdf(x: Tensor) -> Tensor:
    return 0.5 * (1 + torch.erf(x * (1 / math.sqrt(2))))


@dataclass(frozen=True)
class GMMPrior:
    """Equal-weight Gaussian mixture with isotropic components: K means of shape (K, D), one sigma."""

    means: Tensor
    sigma: float = 1.0

    @classmethod
    def basis(cls, dim: int, modes: int, scale: float, sigma: float = 1.0) -> GMMPrior:
        """Means at scale * e_k for k < modes; one mode is N(0, sigma^2 I), the RAE-like prior."""
        if not 1 <= modes <= dim:
            raise ValueError(f"a basis GMM needs 1 <= modes <= latent dim, got {modes} modes in {dim} dims")
        means = torch.zeros(1, dim) if modes == 1 else scale * torch.eye(dim)[:modes]
        return cls(means, sigma)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        k = torch.randint(len(self.means), (n,), generator=generator)
        return self.means[k] + self.sigma * torch.randn(n, self.dim, generator=generator)

    def marginal_cdf(self, z: Tensor) -> Tensor:
        """Per-dimension marginal CDF of the mixture at every entry of z (..., D)."""
        means = self.means.to(z)
        return normal_cdf((z.unsqueeze(-2) - means) / self.sigma).mean(-2)

    def covariance(self) -> Tensor:
        """Law of total variance: E[Cov | mode] + Cov(E[z | mode]) = sigma^2 I + Cov of the means."""
        centred = self.means - self.means.mean(0)
        return self.sigma**2 * torch.eye(self.dim) + centred.T @ centred / len(self.means)


def _sorted_cdf(z: Tensor, prior: GMMPrior) -> Tensor:
    return prior.marginal_cdf(torch.sort(z, dim=0).values)


def ks_loss(z: Tensor, prior: GMMPrior) -> Tensor:
    """Mean squared gap between the empirical CDF i/n at the sorted batch and the prior's marginal CDF, all dims."""
    n = z.shape[0]
    ecdf = torch.arange(1, n + 1, device=z.device, dtype=z.dtype).div(n).unsqueeze(1)
    return (ecdf - _sorted_cdf(z, prior)).pow(2).mean()


def two_point_loss(z: Tensor, z_adv: Tensor, prior: GMMPrior) -> Tensor:
    """MSE between the prior CDF at the sorted clean latents and at the sorted adversarial ones, per dimension."""
    return (_sorted_cdf(z, prior) - _sorted_cdf(z_adv, prior)).pow(2).mean()


def empirical_covariance(z: Tensor) -> Tensor:
    centred = z - z.mean(0)
    return centred.T @ centred / z.shape[0]


def covariance_loss(z: Tensor, target: Tensor) -> Tensor:
    return (empirical_covariance(z) - target.to(z)).pow(2).mean()


def coupled_covariance_target(cov: Tensor, coupling: float) -> Tensor:
    """[[S, aS], [aS, S]]: the joint covariance of (z, z_adv) when each is prior-distributed and they correlate by a."""
    return torch.cat([torch.cat([cov, coupling * cov], 1), torch.cat([coupling * cov, cov], 1)], 0)


def coupled_covariance_loss(z: Tensor, z_adv: Tensor, cov: Tensor, coupling: float) -> Tensor:
    return covariance_loss(torch.cat([z, z_adv], 1), coupled_covariance_target(cov, coupling))


def coupled_prior_pair(prior: GMMPrior, n: int, coupling: float,
                       generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """(z, z') with z ~ prior and z' = a z + sqrt(1-a^2) z2 + c m: the prior's mean and covariance, cross-covariance aS.

    This is what a perfectly regularised robust encoder would produce, so regulariser values on
    it are the noise floors the loss weights normalise by.
    """
    z, z2 = prior.sample(n, generator), prior.sample(n, generator)
    b = math.sqrt(1 - coupling**2)
    return z, coupling * z + b * z2 + (1 - coupling - b) * prior.means.mean(0)


def inverse_mean_weights(parts: Callable[..., dict[str, Tensor]], draws: Callable[[], tuple[Tensor, ...]],
                         batches: int) -> dict[str, float]:
    """1 / mean value of each regulariser `parts(*draws())` over `batches` prior draws: each weighs ~1 at a perfect fit."""
    totals: dict[str, float] = {}
    with torch.no_grad():
        for _ in range(batches):
            for name, value in parts(*draws()).items():
                totals[name] = totals.get(name, 0.0) + float(value)
    return {name: batches / max(total, 1e-12) for name, total in totals.items()}


def _sq_dists(x: Tensor, y: Tensor) -> Tensor:
    return (x.unsqueeze(1) - y.unsqueeze(0)).pow(2).sum(-1)


def _kernel(x: Tensor, y: Tensor, kernel: Kernel, scale: float) -> Tensor:
    c = 2.0 * x.shape[1] * scale  # the WAE choice: 2 * D * prior variance
    d2 = _sq_dists(x, y)
    if kernel == "rbf":
        return torch.exp(-d2 / c)
    if kernel == "imq":
        return c / (c + d2)
    raise ValueError(f"unknown MMD kernel {kernel!r}; choose rbf or imq")


def mmd(x: Tensor, y: Tensor, kernel: Kernel = "rbf", scale: float = 1.0) -> Tensor:
    """Unbiased squared MMD between samples x (n, D) and y (m, D): zero in expectation when they share a law."""
    n, m = x.shape[0], y.shape[0]
    kxx, kyy, kxy = _kernel(x, x, kernel, scale), _kernel(y, y, kernel, scale), _kernel(x, y, kernel, scale)
    off = lambda k, size: (k.sum() - k.diagonal().sum()) / (size * (size - 1))
    return off(kxx, n) + off(kyy, m) - 2 * kxy.mean()


def mmd_to_normal(z: Tensor, kernel: Kernel = "rbf", generator: torch.Generator | None = None) -> Tensor:
    """MMD of the batch against as many N(0, I) samples."""
    prior = torch.randn(z.shape, generator=generator, dtype=z.dtype).to(z.device)
    return mmd(z, prior, kernel)


@lru_cache(maxsize=32)
def shapiro_wilk_coefficients(n: int) -> Tensor:
    """Royston's (1992) approximation of the Shapiro-Wilk weights a_1..a_n (float64, antisymmetric)."""
    if n < 3:
        raise ValueError(f"Shapiro-Wilk needs at least 3 values per dimension, got {n}")
    if n == 3:
        return torch.tensor([-math.sqrt(0.5), 0.0, math.sqrt(0.5)], dtype=torch.float64)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    m = torch.special.ndtri((i - 0.375) / (n + 0.25))
    mm = m.pow(2).sum()
    u = 1 / math.sqrt(n)
    poly = lambda c: sum(ck * u**k for k, ck in enumerate(c, start=1))
    a_n = m[-1] / mm.sqrt() + poly((0.221157, -0.147981, -2.071190, 4.434685, -2.706056))
    a = m.clone()
    if n > 5:
        a_n1 = m[-2] / mm.sqrt() + poly((0.042981, -0.293762, -1.752461, 5.682633, -3.582633))
        a = a / torch.sqrt((mm - 2 * m[-1] ** 2 - 2 * m[-2] ** 2) / (1 - 2 * a_n**2 - 2 * a_n1**2))
        a[-2], a[1] = a_n1, -a_n1
    else:
        a = a / torch.sqrt((mm - 2 * m[-1] ** 2) / (1 - 2 * a_n**2))
    a[-1], a[0] = a_n, -a_n
    return a


def shapiro_wilk_w(z: Tensor) -> Tensor:
    """W statistic per column of z (B, D): (sum a_i z_(i))^2 / sum (z_i - mean)^2; differentiable through the sort."""
    a = shapiro_wilk_coefficients(z.shape[0]).to(z)
    num = (a.unsqueeze(1) * torch.sort(z, dim=0).values).sum(0).pow(2)
    return num / (z - z.mean(0)).pow(2).sum(0).clamp_min(1e-12)


def shapiro_wilk_loss(z: Tensor) -> Tensor:
    """Sum over latent dimensions of 1 - W: zero only when every marginal looks Gaussian."""
    return (1 - shapiro_wilk_w(z)).sum()


def gaussian_log_density(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """Elementwise log N(z; mu, exp(logvar))."""
    return -0.5 * (_LOG_2PI + logvar + (z - mu).pow(2) * torch.exp(-logvar))


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per example (B,)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)


def raven_kl(mu1: Tensor, logvar1: Tensor, mu2: Tensor, logvar2: Tensor, s: float) -> Tensor:
    """KL(q(z|x) q(z'|x') || N(z; 0, I) N(z'; z, s^2 I)) per example (B,), in closed form (docs/ALGORITHMS.md §4)."""
    s2 = s * s
    pair = 0.5 * ((logvar2.exp() + logvar1.exp() + (mu2 - mu1).pow(2)) / s2 - 1 + math.log(s2) - logvar2).sum(1)
    return gaussian_kl(mu1, logvar1) + pair


def tc_decomposition(z: Tensor, mu: Tensor, logvar: Tensor, dataset_size: int) -> dict[str, Tensor]:
    """beta-TCVAE's split of the KL into index-code MI, total correlation and dimension-wise KL (batch means).

    q(z) and the marginals q(z_d) are estimated by minibatch-weighted sampling (Chen et al. 2018):
    log q(z_i) ~ logsumexp_j log q(z_i | x_j) - log(B N).
    """
    b = z.shape[0]
    pairwise = gaussian_log_density(z.unsqueeze(1), mu.unsqueeze(0), logvar.unsqueeze(0))  # (B, B, D)
    log_norm = math.log(b * dataset_size)
    log_qz = torch.logsumexp(pairwise.sum(2), dim=1) - log_norm
    log_prod_qzd = (torch.logsumexp(pairwise, dim=1) - log_norm).sum(1)
    log_qz_x = gaussian_log_density(z, mu, logvar).sum(1)
    log_pz = gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z)).sum(1)
    return {
        "mi": (log_qz_x - log_qz).mean(),
        "tc": (log_qz - log_prod_qzd).mean(),
        "dwkl": (log_prod_qzd - log_pz).mean(),
    }
