"""Configs of the Gaussian-embedding diffusion family: the architecture, and the inference settings.

`GaussianDiffusionConfig` defines the networks (what the weights mean); `InferenceSettings` says how
a call samples them (steps, windows, start latent, background). Both are saved in a model folder;
a call may override the settings without touching the saved architecture.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from onehead.config import from_dict, to_dict
from onehead.data.sequence import DOMAINS
from onehead.errors import ConfigError

KIND = "onehead-animator"

TINY_UNET = dict(  # UNet2DConditionModel arguments, in their JSON form
    layers_per_block=1, block_out_channels=[32, 64, 64],
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    cross_attention_dim=64, attention_head_dim=8, norm_num_groups=16,
)


@dataclass
class GaussianDiffusionConfig:
    """The networks of paper 003's model; saved beside its weights."""

    preset: Literal["tiny", "small", "base"] = "tiny"
    resolution: int = 64  # output frames are resolution x resolution
    head_model: Literal["basic", "flame"] = "basic"  # the head model the Gaussian field is anchored on
    uv_resolution: int = 64  # UV grid of the Gaussian field
    control_channels: int = 8  # feature channels of the control maps (the paper uses 8)
    normal_offset: bool = True  # learnable offset of each Gaussian along its triangle's normal
    latent: Literal["pixel", "vae"] = "pixel"  # exact space-to-depth (tiny) or Stable Diffusion's VAE
    pixel_factor: int = 2  # space-to-depth factor of the pixel latent space
    sd_path: str | None = None  # base: a local diffusers-format Stable Diffusion folder
    unet: dict = field(default_factory=lambda: dict(TINY_UNET))  # UNet2DConditionModel arguments (no sd_path)
    guider_channels: tuple[int, ...] = (16, 32, 64, 128)
    temporal_heads: int = 4
    image_embed_dim: int | None = None  # size of a user-supplied image embedding (optional extra token)
    num_train_timesteps: int = 1000
    min_train_timestep: int = 0  # training draws timesteps in [min_train_timestep, num_train_timesteps):
    # a model sampled in one step from a zero latent (the posterior mean at the last, zero-SNR
    # timestep) learns only what it uses when this is near the end of the schedule
    beta_schedule: str = "scaled_linear"
    beta_start: float = 0.00085
    beta_end: float = 0.012
    warp_guidance: bool = False  # onehead's addition to paper 003: the pose guider also sees the
    # reference warped by the head model's motion (onehead.render.warp) and where it is visible
    correct_warp: bool = False  # onehead's addition: the diffusion variable is the correction of the
    # filled mesh warp of the reference (onehead.render.warp.fill_warp) in latent space, and the
    # UNet sees that warp (a zero correction is exactly the mesh warp)
    control_resolution: int | None = None  # size of the splatted control maps (None: resolution)

    def __post_init__(self):
        positive = {"resolution": self.resolution, "uv_resolution": self.uv_resolution,
                    "control_channels": self.control_channels, "pixel_factor": self.pixel_factor,
                    "temporal_heads": self.temporal_heads, "num_train_timesteps": self.num_train_timesteps}
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if self.latent == "pixel" and self.resolution % (self.pixel_factor * 4):
            raise ValueError(f"resolution {self.resolution} must be a multiple of {self.pixel_factor * 4} "
                             f"(4 x pixel_factor)")
        if not 0 <= self.min_train_timestep < self.num_train_timesteps:
            raise ValueError(f"min_train_timestep must be in [0, {self.num_train_timesteps}), "
                             f"got {self.min_train_timestep}")
        if self.control_resolution is not None:
            if self.control_resolution < 1:
                raise ValueError(f"control_resolution must be at least 1, got {self.control_resolution}")
            if self.warp_guidance and self.control_resolution != self.resolution:
                raise ValueError("warp_guidance needs control maps at the output resolution "
                                 "(control_resolution: null)")

    @property
    def control_size(self) -> int:
        """The size of the splatted control maps."""
        return self.control_resolution or self.resolution

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "GaussianDiffusionConfig":
        """from_preset("tiny") or ("base", sd_path=DIR), with any field overridden."""
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; use one of {', '.join(PRESETS)}")
        return from_dict(cls, {**to_dict(PRESETS[name][0]), **overrides}, f"preset {name}")


@dataclass
class InferenceSettings:
    """How a call samples the model. Any field can be overridden per call."""

    steps: int = 8  # DDIM steps
    seed: int = 0  # the initial noise (shared by every frame)
    window: int = 16  # frames per temporal window
    window_overlap: int = 4  # frames shared by neighbouring windows (blended)
    initial_latent: Literal["noise", "zeros"] = "noise"  # "zeros": with zero terminal SNR the first
    # step's input carries no information about the image, so a zero start gives the network's
    # posterior-mean prediction without passing noise through an undertrained model
    domain: str = "real"  # domain token (the paper: real); a model trained on synthetic data only
    # has an untrained "real" token and sets "synthetic"
    background: Literal["generated", "reference"] = "generated"  # "reference": outside the head
    # region the output is the reference image (paste-back; right for a static camera and backdrop)
    background_margin: float = 0.08  # the head region grows by this fraction of the image size
    carry_foreground: bool = True  # correct_warp models: a photo's hair, hat and collar beside the head
    # move with it in the warp (onehead.render.warp.carry_foreground); False: only the head moves
    pin_neck: bool = True  # correct_warp models, photos (a reference with a person mask): the neck's
    # base stays with the torso and the neck stretches (HeadModel.neck_base_weights); False: it moves rigidly
    correction_margin: float = 0.0  # correct_warp models: the correction is kept on the head (both
    # head masks grown by this fraction of the image size), the filled warp elsewhere; 1 keeps it all
    mouth_interior: bool = True  # correct_warp models: the inside of an open mouth that the reference
    # does not show is dark in the warp (onehead.render.warp.fill_warp's mouth), not lip colour
    correction_blur: float = 0.0  # correct_warp models: the correction is blurred by a Gaussian of
    # this many pixels before it is added, so it changes shading and colour but not the warp's texture
    correction_strength: float = 1.0  # correct_warp models: the correction is scaled by this before it
    # is added (1: as predicted, 0: the filled warp); below 1 it leans on the warp where the model is unsure

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.correction_blur < 0:
            raise ValueError(f"correction_blur must be at least 0, got {self.correction_blur}")
        if not 0 <= self.correction_strength <= 1:
            raise ValueError(f"correction_strength must be in [0, 1], got {self.correction_strength}")
        if not 0 <= self.correction_margin <= 1:
            raise ValueError(f"correction_margin must be in [0, 1], got {self.correction_margin}")
        if self.window < 1 or not 0 <= self.window_overlap < self.window:
            raise ValueError(f"window must be at least 1 and window_overlap in [0, window), "
                             f"got {self.window} and {self.window_overlap}")
        if self.domain not in DOMAINS:
            raise ValueError(f"domain must be one of {', '.join(DOMAINS)}, got {self.domain!r}")
        if not 0 <= self.background_margin <= 1:
            raise ValueError(f"background_margin must be in [0, 1], got {self.background_margin}")


SMALL_UNET = dict(  # 32x32 latents (256x256 frames through an 8x space-to-depth)
    layers_per_block=1, block_out_channels=[64, 128, 128],
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    cross_attention_dim=64, attention_head_dim=8, norm_num_groups=16,
)

PRESETS = {
    "tiny": (GaussianDiffusionConfig(), InferenceSettings()),
    # the embedded default: 256x256 on a CPU, correcting the mesh warp
    "small": (GaussianDiffusionConfig(preset="small", resolution=256, pixel_factor=8, control_resolution=64,
                                      correct_warp=True, unet=dict(SMALL_UNET), guider_channels=(32, 64),
                                      min_train_timestep=900),
              InferenceSettings(steps=1, initial_latent="zeros", domain="synthetic", background="reference")),
    "base": (GaussianDiffusionConfig(preset="base", resolution=512, uv_resolution=256, latent="vae", unet={},
                                     guider_channels=(16, 32, 96, 256)),
             InferenceSettings(steps=10, window=14, window_overlap=4)),
}

# model folders written before the two configs were split kept one flat dict
LEGACY_INFERENCE_KEYS = {"default_steps": "steps", "window": "window", "window_overlap": "window_overlap",
                         "initial_latent": "initial_latent", "inference_domain": "domain",
                         "background": "background", "background_margin": "background_margin"}


def split_saved_config(data: dict, where: str) -> tuple[GaussianDiffusionConfig, InferenceSettings]:
    """A saved animator.json (current {"model", "inference"} layout, or the older flat one) -> configs."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(data).__name__}")
    data = {k: v for k, v in data.items() if k not in ("kind", "format")}
    if "model" in data or "inference" in data:
        unknown = sorted(set(data) - {"model", "inference"})
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known keys: model, inference")
        model, inference = data.get("model"), data.get("inference")
    else:
        inference = {new: data.pop(old) for old, new in LEGACY_INFERENCE_KEYS.items() if old in data}
        model = data
    return (from_dict(GaussianDiffusionConfig, model, f"{where}: model"),
            from_dict(InferenceSettings, inference, f"{where}: inference"))
