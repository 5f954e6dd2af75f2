"""The training family of DiffusionAvatars (`model.kind: onehead-avatar`), paper 000.

One person's frames (data.train folders, restricted by data.views and data.frames) with their
tracking. Each step crops and resizes the targets at random (the paper's augmentation; the camera
intrinsics follow the crop, so the rasterized buffers stay aligned), mattes them onto the
background grey, and trains with v-prediction on a zero-terminal-SNR schedule ("diffusion") or
L1 on the clean latents in one pass ("direct", the DNR-style baseline).

Parameter groups as in the paper: ControlNet, expression layers and prompt token at
train.learning_rate (paper: 1e-4), TriPlanes and ambient map at FEATURE_LR_RATIO times it (paper:
1e-2), and the UNet at train.learning_rate when model.train_unet (tiny: there is no prior to freeze).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from onehead.errors import ConfigError
from onehead.training.family import ParamGroup

FEATURE_LR_RATIO = 100.0
MAX_ZOOM = 1.25  # random crops keep at least 1 / MAX_ZOOM of the frame's side
MAX_X0_WEIGHT = 6.0  # x0 models: the v loss weighs the x0 error by 1 / (1 - a) (SNR + 1), clamped at 6
# (min-SNR-5 style), so the nearly clean timesteps do not drown the rest


def split_model_section(section: dict) -> tuple[str, dict, dict]:
    """(preset, architecture overrides, AvatarSettings overrides) of a config's model section."""
    from dataclasses import fields

    from onehead.models.person_avatar import AvatarSettings

    settings = {k: v for k, v in section.items() if k != "kind"}
    inference = dict(settings.pop("inference", None) or {})
    for name in [f.name for f in fields(AvatarSettings)]:
        if name in settings:
            inference[name] = settings.pop(name)
    return settings.pop("preset", "tiny"), settings, inference


def crop_and_resize(images: torch.Tensor, K: torch.Tensor, zoom: torch.Tensor, corner: torch.Tensor):
    """Crop each image (B, C, S, S) to a square of side S / zoom (B,) with its top-left edge at
    corner (B, 2) in pixels, resize back to S; K (B, 3, 3) follows (pixel centres at integers)."""
    size = images.shape[-1]
    scale = 1 / zoom
    offset = scale[:, None] - 1 + 2 * corner / size  # (B, 2): normalised x, y of the crop's centre
    theta = torch.zeros(len(images), 2, 3, dtype=images.dtype, device=images.device)
    theta[:, 0, 0] = theta[:, 1, 1] = scale
    theta[:, :, 2] = offset
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    cropped = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    K = K.clone()
    K[:, 0, 0] *= zoom
    K[:, 1, 1] *= zoom
    K[:, :2, 2] = zoom[:, None] * (K[:, :2, 2] + 0.5 - corner) - 0.5
    return cropped, K


def avatar_loss(model, batch: dict, generator: torch.Generator | None = None, background: float = 0.0,
                augment: bool = True) -> torch.Tensor:
    """The loss of one batch of FrameDataset items; every random draw from `generator`."""
    from diffusers import DDPMScheduler

    device = model.device
    images, masks, K = batch["image"].to(device), batch["mask"].to(device), batch["K"].to(device)
    count, size = len(images), images.shape[-1]
    draw_on = generator.device if generator is not None else None
    if augment:
        zoom = 1 + (MAX_ZOOM - 1) * torch.rand(count, generator=generator, device=draw_on).to(device)
        corner = torch.rand(count, 2, generator=generator, device=draw_on).to(device) * (size - size / zoom[:, None])
        both, K = crop_and_resize(torch.cat([images, masks], 1), K, zoom, corner)
        images, masks = both[:, :3], both[:, 3:]
    target = images * masks + background * (1 - masks)
    params = {k: v.to(device) for k, v in batch["params"].items()}
    control = model.control(params, K, batch["world_to_cam"].to(device))
    code = model.expression_code(params)
    with torch.no_grad():
        latents = model.codec.encode(target * 2 - 1, sample=True, generator=generator)
    if model.config.objective == "direct":
        return F.l1_loss(model.regress(control, code).float(), latents.float())
    scheduler = DDPMScheduler(**model.scheduler_config())
    noise = torch.randn(latents.shape, generator=generator, device=draw_on).to(latents)
    timesteps = torch.randint(0, model.config.num_train_timesteps, (count,), generator=generator,
                              device=draw_on).to(device)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    velocity = scheduler.get_velocity(latents, noise, timesteps)
    error = (model.predict(noisy, timesteps, control, code).float() - velocity.float()) ** 2
    if model.config.parameterization == "x0":  # the v error is the x0 error / sqrt(1 - a): clamp that weight
        alpha = model.alphas_cumprod[timesteps.long()].view(-1, 1, 1, 1)
        error = error * ((1 - alpha) * MAX_X0_WEIGHT).clamp(max=1)
    return error.mean()


class PersonAvatarFamily:
    """TrainingFamily of DiffusionAvatars; `onehead.training.get_family("onehead-avatar")`."""

    name = "onehead-avatar"
    config_file = "avatar.json"

    def __init__(self):
        self.settings = None  # AvatarSettings saved with every checkpoint
        self.training_data = None

    def check_config(self, config) -> None:
        from onehead.data.datasets import parse_frames

        if config.train.stage != 1:
            raise ConfigError(f"DiffusionAvatars train in one stage: train.stage must be 1, got {config.train.stage}")
        if config.data.clip_length != 1:
            raise ConfigError("DiffusionAvatars train on single frames: data.clip_length must be 1")
        parse_frames(config.data.frames)
        preset, architecture, inference = split_model_section(config.model)
        sd_path = architecture.get("sd_path")
        if sd_path and not Path(sd_path).is_dir():
            raise ConfigError(f"model.sd_path {sd_path}: no such folder; point it at a local diffusers-format "
                              "Stable Diffusion folder (unet/, vae/, scheduler/)")

    def build(self, model_config: dict, train, resume_from: Path | None):
        from onehead.models.person_avatar import PRESETS, PersonAvatarConfig
        from onehead.pipelines.diffusion_avatar import DiffusionAvatar, build_model
        from onehead.training.checkpoint import resolve_checkpoint

        preset, architecture, inference = split_model_section(model_config)
        if resume_from is not None:
            avatar = DiffusionAvatar.from_pretrained(resume_from)
        elif train.init_from:
            start = resolve_checkpoint(train.init_from, Path(train.output_dir), self.config_file, need_state=False)
            avatar = DiffusionAvatar.from_pretrained(start, **inference)
        else:
            if preset not in PRESETS:
                raise ConfigError(f"model.preset {preset!r}: use one of {', '.join(PRESETS)}")
            from onehead.config import replace

            config = PersonAvatarConfig.from_preset(preset, **architecture)
            avatar = DiffusionAvatar(build_model(config), replace(PRESETS[preset][1], "model section", **inference))
        self.settings = avatar.settings
        model = avatar.model
        model.set_trainable()
        if train.gradient_checkpointing:
            model.unet.enable_gradient_checkpointing()
            model.controlnet.enable_gradient_checkpointing()
        return model

    def datasets(self, model, config):
        """The selected frames of data.train (FrameDataset); data.validation: held-out frames of the
        same person (every frame of that folder), or None. Sets the avatar's shape and home view."""
        from onehead.data.datasets import FrameDataset, parse_frames, select_frames, training_record
        from onehead.training.data import MixedDataset

        frames = parse_frames(config.data.frames)
        sources = [s for s in config.data.train if s.weight > 0]
        sets = [FrameDataset(select_frames(s.path, config.data.views, frames), model.config.resolution)
                for s in sources]
        keys = [k for s in sets for k in s.keys]
        self.training_data = training_record(keys)
        set_person(model, sets[0])
        held_out = None
        if config.data.validation:
            held_out = FrameDataset(select_frames(config.data.validation, config.data.views), model.config.resolution)
        return MixedDataset(sets, [s.weight for s in sources]), held_out

    def parameter_groups(self, model, train) -> list[ParamGroup]:
        names = {id(p): n for n, p in model.named_parameters()}
        rates = {"controlnet": None, "unet": None, "features": train.learning_rate * FEATURE_LR_RATIO}
        return [ParamGroup(part, {names[id(p)]: p for p in params}, lr=rates[part],
                           weight_decay=0.0 if part == "features" else None)
                for part, params in model.trainable_parts().items()]

    def loss(self, model, batch: dict, generator: torch.Generator) -> torch.Tensor:
        return avatar_loss(model, batch, generator, background=self.settings.background)

    def validation_columns(self, model, batch: dict, train) -> list[torch.Tensor]:
        """target (matted) | normals buffer | render (train.validation_sampling_steps steps, seed train.seed)."""
        from onehead.config import replace
        from onehead.pipelines.diffusion_avatar import DiffusionAvatar

        background = self.settings.background
        target = batch["image"] * batch["mask"] + background * (1 - batch["mask"])
        params = {k: v.to(model.device) for k, v in batch["params"].items()}
        g = model.buffers(params, batch["K"], batch["world_to_cam"])
        normals = (g.normals * 0.5 + 0.5) * g.mask
        settings = replace(self.settings, "validation", steps=train.validation_sampling_steps, seed=train.seed)
        rendered = DiffusionAvatar(model, settings).render_inputs(params, batch["K"], batch["world_to_cam"])
        return [c[:, None].cpu() for c in (target, normals, rendered)]

    def save_pretrained(self, model, directory: Path) -> None:
        from onehead.pipelines.diffusion_avatar import DiffusionAvatar

        DiffusionAvatar(model, self.settings, self.training_data).save_pretrained(directory)


def set_person(model, frames) -> None:
    """The avatar's identity shape and home view, from the first selected frame (FrameDataset)."""
    item = frames[0]
    params = item["params"]
    with torch.no_grad():
        model.shape.copy_(torch.as_tensor(params["shape"])[: model.shape.numel()])
        model.home_K.copy_(item["K"])
        model.home_world_to_cam.copy_(item["world_to_cam"])
        model.home_pose.copy_(torch.cat([params["global_pose"], params["translation"]]))


# ----------------------------------------------------------------------------- one command
TRAIN_DEFAULTS = dict(seed=0, batch_size=4, learning_rate=5e-4, lr_schedule="cosine", warmup_steps=100,
                      weight_decay=0.0, max_grad_norm=1.0, ema={"enabled": True, "decay": 0.995}, log_every=50,
                      validation_items=4, validation_sampling_steps=4, keep_checkpoints=2)
MAX_LOST_SHARE = 0.2  # a video whose face is lost in more of its frames is refused


def make_avatar(source, out, *, preset: str = "tiny", steps: int = 3000, frames: str | None = None,
                views: list[str] | None = None, size: int = 256, max_frames: int | None = None, overrides=(),
                progress: bool = True) -> Path:
    """`onehead avatar train`: from a raw video (tracked, cropped and matted into OUT/data first) or a
    dataset folder, train a DiffusionAvatar (run folder OUT/run, resumed when it exists) and write
    the model folder OUT/model (the EMA weights). Returns OUT/model."""
    from onehead.data.sequence import META_FILE, list_sequences
    from onehead.pipelines.diffusion_avatar import DiffusionAvatar
    from onehead.training.config import ExperimentConfig, check_config
    from onehead.training.loop import train

    out, source = Path(out), Path(source)
    is_dataset = source.is_dir() and ((source / META_FILE).is_file() or list_sequences(source))
    if is_dataset:
        data = source
    else:
        data = out / "data" / source.stem
        if not (data / META_FILE).is_file():
            from onehead.pipelines.prepare_video import prepare_video
            from onehead.tracking.tracker import TrackOptions

            prepare_video(source, data, size=size, options=TrackOptions(progress=progress), max_frames=max_frames)
        _check_tracked(data, source)
    raw = {"model": {"kind": PersonAvatarFamily.name, "preset": preset},
           "data": {"train": [str(data)], "views": views, "frames": frames},
           "train": {**TRAIN_DEFAULTS, "output_dir": str(out / "run"), "max_steps": steps,
                     "save_every": max(1, min(500, steps)), "validate_every": max(1, min(1000, steps))}}
    from onehead.config import apply_override

    for item in overrides:
        apply_override(raw, item)
    config = ExperimentConfig.from_dict(raw, "onehead avatar train")
    check_config(config)
    resume = "latest" if (out / "run" / "latest.txt").is_file() else None
    result = train(config, resume)
    checkpoint = Path(result["checkpoint"])
    final = checkpoint / "ema" if (checkpoint / "ema" / PersonAvatarFamily.config_file).is_file() else checkpoint
    DiffusionAvatar.from_pretrained(final).save_pretrained(out / "model")
    write_preview(out / "model", data, out / "preview.mp4")
    return out / "model"


def write_preview(model_dir: Path, data: Path, path: Path, frames: int = 48) -> Path:
    """The first frames of the data's first view beside the avatar re-rendering their tracking
    (self-reenactment, training frames): a video to look at after `onehead avatar train`."""
    from onehead.data.datasets import select_frames
    from onehead.data.sequence import open_sequence
    from onehead.data.video import write_video
    from onehead.pipelines.diffusion_avatar import DiffusionAvatar
    from onehead.render.visualize import side_by_side

    avatar = DiffusionAvatar.from_pretrained(model_dir)
    first = select_frames(data, tracked_only=False)[0]
    view = open_sequence(first.sequence).views[first.view]
    count = min(frames, view.num_frames)
    rendered = avatar.render(view.tracking.select(slice(0, count)))
    images, masks = view.tensors(range(count), avatar.resolution)
    if masks is not None:
        images = images * masks + avatar.settings.background * (1 - masks)
    sheets = side_by_side([("video (matted)", images), ("avatar", rendered)], tile=256)
    write_video(path, sheets, fps=float(view.tracking.fps))
    return path


def _check_tracked(sequence_dir: Path, source: Path) -> None:
    """Refuse a video whose face is lost in more than MAX_LOST_SHARE of its frames (MediaReadError,
    saying how many and the longest stretch)."""
    from onehead.data.sequence import open_sequence
    from onehead.errors import MediaReadError

    for view in open_sequence(sequence_dir).views.values():
        valid = view.tracking.valid
        lost = int((~valid).sum())
        if lost > MAX_LOST_SHARE * len(valid):
            longest = max((len(run) for run in "".join("x" if v else "." for v in valid).split("x")), default=0)
            raise MediaReadError(f"{source}: the face was lost in {lost} of {len(valid)} frames (longest stretch "
                        f"{longest} frames); an avatar needs the face in at least "
                        f"{100 - 100 * MAX_LOST_SHARE:.0f}% of them: trim the video to where the face is visible")
        if lost:
            print(f"{source}: the face was lost in {lost} of {len(valid)} frames; they are left out of training")
