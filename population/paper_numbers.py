"""The papers' published numbers that `popvae reproduce` prints beside its own, each with its table.

Copied from the papers (their table numbers); where a paper gives no number, none is here. Fashion-MNIST and
MNIST only: the datasets popvae's reproduction runs.
"""

from __future__ import annotations

GSVAE = "GS-VAE paper (Zhou, Zhao, Nguyen, Yao)"
ROBUST_GMM = "Robust GMM-DAE paper (Saseendran et al.)"
LU_CHEN = "Lu & Chen"

# Table 1, test MSE: (population n = 8, standard GS-VAE baseline).
TEST_MSE = {"mnist": (0.0002, 0.0154), "fashion-mnist": (0.0036, 0.0354)}

# Tables 2-3, accuracy (%) of the CNN on purified images, the non-adaptive setting: eps -> (population, baseline).
# The MNIST FGSM column at 0.1 is the paper's 0.09.
FGSM_EPS = (0.5, 0.3, 0.1, 0.05, 0.01, 0.0)
PGD_EPS = (0.5, 0.4, 0.3, 0.2, 0.1, 0.0)
PURIFICATION = {
    "fashion-mnist": {
        "fgsm": dict(zip(FGSM_EPS, zip((88.44, 88.97, 89.59, 90.12, 90.53, 92.07), (7.51, 8.30, 60.75, 72.02, 80.21, 89.54),
                                       strict=True), strict=True)),
        "pgd": dict(zip(PGD_EPS, zip((87.63, 88.45, 89.34, 90.01, 90.75, 92.07), (29.69, 33.77, 36.24, 38.55, 39.73, 89.54),
                                     strict=True), strict=True)),
    },
    "mnist": {
        "fgsm": dict(zip(FGSM_EPS, zip((87.28, 91.41, 96.54, 98.17, 99.02, 99.19), (11.40, 25.39, 61.32, 84.66, 94.26, 95.82),
                                       strict=True), strict=True)),
        "pgd": dict(zip(PGD_EPS, zip((95.31, 96.05, 96.48, 97.02, 97.38, 99.19), (30.54, 33.79, 39.65, 41.52, 43.78, 95.82),
                                     strict=True), strict=True)),
    },
}

# Robust GMM-DAE Table 1 (Fashion-MNIST; MNIST: Table 1's Robust GMM-DAE row and Table 2's GMM-DAE row), MS-SSIM at
# L2 budgets 1 / 3 / 5. Columns: latent attack MS-SSIM(target, adversarial reconstruction) (lower = more robust) and
# MS-SSIM(input, adversarial input); maximum damage MS-SSIM(clean reconstruction, adversarial reconstruction)
# (higher = more robust) and MS-SSIM(input, adversarial input).
ROBUST_TABLE_COLUMNS = ("latent_target_vs_adv_rec", "latent_input_vs_adv_input", "damage_rec_vs_adv_rec",
                        "damage_input_vs_adv_input")
ROBUST_TABLE = {
    "fashion-mnist": {
        "vae-kl": ((0.61, 0.65, 0.71), (0.98, 0.91, 0.82), (0.58, 0.29, 0.13), (0.99, 0.94, 0.87)),
        "robust-gmm-dae": ((0.22, 0.26, 0.39), (0.97, 0.91, 0.81), (0.92, 0.77, 0.63), (0.97, 0.92, 0.83)),
    },
    "mnist": {
        "gmm-dae": ((0.54, 0.70, 0.82), None, (0.75, 0.37, 0.30), None),
        "robust-gmm-dae": ((0.38, 0.47, 0.60), (0.95, 0.90, 0.80), (0.92, 0.82, 0.69), (0.98, 0.89, 0.78)),
    },
}

# Lu & Chen Table 2, AADDC under the all-black targeted latent attack (SSIM limit 0.4), Fashion-MNIST: (VAE, DAE).
AADDC_SSIM = {"fashion-mnist": {"mmd": (0.1679, 0.1697), "swt": (0.1653, 0.1659)}}

# Robust GMM-DAE Table 1, FID column (Fashion-MNIST; the proposed model's +- 0.9 is from the appendix).
FID = {"fashion-mnist": {"vae-kl": 70.22, "robust-gmm-dae": 64.89}}
# Robust GMM-DAE Table 3, latent MLP accuracy (%) clean / under the latent attack at L2 1, Fashion-MNIST (its VAE row;
# the table has no GMM-DAE or Robust GMM-DAE row in the numbers copied here).
LATENT_MLP = {"fashion-mnist": {"vae-kl": (80.65, 59.15)}}
