"""The training family of the Gaussian-embedding diffusion Animator (`model.kind: onehead-animator`).

Two stages (paper 003, 4.1): stage 1 trains single frames with every part but the temporal
layers; stage 2 starts from a stage-1 checkpoint (train.init_from) and trains only the temporal
layers on clips of real video.

The `model` section of a config: `preset` (tiny or base) plus any GaussianDiffusionConfig field
to override, and inference settings to save with the weights: by their names (steps, domain,
background, ...; also in an `inference:` mapping) or by the older flat names (default_steps,
inference_domain, ...). With train.init_from the checkpoint's own
configs are the base instead of the preset. The model trained is the GaussianDiffusionModel
(nn.Module); checkpoints are GaussianDiffusionAnimator model folders.
"""

from __future__ import annotations

from pathlib import Path

import torch

from onehead.errors import ConfigError
from onehead.training.data import mixed_dataset
from onehead.training.family import ParamGroup

KIND = "onehead-animator"


def split_model_section(section: dict) -> tuple[str, dict, dict]:
    """(preset, architecture overrides, inference-setting overrides) of a config's model section."""
    from dataclasses import fields

    from onehead.models.gaussian_diffusion import GaussianDiffusionConfig, InferenceSettings
    from onehead.models.gaussian_diffusion.config import LEGACY_INFERENCE_KEYS

    settings = {k: v for k, v in section.items() if k != "kind"}
    inference = settings.pop("inference", None) or {}
    if not isinstance(inference, dict):
        raise ConfigError(f"model.inference must be a mapping of inference settings, got {inference!r}")
    inference = dict(inference)
    for old, new in LEGACY_INFERENCE_KEYS.items():
        if old in settings:
            inference[new] = settings.pop(old)
    architecture = {f.name for f in fields(GaussianDiffusionConfig)}
    for name in [f.name for f in fields(InferenceSettings)]:
        if name in settings and name not in architecture:
            inference[name] = settings.pop(name)
    return settings.pop("preset", "tiny"), settings, inference


def control_preview(model, batch) -> torch.Tensor:
    """The splatted control maps' first three channels as (B, T, 3, H, W) in [0, 1]."""
    clips, frames = batch["target"].shape[:2]
    maps = model.batch_control(batch)[:, :model.config.control_channels]
    maps = maps.float().view(clips, frames, *maps.shape[1:])[:, :, :3]
    if maps.shape[2] < 3:
        maps = torch.cat([maps, maps[:, :, :1].expand(-1, -1, 3 - maps.shape[2], -1, -1)], 2)
    return (maps * 0.5 + 0.5).clamp(0, 1)  # the features are tanh'd into [-1, 1]


class GaussianDiffusionFamily:
    """TrainingFamily of the Animator; `onehead.training.get_family("onehead-animator")`."""

    name = KIND
    config_file = "animator.json"

    def __init__(self):
        self.inference = None  # the InferenceSettings saved with every checkpoint (set by build)

    def check_config(self, config) -> None:
        t, d = config.train, config.data
        if t.stage not in (1, 2):
            raise ConfigError(f"train.stage must be 1 or 2, got {t.stage}")
        if d.views is not None or d.frames is not None:
            raise ConfigError("data.views and data.frames select a person's frames (onehead-avatar); "
                              "the Animator trains on every frame of data.train")
        if t.stage == 1 and d.clip_length != 1:
            raise ConfigError(f"stage 1 trains single frames: data.clip_length must be 1, got {d.clip_length}")
        if t.stage == 2 and d.clip_length < 2:
            raise ConfigError("stage 2 trains the temporal layers: data.clip_length must be at least 2")
        if t.stage == 2 and not t.init_from:
            raise ConfigError("stage 2 starts from a stage-1 checkpoint: set train.init_from")
        sd_path = config.model.get("sd_path")
        if sd_path and not t.init_from and not Path(sd_path).is_dir():
            raise ConfigError(f"model.sd_path {sd_path}: no such folder; point it at a local diffusers-format "
                              "Stable Diffusion folder (unet/, vae/, scheduler/), e.g. --set model.sd_path=DIR")
        split_model_section(config.model)

    def build(self, model_config: dict, train, resume_from: Path | None):
        """A fresh model (preset + overrides), the train.init_from checkpoint (its configs changed by
        the keys set in model_config, e.g. warp_guidance), or the checkpoint being resumed."""
        from onehead.config import replace
        from onehead.models.gaussian_diffusion import PRESETS, GaussianDiffusionConfig, GaussianDiffusionModel
        from onehead.pipelines.gaussian_diffusion import GaussianDiffusionAnimator
        from onehead.training.checkpoint import resolve_checkpoint

        preset, architecture, inference = split_model_section(model_config)
        if resume_from is not None:
            animator = GaussianDiffusionAnimator.from_pretrained(resume_from)
        elif train.init_from:
            start = resolve_checkpoint(train.init_from, Path(train.output_dir), self.config_file, need_state=False)
            animator = GaussianDiffusionAnimator.from_pretrained(start, model_overrides=architecture, **inference)
        else:
            if preset not in PRESETS:
                raise ConfigError(f"model.preset {preset!r}: use one of {', '.join(PRESETS)}")
            config = GaussianDiffusionConfig.from_preset(preset, **architecture)  # ConfigError on unknown keys
            settings = replace(PRESETS[preset][1], "model section", **inference)
            animator = GaussianDiffusionAnimator(GaussianDiffusionModel.from_config(config), settings)
        self.inference = animator.inference
        model = animator.model
        model.set_stage(train.stage)
        if train.gradient_checkpointing:
            model.enable_gradient_checkpointing()
        return model

    def datasets(self, model, config):
        """Every source with weight > 0 as a ReenactmentDataset (items keep their meta.json domain
        label: the domain token); stage 2 refuses synthetic data unless data.stage2_real_only is false."""
        return reenactment_datasets(config, config.train.stage, model.config.resolution)

    def parameter_groups(self, model, train) -> list[ParamGroup]:
        """One group: the parameters the stage trains (model.trainable_parameters), in model order."""
        wanted = {id(p) for p in model.trainable_parameters()}
        return [ParamGroup("trainable", {n: p for n, p in model.named_parameters() if id(p) in wanted})]

    def loss(self, model, batch: dict, generator: torch.Generator) -> torch.Tensor:
        from onehead.training.gaussian_diffusion_loss import gaussian_diffusion_loss

        return gaussian_diffusion_loss(model, batch, generator)

    def validation_columns(self, model, batch: dict, train) -> list[torch.Tensor]:
        """reference | target | control maps (first 3 channels) | (correct_warp) mesh warp | sample (the saved inference domain,
        train.validation_sampling_steps DDIM steps, noise seed train.seed)."""
        from onehead.config import replace
        from onehead.pipelines.gaussian_diffusion import GaussianDiffusionAnimator

        clips, frames = batch["target"].shape[:2]
        control = model.batch_control(batch)
        control = control.view(clips, frames, *control.shape[1:])
        base = model.batch_warp(batch)
        settings = replace(self.inference, "validation", steps=train.validation_sampling_steps, seed=train.seed)
        samples = GaussianDiffusionAnimator(model, self.inference).sample(batch["reference"], control, settings,
                                                                          base=base)
        columns = [batch["reference"][:, None], batch["target"], control_preview(model, batch)]
        if base is not None:  # the mesh warp the model corrects
            columns.append(base.image.view(clips, frames, *base.image.shape[1:]))
        return columns + [samples]

    def save_pretrained(self, model, directory: Path) -> None:
        from onehead.pipelines.gaussian_diffusion import GaussianDiffusionAnimator

        GaussianDiffusionAnimator(model, self.inference).save_pretrained(directory)


def reenactment_datasets(config, stage: int, size: int) -> tuple:
    """(training MixedDataset, held-out ReenactmentDataset or None) of a one-shot family at `size`;
    also the tri-plane family's (onehead.training.triplane)."""
    from onehead.data.datasets import ReenactmentDataset

    seed = config.train.seed
    train_set = build_train_dataset(config.data, stage, size, seed)
    held_out = None
    if config.data.validation:
        held_out = ReenactmentDataset(config.data.validation, clip_length=config.data.clip_length, size=size,
                                      seed=seed)
    return train_set, held_out


def build_train_dataset(data, stage: int, size: int, seed: int):
    """The MixedDataset of data.train's sources with weight > 0 (ReenactmentDataset each)."""
    from onehead.data.datasets import ReenactmentDataset
    from onehead.training.seeding import mix_seed

    def open_source(i, source):
        ds = ReenactmentDataset(source.path, clip_length=data.clip_length, size=size, seed=mix_seed(seed, i))
        if stage == 2 and data.stage2_real_only and any(seq.meta.domain == "synthetic" for seq in ds.sequences):
            raise ConfigError(f"data.train[{i}] {source.path} holds synthetic sequences; stage 2 trains on real "
                              "video only: set its weight to 0 (or data.stage2_real_only: false for a demo)")
        return ds

    return mixed_dataset(data.train, open_source)


def inference_overrides(assignments: list[str]) -> dict:
    """`--set KEY=VALUE` items (values parsed as YAML by onehead.config) as checked inference settings
    (export_animator.py); ConfigError in one line for an unknown key, an architecture key or a bad value."""
    from dataclasses import fields

    from onehead.config import apply_override, replace
    from onehead.models.gaussian_diffusion import GaussianDiffusionConfig, InferenceSettings

    raw: dict = {}
    for item in assignments:
        apply_override(raw, item)
    _, architecture, settings = split_model_section(raw)
    structural = sorted(k for k in [*architecture, *(["preset"] if "preset" in raw else [])]
                        if k in {f.name for f in fields(GaussianDiffusionConfig)})
    if structural:
        raise ConfigError(f"--set {', '.join(structural)}: architecture, not an inference setting (an export "
                          "changes no weights; fine-tune with train.init_from instead)")
    unknown = sorted((set(architecture) | set(settings)) - {f.name for f in fields(InferenceSettings)})
    if unknown:
        known = ", ".join(f.name for f in fields(InferenceSettings))
        raise ConfigError(f"--set {', '.join(unknown)}: unknown inference setting(s); known: {known}")
    replace(InferenceSettings(), "--set", **settings)  # wrong types and values fail here, in one line
    return settings


def export_model_folder(source: Path, out: Path, settings: dict, half: bool = False, zero_correction: bool = False):
    """Load the model folder `source` with `settings` applied and write it to `out`: atomically, and
    only after the written folder loads back with the same weights (rounded to float16 with `half`)
    and settings (CheckpointError otherwise). zero_correction: a correct_warp model's UNet output
    layer is zeroed, so the folder is exactly its warp (an ablation, or a restart point). Returns
    the exported GaussianDiffusionAnimator."""
    import torch

    from onehead.config import to_dict
    from onehead.errors import CheckpointError
    from onehead.files import atomic_path
    from onehead.pipelines.gaussian_diffusion import GaussianDiffusionAnimator

    animator = GaussianDiffusionAnimator.from_pretrained(source, **settings)
    if zero_correction:
        if not animator.model.config.correct_warp:
            raise ConfigError(f"{source}: --zero-correction needs a correct_warp model")
        with torch.no_grad():
            animator.model.denoising_unet.conv_out.weight.zero_()
            animator.model.denoising_unet.conv_out.bias.zero_()
    with atomic_path(out) as tmp:
        animator.save_pretrained(tmp, torch.float16 if half else None)
        loaded = GaussianDiffusionAnimator.from_pretrained(tmp)
        if to_dict(loaded.inference) != to_dict(animator.inference):
            raise CheckpointError(f"{out}: the written inference settings do not read back as exported")
        expected, written = animator.model.state_dict(), loaded.model.state_dict()
        if half:
            expected = {k: v.half().to(v.dtype) if v.is_floating_point() and not k.startswith("head.") else v
                        for k, v in expected.items()}  # the head model is not saved: it is rebuilt
        bad = [k for k in expected if k not in written or not torch.equal(expected[k], written[k])]
        if bad or written.keys() != expected.keys():
            raise CheckpointError(f"{out}: the written weights do not read back as exported (e.g. {(bad or ['?'])[0]})")
    return animator

