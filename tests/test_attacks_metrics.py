"""Metrics: shapes and ranges at 32x32, AADDC against hand-computed areas, honest unavailability."""

from __future__ import annotations

import math

import pytest
import torch

from popvae.attacks.metrics import Unavailable, aaddc, frechet_distance, inception_fid, lpips, ms_ssim, mse, psnr, ssim


def _pair(n: int = 6, noise: float = 0.1):
    g = torch.Generator().manual_seed(0)
    a = torch.rand(n, 1, 32, 32, generator=g)
    return a, (a + noise * torch.randn(a.shape, generator=g)).clamp(0, 1)


def test_ms_ssim_runs_at_32x32_per_image():
    a, b = _pair()
    same, noisy = ms_ssim(a, a), ms_ssim(a, b)
    assert same.shape == noisy.shape == (6,)
    torch.testing.assert_close(same, torch.ones(6))
    assert torch.isfinite(noisy).all() and (noisy < 1).all() and (noisy > 0).all()
    assert torch.isfinite(ms_ssim(a, 1 - a)).all()  # anti-correlated images: relu keeps it finite


def test_ssim_psnr_mse_per_image():
    a, b = _pair()
    assert ssim(a, b).shape == (6,) and (ssim(a, b) < 1).all()
    torch.testing.assert_close(ssim(a, a), torch.ones(6))
    torch.testing.assert_close(mse(a, b), ((a - b) ** 2).mean((1, 2, 3)))
    torch.testing.assert_close(psnr(a, b), -10 * torch.log10(mse(a, b)))
    assert psnr(torch.zeros(1, 1, 4, 4), torch.full((1, 1, 4, 4), 0.1)).item() == pytest.approx(20.0)


def test_aaddc_equals_hand_computed_area():
    eps = [0.0, 0.5, 1.0, 2.0]
    ssim_curve = [1.0, 0.8, 0.6, 0.2]
    # (0.6+0.4)/2*0.5 + (0.4+0.2)/2*0.5 + (0.2-0.2)/2*1 = 0.25 + 0.15 + 0 = 0.4
    assert aaddc(eps, ssim_curve, limit=0.4, higher_is_better=True) == pytest.approx(0.4)
    lpips_curve = [0.0, 0.05, 0.1, 0.3]
    # limit - v: 0.15, 0.10, 0.05, -0.15 -> 0.0625 + 0.0375 + (-0.05) = 0.05
    assert aaddc(eps, lpips_curve, limit=0.15, higher_is_better=False) == pytest.approx(0.05)
    robust = aaddc(eps, [1.0, 0.95, 0.9, 0.8], 0.4, True)
    assert robust > aaddc(eps, ssim_curve, 0.4, True)
    with pytest.raises(ValueError):
        aaddc([0.0, 0.0], [1.0, 0.5], 0.4, True)


def test_frechet_distance_in_custom_features():
    a, b = _pair(64, noise=0.0)
    feats = lambda x: torch.stack([x.mean((1, 2, 3)), x.std((1, 2, 3)), x[:, 0, :16].mean((1, 2))], 1)
    assert frechet_distance(feats, 3, a, b) == pytest.approx(0.0, abs=1e-6)
    shifted = frechet_distance(feats, 3, a, (a + 0.3).clamp(0, 1))
    assert shifted > 0.01 and math.isfinite(shifted)


def test_weight_hungry_metrics_are_unavailable_not_faked(tmp_path):
    for build in (lpips, inception_fid):
        assert isinstance(build(None), Unavailable)
        missing = build(tmp_path / "nope.pth")
        assert isinstance(missing, Unavailable) and "not found" in missing.reason
