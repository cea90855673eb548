"""The robust autoencoders' training settings at their papers' budgets: plain data, no torch.

A preset maps a method (`population.methods.METHODS`) to its config overrides and a `Schedule` (batch, epochs, the
learning-rate decay, the stopper), with where each setting came from (`SOURCES`), so the report can state them. The
trainer (`population.robust.train_job`) builds its optimizer and scheduler from these and nothing else.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Schedule(BaseModel):
    """How one job trains: the batch, at most `epochs` full passes, the learning-rate decay and the plateau stopper.

    The validation loss every rule watches is the per-pixel reconstruction MSE on a held-out share of the training
    split: one measure for every method, so their learning curves compare and no model's own loss terms decide."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    batch_size: int = Field(ge=1)
    epochs: int = Field(ge=1)
    steps_per_epoch: int | None = Field(None, ge=1, description="None: one pass over the training split")
    val_fraction: float = Field(0.1, gt=0, lt=1)
    val_size: int = Field(2000, ge=1, description="at most this many held-out images are scored per epoch")
    lr_decay: Literal["none", "plateau"] = "none"
    decay_factor: float = Field(0.1, gt=0, lt=1, description="lr *= factor when the validation loss stalls")
    decay_patience: int = Field(5, ge=0, description="epochs without improvement before a decay")
    stop_patience: int | None = Field(10, ge=1, description="epochs without improvement before the job stops "
                                                            "(the population's stopper, generation.plateau_count)")
    min_delta: float = Field(1e-3, ge=0, description="relative improvement that counts as one")


# Robust GMM-DAE and GMM-DAE (Saseendran et al.). The paper's appendix: Adam, batch 100, lr 0.002 decayed exponentially
# on the validation loss, coupling 0.95 on MNIST and Fashion-MNIST. The authors' released config.ini (Fashion-MNIST
# section of boschresearch/Robust_GMM_DAE and boschresearch/GMM_DAE): batch 100, 100 epochs, latent 10, 10 modes,
# lr 2e-4 without decay (exp_lr False), FGSM eps 0.3 with step 0.375 (= 1.25 eps), latent noise 0.1 (Robust) and 0
# (GMM-DAE), the 200x4 MLP for 1-channel images, modes at 10 e_k with sigma 1 (utils.set_gmm_centers), loss weights
# from 100 prior batches (loss.estimate_loss_coefficients). Where the two disagree (the learning rate and its decay) we
# follow the paper; its "decayed on the validation loss" is read as ReduceLROnPlateau with torch's factor 0.1 and the
# patience 5 of the scheduler left commented out in the released train.py.
_GMM = {"latent_dim": 10, "modes": 10, "mode_scale": 10.0, "arch": "mlp", "lr": 0.002, "weight_batches": 100}
_GMM_SCHEDULE = Schedule(batch_size=100, epochs=100, lr_decay="plateau", decay_factor=0.1, decay_patience=5)
# Lu & Chen: the conv encoder 32-64-128-64 with BatchNorm and LeakyReLU (the family's default), latent 30 on
# Fashion-MNIST, batch 64, Adam 1e-3. Their epochs were not found: 100 at most, ended by the plateau stopper.
_LU_CHEN = {"latent_dim": 30, "lr": 1e-3}
_LU_CHEN_SCHEDULE = Schedule(batch_size=64, epochs=100)

PAPER: dict[str, tuple[dict[str, Any], Schedule]] = {
    "vae-kl": (_LU_CHEN, _LU_CHEN_SCHEDULE),
    "gmm-dae": (_GMM | {"z_noise": 0.0}, _GMM_SCHEDULE),
    "robust-gmm-dae": (_GMM | {"z_noise": 0.1, "coupling": 0.95, "eps": 0.3, "step_scale": 1.25, "craft": "fgsm"},
                       _GMM_SCHEDULE),
    **{m: (_LU_CHEN, _LU_CHEN_SCHEDULE) for m in ("vae-mmd", "dae-mmd", "vae-swt", "dae-swt", "vae-mmd-lat",
                                                  "dae-mmd-lat", "vae-swt-lat", "dae-swt-lat")},
    # RAVEN: its paired prior and RAdam as the family has them, the latent and budget of the VAE it is compared with.
    "raven": ({"latent_dim": 30}, _LU_CHEN_SCHEDULE),
}

SOURCES = {
    "gmm-dae": "Robust GMM-DAE paper appendix (Adam, batch 100, lr 0.002 decayed on validation loss); released "
               "GMM_DAE config.ini Fashion-MNIST (100 epochs, latent 10, 10 modes, no latent noise); modes at 10 e_k",
    "robust-gmm-dae": "as gmm-dae, plus coupling 0.95 (appendix), FGSM eps 0.3 / step 0.375 and latent noise 0.1 "
                      "(released Robust_GMM_DAE config.ini); released lr 2e-4 without decay not followed",
    "lu-chen": "Lu & Chen: conv 32-64-128-64 + BatchNorm + LeakyReLU, latent 30, batch 64, Adam 1e-3; epochs not "
               "found (100 at most, plateau stopper)",
    "raven": "RAVEN: paired prior, RAdam 1e-3 (family defaults); latent 30, batch 64 and the stopper of its VAE",
}

# Seeds per method: 3 where the claims rest on them (VAE, GMM-DAE, Robust GMM-DAE), 1 for the rest.
PAPER_SEEDS = {"vae-kl": 3, "gmm-dae": 3, "robust-gmm-dae": 3}


def source_of(method: str) -> str:
    """Where `method`'s settings came from, in one line."""
    return SOURCES.get(method, SOURCES["lu-chen"])
