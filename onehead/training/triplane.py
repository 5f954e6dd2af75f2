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
  reconstruction in stage 1 so a stage-1 checkpoint gives usable frames without stage 2.
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
- perceptual (weight 0 unless set): LPIPS (AlexNet; the paper's perceptual loss [28, 77]) beside
  each L1 term above, the neutral one inside M_neu. Its weights come only from a user's file
  (model.loss.lpips_weights, or $ONEHEAD_LPIPS_WEIGHTS; `onehead convert-lpips` makes one).

Stage 2 (paper 004: "only fine-tune the super-resolution module and freeze other parts"). It starts
from a stage-1 checkpoint (train.init_from). Everything but the super-resolution module is frozen,
so of the stage-1 terms only super_resolution (and its perceptual part) can move a weight; the
others are constants there and are not computed. Beside it, EG3D's dual discriminator
(onehead.models.triplane.parts.DualDiscriminator) sees the output with its low-resolution render,
and a real target with its own area-downsampled copy, in the logistic (non-saturating) form:
  generator:      adversarial x softplus(-D(fake))
  discriminator:  softplus(D(fake)) + softplus(-D(real)) + r1 / 2 x |grad_real D(real)|^2 (R1)
Both go into one backward pass: the generator term sees the discriminator's weights detached and
the discriminator sees the output detached, so each part gets only its own gradients. The
discriminator is saved in each stage-2 checkpoint folder (discriminator.safetensors) for exact
resume; the model folder that inference loads ignores it.

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
from torch import nn

from onehead.training.family import ParamGroup

KIND = "onehead-triplane"
DISCRIMINATOR_FILE = "discriminator.safetensors"  # stage 2's discriminator, in its checkpoint folders
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
    perceptual: float = 0.0  # LPIPS beside every L1 term (needs lpips_weights or $ONEHEAD_LPIPS_WEIGHTS)
    lpips_weights: str | None = None  # an onehead LPIPS safetensors file
    adversarial: float = 0.1  # stage 2: the generator's dual-discriminator term
    r1: float = 1.0  # stage 2: R1 penalty gamma on real images (EG3D: 1 at 512 px)
    discriminator_channels: int = 32  # stage 2: the discriminator's first width (doubling, at most 256)

    def __post_init__(self):
        weights = (self.l1, self.super_resolution, self.tv, self.neutral, self.tv_offset, self.perceptual,
                   self.adversarial, self.r1)
        if min(weights) < 0 or self.tv_points < 2 or self.discriminator_channels < 1:
            raise ValueError("loss weights and tv_offset must not be negative, tv_points at least 2, "
                             "discriminator_channels at least 1")


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


def _unpack(model, batch: dict) -> tuple:
    """(frames per clip, source, its params, K, world_to_cam, target params, K, world_to_cam, targets),
    the targets flattened to one row per frame, on the model's device."""
    device = model.device
    frames = batch["target"].shape[1]
    source = batch["reference"].to(device)
    source_params = {k: batch["reference_params"][k].to(device) for k in HEAD_PARAM_NAMES}
    source_K, source_w2c = batch["reference_K"].to(device), batch["reference_world_to_cam"].to(device)
    params = {k: batch["target_params"][k].flatten(0, 1).to(device) for k in HEAD_PARAM_NAMES}
    K, w2c = batch["K"].flatten(0, 1).to(device), batch["world_to_cam"].flatten(0, 1).to(device)
    target = batch["target"].flatten(0, 1).to(device)
    return frames, source, source_params, source_K, source_w2c, params, K, w2c, target


def _perceptual(lpips_model, image: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None):
    """Mean LPIPS; images under LPIPS's smallest side are upsampled (bilinear) to it first."""
    from onehead.metrics.lpips import MIN_SIDE, lpips

    if image.shape[-1] < MIN_SIDE:
        size = (MIN_SIDE + 1, MIN_SIDE + 1)
        image, target = (F.interpolate(x, size=size, mode="bilinear", align_corners=False) for x in (image, target))
        mask = None if mask is None else F.interpolate(mask, size=size, mode="bilinear", align_corners=False)
    return lpips(image, target, lpips_model.to(image.device), mask).mean()


def triplane_loss(model, batch: dict, generator: torch.Generator | None, weights: TriplaneLoss,
                  coarse: int, fine: int, jitter: bool = True, lpips_model=None) -> LossParts:
    """Stage-1 loss of a batch of ReenactmentDataset items (collated); every draw from `generator`.
    lpips_model: the perceptual terms' network (needed when weights.perceptual > 0)."""
    frames, source, source_params, source_K, source_w2c, params, K, w2c, target = _unpack(model, batch)

    cache = model.encode_source(source, source_params, source_K, source_w2c)
    per_frame = cache.repeat(frames)
    expression = model.expression_planes(per_frame.shape, params)
    canonical = per_frame.canonical
    full = canonical + expression + per_frame.appearance
    planes = torch.cat([canonical, canonical + expression, full, cache.canonical])  # 3N + B renders at once
    cameras = model.head_cameras(params, w2c)
    source_cameras = model.head_cameras(source_params, source_w2c)
    backdrop = None if cache.backdrop is None else torch.cat([per_frame.backdrop.repeat(3, 1, 1, 1), cache.backdrop])
    out = model.render_planes(planes, torch.cat([cameras.repeat(3, 1, 1), source_cameras]),
                              torch.cat([K.repeat(3, 1, 1), source_K]), backdrop, coarse=coarse, fine=fine,
                              jitter=jitter, generator=generator)
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
    if weights.perceptual > 0:
        if lpips_model is None:
            raise ConfigError("model.loss.perceptual > 0 needs the LPIPS network (model.loss.lpips_weights)")
        pairs = [(image, target_low, None) for image in images.values()] + [
            (output, target, None), (low[3 * n:] * mask, neutral, mask)]
        parts["perceptual"] = sum(_perceptual(lpips_model, *pair) for pair in pairs)
        total = total + weights.perceptual * parts["perceptual"]
    images.update(output=output, neutral=neutral, source_canonical=low[3 * n:])
    return LossParts(total, parts, images)


class Stage2Model(nn.Module):
    """What stage 2 trains: the tri-plane model (only its super-resolution module unfrozen) beside
    the dual discriminator."""

    def __init__(self, triplane, discriminator):
        super().__init__()
        self.triplane = triplane
        self.discriminator = discriminator


def stage2_loss(model: Stage2Model, batch: dict, generator: torch.Generator | None, weights: TriplaneLoss,
                coarse: int, fine: int, lpips_model=None) -> LossParts:
    """Stage-2 loss (module docstring): super-resolution L1 (+ LPIPS) and the dual-discriminator terms
    of generator and discriminator, for one backward pass."""
    triplane, discriminator = model.triplane, model.discriminator
    frames, source, source_params, source_K, source_w2c, params, K, w2c, target = _unpack(triplane, batch)
    with torch.no_grad():  # frozen: the encoders and the volume render
        cache = triplane.encode_source(source, source_params, source_K, source_w2c).repeat(frames)
        planes = cache.canonical + cache.appearance + triplane.expression_planes(cache.shape, params)
        out = triplane.render_planes(planes, triplane.head_cameras(params, w2c), K, cache.backdrop, coarse=coarse,
                                     fine=fine, jitter=True, generator=generator)
    output = triplane.super_resolution(out.features)
    parts = {"super_resolution": F.l1_loss(output, target)}
    total = weights.super_resolution * parts["super_resolution"]
    if weights.perceptual > 0:
        if lpips_model is None:
            raise ConfigError("model.loss.perceptual > 0 needs the LPIPS network (model.loss.lpips_weights)")
        parts["perceptual"] = _perceptual(lpips_model, output, target)
        total = total + weights.perceptual * parts["perceptual"]
    size = out.low_res.shape[-1]
    real_low = F.interpolate(target, size=(size, size), mode="area")
    frozen = {name: p.detach() for name, p in discriminator.named_parameters()}
    fake_logits = torch.func.functional_call(discriminator, frozen, (output, out.low_res))
    parts["adversarial"] = F.softplus(-fake_logits).mean()
    real = target.detach().requires_grad_(weights.r1 > 0)
    real_logits = discriminator(real, real_low)
    parts["discriminator"] = (F.softplus(discriminator(output.detach(), out.low_res)).mean()
                              + F.softplus(-real_logits).mean())
    total = total + weights.adversarial * parts["adversarial"] + parts["discriminator"]
    if weights.r1 > 0:
        gradient, = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
        parts["r1"] = gradient.square().flatten(1).sum(1).mean()
        total = total + weights.r1 / 2 * parts["r1"]
    return LossParts(total, parts, {"full": out.low_res, "output": output})


class TriplaneFamily:
    """TrainingFamily of the tri-plane Animator; `onehead.training.get_family("onehead-triplane")`."""

    name = KIND
    config_file = "triplane.json"

    def __init__(self):
        self.inference = None  # the TriplaneSettings saved with every checkpoint (set by build)
        self.weights = TriplaneLoss()
        self.lpips = None  # the perceptual terms' network (model.loss.perceptual > 0)

    def check_config(self, config) -> None:
        t, d = config.train, config.data
        if t.stage not in (1, 2):
            raise ConfigError(f"train.stage must be 1 or 2, got {t.stage}")
        if t.stage == 2 and not t.init_from:
            raise ConfigError("onehead-triplane stage 2 fine-tunes the super-resolution of a stage-1 model: set "
                              "train.init_from to a stage-1 checkpoint or run")
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
        weights = from_dict(TriplaneLoss, loss, "model.loss")
        if weights.perceptual > 0:
            _load_lpips(weights)

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
        self.lpips = _load_lpips(self.weights) if self.weights.perceptual > 0 else None
        model = animator.model
        model.requires_grad_(True)
        model.train()
        if train.stage == 1:
            return model
        from onehead.models.triplane.parts import DualDiscriminator

        model.requires_grad_(False)
        model.super_resolution.requires_grad_(True)
        discriminator = DualDiscriminator(model.config.resolution, self.weights.discriminator_channels)
        if resume_from is not None:
            _load_discriminator(discriminator, resume_from)
        return Stage2Model(model, discriminator.train())

    def datasets(self, model, config):
        """Every source with weight > 0 as a ReenactmentDataset; data.validation as held-out items."""
        from onehead.training.gaussian_diffusion import reenactment_datasets

        return reenactment_datasets(config, 1, _triplane(model).config.resolution)

    def parameter_groups(self, model, train) -> list[ParamGroup]:
        """Stage 1: one group, every parameter (the head model has none). Stage 2: the super-resolution
        module and the discriminator."""
        trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
        if not isinstance(model, Stage2Model):
            return [ParamGroup("trainable", trainable)]
        return [ParamGroup("super_resolution", {n: p for n, p in trainable.items() if n.startswith("triplane.")}),
                ParamGroup("discriminator", {n: p for n, p in trainable.items() if n.startswith("discriminator.")})]

    def loss(self, model, batch: dict, generator: torch.Generator) -> torch.Tensor:
        if isinstance(model, Stage2Model):
            return stage2_loss(model, batch, generator, self.weights, self.inference.coarse, self.inference.fine,
                               self.lpips).total
        return triplane_loss(model, batch, generator, self.weights, self.inference.coarse, self.inference.fine,
                             lpips_model=self.lpips).total

    def validation_columns(self, model, batch: dict, train) -> list[torch.Tensor]:
        """reference | target | I_c | I_c+e | I_c+e+p (render resolution) | super-resolved output;
        deterministic samples (no jitter)."""
        clips, frames = batch["target"].shape[:2]
        model = _triplane(model)
        with torch.no_grad():
            images = triplane_loss(model, batch, None, replace(self.weights, "model.loss", perceptual=0.0),
                                   self.inference.coarse, self.inference.fine, jitter=False).images

        def column(x):
            return x.clamp(0, 1).float().cpu().view(clips, frames, *x.shape[1:])

        return [batch["reference"][:, None], batch["target"]] + [
            column(images[name]) for name in ("canonical", "canonical_expression", "full", "output")]

    def save_pretrained(self, model, directory: Path) -> None:
        """The model folder; in stage 2 also the discriminator (DISCRIMINATOR_FILE), which inference ignores."""
        from safetensors.torch import save_file

        from onehead.pipelines.triplane import TriplaneAnimator

        if not isinstance(model, Stage2Model):
            TriplaneAnimator(model, self.inference).save_pretrained(directory)
            return
        TriplaneAnimator(model.triplane, self.inference).save_pretrained(directory)
        state = {k: v.detach().contiguous().cpu() for k, v in model.discriminator.state_dict().items()}
        save_file(state, Path(directory) / DISCRIMINATOR_FILE)


def _triplane(model):
    """The tri-plane model of either stage's training module."""
    return model.triplane if isinstance(model, Stage2Model) else model


def _load_lpips(weights: TriplaneLoss):
    from onehead.errors import MetricUnavailable
    from onehead.metrics.lpips import load_lpips

    try:
        return load_lpips(weights.lpips_weights)
    except MetricUnavailable as exc:
        raise ConfigError(f"model.loss.perceptual > 0: {exc} (or set model.loss.lpips_weights)") from None


def _load_discriminator(discriminator, checkpoint: Path) -> None:
    from safetensors.torch import load_file

    from onehead.errors import CheckpointError

    path = Path(checkpoint) / DISCRIMINATOR_FILE
    if not path.is_file():
        raise CheckpointError(f"{checkpoint}: a stage-2 checkpoint holds {DISCRIMINATOR_FILE}; this one does not")
    try:
        discriminator.load_state_dict(load_file(path))
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: does not fit the discriminator of model.loss "
                              f"({str(exc).splitlines()[0][:200]})") from None
