"""The networks of the Gaussian-embedding diffusion family (paper 003, section 3).

    posed meshes -> UV Gaussian field splatted at the camera (control maps) -> pose guider -> + after conv_in
    reference latents -> ReferenceNet (once per clip) -> self-attention bank read by the denoising UNet
    (correct_warp) the filled mesh warp of the reference -> warp encoder -> + after conv_in; the
        diffusion variable is the latent correction of that warp
    domain token -> cross-attention context; temporal layers after every transformer block

Built from diffusers parts (UNet2DConditionModel for both UNets, AutoencoderKL or an exact
pixel-space stand-in). Behaviour changes through attention processors and hooks, never a UNet fork.
Sampling lives in onehead.pipelines (sampler, gaussian_diffusion); the training loss beside the
training code (onehead.training.gaussian_diffusion).
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from onehead.camera import project, scale_intrinsics
from onehead.data.sequence import DOMAINS
from onehead.errors import CheckpointError, ConfigError
from onehead.head import HEAD_PARAM_NAMES
from onehead.models.autoencoder import PixelShuffleAutoencoder, VaeCodec
from onehead.models.conditioning import DomainTokens, PoseGuider
from onehead.models.gaussian_diffusion.config import GaussianDiffusionConfig
from onehead.models.gaussian_field import UVGaussianField
from onehead.models.reference_attention import ReferenceBank, attach_reference_attention
from onehead.models.schedule import zero_snr_schedule
from onehead.models.temporal import TemporalLayers
from onehead.render.warp import carry_foreground, fill_warp, mouth_interior_colours, mouth_mask, warp_reference

WARP_CHANNELS = 4  # warp guidance: the warped reference (3) and where it is visible (1)
WEIGHTS_FILE = "animator.safetensors"  # onehead's own parts; the UNets and VAE in diffusers folders
OWN_PARTS = ("gaussian_field", "pose_guider", "domain_tokens", "temporal")  # plus warp_encoder (correct_warp)
MASK_CHANNELS = 2  # what the warp encoder sees beside the warp's latents: visible and covered


class GaussianDiffusionModel(nn.Module):
    """Every network of the family. `head` (default: load_head_model(config.head_model)) is copied,
    so the model owns its head-model instance."""

    def __init__(self, config: GaussianDiffusionConfig, head=None, *, denoising_unet=None, reference_unet=None,
                 codec=None):
        super().__init__()
        from diffusers import UNet2DConditionModel

        from onehead.head import load_head_model

        self.config = config
        # its own head-model instance: moving or training this model never touches the caller's
        self.head = copy.deepcopy(head) if head is not None else load_head_model(config.head_model)
        self.codec = codec if codec is not None else build_codec(config)
        factor = self.codec.factor
        if config.resolution % (factor * 4):
            raise ConfigError(f"resolution {config.resolution} must be a multiple of {factor * 4}")
        if denoising_unet is None:
            denoising_unet = UNet2DConditionModel(
                sample_size=config.resolution // factor, in_channels=self.codec.latent_channels,
                out_channels=self.codec.latent_channels, **config.unet)
            if config.correct_warp:  # a new model predicts no correction: it starts as the mesh warp
                nn.init.zeros_(denoising_unet.conv_out.weight)
                nn.init.zeros_(denoising_unet.conv_out.bias)
        if reference_unet is None:
            reference_unet = UNet2DConditionModel.from_config(denoising_unet.config)
            reference_unet.load_state_dict(denoising_unet.state_dict())
        self.denoising_unet, self.reference_unet = denoising_unet, reference_unet
        unet_cfg = denoising_unet.config
        self.gaussian_field = UVGaussianField.from_head(self.head, config.uv_resolution, config.control_channels,
                                                        normal_offset=config.normal_offset)
        guide_channels = config.control_channels + (WARP_CHANNELS if config.warp_guidance else 0)
        latent_size = config.resolution // factor
        if config.control_size % latent_size:
            raise ConfigError(f"control_resolution {config.control_size} must be a multiple of the latent size "
                              f"{latent_size}")
        self.pose_guider = PoseGuider(guide_channels, unet_cfg.block_out_channels[0],
                                      config.control_size // latent_size, tuple(config.guider_channels))
        self.warp_encoder = None
        if config.correct_warp:  # zero-initialised like the pose guider's output
            self.warp_encoder = nn.Conv2d(self.codec.latent_channels + MASK_CHANNELS * factor ** 2,
                                          unet_cfg.block_out_channels[0], 3, padding=1)
            nn.init.zeros_(self.warp_encoder.weight)
            nn.init.zeros_(self.warp_encoder.bias)
        self.domain_tokens = DomainTokens(unet_cfg.cross_attention_dim, config.image_embed_dim)
        self.bank = ReferenceBank()
        self.shared_layers = attach_reference_attention(self.reference_unet, self.denoising_unet, self.bank)
        self.temporal = TemporalLayers(self.denoising_unet, config.temporal_heads, clips=self.bank.clips)
        self.stage = 1
        self.codec.requires_grad_(False)

    @property
    def own_parts(self) -> tuple[str, ...]:
        """onehead's own parts, saved in WEIGHTS_FILE."""
        return OWN_PARTS + (("warp_encoder",) if self.warp_encoder is not None else ())

    # ------------------------------------------------------------------ construction and files
    @classmethod
    def from_config(cls, config: GaussianDiffusionConfig, head=None) -> "GaussianDiffusionModel":
        """Random weights, or (config.sd_path) both UNets and the VAE from a local Stable Diffusion folder."""
        if config.sd_path is None:
            return cls(config, head)
        from diffusers import AutoencoderKL, UNet2DConditionModel

        root = Path(config.sd_path)
        for part in ("unet", "vae"):
            if not (root / part / "config.json").is_file():
                raise CheckpointError(f"{root}: not a diffusers Stable Diffusion folder (no {part}/config.json)")
        unet = UNet2DConditionModel.from_pretrained(root / "unet")
        reference = UNet2DConditionModel.from_pretrained(root / "unet")
        vae = AutoencoderKL.from_pretrained(root / "vae")
        return cls(config, head, denoising_unet=unet, reference_unet=reference, codec=VaeCodec(vae))

    def save_weights(self, folder: Path, dtype: torch.dtype | None = None) -> None:
        """Both UNets (and the VAE) as diffusers folders, onehead's parts in one safetensors file.
        dtype (e.g. torch.float16): store floating-point weights in it (loading gives float32)."""
        from safetensors.torch import save_file

        from onehead.models.gaussian_diffusion.config import KIND

        def stored(net):
            if dtype is None:
                return net
            copied = copy.deepcopy(net)
            for tensor in [*copied.parameters(), *copied.buffers()]:  # not .to(): diffusers warns on it
                if tensor.is_floating_point():
                    tensor.data = tensor.data.to(dtype)
            return copied

        stored(self.denoising_unet).save_pretrained(folder / "denoising_unet", safe_serialization=True)
        stored(self.reference_unet).save_pretrained(folder / "reference_unet", safe_serialization=True)
        if isinstance(self.codec, VaeCodec):
            stored(self.codec.vae).save_pretrained(folder / "vae", safe_serialization=True)

        def tensor(v):
            v = v.detach().contiguous().cpu()
            return v.to(dtype) if dtype is not None and v.is_floating_point() else v

        state = {f"{name}.{k}": tensor(v) for name in self.own_parts
                 for k, v in getattr(self, name).state_dict().items()}
        save_file(state, folder / WEIGHTS_FILE, metadata={"kind": KIND})

    @classmethod
    def load_weights(cls, folder: Path, config: GaussianDiffusionConfig, head=None) -> "GaussianDiffusionModel":
        """The model saved by save_weights. Pose-guider inputs the folder lacks (a config grown with
        warp_guidance) start with zero weights: the model computes exactly what the folder's did."""
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        parts = ["denoising_unet", "reference_unet"] + (["vae"] if config.latent == "vae" else [])
        for part in parts:
            if not (folder / part / "config.json").is_file():
                raise CheckpointError(f"{folder}: incomplete model folder ({part}/config.json is missing)")
        if not (folder / WEIGHTS_FILE).is_file():
            raise CheckpointError(f"{folder}: incomplete model folder ({WEIGHTS_FILE} is missing)")
        def read(part: str, load):
            try:
                return load(folder / part)
            except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
                reason = str(exc).splitlines()[0][:200]
                raise CheckpointError(f"{folder / part}: corrupt or truncated ({reason})") from None

        unet = read("denoising_unet", UNet2DConditionModel.from_pretrained)
        reference = read("reference_unet", UNet2DConditionModel.from_pretrained)
        codec = VaeCodec(read("vae", AutoencoderKL.from_pretrained)) if config.latent == "vae" else None
        state = read(WEIGHTS_FILE, load_file)
        model = cls(config, head, denoising_unet=unet, reference_unet=reference, codec=codec)
        for name in model.own_parts:
            part = {k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + ".")}
            if name == "pose_guider":
                part = _pad_inputs(part, model.pose_guider)
            try:
                getattr(model, name).load_state_dict(part)
            except RuntimeError as exc:
                reason = str(exc).splitlines()[0][:200]
                raise CheckpointError(f"{folder}: {name} does not fit this head model or config ({reason})") from None
        model.temporal.enabled = not model.temporal.untrained()  # untrained layers are skipped: exactly the same
        return model

    # ------------------------------------------------------------------ training set-up
    def set_stage(self, stage: int) -> None:
        """Stage 1: everything but the temporal layers trains (they are off). Stage 2: only they train."""
        if stage not in (1, 2):
            raise ConfigError(f"stage must be 1 or 2, got {stage}")
        self.stage = stage
        for name, part in self.trainable_parts().items():
            part.requires_grad_((name == "temporal") == (stage == 2))
        self.codec.requires_grad_(False)
        self.temporal.enabled = stage == 2

    def trainable_parts(self) -> dict[str, nn.Module]:
        parts = {"gaussian_field": self.gaussian_field, "pose_guider": self.pose_guider,
                 "reference_unet": self.reference_unet, "denoising_unet": self.denoising_unet,
                 "domain_tokens": self.domain_tokens, "temporal": self.temporal}
        if self.warp_encoder is not None:
            parts["warp_encoder"] = self.warp_encoder
        return parts

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def enable_gradient_checkpointing(self) -> None:
        self.denoising_unet.enable_gradient_checkpointing()
        self.reference_unet.enable_gradient_checkpointing()

    # ------------------------------------------------------------------ the network pieces
    @property
    def device(self) -> torch.device:
        return self.pose_guider.out.weight.device

    def scheduler_config(self) -> dict:
        """The diffusers scheduler arguments (onehead.models.schedule)."""
        return zero_snr_schedule(self.config)

    def context(self, domain: torch.Tensor | str, clips: int = 1) -> torch.Tensor:
        """Cross-attention context (B, 1, D) for domain labels (B,) or one domain name."""
        if isinstance(domain, str):
            if domain not in DOMAINS:
                raise ConfigError(f"domain must be one of {', '.join(DOMAINS)}, got {domain!r}")
            domain = torch.full((clips,), DOMAINS.index(domain))
        return self.domain_tokens(domain.to(self.device))

    def control_maps(self, params: dict, K: torch.Tensor, world_to_cam: torch.Tensor,
                     reference: "ReferenceInputs | None" = None, chunk: int = 32) -> torch.Tensor:
        """Head-model parameters (N, ...) at cameras (N, 3, 3), (N, 4, 4) of the output resolution ->
        the splatted Gaussian features (N, C, s, s) at the control resolution s. With warp_guidance
        (s is then the output size), the reference's image warped to each target (in [-1, 1], 0
        where not visible) and its visibility are appended: (N, C + 4, s, s)."""
        if self.config.warp_guidance and reference is None:
            raise ConfigError("this model uses warp guidance: control_maps needs the reference")
        size, resolution = self.config.control_size, self.config.resolution
        K_control = K if size == resolution else scale_intrinsics(K, (resolution, resolution), (size, size))
        maps = []
        for start in range(0, K.shape[0], chunk):
            rows = slice(start, start + chunk)
            vertices = self.head(**{k: v[rows] for k, v in params.items()}).vertices
            features = self.gaussian_field.splat(vertices, K_control[rows], world_to_cam[rows], size, size).features
            if self.config.warp_guidance:
                features = torch.cat([features, self._warp_maps(reference.rows(rows), vertices, K[rows],
                                                                world_to_cam[rows])], 1)
            maps.append(features)
        return torch.cat(maps)

    def warp_base(self, reference: "ReferenceInputs", params: dict, K: torch.Tensor, world_to_cam: torch.Tensor,
                  chunk: int = 32, mouth_interior: bool = False, pin_neck: bool = False) -> "WarpBase":
        """What a correct_warp model corrects: the reference warped to each target (N, ...) by the
        head model and filled (onehead.render.warp.fill_warp; with the reference's foreground, its
        hair and hat move with the head), with where it is visible and covered. mouth_interior: the
        inside of an open mouth that the reference does not show is dark (fill_warp's `mouth`).
        pin_neck: with a foreground (a photo, whose torso stays), the neck's base stays where the
        reference has it and the neck stretches (HeadModel.neck_base_weights)."""
        size = self.config.resolution
        pinned = self.head.neck_base_weights()[None, :, None] if pin_neck and reference.foreground is not None else None
        parts = []
        with torch.no_grad():
            for start in range(0, K.shape[0], chunk):
                rows = slice(start, start + chunk)
                ref = reference.rows(rows)
                image = ref.image
                if image.shape[-1] != size:
                    raise ConfigError(f"the reference is {image.shape[-1]} px; this model needs {size} px")
                posed = self.head(**{k: v[rows] for k, v in params.items()})
                own = self.head(**ref.params)  # the reference's own posed head
                target = posed.vertices if pinned is None else posed.vertices + pinned * (own.vertices - posed.vertices)
                warp = warp_reference(image, self.head.faces, own.vertices, ref.K,
                                      ref.world_to_cam, target, K[rows], world_to_cam[rows],
                                      forward=ref.foreground is not None)
                mouth = inside = None
                if mouth_interior:
                    lips, _ = project(posed.landmarks68, K[rows], world_to_cam[rows])
                    mouth = mouth_mask(lips, size, size)
                    own_lips, _ = project(own.landmarks68, ref.K, ref.world_to_cam)
                    inside = mouth_interior_colours(image, own_lips, lips)
                shared = warp.reference_covered[:1] if image.shape[0] == 1 else warp.reference_covered
                carry = moved = None
                if ref.foreground is not None:
                    carry = carry_foreground(image, warp, ref.foreground)
                    (_, landed), left = carry
                    moved = torch.maximum(landed, left.expand_as(landed))
                parts.append(WarpBase(fill_warp(image, warp, foreground=ref.foreground, mouth=mouth,
                                                mouth_colours=inside, carry=carry, staying=ref.staying),
                                      warp.visible, warp.covered, shared, moved))
        reference_covered = (parts[0].reference_covered if reference.image.shape[0] == 1
                             else torch.cat([b.reference_covered for b in parts]))
        moved = None if parts[0].moved is None else torch.cat([b.moved for b in parts])
        return WarpBase(torch.cat([b.image for b in parts]), torch.cat([b.visible for b in parts]),
                        torch.cat([b.covered for b in parts]), reference_covered, moved)

    def warp_condition(self, base: "WarpBase") -> tuple[torch.Tensor, torch.Tensor]:
        """(the warp's latents (N, c, h, w), the warp encoder's input (N, c + 2 f^2, h, w))."""
        latents = self.codec.encode(base.image.to(self.device) * 2 - 1)
        masks = F.pixel_unshuffle(torch.cat([base.visible, base.covered], 1).to(latents), self.codec.factor)
        return latents, torch.cat([latents, masks], 1)

    def batch_reference(self, batch: dict) -> "ReferenceInputs":
        """A dataset batch's references, one row per target frame (B * T rows)."""
        frames = batch["K"].shape[1]
        return ReferenceInputs(batch["reference"].to(self.device),
                               {k: batch["reference_params"][k].to(self.device) for k in HEAD_PARAM_NAMES},
                               batch["reference_K"].to(self.device),
                               batch["reference_world_to_cam"].to(self.device)).repeat(frames)

    def batch_targets(self, batch: dict) -> tuple[dict, torch.Tensor, torch.Tensor]:
        """A dataset batch's target parameters and cameras, flattened to B * T rows."""
        return (flatten_params(batch["target_params"], self.device), batch["K"].flatten(0, 1).to(self.device),
                batch["world_to_cam"].flatten(0, 1).to(self.device))

    def batch_control(self, batch: dict) -> torch.Tensor:
        """Control maps (B * T, C, H, W) of a dataset batch's target parameters at its cameras
        (items of onehead.data.datasets.ReenactmentDataset, collated)."""
        reference = self.batch_reference(batch) if self.config.warp_guidance else None
        return self.control_maps(*self.batch_targets(batch), reference)

    def batch_warp(self, batch: dict) -> "WarpBase | None":
        """The warp base (B * T rows) of a dataset batch; None when the model does not correct a warp."""
        if not self.config.correct_warp:
            return None
        return self.warp_base(self.batch_reference(batch), *self.batch_targets(batch))

    def _warp_maps(self, reference: "ReferenceInputs", vertices, K, world_to_cam) -> torch.Tensor:
        with torch.no_grad():
            ref_vertices = self.head(**reference.params).vertices
            warp = warp_reference(reference.image, self.head.faces, ref_vertices, reference.K,
                                  reference.world_to_cam, vertices.detach(), K, world_to_cam)
        return torch.cat([(warp.image * 2 - 1) * warp.visible, warp.visible], 1)

    def run_reference(self, reference_latents: torch.Tensor, context: torch.Tensor) -> None:
        """The ReferenceNet pass (t = 0) that fills the shared-attention bank for one batch of clips.
        The bank stays filled until the next pass: the denoising calls of every step and window read
        it, and gradient checkpointing recomputes them during backward."""
        self.bank.clear()
        timestep = torch.zeros(reference_latents.shape[0], device=reference_latents.device, dtype=torch.long)
        self.reference_unet(reference_latents, timestep, encoder_hidden_states=context)
        self.bank.writes += 1

    def denoise(self, latents, timesteps, context, control, warp=None) -> torch.Tensor:
        """One denoising-UNet call on (clips x frames) latents with their control maps (and, for a
        correct_warp model, the warp encoder's input from warp_condition); the clips are those of
        the last run_reference (the temporal layers split the batch by them)."""
        residual = self.pose_guider(control.to(latents.dtype))
        if self.warp_encoder is not None:
            if warp is None:
                raise ConfigError("this model corrects the mesh warp: denoise needs warp (see warp_condition)")
            residual = residual + self.warp_encoder(warp.to(latents.dtype))
        with _added_after(self.denoising_unet.conv_in, residual):
            return self.denoising_unet(latents, timesteps, encoder_hidden_states=context).sample


@dataclass
class WarpBase:
    """The filled mesh warp of the reference to N target frames (model.warp_base)."""

    image: torch.Tensor  # (N, 3, H, W) in [0, 1]
    visible: torch.Tensor  # (N, 1, H, W) 1 where the head covers the pixel and the reference sees it
    covered: torch.Tensor  # (N, 1, H, W) 1 where the head covers the pixel
    reference_covered: torch.Tensor  # (N or 1, 1, H, W) 1 where the head covers the reference
    moved: torch.Tensor | None = None  # (N, 1, H, W) where the carried foreground left and landed


@dataclass
class ReferenceInputs:
    """The reference as control_maps' warp guidance needs it. One row serves every frame."""

    image: torch.Tensor  # (1 or N, 3, H, W) in [0, 1]
    params: dict  # head-model parameters, each (1 or N, ...)
    K: torch.Tensor  # (1 or N, 3, 3)
    world_to_cam: torch.Tensor  # (1 or N, 4, 4)
    foreground: torch.Tensor | None = None  # (1 or N, 1, H, W) what of a photo moves with the head
    staying: torch.Tensor | None = None  # (1 or N, 1, H, W) what of the person stays beside it (split_foreground)

    def rows(self, rows: slice) -> "ReferenceInputs":
        if self.image.shape[0] == 1:
            return self
        return ReferenceInputs(self.image[rows], {k: v[rows] for k, v in self.params.items()},
                               self.K[rows], self.world_to_cam[rows],
                               None if self.foreground is None else self.foreground[rows],
                               None if self.staying is None else self.staying[rows])

    def repeat(self, times: int) -> "ReferenceInputs":
        """Each row repeated `times` times (one per frame of its clip)."""
        def rep(x):
            return None if x is None else x.repeat_interleave(times, 0)
        return ReferenceInputs(rep(self.image), {k: rep(v) for k, v in self.params.items()}, rep(self.K),
                               rep(self.world_to_cam), rep(self.foreground), rep(self.staying))


@contextlib.contextmanager
def _added_after(module: nn.Module, residual: torch.Tensor):
    """`residual` is added to module's output during the block (diffusers has no argument for a
    residual after conv_in, so a hook that lives only for this call carries it)."""
    handle = module.register_forward_hook(lambda _module, _inputs, output: output + residual)
    try:
        yield
    finally:
        handle.remove()


def build_codec(config: GaussianDiffusionConfig):
    if config.latent == "pixel":
        return PixelShuffleAutoencoder(config.pixel_factor)
    raise ConfigError("latent 'vae' needs sd_path (a local diffusers Stable Diffusion folder) or a model folder")


def flatten_params(params: dict, device) -> dict:
    """Dataset parameters (B, T, ...) -> (B * T, ...)."""
    return {k: params[k].flatten(0, 1).to(device) for k in HEAD_PARAM_NAMES}


def _pad_inputs(state: dict, guider: nn.Module) -> dict:
    """A pose-guider state with fewer input channels than `guider`: zero weights for the new ones."""
    first = guider.body[0].weight
    weight = state.get("body.0.weight")
    if weight is not None and weight.shape[1] < first.shape[1] and weight.shape[0] == first.shape[0]:
        padded = torch.zeros_like(first)
        padded[:, :weight.shape[1]] = weight
        state = {**state, "body.0.weight": padded}
    return state
