"""The training family of the tri-plane Animator (`model.kind: onehead-triplane`), paper 004 section 3.5.

Items are ReenactmentDataset items: the reference frame is the SOURCE, each target frame (same
identity and sequence, any view) the driving frame with its ground truth. Clips of several frames
are flattened: every target frame is one sample that shares its clip's source planes.

Stage 1 (the only one implemented). The paper's three images are volume renders at the target
camera, compared with the target resized to the render resolution (L1):
- I_c      the canonical planes alone (the source identity, meant to stay neutral);
- I_c+e    canonical + expression planes (the target expression, coarse appearance);
- I_c+e+p  canonical + expression + appearance planes (everything; the super-resolution input).
Beside them:
- super_resolution (onehead's addition): L1 of the super-resolved I_c+e+p against the full-size
  target. The paper trains the super-resolution module only in stage 2; here it learns plain
  reconstruction in stage 1 so a stage-1 checkpoint gives usable frames before stage 2 exists.
- tv: EG3D's density regularisation: L1 between the densities of the full planes at random points
  (half near the target's head-model surface, half anywhere in the cube) and at the same points
  moved by tv_offset x bounds of Gaussian noise.
- neutral: the paper's L_neutral asks I_c rendered at the SOURCE camera to match a 3DMM render of the
  source identity with a neutral expression, inside the face. onehead has no textured 3DMM, so the
  "neutral render" I_neu is the source image WARPED by the head model from the source expression
  to the neutral one (expression, jaw and eyes zeroed; shape, head pose and camera kept;
  onehead.render.warp.warp_reference) and M_neu is where that warp is visible. It is a neutral-
  expression image of the source's own colours, exact where the head model is; it cannot open eyes
  the source closed, and it covers the head model's surface (face, scalp, ears), not a face-only mask.
  L_neutral = the mean over M_neu of |I_c x M_neu - I_neu|.
Not implemented: the perceptual (VGG) terms (no VGG weights here; they would come from a
user-supplied file) and stage 2 (super-resolution fine-tuning with EG3D's dual discriminator):
train.stage 2 is a ConfigError.

The `model` section of a config: `kind`, `preset` (tiny or base) plus any TriplaneConfig field to
override, inference settings (coarse, fine, frames_per_batch, chunk; also in an `inference:`
mapping; the training renders use coarse/fine with jittered samples), and `loss:` (TriplaneLoss
weights). Checkpoints are TriplaneAnimator model folders.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F

from onehead.config import from_dict, replace
from onehead.errors import ConfigError
from onehead.head import HEAD_PARAM_NAMES
from onehead.training.family import ParamGroup

KIND = "onehead-triplane"
NEUTRAL_ZEROED = ("expression", "jaw_pose", "eye_pose")  # what the neutral target sets to zero


@dataclass
class TriplaneLoss:
    """Stage-1 loss weights (model.loss in a training config)."""

    l1: float = 1.0  # each of the three volume renders I_c, I_c+e, I_c+e+p
    super_resolution: float = 1.0  # the super-resolved output at full size
    tv: float = 0.25  # EG3D's density regularisation (its weight 0.25)
    neutral: float = 1.0  # the canonical render at the source camera against the neutral warp
    tv_points: int = 512  # random points per sample for tv
    tv_offset: float = 0.008  # their perturbation, in units of bounds (EG3D: 0.004 of a unit box)

    def __post_init__(self):
        if min(self.l1, self.super_resolution, self.tv, self.neutral, self.tv_offset) < 0 or self.tv_points < 2:
            raise ValueError("loss weights and tv_offset must not be negative, tv_points at least 2")


@dataclass
class LossParts:
    total: torch.Tensor
    parts: dict  # name -> scalar tensor (unweighted)
    images: dict  # name -> (N, 3, h, w) what was compared, for validation pictures


def split_model_section(section: dict) -> tuple[str, dict, dict, dict]:
    """(preset, architecture overrides, inference-setting overrides, loss weights) of a model section."""
    from onehead.models.triplane import TriplaneConfig, TriplaneSettings

    settings = {k: v for k, v in section.items() if k != "kind"}
    inference = settings.pop("inference", None) or {}
    loss = settings.pop("loss", None) or {}
    if not isinstance(inference, dict) or not isinstance(loss, dict):
        raise ConfigError("model.inference and model.loss must be mappings")
    inference = dict(inference)
    architecture = {f.name for f in fields(TriplaneConfig)}
    for name in [f.name for f in fields(TriplaneSettings)]:
        if name in settings and name not in architecture:
            inference[name] = settings.pop(name)
    return settings.pop("preset", "tiny"), settings, inference, loss


def neutral_target(model, image: torch.Tensor, params: dict, K: torch.Tensor,
                   world_to_cam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """I_neu, M_neu at the render resolution (B, 3, r, r), (B, 1, r, r): the source image warped by
    the head model from its expression to the neutral one at the source camera (module docstring)."""
    from onehead.camera import scale_intrinsics
    from onehead.render.warp import warp_reference

    c, size = model.config, model.config.render_resolution
    neutral = {k: torch.zeros_like(v) if k in NEUTRAL_ZEROED else v for k, v in params.items()}
    with torch.no_grad():
        small = F.interpolate(image, size=(size, size), mode="area")
        K_small = scale_intrinsics(K, (c.resolution, c.resolution), (size, size))
        warp = warp_reference(small, model.head.faces, model.head(**params).vertices, K_small, world_to_cam,
                              model.head(**neutral).vertices, K_small, world_to_cam)
    return warp.image, warp.visible


def density_tv(model, planes: torch.Tensor, params: dict, count: int, offset: float,
               generator: torch.Generator | None) -> torch.Tensor:
    """EG3D's density regularisation on planes (N, 3, C, R, R): mean |sigma(p) - sigma(p + noise)| in
    plane units, p half on the head-model surface of each frame (head frame), half in the cube."""
    bounds, device = model.config.bounds, model.device
    draw_on = generator.device if generator is not None else None
    n = planes.shape[0]
    with torch.no_grad():
        vertices = model.head_frame(params)[0].vertices  # (N, V, 3) head frame
    pick = torch.randint(vertices.shape[1], (n, count // 2), generator=generator, device=draw_on).to(device)
    surface = vertices.gather(1, pick[..., None].expand(-1, -1, 3))
    anywhere = model.centre + bounds * (2 * torch.rand(n, count - count // 2, 3, generator=generator,
                                                       device=draw_on).to(device) - 1)
    points = torch.cat([surface, anywhere], 1)
    moved = points + offset * bounds * torch.randn(points.shape, generator=generator, device=draw_on).to(device)
    density, _ = model.field(planes)(torch.cat([points, moved], 1), None)
    return (density[:, :points.shape[1]] - density[:, points.shape[1]:]).abs().mean() * bounds


def triplane_loss(model, batch: dict, generator: torch.Generator | None, weights: TriplaneLoss,
                  coarse: int, fine: int, jitter: bool = True) -> LossParts:
    """Stage-1 loss of a batch of ReenactmentDataset items (collated); every draw from `generator`."""
    device = model.device
    clips, frames = batch["target"].shape[:2]
    source = batch["reference"].to(device)
    source_params = {k: batch["reference_params"][k].to(device) for k in HEAD_PARAM_NAMES}
    source_K, source_w2c = batch["reference_K"].to(device), batch["reference_world_to_cam"].to(device)
    params = {k: batch["target_params"][k].flatten(0, 1).to(device) for k in HEAD_PARAM_NAMES}
    K, w2c = batch["K"].flatten(0, 1).to(device), batch["world_to_cam"].flatten(0, 1).to(device)
    target = batch["target"].flatten(0, 1).to(device)

    cache = model.encode_source(source, source_params, source_K, source_w2c)
    per_frame = cache.repeat(frames)
    expression = model.expression_planes(per_frame.shape, params)
    canonical = per_frame.canonical
    full = canonical + expression + per_frame.appearance
    planes = torch.cat([canonical, canonical + expression, full, cache.canonical])  # 3N + B renders at once
    cameras = model.head_cameras(params, w2c)
    source_cameras = model.head_cameras(source_params, source_w2c)
    out = model.render_planes(planes, torch.cat([cameras.repeat(3, 1, 1), source_cameras]),
                              torch.cat([K.repeat(3, 1, 1), source_K]), coarse=coarse, fine=fine, jitter=jitter,
                              generator=generator)
    n = len(target)
    low = out.low_res
    size = low.shape[-1]
    target_low = F.interpolate(target, size=(size, size), mode="area")
    images = {"canonical": low[:n], "canonical_expression": low[n:2 * n], "full": low[2 * n:3 * n]}
    parts = {name: F.l1_loss(image, target_low) for name, image in images.items()}
    output = model.super_resolution(out.features[2 * n:3 * n])
    parts["super_resolution"] = F.l1_loss(output, target)
    neutral, mask = neutral_target(model, source, source_params, source_K, source_w2c)
    error = (low[3 * n:] * mask - neutral).abs().sum() / (3 * mask.sum()).clamp(min=1)
    parts["neutral"] = error
    parts["tv"] = density_tv(model, full, params, weights.tv_points, weights.tv_offset, generator)
    total = (weights.l1 * (parts["canonical"] + parts["canonical_expression"] + parts["full"])
             + weights.super_resolution * parts["super_resolution"] + weights.neutral * parts["neutral"]
             + weights.tv * parts["tv"])
    images.update(output=output, neutral=neutral, source_canonical=low[3 * n:])
    return LossParts(total, parts, images)


class TriplaneFamily:
    """TrainingFamily of the tri-plane Animator; `onehead.training.get_family("onehead-triplane")`."""

    name = KIND
    config_file = "triplane.json"

    def __init__(self):
        self.inference = None  # the TriplaneSettings saved with every checkpoint (set by build)
        self.weights = TriplaneLoss()

    def check_config(self, config) -> None:
        t, d = config.train, config.data
        if t.stage == 2:
            raise ConfigError("onehead-triplane: stage 2 (super-resolution fine-tuning with a dual "
                              "discriminator, paper 004 section 3.5) is not implemented yet; train.stage must be 1")
        if t.stage != 1:
            raise ConfigError(f"train.stage must be 1, got {t.stage}")
        if d.views is not None or d.frames is not None:
            raise ConfigError("data.views and data.frames select a person's frames (onehead-avatar); "
                              "the tri-plane model trains on every frame of data.train")
        preset, architecture, inference, loss = split_model_section(config.model)
        from onehead.models.triplane import PRESETS, TriplaneConfig

        if preset not in PRESETS:
            raise ConfigError(f"model.preset {preset!r}: use one of {', '.join(PRESETS)}")
        if not t.init_from:
            TriplaneConfig.from_preset(preset, **architecture)
        elif architecture:
            raise ConfigError(f"model: {', '.join(sorted(architecture))} change the architecture; with "
                              "train.init_from the checkpoint's architecture is used")
        replace(PRESETS[preset][1], "model section", **inference)
        from_dict(TriplaneLoss, loss, "model.loss")

    def build(self, model_config: dict, train, resume_from: Path | None):
        """A fresh model (preset + overrides), the train.init_from checkpoint or the one being resumed."""
        from onehead.models.triplane import PRESETS, TriplaneConfig, TriplaneModel
        from onehead.pipelines.triplane import TriplaneAnimator
        from onehead.training.checkpoint import resolve_checkpoint

        preset, architecture, inference, loss = split_model_section(model_config)
        self.weights = from_dict(TriplaneLoss, loss, "model.loss")
        if resume_from is not None:
            animator = TriplaneAnimator.from_pretrained(resume_from)
        elif train.init_from:
            start = resolve_checkpoint(train.init_from, Path(train.output_dir), self.config_file, need_state=False)
            animator = TriplaneAnimator.from_pretrained(start, **inference)
        else:
            config = TriplaneConfig.from_preset(preset, **architecture)
            animator = TriplaneAnimator(TriplaneModel(config), replace(PRESETS[preset][1], "model section",
                                                                       **inference))
        self.inference = animator.inference
        model = animator.model
        model.requires_grad_(True)
        model.train()
        return model

    def datasets(self, model, config):
        """Every source with weight > 0 as a ReenactmentDataset; data.validation as held-out items."""
        from onehead.training.gaussian_diffusion import reenactment_datasets

        return reenactment_datasets(config, 1, model.config.resolution)

    def parameter_groups(self, model, train) -> list[ParamGroup]:
        """One group: every parameter (the head model has none)."""
        return [ParamGroup("trainable", {n: p for n, p in model.named_parameters() if p.requires_grad})]

    def loss(self, model, batch: dict, generator: torch.Generator) -> torch.Tensor:
        return triplane_loss(model, batch, generator, self.weights, self.inference.coarse, self.inference.fine).total

    def validation_columns(self, model, batch: dict, train) -> list[torch.Tensor]:
        """reference | target | I_c | I_c+e | I_c+e+p (render resolution) | super-resolved output;
        deterministic samples (no jitter)."""
        clips, frames = batch["target"].shape[:2]
        with torch.no_grad():
            images = triplane_loss(model, batch, None, self.weights, self.inference.coarse, self.inference.fine,
                                   jitter=False).images

        def column(x):
            return x.clamp(0, 1).float().cpu().view(clips, frames, *x.shape[1:])

        return [batch["reference"][:, None], batch["target"]] + [
            column(images[name]) for name in ("canonical", "canonical_expression", "full", "output")]

    def save_pretrained(self, model, directory: Path) -> None:
        from onehead.pipelines.triplane import TriplaneAnimator

        TriplaneAnimator(model, self.inference).save_pretrained(directory)
