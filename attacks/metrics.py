"""Image metrics, all per image on [0,1] pixels and all from torchmetrics, plus AADDC.

Perceptual metrics that need downloaded weights (LPIPS, Inception FID) are built only from a
user-supplied weights file; otherwise they come back as `Unavailable(reason)`, never approximated.
The Fréchet distance we can always compute uses the project's own classifier's features and is
named after them, never called FID.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import binomtest
from torch import Tensor, nn
from torchmetrics.functional.image import (
    multiscale_structural_similarity_index_measure,
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)
from torchmetrics.image.fid import FrechetInceptionDistance

# MS-SSIM at 32x32: torchmetrics needs side > (kernel - 1) * 2^(scales - 1), so the standard 5 scales
# with an 11 kernel cannot run. We keep 3 scales, a 3x3 Gaussian window, the first three of Wang et al.'s
# scale weights renormalised to sum to 1, and relu normalisation (negative contrast terms at coarse
# scales of adversarial images would otherwise give NaN under fractional powers).
_WANG_BETAS = (0.0448, 0.2856, 0.3001)
MS_SSIM_SETTINGS = {
    "kernel_size": 3,
    "sigma": 1.5,
    "betas": tuple(b / sum(_WANG_BETAS) for b in _WANG_BETAS),
    "normalize": "relu",
    "data_range": 1.0,
}
FRECHET_NAME = "Fréchet distance (popvae CNN features)"


@dataclass(frozen=True)
class Unavailable:
    """A metric we refuse to fake: why it was not computed."""

    reason: str


def ssim(a: Tensor, b: Tensor) -> Tensor:
    """SSIM per image (B,), data_range=1, torchmetrics' default 11x11 Gaussian window."""
    return structural_similarity_index_measure(a, b, data_range=1.0, reduction="none")


def ms_ssim(a: Tensor, b: Tensor) -> Tensor:
    """MS-SSIM per image (B,) with `MS_SSIM_SETTINGS` (works from 32x32 up)."""
    return multiscale_structural_similarity_index_measure(a, b, reduction="none", **MS_SSIM_SETTINGS)


def ms_ssim_settings() -> dict[str, object]:
    """`MS_SSIM_SETTINGS` as plain JSON, for reports to state."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in MS_SSIM_SETTINGS.items()}


def psnr(a: Tensor, b: Tensor) -> Tensor:
    """PSNR in dB per image (B,), data_range=1; average these for the reported mean (inf for identical images)."""
    return peak_signal_noise_ratio(a, b, data_range=1.0, reduction="none", dim=tuple(range(1, a.dim())))


def mse(a: Tensor, b: Tensor) -> Tensor:
    """Per-pixel mean squared error per image (B,), on [0,1] pixels."""
    return F.mse_loss(a, b, reduction="none").flatten(1).mean(1)


class _Features(nn.Module):
    """Adapter for torchmetrics' FID: images in [0,1] -> the classifier's penultimate features."""

    def __init__(self, features: Callable[[Tensor], Tensor], num_features: int) -> None:
        super().__init__()
        self.features = features
        self.num_features = num_features

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)


@torch.no_grad()
def frechet_distance(features: Callable[[Tensor], Tensor], num_features: int, real: Tensor, fake: Tensor,
                     batch_size: int = 256) -> float:
    """`FRECHET_NAME`: the Fréchet distance between Gaussians fit to the classifier features of two image sets."""
    metric = FrechetInceptionDistance(feature=_Features(features, num_features)).to(real.device)
    for images, is_real in ((real, True), (fake, False)):
        for chunk in images.split(batch_size):
            metric.update(chunk, real=is_real)
    return float(metric.compute())


def _rgb(x: Tensor) -> Tensor:
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def lpips(weights: str | Path | None) -> Callable[[Tensor, Tensor], Tensor] | Unavailable:
    """Per-image LPIPS (AlexNet) from the user's torchvision AlexNet weights file, else `Unavailable`.

    torchmetrics ships LPIPS' linear heads but fetches the ImageNet backbone through torch.hub; we
    point torch.hub at a private folder holding the user's file under its expected name, so nothing
    is downloaded.
    """
    if weights is None:
        return Unavailable("LPIPS needs AlexNet ImageNet weights (torchvision alexnet-owt-7be5be79.pth): "
                           "popvae evaluate --lpips-weights FILE (lpips_weights= in popvae.evaluate)")
    weights = Path(weights)
    if not weights.is_file():
        return Unavailable(f"LPIPS weights file not found: {weights}")
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity
    from torchvision.models import AlexNet_Weights

    old_hub = torch.hub.get_dir()
    with tempfile.TemporaryDirectory() as hub:
        (Path(hub) / "checkpoints").mkdir()
        shutil.copyfile(weights, Path(hub) / "checkpoints" / Path(AlexNet_Weights.DEFAULT.url).name)
        torch.hub.set_dir(hub)
        try:
            metric = LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True)
        except Exception as err:  # a wrong or damaged file fails in many ways inside torchvision
            return Unavailable(f"LPIPS could not load {weights}: {err}")
        finally:
            torch.hub.set_dir(old_hub)
    net = metric.net.eval()  # the per-image distance; the Metric wrapper only offers batch means
    return lambda a, b: net.to(a.device)(_rgb(a), _rgb(b), normalize=True).flatten()


def inception_fid(weights: str | Path | None) -> FrechetInceptionDistance | Unavailable:
    """Real FID (torch-fidelity's Inception v3) from the user's weights file, else `Unavailable`."""
    if weights is None:
        return Unavailable("FID needs the pt_inception-2015-12-05 weights: popvae evaluate --fid-weights FILE "
                           "(fid_weights= in popvae.evaluate)")
    if not Path(weights).is_file():
        return Unavailable(f"FID weights file not found: {weights}")
    try:
        return FrechetInceptionDistance(feature=2048, normalize=True, feature_extractor_weights_path=str(weights))
    except (ModuleNotFoundError, RuntimeError, OSError) as err:
        return Unavailable(f"FID unavailable: {err}")


def accuracy_ci(correct: Tensor) -> dict[str, float | int | list[float]]:
    """Accuracy of a boolean per-example tensor with its Wilson score 95% interval (scipy)."""
    n, k = int(correct.numel()), int(correct.sum())
    if n == 0:
        return {"accuracy": float("nan"), "ci95": [float("nan"), float("nan")], "correct": 0, "n": 0}
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return {"accuracy": k / n, "ci95": [float(ci.low), float(ci.high)], "correct": k, "n": n}


def aaddc(eps_grid: Sequence[float], values: Sequence[float], limit: float, higher_is_better: bool) -> float:
    """AADDC (Lu & Chen): the signed trapezoid area between a distortion curve and its limit line over the
    eps grid, oriented so that larger means more robust.

    AADDC = integral over eps of s * (value(eps) - limit), s = +1 when higher values mean less distortion
    (SSIM, PSNR; limit SSIM 0.4), s = -1 when lower do (LPIPS; limit 0.15). Parts of the curve beyond the
    limit count negatively: a model that is already past the limit at small eps loses area.
    """
    eps, vals = np.asarray(eps_grid, dtype=float), np.asarray(values, dtype=float)
    if eps.shape != vals.shape or eps.ndim != 1 or len(eps) < 2 or np.any(np.diff(eps) <= 0):
        raise ValueError("aaddc needs matching 1-D eps and values, at least two points, eps strictly increasing")
    sign = 1.0 if higher_is_better else -1.0
    return float(np.trapezoid(sign * (vals - limit), eps))
