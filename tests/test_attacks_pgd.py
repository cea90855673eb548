"""The generic PGD: balls, clamps, hand-checked steps, strength against FGSM, EOT and BPDA."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from attacks_toys import data, tensors, trained_mlp

from popvae.attacks.pgd import bpda, eot, fgsm, pgd


def _linear_loss(w: torch.Tensor):
    return lambda x: (x.flatten(1) * w.flatten()).sum(1)


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.5)])
def test_pgd_stays_in_ball_and_box(norm, eps):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 1, 8, 8, generator=g)
    x[:, :, 0] = 0.0  # pixels at the box edges must not leak out
    x[:, :, 1] = 1.0
    w = torch.randn(1, 8, 8, generator=g)
    x_adv = pgd(_linear_loss(w), x, eps=eps, steps=5, step_size=eps, norm=norm, generator=g)
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert (size <= eps * (1 + 1e-5)).all()
    assert size.max() > 0.5 * eps  # it actually moved
    assert not x_adv.requires_grad


def test_latent_pgd_without_clamp_leaves_box():
    z = torch.zeros(4, 3)
    z_adv = pgd(lambda v: v.sum(1), z, eps=2.0, steps=3, step_size=1.0, norm="l2", clamp=None, random_start=False)
    torch.testing.assert_close(z_adv.norm(dim=1), torch.full((4,), 2.0))
    assert (z_adv > 0).all()


def test_one_step_equals_hand_computed():
    x = torch.tensor([[0.2, 0.5, 0.95, 0.0]])
    w = torch.tensor([1.0, -2.0, 3.0, -0.5])
    step = pgd(_linear_loss(w), x, eps=0.1, steps=1, step_size=0.07, random_start=False)
    torch.testing.assert_close(step, torch.tensor([[0.27, 0.43, 1.0, 0.0]]))
    down = pgd(_linear_loss(w), x, eps=0.1, steps=1, step_size=0.07, random_start=False, maximize=False)
    torch.testing.assert_close(down, torch.tensor([[0.13, 0.57, 0.88, 0.07]]))
    l2 = pgd(_linear_loss(w), x, eps=1.0, steps=1, step_size=0.3, norm="l2", random_start=False, clamp=None)
    torch.testing.assert_close(l2, x + 0.3 * w / w.norm())
    torch.testing.assert_close(fgsm(_linear_loss(w), x, eps=0.07), step)


def test_l2_random_start_is_uniform_in_ball():
    g = torch.Generator().manual_seed(1)
    x = torch.zeros(4000, 2)
    r = pgd(lambda v: v.sum(1), x, eps=1.0, steps=0, step_size=0.0, norm="l2", clamp=None, generator=g).norm(dim=1)
    assert r.max() <= 1.0 + 1e-6
    # uniform in a disc: P(r < 1/sqrt 2) = 1/2 (a uniform radius would give 0.71)
    assert abs((r < 2**-0.5).float().mean().item() - 0.5) < 0.03


def test_generator_makes_random_start_reproducible():
    x = torch.rand(3, 1, 4, 4)
    runs = [pgd(lambda v: v.sum((1, 2, 3)), x, 0.1, 2, 0.01, generator=torch.Generator().manual_seed(5)) for _ in range(2)]
    torch.testing.assert_close(runs[0], runs[1])


def _ce(net, y):
    return lambda x: F.cross_entropy(net(x), y, reduction="none")


def test_pgd_beats_fgsm_and_undefended_net_falls_to_zero():
    net = trained_mlp()
    x, y = tensors(data(256, seed=3))
    acc = lambda xs: (net(xs).argmax(1) == y).float().mean().item()
    assert acc(x) > 0.9
    eps = 0.03
    x_fgsm = fgsm(_ce(net, y), x, eps)
    x_pgd = pgd(_ce(net, y), x, eps, steps=10, step_size=eps / 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert _ce(net, y)(x_pgd).mean() > _ce(net, y)(x_fgsm).mean()
        assert acc(x_pgd) <= acc(x_fgsm)
    x_big = pgd(_ce(net, y), x, 0.3, steps=10, step_size=0.075)
    assert acc(x_big) < 0.05


def test_pgd_does_not_touch_model_mode_or_parameter_grads():
    net = trained_mlp()
    x, y = tensors(data(16, seed=4))
    net.zero_grad(set_to_none=True)
    pgd(_ce(net, y), x, 0.1, 2, 0.05)
    assert not net.training
    assert all(p.grad is None for p in net.parameters())


def test_eot_lowers_gradient_variance():
    torch.manual_seed(0)
    w = torch.randn(10)
    noisy = lambda x: ((x * w) * (1 + torch.randn_like(x))).sum(1)  # E[grad] = w

    def grads(fn):
        out = []
        for _ in range(200):
            x = torch.zeros(1, 10, requires_grad=True)
            out.append(torch.autograd.grad(fn(x).sum(), x)[0])
        return torch.cat(out)

    single, averaged = grads(noisy), grads(eot(noisy, 16))
    torch.testing.assert_close(averaged.mean(0), w, atol=0.1 * w.abs().max().item(), rtol=0)
    assert averaged.var(0).mean() < single.var(0).mean() / 8


def test_bpda_forward_hard_backward_surrogate():
    x = torch.tensor([0.2, 0.7], requires_grad=True)
    f = bpda(lambda v: (v > 0.5).float(), lambda v: 2 * v)
    out = f(x)
    torch.testing.assert_close(out.detach(), torch.tensor([0.0, 1.0]))
    (grad,) = torch.autograd.grad(out.sum(), x)
    torch.testing.assert_close(grad, torch.tensor([2.0, 2.0]))


def test_pgd_default_step_is_the_stated_rule():
    """Without a step size, PGD takes STEP_FACTOR * eps / steps: identical to passing it, unlike any other step."""
    from popvae.attacks.pgd import STEP_FACTOR

    x = torch.full((3, 1, 4, 4), 0.5)
    toward = lambda v: -(v - 0.53).pow(2).flatten(1).sum(1)  # noqa: E731  (the optimum lies inside the ball)
    run = lambda **kw: pgd(toward, x, 0.2, steps=3, random_start=False, **kw)  # noqa: E731
    assert torch.equal(run(), run(step_size=STEP_FACTOR * 0.2 / 3))
    assert not torch.equal(run(), run(step_size=0.2 / 3))
