"""Configs of the person-specific DiffusionAvatars family (paper 000): the networks, and how a
call samples them. Both are saved in the model folder (avatar.json)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from onehead.config import from_dict, to_dict
from onehead.errors import ConfigError
from onehead.models.gaussian_diffusion.config import TINY_UNET

KIND = "onehead-avatar"
CONFIG_FILE = "avatar.json"
WEIGHTS_FILE = "avatar.safetensors"
# the rasterized mesh buffers the ControlNet sees, in this order
BUFFER_CHANNELS = {"canonical": 3, "depth": 1, "normals": 3, "mask": 1}


@dataclass
class PersonAvatarConfig:
    """The networks of one avatar; saved beside its weights."""

    preset: Literal["tiny", "base"] = "tiny"
    resolution: int = 128  # output frames are resolution x resolution
    head_model: Literal["basic", "flame"] = "basic"
    objective: Literal["diffusion", "direct"] = "diffusion"  # "direct": the paper's "w/o diffusion"
    # ablation (DNR-style): the same buffers, features and networks regress the image in one pass
    triplane_channels: int = 8  # C of each TriPlane and of the ambient map (the paper: 16)
    triplane_resolution: int = 64  # R of each plane (the paper: 512)
    triplane_bounds: float = 0.25  # canonical coordinates in [-bounds, bounds] metres map onto the planes
    expression_tokens: int = 4  # N tokens from the expression code (the paper: 4)
    latent: Literal["pixel", "vae"] = "pixel"  # exact space-to-depth (tiny) or Stable Diffusion's VAE
    pixel_factor: int = 4
    sd_path: str | None = None  # base: a local diffusers-format Stable Diffusion folder
    unet: dict = field(default_factory=lambda: dict(TINY_UNET))  # UNet2DConditionModel arguments (no sd_path)
    train_unet: bool = True  # the paper freezes its pretrained UNet; a tiny UNet has no prior to keep
    parameterization: Literal["v", "x0"] = "v"  # what the UNet outputs. The sampler and the loss always
    # see v; "x0": the UNet predicts the clean latents and v follows from them exactly. A UNet narrower
    # than its latents (tiny: 32 channels, 48 latent channels) cannot pass the noise through to
    # predict v at low noise levels, and its samples keep that noise; an x0 output never carries it.
    conditioning_channels: tuple[int, ...] = (16, 32, 64)  # ControlNet's buffer encoder; len - 1 halvings
    # must reach the latent size (pixel_factor 4: three entries; SD's VAE, factor 8: four)
    num_train_timesteps: int = 1000
    beta_schedule: str = "scaled_linear"
    beta_start: float = 0.00085
    beta_end: float = 0.012

    def __post_init__(self):
        for name in ("resolution", "triplane_channels", "triplane_resolution", "expression_tokens",
                     "pixel_factor", "num_train_timesteps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.triplane_bounds <= 0:
            raise ValueError(f"triplane_bounds must be positive, got {self.triplane_bounds}")
        if self.latent == "pixel" and 2 ** (len(self.conditioning_channels) - 1) != self.pixel_factor:
            raise ValueError(f"conditioning_channels has {len(self.conditioning_channels)} entries: it halves the "
                             f"buffers {len(self.conditioning_channels) - 1} times, the latent is 1/{self.pixel_factor}")

    @property
    def control_channels(self) -> int:
        """Buffers, three TriPlane lookups and the ambient map (the paper: 16 x 4 + 9 = 73)."""
        return sum(BUFFER_CHANNELS.values()) + 4 * self.triplane_channels

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "PersonAvatarConfig":
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; use one of {', '.join(PRESETS)}")
        return from_dict(cls, {**to_dict(PRESETS[name][0]), **overrides}, f"preset {name}")


@dataclass
class AvatarSettings:
    """How a call renders. Any field can be overridden per call."""

    steps: int = 4  # DDIM steps (trailing timesteps; the paper samples 20 DDPM steps)
    seed: int = 0  # the initial noise, shared by every frame (temporal consistency)
    batch: int = 8  # frames denoised together
    background: float = 0.0  # grey level of the matted background the avatar was trained on

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.batch < 1:
            raise ValueError(f"batch must be at least 1, got {self.batch}")
        if not 0 <= self.background <= 1:
            raise ValueError(f"background must be in [0, 1], got {self.background}")


PRESETS = {
    "tiny": (PersonAvatarConfig(parameterization="x0"), AvatarSettings()),
    "base": (PersonAvatarConfig(preset="base", resolution=512, triplane_channels=16, triplane_resolution=512,
                                latent="vae", pixel_factor=8, unet={}, train_unet=False,
                                conditioning_channels=(16, 32, 96, 256)),
             AvatarSettings(steps=10)),
}
