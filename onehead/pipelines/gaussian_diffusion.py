"""The Gaussian-embedding diffusion Animator (paper 003): the default one-shot family.

    animator = GaussianDiffusionAnimator.from_pretrained("DIR")      # or Animator.from_pretrained("DIR")
    frames = animator.reenact(reference, motion, steps=4).frames

reference image -> latents -> ReferenceNet (once per clip); driving motion -> control maps ->
windowed DDIM (onehead.pipelines.sampler) with the same initial noise for every frame -> decode ->
optional paste-back of the reference outside the head region. A correct_warp model samples the
correction of the filled mesh warp and adds it to the warp's latents before decoding.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from onehead.config import from_dict, replace, to_dict
from onehead.errors import CheckpointError, ConfigError
from onehead.files import atomic_path
from onehead.models.gaussian_diffusion import (
    KIND,
    GaussianDiffusionConfig,
    GaussianDiffusionModel,
    InferenceSettings,
    ReferenceInputs,
    WarpBase,
    split_saved_config,
)
from onehead.models.gaussian_diffusion.config import PRESETS
from onehead.pipelines.one_shot import Animator, Reenactment
from onehead.pipelines.sampler import initial_latents, sample_windows
from onehead.render.warp import gaussian_blur

CONFIG_FILE = "animator.json"
FORMAT = 2  # animator.json holds {"model": architecture, "inference": settings}; format 1 was one flat dict


class GaussianDiffusionAnimator(Animator):
    kind = KIND

    def __init__(self, model: GaussianDiffusionModel, inference: InferenceSettings | None = None):
        self.model = model
        self.inference = inference if inference is not None else PRESETS[model.config.preset][1]

    # ------------------------------------------------------------------ construction and files
    @classmethod
    def from_config(cls, config: GaussianDiffusionConfig, inference: InferenceSettings | None = None,
                    head=None) -> "GaussianDiffusionAnimator":
        return cls(GaussianDiffusionModel.from_config(config, head), inference)

    @classmethod
    def from_preset(cls, name: str, head=None, **overrides) -> "GaussianDiffusionAnimator":
        """A new model with random weights: from_preset("tiny"), or ("base", sd_path=DIR)."""
        config = GaussianDiffusionConfig.from_preset(name, **overrides)
        return cls.from_config(config, PRESETS[name][1], head)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike | None = None, *, head=None,
                        model_overrides: dict | None = None, **settings) -> "GaussianDiffusionAnimator":
        """Load a model folder. settings override its inference settings (steps=4, background=...);
        model_overrides change its architecture (e.g. warp_guidance=True to fine-tune into it: the
        new pose-guider inputs start at zero, so the model computes what the folder's did)."""
        from onehead.pipelines.families import default_model_dir

        directory = Path(directory) if directory is not None else default_model_dir()
        config, inference = read_config(directory)
        if model_overrides:
            config = from_dict(GaussianDiffusionConfig, {**to_dict(config), **model_overrides}, "model_overrides")
        model = GaussianDiffusionModel.load_weights(directory, config, head)
        return cls(model.eval(), replace(inference, "inference settings", **settings) if settings else inference)

    def save_pretrained(self, directory: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
        """animator.json, both UNets and the VAE in diffusers folders, onehead's parts in one
        safetensors file; written to a temporary folder beside the target, then moved into place.
        dtype=torch.float16 stores the weights at half the size (they load as float32)."""
        config = to_dict(self.model.config)
        config["sd_path"] = None  # the folder is self-contained
        with atomic_path(directory) as tmp:
            tmp.mkdir()
            self.model.save_weights(tmp, dtype)
            (tmp / CONFIG_FILE).write_text(json.dumps(
                {"kind": KIND, "format": FORMAT, "model": config, "inference": to_dict(self.inference)}, indent=2))
        return Path(directory)

    # ------------------------------------------------------------------ the protocol
    def describe(self) -> dict:
        return {"kind": self.kind, **to_dict(self.inference)}

    def reenact(self, reference, motion, *, progress: bool = False, **settings) -> Reenactment:
        """A prepared reference and motion -> frames (T, 3, S, S) in [0, 1] and control maps
        (T, C, s, s) at the model's control resolution, on the CPU. settings: InferenceSettings
        fields for this call."""
        from onehead.pipelines.reenactment import grown_region, paste_back

        run = replace(self.inference, "inference settings", **settings) if settings else self.inference
        params, K, w2c = self.motion_inputs(motion)
        ref = self.reference_inputs(reference)
        if not run.carry_foreground:
            ref.foreground = None
        with torch.no_grad():
            control = self.model.control_maps(params, K, w2c, ref)
        base = (self.model.warp_base(ref, params, K, w2c, mouth_interior=run.mouth_interior, pin_neck=run.pin_neck)
                if self.model.config.correct_warp else None)
        frames = self.sample(ref.image, control[None], run, base=base, progress=progress)[0]
        if base is not None:
            warp = base.image.to(frames)
            correction = frames - warp
            if run.correction_blur > 0:  # the correction's low frequencies only
                correction = gaussian_blur(correction, run.correction_blur)
            if run.correction_blur > 0 or run.correction_strength < 1:
                frames = (warp + run.correction_strength * correction).clamp(0, 1)
            if run.correction_margin < 1:  # the correction on the head, the warp elsewhere
                on_head = grown_region([base.reference_covered, base.covered], run.correction_margin).to(frames)
                frames = on_head * frames + (1 - on_head) * warp
        if run.background == "reference":
            region = self.background_region(reference, motion, base, run.background_margin)
            frames = paste_back(frames, ref.image[0], region.to(frames.device))
        return Reenactment(frames.cpu(), control[:, :self.model.config.control_channels].cpu())

    # ------------------------------------------------------------------ the pieces
    def background_region(self, reference, motion, base: WarpBase | None, margin: float) -> torch.Tensor:
        """Where the output is kept when the reference is pasted back (T, 1, S, S): the reference's
        and each frame's head masks, grown by `margin` (from the warp's masks when there is one),
        and where the warp's carried hair left and landed (else the old hair would come back)."""
        from onehead.pipelines.reenactment import grown_region, head_region

        if base is not None:  # the warp has rendered both head masks already
            masks = [base.reference_covered, base.covered] + ([] if base.moved is None else [base.moved])
            return grown_region(masks, margin)
        return head_region(self.head, [reference.tracking, motion.tracking], self.resolution, margin)

    def reference_inputs(self, reference) -> ReferenceInputs:
        """A prepared Reference -> its image (1, 3, S, S) in [0, 1], parameters and camera on the model's device."""
        from onehead.pipelines.reenactment import split_foreground

        image = torch.as_tensor(reference.image, device=self.device).permute(2, 0, 1).float()[None] / 255
        params, K, world_to_cam = self.motion_inputs(reference)
        parts = split_foreground(reference)  # hair and hat move, not the torso nor other people
        if parts is None:
            return ReferenceInputs(image, params, K, world_to_cam)
        foreground, staying = (torch.as_tensor(part, device=self.device).float()[None, None] for part in parts)
        return ReferenceInputs(image, params, K, world_to_cam, foreground, staying)

    def motion_inputs(self, motion) -> tuple[dict, torch.Tensor, torch.Tensor]:
        """Head-model parameters (T, ...), K and world_to_cam of a Motion (or Reference) on the model's device."""
        tracking = motion.tracking
        params = {k: torch.as_tensor(v, device=self.device) for k, v in tracking.head_params().items()}
        return (params, torch.as_tensor(tracking.K, device=self.device),
                torch.as_tensor(tracking.world_to_cam, device=self.device))

    @torch.no_grad()
    def sample(self, reference: torch.Tensor, control: torch.Tensor, settings: InferenceSettings | None = None,
               *, base: WarpBase | None = None, progress: bool = False) -> torch.Tensor:
        """reference (B, 3, S, S) in [0, 1], control maps (B, T, C, s, s) -> frames (B, T, 3, S, S).
        base: the warp a correct_warp model corrects (model.warp_base), B * T rows."""
        from diffusers import DDIMScheduler

        run = settings or self.inference
        model = self.model
        clips, frames = control.shape[:2]
        scheduler = DDIMScheduler(**model.scheduler_config())
        scheduler.set_timesteps(run.steps, device=self.device)
        context = model.context(run.domain, clips)
        model.run_reference(model.codec.encode(reference.to(self.device) * 2 - 1), context)
        warp = base_latents = None
        if model.config.correct_warp:
            if base is None:
                raise ConfigError("this model corrects the mesh warp: sample needs base (model.warp_base)")
            base_latents, warp = model.warp_condition(base)
            warp = warp.view(clips, frames, *warp.shape[1:])
        size = self.resolution // model.codec.factor
        start = initial_latents(clips, frames, (model.codec.latent_channels, size, size), run.initial_latent,
                                run.seed, self.device, scheduler.init_noise_sigma)

        def denoise(latents, t, first, last):
            count = last - first
            return model.denoise(latents, t.expand(clips * count), context.repeat_interleave(count, 0),
                                 control[:, first:last].flatten(0, 1),
                                 None if warp is None else warp[:, first:last].flatten(0, 1))

        try:
            latents = sample_windows(denoise, scheduler, start, window=run.window, overlap=run.window_overlap,
                                     progress=progress)
        finally:
            model.bank.clear()
        latents = latents.flatten(0, 1)
        if base_latents is not None:
            latents = latents + base_latents
        images = torch.cat([model.codec.decode(chunk) for chunk in latents.split(16)])
        return ((images.float() + 1) / 2).clamp(0, 1).view(clips, frames, 3, *images.shape[-2:])


def read_config(directory: Path) -> tuple[GaussianDiffusionConfig, InferenceSettings]:
    """The two configs of a model folder of this family; CheckpointError naming the file otherwise."""
    from onehead.pipelines.families import read_model_config

    family, data = read_model_config(directory, "one-shot")
    if family.kind != KIND:
        raise CheckpointError(f"{directory}: a {family.kind} model, not a {KIND}")
    try:
        return split_saved_config(data, str(directory / CONFIG_FILE))
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None
