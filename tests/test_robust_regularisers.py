"""Regularisers on cases computable by hand or by an independent implementation (scipy, Monte Carlo)."""

from __future__ import annotations

import math

import pytest
import scipy.stats
import torch

from popvae.models.regularisers import (
    GMMPrior,
    coupled_covariance_loss,
    coupled_covariance_target,
    coupled_prior_pair,
    covariance_loss,
    empirical_covariance,
    gaussian_kl,
    gaussian_log_density,
    inverse_mean_weights,
    ks_loss,
    mmd,
    raven_kl,
    shapiro_wilk_w,
    tc_decomposition,
    two_point_loss,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def prior() -> GMMPrior:
    return GMMPrior.basis(dim=6, modes=4, scale=4.0)


def test_prior_covariance_is_law_of_total_variance(prior: GMMPrior) -> None:
    # By hand: modes at 4 e_0..4 e_3, weight 1/4: Var(z_d) = 1 + 16 (1/4)(3/4) = 4 for d < 4, Cov(z_d, z_e) = -16/16 = -1.
    cov = prior.covariance()
    assert cov[0, 0] == pytest.approx(4.0) and cov[0, 1] == pytest.approx(-1.0)
    assert cov[5, 5] == pytest.approx(1.0) and cov[0, 5] == pytest.approx(0.0)
    assert torch.allclose(empirical_covariance(prior.sample(200_000, _gen())), cov, atol=0.05)


def test_unimodal_prior_is_standard_normal() -> None:
    p = GMMPrior.basis(dim=3, modes=1, scale=4.0)
    assert torch.equal(p.covariance(), torch.eye(3))
    assert p.marginal_cdf(torch.zeros(1, 3)).tolist() == [[0.5, 0.5, 0.5]]
    with pytest.raises(ValueError, match="modes"):
        GMMPrior.basis(dim=3, modes=4, scale=1.0)


def test_ks_loss_floor_for_prior_samples_and_far_above_when_shifted(prior: GMMPrior) -> None:
    n = 20_000
    z = prior.sample(n, _gen())
    floor = 1 / (6 * n)  # E[(i/n - F(z_(i)))^2] ~ Var Beta(i, n-i+1) averaged over i
    assert ks_loss(z, prior) < 3 * floor
    assert ks_loss(z + 1.0, prior) > 1000 * floor


def test_covariance_loss_zero_at_prior_covariance(prior: GMMPrior) -> None:
    # Whitened points with exactly the target covariance: the loss is zero up to float error.
    x = torch.randn(500, 6, generator=_gen(), dtype=torch.float64)
    x = x - x.mean(0)
    x = x @ torch.linalg.inv(torch.linalg.cholesky(empirical_covariance(x))).T
    z = x @ torch.linalg.cholesky(prior.covariance().double()).T
    assert covariance_loss(z, prior.covariance()) < 1e-20
    assert covariance_loss(2 * z, prior.covariance()) > 1.0


def test_two_point_term_zero_when_adversarial_equals_clean(prior: GMMPrior) -> None:
    z = prior.sample(256, _gen())
    assert two_point_loss(z, z.clone(), prior) == 0
    assert two_point_loss(z, z[torch.randperm(256, generator=_gen(1))], prior) == 0  # only the sorted marginals count
    assert two_point_loss(z, z + 1.0, prior) > 1e-3


def test_coupled_covariance_target_and_loss(prior: GMMPrior) -> None:
    s = torch.tensor([[2.0, 0.5], [0.5, 1.0]])
    expected = torch.tensor([[2.0, 0.5, 1.9, 0.475], [0.5, 1.0, 0.475, 0.95], [1.9, 0.475, 2.0, 0.5], [0.475, 0.95, 0.5, 1.0]])
    assert torch.allclose(coupled_covariance_target(s, 0.95), expected)
    z, z_adv = coupled_prior_pair(prior, 100_000, 0.95, _gen())
    s6 = prior.covariance()
    assert coupled_covariance_loss(z, z_adv, s6, 0.95) < 1e-3  # the sampler really has cross-covariance aS
    assert coupled_covariance_loss(z, prior.sample(100_000, _gen(2)), s6, 0.95) > 0.3  # independent: a = 0


def test_inverse_mean_weights_normalise_prior_batches_to_one(prior: GMMPrior) -> None:
    g = _gen()
    parts = lambda z: {"ks": ks_loss(z, prior), "cov": covariance_loss(z, prior.covariance())}
    weights = inverse_mean_weights(parts, lambda: (prior.sample(128, g),), batches=40)
    fresh = [parts(prior.sample(128, g)) for _ in range(40)]
    for name, w in weights.items():
        assert w * sum(float(p[name]) for p in fresh) / 40 == pytest.approx(1.0, rel=0.3)


@pytest.mark.parametrize("n", [3, 5, 11, 128])
def test_shapiro_wilk_matches_scipy(n: int) -> None:
    z = torch.randn(n, 3, generator=_gen(n), dtype=torch.float64)
    ours = shapiro_wilk_w(z)
    for d in range(3):
        assert float(ours[d]) == pytest.approx(scipy.stats.shapiro(z[:, d].numpy()).statistic, abs=1e-6)


def test_shapiro_wilk_near_one_on_gaussian_lower_on_uniform_and_differentiable() -> None:
    gauss = torch.randn(500, 4, generator=_gen())
    uniform = torch.rand(500, 4, generator=_gen(1))
    assert shapiro_wilk_w(gauss).min() > 0.99
    assert shapiro_wilk_w(uniform).max() < 0.97
    u = uniform.clone().requires_grad_(True)
    (1 - shapiro_wilk_w(u)).sum().backward()
    assert torch.isfinite(u.grad).all() and u.grad.abs().sum() > 0


@pytest.mark.parametrize("kernel", ["rbf", "imq"])
def test_mmd_near_zero_same_law_positive_for_different(kernel: str) -> None:
    a, b = torch.randn(1000, 8, generator=_gen()), torch.randn(1000, 8, generator=_gen(1))
    shifted = torch.randn(1000, 8, generator=_gen(2)) + 0.7
    same, different = mmd(a, b, kernel), mmd(a, shifted, kernel)
    assert abs(float(same)) < 3e-3
    assert different > 10 * abs(float(same)) and different > 0.02


def _mc_kl(log_q: torch.Tensor, log_p: torch.Tensor) -> tuple[float, float]:
    diff = (log_q - log_p).double()
    return float(diff.mean()), float(diff.std() / math.sqrt(len(diff)))


def test_raven_closed_form_kl_matches_monte_carlo() -> None:
    g = _gen()
    mu1, lv1 = torch.randn(1, 5, generator=g), torch.randn(1, 5, generator=g) * 0.5
    mu2, lv2 = mu1 + 0.3 * torch.randn(1, 5, generator=g), torch.randn(1, 5, generator=g) * 0.5
    s = 0.7
    n = 400_000
    z = mu1 + (0.5 * lv1).exp() * torch.randn(n, 5, generator=g)
    z2 = mu2 + (0.5 * lv2).exp() * torch.randn(n, 5, generator=g)
    log_q = (gaussian_log_density(z, mu1, lv1) + gaussian_log_density(z2, mu2, lv2)).sum(1)
    zero = torch.zeros_like(z)
    log_p = (gaussian_log_density(z, zero, zero) + gaussian_log_density(z2, z, torch.full_like(z, math.log(s * s)))).sum(1)
    estimate, stderr = _mc_kl(log_q, log_p)
    assert float(raven_kl(mu1, lv1, mu2, lv2, s)) == pytest.approx(estimate, abs=4 * stderr + 1e-3)


def test_gaussian_kl_and_tc_decomposition_add_up() -> None:
    g = _gen()
    mu, logvar = torch.randn(64, 4, generator=g), 0.3 * torch.randn(64, 4, generator=g)
    assert torch.equal(gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 3)), torch.zeros(2))
    z = mu + (0.5 * logvar).exp() * torch.randn(64, 4, generator=g)
    parts = tc_decomposition(z, mu, logvar, dataset_size=1000)
    # MI + TC + dimension-wise KL telescopes to the sampled KL estimate E[log q(z|x) - log p(z)].
    sampled_kl = (gaussian_log_density(z, mu, logvar) - gaussian_log_density(z, 0 * z, 0 * z)).sum(1).mean()
    assert float(sum(parts.values())) == pytest.approx(float(sampled_kl), rel=1e-5)
    assert float(parts["mi"]) > 0
