"""The tri-plane feed-forward Animator (paper 004): one-shot, no denoising loop.

    animator = TriplaneAnimator.from_pretrained("DIR")       # or Animator.from_pretrained("DIR")
    frames = animator.reenact(reference, motion).frames       # (T, 3, S, S) in [0, 1]

The reference is encoded once per clip (canonical + appearance planes, TriplaneModel.encode_source);
each frame adds its expression planes and is volume-rendered at its camera (the motion's cameras:
the reference's, the driving ones, or a novel view given to `animate(camera=(K, world_to_cam))`)
and super-resolved. A model folder holds triplane.json ({"kind", "format", "model", "inference"})
and triplane.safetensors (every weight but the head model's, which is rebuilt from its config).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from onehead.config import replace, to_dict
from onehead.errors import CheckpointError, ConfigError
from onehead.files import atomic_path
from onehead.models.triplane import (CONFIG_FILE, KIND, PRESETS, WEIGHTS_FILE, TriplaneConfig, TriplaneModel,
                                     TriplaneSettings, split_saved_config)
from onehead.models.triplane.config import FORMAT
from onehead.pipelines.one_shot import Animator, Reenactment


EMBEDDED_TRIPLANE_DIR = Path(__file__).resolve().parents[1] / "checkpoints" / "triplane-tiny"


def default_triplane_dir() -> Path | None:
    """The embedded tri-plane model's folder, or None when this install has none."""
    return EMBEDDED_TRIPLANE_DIR if (EMBEDDED_TRIPLANE_DIR / CONFIG_FILE).is_file() else None


class TriplaneAnimator(Animator):
    kind = KIND

    def __init__(self, model: TriplaneModel, inference: TriplaneSettings | None = None):
        self.model = model
        self.inference = inference if inference is not None else PRESETS[model.config.preset][1]

    # ------------------------------------------------------------------ construction and files
    @classmethod
    def from_config(cls, config: TriplaneConfig, inference: TriplaneSettings | None = None,
                    head=None) -> "TriplaneAnimator":
        return cls(TriplaneModel(config, head), inference)

    @classmethod
    def from_preset(cls, name: str, head=None, **overrides) -> "TriplaneAnimator":
        """A new model with random weights: from_preset("tiny") or ("base"), any config field overridden."""
        return cls.from_config(TriplaneConfig.from_preset(name, **overrides), PRESETS[name][1], head)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, *, head=None, **settings) -> "TriplaneAnimator":
        """Load a model folder; settings override its inference settings (coarse=32, fine=32, ...)."""
        directory = Path(directory)
        config, inference = read_config(directory)
        path = directory / WEIGHTS_FILE
        if not path.is_file():
            raise CheckpointError(f"{directory}: incomplete model folder ({WEIGHTS_FILE} is missing)")
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(path)
        except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
            raise CheckpointError(f"{path}: corrupt or truncated ({str(exc).splitlines()[0][:200]})") from None
        model = TriplaneModel(config, head)
        model.load_weights(state, str(path))
        return cls(model.eval(), replace(inference, "inference settings", **settings) if settings else inference)

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """triplane.json and triplane.safetensors, written to a temporary folder beside the target,
        then moved into place. canonical_init is cleared: the folder is self-contained."""
        from safetensors.torch import save_file

        config = {**to_dict(self.model.config), "canonical_init": None}
        state = {k: v.detach().contiguous().cpu() for k, v in self.model.weights().items()}
        with atomic_path(directory) as tmp:
            tmp.mkdir()
            save_file(state, tmp / WEIGHTS_FILE, metadata={"kind": KIND})
            (tmp / CONFIG_FILE).write_text(json.dumps(
                {"kind": KIND, "format": FORMAT, "model": config, "inference": to_dict(self.inference)}, indent=2))
        return Path(directory)

    # ------------------------------------------------------------------ the protocol
    def describe(self) -> dict:
        return {"kind": self.kind, **to_dict(self.inference)}

    @torch.no_grad()
    def reenact(self, reference, motion, *, progress: bool = False, **settings) -> Reenactment:
        """A prepared reference and motion -> frames (T, 3, S, S) in [0, 1] on the CPU. The reference
        is encoded once; frames render in batches of frames_per_batch. settings: TriplaneSettings
        fields for this call. No control maps (this family has no 2D control signal)."""
        from tqdm import tqdm

        run = replace(self.inference, "inference settings", **settings) if settings else self.inference
        cache = self.model.encode_source(*self.reference_inputs(reference))
        params, K, world_to_cam = self.motion_inputs(motion)
        count, step = K.shape[0], run.frames_per_batch
        frames = []
        for start in tqdm(range(0, count, step), disable=not progress, desc="render", unit="batch"):
            rows = slice(start, start + step)
            out = self.model.render(cache, {k: v[rows] for k, v in params.items()}, K[rows], world_to_cam[rows],
                                    coarse=run.coarse, fine=run.fine, chunk=run.chunk)
            frames.append(out.image.float().cpu())
        return Reenactment(torch.cat(frames))

    # ------------------------------------------------------------------ inputs
    def reference_inputs(self, reference) -> tuple[torch.Tensor, dict, torch.Tensor, torch.Tensor]:
        """A prepared Reference -> (image (1, 3, S, S) in [0, 1], parameters, K, world_to_cam) on the model's device."""
        image = torch.as_tensor(reference.image, device=self.device).permute(2, 0, 1).float()[None] / 255
        if image.shape[-1] != self.resolution or image.shape[-2] != self.resolution:
            raise ConfigError(f"the reference is {tuple(image.shape[-2:])} px; this model needs "
                              f"{self.resolution} x {self.resolution}")
        return (image, *self.motion_inputs(reference))

    def motion_inputs(self, motion) -> tuple[dict, torch.Tensor, torch.Tensor]:
        """Head-model parameters (T, ...), K and world_to_cam of a Motion (or Reference) on the model's device."""
        tracking = motion.tracking
        params = {k: torch.as_tensor(v, device=self.device) for k, v in tracking.head_params().items()}
        return (params, torch.as_tensor(tracking.K, device=self.device),
                torch.as_tensor(tracking.world_to_cam, device=self.device))


def read_config(directory: Path) -> tuple[TriplaneConfig, TriplaneSettings]:
    """The two configs of a model folder of this family; CheckpointError naming the file otherwise."""
    from onehead.pipelines.families import read_model_config

    family, data = read_model_config(directory, "one-shot")
    if family.kind != KIND:
        raise CheckpointError(f"{directory}: a {family.kind} model, not a {KIND}")
    try:
        return split_saved_config(data, str(directory / CONFIG_FILE))
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None

