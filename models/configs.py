"""The model families' configs: pydantic only, no torch, so that a run config or a robust method can be
validated (and a bad one rejected) without importing torch.

`FAMILY_CONFIGS` maps a family name to its config class; `models.registry` pairs each with the nn.Module
its family module registers.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Kernel = Literal["rbf", "imq"]

# Lu & Chen regulariser weights against the per-image summed pixel error; a None in the config takes these.
DEFAULT_REG_WEIGHT = {"kl": 1.0, "mmd": 100.0, "swt": 100.0}


def feature_side(image_side: int, depth: int) -> int:
    """Side of the feature map after `depth` stride-2 conv layers."""
    return image_side // (2**depth)


class GSVAEConfig(BaseModel):
    """The dual-latent Gumbel-Softmax VAE (`models.gsvae`)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    in_channels: int = Field(1, ge=1)
    image_size: int = Field(32, ge=16)
    widths: tuple[int, ...] = (32, 64, 128, 256)
    z1_vars: int = Field(32, ge=1)
    z1_categories: int = Field(8, ge=2)
    z2_vars: int = Field(16, ge=1)
    z2_categories: int = Field(8, ge=2)
    eval_noise: bool = False  # evaluation is deterministic unless asked; reports say which
    lr: float = Field(1e-3, gt=0)

    @model_validator(mode="after")
    def _fits(self) -> GSVAEConfig:
        if not self.widths or min(self.widths) < 1:
            raise ValueError(f"widths must be one or more positive channel counts, got {list(self.widths)}")
        if feature_side(self.image_size, len(self.widths)) < 1:
            raise ValueError(f"image_size {self.image_size} is too small for {len(self.widths)} stride-2 layers")
        return self


class GMMDAEConfig(BaseModel):
    """The GMM-regularised deterministic autoencoder (`models.gmm_dae`)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    in_channels: int = Field(1, ge=1)
    image_size: int = Field(32, ge=16)
    latent_dim: int = Field(10, ge=1)
    modes: int = Field(10, ge=1, description="GMM modes; 1 is the unimodal, RAE-like variant")
    mode_scale: float = Field(4.0, gt=0, description="mode k sits at mode_scale * e_k")
    z_noise: float = Field(0.05, ge=0, description="std of the Gaussian noise added to z before decoding in training")
    arch: Literal["conv", "mlp", "auto"] = Field("conv", description="auto: MLP for 1-channel sets, conv for 3-channel")
    widths: tuple[int, ...] = (32, 64, 128, 256)
    hidden: tuple[int, ...] = (200, 200, 200, 200)
    lr: float = Field(1e-3, gt=0)
    weight_batches: int = Field(50, ge=1, description="prior batches averaged to set the loss weights")

    @model_validator(mode="after")
    def _fits(self) -> GMMDAEConfig:
        if self.modes > self.latent_dim:
            raise ValueError(f"modes ({self.modes}) must not exceed latent_dim ({self.latent_dim}): means sit on basis vectors")
        if self.image_size % 2 ** len(self.widths):
            raise ValueError(f"image_size {self.image_size} must be divisible by 2**{len(self.widths)} for the conv encoder")
        return self


class RobustGMMDAEConfig(GMMDAEConfig):
    """The adversarially trained Robust GMM-DAE (`models.gmm_dae`)."""

    arch: Literal["conv", "mlp", "auto"] = "auto"
    eps: float = Field(0.3, ge=0, description="L-inf crafting budget in pixel units")
    step_scale: float = Field(1.25, gt=0, description="FGSM step = step_scale * eps")
    coupling: float = Field(0.95, ge=-1, le=1, description="a in the coupled covariance [[S, aS], [aS, S]]")
    craft: Literal["fgsm", "pgd"] = Field("fgsm", description="pgd: the appendix ablation")
    pgd_steps: int = Field(10, ge=1)


class RavenConfig(BaseModel):
    """RAVEN (`models.raven`)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    in_channels: int = Field(1, ge=1)
    image_size: int = Field(32, ge=8)
    latent_dim: int = Field(16, ge=1)
    hidden: tuple[int, ...] = (512, 256)
    input_noise: float = Field(0.1, ge=0, description="std of the Gaussian noise making x' (then clamped to [0,1])")
    pair_scale: float = Field(0.5, gt=0, description="s in the prior p(z' | z) = N(z'; z, s^2 I)")
    beta: float = Field(1.0, ge=0, description="weight of the KL term")
    lr: float = Field(1e-3, gt=0)


class LuChenConfig(BaseModel):
    """What Lu & Chen's VAE and DAE (`models.vae`) share."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    in_channels: int = Field(1, ge=1)
    image_size: int = Field(32, ge=16)
    latent_dim: int = Field(10, ge=1, description="the papers use 10, 30 or 128")
    widths: tuple[int, ...] = (32, 64, 128, 64)
    reg_weight: float | None = Field(None, ge=0, description="None: DEFAULT_REG_WEIGHT of the regulariser")
    mmd_kernel: Kernel = "rbf"
    lr: float = Field(1e-3, gt=0)
    latent_adv: bool = Field(False, description="Lu & Chen Algorithm 1 after every regular step")
    adv_rounds: int = Field(1, ge=1, description="M: latent attacks (and decoder updates) per step")
    adv_steps: int = Field(5, ge=1, description="K: PGD steps per latent attack")
    adv_eps: float = Field(1.0, gt=0, description="L2 radius of the latent attack")
    adv_lr: float = Field(1e-3, gt=0, description="learning rate of the decoder's own optimizer")

    @model_validator(mode="after")
    def _fits(self) -> LuChenConfig:
        if self.image_size % 2 ** len(self.widths):
            raise ValueError(f"image_size {self.image_size} must be divisible by 2**{len(self.widths)} for the conv encoder")
        return self

    @property
    def weight(self) -> float:
        return DEFAULT_REG_WEIGHT[self.regulariser] if self.reg_weight is None else self.reg_weight  # a subclass field


class VAEConfig(LuChenConfig):
    regulariser: Literal["kl", "mmd", "swt"] = "kl"
    tc: bool = Field(False, description="beta-TCVAE: split the KL into MI + tc_beta * TC + dimension-wise KL")
    tc_beta: float = Field(6.0, ge=0)
    dataset_size: int = Field(60000, ge=1, description="N in beta-TCVAE's minibatch-weighted sampling")

    @model_validator(mode="after")
    def _tc_needs_kl(self) -> VAEConfig:
        if self.tc and self.regulariser != "kl":
            raise ValueError("tc (beta-TCVAE) decomposes the KL: it needs regulariser='kl'")
        return self


class DAEConfig(LuChenConfig):
    regulariser: Literal["mmd", "swt"] = "mmd"


FAMILY_CONFIGS: dict[str, type[BaseModel]] = {
    "gsvae": GSVAEConfig,
    "gmm-dae": GMMDAEConfig,
    "robust-gmm-dae": RobustGMMDAEConfig,
    "raven": RavenConfig,
    "vae": VAEConfig,
    "dae": DAEConfig,
}
