"""DiffusionAvatars (paper 000): a person-specific avatar rendered from tracked motion.

    from onehead import PersonAvatar
    avatar = PersonAvatar.from_pretrained("my_avatar/")
    frames = avatar.render(tracking)                          # its cameras and poses (self-reenactment)
    frames = avatar.render(avatar.transfer(other_tracking))   # another person's expressions, own shape
    frames = avatar.render(tracking, camera=orbit_cameras(avatar.home_camera(), count=60))

The folder holds avatar.json (the configs, the UNet and ControlNet configs, what trained it) and
avatar.safetensors (every weight but the head model's, which is rebuilt).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from onehead.camera import scale_intrinsics
from onehead.config import from_dict, replace, to_dict
from onehead.data.sequence import FORMAT
from onehead.data.tracking_file import Tracking, load_tracking
from onehead.errors import CheckpointError, ConfigError
from onehead.files import atomic_path
from onehead.models.person_avatar import (
    CONFIG_FILE,
    KIND,
    PRESETS,
    WEIGHTS_FILE,
    AvatarSettings,
    PersonAvatarConfig,
    PersonAvatarModel,
)
from onehead.pipelines.person_avatar import PersonAvatar


# the embedded avatar: a synthetic person onehead renders (onehead/checkpoints/avatar-person/README.md)
EMBEDDED_AVATAR_DIR = Path(__file__).resolve().parents[1] / "checkpoints" / "avatar-person"


def default_avatar_dir() -> Path | None:
    """The embedded avatar's folder, or None when this install has none."""
    return EMBEDDED_AVATAR_DIR if (EMBEDDED_AVATAR_DIR / CONFIG_FILE).is_file() else None


class DiffusionAvatar(PersonAvatar):
    kind = KIND

    def __init__(self, model: PersonAvatarModel, settings: AvatarSettings | None = None,
                 training_data: dict | None = None):
        self.model = model
        self.settings = settings if settings is not None else PRESETS[model.config.preset][1]
        self.training_data = training_data or {}  # what trained it (avatar.json; the nearest-frame baseline reads it)

    # ------------------------------------------------------------------ construction and files
    @classmethod
    def from_preset(cls, name: str, head=None, **overrides) -> "DiffusionAvatar":
        """A new avatar with random weights: from_preset("tiny"), or ("base", sd_path=DIR)."""
        config = PersonAvatarConfig.from_preset(name, **overrides)
        return cls(build_model(config, head), PRESETS[name][1])

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, *, head=None, **settings) -> "DiffusionAvatar":
        """Load an avatar folder; settings override its AvatarSettings (steps=..., seed=...)."""
        from diffusers import ControlNetModel, UNet2DConditionModel
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        from onehead.pipelines.families import read_model_config

        directory = Path(directory)
        family, data = read_model_config(directory, "person")
        if family.kind != KIND:
            raise CheckpointError(f"{directory}: a {family.kind} model, not a DiffusionAvatar")
        where = str(directory / CONFIG_FILE)
        try:
            config = from_dict(PersonAvatarConfig, data["model"], f"{where}: model")
            saved = from_dict(AvatarSettings, data.get("inference") or {}, f"{where}: inference")
            unet = UNet2DConditionModel.from_config(data["unet"])
            controlnet = ControlNetModel.from_config(data["controlnet"])
            codec = None
            if config.latent == "vae":
                from diffusers import AutoencoderKL

                from onehead.models.autoencoder import VaeCodec

                codec = VaeCodec(AutoencoderKL.from_config(data["vae"]))
            model = PersonAvatarModel(config, head, unet=unet, controlnet=controlnet, codec=codec)
        except KeyError as exc:
            raise CheckpointError(f"{where}: lacks {exc}") from None
        except ConfigError as exc:
            raise CheckpointError(f"{where}: {exc}") from None
        path = directory / WEIGHTS_FILE
        if not path.is_file():
            raise CheckpointError(f"{directory}: incomplete avatar folder ({WEIGHTS_FILE} is missing)")
        try:
            state = load_file(path)
        except (OSError, SafetensorError) as exc:
            raise CheckpointError(f"{path}: corrupt or truncated ({str(exc)[:200]})") from None
        expected = saved_state(model)
        if set(state) != set(expected):
            missing = sorted(set(expected) - set(state)) or sorted(set(state) - set(expected))
            raise CheckpointError(f"{path}: does not fit this config or head model (e.g. {missing[0]})")
        try:
            model.load_state_dict(state, strict=False)
        except RuntimeError as exc:
            raise CheckpointError(f"{path}: does not fit this config ({str(exc).splitlines()[0][:200]})") from None
        settings = replace(saved, "inference settings", **settings) if settings else saved
        return cls(model.eval(), settings, data.get("training_data"))

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """avatar.json and avatar.safetensors, written to a temporary folder, then moved into place."""
        from safetensors.torch import save_file

        model = self.model
        config = {**to_dict(model.config), "sd_path": None}  # the folder is self-contained
        record = {"kind": KIND, "format": FORMAT, "model": config, "inference": to_dict(self.settings),
                  "unet": _plain(model.unet.config), "controlnet": _plain(model.controlnet.config),
                  "training_data": self.training_data}
        if model.config.latent == "vae":
            record["vae"] = _plain(model.codec.vae.config)
        with atomic_path(directory) as tmp:
            tmp.mkdir()
            state = {k: v.detach().contiguous().cpu() for k, v in saved_state(model).items()}
            save_file(state, tmp / WEIGHTS_FILE, metadata={"kind": KIND})
            (tmp / CONFIG_FILE).write_text(json.dumps(record, indent=2))
        return Path(directory)

    # ------------------------------------------------------------------ the protocol
    def describe(self) -> dict:
        return {"kind": self.kind, "objective": self.model.config.objective, **to_dict(self.settings)}

    def render(self, motion, camera=None, *, progress: bool = False, **settings) -> torch.Tensor:
        """Render a motion: a Tracking (or Motion, or tracking file) whose expression, jaw, eyes and head
        pose drive the avatar's own shape. camera: None (the tracking's own cameras), (K, world_to_cam)
        at the output resolution, one pair or one per frame. -> (T, 3, S, S) in [0, 1] on the CPU."""
        return self.render_inputs(*self.frame_inputs(motion, camera), progress=progress, **settings)

    def render_inputs(self, params: dict, K: torch.Tensor, world_to_cam: torch.Tensor, *, progress: bool = False,
                      **settings) -> torch.Tensor:
        """render() from head-model motion parameters (T, ...) and cameras at the output resolution
        (K (T, 3, 3), world_to_cam (T, 4, 4)); the avatar's own shape replaces any given one."""
        from diffusers import DDIMScheduler

        from onehead.pipelines.sampler import initial_latents, sample_windows

        run = replace(self.settings, "inference settings", **settings) if settings else self.settings
        model, count = self.model, len(K)
        controls: dict = {}

        def inputs(start, end):
            if (start, end) not in controls:
                part = {k: v[start:end] for k, v in params.items()}
                controls[start, end] = (model.control(part, K[start:end], world_to_cam[start:end]),
                                        model.expression_code(part))
            return controls[start, end]

        size = self.resolution // model.codec.factor
        with torch.no_grad():
            if model.config.objective == "direct":
                latents = torch.cat([model.regress(*inputs(s, min(s + run.batch, count)))
                                     for s in range(0, count, run.batch)])
            else:
                scheduler = DDIMScheduler(**model.scheduler_config())
                scheduler.set_timesteps(run.steps, device=model.device)

                def denoise(latents, t, start, end):
                    control, code = inputs(start, end)
                    return model.predict(latents, t.expand(len(latents)).to(model.device), control, code)

                start = initial_latents(1, count, (model.codec.latent_channels, size, size), "noise", run.seed,
                                        model.device, float(scheduler.init_noise_sigma))
                latents = sample_windows(denoise, scheduler, start, window=run.batch, overlap=0,
                                         progress=progress)[0]
            frames = torch.cat([model.codec.decode(part) for part in latents.split(run.batch)])
        return ((frames.float() + 1) / 2).clamp(0, 1).cpu()

    # ------------------------------------------------------------------ inputs
    def frame_inputs(self, motion, camera=None) -> tuple[dict, torch.Tensor, torch.Tensor]:
        """(head params (T, ...), K (T, 3, 3) at the output resolution, world_to_cam (T, 4, 4))."""
        tracking = _as_tracking(motion)
        if tracking.head_model != self.head.kind:
            raise ConfigError(f"the motion was tracked with the {tracking.head_model!r} head model, this avatar "
                              f"renders {self.head.kind!r}; track the driving video with the same head model")
        count = tracking.num_frames
        params = {k: torch.as_tensor(v) for k, v in tracking.head_params().items()}
        size = self.resolution
        if camera is None:
            K = scale_intrinsics(torch.as_tensor(tracking.K, dtype=torch.float32),
                                 tuple(int(v) for v in tracking.image_size), (size, size))
            world_to_cam = torch.as_tensor(tracking.world_to_cam, dtype=torch.float32)
        elif isinstance(camera, (tuple, list)) and len(camera) == 2:
            K, world_to_cam = (torch.as_tensor(np.asarray(c), dtype=torch.float32) for c in camera)
            if K.shape[-2:] != (3, 3) or world_to_cam.shape[-2:] != (4, 4):
                raise ConfigError("camera must be (K (3, 3), world_to_cam (4, 4)) at the output resolution, "
                                  "one pair or one per frame")
            if K.ndim == 2:
                K, world_to_cam = K.expand(count, 3, 3), world_to_cam.expand(count, 4, 4)
            if len(K) != count or len(world_to_cam) != count:
                raise ConfigError(f"camera has {len(K)} cameras for {count} frames")
        else:
            raise ConfigError(f"camera must be None or (K, world_to_cam), got {camera!r}")
        return params, K.contiguous(), world_to_cam.contiguous()

    def home_tracking(self) -> Tracking:
        """One frame of the avatar's home view: its shape, a neutral face, the pose and camera it was
        seen at most (a training frame of the first view), at the output resolution."""
        m, head = self.model, self.head
        pose = m.home_pose.cpu().numpy().astype(np.float32)
        zeros = lambda n: np.zeros((1, n), np.float32)  # noqa: E731
        return Tracking(shape=m.shape.cpu().numpy(), expression=zeros(head.num_expression),
                        global_pose=pose[None, :3], neck_pose=zeros(3), jaw_pose=zeros(3), eye_pose=zeros(6),
                        translation=pose[None, 3:], K=m.home_K.cpu().numpy()[None],
                        world_to_cam=m.home_world_to_cam.cpu().numpy()[None], landmarks68=np.zeros((1, 68, 2), np.float32),
                        landmarks_mp=np.full((1, 478, 2), np.nan, np.float32), valid=np.ones(1, bool),
                        fit_error=np.zeros(1, np.float32), image_size=np.array([self.resolution] * 2), fps=25.0,
                        head_model=head.kind)

    def home_camera(self) -> tuple[np.ndarray, np.ndarray]:
        return self.model.home_K.cpu().numpy(), self.model.home_world_to_cam.cpu().numpy()

    def transfer(self, driving) -> Tracking:
        """Expression transfer: the driving tracking's expression, jaw and eyes, and its head motion
        relative to its first frame, on the avatar's own shape at its home view."""
        from onehead.pipelines.reenactment import Reference, driving_motion

        home = Reference(np.zeros((self.resolution, self.resolution, 3), np.uint8), self.home_tracking())
        return driving_motion(_as_tracking(driving), home, self.head, self.resolution).tracking


def orbit_cameras(camera: tuple, count: int, degrees: float = 30.0, center=None) -> tuple[np.ndarray, np.ndarray]:
    """`count` cameras swinging from -degrees to +degrees (yaw) around `center` (world point;
    default: 0.6 m in front of the camera) and back: (K (T, 3, 3), world_to_cam (T, 4, 4))."""
    K, world_to_cam = (np.asarray(c, np.float64) for c in camera)
    if center is None:
        cam_to_world = np.linalg.inv(world_to_cam)
        center = cam_to_world[:3, :3] @ np.array([0, 0, 0.6]) + cam_to_world[:3, 3]
    center = np.asarray(center, np.float64)
    angles = degrees * np.sin(np.linspace(0, 2 * np.pi, count, endpoint=False))
    views = []
    for angle in angles:
        turn = np.eye(4)
        turn[:3, :3] = Rotation.from_euler("y", angle, degrees=True).as_matrix()
        to_center, back = np.eye(4), np.eye(4)
        to_center[:3, 3], back[:3, 3] = -center, center
        views.append(world_to_cam @ back @ turn @ to_center)
    return np.repeat(K[None], count, 0).astype(np.float32), np.stack(views).astype(np.float32)


def interpolate_expressions(tracking: Tracking, keys: list[int], frames_between: int) -> Tracking:
    """A tracking that blends linearly from key frame to key frame of `tracking` (expression, jaw,
    eyes; the pose and camera of the first key), `frames_between` frames per pair."""
    if len(keys) < 2 or frames_between < 1:
        raise ConfigError("interpolation needs at least two key frames and at least one frame between them")
    if min(keys) < 0 or max(keys) >= tracking.num_frames:
        raise ConfigError(f"key frames must be in 0..{tracking.num_frames - 1}, got {keys}")
    weights = np.linspace(0, 1, frames_between, endpoint=False)
    index = [(a, b, w) for a, b in zip(keys, keys[1:]) for w in weights] + [(keys[-1], keys[-1], 0.0)]
    out = tracking.select([keys[0]] * len(index))
    for name in ("expression", "jaw_pose", "eye_pose"):
        values = getattr(tracking, name)
        setattr(out, name, np.stack([(1 - w) * values[a] + w * values[b] for a, b, w in index]).astype(np.float32))
    return out


def build_model(config: PersonAvatarConfig, head=None) -> PersonAvatarModel:
    """Random weights, or (config.sd_path) the UNet and VAE of a local Stable Diffusion folder."""
    if config.sd_path is None:
        return PersonAvatarModel(config, head)
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from onehead.models.autoencoder import VaeCodec

    root = Path(config.sd_path)
    for part in ("unet", "vae"):
        if not (root / part / "config.json").is_file():
            raise CheckpointError(f"{root}: not a diffusers Stable Diffusion folder (no {part}/config.json)")
    return PersonAvatarModel(config, head, unet=UNet2DConditionModel.from_pretrained(root / "unet"),
                             codec=VaeCodec(AutoencoderKL.from_pretrained(root / "vae")))


def saved_state(model: PersonAvatarModel) -> dict:
    """Every tensor of the model but the head model's (rebuilt from config.head_model)."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}


def _plain(config) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(config).items() if not k.startswith("_")}


def _as_tracking(motion) -> Tracking:
    if isinstance(motion, Tracking):
        return motion
    if hasattr(motion, "tracking"):  # onehead.pipelines.reenactment.Motion
        return motion.tracking
    return load_tracking(motion)
