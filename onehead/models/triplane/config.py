"""Configs of the tri-plane feed-forward family (paper 004): the architecture and the inference settings.

`TriplaneConfig` defines the networks (what the weights mean); `TriplaneSettings` says how a call
renders them (samples per ray, frames per batch). Both are saved in a model folder
(triplane.json); a call may override the settings without touching the architecture.

Sizes: the source image is `resolution` px; the canonical encoder maps it to planes of
`plane_resolution` through `len(canonical_down) - 1` halvings then `len(canonical_up) - 1`
doublings (so resolution / 2^(down-1) * 2^(up-1) = plane_resolution), and the same rule holds
for the expression encoder (from `expression_resolution`) and the appearance encoder (from the
planes' own size). The volume renders at `render_resolution`; the super-resolution module
doubles that up to `resolution`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from onehead.config import from_dict, to_dict
from onehead.errors import ConfigError

KIND = "onehead-triplane"
CONFIG_FILE = "triplane.json"
WEIGHTS_FILE = "triplane.safetensors"
FORMAT = 1  # triplane.json holds {"kind", "format", "model": architecture, "inference": settings}


@dataclass
class TriplaneConfig:
    """The networks of paper 004's model; saved beside its weights."""

    preset: Literal["tiny", "small", "base"] = "tiny"
    resolution: int = 64  # source and output frames are resolution x resolution
    render_resolution: int = 32  # the volume rendering's size (the super-resolution input)
    head_model: Literal["basic", "flame"] = "basic"  # the mesh of the appearance and expression branches
    plane_resolution: int = 32  # R: each plane is R x R
    plane_channels: int = 16  # C: channels of each plane
    feature_channels: int = 16  # channels the decoder renders; the first 3 are the low-resolution RGB
    bounds: float = 0.2  # half the side of the tri-plane cube in metres, in the head frame around the
    # centre of the head model's template (onehead.models.triplane.model, "Frames")
    density_scale: float = 1.0  # density per plane unit: sigma = density_scale * softplus(raw - 1) / bounds
    latent_channels: int = 32  # bottleneck channels of every plane encoder
    norm_groups: int = 16  # GroupNorm groups of the plane encoders (divides every block's channels)
    attention: bool = True  # self-attention at each plane encoder's bottleneck (global context)
    canonical_down: tuple[int, ...] = (32, 64, 64)  # canonical encoder: diffusers Encoder block channels
    canonical_up: tuple[int, ...] = (64, 64)  # then diffusers Decoder block channels, up to the planes
    canonical_init: str | None = None  # a local diffusers AutoencoderKL folder (or a Stable Diffusion
    # folder with vae/): its tensors whose names and shapes match initialise the canonical encoder
    lift_resolution: int = 32  # the appearance branch lifts a lift_resolution^2 grid of source pixels
    lift_channels: int = 8  # features per lifted pixel (the paper's E_p; its RGB is lifted too)
    lift_hidden: int = 32  # width of the small convolutional feature extractor E_p
    appearance_down: tuple[int, ...] = (32, 64)  # appearance encoder over the splatted planes
    appearance_up: tuple[int, ...] = (64, 64)
    expression_resolution: int = 32  # the frontal G-buffer render of the expression branch
    expression_down: tuple[int, ...] = (32, 64)
    expression_up: tuple[int, ...] = (64, 64)
    decoder_hidden: int = 64  # EG3D's decoder MLP width
    backdrop: bool = True  # behind the cube: the source picture, its head filled in, encoded (BackdropEncoder);
    # False: one learned feature vector for every background pixel
    backdrop_grow: float = 0.06  # the head-model silhouette filled in the backdrop grows by this share of its size
    sr_channels: int = 32  # width of the super-resolution convolutions

    def __post_init__(self):
        positive = {name: getattr(self, name) for name in (
            "resolution", "render_resolution", "plane_resolution", "plane_channels", "latent_channels",
            "norm_groups", "lift_resolution", "lift_channels", "lift_hidden", "expression_resolution",
            "decoder_hidden", "sr_channels")}
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if self.feature_channels < 3:
            raise ValueError(f"feature_channels must be at least 3 (the first 3 are RGB), got {self.feature_channels}")
        if self.bounds <= 0 or self.density_scale <= 0:
            raise ValueError(f"bounds and density_scale must be positive, got {self.bounds} and {self.density_scale}")
        _power_of_two_ratio("resolution / render_resolution", self.resolution, self.render_resolution)
        _power_of_two_ratio("resolution / lift_resolution", self.resolution, self.lift_resolution)
        for branch, size in (("canonical", self.resolution), ("expression", self.expression_resolution),
                             ("appearance", self.plane_resolution)):
            down, up = getattr(self, f"{branch}_down"), getattr(self, f"{branch}_up")
            if not down or not up:
                raise ValueError(f"{branch}_down and {branch}_up need at least one block each")
            for width in (*down, *up, self.latent_channels):
                if width % self.norm_groups:
                    raise ValueError(f"{branch}: block width {width} is not a multiple of norm_groups "
                                     f"{self.norm_groups}")
            bottleneck = size / 2 ** (len(down) - 1)
            if bottleneck != int(bottleneck) or bottleneck * 2 ** (len(up) - 1) != self.plane_resolution:
                raise ValueError(f"{branch}: {size} px through {len(down) - 1} halvings and {len(up) - 1} "
                                 f"doublings does not give plane_resolution {self.plane_resolution}")

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "TriplaneConfig":
        """from_preset("tiny") or ("base"), with any field overridden."""
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; use one of {', '.join(PRESETS)}")
        return from_dict(cls, {**to_dict(PRESETS[name][0]), **overrides}, f"preset {name}")


@dataclass
class TriplaneSettings:
    """How a call renders the model. Any field can be overridden per call."""

    coarse: int = 16  # stratified samples per ray (at bin centres: inference is deterministic)
    fine: int = 16  # importance samples per ray (0: the coarse pass only)
    frames_per_batch: int = 8  # frames rendered together (bounds memory)
    chunk: int | None = None  # rays per decoder call inside a batch (None: all at once)

    def __post_init__(self):
        if self.coarse < 1 or self.fine < 0:
            raise ValueError(f"need coarse >= 1 and fine >= 0 samples, got {self.coarse} and {self.fine}")
        if self.frames_per_batch < 1:
            raise ValueError(f"frames_per_batch must be at least 1, got {self.frames_per_batch}")
        if self.chunk is not None and self.chunk < 1:
            raise ValueError(f"chunk must be a positive number of rays, got {self.chunk}")


def _power_of_two_ratio(name: str, big: int, small: int) -> None:
    ratio = big // small
    if big % small or ratio & (ratio - 1):
        raise ValueError(f"{name} must be a power of two, got {big} / {small}")


PRESETS = {
    # CPU tests and demos: 64 px frames, 32 px renders, planes 3 x 16 x 32 x 32
    "tiny": (TriplaneConfig(), TriplaneSettings()),
    # 256 px frames on a CPU: 64 px renders (super-resolution x4), planes 3 x 16 x 64 x 64
    "small": (TriplaneConfig(preset="small", resolution=256, render_resolution=64, plane_resolution=64,
                             canonical_down=(32, 64, 64, 64), canonical_up=(64, 64), lift_resolution=64,
                             expression_resolution=64, expression_down=(32, 64), expression_up=(64, 64),
                             appearance_down=(32, 64), appearance_up=(64, 64)),
              TriplaneSettings(coarse=16, fine=16, frames_per_batch=4)),
    # the paper's sizes: 512 px frames, 128 px renders, planes 3 x 32 x 256 x 256, E_p at 128 px
    "base": (TriplaneConfig(preset="base", resolution=512, render_resolution=128, plane_resolution=256,
                            plane_channels=32, feature_channels=32, latent_channels=128, norm_groups=32,
                            canonical_down=(64, 128, 256, 256), canonical_up=(256, 128, 64),
                            lift_resolution=128, lift_channels=32, lift_hidden=64,
                            appearance_down=(64, 128, 256), appearance_up=(256, 128, 64),
                            expression_resolution=256, expression_down=(64, 128, 256, 256),
                            expression_up=(256, 128, 64, 64), decoder_hidden=64, sr_channels=64),
             TriplaneSettings(coarse=48, fine=48, frames_per_batch=4, chunk=4096)),
}


def split_saved_config(data: dict, where: str) -> tuple[TriplaneConfig, TriplaneSettings]:
    """A saved triplane.json ({"kind", "format", "model", "inference"}) -> the two configs."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(data).__name__}")
    data = {k: v for k, v in data.items() if k not in ("kind", "format")}
    unknown = sorted(set(data) - {"model", "inference"})
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known keys: model, inference")
    if "model" not in data:
        raise ConfigError(f"{where}: no 'model' section")
    return (from_dict(TriplaneConfig, data["model"], f"{where}: model"),
            from_dict(TriplaneSettings, data.get("inference"), f"{where}: inference"))
