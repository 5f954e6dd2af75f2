"""The Animator: one-shot Gaussian-embedding diffusion (paper 003, section 3).

    driving frames -> head-model parameters (shape from the reference) -> posed meshes
      -> UV Gaussian field splatted at the camera (control maps) -> pose guider -> + after conv_in
    reference image -> latents -> ReferenceNet (once per clip) -> self-attention bank
    domain token ("real" at inference) -> cross-attention context
    noise (the same for every frame) -> denoising UNet (+ temporal layers), v-prediction, DDIM
      with trailing timesteps on a zero-terminal-SNR schedule, overlapping temporal windows -> frames

Built from diffusers parts: UNet2DConditionModel for both UNets, AutoencoderKL (or an exact
pixel-space stand-in for `tiny`), DDPMScheduler / DDIMScheduler. Behaviour is changed through
attention processors (onehead.models.reference_attention) and hooks (pose guider residual,
temporal layers), never by forking the UNet.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from onehead.errors import CheckpointError, ConfigError
from onehead.models.autoencoder import PixelShuffleAutoencoder, VaeCodec
from onehead.models.conditioning import DOMAINS, DomainTokens, PoseGuider
from onehead.models.gaussian_field import UVGaussianField
from onehead.models.reference_attention import ReferenceBank, attach_reference_attention
from onehead.models.temporal import TemporalLayers
from onehead.render.warp import warp_reference

KIND = "onehead-animator"
WARP_CHANNELS = 4  # warp guidance: the warped reference (3) and where it is visible (1)
CONFIG_FILE = "animator.json"
WEIGHTS_FILE = "animator.safetensors"
PARAM_KEYS = ("shape", "expression", "global_pose", "neck_pose", "jaw_pose", "eye_pose", "translation")

TINY_UNET = dict(
    layers_per_block=1, block_out_channels=(32, 64, 64),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    cross_attention_dim=64, attention_head_dim=8, norm_num_groups=16,
)


@dataclass
class AnimatorConfig:
    """Everything that defines an Animator; saved beside its weights."""

    preset: str = "tiny"
    resolution: int = 64  # output frames are resolution x resolution
    head_model: str = "basic"  # the head model the Gaussian field is anchored on ("basic" or "flame")
    uv_resolution: int = 64  # UV grid of the Gaussian field
    control_channels: int = 8  # feature channels of the control maps (the paper uses 8)
    normal_offset: bool = True  # learnable offset of each Gaussian along its triangle's normal
    latent: str = "pixel"  # "pixel" (exact space-to-depth, tiny) or "vae" (Stable Diffusion's VAE)
    pixel_factor: int = 2  # space-to-depth factor of the pixel latent space
    sd_path: str | None = None  # base: a local diffusers-format Stable Diffusion folder
    unet: dict = field(default_factory=lambda: dict(TINY_UNET))  # UNet2DConditionModel arguments (no sd_path)
    guider_channels: tuple = (16, 32, 64, 128)
    temporal_heads: int = 4
    image_embed_dim: int | None = None  # size of a user-supplied image embedding (optional extra token)
    num_train_timesteps: int = 1000
    beta_schedule: str = "scaled_linear"
    beta_start: float = 0.00085
    beta_end: float = 0.012
    default_steps: int = 8  # DDIM steps when animate() is not told
    window: int = 16  # frames per temporal window
    window_overlap: int = 4  # frames shared by neighbouring windows (blended)
    initial_latent: str = "noise"  # "noise", or "zeros": with zero terminal SNR the first step's input
    # carries no information about the image, so a zero start gives the network's posterior-mean
    # prediction (the best PSNR in one step) without passing noise through an undertrained model
    inference_domain: str = "real"  # domain token at inference (the paper: real); a model trained on
    # synthetic data only has an untrained "real" token and sets "synthetic"
    background: str = "generated"  # "generated", or "reference": outside the head region the output
    # is the reference image (paste-back; right for a static camera and backdrop)
    background_margin: float = 0.08  # the head region grows by this fraction of the image size
    warp_guidance: bool = False  # onehead's addition to paper 003: the pose guider also sees the
    # reference warped by the head model's motion (onehead.render.warp) and where it is visible

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "AnimatorConfig":
        """AnimatorConfig.from_preset("tiny") or ("base", sd_path=DIR), with any field overridden."""
        if name == "tiny":
            base = cls()
        elif name == "base":
            base = cls(preset="base", resolution=512, uv_resolution=256, latent="vae", unet={},
                       guider_channels=(16, 32, 96, 256), default_steps=10, window=14, window_overlap=4)
        else:
            raise ConfigError(f"unknown Animator preset {name!r}; use 'tiny' or 'base'")
        return cls.from_dict({**asdict(base), **overrides})

    @classmethod
    def from_dict(cls, data: dict) -> "AnimatorConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known - {"kind"}
        if unknown:
            raise ConfigError(f"unknown Animator config keys: {', '.join(sorted(unknown))}")
        values = {k: v for k, v in data.items() if k in known}
        if "guider_channels" in values:
            values["guider_channels"] = tuple(values["guider_channels"])
        return cls(**values)

    def to_dict(self) -> dict:
        return {"kind": KIND, **asdict(self)}


@dataclass
class AnimationResult:
    frames: torch.Tensor  # (T, 3, H, W) in [0, 1]
    control_maps: torch.Tensor  # (T, C, H, W) the splatted Gaussian features
    tracking: object  # onehead.data.tracking_file.Tracking of the rendered motion (output camera)
    reference: torch.Tensor  # (3, H, W) the reference as the model saw it (cropped, resized)
    driving_frames: np.ndarray | None = None  # (T, H, W, 3) uint8 when the driving input was a video


# --------------------------------------------------------------------------- the model

class Animator(nn.Module):
    def __init__(self, config: AnimatorConfig, head=None, *, denoising_unet=None, reference_unet=None,
                 codec=None):
        super().__init__()
        from diffusers import UNet2DConditionModel

        from onehead.head.model import load_head_model

        self.config = config
        self.head = head if head is not None else load_head_model(config.head_model)
        self.codec = codec if codec is not None else _build_codec(config)
        factor = self.codec.factor
        if config.resolution % (factor * 4):
            raise ConfigError(f"resolution {config.resolution} must be a multiple of {factor * 4}")
        if denoising_unet is None:
            denoising_unet = UNet2DConditionModel(
                sample_size=config.resolution // factor, in_channels=self.codec.latent_channels,
                out_channels=self.codec.latent_channels, **config.unet)
        if reference_unet is None:
            reference_unet = UNet2DConditionModel.from_config(denoising_unet.config)
            reference_unet.load_state_dict(denoising_unet.state_dict())
        self.denoising_unet, self.reference_unet = denoising_unet, reference_unet
        unet_cfg = denoising_unet.config
        self.gaussian_field = UVGaussianField.from_head(self.head, config.uv_resolution, config.control_channels,
                                                        normal_offset=config.normal_offset)
        guide_channels = config.control_channels + (WARP_CHANNELS if config.warp_guidance else 0)
        self.pose_guider = PoseGuider(guide_channels, unet_cfg.block_out_channels[0], factor,
                                      tuple(config.guider_channels))
        self.domain_tokens = DomainTokens(unet_cfg.cross_attention_dim, config.image_embed_dim)
        self.bank = ReferenceBank()
        self.shared_layers = attach_reference_attention(self.reference_unet, self.denoising_unet, self.bank)
        self.temporal = TemporalLayers(self.denoising_unet, config.temporal_heads)
        self._control_residual = None
        self.denoising_unet.conv_in.register_forward_hook(self._add_control)
        self.scheduler_config = dict(
            num_train_timesteps=config.num_train_timesteps, beta_schedule=config.beta_schedule,
            beta_start=config.beta_start, beta_end=config.beta_end, prediction_type="v_prediction",
            rescale_betas_zero_snr=True, timestep_spacing="trailing", clip_sample=False)
        self.stage = 1
        self.codec.requires_grad_(False)

    # ------------------------------------------------------------------ construction and files
    @classmethod
    def from_config(cls, config: AnimatorConfig, head=None) -> "Animator":
        if config.sd_path is None:
            return cls(config, head)
        return cls._from_stable_diffusion(config, head)

    @classmethod
    def _from_stable_diffusion(cls, config: AnimatorConfig, head=None) -> "Animator":
        """Both UNets from the SD UNet, the VAE from the SD VAE (conv_in/conv_out kept)."""
        from diffusers import AutoencoderKL, UNet2DConditionModel

        root = Path(config.sd_path)
        for part in ("unet", "vae"):
            if not (root / part / "config.json").is_file():
                raise CheckpointError(f"{root}: not a diffusers Stable Diffusion folder (no {part}/config.json)")
        unet = UNet2DConditionModel.from_pretrained(root / "unet")
        reference = UNet2DConditionModel.from_pretrained(root / "unet")
        vae = AutoencoderKL.from_pretrained(root / "vae")
        return cls(config, head, denoising_unet=unet, reference_unet=reference, codec=VaeCodec(vae))

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """config (animator.json), both UNets and the VAE in diffusers folders, onehead's parts in
        one safetensors file; written to a temporary folder and moved into place."""
        from safetensors.torch import save_file

        directory = Path(directory)
        tmp = directory.with_name(directory.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        config = self.config.to_dict()
        config["sd_path"] = None  # the folder is self-contained
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2))
        self.denoising_unet.save_pretrained(tmp / "denoising_unet", safe_serialization=True)
        self.reference_unet.save_pretrained(tmp / "reference_unet", safe_serialization=True)
        if isinstance(self.codec, VaeCodec):
            self.codec.vae.save_pretrained(tmp / "vae", safe_serialization=True)
        state = {f"{name}.{k}": v.detach().contiguous().cpu() for name in ("gaussian_field", "pose_guider",
                 "domain_tokens", "temporal") for k, v in getattr(self, name).state_dict().items()}
        save_file(state, tmp / WEIGHTS_FILE, metadata={"kind": KIND})
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, head=None, overrides: dict | None = None) -> "Animator":
        """Load a checkpoint folder. overrides change its config (e.g. to fine-tune with
        warp_guidance on): pose-guider inputs the checkpoint lacks start with zero weights, so the
        model starts out computing exactly what the checkpoint did."""
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from safetensors.torch import load_file

        directory = Path(directory)
        config_path = directory / CONFIG_FILE
        if not config_path.is_file():
            raise CheckpointError(f"{directory}: not an onehead Animator checkpoint (no {CONFIG_FILE})")
        try:
            data = json.loads(config_path.read_text())
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{config_path}: unreadable ({exc})") from None
        if data.get("kind") != KIND:
            raise CheckpointError(f"{directory}: a checkpoint of kind {data.get('kind')!r}, not an Animator")
        config = AnimatorConfig.from_dict({**data, **(overrides or {})})
        try:
            unet = UNet2DConditionModel.from_pretrained(directory / "denoising_unet")
            reference = UNet2DConditionModel.from_pretrained(directory / "reference_unet")
            codec = VaeCodec(AutoencoderKL.from_pretrained(directory / "vae")) if config.latent == "vae" else None
            state = load_file(directory / WEIGHTS_FILE)
        except (OSError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{directory}: incomplete or corrupt Animator checkpoint ({exc})") from None
        model = cls(config, head, denoising_unet=unet, reference_unet=reference, codec=codec)
        for name in ("gaussian_field", "pose_guider", "domain_tokens", "temporal"):
            part = {k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + ".")}
            if name == "pose_guider":
                part = _pad_inputs(part, model.pose_guider)
            try:
                getattr(model, name).load_state_dict(part)
            except RuntimeError as exc:
                raise CheckpointError(f"{directory}: {name} does not fit this head model or config ({exc})") from None
        return model.eval()

    # ------------------------------------------------------------------ training
    def set_stage(self, stage: int) -> None:
        """1: single frames, everything but the temporal layers trains; 2: only the temporal layers."""
        if stage not in (1, 2):
            raise ConfigError(f"stage must be 1 or 2, got {stage}")
        self.stage = stage
        for name, module in self.trainable_parts().items():
            module.requires_grad_(stage == 1 if name != "temporal" else stage == 2)
        self.temporal.enabled = stage == 2

    def trainable_parts(self) -> dict[str, nn.Module]:
        return {"gaussian_field": self.gaussian_field, "pose_guider": self.pose_guider,
                "reference_unet": self.reference_unet, "denoising_unet": self.denoising_unet,
                "domain_tokens": self.domain_tokens, "temporal": self.temporal}

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def enable_gradient_checkpointing(self) -> None:
        self.denoising_unet.enable_gradient_checkpointing()
        self.reference_unet.enable_gradient_checkpointing()

    def training_loss(self, batch: dict, generator: torch.Generator | None = None) -> torch.Tensor:
        """v-prediction MSE on a batch of ReenactmentDataset items (see onehead.data.datasets)."""
        from diffusers import DDPMScheduler

        target = batch["target"].to(self.device)
        clips, frames = target.shape[:2]
        control = self.batch_control(batch)
        with torch.no_grad():
            latents = self.codec.encode(target.flatten(0, 1) * 2 - 1, sample=True, generator=generator)
            reference_latents = self.codec.encode(batch["reference"].to(self.device) * 2 - 1)
        scheduler = DDPMScheduler(**self.scheduler_config)
        noise = torch.randn(latents.shape, generator=generator, device=generator.device if generator else None)
        noise = noise.to(latents)
        timesteps = torch.randint(0, self.config.num_train_timesteps, (clips,), generator=generator,
                                  device=generator.device if generator else None).to(self.device)
        timesteps = timesteps.repeat_interleave(frames)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        velocity = scheduler.get_velocity(latents, noise, timesteps)
        context = self.domain_tokens(batch["domain"].to(self.device))
        self.run_reference(reference_latents, context)
        prediction = self.denoise(noisy, timesteps, context.repeat_interleave(frames, 0), control, frames)
        # the bank stays filled until the next reference pass: gradient checkpointing recomputes the
        # shared attention during backward and needs the same keys
        return F.mse_loss(prediction.float(), velocity.float())

    @torch.no_grad()
    def sample_batch(self, batch: dict, num_steps: int | None = None, seed: int = 0) -> torch.Tensor:
        """Frames (B, T, 3, H, W) for a batch of dataset items (validation pictures)."""
        clips, frames = batch["target"].shape[:2]
        control = self.batch_control(batch)
        control = control.view(clips, frames, *control.shape[1:])
        return self.sample(batch["reference"].to(self.device), control, num_steps, seed=seed, progress=False)

    def batch_control(self, batch: dict) -> torch.Tensor:
        """Control maps (B * T, C, H, W) of a batch's target parameters at its cameras."""
        frames = batch["K"].shape[1]
        reference = None
        if self.config.warp_guidance:
            def per_frame(x):
                return x.to(self.device).repeat_interleave(frames, 0)

            reference = (per_frame(batch["reference"]), {k: per_frame(batch["reference_params"][k]) for k in PARAM_KEYS},
                         per_frame(batch["reference_K"]), per_frame(batch["reference_world_to_cam"]))
        return self.control_maps(_flatten_params(batch["target_params"], self.device),
                                 batch["K"].flatten(0, 1).to(self.device),
                                 batch["world_to_cam"].flatten(0, 1).to(self.device), reference)

    # ------------------------------------------------------------------ the network pieces
    @property
    def device(self) -> torch.device:
        return self.pose_guider.out.weight.device

    def control_maps(self, params: dict, K: torch.Tensor, world_to_cam: torch.Tensor, reference=None,
                     chunk: int = 32) -> torch.Tensor:
        """Head-model parameters (N, ...) at cameras (N, 3, 3), (N, 4, 4) -> the splatted Gaussian
        features (N, C, H, W). With warp_guidance, `reference` = (image (N or 1, 3, H, W) in [0, 1],
        its parameters (N or 1, ...), K, world_to_cam) adds the reference warped to each target
        (in [-1, 1], 0 where not visible) and its visibility: (N, C + 4, H, W)."""
        if self.config.warp_guidance and reference is None:
            raise ConfigError("this Animator uses warp guidance: control_maps needs the reference")
        size = self.config.resolution
        maps = []
        for start in range(0, K.shape[0], chunk):
            rows = slice(start, start + chunk)
            vertices = self.head(**{k: v[rows] for k, v in params.items()}).vertices
            features = self.gaussian_field.splat(vertices, K[rows], world_to_cam[rows], size, size).features
            if self.config.warp_guidance:
                features = torch.cat([features, self._warp_maps(reference, rows, vertices, K[rows],
                                                                world_to_cam[rows])], 1)
            maps.append(features)
        return torch.cat(maps)

    def _warp_maps(self, reference, rows: slice, vertices, K, world_to_cam) -> torch.Tensor:
        image, params, ref_K, ref_w2c = reference

        def pick(x):  # one reference for every frame, or one per frame
            return x if x.shape[0] == 1 else x[rows]

        with torch.no_grad():
            ref_vertices = self.head(**{k: pick(v) for k, v in params.items()}).vertices
            warp = warp_reference(pick(image), self.head.faces, ref_vertices, pick(ref_K), pick(ref_w2c),
                                  vertices.detach(), K, world_to_cam)
        return torch.cat([(warp.image * 2 - 1) * warp.visible, warp.visible], 1)

    def run_reference(self, reference_latents: torch.Tensor, context: torch.Tensor) -> None:
        """The ReferenceNet pass (t = 0) that fills the shared-attention bank."""
        self.bank.clear()
        timestep = torch.zeros(reference_latents.shape[0], device=reference_latents.device, dtype=torch.long)
        self.reference_unet(reference_latents, timestep, encoder_hidden_states=context)
        self.bank.writes += 1

    def denoise(self, latents, timesteps, context, control, frames: int) -> torch.Tensor:
        """One denoising-UNet call on (clips x frames) latents with their control maps."""
        self._control_residual = self.pose_guider(control.to(latents.dtype))
        self.temporal.frames = frames
        try:
            return self.denoising_unet(latents, timesteps, encoder_hidden_states=context).sample
        finally:
            self._control_residual = None

    def _add_control(self, module, inputs, output):
        return output if self._control_residual is None else output + self._control_residual

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample(self, reference: torch.Tensor, control: torch.Tensor, num_steps: int | None = None, *,
               seed: int = 0, progress: bool = True, domain: str | None = None) -> torch.Tensor:
        """reference (B, 3, H, W) in [0, 1], control maps (B, T, C, H, W) -> frames (B, T, 3, H, W).

        The same initial noise for every frame; frames are denoised in overlapping windows of
        `config.window` frames whose predictions are blended at every step.
        """
        from diffusers import DDIMScheduler
        from tqdm import tqdm

        clips, frames = control.shape[:2]
        steps = num_steps or self.config.default_steps
        scheduler = DDIMScheduler(**self.scheduler_config)
        scheduler.set_timesteps(steps, device=self.device)
        generator = torch.Generator().manual_seed(seed)
        domain = domain or self.config.inference_domain
        if domain not in DOMAINS:
            raise ConfigError(f"domain must be one of {DOMAINS}, got {domain!r}")
        context = self.domain_tokens(torch.full((clips,), DOMAINS.index(domain), device=self.device))
        self.run_reference(self.codec.encode(reference * 2 - 1), context)
        size = self.config.resolution // self.codec.factor
        noise = torch.randn(clips, 1, self.codec.latent_channels, size, size, generator=generator).to(self.device)
        if self.config.initial_latent == "zeros":
            noise = torch.zeros_like(noise)
        elif self.config.initial_latent != "noise":
            raise ConfigError(f"initial_latent must be 'noise' or 'zeros', got {self.config.initial_latent!r}")
        latents = (noise * scheduler.init_noise_sigma).expand(clips, frames, -1, -1, -1).contiguous()
        windows = temporal_windows(frames, self.config.window, self.config.window_overlap)
        bar = tqdm(scheduler.timesteps, desc="denoising", unit="step", disable=not progress)
        for t in bar:
            velocity = torch.zeros_like(latents)
            weight = torch.zeros(frames, device=self.device)
            for start, end in windows:
                count = end - start
                window_latents = scheduler.scale_model_input(latents[:, start:end].flatten(0, 1), t)
                out = self.denoise(window_latents, t.expand(clips * count), context.repeat_interleave(count, 0),
                                   control[:, start:end].flatten(0, 1), count)
                ramp = window_weights(count, start, end, frames, self.config.window_overlap).to(self.device)
                velocity[:, start:end] += out.view(clips, count, *out.shape[1:]) * ramp.view(1, -1, 1, 1, 1)
                weight[start:end] += ramp
            velocity /= weight.view(1, -1, 1, 1, 1)
            stepped = scheduler.step(velocity.flatten(0, 1), t, latents.flatten(0, 1)).prev_sample
            latents = stepped.view_as(latents)
        self.bank.clear()
        images = torch.cat([self.codec.decode(chunk) for chunk in latents.flatten(0, 1).split(16)])
        return ((images.float() + 1) / 2).clamp(0, 1).view(clips, frames, 3, *images.shape[-2:])

    # ------------------------------------------------------------------ the user's entry point
    def animate(self, reference, driving, *, num_steps: int | None = None, seed: int = 0,
                max_frames: int | None = None, camera=None, progress: bool = True,
                reference_tracking=None) -> AnimationResult:
        """Reenact one reference portrait with the motion of a driving video.

        reference: image path, PIL image, array or tensor. driving: video path, folder of frames or
        tracking npz. Cross-identity: the shape comes from the reference; expression, jaw, eyes and
        head motion from the driving frames. camera: None renders at the reference's camera with
        the driving head motion applied relative to its first frame; "driving" uses the driving
        frames' own cameras and absolute poses (for data in onehead's format, such as synthetic
        ground truth); a (K (3, 3), world_to_cam (4, 4)) pair at the output resolution renders a
        novel view. reference_tracking: a tracking npz whose first frame describes the reference
        (for synthetic references), instead of tracking the image.
        """
        from onehead.pipelines.reenactment import driving_motion, prepare_reference

        ref = prepare_reference(reference, self.head, self.config.resolution, reference_tracking, progress)
        motion = driving_motion(driving, ref, self.head, self.config.resolution, camera=camera,
                                max_frames=max_frames, progress=progress)
        frames, control = self.reenact(ref, motion, num_steps=num_steps, seed=seed, progress=progress)
        image = torch.from_numpy(ref.image).permute(2, 0, 1).float() / 255
        return AnimationResult(frames=frames, control_maps=control, tracking=motion.tracking,
                               reference=image, driving_frames=motion.frames)

    def reference_inputs(self, reference) -> tuple:
        """A prepared reference -> (image (1, 3, H, W) in [0, 1], parameters (1, ...), K, world_to_cam)
        on the model's device: the `reference` argument of control_maps."""
        image = torch.as_tensor(reference.image, device=self.device).permute(2, 0, 1).float()[None] / 255
        params, K, world_to_cam = self.motion_inputs(reference)
        return image, params, K, world_to_cam

    def motion_inputs(self, motion) -> tuple[dict, torch.Tensor, torch.Tensor]:
        """Head-model parameters (T, ...), K and world_to_cam of a Motion (or Reference) on the model's device."""
        tracking = motion.tracking
        params = {k: torch.as_tensor(v, device=self.device) for k, v in tracking.head_params().items()}
        return (params, torch.as_tensor(tracking.K, device=self.device),
                torch.as_tensor(tracking.world_to_cam, device=self.device))

    def reenact(self, reference, motion, *, num_steps: int | None = None, seed: int = 0,
                progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """A prepared reference and motion (onehead.pipelines.reenactment) -> frames (T, 3, H, W)
        in [0, 1] and control maps (T, C, H, W), on the CPU."""
        from onehead.pipelines.reenactment import head_region, paste_back

        params, K, w2c = self.motion_inputs(motion)
        reference_inputs = self.reference_inputs(reference)
        image = reference_inputs[0]
        with torch.no_grad():
            control = self.control_maps(params, K, w2c, reference_inputs)
        frames = self.sample(image, control[None], num_steps, seed=seed, progress=progress)[0]
        if self.config.background == "reference":
            region = head_region(self.head, [reference.tracking, motion.tracking], self.config.resolution,
                                 self.config.background_margin)
            frames = paste_back(frames, image[0], region.to(frames.device))
        elif self.config.background != "generated":
            raise ConfigError(f"background must be 'generated' or 'reference', got {self.config.background!r}")
        return frames.cpu(), control[:, :self.config.control_channels].cpu()


DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[2] / "checkpoints" / "animator-tiny"


def load_animator(checkpoint: str | os.PathLike | None = None, head=None) -> Animator:
    """An Animator from a folder, or the embedded default model (checkpoints/animator-tiny in the
    source tree, present with the README's editable install)."""
    if checkpoint is None:
        if not (DEFAULT_CHECKPOINT / CONFIG_FILE).is_file():
            raise CheckpointError(f"the embedded default model is not in this install ({DEFAULT_CHECKPOINT}); "
                                  "install onehead from its source tree (pip install -e .) or pass --checkpoint DIR")
        checkpoint = DEFAULT_CHECKPOINT
    return Animator.from_pretrained(checkpoint, head)


def _pad_inputs(state: dict, guider: nn.Module) -> dict:
    """A pose-guider state with fewer input channels than `guider`: zero weights for the new ones."""
    first = guider.body[0].weight
    weight = state.get("body.0.weight")
    if weight is not None and weight.shape[1] < first.shape[1] and weight.shape[0] == first.shape[0]:
        padded = torch.zeros_like(first)
        padded[:, :weight.shape[1]] = weight
        state = {**state, "body.0.weight": padded}
    return state


def _build_codec(config: AnimatorConfig):
    if config.latent == "pixel":
        return PixelShuffleAutoencoder(config.pixel_factor)
    if config.latent == "vae":
        raise ConfigError("latent 'vae' needs sd_path (a local diffusers Stable Diffusion folder) or a checkpoint")
    raise ConfigError(f"latent must be 'pixel' or 'vae', got {config.latent!r}")


def _flatten_params(params: dict, device) -> dict:
    """Dataset parameters (B, T, ...) -> (B * T, ...)."""
    return {k: params[k].flatten(0, 1).to(device) for k in PARAM_KEYS}


def temporal_windows(frames: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) windows of at most `window` frames covering 0..frames, neighbours sharing `overlap`."""
    if frames <= window:
        return [(0, frames)]
    stride = max(1, window - overlap)
    starts = list(range(0, frames - window + 1, stride))
    if starts[-1] + window < frames:
        starts.append(frames - window)
    return [(s, s + window) for s in starts]


def window_weights(count: int, start: int, end: int, frames: int, overlap: int) -> torch.Tensor:
    """Blend weights of one window: a linear ramp over the overlap at edges shared with a neighbour."""
    weights = torch.ones(count)
    n = min(overlap, count)
    if n:
        ramp = torch.linspace(0, 1, n + 2)[1:-1]
        if start > 0:
            weights[:n] = ramp
        if end < frames:
            weights[count - n:] = torch.minimum(weights[count - n:], ramp.flip(0))
    return weights
