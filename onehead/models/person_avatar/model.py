"""The networks of one DiffusionAvatar (paper 000, section 3), built from diffusers parts.

    control = model.control(params, K, world_to_cam)      # buffers + TriPlane + ambient features
    out = model.predict(latents, t, control, expression)  # ControlNet + UNet with expression attention

The tracked head mesh (the avatar's own shape, the frame's motion) is rasterized at the target
camera into canonical coordinates, depth, normals and a mask (onehead.render.gbuffers).
Learnable TriPlane features are looked up at the canonical coordinates, an ambient feature map
at each pixel's viewing direction (the background, hair and shoulders beside the mesh; onehead's
stand-in for NPHM's ambient dimensions, which FLAME-format heads do not have). All of it goes
to a ControlNet (diffusers' ControlNetModel.from_unet) on the denoising UNet, whose down- and
up-block cross-attention layers also read expression tokens (onehead.models.expression_attention).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from onehead.errors import ConfigError
from onehead.head import HEAD_PARAM_NAMES
from onehead.models.autoencoder import PixelShuffleAutoencoder
from onehead.models.expression_attention import ExpressionTokens, attach_expression_attention
from onehead.models.person_avatar.config import PersonAvatarConfig
from onehead.models.schedule import zero_snr_schedule
from onehead.render.volume import triplane_features

AMBIENT_EXTENT = 0.6  # viewing directions (x/z, y/z) in [-0.6, 0.6] map onto the ambient map


def viewing_directions(K: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, H, W, 2): x/z and y/z of each pixel centre's ray in camera coordinates (pixel centres
    at integer coordinates, as in onehead.camera)."""
    v, u = torch.meshgrid(torch.arange(height, dtype=K.dtype, device=K.device),
                          torch.arange(width, dtype=K.dtype, device=K.device), indexing="ij")
    fx, fy, cx, cy = (K[:, i, j].view(-1, 1, 1) for i, j in ((0, 0), (1, 1), (0, 2), (1, 2)))
    return torch.stack([(u - cx) / fx, (v - cy) / fy], -1)


class PersonAvatarModel(nn.Module):
    """Every network of one avatar. `head` (default: load_head_model(config.head_model)) is copied."""

    def __init__(self, config: PersonAvatarConfig, head=None, *, unet=None, controlnet=None, codec=None):
        super().__init__()
        from diffusers import ControlNetModel, UNet2DConditionModel

        from onehead.head import load_head_model

        self.config = config
        self.head = copy.deepcopy(head) if head is not None else load_head_model(config.head_model)
        self.codec = codec if codec is not None else _pixel_codec(config)
        factor = self.codec.factor
        if config.resolution % (factor * 4):
            raise ConfigError(f"resolution {config.resolution} must be a multiple of {factor * 4}")
        if unet is None:
            unet = UNet2DConditionModel(sample_size=config.resolution // factor,
                                        in_channels=self.codec.latent_channels,
                                        out_channels=self.codec.latent_channels, **config.unet)
        if controlnet is None:  # a copy of the UNet's encoder, its outputs zero-initialised
            controlnet = ControlNetModel.from_unet(unet, conditioning_channels=config.control_channels,
                                                   conditioning_embedding_out_channels=tuple(config.conditioning_channels))
        self.unet, self.controlnet = unet, controlnet
        C, R = config.triplane_channels, config.triplane_resolution
        self.triplanes = nn.Parameter(torch.randn(3, C, R, R) * 0.1)
        self.ambient = nn.Parameter(torch.randn(C, R, R) * 0.1)
        width = unet.config.cross_attention_dim
        code_size = self.head.num_expression + 3  # expression and jaw pose
        self.expression_encoder = nn.Linear(code_size, config.expression_tokens * width)
        self.context = nn.Parameter(torch.zeros(1, 1, width))  # the (empty) prompt of the UNet
        self.tokens = ExpressionTokens()
        self.expression_layers = attach_expression_attention(self.unet, self.tokens)
        # the person: identity shape and a home view (the camera expression transfer renders at)
        self.register_buffer("shape", torch.zeros(self.head.num_shape))
        self.register_buffer("home_K", torch.eye(3))
        self.register_buffer("home_world_to_cam", torch.eye(4))
        self.register_buffer("home_pose", torch.zeros(6))  # global rotation (axis-angle), translation
        self.codec.requires_grad_(False)
        self.head.requires_grad_(False)
        from diffusers import DDPMScheduler

        schedule = DDPMScheduler(**self.scheduler_config()).alphas_cumprod.float()
        self.register_buffer("alphas_cumprod", schedule, persistent=False)  # the noise schedule, for x0 -> v

    # ------------------------------------------------------------------ parts and devices
    def trainable_parts(self) -> dict[str, list[nn.Parameter]]:
        """Parameter groups by role: the paper trains ControlNet and expression layers at 1e-4,
        the TriPlanes and ambient map at 1e-2; the UNet only where config.train_unet."""
        parts = {"controlnet": [*self.controlnet.parameters(), *self.expression_layers.parameters(),
                                *self.expression_encoder.parameters(), self.context],
                 "features": [self.triplanes, self.ambient]}
        if self.config.train_unet:
            parts["unet"] = list(self.unet.parameters())
        return parts

    def set_trainable(self) -> None:
        self.requires_grad_(False)
        for params in self.trainable_parts().values():
            for p in params:
                p.requires_grad_(True)

    @property
    def device(self) -> torch.device:
        return self.triplanes.device

    def scheduler_config(self) -> dict:
        """The diffusers scheduler arguments (onehead.models.schedule, shared with the Animator)."""
        return zero_snr_schedule(self.config)

    # ------------------------------------------------------------------ the inputs
    def head_params(self, motion: dict) -> dict:
        """Motion parameters (B, ...) with the avatar's own shape."""
        batch = motion["expression"].shape[0]
        params = {k: motion[k].to(self.device, torch.float32) for k in HEAD_PARAM_NAMES if k != "shape"}
        params["expression"] = _fit(params["expression"], self.head.num_expression)
        params["shape"] = self.shape.expand(batch, -1)
        return params

    def buffers(self, motion: dict, K: torch.Tensor, world_to_cam: torch.Tensor, size: int | None = None):
        """The rasterized mesh buffers (onehead.render.gbuffers.GBuffers) at the cameras (B, 3, 3), (B, 4, 4)."""
        from onehead.render.gbuffers import render_gbuffers

        size = size or self.config.resolution
        with torch.no_grad():
            vertices = self.head(**self.head_params(motion)).vertices
            return render_gbuffers(self.head, vertices, K.to(self.device), world_to_cam.to(self.device), size, size)

    def control(self, motion: dict, K: torch.Tensor, world_to_cam: torch.Tensor) -> torch.Tensor:
        """(B, control_channels, S, S): canonical, depth, normals, mask, TriPlane and ambient features."""
        g = self.buffers(motion, K, world_to_cam)
        batch, _, height, width = g.mask.shape
        bounds = self.config.triplane_bounds
        points = g.canonical.flatten(2).transpose(1, 2)
        planes = self.triplanes[None].expand(batch, -1, -1, -1, -1)
        surface = triplane_features(planes, points, bounds, "concat").transpose(1, 2).reshape(batch, -1, height, width)
        directions = viewing_directions(K.to(self.device), height, width) / AMBIENT_EXTENT
        ambient = F.grid_sample(self.ambient[None].expand(batch, -1, -1, -1), directions.to(self.ambient.dtype),
                                mode="bilinear", padding_mode="border", align_corners=False)
        return torch.cat([g.canonical / bounds, g.depth, g.normals, g.mask, surface * g.mask, ambient], 1)

    def expression_code(self, motion: dict) -> torch.Tensor:
        """(B, E + 3): the expression coefficients and the jaw pose."""
        expression = _fit(motion["expression"].to(self.device, torch.float32), self.head.num_expression)
        return torch.cat([expression, motion["jaw_pose"].to(self.device, torch.float32)], -1)

    # ------------------------------------------------------------------ the networks
    def predict(self, latents: torch.Tensor, timesteps: torch.Tensor, control: torch.Tensor,
                code: torch.Tensor) -> torch.Tensor:
        """The UNet output for latents (B, c, h, w) at timesteps (B,) under control and expression codes."""
        batch = latents.shape[0]
        width = self.context.shape[-1]
        context = self.context.expand(batch, -1, -1).to(latents.dtype)
        down, mid = self.controlnet(latents, timesteps, encoder_hidden_states=context,
                                    controlnet_cond=control.to(latents.dtype), return_dict=False)
        self.tokens.value = self.expression_encoder(code).view(batch, self.config.expression_tokens, width)
        try:
            out = self.unet(latents, timesteps, encoder_hidden_states=context, down_block_additional_residuals=down,
                            mid_block_additional_residual=mid).sample
        finally:
            self.tokens.value = None
        if self.config.parameterization == "x0" and self.config.objective == "diffusion":
            out = self.velocity_from_clean(latents, out, timesteps)
        return out

    def velocity_from_clean(self, noisy: torch.Tensor, clean: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """v of noisy latents x_t whose clean latents are `clean`: (sqrt(a) x_t - x_0) / sqrt(1 - a)."""
        alpha = self.alphas_cumprod.to(noisy.device)[timesteps.long()].view(-1, 1, 1, 1).to(noisy.dtype)
        return (alpha.sqrt() * noisy - clean) / (1 - alpha).clamp(min=1e-6).sqrt()

    def regress(self, control: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        """objective "direct": the clean latents in one pass (zero input at the last timestep)."""
        batch = control.shape[0]
        size = self.config.resolution // self.codec.factor
        latents = torch.zeros(batch, self.codec.latent_channels, size, size, device=self.device, dtype=control.dtype)
        timesteps = torch.full((batch,), self.config.num_train_timesteps - 1, device=self.device)
        return self.predict(latents, timesteps, control, code)


def _pixel_codec(config: PersonAvatarConfig):
    if config.latent == "pixel":
        return PixelShuffleAutoencoder(config.pixel_factor)
    raise ConfigError("latent 'vae' needs sd_path (a local diffusers Stable Diffusion folder) or a model folder")


def _fit(values: torch.Tensor, size: int) -> torch.Tensor:
    """Truncate or zero-pad the last axis (expressions of a head model with another basis size)."""
    if values.shape[-1] >= size:
        return values[..., :size]
    return F.pad(values, (0, size - values.shape[-1]))
